//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
)

// faultLog records the faults the suite injected, and the agent pods it took away itself.
type faultLog struct {
	mu     sync.Mutex
	counts map[string]int
	// crashed pods were deleted at once (their agent was killed with them); graceful ones
	// were deleted with their grace period or evicted (their agent was asked to stop).
	crashed, graceful map[string]bool
}

func (f *faultLog) count(what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.counts == nil {
		f.counts = map[string]int{}
	}
	f.counts[what]++
}

func (f *faultLog) pod(name string, crash bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed == nil {
		f.crashed, f.graceful = map[string]bool{}, map[string]bool{}
	}
	if crash {
		f.crashed[name] = true
	} else {
		f.graceful[name] = true
	}
}

// podSets returns the pods the suite crashed, stopped gracefully, and either.
func (f *faultLog) podSets() (crashed, graceful, byTest map[string]bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	crashed, graceful, byTest = map[string]bool{}, map[string]bool{}, map[string]bool{}
	for k := range f.crashed {
		crashed[k], byTest[k] = true, true
	}
	for k := range f.graceful {
		graceful[k], byTest[k] = true, true
	}
	return crashed, graceful, byTest
}

func (f *faultLog) summary() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]string, 0, len(f.counts))
	for k := range f.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-40s %d\n", k, f.counts[k])
	}
	return b.String()
}

// killLeaders SIGKILLs the leading operator every few seconds until ctx ends, and starts a
// new process in its place, so that two run at every moment but the one just after a kill.
func (w *world) killLeaders(ctx context.Context, rng *rand.Rand, every time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every + time.Duration(rng.Int64N(int64(every/2)))):
		}
		leader := w.leader(ctx)
		if leader == nil {
			continue
		}
		_ = leader.Kill()
		w.forgetOperator(leader)
		w.faults.count("operator leader SIGKILLed")
		// As a kubelet restarts a crashed container: an operator started while the API
		// server is away exits, and is started again.
		for attempt := 0; ctx.Err() == nil; attempt++ {
			if _, err := w.startOperator(ctx); err == nil {
				break
			} else if attempt%5 == 4 {
				w.logf("restarting an operator, attempt %d: %v", attempt+1, err)
			}
			sleep(ctx, time.Second)
		}
	}
}

// busyAgents returns the hive's live agent pods that hold a task, from the API server,
// with how long the longest task each holds takes.
func (w *world) busyAgents(ctx context.Context) ([]corev1.Pod, map[string]int) {
	tasks := &swarmv1alpha1.TaskList{}
	if err := w.admin.List(ctx, tasks, client.InNamespace(ns)); err != nil {
		return nil, nil
	}
	longest := map[string]int{}
	for _, t := range tasks.Items {
		if t.Status.Phase.Bound() {
			var wk work
			_ = json.Unmarshal([]byte(t.Spec.Input), &wk)
			longest[t.Status.Agent] = max(longest[t.Status.Agent], wk.Millis+1)
		}
	}
	pods := &corev1.PodList{}
	if err := w.admin.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{swarmv1alpha1.LabelHive: hiveName}); err != nil {
		return nil, nil
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if longest[p.Name] > 0 && p.DeletionTimestamp == nil && agentpod.IsReady(&p) {
			out = append(out, p)
		}
	}
	return out, longest
}

// deletePods deletes a busy agent pod every few seconds until ctx ends: alternately at once
// (its agent dies with it, as on a node failure) and gracefully (its agent gets SIGTERM and
// finishes or gives back its tasks within its grace). A graceful deletion picks the agent
// with the longest task, so that some are given back.
func (w *world) deletePods(ctx context.Context, rng *rand.Rand, every time.Duration) {
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every + time.Duration(rng.Int64N(int64(every/2)))):
		}
		busy, longest := w.busyAgents(ctx)
		if len(busy) == 0 {
			continue
		}
		crash := i%2 == 0
		pod := busy[rng.IntN(len(busy))]
		if !crash {
			for _, p := range busy {
				if longest[p.Name] > longest[pod.Name] {
					pod = p
				}
			}
		}
		w.faults.pod(pod.Name, crash)
		var opts []client.DeleteOption
		if crash {
			opts = append(opts, client.GracePeriodSeconds(0))
		}
		if err := w.admin.Delete(ctx, &pod, opts...); err != nil && !apierrors.IsNotFound(err) {
			w.logf("deleting pod %s: %v", pod.Name, err)
			continue
		}
		if crash {
			w.faults.count("agent pods deleted at once (agent killed)")
		} else {
			w.faults.count("agent pods deleted gracefully (SIGTERM)")
		}
	}
}

// drainNode drains the node holding the most agents, as `kubectl drain` does: it cordons
// the node and evicts its agent pods through the eviction API, which the hive's
// PodDisruptionBudget may refuse (429) until the evictions before have been replaced.
func (w *world) drainNode(ctx context.Context) error {
	pods := &corev1.PodList{}
	if err := w.admin.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{swarmv1alpha1.LabelHive: hiveName}); err != nil {
		return fmt.Errorf("listing agents: %w", err)
	}
	perNode := map[string][]corev1.Pod{}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
			perNode[p.Spec.NodeName] = append(perNode[p.Spec.NodeName], p)
		}
	}
	var node string
	for n, ps := range perNode {
		if node == "" || len(ps) > len(perNode[node]) {
			node = n
		}
	}
	if node == "" {
		return fmt.Errorf("no agent runs on a node")
	}
	setUnschedulable := func(v bool) error {
		n := &corev1.Node{}
		if err := w.admin.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
			return err
		}
		base := n.DeepCopy()
		n.Spec.Unschedulable = v
		return w.admin.Patch(ctx, n, client.MergeFrom(base))
	}
	if err := setUnschedulable(true); err != nil {
		return fmt.Errorf("cordoning node %s: %w", node, err)
	}
	defer func() { _ = setUnschedulable(false) }()
	w.faults.count("nodes drained")
	for _, p := range perNode[node] {
		w.faults.pod(p.Name, false)
		err := wait(ctx, 90*time.Second, func() error {
			ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
			err := w.admin.SubResource("eviction").Create(ctx, &p, ev)
			switch {
			case err == nil, apierrors.IsNotFound(err):
				return nil
			case apierrors.IsTooManyRequests(err):
				w.faults.count("evictions refused by the disruption budget (429)")
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("evicting %s: %w", p.Name, err)
		}
		w.faults.count("agent pods evicted")
	}
	return nil
}

// rollOut changes the hive's template to a new revision whose pods become Ready only after
// a few seconds, as on a node pulling a new image, and more slots.
func (w *world) rollOut(ctx context.Context) error {
	h := &swarmv1alpha1.Hive{}
	if err := w.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: hiveName}, h); err != nil {
		return fmt.Errorf("reading the hive: %w", err)
	}
	base := h.DeepCopy()
	if h.Spec.Template.Labels == nil {
		h.Spec.Template.Labels = map[string]string{}
	}
	h.Spec.Template.Labels[slowLabel] = "true"
	h.Spec.Template.Spec.Containers[0].Image = "example.com/agent:v2"
	h.Spec.Agent.Concurrency++
	if err := w.admin.Patch(ctx, h, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("changing the hive's template: %w", err)
	}
	w.faults.count("template rollouts")
	return nil
}

// rolledOut reports whether every agent runs the hive's current revision.
func (w *world) rolledOut(ctx context.Context) error {
	h := &swarmv1alpha1.Hive{}
	if err := w.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: hiveName}, h); err != nil {
		return err
	}
	s := h.Status
	if s.UpdateRevision == "" || s.CurrentRevision != s.UpdateRevision || s.UpdatedReplicas != *h.Spec.Replicas || s.ReadyReplicas != *h.Spec.Replicas {
		return fmt.Errorf("rollout: %d of %d updated, %d ready, current %s, update %s", s.UpdatedReplicas, *h.Spec.Replicas, s.ReadyReplicas, s.CurrentRevision, s.UpdateRevision)
	}
	return nil
}
