package revision

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func template(image string) *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: image}}}}
}

func TestOf(t *testing.T) {
	base := Of(template("img:v1"), &swarmv1alpha1.AgentSpec{Concurrency: 1})
	if errs := validation.IsValidLabelValue(base); len(errs) > 0 || base == "" {
		t.Fatalf("revision %q is not a label value: %v", base, errs)
	}
	cases := map[string]struct {
		tmpl     *corev1.PodTemplateSpec
		agent    *swarmv1alpha1.AgentSpec
		wantSame bool
	}{
		"same inputs":     {template("img:v1"), &swarmv1alpha1.AgentSpec{Concurrency: 1}, true},
		"new image":       {template("img:v2"), &swarmv1alpha1.AgentSpec{Concurrency: 1}, false},
		"new concurrency": {template("img:v1"), &swarmv1alpha1.AgentSpec{Concurrency: 2}, false},
		"new capability":  {template("img:v1"), &swarmv1alpha1.AgentSpec{Concurrency: 1, Capabilities: []string{"gpu"}}, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Of(tc.tmpl, tc.agent)
			if (got == base) != tc.wantSame {
				t.Errorf("Of = %q, base %q; want same=%v", got, base, tc.wantSame)
			}
		})
	}
}
