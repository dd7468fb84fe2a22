// Package report renders a run's results: the Markdown tables printed after a run, and
// docs/benchmarks.md (a text/template, benchmarks.md.tmpl) with its plots (gonum/plot) of
// latency against the arrival rate and of memory over the steady run.
package report

import (
	"bytes"
	"cmp"
	_ "embed"
	"errors"
	"fmt"
	"image/color"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/aihub-dev/hive-operator/test/perf/results"
	"github.com/aihub-dev/hive-operator/test/perf/stats"
)

// components are the metered processes, in the order the tables and texts list them.
var components = []string{"apiserver", "etcd", "operator", "bench", "other"}

// Funcs format figures in the page and in the targets' texts.
var Funcs = template.FuncMap{
	"ms":  Ms,
	"mul": func(a, b float64) float64 { return a * b },
	// coresUsed says where the cores went during a phase, for the targets' texts.
	"coresUsed": func(u results.CPUUse, cores float64) string {
		var parts []string
		for _, k := range components {
			if v, ok := u.Cores[k]; ok {
				parts = append(parts, fmt.Sprintf("%s %.2f", k, v))
			}
		}
		if m, ok := u.Cores["machine"]; ok {
			return strings.Join(parts, ", ") + fmt.Sprintf(" (%.2f of %.0f busy)", m, cores)
		}
		return strings.Join(parts, ", ")
	},
	// cores lists the cores of each component, for the tables.
	"cores": func(u results.CPUUse) string {
		if len(u.Cores) == 0 {
			return "–"
		}
		parts := []string{}
		for _, k := range components {
			if v, ok := u.Cores[k]; ok {
				parts = append(parts, fmt.Sprintf("%.2f", v))
			} else {
				parts = append(parts, "–")
			}
		}
		return strings.Join(parts, " / ")
	},
	// share is a component's share of the machine's cores.
	"share": func(u results.CPUUse, k string, cores float64) float64 { return u.Cores[k] / cores },
	"mb": func(b uint64) string {
		if b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f", float64(b)/(1<<20))
	},
	"gib": func(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<30)) },
	"pcts": func(s stats.Summary) string {
		if s.N == 0 {
			return "–"
		}
		return strings.Join([]string{Ms(s.P50), Ms(s.P95), Ms(s.P99), Ms(s.Max)}, " / ")
	},
	// requests lists request counts by method, in a fixed order.
	"requests": func(m map[string]float64) string {
		parts := []string{}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
		}
		return cmp.Or(strings.Join(parts, ", "), "none")
	},
}

// Ms formats milliseconds: two decimals below 10 ms, one below 100, none above.
func Ms(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

//go:embed benchmarks.md.tmpl
var source string

var page = template.Must(template.New("page").Funcs(Funcs).Parse(source))

// data is what the page template sees.
type data struct {
	R                *results.Results
	H                string // the level of the results' headings
	Plot, MemoryPlot string
}

// SteadyRows are about a dozen of the steady run's samples, evenly spaced, the first and
// the last included.
func (d data) SteadyRows() []results.SteadySample {
	s := d.R.Steady.Samples
	step := max((len(s)-1)/12, 1)
	var out []results.SteadySample
	for i := 0; i < len(s); i += step {
		out = append(out, s[i])
	}
	if len(s) > 0 && (len(s)-1)%step != 0 {
		out = append(out, s[len(s)-1])
	}
	return out
}

func (d data) Bursts() []results.Run { return d.R.RunsOf(results.KindBurst) }
func (d data) Rates() []results.Run  { return d.R.RunsOf(results.KindOpenLoop) }
func (d data) Whys() []results.Target {
	return slices.DeleteFunc(slices.Clone(d.R.Targets), func(t results.Target) bool { return t.Why == "" })
}

// Markdown writes the results as Markdown: targets first, then every table, under headings
// of a level ("##").
func Markdown(w io.Writer, r *results.Results, heading string) error {
	return page.ExecuteTemplate(w, "results", data{R: r, H: heading})
}

// Docs writes docs/benchmarks.md: how to run the benchmark, its method and targets, and the
// results with the machine they were measured on and the plots (files next to the page;
// the memory plot's is drawn only when the steady run ran).
func Docs(w io.Writer, r *results.Results, plotFile, memoryPlotFile string) error {
	return page.ExecuteTemplate(w, "page", data{R: r, H: "###", Plot: plotFile, MemoryPlot: memoryPlotFile})
}

// WriteDocs writes benchmarks.md, its plots and the results (benchmarks.json) into dir.
func WriteDocs(dir string, r *results.Results) error {
	files := map[string]*bytes.Buffer{"benchmarks.md": {}, "benchmarks-latency.svg": {}}
	err := Plot(files["benchmarks-latency.svg"], r, "svg")
	memoryPlot := ""
	if r.Steady != nil {
		memoryPlot, files["benchmarks-memory.svg"] = "benchmarks-memory.svg", &bytes.Buffer{}
		err = errors.Join(err, PlotMemory(files[memoryPlot], r, "svg"))
	}
	err = errors.Join(err, Docs(files["benchmarks.md"], r, "benchmarks-latency.svg", memoryPlot))
	for name, b := range files {
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644)
		}
	}
	if err = errors.Join(err, r.Write(filepath.Join(dir, "benchmarks.json"))); err != nil {
		return fmt.Errorf("writing the docs: %w", err)
	}
	return nil
}

// newPlot returns a plot with its titles, a grid and the legend at the top left.
func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	return p
}

// PlotMemory draws the resident memory of the operator and of the largest agent over the
// steady run, in MB against minutes, in a format gonum/plot writes.
func PlotMemory(w io.Writer, r *results.Results, format string) error {
	if r.Steady == nil {
		return errors.New("plotting memory: the steady run did not run")
	}
	p := newPlot("Memory over a long run with retention", "time (minutes)", "resident memory (MB)")
	for k, line := range []struct {
		label string
		bytes func(results.SteadySample) uint64
	}{
		{"operator", func(s results.SteadySample) uint64 { return s.OperatorRSSBytes }},
		{"largest agent", func(s results.SteadySample) uint64 { return s.AgentRSSBytes }},
	} {
		xys := make(plotter.XYs, len(r.Steady.Samples))
		for i, s := range r.Steady.Samples {
			xys[i] = plotter.XY{X: s.Seconds / 60, Y: float64(line.bytes(s)) / (1 << 20)}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("plotting memory: %w", err)
		}
		l.Color, l.Width = plotutil.Color(k), vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(line.label, l)
	}
	p.X.Min, p.Y.Min = 0, 0
	p.Y.Max *= 1.3 // room for the legend
	return write(w, p, format)
}

func write(w io.Writer, p *plot.Plot, format string) error {
	wt, err := p.WriterTo(9*vg.Inch, 5*vg.Inch, format)
	if err == nil {
		_, err = wt.WriteTo(w)
	}
	if err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	return nil
}

// QueueWaitFigure names the target drawn on the plot.
const QueueWaitFigure = "queueWait"

// Plot draws the queue-wait and end-to-end percentiles of the open-loop runs against their
// arrival rate, in a format gonum/plot writes ("svg", "png"): a linear rate axis labelled
// with each rate's share of the ceiling, a logarithmic latency axis in whole decades, and the
// queue-wait target.
func Plot(w io.Writer, r *results.Results, format string) error {
	const floorMs = 0.1 // a log axis has no zero
	p := newPlot("Latency against arrival rate ("+r.Settings.Mode+" run)",
		"arrival rate (tasks/s, open loop; % of the measured ceiling)", "latency (ms, log scale)")
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	rates := r.RunsOf(results.KindOpenLoop)
	var ticks plot.ConstantTicks
	for _, run := range rates {
		ticks = append(ticks, plot.Tick{Value: run.TargetRate, Label: fmt.Sprintf("%.0f\n%.0f %%", run.TargetRate, run.RatePercent)})
	}
	p.X.Tick.Marker = ticks
	for _, e2e := range []bool{false, true} {
		for k, pct := range []string{"p50", "p95", "p99"} {
			xys := make(plotter.XYs, len(rates))
			for i, run := range rates {
				s := map[bool]stats.Summary{false: run.QueueWait, true: run.EndToEnd}[e2e]
				xys[i] = plotter.XY{X: run.TargetRate, Y: max([]float64{s.P50, s.P95, s.P99}[k], floorMs)}
			}
			line, points, err := plotter.NewLinePoints(xys)
			if err != nil {
				return fmt.Errorf("plotting: %w", err)
			}
			line.Color, line.Width, points.Color, points.Shape = plotutil.Color(k), vg.Points(1.5), plotutil.Color(k), draw.CircleGlyph{}
			label := "queue wait " + pct
			if e2e { // dashed, with squares
				line.Dashes, points.Shape, label = plotutil.Dashes(1), draw.BoxGlyph{}, "end to end "+pct
			}
			p.Add(line, points)
			p.Legend.Add(label, line, points)
		}
	}
	if len(rates) == 0 {
		p.X.Max, p.Y.Min, p.Y.Max = 1, floorMs, 1000
	}
	p.X.Min, p.X.Max = 0, 1.05*p.X.Max
	for _, t := range r.Targets {
		if t.Figure == QueueWaitFigure {
			target := plotter.NewFunction(func(float64) float64 { return t.Limit })
			target.Color, target.Dashes = color.Gray{Y: 0x88}, plotutil.Dashes(2)
			p.Add(target)
			p.Legend.Add(fmt.Sprintf("target: queue wait p99 %s %g ms", t.Op, t.Limit), target)
			p.Y.Max = max(p.Y.Max, 1.5*t.Limit)
		}
	}
	// Whole decades, so that at least two are labelled; one more above for the legend.
	p.Y.Min, p.Y.Max = math.Pow(10, math.Floor(math.Log10(max(p.Y.Min, floorMs)))), math.Pow(10, math.Ceil(math.Log10(p.Y.Max))+1)
	return write(w, p, format)
}
