package main

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
)

// plotPoint is one open-loop rate of the latency plot.
type plotPoint struct {
	Rate      float64 // offered tasks/s
	Percent   float64 // of the ceiling
	QueueWait Summary
	EndToEnd  Summary
}

// plot geometry, in SVG user units.
const (
	plotWidth   = 760
	plotHeight  = 440
	plotLeft    = 78
	plotRight   = 200 // room for the legend
	plotTop     = 48
	plotBottom  = 62
	plotMinMs   = 0.1
	plotTargets = targetQueueWaitP99Ms
)

type series struct {
	label  string
	color  string
	dashed bool
	value  func(plotPoint) float64
}

var plotSeries = []series{
	{"queue wait p50", "#1f77b4", false, func(p plotPoint) float64 { return p.QueueWait.P50 }},
	{"queue wait p95", "#ff7f0e", false, func(p plotPoint) float64 { return p.QueueWait.P95 }},
	{"queue wait p99", "#d62728", false, func(p plotPoint) float64 { return p.QueueWait.P99 }},
	{"end to end p50", "#1f77b4", true, func(p plotPoint) float64 { return p.EndToEnd.P50 }},
	{"end to end p95", "#ff7f0e", true, func(p plotPoint) float64 { return p.EndToEnd.P95 }},
	{"end to end p99", "#d62728", true, func(p plotPoint) float64 { return p.EndToEnd.P99 }},
}

// niceStep returns a step of 1, 2 or 5 × 10^k that cuts span into at most about n parts.
func niceStep(span float64, n int) float64 {
	if span <= 0 || n <= 0 {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

// fmtLatency labels a decade of milliseconds.
func fmtLatency(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%g s", v/1000)
	default:
		return fmt.Sprintf("%g ms", v)
	}
}

// latencySVG draws queue-wait and end-to-end percentiles against the arrival rate: a linear
// rate axis, a logarithmic latency axis, the queue-wait target and a legend.
func latencySVG(title string, points []plotPoint) string {
	pts := slices.Clone(points)
	slices.SortFunc(pts, func(a, b plotPoint) int { return cmpFloat(a.Rate, b.Rate) })

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		plotWidth, plotHeight, plotWidth, plotHeight)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotWidth, plotHeight)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", plotLeft, html.EscapeString(title))
	if len(pts) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no open-loop runs</text>`+"\n</svg>\n", plotLeft, plotHeight/2)
		return b.String()
	}

	x0, x1 := float64(plotLeft), float64(plotWidth-plotRight)
	y0, y1 := float64(plotHeight-plotBottom), float64(plotTop)

	// Axes ranges.
	maxRate := pts[len(pts)-1].Rate
	xStep := niceStep(maxRate, 6)
	xMax := math.Ceil(maxRate*1.05/xStep) * xStep
	if xMax <= 0 {
		xMax, xStep = 1, 0.2
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		for _, s := range plotSeries {
			v := math.Max(s.value(p), plotMinMs)
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	hi = math.Max(hi, plotTargets)
	dLo, dHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dHi <= dLo {
		dHi = dLo + 1
	}
	px := func(rate float64) float64 { return x0 + rate/xMax*(x1-x0) }
	py := func(ms float64) float64 {
		return y0 - (math.Log10(math.Max(ms, plotMinMs))-dLo)/(dHi-dLo)*(y0-y1)
	}

	// Grid and ticks.
	b.WriteString(`<g stroke="#e5e5e5">` + "\n")
	for d := dLo; d <= dHi; d++ {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x0, py(math.Pow(10, d)), x1, py(math.Pow(10, d)))
	}
	for x := xStep; x <= xMax+xStep/2; x += xStep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", px(x), y0, px(x), y1)
	}
	b.WriteString("</g>\n")
	b.WriteString(`<g font-size="11" fill="#333">` + "\n")
	for d := dLo; d <= dHi; d++ {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-6, py(math.Pow(10, d))+4, fmtLatency(math.Pow(10, d)))
	}
	for x := 0.0; x <= xMax+xStep/2; x += xStep {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%g</text>`+"\n", px(x), y0+16, round(x, 6))
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x0, y0, x1, y0)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x0, y0, x0, y1)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">arrival rate (tasks/s, open loop)</text>`+"\n", (x0+x1)/2, plotHeight-18)
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">latency (log scale)</text>`+"\n", (y0+y1)/2)

	// The queue-wait target.
	ty := py(plotTargets)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888" stroke-dasharray="2 3"/>`+"\n", x0, ty, x1, ty)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="#666" text-anchor="end">target: queue wait p99 &lt; %d ms at %d %% of the ceiling</text>`+"\n",
		x1-4, ty-4, plotTargets, targetRatePercent)

	// Series.
	for _, s := range plotSeries {
		coords := make([]string, 0, len(pts))
		for _, p := range pts {
			coords = append(coords, fmt.Sprintf("%.1f,%.1f", px(p.Rate), py(s.value(p))))
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", s.color, dash, strings.Join(coords, " "))
		for _, c := range coords {
			x, y, _ := strings.Cut(c, ",")
			if s.dashed {
				fmt.Fprintf(&b, `<rect x="%s" y="%s" width="6" height="6" transform="translate(-3 -3)" fill="white" stroke="%s"/>`+"\n", x, y, s.color)
			} else {
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", x, y, s.color)
			}
		}
	}

	// Rate labels (share of the ceiling) above the x axis.
	for _, p := range pts {
		if p.Percent > 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="#666" text-anchor="middle">%.0f %%</text>`+"\n", px(p.Rate), y0+30, p.Percent)
		}
	}

	// Legend.
	lx, ly := x1+18, y1+6
	for i, s := range plotSeries {
		y := ly + float64(i)*20
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", lx, y, lx+28, y, s.color, dash)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+34, y+4, s.label)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="#666">%% under the axis: share</text>`+"\n", lx, ly+float64(len(plotSeries))*20+10)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="#666">of the measured ceiling</text>`+"\n", lx, ly+float64(len(plotSeries))*20+24)
	b.WriteString("</svg>\n")
	return b.String()
}

// plotPoints returns the open-loop runs as plot points.
func plotPoints(r *Results) []plotPoint {
	var pts []plotPoint
	for _, run := range runsOf(r, kindOpenLoop) {
		pts = append(pts, plotPoint{Rate: run.TargetRate, Percent: run.RatePercent, QueueWait: run.QueueWait, EndToEnd: run.EndToEnd})
	}
	return pts
}
