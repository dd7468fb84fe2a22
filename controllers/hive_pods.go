package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/expectations"
	"github.com/aihub-dev/hive-operator/internal/pool"
)

// maxCreateBackoff caps the wait between attempts to create pods from a refused template.
const maxCreateBackoff = 5 * time.Minute

// podWrites is what carrying out a plan did not manage.
type podWrites struct {
	// createErr is the API server's refusal of a pod creation, which the status reports
	// (and which is retried with its own backoff).
	createErr error
	// failed are the other failed writes, for which the reconcile is retried; the retry
	// recomputes the plan from what the cache then shows.
	failed []error
}

// carryOut performs a plan: deletions, drain marks, and creations in slow-start batches.
// Every write is recorded as an expectation once it succeeds.
func (r *HiveReconciler) carryOut(ctx context.Context, hive *swarmv1alpha1.Hive, spec pool.Spec, plan pool.Plan, pods map[string]*corev1.Pod) podWrites {
	key := hiveKey(hive)
	logger := log.FromContext(ctx)
	var w podWrites

	for _, d := range plan.Delete {
		pod := pods[d.Name]
		err := r.client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID})
		if err != nil && !apierrors.IsNotFound(err) {
			w.failed = append(w.failed, fmt.Errorf("deleting agent %s: %w", pod.Name, err))
			continue
		}
		r.expectations.Expect(key.String(), pod.Name, expectations.Delete, pod.UID)
		logger.V(2).Info("deleted an agent", "hive", klog.KObj(hive), "agent", klog.KObj(pod), "reason", d.Reason)
		r.recorder.Eventf(hive, pod, corev1.EventTypeNormal, "AgentDeleted", "Delete", "Deleted agent %s: %s", pod.Name, deleteNote(d.Reason))
	}

	if len(plan.Drain) > 0 {
		stamp := r.opts.Now().UTC().Format(time.RFC3339Nano)
		for _, name := range plan.Drain {
			if err := r.setDraining(ctx, pods[name], &stamp); err != nil {
				w.failed = append(w.failed, fmt.Errorf("marking agent draining: %w", err))
				continue
			}
			r.expectations.Expect(key.String(), name, expectations.Drain, "")
		}
		logger.V(2).Info("draining agents", "hive", klog.KObj(hive), "agents", plan.Drain)
		r.recorder.Eventf(hive, nil, corev1.EventTypeNormal, "Draining", "Drain",
			"Draining %s (%s): no new tasks, deleted once idle", countAgents(len(plan.Drain)), strings.Join(plan.Drain, ", "))
	}
	for _, name := range plan.Undrain {
		if err := r.setDraining(ctx, pods[name], nil); err != nil {
			w.failed = append(w.failed, fmt.Errorf("taking agent back from draining: %w", err))
			continue
		}
		r.expectations.Expect(key.String(), name, expectations.Undrain, "")
		logger.V(2).Info("took an agent back from draining", "hive", klog.KObj(hive), "agent", name)
		r.recorder.Eventf(hive, pods[name], corev1.EventTypeNormal, "Undrained", "Drain", "Agent %s takes tasks again", name)
	}

	if plan.Create == 0 {
		r.createFailures.forget(key)
		return w
	}
	if w.createErr = r.createFailures.refusal(hive, r.opts.Now()); w.createErr != nil {
		return w
	}
	created, err := r.createAgents(ctx, hive, spec.UpdateRevision, plan.Create)
	for _, name := range created {
		r.expectations.Expect(key.String(), name, expectations.Create, "")
	}
	if len(created) > 0 {
		logger.V(2).Info("created agents", "hive", klog.KObj(hive), "count", len(created), "revision", spec.UpdateRevision)
		r.recorder.Eventf(hive, nil, corev1.EventTypeNormal, "AgentsCreated", "Create", "Created %s of revision %s", countAgents(len(created)), spec.UpdateRevision)
	}
	if err != nil {
		r.createFailures.record(hive, err, len(created) > 0, r.opts.Now())
		r.recorder.Eventf(hive, nil, corev1.EventTypeWarning, "PodCreateFailed", "Create", "Creating an agent pod failed: %v", err)
		w.createErr = err
		return w
	}
	r.createFailures.forget(key)
	return w
}

// createAgents creates n agent pods in batches of 1, 2, 4, ..., stopping at the first batch
// with a failure, so that a template the API server refuses costs one request, not n.
func (r *HiveReconciler) createAgents(ctx context.Context, hive *swarmv1alpha1.Hive, rev string, n int) ([]string, error) {
	var created []string
	for batch := 1; n > 0; batch *= 2 {
		size := min(batch, n)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		for range size {
			wg.Go(func() {
				pod := agentpod.Build(hive, rev)
				err := r.client.Create(ctx, pod)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				created = append(created, pod.Name)
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			return created, errors.Join(errs...)
		}
		n -= size
	}
	return created, nil
}

// setDraining marks an agent draining since *stamp, or clears the mark when stamp is nil.
func (r *HiveReconciler) setDraining(ctx context.Context, pod *corev1.Pod, stamp *string) error {
	var value any
	if stamp != nil {
		value = *stamp
	}
	patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{swarmv1alpha1.AnnotationDrainingSince: value}}}
	raw, err := jsonMarshal(patch)
	if err != nil {
		return err
	}
	if err := r.client.Patch(ctx, pod, client.RawPatch(types.MergePatchType, raw)); err != nil {
		return fmt.Errorf("patching agent %s: %w", pod.Name, err)
	}
	return nil
}

// countAgents spells a count of agents.
func countAgents(n int) string {
	if n == 1 {
		return "1 agent"
	}
	return fmt.Sprintf("%d agents", n)
}

func deleteNote(reason pool.DeleteReason) string {
	switch reason {
	case pool.DeleteFinished:
		return "its pod stopped, a replacement is created"
	case pool.DeleteDrained:
		return "drained with no task left"
	case pool.DeleteDrainTimeout:
		return "still busy when the drain timeout expired; its tasks are requeued"
	case pool.DeleteNotReady:
		return "surplus and not ready"
	}
	return string(reason)
}

// agentPods returns the pods the hive controls, adopting orphans that carry its label.
func (r *HiveReconciler) agentPods(ctx context.Context, hive *swarmv1alpha1.Hive) ([]*corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := r.client.List(ctx, list, client.InNamespace(hive.Namespace), client.MatchingFields{IndexPodHive: hive.Name}); err != nil {
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

// adopt takes orphan pods carrying the hive's label under its control, as a ReplicaSet
// does, after checking against the API server that the hive is really there (a stale cache
// could hold a hive deleted and recreated under the same name).
func (r *HiveReconciler) adopt(ctx context.Context, hive *swarmv1alpha1.Hive, orphans []*corev1.Pod) ([]*corev1.Pod, error) {
	fresh := &swarmv1alpha1.Hive{}
	if err := r.apiReader.Get(ctx, client.ObjectKeyFromObject(hive), fresh); err != nil {
		return nil, fmt.Errorf("checking the hive before adopting pods: %w", err)
	}
	if fresh.UID != hive.UID || fresh.DeletionTimestamp != nil {
		return nil, nil
	}
	var adopted []*corev1.Pod
	for _, pod := range orphans {
		base := pod.DeepCopy()
		pod.OwnerReferences = append(pod.OwnerReferences, *metav1.NewControllerRef(hive, swarmv1alpha1.GroupVersion.WithKind("Hive")))
		if err := r.client.Patch(ctx, pod, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				continue
			}
			return nil, fmt.Errorf("adopting pod %s: %w", pod.Name, err)
		}
		r.recorder.Eventf(hive, pod, corev1.EventTypeNormal, "AgentAdopted", "Adopt",
			"Adopted pod %s: it carries the hive's label and had no controller", pod.Name)
		adopted = append(adopted, pod)
	}
	return adopted, nil
}

// disownRelabelled removes the hive's controller reference from its pods that lost its
// label, as a ReplicaSet does, so that a pod taken out of a hive by relabelling lives on as
// an orphan (and a replacement is created) instead of being garbage-collected with the
// hive.
func (r *HiveReconciler) disownRelabelled(ctx context.Context, hive *swarmv1alpha1.Hive) error {
	key := hiveKey(hive)
	pods := r.leftLabel.take(key)
	for i, pod := range pods {
		fresh := &corev1.Pod{}
		if err := r.apiReader.Get(ctx, client.ObjectKeyFromObject(pod), fresh); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			r.leftLabel.add(key, pods[i:]...)
			return fmt.Errorf("reading relabelled pod %s: %w", pod.Name, err)
		}
		if _, labelled := fresh.Labels[swarmv1alpha1.LabelHive]; labelled {
			continue
		}
		base := fresh.DeepCopy()
		fresh.OwnerReferences = slices.DeleteFunc(fresh.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == hive.UID })
		if len(fresh.OwnerReferences) == len(base.OwnerReferences) {
			continue
		}
		if err := r.client.Patch(ctx, fresh, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			r.leftLabel.add(key, pods[i:]...)
			return fmt.Errorf("disowning pod %s: %w", pod.Name, err)
		}
		log.FromContext(ctx).V(2).Info("disowned a relabelled pod", "hive", klog.KObj(hive), "pod", klog.KObj(fresh))
		r.recorder.Eventf(hive, fresh, corev1.EventTypeNormal, "AgentOrphaned", "Disown",
			"Disowned pod %s: its hive label was removed; a replacement is created", fresh.Name)
	}
	return nil
}

// podHandler maps pod events to the hive that controls the pod, or whose label an orphan
// carries. A controlled pod that drops out of the label-filtered cache is queued for a check
// that it was deleted rather than relabelled (then it is disowned).
type podHandler struct{ r *HiveReconciler }

func (h *podHandler) hiveOf(pod *corev1.Pod) (types.NamespacedName, bool) {
	if name, ok := agentpod.ControllerHive(pod); ok {
		return types.NamespacedName{Namespace: pod.Namespace, Name: name}, true
	}
	if metav1.GetControllerOf(pod) == nil {
		if name, ok := pod.Labels[swarmv1alpha1.LabelHive]; ok {
			return types.NamespacedName{Namespace: pod.Namespace, Name: name}, true
		}
	}
	return types.NamespacedName{}, false
}

func (h *podHandler) enqueue(obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if pod, ok := obj.(*corev1.Pod); ok {
		if key, ok := h.hiveOf(pod); ok {
			q.Add(reconcile.Request{NamespacedName: key})
		}
	}
}

func (h *podHandler) Create(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(e.Object, q)
}

func (h *podHandler) Update(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(e.ObjectNew, q)
}

func (h *podHandler) Delete(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	pod, ok := e.Object.(*corev1.Pod)
	if !ok {
		return
	}
	key, ok := h.hiveOf(pod)
	if !ok {
		return
	}
	// A label-filtered watch reports a pod that lost its label as deleted, with its old
	// labels: only a read of the pod tells the two apart. Deletions are rare enough for
	// that read, which the next reconcile makes.
	if _, controlled := agentpod.ControllerHive(pod); controlled {
		h.r.leftLabel.add(key, pod)
	}
	q.Add(reconcile.Request{NamespacedName: key})
}

func (h *podHandler) Generic(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(e.Object, q)
}
