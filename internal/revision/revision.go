// Package revision names a version of a hive's agents: a short, stable hash of everything
// that goes into an agent pod (the pod template and the agent settings injected into it).
// Agents whose revision label differs from the hive's current one are replaced by a rollout.
//
// docs/architecture.md shows where it fits among the operator's parts.
package revision

import (
	"encoding/json"
	"hash/fnv"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// Of returns the revision of a hive's agent pods. The encoding is JSON (map keys sorted, so
// deterministic) hashed with FNV-32a and spelt with the alphabet Kubernetes uses for
// generated names, so it is a valid label value of about ten characters.
func Of(template *corev1.PodTemplateSpec, agent *swarmv1alpha1.AgentSpec) string {
	h := fnv.New32a()
	// Encoding these types cannot fail: they hold no channels, functions or cycles.
	t, _ := json.Marshal(template)
	a, _ := json.Marshal(agent)
	_, _ = h.Write(t)
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(a)
	return rand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10))
}
