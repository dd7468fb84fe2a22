// Package expectations remembers the writes a controller made that its cache has not shown
// yet, as the ReplicaSet controller does, so that a reconcile working from a stale cache
// does not create, delete or mark the same pods twice.
//
// The controller records each write after it succeeds, and before planning asks whether
// everything it expects is now observed. Until then it waits for the cache (the watch event
// triggers the next reconcile). An expectation the cache never meets, because a watch event
// was lost or someone else undid the write, expires after a TTL so the controller cannot
// wedge.
//
// docs/architecture.md shows where it fits among the operator's parts.
package expectations

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// Kind is what was written.
type Kind int

const (
	// Create expects the pod to appear.
	Create Kind = iota
	// Delete expects the pod to disappear or be terminating.
	Delete
	// Drain expects the pod to carry the draining mark.
	Drain
	// Undrain expects the pod to have lost the draining mark.
	Undrain
)

type expectation struct {
	kind    Kind
	uid     types.UID
	expires time.Time
}

// Store holds the pending expectations of every owner. It is safe for concurrent use.
type Store struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	pending map[string]map[string]expectation // owner key → pod name → expectation
}

// New returns a store whose expectations expire after ttl. now is the clock (time.Now in
// production).
func New(ttl time.Duration, now func() time.Time) *Store {
	return &Store{ttl: ttl, now: now, pending: map[string]map[string]expectation{}}
}

// Expect records a write to a pod of an owner. For Delete, uid identifies the pod deleted,
// so that a new pod reusing the name does not count as still there.
func (s *Store) Expect(owner, pod string, kind Kind, uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.pending[owner]
	if m == nil {
		m = map[string]expectation{}
		s.pending[owner] = m
	}
	m[pod] = expectation{kind: kind, uid: uid, expires: s.now().Add(s.ttl)}
}

// Observer looks a pod up by name in the controller's cache.
type Observer func(name string) (*corev1.Pod, bool)

// Satisfied drops the expectations of an owner that the cache now shows, or that expired,
// and reports how many remain.
func (s *Store) Satisfied(owner string, observe Observer) (pending int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.pending[owner]
	now := s.now()
	for name, e := range m {
		pod, found := observe(name)
		if met(e, pod, found) || !now.Before(e.expires) {
			delete(m, name)
		}
	}
	if len(m) == 0 {
		delete(s.pending, owner)
	}
	return len(m)
}

// Forget drops every expectation of an owner, for example when it is deleted.
func (s *Store) Forget(owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, owner)
}

func met(e expectation, pod *corev1.Pod, found bool) bool {
	switch e.kind {
	case Create:
		return found
	case Delete:
		return !found || pod.DeletionTimestamp != nil || (e.uid != "" && pod.UID != e.uid)
	case Drain, Undrain:
		if !found || pod.DeletionTimestamp != nil {
			return true
		}
		_, draining := pod.Annotations[swarmv1alpha1.AnnotationDrainingSince]
		return draining == (e.kind == Drain)
	}
	return true
}
