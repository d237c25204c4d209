package rpc

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the endpoint's Prometheus counters. Labels take values from
// fixed sets only (the local methods' names, routes, outcomes): a client's
// method names never become label values.
type metrics struct {
	calls   *prometheus.CounterVec // by route
	results *prometheus.CounterVec // by local method and outcome
}

// Routes of a call and outcomes of a local method, as metric labels.
const (
	routeLocal    = "local"
	routeUpstream = "upstream"
	routeRefused  = "refused" // invalid, or a wallet method not served

	outcomeOK      = "ok"
	outcomeDenied  = "denied"
	outcomePending = "pending"
	outcomeInvalid = "invalid"
	outcomeError   = "error"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "agent_rpc", Name: "calls_total",
			Help: "JSON-RPC calls by route: answered locally, forwarded upstream, or refused.",
		}, []string{"route"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "agent_rpc", Name: "wallet_results_total",
			Help: "Results of the wallet's own methods: ok, denied by policy, pending a guardian, invalid input, error.",
		}, []string{"method", "outcome"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.results} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("rpc: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func outcome(err error) string {
	var d *Denied
	var p *Pending
	switch {
	case err == nil:
		return outcomeOK
	case errors.As(err, &d):
		return outcomeDenied
	case errors.As(err, &p):
		return outcomePending
	case errors.Is(err, ErrInvalidParams):
		return outcomeInvalid
	}
	return outcomeError
}

// done counts the result of local method op and turns err into the error
// the client sees.
func (s *Server) done(op string, err error) error {
	s.metrics.results.WithLabelValues(op, outcome(err)).Inc()
	return rpcErr(op, err)
}
