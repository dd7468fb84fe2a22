// Command run-agents plays the container runtime for agent pods on a simulated (kwok)
// cluster, where no container runs: for every Running agent pod of the hives in a namespace
// it starts the reference agent binary as a local process with the pod's identity and the
// agent container's own arguments, and stops it when the pod goes away. The agents are the
// real thing (pkg/agent via cmd/hive-agent), so tasks are really executed.
//
// Usage: run-agents --agent-binary bin/hive-agent [--namespace default] [--kubeconfig ...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
)

func main() {
	var (
		binary    string
		namespace string
		logDir    string
	)
	flag.StringVar(&binary, "agent-binary", "bin/hive-agent", "The hive-agent binary each agent pod's container would run.")
	flag.StringVar(&namespace, "namespace", "default", "Namespace of the hives whose agents to run.")
	flag.StringVar(&logDir, "log-dir", "", "Folder for the agents' logs (one file per pod); empty sends them to this process's stderr.")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, binary, namespace, logDir); err != nil {
		fmt.Fprintln(os.Stderr, "run-agents:", err)
		stop()
		os.Exit(1) //nolint:gocritic // stop() ran just above
	}
}

func run(ctx context.Context, binary, namespace, logDir string) error {
	if _, err := os.Stat(binary); err != nil {
		return fmt.Errorf("the agent binary: %w", err)
	}
	cfg, err := config.GetConfig()
	if err != nil {
		return fmt.Errorf("finding the cluster: %w", err)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(swarmv1alpha1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}

	running := map[string]*agentProcess{}
	defer func() {
		for name, cmd := range running {
			stopAgent(name, cmd)
		}
	}()
	for {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(namespace), client.HasLabels{swarmv1alpha1.LabelHive}); err == nil {
			alive := map[string]bool{}
			for i := range pods.Items {
				p := &pods.Items[i]
				if p.Status.Phase != corev1.PodRunning || agentpod.IsTerminating(p) {
					continue
				}
				alive[p.Name] = true
				if _, ok := running[p.Name]; ok {
					continue
				}
				cmd, err := startAgent(binary, p, logDir)
				if errors.Is(err, errNoIP) {
					continue
				}
				if err != nil {
					fmt.Fprintf(os.Stderr, "run-agents: pod %s: %v\n", p.Name, err)
					alive[p.Name] = false
					continue
				}
				running[p.Name] = cmd
				fmt.Fprintf(os.Stderr, "run-agents: started the agent of pod %s (%s)\n", p.Name, strings.Join(cmd.cmd.Args[1:], " "))
			}
			for name, cmd := range running {
				if !alive[name] {
					stopAgent(name, cmd)
					delete(running, name)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// startAgent runs the agent of a pod: the arguments and environment of its agent container
// (the one running hive-agent), with the identity the kubelet's downward API would give.
// agentProcess is a running agent; exited closes when it ends.
type agentProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startAgent(binary string, pod *corev1.Pod, logDir string) (*agentProcess, error) {
	idx := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool {
		return slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--mode=") })
	})
	if idx < 0 {
		return nil, fmt.Errorf("no container runs hive-agent (no --mode= argument)")
	}
	container := pod.Spec.Containers[idx]
	// Many agents share this machine: no health port each, and an agent that serves
	// requests listens on its pod's IP (the demo's kwok gives pods loopback addresses), where
	// the gateway sends them.
	args := append([]string{"--health-addr=0"}, container.Args...)
	if port, _, ok := agentpod.Serving(pod); ok {
		if pod.Status.PodIP == "" {
			return nil, errNoIP
		}
		args = append(args, "--serving-addr="+net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port)))
	}
	cmd := exec.Command(binary, args...) //nolint:gosec // the binary is the project's own agent
	cmd.Env = os.Environ()
	for _, e := range container.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			}
		}
		cmd.Env = append(cmd.Env, e.Name+"="+v)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if logDir != "" {
		f, err := os.Create(logDir + "/agent-" + pod.Name + ".log")
		if err != nil {
			return nil, fmt.Errorf("creating the agent's log: %w", err)
		}
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the agent: %w", err)
	}
	p := &agentProcess{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// errNoIP is a serving pod whose IP is not known yet: its agent starts once it is.
var errNoIP = errors.New("the pod has no IP yet to serve requests on")

// stopAgent stops an agent as the kubelet would stop its container: SIGTERM, then SIGKILL
// after the grace period.
func stopAgent(name string, p *agentProcess) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
	}
	fmt.Fprintf(os.Stderr, "run-agents: stopped the agent of pod %s\n", name)
}
