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

	"k8s.io/apimachinery/pkg/util/rand"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// Of returns the revision of a hive's agent pods: of what the operator puts into them (the
// template, the agent settings and, when the hive serves requests, the serving port and
// slots its agents are given; a hive that does not serve hashes as it did before serving
// existed, so no agent is replaced for it). The encoding is JSON (map keys sorted, so
// deterministic) hashed with FNV-32a and spelt with the alphabet Kubernetes uses for
// generated names, so it is a valid label value of about ten characters.
func Of(spec *swarmv1alpha1.HiveSpec) string {
	h := fnv.New32a()
	// Encoding these types cannot fail: they hold no channels, functions or cycles.
	t, _ := json.Marshal(&spec.Template)
	a, _ := json.Marshal(&spec.Agent)
	_, _ = h.Write(t)
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(a)
	if s := spec.Serving; s != nil {
		// Only what the agents are given: the queue is the gateways', and changing it
		// replaces no agent.
		v, _ := json.Marshal([]int32{s.PortOrDefault(), s.ConcurrencyOrDefault()})
		_, _ = h.Write([]byte{0})
		_, _ = h.Write(v)
	}
	return rand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10))
}
