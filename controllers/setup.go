package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/dispatch"
	"github.com/aihub-dev/hive-operator/internal/metrics"
	"github.com/aihub-dev/hive-operator/internal/requestload"
)

// Options configure the operator's controllers.
type Options struct {
	// HiveConcurrency is the number of hives reconciled at once.
	HiveConcurrency int
	// DrainSettle and StatusInterval: see HiveReconciler.
	DrainSettle    time.Duration
	StatusInterval time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// AgentLostGrace, TimeoutGrace and MissingDependencyTimeout: see TaskReconciler.
	AgentLostGrace           time.Duration
	TimeoutGrace             time.Duration
	MissingDependencyTimeout time.Duration
	// TaskConcurrency and DispatchConcurrency are the tasks and hives reconciled at once by
	// the task controller and the dispatcher; BindConcurrency the binds in flight per hive.
	TaskConcurrency     int
	DispatchConcurrency int
	BindConcurrency     int
	// Namespaces are the namespaces the operator serves; all when empty.
	Namespaces []string
	// FinishedTaskSweepInterval: see RetentionReconciler.
	FinishedTaskSweepInterval time.Duration
	// Gateways say where the hive gateways are, to read their request load.
	Gateways GatewayOptions
}

// GatewayOptions say where the hive gateways are: the operator asks each, at a fixed
// interval, what it has queued and in flight for each hive (package requestload), to scale
// the hive on it and to keep agents serving requests from being deleted.
type GatewayOptions struct {
	// Namespace and Service name the gateways' Service, whose EndpointSlices list them;
	// Port is the name of its port that serves their metrics and load. No request load is
	// read when Service is empty.
	Namespace, Service, Port string
	// Interval is how often each gateway is asked; default 1s.
	Interval time.Duration
}

// Enabled reports whether the operator reads the gateways' load.
func (g GatewayOptions) Enabled() bool { return g.Service != "" }

// Cache adds to o the EndpointSlices of the gateways' Service, and no other.
func (g GatewayOptions) Cache(o cache.Options) cache.Options {
	if !g.Enabled() {
		return o
	}
	if o.ByObject == nil {
		o.ByObject = map[client.Object]cache.ByObject{}
	}
	o.ByObject[&discoveryv1.EndpointSlice{}] = cache.ByObject{
		Label:      labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: g.Service}),
		Namespaces: map[string]cache.Config{g.Namespace: {}},
	}
	return o
}

// CacheOptions limit what the manager caches: only tasks that have not finished (the
// history is the RetentionReconciler's, which never holds it), only pods that carry the
// hive label (a cluster's other pods are none of the operator's business and would cost
// memory), and no managed fields on any object.
func CacheOptions() cache.Options {
	hive := swarmv1alpha1.HiveObjects()
	return cache.Options{
		DefaultTransform: stripForCache,
		// Only objects of hives: the cluster's other pods, accounts and roles would cost
		// memory and events for nothing.
		ByObject: map[client.Object]cache.ByObject{
			&swarmv1alpha1.Task{}:           {Field: swarmv1alpha1.UnfinishedTasks()},
			&corev1.Pod{}:                   {Label: hive},
			&corev1.ServiceAccount{}:        {Label: hive},
			&rbacv1.Role{}:                  {Label: hive},
			&rbacv1.RoleBinding{}:           {Label: hive},
			&policyv1.PodDisruptionBudget{}: {Label: hive},
		},
	}
}

// stripForCache drops from an object what no decision of the operator reads, before it
// enters the cache: managed fields of every object, and of tasks their input, result,
// labels and annotations (kubectl's last-applied copy among them, which holds the input
// again). A task's input and result may be hundreds of kilobytes, and its labels map is a
// quarter of what a cached task costs the heap (measured with 30,000 queued tasks); the
// operator never reads them (it selects and indexes tasks by spec and status), and the
// statuses it writes are patches of the fields it changes, so the missing ones are never
// written back.
func stripForCache(obj any) (any, error) {
	obj, err := cache.TransformStripManagedFields()(obj)
	if err != nil {
		return obj, err
	}
	if t, ok := obj.(*swarmv1alpha1.Task); ok {
		t.Spec.Input, t.Status.Result = "", ""
		t.Labels, t.Annotations = nil, nil
	}
	return obj, nil
}

// Setup registers the cache indexes and every controller with the manager.
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) error {
	if err := SetupIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	metrics.State.SetReader(mgr.GetCache())
	if err := metrics.Register(ctrlmetrics.Registry); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	if err := mgr.Add(taskTransitions{cache: mgr.GetCache()}); err != nil {
		return fmt.Errorf("adding the task metrics: %w", err)
	}
	ledger := dispatch.NewLedger()
	hiveOpts := HiveOptions{
		Now: o.Now, DrainSettle: o.DrainSettle, StatusInterval: o.StatusInterval,
		MaxConcurrentReconciles: o.HiveConcurrency, Bindings: ledger, Metrics: prometheusMetrics{},
	}
	if o.Gateways.Enabled() {
		poller, changed := requestPoller(mgr, o.Gateways)
		if err := mgr.Add(poller); err != nil {
			return fmt.Errorf("adding the gateways' poller: %w", err)
		}
		hiveOpts.Requests, hiveOpts.RequestEvents = poller, changed
	}
	hives := NewHiveReconciler(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("hive-controller"), hiveOpts)
	if err := hives.SetupWithManager(mgr); err != nil {
		return err
	}
	dispatcher := NewDispatcher(mgr.GetClient(), mgr.GetAPIReader(), ledger, DispatchOptions{
		Now: o.Now, BindConcurrency: o.BindConcurrency, MaxConcurrentReconciles: o.DispatchConcurrency, Metrics: prometheusMetrics{},
	})
	if err := dispatcher.SetupWithManager(mgr); err != nil {
		return err
	}
	lister, err := client.NewWithWatch(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return fmt.Errorf("creating the client of finished tasks: %w", err)
	}
	retention := NewRetentionReconciler(mgr.GetClient(), mgr.GetAPIReader(), lister, RetentionOptions{
		Now: o.Now, Namespaces: o.Namespaces, SweepInterval: o.FinishedTaskSweepInterval, Metrics: prometheusMetrics{},
	})
	if err := retention.SetupWithManager(mgr); err != nil {
		return err
	}
	tasks := NewTaskReconciler(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("task-controller"), TaskOptions{
		Now: o.Now, AgentLostGrace: o.AgentLostGrace, TimeoutGrace: o.TimeoutGrace,
		MissingDependencyTimeout: o.MissingDependencyTimeout, MaxConcurrentReconciles: o.TaskConcurrency, Metrics: prometheusMetrics{},
	})
	return tasks.SetupWithManager(mgr)
}

// requestPoller returns the poller of the gateways' request load and the events of the
// hives whose load changed, for the hive controller.
func requestPoller(mgr ctrl.Manager, g GatewayOptions) (*requestload.Poller, <-chan event.GenericEvent) {
	changed := make(chan event.GenericEvent, 1024)
	targets := requestload.EndpointSliceTargets(mgr.GetCache(), g.Namespace, g.Service, g.Port)
	poller := requestload.NewPoller(targets, func(keys []string) {
		for _, key := range keys {
			ns, name, _ := strings.Cut(key, "/")
			changed <- event.GenericEvent{Object: &swarmv1alpha1.Hive{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}}
		}
	}, requestload.PollerOptions{Interval: g.Interval, Logger: mgr.GetLogger().WithName("requestload")})
	return poller, changed
}
