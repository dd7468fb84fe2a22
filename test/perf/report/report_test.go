package report

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/aihub-dev/hive-operator/test/perf/results"
)

var update = flag.Bool("update", false, "rewrite the golden files from the fixture")

// TestRender renders the results of a fixed quick run, as its JSON file holds them, and
// compares the tables and the page with the golden files.
func TestRender(t *testing.T) {
	r, err := results.Read("../testdata/results.json")
	if err != nil {
		t.Fatal(err)
	}
	for golden, render := range map[string]func(io.Writer) error{
		"testdata/report.md":     func(w io.Writer) error { return Markdown(w, r, "##") },
		"testdata/benchmarks.md": func(w io.Writer) error { return Docs(w, r, "benchmarks-latency.svg", "benchmarks-memory.svg") },
	} {
		var b bytes.Buffer
		if err := render(&b); err != nil {
			t.Fatalf("%s: %v", golden, err)
		}
		if *update {
			if err := os.WriteFile(golden, b.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), b.String()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", golden, diff)
		}
	}
}

func TestPlot(t *testing.T) {
	r, err := results.Read("../testdata/results.json")
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*results.Results{"a quick run": r, "no open-loop runs": {}} {
		var b bytes.Buffer
		if err := Plot(&b, r, "svg"); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := xml.Unmarshal(b.Bytes(), new(struct{})); err != nil || !strings.Contains(b.String(), "Latency against arrival rate") {
			t.Errorf("%s: not an SVG plot of latency (%v)", name, err)
		}
	}
}

func TestPlotMemory(t *testing.T) {
	r, err := results.Read("../testdata/results.json")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := PlotMemory(&b, r, "svg"); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(b.Bytes(), new(struct{})); err != nil || !strings.Contains(b.String(), "Memory over a long run") {
		t.Errorf("not an SVG plot of memory (%v)", err)
	}
	if err := PlotMemory(io.Discard, &results.Results{}, "svg"); err == nil {
		t.Error("a plot of memory was drawn for results without a steady run")
	}
}
