package expectations

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func pod(name string, uid types.UID, draining, terminating bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, UID: uid, Annotations: map[string]string{}}}
	if draining {
		p.Annotations[swarmv1alpha1.AnnotationDrainingSince] = "2026-01-01T00:00:00Z"
	}
	if terminating {
		p.DeletionTimestamp = &metav1.Time{}
	}
	return p
}

func TestSatisfied(t *testing.T) {
	cases := map[string]struct {
		kind        Kind
		uid         types.UID
		cache       map[string]*corev1.Pod
		elapsed     time.Duration
		wantPending int
	}{
		"create not yet seen":              {kind: Create, wantPending: 1},
		"create seen":                      {kind: Create, cache: map[string]*corev1.Pod{"p": pod("p", "1", false, false)}},
		"create never seen expires":        {kind: Create, elapsed: time.Minute},
		"delete not yet seen":              {kind: Delete, uid: "1", cache: map[string]*corev1.Pod{"p": pod("p", "1", false, false)}, wantPending: 1},
		"delete seen as gone":              {kind: Delete, uid: "1"},
		"delete seen as terminating":       {kind: Delete, uid: "1", cache: map[string]*corev1.Pod{"p": pod("p", "1", false, true)}},
		"delete seen as a new pod":         {kind: Delete, uid: "1", cache: map[string]*corev1.Pod{"p": pod("p", "2", false, false)}},
		"drain not yet seen":               {kind: Drain, cache: map[string]*corev1.Pod{"p": pod("p", "1", false, false)}, wantPending: 1},
		"drain seen":                       {kind: Drain, cache: map[string]*corev1.Pod{"p": pod("p", "1", true, false)}},
		"drained pod gone":                 {kind: Drain},
		"undrain not yet seen":             {kind: Undrain, cache: map[string]*corev1.Pod{"p": pod("p", "1", true, false)}, wantPending: 1},
		"undrain seen":                     {kind: Undrain, cache: map[string]*corev1.Pod{"p": pod("p", "1", false, false)}},
		"undrain of a terminating pod met": {kind: Undrain, cache: map[string]*corev1.Pod{"p": pod("p", "1", true, true)}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(0, 0)}
			s := New(30*time.Second, clock.now)
			s.Expect("ns/hive", "p", tc.kind, tc.uid)
			clock.t = clock.t.Add(tc.elapsed)
			observe := func(name string) (*corev1.Pod, bool) { p, ok := tc.cache[name]; return p, ok }
			if got := s.Satisfied("ns/hive", observe); got != tc.wantPending {
				t.Errorf("pending = %d, want %d", got, tc.wantPending)
			}
			if got := s.Satisfied("other/hive", observe); got != 0 {
				t.Errorf("another owner has %d pending", got)
			}
		})
	}
}

func TestForget(t *testing.T) {
	s := New(time.Minute, time.Now)
	s.Expect("a", "p1", Create, "")
	s.Expect("a", "p2", Create, "")
	s.Forget("a")
	if got := s.Satisfied("a", func(string) (*corev1.Pod, bool) { return nil, false }); got != 0 {
		t.Errorf("pending after Forget = %d", got)
	}
}
