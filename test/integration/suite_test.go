package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/controllers"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/lazylog"
	"github.com/aihub-dev/hive-operator/internal/restmapping"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/kubelet"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

var env *testenv.Env

// TestMain runs the suite against a real API server and etcd. Every test of the package
// needs one: with -short (make test-unit) the package runs nothing.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("test/integration needs a control plane: skipped with -short")
		os.Exit(0)
	}
	if os.Getenv("TEST_LOG") != "" {
		ctrl.SetLogger(lazylog.New(zap.New(zap.UseDevMode(true))))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	os.Exit(testenv.Run(m, &env))
}

// writeCounter counts the manager's writes, so tests can assert how many it makes.
type writeCounter struct {
	podCreates   atomic.Int64
	hiveStatuses atomic.Int64
	taskStatuses atomic.Int64
}

// faultFunc decides whether a write of the operator fails, and with what error.
type faultFunc func(verb string, obj client.Object) error

// operator is a manager running the controllers against the test API server.
type operator struct {
	writes *writeCounter
	// fault, when set, is asked before each write.
	fault  atomic.Pointer[faultFunc]
	cancel context.CancelFunc
	done   chan error
	// err is what the manager returned when it stopped.
	err error
	// elected is closed when the manager becomes leader (at once without leader election).
	elected <-chan struct{}
	// cache reads the manager's cache.
	cache client.Reader
}

// startOperator starts a manager with the project's controllers and stops it when the test
// ends. Tests of the pool use a short drain settle and status interval to run quickly.
func startOperator(t *testing.T, mutate ...func(*controllers.Options)) *operator {
	t.Helper()
	return startOperatorWith(t, nil, mutate...)
}

// startOperatorWith starts an operator whose manager options mgrOpts may change (leader
// election, a metrics endpoint).
func startOperatorWith(t *testing.T, mgrOpts func(*ctrl.Options), mutate ...func(*controllers.Options)) *operator {
	t.Helper()
	o := controllers.Options{DrainSettle: 200 * time.Millisecond, StatusInterval: 300 * time.Millisecond}
	for _, m := range mutate {
		m(&o)
	}
	op := &operator{writes: &writeCounter{}, done: make(chan error, 1)}
	opts := ctrl.Options{
		Scheme:                 testenv.Scheme,
		Cache:                  o.Gateways.Cache(controllers.CacheOptions()),
		MapperProvider:         restmapping.Provider,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Several managers run in one test process; controller names must not collide.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		NewClient: func(cfg *rest.Config, opts client.Options) (client.Client, error) {
			c, err := client.NewWithWatch(cfg, opts)
			if err != nil {
				return nil, err
			}
			return interceptor.NewClient(c, interceptor.Funcs{
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					if _, ok := obj.(*corev1.Pod); ok {
						op.writes.podCreates.Add(1)
					}
					if err := op.injected("create", obj); err != nil {
						return err
					}
					return c.Create(ctx, obj, opts...)
				},
				Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
					if err := op.injected("patch", obj); err != nil {
						return err
					}
					return c.Patch(ctx, obj, patch, opts...)
				},
				Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
					if err := op.injected("delete", obj); err != nil {
						return err
					}
					return c.Delete(ctx, obj, opts...)
				},
				SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
					switch obj.(type) {
					case *swarmv1alpha1.Hive:
						op.writes.hiveStatuses.Add(1)
					case *swarmv1alpha1.Task:
						op.writes.taskStatuses.Add(1)
					}
					if err := op.injected(sub, obj); err != nil {
						return err
					}
					return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
				},
			}), nil
		},
	}
	if mgrOpts != nil {
		mgrOpts(&opts)
	}
	mgr, err := ctrl.NewManager(env.Config, opts)
	if err != nil {
		t.Fatalf("creating the manager: %v", err)
	}
	op.elected = mgr.Elected()
	op.cache = mgr.GetCache()
	ctx, cancel := context.WithCancel(context.Background())
	op.cancel = cancel
	if err := controllers.Setup(ctx, mgr, o); err != nil {
		t.Fatalf("setting up the controllers: %v", err)
	}
	go func() { op.done <- mgr.Start(ctx) }()
	t.Cleanup(op.stop)
	return op
}

func (op *operator) injected(verb string, obj client.Object) error {
	if f := op.fault.Load(); f != nil {
		return (*f)(verb, obj)
	}
	return nil
}

// stop stops the manager and waits for it; it is safe to call twice.
func (op *operator) stop() {
	op.cancel()
	select {
	case op.err = <-op.done:
	case <-time.After(30 * time.Second):
	}
	op.done = closedChan()
}

func closedChan() chan error {
	c := make(chan error)
	close(c)
	return c
}

// namespace creates a namespace for one test; with -short (no control plane) it skips the
// test.
func namespace(t *testing.T) string {
	t.Helper()
	testenv.Require(t, env)
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: strings.TrimRight(name, "-") + "-"}}
	if err := env.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

// startKubelet runs a kubelet for the namespace until the test ends: it puts pods on a
// node (so their deletion is graceful, as on a cluster), marks them ready after readyAfter
// and runs their containers with runtime, if not nil.
func startKubelet(t *testing.T, ns string, readyAfter time.Duration, runtime ...kubelet.Runtime) *kubelet.Kubelet {
	t.Helper()
	k := &kubelet.Kubelet{Config: env.Config, Client: env.Client, Namespace: ns, NodeName: "node-1", MarkReady: true, ReadyAfter: readyAfter}
	if len(runtime) > 0 {
		k.Runtime = runtime[0]
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return k
}

// eventually polls f until it returns nil, failing the test with f's last error after
// timeout.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	testenv.Eventually(t, timeout, 50*time.Millisecond, f)
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(t.Context(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// getHive reads a hive from the API server.
func getHive(t *testing.T, ns, name string) *swarmv1alpha1.Hive {
	t.Helper()
	h := &swarmv1alpha1.Hive{}
	if err := env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, h); err != nil {
		t.Fatalf("reading hive %s: %v", name, err)
	}
	return h
}

// patchHive changes a hive's spec with a merge patch.
func patchHive(t *testing.T, ns, name string, mutate func(*swarmv1alpha1.Hive)) {
	t.Helper()
	h := getHive(t, ns, name)
	base := h.DeepCopy()
	mutate(h)
	if err := env.Client.Patch(t.Context(), h, client.MergeFrom(base)); err != nil {
		t.Fatalf("patching hive %s: %v", name, err)
	}
}

// getPod reads a pod from the API server.
func getPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{}
	if err := env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		t.Fatalf("reading pod %s: %v", name, err)
	}
	return p
}

// livePods lists the pods a hive controls that are not being deleted.
func livePods(ctx context.Context, ns, hive string) ([]corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{swarmv1alpha1.LabelHive: hive}); err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if owner, ok := agentpod.ControllerHive(&p); ok && owner == hive && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// bindTask creates a task of the hive bound to an agent, as the dispatcher would.
func bindTask(t *testing.T, ns, hive, name, agent string) *swarmv1alpha1.Task {
	t.Helper()
	task := builder.Task(ns, name).Hive(hive).Obj()
	create(t, task)
	setTaskPhase(t, task, swarmv1alpha1.TaskRunning, agent)
	return task
}

// setTaskPhase writes a task's phase and agent through the status subresource.
func setTaskPhase(t *testing.T, task *swarmv1alpha1.Task, phase swarmv1alpha1.TaskPhase, agent string) {
	t.Helper()
	base := task.DeepCopy()
	task.Status.Phase = phase
	task.Status.Agent = agent
	if task.Status.Attempt == 0 {
		task.Status.Attempt = 1
	}
	if err := env.Client.Status().Patch(t.Context(), task, client.MergeFrom(base)); err != nil {
		t.Fatalf("setting task %s %s: %v", task.Name, phase, err)
	}
}

// waitTaskGone waits until a task no longer exists.
func waitTaskGone(t *testing.T, ns, name string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() error {
		err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &swarmv1alpha1.Task{})
		if err == nil {
			return fmt.Errorf("task %s is still there", name)
		}
		return client.IgnoreNotFound(err)
	})
}

// events returns the reasons of the events about an object.
func eventReasons(t *testing.T, ns, name string) []string {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := env.Client.List(t.Context(), list, client.InNamespace(ns)); err != nil {
		t.Fatalf("listing events: %v", err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

// sampler checks an invariant over and over while a test runs, recording violations.
type sampler struct {
	mu         sync.Mutex
	violations []string
	samples    int
	stop       chan struct{}
	done       chan struct{}
}

func sample(check func(ctx context.Context) (string, error)) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		ctx := context.Background()
		for {
			select {
			case <-s.stop:
				return
			case <-time.After(15 * time.Millisecond):
			}
			v, err := check(ctx)
			s.mu.Lock()
			if err == nil {
				s.samples++
				if v != "" {
					s.violations = append(s.violations, v)
				}
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// finish stops the sampler and fails the test on any violation.
func (s *sampler) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.samples < 3 {
		t.Fatalf("the invariant was sampled only %d times", s.samples)
	}
	if len(s.violations) > 0 {
		t.Fatalf("%d of %d samples violated the invariant; first: %s", len(s.violations), s.samples, s.violations[0])
	}
	t.Logf("invariant held over %d samples", s.samples)
}

// slotWatch records, from a watch of every task event, the most tasks each agent held.
type slotWatch struct {
	mu   sync.Mutex
	peak map[string]int
	stop func()
}

func watchSlots(t *testing.T, ns string) *slotWatch {
	t.Helper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	wi, err := wc.Watch(context.Background(), &swarmv1alpha1.TaskList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	s := &slotWatch{peak: map[string]int{}, stop: wi.Stop}
	held := map[string]map[types.UID]bool{}
	go func() {
		for ev := range wi.ResultChan() {
			task, ok := ev.Object.(*swarmv1alpha1.Task)
			if !ok {
				continue
			}
			s.mu.Lock()
			for _, m := range held {
				delete(m, task.UID)
			}
			if ev.Type != watch.Deleted && task.Status.Phase.Bound() {
				if held[task.Status.Agent] == nil {
					held[task.Status.Agent] = map[types.UID]bool{}
				}
				held[task.Status.Agent][task.UID] = true
				s.peak[task.Status.Agent] = max(s.peak[task.Status.Agent], len(held[task.Status.Agent]))
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// finish stops the watch and returns, one sentence each, the agents that held more tasks
// than slots says they have (0: unknown, not checked).
func (s *slotWatch) finish(slots func(agent string) int) []string {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for agentName, peak := range s.peak {
		if n := slots(agentName); n > 0 && peak > n {
			out = append(out, fmt.Sprintf("agent %s held %d tasks with %d slots", agentName, peak, n))
		}
	}
	return out
}
