package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/fleet"
	"github.com/aihub-dev/hive-operator/test/kubelet"
)

// requestCounter counts HTTP requests by method.
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]float64
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		c.mu.Lock()
		if c.counts == nil {
			c.counts = map[string]float64{}
		}
		c.counts[req.Method]++
		c.mu.Unlock()
		return rt.RoundTrip(req)
	})
}

func (c *requestCounter) snapshot() map[string]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]float64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// simulator plays the kubelet and the agents' containers for a hive: the project's test
// kubelet (test/kubelet) marks the hive's pods Ready (unless the cluster does, as kwok
// does) and the fleet (test/fleet) runs one real pkg/agent agent per Ready pod in this
// process. The kubelet watches the pods once, so a thousand agents cost the API server no
// more than their own task watches. Pods are not bound to a node: nothing deletes them
// while the bench measures.
type simulator struct {
	kubelet *kubelet.Kubelet
	fleet   *fleet.Fleet
	counter *requestCounter // the agents' task reads and writes
	ns      string
	hive    string
	ready   atomic.Int64
	errs    atomic.Int64
	lastErr atomic.Value
	cancel  context.CancelFunc
}

func newSimulator(cfg *rest.Config, api client.Client, ns, hive string, markReady bool, delay time.Duration) (*simulator, error) {
	counter := &requestCounter{}
	wcfg := rest.CopyConfig(cfg)
	wcfg.WrapTransport = counter.wrap
	writer, err := client.New(wcfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the agents' client: %w", err)
	}
	s := &simulator{counter: counter, ns: ns, hive: hive}
	s.fleet = &fleet.Fleet{
		Config: cfg,
		Handler: func(string) agent.Handler {
			return func(ctx context.Context, _ *agent.Task) (string, error) {
				if delay > 0 {
					select {
					case <-ctx.Done():
						return "", ctx.Err()
					case <-time.After(delay):
					}
				}
				return "ok", nil
			}
		},
		Options: func(_ *corev1.Pod, o *agent.Options) {
			o.Client = writer
			o.Logger = logr.New(&agentSink{sim: s})
		},
	}
	s.kubelet = &kubelet.Kubelet{
		Config: cfg, Client: api, Namespace: ns,
		Selector:  labels.SelectorFromSet(labels.Set{swarmv1alpha1.LabelHive: hive}),
		MarkReady: markReady, Runtime: s.fleet,
	}
	return s, nil
}

// start watches the hive's pods until stop.
func (s *simulator) start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(ctx)
	if err := s.kubelet.Start(ctx); err != nil {
		return fmt.Errorf("starting the kubelet: %w", err)
	}
	return nil
}

func (s *simulator) noteError(err error) {
	s.errs.Add(1)
	s.lastErr.Store(err.Error())
}

// running returns the agents whose task watch has synced.
func (s *simulator) running() int { return int(s.ready.Load()) }

// waitAgents waits until n agents run and the operator's hive status counts them ready.
func (s *simulator) waitAgents(ctx context.Context, c client.Client, n int, timeout time.Duration, alive func() error) error {
	deadline := time.Now().Add(timeout)
	hive := &swarmv1alpha1.Hive{}
	for {
		if s.running() >= n {
			err := c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: s.hive}, hive)
			if err == nil && int(hive.Status.ReadyReplicas) >= n {
				return nil
			}
		}
		if alive != nil {
			if err := alive(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents of hive %s ran after %s (the hive reports %d ready)%s",
				s.running(), n, s.hive, timeout, hive.Status.ReadyReplicas, s.errorNote())
		}
		sleepCtx(ctx, 50*time.Millisecond)
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for agents: %w", context.Cause(ctx))
		}
	}
}

func (s *simulator) errorNote() string {
	if n := s.errs.Load(); n > 0 {
		last, _ := s.lastErr.Load().(string)
		return fmt.Sprintf("; %d agent errors, the last: %s", n, last)
	}
	return ""
}

// stop stops every agent (as a crash would: the bench's measurements are over) and waits
// a bounded time for them to be gone.
func (s *simulator) stop() {
	if s == nil || s.cancel == nil {
		return
	}
	s.cancel()
	deadline := time.Now().Add(30 * time.Second)
	for len(s.fleet.Running()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// agentSink is the agents' logger: it counts agents whose task watch has synced ("agent
// ready") and errors, and prints nothing.
type agentSink struct{ sim *simulator }

func (a *agentSink) Init(logr.RuntimeInfo)          {}
func (a *agentSink) Enabled(level int) bool         { return level == 0 }
func (a *agentSink) WithName(string) logr.LogSink   { return a }
func (a *agentSink) WithValues(...any) logr.LogSink { return a }
func (a *agentSink) Info(_ int, msg string, _ ...any) {
	if msg == "agent ready" {
		a.sim.ready.Add(1)
	}
}

func (a *agentSink) Error(err error, msg string, kv ...any) {
	parts := []string{msg, err.Error()}
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, fmt.Sprintf("%v=%v", kv[i], kv[i+1]))
	}
	a.sim.noteError(fmt.Errorf("%s", strings.Join(parts, ": ")))
}
