package restmapping

import (
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// counting is a mapper that knows one kind and counts what it is asked.
type counting struct {
	meta.RESTMapper
	calls int
}

var tasks = schema.GroupVersionKind{Group: "swarm.aihub.dev", Version: "v1alpha1", Kind: "Task"}

func (c *counting) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	c.calls++
	if gk != tasks.GroupKind() {
		return nil, &meta.NoKindMatchError{GroupKind: gk, SearchedVersions: versions}
	}
	return &meta.RESTMapping{GroupVersionKind: tasks, Scope: meta.RESTScopeNamespace}, nil
}

func TestAMappingIsAskedOnceAndAMissIsAskedAgain(t *testing.T) {
	delegate := &counting{RESTMapper: meta.NewDefaultRESTMapper(nil)}
	m := Cached(delegate)
	for range 3 {
		got, err := m.RESTMapping(tasks.GroupKind(), tasks.Version)
		if err != nil || got.Scope.Name() != meta.RESTScopeNameNamespace {
			t.Fatalf("RESTMapping = %+v, %v", got, err)
		}
	}
	if delegate.calls != 1 {
		t.Errorf("the delegate was asked %d times, want once", delegate.calls)
	}
	// Other versions are another question.
	if _, err := m.RESTMapping(tasks.GroupKind()); err != nil || delegate.calls != 2 {
		t.Errorf("no version: %v after %d calls", err, delegate.calls)
	}
	// A kind the delegate does not know is asked every time: it may appear.
	missing := schema.GroupKind{Group: "example.com", Kind: "Widget"}
	for range 2 {
		var noMatch *meta.NoKindMatchError
		if _, err := m.RESTMapping(missing, "v1"); !meta.IsNoMatchError(err) || !errors.As(err, &noMatch) {
			t.Fatalf("a missing kind: %v", err)
		}
	}
	if delegate.calls != 4 {
		t.Errorf("the delegate was asked %d times, want 4", delegate.calls)
	}
	// Everything else goes to the delegate.
	if _, err := m.KindFor(schema.GroupVersionResource{Resource: "widgets"}); err == nil {
		t.Error("KindFor answered for a mapper that knows nothing")
	}
}
