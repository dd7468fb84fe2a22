// Package fleet runs real agents (pkg/agent) in a test process, one per ready pod of a hive,
// as the containers of those pods would. A pod that goes away takes its agent with it, as a
// crash would: the agent's connection to the API server is cut, so it writes nothing more.
package fleet

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/pkg/agent"
)

// Fleet starts and stops agents as the pods of a hive come and go.
type Fleet struct {
	// Config reaches the API server.
	Config *rest.Config
	// Client lists pods.
	Client client.Client
	// Namespace and Hive select the pods.
	Namespace, Hive string
	// Handler returns the handler of the agent of a pod.
	Handler func(pod string) agent.Handler
	// Options adjusts each agent's options (RunningAfter, ShutdownGrace...).
	Options func(*agent.Options)
	// Logger receives the agents' logs.
	Logger logr.Logger

	mu      sync.Mutex
	agents  map[string]*member
	stopped map[string]bool
}

type member struct {
	cancel context.CancelFunc
	cut    *atomic.Bool
	done   chan struct{}
}

// Start watches the hive's pods until ctx is done, and stops every agent then.
func (f *Fleet) Start(ctx context.Context) {
	f.mu.Lock()
	f.agents = map[string]*member{}
	f.stopped = map[string]bool{}
	f.mu.Unlock()
	go func() {
		ticker := time.NewTicker(20 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				f.mu.Lock()
				for name := range f.agents {
					f.killLocked(name)
				}
				f.mu.Unlock()
				return
			case <-ticker.C:
				f.sync(ctx)
			}
		}
	}()
}

func (f *Fleet) sync(ctx context.Context) {
	pods := &corev1.PodList{}
	if err := f.Client.List(ctx, pods, client.InNamespace(f.Namespace), client.MatchingLabels{swarmv1alpha1.LabelHive: f.Hive}); err != nil {
		return
	}
	alive := map[string]bool{}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || agentpod.IsFinished(p) {
			continue
		}
		alive[p.Name] = true
		if _, running := f.agents[p.Name]; !running && !f.stopped[p.Name] && agentpod.IsReady(p) {
			f.startLocked(p)
		}
	}
	for name := range f.agents {
		if !alive[name] {
			f.killLocked(name)
		}
	}
}

func (f *Fleet) startLocked(p *corev1.Pod) {
	cut := &atomic.Bool{}
	cfg := rest.CopyConfig(f.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			if cut.Load() {
				return nil, errors.New("agent process is gone")
			}
			return rt.RoundTrip(req)
		})
	}
	opts := agent.Options{
		Config:        cfg,
		PodName:       p.Name,
		Namespace:     p.Namespace,
		Hive:          f.Hive,
		Concurrency:   concurrency(p),
		HealthAddr:    "0",
		ShutdownGrace: 5 * time.Second,
		Logger:        f.Logger,
	}
	if f.Options != nil {
		f.Options(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{cancel: cancel, cut: cut, done: make(chan struct{})}
	f.agents[p.Name] = m
	go func() {
		defer close(m.done)
		_ = agent.Run(ctx, opts, f.Handler(p.Name))
	}()
}

// concurrency reads the slots the operator gave the pod.
func concurrency(p *corev1.Pod) int {
	for _, c := range p.Spec.Containers {
		for _, e := range c.Env {
			if n, err := strconv.Atoi(e.Value); err == nil && e.Name == swarmv1alpha1.EnvAgentConcurrency {
				return n
			}
		}
	}
	return 1
}

// killLocked stops an agent as a crash would: its connection is cut first, so it writes
// nothing, then its process ends.
func (f *Fleet) killLocked(name string) {
	m, ok := f.agents[name]
	if !ok {
		return
	}
	m.cut.Store(true)
	m.cancel()
	delete(f.agents, name)
}

// Kill crashes the agent of a pod (the pod stays).
func (f *Fleet) Kill(pod string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killLocked(pod)
}

// Stop shuts the agent of a pod down gracefully, as on SIGTERM, and waits for it.
func (f *Fleet) Stop(pod string) {
	f.mu.Lock()
	m, ok := f.agents[pod]
	f.stopped[pod] = true
	delete(f.agents, pod)
	f.mu.Unlock()
	if !ok {
		return
	}
	m.cancel()
	<-m.done
}

// Running returns the pods whose agents run.
func (f *Fleet) Running() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.agents))
	for name := range f.agents {
		out = append(out, name)
	}
	return out
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
