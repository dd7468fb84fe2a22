package kwok

import (
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// stage is the part of a kwok Stage the tests look at.
type stage struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		ResourceRef struct {
			APIGroup string `json:"apiGroup"`
			Kind     string `json:"kind"`
		} `json:"resourceRef"`
		Weight   int `json:"weight"`
		Selector struct {
			MatchLabels      map[string]string `json:"matchLabels"`
			MatchExpressions []struct {
				Key      string   `json:"key"`
				Operator string   `json:"operator"`
				Values   []string `json:"values"`
			} `json:"matchExpressions"`
		} `json:"selector"`
		Delay *struct {
			DurationMilliseconds       *int64 `json:"durationMilliseconds"`
			JitterDurationMilliseconds *int64 `json:"jitterDurationMilliseconds"`
		} `json:"delay"`
		Next struct {
			Delete         bool   `json:"delete"`
			StatusTemplate string `json:"statusTemplate"`
		} `json:"next"`
	} `json:"spec"`
}

func parse(t *testing.T, doc string) stage {
	t.Helper()
	var s stage
	if err := yaml.UnmarshalStrict([]byte(strings.ReplaceAll(doc, "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: Stage\n", "")), &s); err != nil {
		t.Fatalf("parsing %s: %v", doc, err)
	}
	return s
}

// mustStage returns a function that returns a stage's YAML, failing the test on an error.
func mustStage(t *testing.T) func(string, error) string {
	return func(doc string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
}

func TestPodReadyStage(t *testing.T) {
	must := mustStage(t)
	s := parse(t, must(PodReadyStage("agent-ready", 3*time.Second, 500*time.Millisecond, map[string]string{"swarm.aihub.dev/hive": "h", "a": "b: c"})))
	if s.Metadata.Name != "agent-ready" || s.Spec.ResourceRef.Kind != "Pod" || s.Spec.ResourceRef.APIGroup != "v1" || s.Spec.Weight != 1 {
		t.Errorf("stage = %+v", s)
	}
	if d := s.Spec.Delay; d == nil || *d.DurationMilliseconds != 3000 || *d.JitterDurationMilliseconds != 3500 {
		t.Errorf("delay = %+v", d)
	}
	if got := s.Spec.Selector.MatchLabels; len(got) != 2 || got["swarm.aihub.dev/hive"] != "h" || got["a"] != "b: c" {
		t.Errorf("matchLabels = %v", got)
	}
	podReady, _, err := DefaultStage(StagePodReady)
	def := parse(t, must(podReady, err))
	if len(s.Spec.Selector.MatchExpressions) != 3 || s.Spec.Next.StatusTemplate != def.Spec.Next.StatusTemplate || def.Spec.Next.StatusTemplate == "" {
		t.Errorf("the stage does not keep the default pod-ready's expressions and template: %+v", s.Spec)
	}

	s = parse(t, must(PodReadyStage("all-ready", 0, 0, nil)))
	if s.Spec.Delay != nil || s.Spec.Selector.MatchLabels != nil || len(s.Spec.Selector.MatchExpressions) != 3 {
		t.Errorf("stage without delay or selector = %+v", s.Spec)
	}
}

func TestPodDeleteStage(t *testing.T) {
	s := parse(t, PodDeleteStage("others-delete", "swarm.aihub.dev/hive"))
	exprs := s.Spec.Selector.MatchExpressions
	if !s.Spec.Next.Delete || len(exprs) != 2 ||
		exprs[0].Key != ".metadata.deletionTimestamp" || exprs[0].Operator != "Exists" ||
		exprs[1].Key != `.metadata.labels["swarm.aihub.dev/hive"]` || exprs[1].Operator != "DoesNotExist" {
		t.Errorf("stage = %+v", s.Spec)
	}
}

func TestStagesConfig(t *testing.T) {
	must := mustStage(t)
	if _, custom, err := stagesConfig(nil, nil); custom || err != nil {
		t.Errorf("no stages: custom %v, %v; want kwokctl's defaults", custom, err)
	}
	cfg, custom, err := stagesConfig([]string{must(PodReadyStage("slow", time.Second, 0, nil))}, []string{StagePodDelete})
	if err != nil || !custom {
		t.Fatalf("stagesConfig: %v", err)
	}
	var names []string
	for _, doc := range strings.Split(cfg, "---\n")[1:] {
		names = append(names, parse(t, doc).Metadata.Name)
	}
	if want := "node-initialize node-heartbeat-with-lease pod-ready pod-complete slow"; strings.Join(names, " ") != want {
		t.Errorf("stages = %v, want %s", names, want)
	}

	for name, tc := range map[string]struct{ extra, omit []string }{
		"unknown default":  {omit: []string{"pod-ready-fast"}},
		"duplicate name":   {extra: []string{must(PodReadyStage(StagePodReady, 0, 0, nil))}},
		"not a stage":      {extra: []string{"apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n"}},
		"no selector":      {extra: []string{"apiVersion: kwok.x-k8s.io/v1alpha1\nkind: Stage\nmetadata:\n  name: x\nspec:\n  resourceRef:\n    kind: Pod\n"}},
		"not YAML":         {extra: []string{"{"}},
		"no resource kind": {extra: []string{"apiVersion: kwok.x-k8s.io/v1alpha1\nkind: Stage\nmetadata:\n  name: x\nspec:\n  selector: {}\n"}},
	} {
		if _, _, err := stagesConfig(tc.extra, tc.omit); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
