// Package statuspatch builds the JSON merge patches of status writes.
//
// controller-runtime's MergeFrom serialises the whole object twice and diffs it, spec and
// metadata included; for a task whose input is a long prompt that is most of the cost of a
// bind. A status write only ever changes the status, so only the status is compared here.
//
// docs/architecture.md shows where it fits among the operator's parts.
package statuspatch

import (
	"encoding/json"
	"fmt"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Guarded returns a merge patch that turns status before into status after, guarded by
// resourceVersion: the API server refuses it with 409 Conflict if the object changed since
// that version, as MergeFromWithOptimisticLock does. before and after are status values of
// the same type (structs that marshal to JSON objects).
func Guarded(resourceVersion string, before, after any) (client.Patch, error) {
	if resourceVersion == "" {
		return nil, fmt.Errorf("a guarded status patch needs the object's resourceVersion")
	}
	from, err := json.Marshal(before)
	if err != nil {
		return nil, fmt.Errorf("serialising the current status: %w", err)
	}
	to, err := json.Marshal(after)
	if err != nil {
		return nil, fmt.Errorf("serialising the new status: %w", err)
	}
	diff, err := jsonpatch.CreateMergePatch(from, to)
	if err != nil {
		return nil, fmt.Errorf("comparing the statuses: %w", err)
	}
	rv, _ := json.Marshal(resourceVersion) // a string always serialises
	data := make([]byte, 0, len(diff)+len(rv)+48)
	data = append(data, `{"metadata":{"resourceVersion":`...)
	data = append(data, rv...)
	data = append(data, `},"status":`...)
	data = append(data, diff...)
	data = append(data, '}')
	return client.RawPatch(types.MergePatchType, data), nil
}
