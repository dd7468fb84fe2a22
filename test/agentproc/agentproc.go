// Package agentproc is a kubelet runtime (test/kubelet) that runs the agent of each Ready
// pod as a hive-agent process of its own, with the identity the operator injects into a
// pod (POD_NAME, POD_NAMESPACE, HIVE_NAME, AGENT_CONCURRENCY), so that an agent's memory
// and CPU can be read from /proc apart from the process that runs the test. test/fleet
// runs agents inside the test's process instead, which is cheaper by the thousand.
package agentproc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// Build builds cmd/hive-agent of the module at root into dir and returns the binary's path.
func Build(ctx context.Context, root, dir string) (string, error) {
	return testenv.Build(ctx, root, dir, "hive-agent")
}

// Runtime runs hive-agent processes for pods.
type Runtime struct {
	// Binary is hive-agent; Kubeconfig what its processes reach the API server with.
	Binary, Kubeconfig string
	// Args are the agent's flags (--mode=echo, say); --health-addr=0 is added, since the
	// processes of one machine would share the port.
	Args []string
	// LogDir, when set, holds each agent's log, <pod>.log.
	LogDir string

	mu    sync.Mutex
	procs map[string]*exec.Cmd
	ready atomic.Int64
	err   error // why the last agent that could not start did not
}

// Start starts the agent of a pod, unless one runs already.
func (r *Runtime) Start(pod *corev1.Pod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.procs == nil {
		r.procs = map[string]*exec.Cmd{}
	}
	if r.procs[pod.Name] != nil {
		return
	}
	cmd := exec.Command(r.Binary, append([]string{"--health-addr=0"}, r.Args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+r.Kubeconfig,
		swarmv1alpha1.EnvPodName+"="+pod.Name, swarmv1alpha1.EnvPodNamespace+"="+pod.Namespace,
		swarmv1alpha1.EnvHiveName+"="+pod.Labels[swarmv1alpha1.LabelHive],
		swarmv1alpha1.EnvAgentConcurrency+"="+strconv.Itoa(agentpod.Slots(pod)))
	stderr, err := cmd.StderrPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		r.err = fmt.Errorf("starting the agent of pod %s: %w", pod.Name, err)
		return
	}
	r.procs[pod.Name] = cmd
	go r.watchLog(pod.Name, stderr)
}

// watchLog copies an agent's log to its file and counts the agents that said they are
// ready.
func (r *Runtime) watchLog(pod string, log io.Reader) {
	var out *os.File
	if r.LogDir != "" {
		out, _ = os.Create(filepath.Join(r.LogDir, pod+".log"))
		defer func() { _ = out.Close() }()
	}
	s := bufio.NewScanner(log)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		if out != nil {
			_, _ = fmt.Fprintln(out, s.Text())
		}
		if bytes.Contains(s.Bytes(), []byte(`"agent ready"`)) {
			r.ready.Add(1)
		}
	}
}

// Ready is how many agents have said they are ready (their task watch synced).
func (r *Runtime) Ready() int { return int(r.ready.Load()) }

// Err says why the last agent that could not start did not, nil when all did.
func (r *Runtime) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// PIDs returns the process of each running agent, by pod.
func (r *Runtime) PIDs() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.procs))
	for pod, cmd := range r.procs {
		out[pod] = cmd.Process.Pid
	}
	return out
}

// Stop sends an agent SIGTERM and waits for it to exit, or kills it after grace.
func (r *Runtime) Stop(pod string, grace time.Duration) {
	cmd := r.take(pod)
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Kill kills an agent at once.
func (r *Runtime) Kill(pod string) {
	if cmd := r.take(pod); cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// StopAll kills every agent.
func (r *Runtime) StopAll() {
	for pod := range r.PIDs() {
		r.Kill(pod)
	}
}

func (r *Runtime) take(pod string) *exec.Cmd {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := r.procs[pod]
	delete(r.procs, pod)
	return cmd
}
