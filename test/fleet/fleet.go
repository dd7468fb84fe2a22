// Package fleet runs real agents (pkg/agent) in the test process as the containers of agent
// pods: it is the kubelet's Runtime (test/kubelet). A Ready pod gets an agent; a pod
// deleted gracefully stops its agent as SIGTERM does (the agent finishes or gives back its
// tasks within its shutdown grace); a pod that goes away at once, or a Kill, takes its agent
// with it as a crash would: its connection to the API server is cut first, so it writes
// nothing more.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/pkg/agent"
)

// Fleet runs one agent per started pod.
type Fleet struct {
	// Config reaches the API server.
	Config *rest.Config
	// ConfigFor, when set, returns the configuration of the agent of a pod instead (its own
	// identity, through a proxy...).
	ConfigFor func(pod *corev1.Pod) *rest.Config
	// Handler returns the handler of the agent of a pod.
	Handler func(pod string) agent.Handler
	// Options adjusts each agent's options (RunningAfter, ShutdownGrace, Client...).
	Options func(pod *corev1.Pod, o *agent.Options)
	// Logger receives the agents' logs.
	Logger logr.Logger

	mu      sync.Mutex
	agents  map[string]*member
	ran     atomic.Int64
	ready   atomic.Int64
	lastErr atomic.Pointer[error]
}

type member struct {
	cancel context.CancelFunc
	cut    *atomic.Bool
	done   chan struct{}
}

// Start runs an agent for a pod, with the pod's name, namespace and slots, and the
// default shutdown grace of 5s (below the grace period of the pods tests make).
func (f *Fleet) Start(pod *corev1.Pod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.agents == nil {
		f.agents = map[string]*member{}
	}
	if _, ok := f.agents[pod.Name]; ok {
		return
	}
	cut := &atomic.Bool{}
	log := f.Logger.WithSink(sink{next: f.Logger.GetSink(), f: f})
	base := f.Config
	if f.ConfigFor != nil {
		base = f.ConfigFor(pod)
	}
	cfg := rest.CopyConfig(base)
	wrap := cfg.WrapTransport
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		if wrap != nil {
			rt = wrap(rt)
		}
		return promhttp.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if cut.Load() {
				return nil, errors.New("agent process is gone")
			}
			return rt.RoundTrip(req)
		})
	}
	opts := agent.Options{
		Config:        cfg,
		PodName:       pod.Name,
		Namespace:     pod.Namespace,
		Hive:          pod.Labels[swarmv1alpha1.LabelHive],
		Concurrency:   agentpod.Slots(pod),
		HealthAddr:    "0",
		ShutdownGrace: 5 * time.Second,
		Logger:        log,
	}
	if f.Options != nil {
		f.Options(pod, &opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{cancel: cancel, cut: cut, done: make(chan struct{})}
	f.agents[pod.Name] = m
	f.ran.Add(1)
	handler := f.Handler(pod.Name)
	go func() {
		defer close(m.done)
		if err := agent.Run(ctx, opts, handler); err != nil && !cut.Load() {
			log.Error(err, "agent stopped with an error", "pod", pod.Name)
		}
	}()
}

// Stop shuts the agent of a pod down as SIGTERM does and waits for it, or kills it once
// grace has passed.
func (f *Fleet) Stop(pod string, grace time.Duration) {
	f.mu.Lock()
	m, ok := f.agents[pod]
	delete(f.agents, pod)
	f.mu.Unlock()
	if !ok {
		return
	}
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(grace):
		m.cut.Store(true)
	}
}

// Kill stops the agent of a pod as a crash would: its connection is cut first, so it
// writes nothing, then its process ends.
func (f *Fleet) Kill(pod string) {
	f.mu.Lock()
	m, ok := f.agents[pod]
	delete(f.agents, pod)
	f.mu.Unlock()
	if ok {
		m.cut.Store(true)
		m.cancel()
	}
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

// Started returns how many agents the fleet has started in all.
func (f *Fleet) Started() int { return int(f.ran.Load()) }

// Ready returns how many agents have said they are ready (their task watch synced), as
// test/agentproc counts them from its processes' logs.
func (f *Fleet) Ready() int { return int(f.ready.Load()) }

// Err returns the last error an agent logged, nil when none has.
func (f *Fleet) Err() error {
	if err := f.lastErr.Load(); err != nil {
		return *err
	}
	return nil
}

// sink reads the agents' logs on their way to Logger's sink (nil: discarded): the fleet
// learns what an agent process would say only in its log.
type sink struct {
	next logr.LogSink
	f    *Fleet
}

func (s sink) Init(info logr.RuntimeInfo) {
	if s.next != nil {
		s.next.Init(info)
	}
}

// Enabled is true at every level, so that the fleet sees what it counts.
func (s sink) Enabled(int) bool { return true }

func (s sink) Info(level int, msg string, kv ...any) {
	if msg == "agent ready" {
		s.f.ready.Add(1)
	}
	if s.next != nil && s.next.Enabled(level) {
		s.next.Info(level, msg, kv...)
	}
}

func (s sink) Error(err error, msg string, kv ...any) {
	seen := fmt.Errorf("%s: %w", msg, err)
	s.f.lastErr.Store(&seen)
	if s.next != nil {
		s.next.Error(err, msg, kv...)
	}
}

func (s sink) WithValues(kv ...any) logr.LogSink {
	if s.next != nil {
		s.next = s.next.WithValues(kv...)
	}
	return s
}

func (s sink) WithName(name string) logr.LogSink {
	if s.next != nil {
		s.next = s.next.WithName(name)
	}
	return s
}
