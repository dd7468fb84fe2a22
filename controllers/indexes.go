package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// Cache indexes shared by the Hive controller and the dispatcher. They are registered once,
// before the manager starts, by SetupIndexes.
const (
	// IndexPodHive indexes agent pods by the value of their hive label.
	IndexPodHive = "swarm.aihub.dev/pod-hive"
	// IndexTaskActiveHive indexes tasks that have not finished by spec.hive, so that a
	// hive's queue and running tasks are found without walking its finished history.
	IndexTaskActiveHive = "swarm.aihub.dev/active-hive"
	// IndexTaskDependsOn indexes tasks by the names in their spec.dependsOn, so a task that
	// finishes finds the tasks waiting for it.
	IndexTaskDependsOn = "swarm.aihub.dev/depends-on"
	// IndexTaskAgent indexes the tasks bound to an agent (Assigned or Running) by
	// status.agent: the agent is busy while it has any, and its free slots are its
	// concurrency minus their number.
	IndexTaskAgent = "swarm.aihub.dev/bound-agent"
)

// cacheIndex is one index of the cache: the objects it indexes, its name and the values
// it indexes an object by.
type cacheIndex struct {
	obj     client.Object
	name    string
	extract client.IndexerFunc
}

var cacheIndexes = []cacheIndex{
	{&corev1.Pod{}, IndexPodHive, func(o client.Object) []string {
		if v, ok := o.GetLabels()[swarmv1alpha1.LabelHive]; ok {
			return []string{v}
		}
		return nil
	}},
	{&swarmv1alpha1.Task{}, IndexTaskActiveHive, func(o client.Object) []string {
		t := o.(*swarmv1alpha1.Task)
		if t.Status.Phase.Finished() {
			return nil
		}
		return []string{t.Spec.Hive}
	}},
	{&swarmv1alpha1.Task{}, IndexTaskAgent, func(o client.Object) []string {
		t := o.(*swarmv1alpha1.Task)
		if !t.Status.Phase.Bound() || t.Status.Agent == "" {
			return nil
		}
		return []string{t.Status.Agent}
	}},
	{&swarmv1alpha1.Task{}, IndexTaskDependsOn, func(o client.Object) []string {
		t := o.(*swarmv1alpha1.Task)
		if t.Status.Phase.Finished() {
			return nil
		}
		return t.Spec.DependsOn
	}},
}

// SetupIndexes registers the cache indexes.
func SetupIndexes(ctx context.Context, indexer client.FieldIndexer) error {
	for _, i := range cacheIndexes {
		if err := indexer.IndexField(ctx, i.obj, i.name, i.extract); err != nil {
			return fmt.Errorf("indexing %T by %s: %w", i.obj, i.name, err)
		}
	}
	return nil
}
