package controllers

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/autoscale"
)

// What the hive controller remembers between reconciles, each concern in a small type of
// its own, safe for concurrent use, keyed by hive. None of it is needed for correctness
// after a restart: each only saves writes or paces them.

// perHive is a map by hive under a lock.
type perHive[V any] struct {
	mu sync.Mutex
	m  map[types.NamespacedName]V
}

func (p *perHive[V]) get(key types.NamespacedName) (V, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[key]
	return v, ok
}

func (p *perHive[V]) set(key types.NamespacedName, v V) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[types.NamespacedName]V{}
	}
	p.m[key] = v
}

// update applies f to the hive's value under the lock.
func (p *perHive[V]) update(key types.NamespacedName, f func(V) V) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[types.NamespacedName]V{}
	}
	p.m[key] = f(p.m[key])
}

func (p *perHive[V]) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, key)
}

// statusWrite is the last status the controller wrote for a hive: when, on top of which
// version of the hive, and what.
type statusWrite struct {
	at     time.Time
	before string // the hive's resourceVersion the write was made on
	status swarmv1alpha1.HiveStatus
}

// statusWrites remembers each hive's last status write. A change of task counts alone waits
// until StatusInterval has passed since, so the write rate does not follow the task rate;
// and a reconcile whose cache does not show the write yet compares with it (base).
type statusWrites struct{ perHive[statusWrite] }

// wait is how long a counters-only change of the hive's status must wait.
func (s *statusWrites) wait(key types.NamespacedName, now time.Time, interval time.Duration) time.Duration {
	last, _ := s.get(key)
	return last.at.Add(interval).Sub(now)
}

// base is the status the API server holds for the hive as far as the controller knows: its
// own last write while the cache still shows the version it was made on, the cache's
// status otherwise. Hive status updates trigger no reconcile, so a write skipped because a
// lagging cache showed the status computed again would stand until the next event.
func (s *statusWrites) base(hive *swarmv1alpha1.Hive) *swarmv1alpha1.HiveStatus {
	if last, ok := s.get(hiveKey(hive)); ok && last.before == hive.ResourceVersion {
		return &last.status
	}
	return &hive.Status
}

// wrote records a status written on top of the hive's version before.
func (s *statusWrites) wrote(hive *swarmv1alpha1.Hive, before string, status *swarmv1alpha1.HiveStatus, now time.Time) {
	s.set(hiveKey(hive), statusWrite{at: now, before: before, status: *status.DeepCopy()})
}

// createFailure is a hive's failed pod creations, to back off while its template is
// refused.
type createFailure struct {
	generation int64
	count      int
	at         time.Time
	err        error
}

// createFailures remembers each hive's failed pod creations.
type createFailures struct{ perHive[createFailure] }

// record counts a failed creation attempt. Only attempts that created nothing grow the
// backoff: a refused template fails every time, while a passing error (a server hiccup) in
// an attempt that made progress should not slow the next one. A new generation of the hive
// (a fixed template) starts again.
func (c *createFailures) record(hive *swarmv1alpha1.Hive, err error, progressed bool, now time.Time) {
	c.update(hiveKey(hive), func(f createFailure) createFailure {
		if f.generation != hive.Generation || progressed {
			f = createFailure{generation: hive.Generation}
		}
		f.count++
		f.at, f.err = now, err
		return f
	})
}

// backoff is how long from now to wait before creating pods again: 1s, 2s, 4s, ... up to
// maxCreateBackoff after the last failure.
func (c *createFailures) backoff(key types.NamespacedName, now time.Time) time.Duration {
	f, ok := c.get(key)
	if !ok || f.count == 0 {
		return 0
	}
	return max(0, f.at.Add(min(time.Second<<min(f.count-1, 20), maxCreateBackoff)).Sub(now))
}

// refusal returns the last refusal of the hive's current generation while its backoff
// lasts (creating again now would fail the same way), or nil.
func (c *createFailures) refusal(hive *swarmv1alpha1.Hive, now time.Time) error {
	f, ok := c.get(hiveKey(hive))
	if !ok || f.generation != hive.Generation || c.backoff(hiveKey(hive), now) == 0 {
		return nil
	}
	return f.err
}

// leftLabel holds pods a hive controlled that left its label-filtered watch. The watch
// reports a pod that lost its label as deleted; only a read tells the two apart, and the
// next reconcile makes it and disowns a relabelled pod.
type leftLabel struct{ perHive[[]*corev1.Pod] }

func (l *leftLabel) add(key types.NamespacedName, pods ...*corev1.Pod) {
	l.update(key, func(old []*corev1.Pod) []*corev1.Pod { return append(old, pods...) })
}

// take returns the hive's pods and forgets them.
func (l *leftLabel) take(key types.NamespacedName) []*corev1.Pod {
	pods, _ := l.get(key)
	l.forget(key)
	return pods
}

// takenNames remembers the names of objects a hive would create that objects it does not
// own already hold, per generation of the hive, so it does not try again on every pass.
type takenNames struct{ perHive[map[string]bool] }

func (t *takenNames) taken(key types.NamespacedName, id string) bool {
	m, _ := t.get(key)
	return m[id]
}

func (t *takenNames) mark(key types.NamespacedName, id string) {
	t.update(key, func(m map[string]bool) map[string]bool {
		if m == nil {
			m = map[string]bool{}
		}
		m[id] = true
		return m
	})
}

// scaleState is what the autoscaler remembers of a hive between reconciles. After a restart
// the autoscaler starts from the current replicas and waits full windows, which errs on the
// side of keeping agents.
type scaleState struct {
	history    []autoscale.Sample
	lastActive time.Time
}

// scaleMemory remembers each autoscaled hive's scaleState.
type scaleMemory struct{ perHive[scaleState] }

func hiveKey(hive *swarmv1alpha1.Hive) types.NamespacedName {
	return types.NamespacedName{Namespace: hive.Namespace, Name: hive.Name}
}
