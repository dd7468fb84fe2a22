package results

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMergeSteady(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.json")
	base := &Results{
		Runs: []Run{
			{Name: "burst-1", Kind: KindBurst, Tasks: 100},
			{Name: "steady-old", Kind: KindSteady, Tasks: 5},
			{Name: "open-50", Kind: KindOpenLoop, Tasks: 200},
		},
		Steady: &Steady{Name: "steady-old", RetentionSeconds: 60},
		Errors: []string{"an earlier error"},
	}
	if err := base.Write(path); err != nil {
		t.Fatal(err)
	}
	res := &Results{
		Runs: []Run{
			{Name: "ceiling", Kind: KindBurst, Tasks: 40},
			{Name: "steady-new", Kind: KindSteady, Tasks: 7},
		},
		Steady: &Steady{Name: "steady-new", RetentionSeconds: 180, StartedAt: time.Unix(1, 0).UTC()},
		Errors: []string{"a new error"},
	}
	res.Settings.Steady.RatePercent = 35

	got, err := MergeSteady(path, res)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range got.Runs {
		names = append(names, r.Name)
	}
	if want := "burst-1 open-50 steady-new"; strings.Join(names, " ") != want {
		t.Errorf("runs %q, want %q: the base's runs but its steady one, then the new steady run", names, want)
	}
	if got.Steady.Name != "steady-new" || got.Steady.RetentionSeconds != 180 {
		t.Errorf("steady %+v, want the new run's", got.Steady)
	}
	if got.Settings.Steady.RatePercent != 35 {
		t.Errorf("steady settings %+v, want the new run's", got.Settings.Steady)
	}
	if want := "an earlier error|a new error"; strings.Join(got.Errors, "|") != want {
		t.Errorf("errors %q, want %q", got.Errors, want)
	}
}

func TestMergeSteadyRefuses(t *testing.T) {
	dir := t.TempDir()
	withSteady := &Results{Runs: []Run{{Name: "s", Kind: KindSteady}}, Steady: &Steady{Name: "s"}}
	for name, tc := range map[string]struct {
		path string
		res  *Results
		want string
	}{
		"no steady run":        {filepath.Join(dir, "none.json"), &Results{}, "this run has no steady run"},
		"steady run not found": {filepath.Join(dir, "none.json"), &Results{Steady: &Steady{Name: "s"}}, "this run has no steady run"},
		"no earlier results":   {filepath.Join(dir, "none.json"), withSteady, "reading the results"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := MergeSteady(tc.path, tc.res)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("MergeSteady: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
