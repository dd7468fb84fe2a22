package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/autoscale"
	"github.com/aihub-dev/hive-operator/internal/expectations"
	"github.com/aihub-dev/hive-operator/internal/hivestatus"
	"github.com/aihub-dev/hive-operator/internal/pool"
	"github.com/aihub-dev/hive-operator/internal/requestload"
	"github.com/aihub-dev/hive-operator/internal/revision"
)

// HiveOptions configure a HiveReconciler.
type HiveOptions struct {
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
	// Bindings, when set, holds the dispatcher's binds in flight, which count as busy slots
	// before the cache shows them: an agent the dispatcher just bound a task to is not
	// deleted as idle.
	Bindings InFlightBinds
	// Metrics, when set, is told of scale events and rollouts.
	Metrics HiveMetrics
	// Requests, when set, tells the requests the gateways have queued and in flight for a
	// hive (package requestload): they feed the autoscaler, and an agent serving requests
	// is busy, so that a drain waits for them.
	Requests RequestLoad
	// RequestEvents, when set, carries the hives whose request load changed: each is
	// reconciled.
	RequestEvents <-chan event.GenericEvent
}

// RequestLoad tells the request load of a hive (namespace/name).
type RequestLoad interface {
	Load(hive string) requestload.Load
}

// InFlightBinds tells the binds in flight of a hive, by agent (namespace/name).
type InFlightBinds interface {
	Held(hive string) map[string][]types.UID
}

// HiveMetrics is told of a hive's scale events and rollouts.
type HiveMetrics interface {
	// Scaled is called when the autoscaler changes a hive's replicas ("up" or "down").
	Scaled(namespace, hive, direction string)
	// RolloutStarted is called when a hive starts rolling out a new revision.
	RolloutStarted(namespace, hive string)
}

// HiveReconciler keeps each hive's agent pods, their access objects, PodDisruptionBudget and
// status right. Each reconcile observes (the hive's pods and tasks, from the cache),
// decides (how many agents, which to create, drain and delete: internal/autoscale and
// internal/pool), acts on the decision, and writes the status, whatever happened before.
type HiveReconciler struct {
	client    client.Client
	apiReader client.Reader
	recorder  events.EventRecorder
	opts      HiveOptions

	expectations   *expectations.Store
	statusWrites   statusWrites
	createFailures createFailures
	leftLabel      leftLabel
	taken          takenNames
	scaling        scaleMemory
}

// NewHiveReconciler returns a hive controller that reads from c (the manager's cache) and
// apiReader (the API server, for the checks a stale cache must not answer) and writes with
// c.
func NewHiveReconciler(c client.Client, apiReader client.Reader, recorder events.EventRecorder, opts HiveOptions) *HiveReconciler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DrainSettle <= 0 {
		opts.DrainSettle = time.Second
	}
	if opts.StatusInterval <= 0 {
		opts.StatusInterval = time.Second
	}
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = 2
	}
	r := &HiveReconciler{client: c, apiReader: apiReader, recorder: recorder, opts: opts}
	r.expectations = expectations.New(time.Minute, opts.Now)
	return r
}

// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=hives,verbs=get;list;watch
// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=hives/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=hives/finalizers,verbs=update
// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=tasks,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// Reconcile brings one hive's agents towards its spec.
func (r *HiveReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	hive := &swarmv1alpha1.Hive{}
	if err := r.client.Get(ctx, req.NamespacedName, hive); err != nil {
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
	now := r.opts.Now()
	obs, err := r.observe(ctx, hive, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	d, err := r.decide(hive, obs, now)
	if err != nil {
		// The schema refuses such rollout bounds; a hive stored before it did is reported.
		return ctrl.Result{}, err
	}
	done := r.act(ctx, hive, obs, d, now)
	prev := r.statusWrites.base(hive)
	status := hivestatus.Compute(prev, hivestatus.Observed{
		Generation:     hive.Generation,
		Desired:        d.spec.Replicas,
		MinAvailable:   max(0, d.spec.Replicas-d.spec.MaxUnavailable),
		UpdateRevision: d.spec.UpdateRevision,
		Selector:       labels.SelectorFromSet(labels.Set{swarmv1alpha1.LabelHive: hive.Name}).String(),
		Plan:           d.plan,
		QueuedTasks:    obs.load.queued,
		RunningTasks:   obs.load.running,
		CreateError:    done.createErr,
		AccessError:    done.accessErr,
		BudgetError:    done.budgetErr,
		Scaling:        done.scaling,
		Now:            now,
	})
	statusWait, statusErr := r.writeStatus(ctx, hive, prev, status, now)
	if err := errors.Join(done.errs(), statusErr); err != nil {
		// The workqueue retries with its exponential backoff.
		return ctrl.Result{}, err
	}
	wait := shortest(d.plan.RequeueAfter, statusWait)
	for _, w := range []time.Duration{r.createFailures.backoff(hiveKey(hive), now), d.scaleRequeue, obs.load.retryIn, done.cacheWait} {
		wait = shortest(wait, w)
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

// hiveObservation is what one reconcile saw of a hive's surroundings.
type hiveObservation struct {
	pods   []*corev1.Pod
	byName map[string]*corev1.Pod
	load   load
	// cacheBehind counts the hive's writes the cache does not show yet: acting on its view
	// could create or delete twice.
	cacheBehind int
}

// observe reads the hive's agent pods (disowning those relabelled out of it, adopting
// orphans with its label) and the load of its tasks and of the binds in flight.
func (r *HiveReconciler) observe(ctx context.Context, hive *swarmv1alpha1.Hive, now time.Time) (hiveObservation, error) {
	key := hiveKey(hive)
	var obs hiveObservation
	if err := r.disownRelabelled(ctx, hive); err != nil {
		return obs, err
	}
	pods, err := r.agentPods(ctx, hive)
	if err != nil {
		return obs, err
	}
	obs.pods = pods
	obs.byName = make(map[string]*corev1.Pod, len(pods))
	for _, p := range pods {
		obs.byName[p.Name] = p
	}
	obs.cacheBehind = r.expectations.Satisfied(key.String(), func(name string) (*corev1.Pod, bool) {
		p, ok := obs.byName[name]
		return p, ok
	})
	// Binds in flight first, then the cache: a bind the ledger stops holding in between is
	// one the cache then shows.
	var inFlight map[string][]types.UID
	if r.opts.Bindings != nil {
		inFlight = r.opts.Bindings.Held(key.String())
	}
	tasks, err := r.activeTasks(ctx, hive)
	if err != nil {
		return obs, err
	}
	obs.load = countLoad(tasks, inFlight, hive.Namespace, hive.Spec.Agent.Capabilities, now)
	if r.opts.Requests != nil && hive.Spec.Serving != nil {
		obs.load.addRequests(r.opts.Requests.Load(key.String()))
	}
	return obs, nil
}

// hiveDecision is what one reconcile decided for a hive.
type hiveDecision struct {
	// scale is the autoscaler's decision, nil without spec.autoscaling.
	scale        *autoscale.Decision
	scaleRequeue time.Duration
	spec         pool.Spec
	plan         pool.Plan
}

// decide sizes the hive (its spec, or the autoscaler) and plans its agents. It writes
// nothing but the autoscaler's memory.
func (r *HiveReconciler) decide(hive *swarmv1alpha1.Hive, obs hiveObservation, now time.Time) (hiveDecision, error) {
	var d hiveDecision
	replicas := hive.Spec.ReplicasOrDefault()
	if hive.Spec.Autoscaling != nil {
		scale := r.autoscaleDecision(hive, obs.load, now)
		d.scale, d.scaleRequeue, replicas = &scale, scale.RequeueAfter, scale.Replicas
	} else {
		r.scaling.forget(hiveKey(hive))
	}
	surge, unavailable, err := pool.ResolveRollout(hive.Spec.Rollout.MaxSurge, hive.Spec.Rollout.MaxUnavailable, int(replicas))
	if err != nil {
		return d, fmt.Errorf("resolving the rollout bounds: %w", err)
	}
	d.spec = pool.Spec{
		Replicas:       int(replicas),
		UpdateRevision: revision.Of(&hive.Spec),
		MaxSurge:       surge,
		MaxUnavailable: unavailable,
		DrainTimeout:   hive.Spec.Rollout.DrainTimeoutOrDefault(),
		DrainSettle:    r.opts.DrainSettle,
	}
	agents := make([]pool.Agent, 0, len(obs.pods))
	for _, p := range obs.pods {
		agents = append(agents, toAgent(p, obs.load.busy[p.Name]))
	}
	d.plan = pool.Compute(d.spec, agents, now)
	return d, nil
}

// acted is what acting on a decision did.
type acted struct {
	scaling              *hivestatus.Scaling
	createErr            error // the API server's refusal of an agent pod, for the status
	accessErr, budgetErr error
	scaleErr             error
	podErrs              []error // other failed pod writes
	cacheWait            time.Duration
}

// errs returns the failures that make the reconcile be retried.
func (a acted) errs() error {
	return errors.Join(append([]error{a.accessErr, a.budgetErr, a.scaleErr}, a.podErrs...)...)
}

// act writes what the decision asks for: spec.replicas when the autoscaler changed it, the
// agents' access objects, the pods of the plan (unless the cache lags behind the hive's own
// writes), and the PodDisruptionBudget. A failure of one does not stop the others.
func (r *HiveReconciler) act(ctx context.Context, hive *swarmv1alpha1.Hive, obs hiveObservation, d hiveDecision, now time.Time) acted {
	var a acted
	if d.scale != nil {
		a.scaling, a.scaleErr = r.applyScale(ctx, hive, *d.scale, now)
	}
	a.accessErr = r.ensureAgentAccess(ctx, hive, obs.pods)
	switch {
	case a.scaleErr != nil:
		// The plan was made for the replicas the autoscaler could not write: wait for it.
		a.createErr = r.createFailures.refusal(hive, now)
	case obs.cacheBehind > 0:
		// The cache has not caught up with the last writes; its watch events trigger the
		// next reconcile. The wait only guards against a lost event.
		log.FromContext(ctx).V(1).Info("waiting for the cache to show the hive's writes", "hive", klog.KObj(hive), "pending", obs.cacheBehind)
		a.cacheWait = time.Second
		a.createErr = r.createFailures.refusal(hive, now)
	default:
		pw := r.carryOut(ctx, hive, d.spec, d.plan, obs.byName)
		a.createErr, a.podErrs = pw.createErr, pw.failed
	}
	a.budgetErr = r.ensurePDB(ctx, hive)
	return a
}

// activeTasks returns the hive's tasks that have not finished.
func (r *HiveReconciler) activeTasks(ctx context.Context, hive *swarmv1alpha1.Hive) ([]swarmv1alpha1.Task, error) {
	list := &swarmv1alpha1.TaskList{}
	// Read only: skip the cache's copies, which would cost one per task per reconcile.
	if err := r.client.List(ctx, list, client.InNamespace(hive.Namespace), client.MatchingFields{IndexTaskActiveHive: hive.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the hive's tasks: %w", err)
	}
	return list.Items, nil
}

func toAgent(p *corev1.Pod, tasks int) pool.Agent {
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
		Tasks:         tasks,
	}
}

// writeStatus patches the hive's status if it differs from prev (statusWrites.base). A
// change of task counts alone waits until StatusInterval has passed since the last write,
// and the returned duration says when to come back for it.
func (r *HiveReconciler) writeStatus(ctx context.Context, hive *swarmv1alpha1.Hive, prev *swarmv1alpha1.HiveStatus, status swarmv1alpha1.HiveStatus, now time.Time) (time.Duration, error) {
	if hivestatus.Equal(prev, &status) {
		return 0, nil
	}
	if wait := r.statusWrites.wait(hiveKey(hive), now, r.opts.StatusInterval); wait > 0 && hivestatus.OnlyCountersChanged(prev, &status) {
		return wait, nil
	}
	before := prev.DeepCopy()
	// The whole status goes in the patch, not a diff: a diff would never carry the counts
	// that are zero on both sides, and kubectl would print them blank.
	raw, err := jsonMarshal(map[string]any{"status": status})
	if err != nil {
		return 0, err
	}
	rv := hive.ResourceVersion
	hive.Status = status
	if err := r.client.Status().Patch(ctx, hive, client.RawPatch(types.MergePatchType, raw)); err != nil {
		return 0, fmt.Errorf("writing hive status: %w", err)
	}
	r.statusWrites.wrote(hive, rv, &status, now)
	r.statusEvents(hive, before, &status)
	return 0, nil
}

// statusEvents reports rollouts starting and finishing, after the status write that
// records them.
func (r *HiveReconciler) statusEvents(hive *swarmv1alpha1.Hive, prev, cur *swarmv1alpha1.HiveStatus) {
	if prev.UpdateRevision != "" && prev.UpdateRevision != cur.UpdateRevision {
		r.recorder.Eventf(hive, nil, corev1.EventTypeNormal, "RolloutStarted", "Rollout",
			"Rolling out revision %s to %d agents", cur.UpdateRevision, cur.DesiredReplicas)
		if r.opts.Metrics != nil {
			r.opts.Metrics.RolloutStarted(hive.Namespace, hive.Name)
		}
	}
	if prev.CurrentRevision != "" && prev.CurrentRevision != cur.CurrentRevision {
		r.recorder.Eventf(hive, nil, corev1.EventTypeNormal, "RolloutComplete", "Rollout",
			"All agents run revision %s", cur.CurrentRevision)
	}
}

// forget drops what the controller remembers of a hive that is gone.
func (r *HiveReconciler) forget(key types.NamespacedName) {
	r.expectations.Forget(key.String())
	r.statusWrites.forget(key)
	r.createFailures.forget(key)
	r.leftLabel.forget(key)
	r.taken.forget(key)
	r.scaling.forget(key)
}

// SetupWithManager registers the controller and its watches with the manager.
func (r *HiveReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		Named("hive").
		For(&swarmv1alpha1.Hive{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Watches(&corev1.Pod{}, &podHandler{r: r}).
		Watches(&swarmv1alpha1.Task{}, delayedTaskHandler(r.opts.StatusInterval/2), builder.WithPredicates(taskBindingChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.opts.MaxConcurrentReconciles})
	if r.opts.RequestEvents != nil {
		b = b.WatchesRawSource(source.Channel(r.opts.RequestEvents, &handler.EnqueueRequestForObject{}))
	}
	err := b.Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the hive controller: %w", err)
	}
	return nil
}
