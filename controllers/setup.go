package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/dispatch"
	"github.com/aihub-dev/hive-operator/internal/metrics"
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
	hives := NewHiveReconciler(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("hive-controller"), HiveOptions{
		Now: o.Now, DrainSettle: o.DrainSettle, StatusInterval: o.StatusInterval,
		MaxConcurrentReconciles: o.HiveConcurrency, Bindings: ledger, Metrics: prometheusMetrics{},
	})
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
