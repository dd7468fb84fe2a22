package v1alpha1

import (
	"fmt"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// HiveObjects is the label selector of the objects that belong to some hive (its agent
// pods, their access objects, its PodDisruptionBudget): all the operator and the gateway
// cache of those kinds. A cluster's other pods would cost them memory and events for
// nothing.
func HiveObjects() labels.Selector {
	hasHive, err := labels.NewRequirement(LabelHive, selection.Exists, nil)
	if err != nil {
		panic(fmt.Sprintf("building the selector of hive objects: %v", err)) // a constant key
	}
	return labels.NewSelector().Add(*hasHive)
}

// unfinishedPhases are the phases of a task that has not finished; "" is a task whose
// status has not been written yet.
var unfinishedPhases = []TaskPhase{"", TaskPending, TaskBlocked, TaskAssigned, TaskRunning}

// UnfinishedTasks is the field selector (on the selectable field status.phase) of the tasks
// that have not finished: what the operator and the agents cache. A task leaves their
// watches when it finishes, so their memory and start-up follow the work in flight, not the
// history kept.
func UnfinishedTasks() fields.Selector {
	return fields.AndSelectors(
		fields.OneTermNotEqualSelector(TaskFieldPhase, string(TaskSucceeded)),
		fields.OneTermNotEqualSelector(TaskFieldPhase, string(TaskFailed)),
		fields.OneTermNotEqualSelector(TaskFieldPhase, string(TaskCancelled)),
	)
}

// FinishedTasks is the field selector of the tasks that have finished (Succeeded, Failed or
// Cancelled), which field selectors can only say as "none of the other phases".
func FinishedTasks() fields.Selector {
	terms := make([]fields.Selector, 0, len(unfinishedPhases))
	for _, p := range unfinishedPhases {
		terms = append(terms, fields.OneTermNotEqualSelector(TaskFieldPhase, string(p)))
	}
	return fields.AndSelectors(terms...)
}
