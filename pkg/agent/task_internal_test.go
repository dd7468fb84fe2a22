package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func TestDependencyResultsAreThoseOfSucceededDependencies(t *testing.T) {
	dep := func(name string, phase swarmv1alpha1.TaskPhase, result string) client.Object {
		return &swarmv1alpha1.Task{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec:       swarmv1alpha1.TaskSpec{Hive: "h"},
			Status:     swarmv1alpha1.TaskStatus{Phase: phase, Result: result},
		}
	}
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		dep("fetch", swarmv1alpha1.TaskSucceeded, "page"),
		dep("parse", swarmv1alpha1.TaskSucceeded, "tree"),
		dep("rerun", swarmv1alpha1.TaskRunning, ""),
	).Build()
	cases := map[string]struct {
		dependsOn []string
		want      map[string]string
		wantErr   string
	}{
		"no dependencies":            {want: map[string]string{}},
		"every dependency succeeded": {dependsOn: []string{"fetch", "parse"}, want: map[string]string{"fetch": "page", "parse": "tree"}},
		// A dependency run again after this task was bound (by hand, say) has no result
		// to give.
		"a dependency running again": {dependsOn: []string{"fetch", "rerun"}, wantErr: "dependency rerun is Running, not Succeeded"},
		"a dependency deleted":       {dependsOn: []string{"gone"}, wantErr: "reading dependency gone"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			task := newTask(&swarmv1alpha1.Task{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "summarise"},
				Spec:       swarmv1alpha1.TaskSpec{Hive: "h", DependsOn: tc.dependsOn},
			}, reader)
			got, err := task.DependencyResults(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("DependencyResults() = %v, %v; want an error saying %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("results (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPermanentKeepsTheHandlersError(t *testing.T) {
	cause := errors.New("input is not JSON")
	err := Permanent(cause)
	if err.Error() != cause.Error() {
		t.Errorf("Permanent(err).Error() = %q, want %q", err, cause)
	}
	if !errors.Is(err, cause) {
		t.Error("Permanent(err) does not wrap err")
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil: a handler returning Permanent(err) with a nil err would fail its task")
	}
}

func TestIsPermanentFindsTheMarkThroughWrapping(t *testing.T) {
	cases := map[string]struct {
		err  error
		want bool
	}{
		"marked":                 {err: Permanent(errors.New("bad input")), want: true},
		"wrapped after the mark": {err: fmt.Errorf("parsing: %w", Permanent(errors.New("bad input"))), want: true},
		"joined with another":    {err: errors.Join(errors.New("cleanup failed"), Permanent(errors.New("bad input"))), want: true},
		"not marked":             {err: errors.New("model overloaded")},
		"nil":                    {},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := IsPermanent(tc.err); got != tc.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
