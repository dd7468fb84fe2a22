package gateway

import (
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Buckets resolve the serving path's latencies, from a warm echo (under a millisecond) to a
// long streamed answer, with bounds at its targets (50 ms) and alert (200 ms).
var Buckets = []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300}

// Reasons of hive_gateway_requests_total: why a request ended as it did.
const (
	ReasonSucceeded    = "succeeded"     // the agent answered Hive-Outcome: succeeded
	ReasonFailed       = "failed"        // the agent ran it and reported a failure
	ReasonQueueFull    = "queue_full"    // 503: every slot busy and the queue full
	ReasonQueueTimeout = "queue_timeout" // 503: no slot within the queue timeout
	ReasonUnreachable  = "unreachable"   // 503: the agents offered could not be reached
	ReasonNotServing   = "not_serving"   // 404: no such hive, or no spec.serving
	ReasonRejected     = "rejected"      // 400 or 413: the request itself is refused
	ReasonCanceled     = "canceled"      // the caller went away first
	ReasonError        = "error"         // 502: the gateway lost the agent's answer
)

// Metrics are the gateway's Prometheus metrics (docs/metrics.md#gateway). Counters and
// histograms are updated per request; the gauges are read from the pool at scrape time.
type Metrics struct {
	requests                   *prometheus.CounterVec
	duration, queueWait, agent *prometheus.HistogramVec
	inFlightDesc, queuedDesc   *prometheus.Desc
	slotsDesc                  *prometheus.Desc
	pool                       *Pool
}

// NewMetrics returns the metrics of a gateway over pool; register them with Register.
func NewMetrics(pool *Pool) *Metrics {
	labels := []string{"namespace", "hive"}
	hist := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "hive", Subsystem: "gateway", Name: name, Help: help, Buckets: Buckets}, labels)
	}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("hive", "gateway", name), help, labels, nil)
	}
	return &Metrics{
		pool: pool,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hive", Subsystem: "gateway", Name: "requests_total",
			Help: "Requests answered, by status class (2xx, 4xx, 5xx) and reason (succeeded, failed, queue_full, queue_timeout, unreachable, not_serving, rejected, canceled, error).",
		}, []string{"namespace", "hive", "code", "reason"}),
		duration:     hist("request_duration_seconds", "Time from a request's arrival to the end of its answer, as the caller sees it."),
		queueWait:    hist("request_queue_wait_seconds", "Time a forwarded request waited for the serving slot that served it, from its arrival."),
		agent:        hist("request_agent_seconds", "Time from a request's forwarding to the agent that served it to the end of that agent's answer."),
		inFlightDesc: desc("requests_in_flight", "Requests this gateway has forwarded to agents that have not finished their answer."),
		queuedDesc:   desc("requests_queued", "Requests waiting in this gateway's queue for a serving slot."),
		slotsDesc:    desc("serving_slots", "Serving slots of the hive's routable agents, as this gateway sees them."),
	}
}

// Register adds the metrics to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.queueWait, m.agent, m} {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}

// Describe implements prometheus.Collector for the gauges read from the pool.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.inFlightDesc
	ch <- m.queuedDesc
	ch <- m.slotsDesc
}

// Collect implements prometheus.Collector: the pool's state now.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for key, l := range m.pool.Loads() {
		ns, name, _ := strings.Cut(key, "/")
		ch <- prometheus.MustNewConstMetric(m.inFlightDesc, prometheus.GaugeValue, float64(l.InFlight), ns, name)
		ch <- prometheus.MustNewConstMetric(m.queuedDesc, prometheus.GaugeValue, float64(l.Queued), ns, name)
		ch <- prometheus.MustNewConstMetric(m.slotsDesc, prometheus.GaugeValue, float64(l.Slots), ns, name)
	}
}

// observe counts a request that ended. hive is "" for a hive the gateway does not serve:
// its name comes from the caller's URL, and would let any caller add series.
func (m *Metrics) observe(hive string, st *requestStats, status int, end time.Time) {
	if m == nil {
		return
	}
	ns, name, _ := strings.Cut(hive, "/")
	if status == 0 {
		status = 499 // the caller went away before an answer, as proxies log it
	}
	code := string(rune('0'+status/100)) + "xx"
	m.requests.WithLabelValues(ns, name, code, st.reason).Inc()
	m.duration.WithLabelValues(ns, name).Observe(end.Sub(st.arrived).Seconds())
	if !st.forwarded.IsZero() {
		m.queueWait.WithLabelValues(ns, name).Observe(st.forwarded.Sub(st.arrived).Seconds())
		if !st.answered.IsZero() {
			m.agent.WithLabelValues(ns, name).Observe(st.answered.Sub(st.forwarded).Seconds())
		}
	}
}
