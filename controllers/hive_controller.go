package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/expectations"
	"github.com/aihub-dev/hive-operator/internal/hivestatus"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/pool"
	"github.com/aihub-dev/hive-operator/internal/revision"
)

// HiveReconciler keeps each hive's agent pods, PodDisruptionBudget and status right.
type HiveReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads from the API server, for the rare checks a stale cache must not
	// answer (adopting orphans).
	APIReader client.Reader
	// Recorder emits events about the hive.
	Recorder events.EventRecorder
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	// DrainSettle is how long an idle agent stays marked draining before it is deleted, so
	// that the dispatcher's cache sees the mark first. Default 1s.
	DrainSettle time.Duration
	// StatusInterval is the shortest time between two status writes of a hive that differ
	// only in task counts. Default 1s.
	StatusInterval time.Duration
	// MaxConcurrentReconciles is the number of hives reconciled at once. Default 2.
	MaxConcurrentReconciles int
	// Observer, when set, is told of scale events and rollouts (for metrics).
	Observer HiveObserver
	// Bindings, when set, holds the dispatcher's binds in flight, which count as busy slots
	// before the cache shows them: an agent the dispatcher just bound a task to is not
	// deleted as idle.
	Bindings InFlightBinds

	expectations *expectations.Store

	mu              sync.Mutex
	lastStatusWrite map[types.NamespacedName]time.Time
	createFailures  map[types.NamespacedName]createFailure
	released        map[types.NamespacedName][]*corev1.Pod
	// foreign remembers objects a hive would create whose names are taken by objects it
	// does not own, so it does not try again on every pass.
	foreign map[types.NamespacedName]map[string]bool
	scale   map[types.NamespacedName]scaleState
}

// InFlightBinds tells the binds in flight of a hive, by agent (namespace/name).
type InFlightBinds interface {
	Held(hive string) map[string][]types.UID
}

// HiveObserver is told of a hive's scale events and rollouts, for metrics.
type HiveObserver interface {
	// Scaled is called when the autoscaler changes a hive's replicas ("up" or "down").
	Scaled(namespace, hive, direction string)
	// RolloutStarted is called when a hive starts rolling out a new revision.
	RolloutStarted(namespace, hive string)
}

// createFailure remembers failed pod creations of a hive, to back off while its template
// is refused.
type createFailure struct {
	generation int64
	count      int
	at         time.Time
	err        error
}

// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=hives,verbs=get;list;watch
// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=hives/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=hives/finalizers,verbs=update
// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=tasks,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one hive's agents towards its spec.
func (r *HiveReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	hive := &swarmv1alpha1.Hive{}
	if err := r.Client.Get(ctx, req.NamespacedName, hive); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("reading hive: %w", err)
	}
	if hive.DeletionTimestamp != nil {
		// Its pods and PodDisruptionBudget carry owner references: the garbage collector
		// removes them.
		return ctrl.Result{}, nil
	}
	return r.reconcile(ctx, hive)
}

func (r *HiveReconciler) reconcile(ctx context.Context, hive *swarmv1alpha1.Hive) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(hive)
	now := r.now()

	if err := r.releasePods(ctx, hive); err != nil {
		return ctrl.Result{}, err
	}
	pods, err := r.agentPods(ctx, hive)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.ensureAgentAccess(ctx, hive, pods); err != nil {
		return ctrl.Result{}, err
	}
	byName := make(map[string]*corev1.Pod, len(pods))
	for _, p := range pods {
		byName[p.Name] = p
	}
	if pending := r.expectations.Satisfied(key.String(), func(name string) (*corev1.Pod, bool) {
		p, ok := byName[name]
		return p, ok
	}); pending > 0 {
		// The cache has not caught up with our last writes; its watch events trigger the
		// next reconcile. The requeue only guards against a lost event.
		log.FromContext(ctx).V(1).Info("waiting for the cache to show our writes", "pending", pending)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}

	// Binds in flight first, then the cache: a bind the ledger stops holding in between is
	// one the cache then shows.
	var inFlight map[string][]types.UID
	if r.Bindings != nil {
		inFlight = r.Bindings.Held(key.String())
	}
	tasks, err := r.activeTasks(ctx, hive)
	if err != nil {
		return ctrl.Result{}, err
	}
	load := countLoad(tasks, inFlight, hive.Namespace, hive.Spec.Agent.Capabilities, now)
	busy, queued, running := load.busy, load.queued, load.running

	var (
		scaling      *hivestatus.Scaling
		scaleRequeue time.Duration
	)
	if hive.Spec.Autoscaling != nil {
		var n int32
		if n, scaling, scaleRequeue, err = r.autoscale(ctx, hive, queued, running, len(busy), now); err != nil {
			return ctrl.Result{}, err
		}
		hive.Spec.Replicas = &n
	} else {
		r.forgetScale(key)
	}
	replicas := int(ptrValue(hive.Spec.Replicas, 1))
	surge, unavailable, err := pool.ResolveRollout(hive.Spec.Rollout.MaxSurge, hive.Spec.Rollout.MaxUnavailable, replicas)
	if err != nil {
		// The schema refuses such values; a hive stored before it did is reported, not retried.
		return ctrl.Result{}, fmt.Errorf("resolving the rollout bounds: %w", err)
	}
	spec := pool.Spec{
		Replicas:       replicas,
		UpdateRevision: revision.Of(&hive.Spec.Template, &hive.Spec.Agent),
		MaxSurge:       surge,
		MaxUnavailable: unavailable,
		DrainTimeout:   durationValue(hive.Spec.Rollout.DrainTimeout, 10*time.Minute),
		DrainSettle:    r.DrainSettle,
	}
	agents := make([]pool.Agent, 0, len(pods))
	for _, p := range pods {
		agents = append(agents, toAgent(p, busy[p.Name]))
	}
	plan := pool.Compute(spec, agents, now)

	createErr, writeErr := r.carryOut(ctx, hive, spec, plan, byName)

	newStatus := hivestatus.Compute(&hive.Status, hivestatus.Observed{
		Generation:     hive.Generation,
		Desired:        replicas,
		MinAvailable:   max(0, replicas-unavailable),
		UpdateRevision: spec.UpdateRevision,
		Selector:       labels.SelectorFromSet(labels.Set{swarmv1alpha1.LabelHive: hive.Name}).String(),
		Plan:           plan,
		QueuedTasks:    queued,
		RunningTasks:   running,
		CreateError:    createErr,
		Scaling:        scaling,
		Now:            now,
	})
	if err := r.ensurePDB(ctx, hive); err != nil {
		return ctrl.Result{}, err
	}
	statusWait, err := r.writeStatus(ctx, hive, newStatus, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	if writeErr != nil {
		// The workqueue retries with its exponential backoff.
		return ctrl.Result{}, writeErr
	}

	result := ctrl.Result{RequeueAfter: plan.RequeueAfter}
	for _, d := range []time.Duration{statusWait, r.createBackoff(key, now), scaleRequeue, load.retryIn} {
		if d > 0 && (result.RequeueAfter == 0 || d < result.RequeueAfter) {
			result.RequeueAfter = d
		}
	}
	return result, nil
}

// agentPods returns the pods the hive controls, adopting orphans that carry its label.
func (r *HiveReconciler) agentPods(ctx context.Context, hive *swarmv1alpha1.Hive) ([]*corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := r.Client.List(ctx, list, client.InNamespace(hive.Namespace), client.MatchingFields{IndexPodHive: hive.Name}); err != nil {
		return nil, fmt.Errorf("listing agent pods: %w", err)
	}
	var pods, orphans []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		ref := metav1.GetControllerOf(p)
		switch {
		case ref == nil:
			if p.DeletionTimestamp == nil {
				orphans = append(orphans, p)
			}
		case ref.UID == hive.UID:
			pods = append(pods, p)
		}
	}
	if len(orphans) > 0 {
		adopted, err := r.adopt(ctx, hive, orphans)
		if err != nil {
			return nil, err
		}
		pods = append(pods, adopted...)
	}
	return pods, nil
}

// activeTasks returns the hive's tasks that have not finished.
func (r *HiveReconciler) activeTasks(ctx context.Context, hive *swarmv1alpha1.Hive) ([]swarmv1alpha1.Task, error) {
	list := &swarmv1alpha1.TaskList{}
	// Read only: skip the cache's copies, which would cost one per task per reconcile.
	if err := r.Client.List(ctx, list, client.InNamespace(hive.Namespace), client.MatchingFields{IndexTaskActiveHive: hive.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the hive's tasks: %w", err)
	}
	return list.Items, nil
}

// load is what a hive's tasks ask of its agents.
type load struct {
	// busy counts the slots each agent uses: tasks bound to it in the cache, and binds in
	// flight the cache does not show yet.
	busy map[string]int
	// queued counts the tasks waiting for a slot now (lifecycle.Waiting); running the
	// tasks bound to an agent.
	queued, running int
	// retryIn is when the first task backing off starts waiting for a slot: the hive's
	// load changes then, with no event to say so.
	retryIn time.Duration
}

// countLoad counts a hive's load from its unfinished tasks and the binds in flight (by
// agent key, namespace/name).
func countLoad(tasks []swarmv1alpha1.Task, inFlight map[string][]types.UID, namespace string, offered []string, now time.Time) load {
	l := load{busy: map[string]int{}}
	bound := map[string]map[types.UID]bool{}
	for i := range tasks {
		t := &tasks[i]
		if t.Status.Phase.Bound() {
			if bound[t.Status.Agent] == nil {
				bound[t.Status.Agent] = map[types.UID]bool{}
			}
			bound[t.Status.Agent][t.UID] = true
			continue
		}
		waiting, retryIn := lifecycle.Waiting(t, offered, now, time.Time{})
		switch {
		case waiting:
			l.queued++
		case retryIn > 0:
			l.retryIn = shortest(l.retryIn, retryIn)
		}
	}
	for agent, uids := range inFlight {
		name := strings.TrimPrefix(agent, namespace+"/")
		for _, uid := range uids {
			if bound[name] == nil {
				bound[name] = map[types.UID]bool{}
			}
			if !bound[name][uid] {
				bound[name][uid] = true
				l.queued = max(0, l.queued-1) // the bind takes it out of the queue
			}
		}
	}
	for agent, uids := range bound {
		l.busy[agent] = len(uids)
		l.running += len(uids)
	}
	return l
}

func toAgent(p *corev1.Pod, busy int) pool.Agent {
	since, draining := agentpod.DrainingSince(p)
	return pool.Agent{
		Name:          p.Name,
		Revision:      agentpod.Revision(p),
		Created:       p.CreationTimestamp.Time,
		Ready:         agentpod.IsReady(p),
		Finished:      agentpod.IsFinished(p),
		Terminating:   agentpod.IsTerminating(p),
		Draining:      draining,
		DrainingSince: since,
		Busy:          busy,
	}
}

// writeStatus patches the hive's status if it changed. A change of task counts alone waits
// until StatusInterval has passed since the last write, and the returned duration says
// when to come back for it.
func (r *HiveReconciler) writeStatus(ctx context.Context, hive *swarmv1alpha1.Hive, status swarmv1alpha1.HiveStatus, now time.Time) (time.Duration, error) {
	if hivestatus.Equal(&hive.Status, &status) {
		return 0, nil
	}
	key := client.ObjectKeyFromObject(hive)
	r.mu.Lock()
	last := r.lastStatusWrite[key]
	r.mu.Unlock()
	if wait := last.Add(r.StatusInterval).Sub(now); wait > 0 && hivestatus.OnlyCountersChanged(&hive.Status, &status) {
		return wait, nil
	}
	prev := hive.Status
	// The whole status goes in the patch, not a diff: a diff would never carry the counts
	// that are zero on both sides, and kubectl would print them blank.
	raw, err := jsonMarshal(map[string]any{"status": status})
	if err != nil {
		return 0, err
	}
	hive.Status = status
	if err := r.Client.Status().Patch(ctx, hive, client.RawPatch(types.MergePatchType, raw)); err != nil {
		return 0, fmt.Errorf("writing hive status: %w", err)
	}
	r.mu.Lock()
	r.lastStatusWrite[key] = now
	r.mu.Unlock()
	r.statusEvents(hive, &prev, &status)
	return 0, nil
}

// statusEvents reports rollouts starting and finishing, after the status write that
// records them.
func (r *HiveReconciler) statusEvents(hive *swarmv1alpha1.Hive, prev, cur *swarmv1alpha1.HiveStatus) {
	if prev.UpdateRevision != "" && prev.UpdateRevision != cur.UpdateRevision {
		r.Recorder.Eventf(hive, nil, corev1.EventTypeNormal, "RolloutStarted", "Rollout",
			"Rolling out revision %s to %d agents", cur.UpdateRevision, cur.DesiredReplicas)
		if r.Observer != nil {
			r.Observer.RolloutStarted(hive.Namespace, hive.Name)
		}
	}
	if prev.CurrentRevision != "" && prev.CurrentRevision != cur.CurrentRevision {
		r.Recorder.Eventf(hive, nil, corev1.EventTypeNormal, "RolloutComplete", "Rollout",
			"All agents run revision %s", cur.CurrentRevision)
	}
}

func (r *HiveReconciler) forget(key types.NamespacedName) {
	r.expectations.Forget(key.String())
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.lastStatusWrite, key)
	delete(r.createFailures, key)
	delete(r.released, key)
	delete(r.foreign, key)
	delete(r.scale, key)
}

func (r *HiveReconciler) now() time.Time { return r.Now() }

// init sets the defaults of the options left unset and the reconciler's memory.
func (r *HiveReconciler) init() {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.DrainSettle <= 0 {
		r.DrainSettle = time.Second
	}
	if r.StatusInterval <= 0 {
		r.StatusInterval = time.Second
	}
	if r.MaxConcurrentReconciles == 0 {
		r.MaxConcurrentReconciles = 2
	}
	r.expectations = expectations.New(time.Minute, r.now)
	r.lastStatusWrite = map[types.NamespacedName]time.Time{}
	r.createFailures = map[types.NamespacedName]createFailure{}
	r.released = map[types.NamespacedName][]*corev1.Pod{}
	r.foreign = map[types.NamespacedName]map[string]bool{}
	r.scale = map[types.NamespacedName]scaleState{}
}

// SetupWithManager registers the controller and its watches with the manager.
func (r *HiveReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.init()
	err := ctrl.NewControllerManagedBy(mgr).
		Named("hive").
		For(&swarmv1alpha1.Hive{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Watches(&corev1.Pod{}, &podHandler{r: r}).
		Watches(&swarmv1alpha1.Task{}, delayedTaskHandler(r.StatusInterval/2), builder.WithPredicates(taskBindingChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the hive controller: %w", err)
	}
	return nil
}
