package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// ensurePDB keeps the hive's PodDisruptionBudget in line with spec.disruption: created, and
// updated only when its spec differs. A budget of the same name that the hive does not own
// is left alone.
func (r *HiveReconciler) ensurePDB(ctx context.Context, hive *swarmv1alpha1.Hive) error {
	current := &policyv1.PodDisruptionBudget{}
	err := r.client.Get(ctx, client.ObjectKeyFromObject(hive), current)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading the PodDisruptionBudget: %w", err)
	}
	exists := err == nil
	if exists && !metav1.IsControlledBy(current, hive) {
		return nil
	}
	maxUnavailable := hive.Spec.DisruptionMaxUnavailableOrDefault()
	want := policyv1.PodDisruptionBudgetSpec{
		MaxUnavailable: &maxUnavailable,
		Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{swarmv1alpha1.LabelHive: hive.Name}},
	}
	if !exists {
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{
				Name: hive.Name, Namespace: hive.Namespace,
				Labels:          map[string]string{swarmv1alpha1.LabelHive: hive.Name},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(hive, swarmv1alpha1.GroupVersion.WithKind("Hive"))},
			},
			Spec: want,
		}
		if err := r.createOwned(ctx, hive, pdb); err != nil {
			return fmt.Errorf("creating the PodDisruptionBudget: %w", err)
		}
		return nil
	}
	if equality.Semantic.DeepEqual(current.Spec.MaxUnavailable, want.MaxUnavailable) &&
		equality.Semantic.DeepEqual(current.Spec.Selector, want.Selector) && current.Spec.MinAvailable == nil {
		return nil
	}
	base := current.DeepCopy()
	current.Spec.MaxUnavailable, current.Spec.Selector, current.Spec.MinAvailable = want.MaxUnavailable, want.Selector, nil
	if err := r.client.Patch(ctx, current, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("updating the PodDisruptionBudget: %w", err)
	}
	return nil
}

// createOwned creates an object the hive owns. If an object of that name exists (one the
// hive does not own: its own would be in the cache), it is left alone and not tried again
// until the hive changes.
func (r *HiveReconciler) createOwned(ctx context.Context, hive *swarmv1alpha1.Hive, obj client.Object) error {
	key := hiveKey(hive)
	id := fmt.Sprintf("%T/%s/%d", obj, obj.GetName(), hive.Generation)
	if r.taken.taken(key, id) {
		return nil
	}
	err := r.client.Create(ctx, obj)
	if apierrors.IsAlreadyExists(err) {
		r.taken.mark(key, id)
		log.FromContext(ctx).Info("an object the hive would own already exists; leaving it alone", "hive", klog.KObj(hive), "kind", fmt.Sprintf("%T", obj), "name", obj.GetName())
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating %s: %w", obj.GetName(), err)
	}
	return nil
}

// delayedTaskHandler enqueues a task's hive after a delay. The hive controller needs task
// events only for its counts and to notice draining agents becoming idle; folding a burst
// of them into one reconcile per delay keeps its cost independent of the task rate.
func delayedTaskHandler(delay time.Duration) handler.TypedEventHandler[client.Object, reconcile.Request] {
	enqueue := func(obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, req := range taskToHive(context.Background(), obj) {
			q.AddAfter(req, delay)
		}
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
	}
}

// taskToHive maps a task event to its hive.
func taskToHive(_ context.Context, obj client.Object) []ctrl.Request {
	t, ok := obj.(*swarmv1alpha1.Task)
	if !ok || t.Spec.Hive == "" {
		return nil
	}
	return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: t.Namespace, Name: t.Spec.Hive}}}
}

// taskBindingChanged passes the task events that change a hive's queue or an agent's load:
// creation, deletion, and changes of phase, agent or cancellation.
func taskBindingChanged() predicate.Predicate {
	return updatesWhere(func(o, n *swarmv1alpha1.Task) bool {
		return o.Status.Phase != n.Status.Phase || o.Status.Agent != n.Status.Agent || o.Spec.Cancel != n.Spec.Cancel
	})
}

func jsonMarshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding a patch: %w", err)
	}
	return b, nil
}
