package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/pkg/agent"
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

// simulator plays the kubelet and the agents' containers for a hive: it marks the hive's pods
// Ready (unless the cluster does, as kwok does) and runs one real pkg/agent agent per Ready
// pod in this process. It watches the pods once, instead of polling them, so that a thousand
// agents cost the API server no more than their own task watches.
type simulator struct {
	config    *rest.Config  // the agents' task watches
	api       client.Client // pod status writes
	writer    client.Client // the agents' task reads and writes, counted
	counter   *requestCounter
	ns, hive  string
	markReady bool
	delay     time.Duration

	mu      sync.Mutex
	agents  map[string]*simAgent
	marking map[string]bool
	stopped bool
	ready   atomic.Int64
	errs    atomic.Int64
	lastErr atomic.Value
	sem     chan struct{}
	cancel  context.CancelFunc
}

type simAgent struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newSimulator(cfg *rest.Config, api client.Client, ns, hive string, markReady bool, delay time.Duration) (*simulator, error) {
	counter := &requestCounter{}
	wcfg := rest.CopyConfig(cfg)
	wcfg.WrapTransport = counter.wrap
	writer, err := client.New(wcfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the agents' client: %w", err)
	}
	return &simulator{
		config: cfg, api: api, writer: writer, counter: counter, ns: ns, hive: hive, markReady: markReady, delay: delay,
		agents: map[string]*simAgent{}, marking: map[string]bool{}, sem: make(chan struct{}, 16),
	}, nil
}

// start watches the hive's pods until stop.
func (s *simulator) start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(ctx)
	pods, err := cache.New(s.config, cache.Options{
		Scheme:            scheme,
		DefaultNamespaces: map[string]cache.Config{s.ns: {}},
		DefaultTransform:  cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{swarmv1alpha1.LabelHive: s.hive})},
		},
	})
	if err != nil {
		return fmt.Errorf("creating the pod watch: %w", err)
	}
	inf, err := pods.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return fmt.Errorf("watching pods: %w", err)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.onPod(ctx, obj) },
		UpdateFunc: func(_, obj any) { s.onPod(ctx, obj) },
		DeleteFunc: func(obj any) { s.onGone(obj) },
	}); err != nil {
		return fmt.Errorf("watching pods: %w", err)
	}
	go func() { _ = pods.Start(ctx) }()
	if !pods.WaitForCacheSync(ctx) {
		return fmt.Errorf("the pod watch did not sync: %w", context.Cause(ctx))
	}
	return nil
}

func (s *simulator) onPod(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.DeletionTimestamp != nil || agentpod.IsFinished(pod) {
		s.onGone(pod)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	switch {
	case agentpod.IsReady(pod):
		if _, running := s.agents[pod.Name]; !running {
			s.startAgentLocked(pod)
		}
	case s.markReady && !s.marking[pod.Name]:
		s.marking[pod.Name] = true
		go s.setReady(ctx, pod.DeepCopy())
	}
}

func (s *simulator) onGone(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	s.mu.Lock()
	a := s.agents[pod.Name]
	delete(s.agents, pod.Name)
	s.mu.Unlock()
	if a != nil {
		a.cancel()
	}
}

// setReady writes what a kubelet would once the pod's containers run and pass their
// readiness probe (as test/kubelet does).
func (s *simulator) setReady(ctx context.Context, pod *corev1.Pod) {
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	for attempt := 0; attempt < 10 && ctx.Err() == nil; attempt++ {
		base := pod.DeepCopy()
		now := metav1.Now()
		pod.Status.Phase = corev1.PodRunning
		pod.Status.StartTime = &now
		pod.Status.PodIP = "10.0.0.1"
		pod.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}
		err := s.api.Status().Patch(ctx, pod, client.MergeFrom(base))
		if err == nil || apierrors.IsNotFound(err) {
			return
		}
		s.noteError(fmt.Errorf("marking pod %s ready: %w", pod.Name, err))
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

func (s *simulator) startAgentLocked(pod *corev1.Pod) {
	ctx, cancel := context.WithCancel(context.Background())
	a := &simAgent{cancel: cancel, done: make(chan struct{})}
	s.agents[pod.Name] = a
	opts := agent.Options{
		Config:        s.config,
		Client:        s.writer,
		PodName:       pod.Name,
		Namespace:     pod.Namespace,
		Hive:          s.hive,
		Concurrency:   podConcurrency(pod),
		HealthAddr:    "0",
		ShutdownGrace: 5 * time.Second,
		Logger:        logr.New(&agentSink{sim: s}),
	}
	delay := s.delay
	go func() {
		defer close(a.done)
		err := agent.Run(ctx, opts, func(ctx context.Context, _ *agent.Task) (string, error) {
			if delay > 0 {
				select {
				case <-ctx.Done():
					return "", ctx.Err()
				case <-time.After(delay):
				}
			}
			return "ok", nil
		})
		if err != nil {
			s.noteError(fmt.Errorf("agent %s: %w", pod.Name, err))
		}
	}()
}

// podConcurrency reads the slots the operator gave the pod.
func podConcurrency(p *corev1.Pod) int {
	for _, c := range p.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == swarmv1alpha1.EnvAgentConcurrency {
				if n, err := strconv.Atoi(e.Value); err == nil && n > 0 {
					return n
				}
			}
		}
	}
	return 1
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

// stop stops every agent and waits for them (within a bound: an agent whose API server is
// gone may take its shutdown grace).
func (s *simulator) stop() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.stopped = true
	agents := s.agents
	s.agents = map[string]*simAgent{}
	s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
	for _, a := range agents {
		a.cancel()
	}
	timeout := time.After(30 * time.Second)
	for _, a := range agents {
		select {
		case <-a.done:
		case <-timeout:
			return
		}
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
