package main

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestNiceStep(t *testing.T) {
	tests := []struct {
		span float64
		n    int
		want float64
	}{
		{150, 6, 50},
		{100, 5, 20},
		{7, 6, 2},
		{0.9, 6, 0.2},
		{1000, 4, 500},
		{0, 6, 1},
	}
	for _, tt := range tests {
		if got := niceStep(tt.span, tt.n); got != tt.want {
			t.Errorf("niceStep(%v, %d) = %v, want %v", tt.span, tt.n, got, tt.want)
		}
	}
}

// svgElements parses an SVG document and counts its elements by name.
func svgElements(t *testing.T, svg string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			counts[se.Name.Local]++
		}
	}
	return counts
}

func TestLatencySVG(t *testing.T) {
	tests := []struct {
		name      string
		points    []plotPoint
		polylines int
		texts     []string
	}{
		{"no points", nil, 0, []string{"no open-loop runs"}},
		{"four rates", []plotPoint{
			{Rate: 112, Percent: 75, QueueWait: Summary{P50: 20, P95: 80, P99: 150}, EndToEnd: Summary{P50: 30, P95: 90, P99: 200}},
			{Rate: 37, Percent: 25, QueueWait: Summary{P50: 5, P95: 10, P99: 20}, EndToEnd: Summary{P50: 8, P95: 15, P99: 30}},
			{Rate: 75, Percent: 50, QueueWait: Summary{P50: 10, P95: 30, P99: 60}, EndToEnd: Summary{P50: 15, P95: 40, P99: 90}},
			{Rate: 150, Percent: 100, QueueWait: Summary{P50: 2000, P95: 5000, P99: 6000}, EndToEnd: Summary{P50: 2100, P95: 5100, P99: 6100}},
		}, 6, []string{"queue wait p99", "end to end p50", "arrival rate (tasks/s, open loop)", "100 ms", "1 s", "75 %", "target: queue wait p99 &lt; 100 ms"}},
		{"zero latencies are drawn at the floor", []plotPoint{{Rate: 10, Percent: 50}}, 6, []string{"0.1 ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svg := latencySVG("Latency <test> & more", tt.points)
			el := svgElements(t, svg)
			if el["svg"] != 1 || el["polyline"] != tt.polylines {
				t.Errorf("svg elements %v; want one svg and %d polylines", el, tt.polylines)
			}
			if !strings.Contains(svg, "Latency &lt;test&gt; &amp; more") {
				t.Error("the title is not escaped")
			}
			for _, want := range tt.texts {
				if !strings.Contains(svg, want) {
					t.Errorf("the plot lacks %q", want)
				}
			}
			if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
				t.Errorf("the plot has non-numbers:\n%s", svg)
			}
		})
	}
}

func TestLatencySVGOrdersByRate(t *testing.T) {
	svg := latencySVG("t", []plotPoint{{Rate: 100, QueueWait: Summary{P50: 10}}, {Rate: 50, QueueWait: Summary{P50: 1}}})
	start := strings.Index(svg, `<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="`)
	if start < 0 {
		t.Fatal("no queue-wait p50 line")
	}
	pts := strings.Fields(strings.SplitN(svg[start:], `points="`, 2)[1])
	if len(pts) < 2 || pts[0] >= pts[1] {
		t.Errorf("points not ordered by rate: %v", pts[:2])
	}
}
