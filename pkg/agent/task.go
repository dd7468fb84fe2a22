package agent

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
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

	// Request is true when the handler answers a request sent through the hive gateway
	// rather than a Task: nothing about it is stored in the API server, Name is the
	// request's id (Hive-Request-Id), Attempt the gateway's try, Object returns nil and
	// DependencyResults an empty map.
	Request bool
	// Output is where the handler may stream what it makes, as it makes it. For a request
	// each write reaches the caller at once (a model server's tokens, say); for a task what
	// was written is kept, and the result stored is it followed by what the handler
	// returns. Either way what the handler returns is sent after what it wrote.
	Output io.Writer

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
		object: t.DeepCopy(), reader: reader, Output: &taskOutput{},
	}
}

// Object returns a copy of the Task object as it was when the attempt started; nil for a
// request.
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

// taskOutput is a task's Output: what the handler writes, kept up to the result's limit
// (the rest only counted, so that a handler streaming too much fails as one returning too
// much does, without holding it all).
type taskOutput struct {
	mu      sync.Mutex
	kept    strings.Builder
	dropped int
}

func (o *taskOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	room := max(swarmv1alpha1.MaxResultLength+1-o.kept.Len(), 0)
	if len(p) > room {
		o.dropped += len(p) - room
		o.kept.Write(p[:room])
		return len(p), nil
	}
	o.kept.Write(p)
	return len(p), nil
}

// result is the task's result: what was written followed by what the handler returned,
// and its whole length.
func (o *taskOutput) result(returned string) (string, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.kept.Len() == 0 {
		return returned, len(returned)
	}
	return o.kept.String() + returned, o.kept.Len() + o.dropped + len(returned)
}
