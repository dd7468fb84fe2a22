package revision

import (
	"encoding/json"
	"hash/fnv"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func spec(image string, concurrency int32, serving *swarmv1alpha1.ServingSpec) *swarmv1alpha1.HiveSpec {
	return &swarmv1alpha1.HiveSpec{
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: image}}}},
		Agent:    swarmv1alpha1.AgentSpec{Concurrency: concurrency},
		Serving:  serving,
	}
}

func TestOf(t *testing.T) {
	base := Of(spec("img:v1", 1, nil))
	if errs := validation.IsValidLabelValue(base); len(errs) > 0 || base == "" {
		t.Fatalf("revision %q is not a label value: %v", base, errs)
	}
	serving := Of(spec("img:v1", 1, &swarmv1alpha1.ServingSpec{}))
	cases := map[string]struct {
		spec *swarmv1alpha1.HiveSpec
		want string // the revision it must equal; it must differ from both others
	}{
		"same inputs":     {spec("img:v1", 1, nil), base},
		"new image":       {spec("img:v2", 1, nil), ""},
		"new concurrency": {spec("img:v1", 2, nil), ""},
		"new capability": {&swarmv1alpha1.HiveSpec{Template: spec("img:v1", 1, nil).Template,
			Agent: swarmv1alpha1.AgentSpec{Concurrency: 1, Capabilities: []string{"gpu"}}}, ""},
		"serving defaults written out": {spec("img:v1", 1, &swarmv1alpha1.ServingSpec{
			Concurrency: ptr.To(swarmv1alpha1.DefaultServingConcurrency), Port: ptr.To(swarmv1alpha1.DefaultServingPort)}), serving},
		// The queue is the gateways': changing it replaces no agent.
		"new queue": {spec("img:v1", 1, &swarmv1alpha1.ServingSpec{
			QueueLength: ptr.To[int32](5), QueueTimeout: &metav1.Duration{Duration: 1}}), serving},
		"new serving port":  {spec("img:v1", 1, &swarmv1alpha1.ServingSpec{Port: ptr.To[int32](9000)}), ""},
		"new serving slots": {spec("img:v1", 1, &swarmv1alpha1.ServingSpec{Concurrency: ptr.To[int32](2)}), ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Of(tc.spec)
			switch {
			case tc.want != "" && got != tc.want:
				t.Errorf("Of = %q, want %q", got, tc.want)
			case tc.want == "" && (got == base || got == serving):
				t.Errorf("Of = %q, want a revision other than %q and %q", got, base, serving)
			}
		})
	}
	if serving == base {
		t.Errorf("turning serving on kept the revision %q: its agents would never get the serving port", base)
	}
}

// TestOfIsStableForHivesThatDoNotServe holds the revision of a hive without spec.serving
// to the hash of its template and agent settings alone, as before serving existed: an
// operator upgrade must not roll out every hive.
func TestOfIsStableForHivesThatDoNotServe(t *testing.T) {
	s := spec("img:v1", 3, nil)
	s.Agent.Capabilities = []string{"gpu"}
	h := fnv.New32a()
	tmpl, _ := json.Marshal(&s.Template)
	agent, _ := json.Marshal(&s.Agent)
	_, _ = h.Write(append(append(tmpl, 0), agent...))
	if want := rand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10)); Of(s) != want {
		t.Errorf("Of = %q, want %q, the revision the hive had before", Of(s), want)
	}
}
