package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func TestEveryRequestIsCountedByItsOutcome(t *testing.T) {
	ok := newAgent(t, echo)
	failing := newAgent(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(swarmv1alpha1.HeaderOutcome, swarmv1alpha1.OutcomeFailed)
		http.Error(w, "no", http.StatusUnprocessableEntity)
	})
	streamFailed := newAgent(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", swarmv1alpha1.HeaderOutcome)
		_, _ = w.Write([]byte("half"))
		w.Header().Set(swarmv1alpha1.HeaderOutcome, swarmv1alpha1.OutcomeFailed)
	})
	p := NewPool(nil)
	m := NewMetrics(p)
	reg := prometheus.NewPedanticRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(p, Options{Metrics: m}))
	defer srv.Close()
	url := func(hive string) string { return srv.URL + "/v1/namespaces/ns/hives/" + hive + "/requests" }

	p.Set("ns/ok", Settings{}, []Agent{{Name: "a", Addr: ok.Listener.Addr().String(), Slots: 1}})
	p.Set("ns/failing", Settings{}, []Agent{{Name: "b", Addr: failing.Listener.Addr().String(), Slots: 1}})
	p.Set("ns/stream", Settings{}, []Agent{{Name: "c", Addr: streamFailed.Listener.Addr().String(), Slots: 1}})
	p.Set("ns/empty", Settings{QueueLength: 0}, nil)
	p.Set("ns/slow", Settings{QueueLength: 1, QueueTimeout: 20 * time.Millisecond}, nil)
	p.Set("ns/gone", Settings{QueueTimeout: 200 * time.Millisecond}, []Agent{{Name: "d", Addr: "127.0.0.1:1", Slots: 1}})

	for range 3 {
		send(t, url("ok"), "x")
	}
	send(t, url("failing"), "x")
	send(t, url("stream"), "x")
	send(t, url("empty"), "x")
	send(t, url("slow"), "x")
	send(t, url("gone"), "x")
	send(t, url("ok"), "x", swarmv1alpha1.HeaderTimeout, "soon")
	send(t, url("no-such-hive"), "x")
	send(t, url("another-made-up-one"), "x")

	want := map[[3]string]float64{
		{"ok", "2xx", ReasonSucceeded}:      3,
		{"failing", "4xx", ReasonFailed}:    1,
		{"stream", "2xx", ReasonFailed}:     1,
		{"empty", "5xx", ReasonQueueFull}:   1,
		{"slow", "5xx", ReasonQueueTimeout}: 1,
		{"gone", "5xx", ReasonUnreachable}:  1,
		{"ok", "4xx", ReasonRejected}:       1,
		{"", "4xx", ReasonNotServing}:       2, // made-up names make no series
	}
	for k, n := range want {
		ns := "ns"
		if k[0] == "" {
			ns = ""
		}
		if got := testutil.ToFloat64(m.requests.WithLabelValues(ns, k[0], k[1], k[2])); got != n {
			t.Errorf("requests %v = %v, want %v", k, got, n)
		}
	}
	if n := testutil.CollectAndCount(m.requests); n != len(want) {
		t.Errorf("%d series of requests_total, want %d", n, len(want))
	}
	// Forwarded requests have a queue wait and an agent time; all have a duration.
	if n := testutil.CollectAndCount(m.agent); n != 3 {
		t.Errorf("%d hives with agent times, want 3 (ok, failing, stream: gone's agent was never reached)", n)
	}
	if n := testutil.CollectAndCount(m.queueWait); n != 3 {
		t.Errorf("%d hives with queue waits, want 3", n)
	}
	if n := testutil.CollectAndCount(m.duration); n != 7 {
		t.Errorf("%d hives with durations, want 7", n)
	}

	// The gauges are the pool's, now.
	_, release, err := p.Acquire(context.Background(), "ns/ok", time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	expected := `
# HELP hive_gateway_requests_in_flight Requests this gateway has forwarded to agents that have not finished their answer.
# TYPE hive_gateway_requests_in_flight gauge
hive_gateway_requests_in_flight{hive="ok",namespace="ns"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected+`hive_gateway_requests_in_flight{hive="empty",namespace="ns"} 0
hive_gateway_requests_in_flight{hive="failing",namespace="ns"} 0
hive_gateway_requests_in_flight{hive="gone",namespace="ns"} 0
hive_gateway_requests_in_flight{hive="slow",namespace="ns"} 0
hive_gateway_requests_in_flight{hive="stream",namespace="ns"} 0
`), "hive_gateway_requests_in_flight"); err != nil {
		t.Error(err)
	}
	slots := `
# HELP hive_gateway_serving_slots Serving slots of the hive's routable agents, as this gateway sees them.
# TYPE hive_gateway_serving_slots gauge
hive_gateway_serving_slots{hive="empty",namespace="ns"} 0
hive_gateway_serving_slots{hive="failing",namespace="ns"} 1
hive_gateway_serving_slots{hive="gone",namespace="ns"} 1
hive_gateway_serving_slots{hive="ok",namespace="ns"} 1
hive_gateway_serving_slots{hive="slow",namespace="ns"} 0
hive_gateway_serving_slots{hive="stream",namespace="ns"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(slots), "hive_gateway_serving_slots"); err != nil {
		t.Error(err)
	}
}
