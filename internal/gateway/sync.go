package gateway

import (
	"context"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
)

// AgentsOf returns the agents of a hive's pods that may be sent requests: those the
// dispatcher would bind tasks to (Ready, not draining, not being deleted) that serve
// requests and have an IP.
func AgentsOf(pods []corev1.Pod) []Agent {
	out := make([]Agent, 0, len(pods))
	for i := range pods {
		p := &pods[i]
		port, slots, ok := agentpod.Serving(p)
		if !ok || p.Status.PodIP == "" || !agentpod.CanTakeTasks(p) {
			continue
		}
		out = append(out, Agent{Name: p.Name, Addr: net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port)), Slots: slots})
	}
	return out
}

// SettingsOf returns the gateway's settings of a hive's spec.serving.
func SettingsOf(s *swarmv1alpha1.ServingSpec) Settings {
	return Settings{QueueLength: int(s.QueueLengthOrDefault()), QueueTimeout: s.QueueTimeoutOrDefault()}
}

// CacheOptions limit the gateway's cache to what routing reads: hives, and the pods that
// carry the hive label, without managed fields.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject:         map[client.Object]cache.ByObject{&corev1.Pod{}: {Label: swarmv1alpha1.HiveObjects()}},
	}
}

// Syncer keeps the pool's view of each hive in step with the cache: a reconciler that
// reads a hive and its pods and writes nothing to the API server, so that every gateway
// replica runs it, with no leader.
type Syncer struct {
	reader client.Reader
	pool   *Pool
}

// NewSyncer returns a syncer reading from reader (the manager's cache) into pool.
func NewSyncer(reader client.Reader, pool *Pool) *Syncer { return &Syncer{reader: reader, pool: pool} }

// Reconcile sets the routable agents and the settings of one hive, or forgets a hive that
// is gone or does not serve.
func (s *Syncer) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := req.Namespace + "/" + req.Name
	hive := &swarmv1alpha1.Hive{}
	if err := s.reader.Get(ctx, req.NamespacedName, hive); err != nil {
		if apierrors.IsNotFound(err) {
			s.pool.Remove(key)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("reading hive %s: %w", key, err)
	}
	if hive.Spec.Serving == nil {
		s.pool.Remove(key)
		return reconcile.Result{}, nil
	}
	pods := &corev1.PodList{}
	if err := s.reader.List(ctx, pods, client.InNamespace(req.Namespace), client.MatchingLabels{swarmv1alpha1.LabelHive: req.Name}); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing the agents of hive %s: %w", key, err)
	}
	agents := AgentsOf(pods.Items)
	s.pool.Set(key, SettingsOf(hive.Spec.Serving), agents)
	ctrl.LoggerFrom(ctx).V(2).Info("routing requests", "hive", key, "agents", len(agents))
	return reconcile.Result{}, nil
}

// SetupWithManager runs the syncer on every replica (no leader election): hives, and pods
// mapped to their hive by its label.
func (s *Syncer) SetupWithManager(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).
		Named("gateway").
		For(&swarmv1alpha1.Hive{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if name, ok := o.GetLabels()[swarmv1alpha1.LabelHive]; ok {
				return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
			}
			return nil
		})).
		// Names are checked to keep controller metrics apart; a process runs one gateway, but
		// tests run several.
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: 2, SkipNameValidation: ptr.To(true)}).
		Complete(s)
	if err != nil {
		return fmt.Errorf("setting up the gateway's watch: %w", err)
	}
	return nil
}
