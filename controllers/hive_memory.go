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

// statusWrites remembers when each hive's status was last written: a change of task counts
// alone waits until StatusInterval has passed since, so the write rate does not follow the
// task rate.
type statusWrites struct{ perHive[time.Time] }

// wait is how long a counters-only change of the hive's status must wait.
func (s *statusWrites) wait(key types.NamespacedName, now time.Time, interval time.Duration) time.Duration {
	last, _ := s.get(key)
	return last.Add(interval).Sub(now)
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
