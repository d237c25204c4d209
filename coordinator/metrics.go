package coordinator

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	requests *prometheus.CounterVec // by state reached
	sessions *prometheus.CounterVec // by outcome
	calls    *prometheus.CounterVec // control calls by type and outcome
	http     *prometheus.CounterVec // REST answers by route and status class

	presignReady  *prometheus.GaugeVec   // presignatures ready per key (hot quorum)
	presignUsed   prometheus.Counter     // signatures made from a presignature
	presignBurned *prometheus.CounterVec // presignatures lost, by why
	presignRefill prometheus.Histogram   // seconds to make one presignature
	gatherer      prometheus.Gatherer
}

func newMetrics(reg prometheus.Registerer, g prometheus.Gatherer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "custos", Subsystem: "coordinator",
			Name: "requests_total", Help: "Signing requests by the state they reached."}, []string{"state"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "custos", Subsystem: "coordinator",
			Name: "sessions_total", Help: "Signing sessions by outcome."}, []string{"outcome"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "custos", Subsystem: "coordinator",
			Name: "control_calls_total", Help: "Control protocol calls to members by type and outcome."}, []string{"type", "outcome"}),
		http: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "custos", Subsystem: "coordinator",
			Name: "http_requests_total", Help: "REST API requests by route and status."}, []string{"route", "status"}),
		presignReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "custos", Subsystem: "coordinator",
			Name: "presignatures_ready", Help: "Presignatures parked at every member of a key's hot-tier quorum and not handed out, as last seen."}, []string{"key"}),
		presignUsed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "custos", Subsystem: "coordinator",
			Name: "presignatures_used_total", Help: "Signatures made from a presignature."}),
		presignBurned: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "custos", Subsystem: "coordinator",
			Name: "presignatures_burned_total", Help: "Presignatures handed out or made that gave no signature, by why (failed: the online phase failed; refused: a member did not hold it; refill: the presign session failed)."}, []string{"reason"}),
		presignRefill: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "custos", Subsystem: "coordinator",
			Name: "presign_refill_seconds", Help: "Time to make one presignature at every member of a quorum.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 10)}),
		gatherer: g,
	}
	for _, c := range []prometheus.Collector{m.requests, m.sessions, m.calls, m.http, m.presignReady, m.presignUsed, m.presignBurned, m.presignRefill} {
		_ = reg.Register(c)
	}
	return m
}

// handler serves /metrics, or answers 404 when the registerer given is
// not one this coordinator can gather from.
func (m *metrics) handler() http.Handler {
	if m.gatherer == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}
