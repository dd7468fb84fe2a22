// Package checker compares a run's results with the targets of configs/targets.yaml and
// prints each figure against its target. Targets are reported, never asserted: a benchmark
// on a shared 2-core machine is too noisy to fail a build on.
//
// A target's figure is data, like its limit and texts: its expression (expr-lang) computes it
// from the results, so that each rule is read, and changed, next to its target, not in Go.
package checker

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"text/template"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm/runtime"

	"github.com/aihub-dev/hive-operator/test/perf/config"
	"github.com/aihub-dev/hive-operator/test/perf/report"
	"github.com/aihub-dev/hive-operator/test/perf/results"
	"github.com/aihub-dev/hive-operator/test/perf/stats"
)

// env is what an expression sees: the results' fields and methods, and the params, limit
// and cores the texts see too. A struct, not a map, so that a misspelt name does not compile.
type env struct {
	*results.Results
	Params map[string]float64 `expr:"params"`
	Limit  float64            `expr:"limit"`
	Cores  float64            `expr:"cores"`
}

// options compile an expression against env, to a map. roundTo and ratio (0 for a divisor of
// 0) are stats' rounding and ratio, which expr's builtins lack; expr checks their arguments
// against stats' types but passes an int where a float64 is declared, hence the conversions.
var options = []expr.Option{
	expr.Env(env{}), expr.AsKind(reflect.Map),
	expr.Function("roundTo", func(a ...any) (any, error) { return stats.Round(runtime.ToFloat64(a[0]), runtime.ToInt(a[1])), nil }, stats.Round),
	expr.Function("ratio", func(a ...any) (any, error) { return stats.Ratio(runtime.ToFloat64(a[0]), runtime.ToFloat64(a[1])), nil }, stats.Ratio),
}

// Check returns the verdict on every target. An expression that does not compile or fails is
// an error naming its target: the figure is then unknown, not missing.
func Check(r *results.Results, targets []config.Target) ([]results.Target, error) {
	out := make([]results.Target, len(targets))
	var errs []error
	for i, t := range targets {
		fields, err := compute(t, env{r, t.Params, t.Limit, float64(max(r.Machine.Cores, 1))})
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		text := func(name, src string) string {
			var b strings.Builder
			tmpl, err := template.New(t.Name + " " + name).Option("missingkey=error").Funcs(report.Funcs).Parse(src)
			if err == nil {
				err = tmpl.Execute(&b, fields)
			}
			errs = append(errs, err)
			return b.String()
		}
		v := &out[i] // t, with its limit and its texts rendered
		v.Target, v.Limit, v.Goal, v.Why = t, fields["limit"].(float64), text("goal", t.Goal), ""
		switch value, _ := fields["value"].(float64); {
		case fields["missing"] != "":
			v.Status, v.Measured = results.NotMeasured, fields["missing"].(string)
		case config.Ops[t.Op](value, v.Limit):
			v.Status, v.Value, v.Measured = results.Met, value, text("measured", t.Measured)
		default:
			v.Status, v.Value, v.Measured, v.Why = results.Missed, value, text("measured", t.Measured), text("why", t.Why)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("rendering the targets' texts: %w", err)
	}
	return out, nil
}

// compute runs a target's expression and returns the fields its texts see: limit, params,
// cores, and what the expression returned. That is value, a float64 (float() converts an int),
// and limit, when a figure computes it from the params; or missing, why it was not measured.
func compute(t config.Target, e env) (map[string]any, error) {
	p, err := expr.Compile(t.Compute, options...)
	if err != nil {
		return nil, fmt.Errorf("its expression does not compile: %w", err)
	}
	out, err := expr.Run(p, e)
	if err != nil {
		return nil, fmt.Errorf("its expression failed: %w", err)
	}
	got, _ := out.(map[string]any)
	fields := map[string]any{"limit": t.Limit, "params": t.Params, "cores": e.Cores, "value": 0.0, "missing": ""}
	maps.Copy(fields, got)
	_, value := got["value"].(float64)
	_, limit := fields["limit"].(float64)
	if missing, ok := fields["missing"].(string); !ok || !limit || !value && missing == "" {
		return nil, fmt.Errorf("its expression returned value %#v, limit %#v, missing %#v: no float64 value (and limit) nor why it is missing", got["value"], got["limit"], got["missing"])
	}
	return fields, nil
}
