package node

import "github.com/prometheus/client_golang/prometheus"

// metrics are the node's Prometheus metrics (served on the admin
// address's /metrics, with libp2p's and the p2p layer's).
type metrics struct {
	messages  *prometheus.CounterVec
	refusals  *prometheus.CounterVec
	decisions *prometheus.CounterVec
	sessions  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custos_node_control_messages_total", Help: "Control protocol messages served, by type.",
		}, []string{"type"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custos_node_refusals_total", Help: "Control protocol refusals, by message type and rule or check.",
		}, []string{"type", "rule"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custos_node_proposals_total", Help: "Signing proposals by outcome (join, deny).",
		}, []string{"outcome"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custos_node_sessions_total", Help: "Sessions ended, by kind and outcome.",
		}, []string{"kind", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "custos_node_control_seconds", Help: "Time to answer a control message, by type.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"type"}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.refusals, m.decisions, m.sessions, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
