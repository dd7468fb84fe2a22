package agent

import (
	"context"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
)

// Task is the attempt of a task a handler works on.
type Task struct {
	// Name and Namespace identify the Task object.
	Name, Namespace string
	// Hive is the hive the task was sent to.
	Hive string
	// Input is spec.input, as the user wrote it.
	Input string
	// Attempt is the number of this attempt, from 1. Delivery is at least once: an attempt
	// whose agent was lost runs again, so handlers with side effects should be idempotent.
	Attempt int32
	// Priority is spec.priority.
	Priority int32
	// Deadline is when the attempt times out; the handler's context ends then.
	Deadline time.Time
	// DependsOn names the tasks whose results this one may read.
	DependsOn []string
	// RequiredCapabilities is spec.requiredCapabilities.
	RequiredCapabilities []string

	object *swarmv1alpha1.Task
	reader client.Reader
}

func newTask(t *swarmv1alpha1.Task, reader client.Reader) *Task {
	deadline := time.Now().Add(lifecycle.Timeout(&t.Spec))
	if t.Status.AssignedAt != nil {
		deadline = t.Status.AssignedAt.Add(lifecycle.Timeout(&t.Spec))
	}
	return &Task{
		Name: t.Name, Namespace: t.Namespace, Hive: t.Spec.Hive, Input: t.Spec.Input,
		Attempt: t.Status.Attempt, Priority: t.Spec.Priority, Deadline: deadline,
		DependsOn: t.Spec.DependsOn, RequiredCapabilities: t.Spec.RequiredCapabilities,
		object: t.DeepCopy(), reader: reader,
	}
}

// Object returns a copy of the Task object as it was when the attempt started.
func (t *Task) Object() *swarmv1alpha1.Task { return t.object.DeepCopy() }

// DependencyResults returns the results of the tasks this one depends on, by name. The
// operator binds a task only once all of them succeeded.
func (t *Task) DependencyResults(ctx context.Context) (map[string]string, error) {
	out := make(map[string]string, len(t.DependsOn))
	for _, name := range t.DependsOn {
		dep := &swarmv1alpha1.Task{}
		if err := t.reader.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: name}, dep); err != nil {
			return nil, fmt.Errorf("reading dependency %s: %w", name, err)
		}
		if dep.Status.Phase != swarmv1alpha1.TaskSucceeded {
			return nil, fmt.Errorf("dependency %s is %s, not Succeeded", name, dep.Status.Phase)
		}
		out[name] = dep.Status.Result
	}
	return out, nil
}
