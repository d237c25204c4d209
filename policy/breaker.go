package policy

import (
	"fmt"
	"math/big"
	"sort"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

type rateCfg struct {
	max    int
	window time.Duration
}

type outlierCfg struct {
	factor     *big.Int
	minHistory int
}

type breakerConfig struct {
	requests, denials, newDests *rateCfg
	outlier                     *outlierCfg
}

func compileRate(r *RateDoc) (*rateCfg, error) {
	if r == nil {
		return nil, nil
	}
	w, err := time.ParseDuration(string(r.Window))
	if err != nil || w <= 0 || w > MaxWindow || r.Max < 1 || r.Max > maxBreakerRate {
		return nil, fmt.Errorf("max %d window %q (max 1 to %d, window up to %s)", r.Max, r.Window, maxBreakerRate, MaxWindow)
	}
	return &rateCfg{max: r.Max, window: w}, nil
}

func compileBreaker(b *BreakerDoc) (breakerConfig, error) {
	var c breakerConfig
	if b == nil {
		return c, nil
	}
	var err error
	if c.requests, err = compileRate(b.Requests); err != nil {
		return c, fmt.Errorf("requests: %w", err)
	}
	if c.denials, err = compileRate(b.Denials); err != nil {
		return c, fmt.Errorf("denials: %w", err)
	}
	if c.newDests, err = compileRate(b.NewDestinations); err != nil {
		return c, fmt.Errorf("new_destinations: %w", err)
	}
	if o := b.ValueOutlier; o != nil {
		if o.Factor < 2 || o.MinHistory < 1 {
			return c, fmt.Errorf("value_outlier: factor %d must be at least 2, min_history %d at least 1", o.Factor, o.MinHistory)
		}
		c.outlier = &outlierCfg{factor: big.NewInt(o.Factor), minHistory: o.MinHistory}
	}
	return c, nil
}

// Bounds on the breaker's memory, so that what it remembers cannot grow
// without limit (with an agent registry in the policy, only registered
// agents reach the breaker at all).
const (
	// historyLen bounds the spends kept per agent and asset for the
	// outlier detector.
	historyLen = 64
	// maxBreakerTimes bounds the instants kept per detector and agent for
	// a detector that is off; one that is on keeps max+1 (max is at most
	// maxBreakerRate), all it needs to trip. Each list is also cut to its
	// detector's window.
	maxBreakerTimes = 1024
	// maxBreakerRate bounds a rate detector's max.
	maxBreakerRate = 10000
	// maxKnownDests bounds the destinations remembered per agent; the
	// least recently used is forgotten first (and counts as new again).
	maxKnownDests = 1024
	// maxBreakerAssets bounds the assets with a spend history per agent.
	maxBreakerAssets = 64
	// maxBreakerAgents bounds the agents remembered; the least recently
	// active is forgotten first.
	maxBreakerAgents = 4096
)

// breakerState is what the circuit breaker remembers about one agent.
type breakerState struct {
	requests []time.Time
	denials  []time.Time
	newDests []time.Time
	// known maps each destination the agent used to when it last did.
	known  map[common.Address]time.Time
	values map[string][]*big.Int
	// last is the agent's latest activity.
	last time.Time
}

type breaker struct {
	agents map[ids.AgentID]*breakerState
}

func (b *breaker) state(a ids.AgentID, now time.Time) *breakerState {
	s, ok := b.agents[a]
	if !ok {
		if len(b.agents) >= maxBreakerAgents {
			var oldest ids.AgentID
			first := true
			for id, st := range b.agents {
				if first || st.last.Before(b.agents[oldest].last) || (st.last.Equal(b.agents[oldest].last) && id < oldest) {
					oldest, first = id, false
				}
			}
			delete(b.agents, oldest)
		}
		s = &breakerState{known: map[common.Address]time.Time{}, values: map[string][]*big.Int{}}
		b.agents[a] = s
	}
	if now.After(s.last) {
		s.last = now
	}
	return s
}

// keep is how many instants a detector needs: max+1 to trip, or
// maxBreakerTimes while it is off.
func keep(r *rateCfg) int {
	if r == nil {
		return maxBreakerTimes
	}
	return r.max + 1
}

// within drops the instants of times before now-window (none for a zero
// window) and keeps at most n of the latest.
func within(times []time.Time, window time.Duration, now time.Time, n int) []time.Time {
	cut := 0
	if window > 0 {
		for cut < len(times) && times[cut].Before(now.Add(-window)) {
			cut++
		}
	}
	if len(times)-cut > n {
		cut = len(times) - n
	}
	if cut == 0 {
		return times
	}
	return append([]time.Time(nil), times[cut:]...)
}

// hit appends now to times, drops times outside the window, and reports
// whether the count now exceeds the limit.
func hit(times []time.Time, r *rateCfg, now time.Time) ([]time.Time, bool) {
	times = within(append(times, now), r.window, now, keep(r))
	return times, len(times) > r.max
}

// onRequest counts a request; it returns a reason when the rate trips.
func (b *breaker) onRequest(c breakerConfig, a ids.AgentID, now time.Time) string {
	if c.requests == nil {
		return ""
	}
	s := b.state(a, now)
	var trip bool
	if s.requests, trip = hit(s.requests, c.requests, now); trip {
		return fmt.Sprintf("request rate: %d requests within %s exceeds %d", len(s.requests), c.requests.window, c.requests.max)
	}
	return ""
}

// onDenial counts a denial; it returns a reason when repeated denials trip.
func (b *breaker) onDenial(c breakerConfig, a ids.AgentID, now time.Time) string {
	if c.denials == nil {
		return ""
	}
	s := b.state(a, now)
	var trip bool
	if s.denials, trip = hit(s.denials, c.denials, now); trip {
		return fmt.Sprintf("repeated denials: %d denials within %s exceeds %d", len(s.denials), c.denials.window, c.denials.max)
	}
	return ""
}

// checkAllowed runs the detectors that look at an allowed request before it
// is recorded: new destinations and value outliers. It changes nothing but
// the agent's last activity.
func (b *breaker) checkAllowed(c breakerConfig, p *Policy, req *Request, dests []common.Address, assets map[string]*big.Int) string {
	s := b.state(req.Agent, req.Time)
	if c.newDests != nil {
		fresh := 0
		for _, d := range dests {
			if _, ok := s.known[d]; !ok {
				fresh++
			}
		}
		if fresh > 0 {
			n := 0
			for _, t := range s.newDests {
				if !t.Before(req.Time.Add(-c.newDests.window)) {
					n++
				}
			}
			if n+fresh > c.newDests.max {
				return fmt.Sprintf("new destinations: %d new destinations within %s exceeds %d", n+fresh, c.newDests.window, c.newDests.max)
			}
		}
	}
	if c.outlier != nil {
		names := make([]string, 0, len(assets))
		for a := range assets {
			names = append(names, a)
		}
		sort.Strings(names)
		for _, asset := range names {
			amt := assets[asset]
			hist := s.values[asset]
			if len(hist) < c.outlier.minHistory {
				continue
			}
			med := median(hist)
			if lim := new(big.Int).Mul(med, c.outlier.factor); amt.Cmp(lim) > 0 {
				return fmt.Sprintf("value outlier: %s is more than %s times the agent's median %s", describeAsset(p, asset, amt), c.outlier.factor, describeAsset(p, asset, med))
			}
		}
	}
	return ""
}

// recordAllowed remembers the destinations and amounts of a reserved
// request. It reports whether anything the engine exports changed.
func (b *breaker) recordAllowed(c breakerConfig, req *Request, dests []common.Address, assets map[string]*big.Int) (changed bool) {
	s := b.state(req.Agent, req.Time)
	for _, d := range dests {
		if _, ok := s.known[d]; !ok {
			s.newDests = append(s.newDests, req.Time)
			changed = true
		}
		s.known[d] = req.Time
	}
	var window time.Duration
	if c.newDests != nil {
		window = c.newDests.window
	}
	s.newDests = within(s.newDests, window, req.Time, keep(c.newDests))
	for asset, amt := range assets {
		h := append(s.values[asset], new(big.Int).Set(amt))
		if len(h) > historyLen {
			h = h[len(h)-historyLen:]
		}
		s.values[asset] = h
		changed = true
	}
	s.capLocked()
	return changed
}

// capLocked forgets the least recently used destinations and the shortest
// asset histories beyond the bounds.
func (s *breakerState) capLocked() {
	for len(s.known) > maxKnownDests {
		var oldest common.Address
		first := true
		for d, t := range s.known {
			if first || t.Before(s.known[oldest]) || (t.Equal(s.known[oldest]) && d.Cmp(oldest) < 0) {
				oldest, first = d, false
			}
		}
		delete(s.known, oldest)
	}
	for len(s.values) > maxBreakerAssets {
		var drop string
		first := true
		for a, h := range s.values {
			if first || len(h) < len(s.values[drop]) || (len(h) == len(s.values[drop]) && a < drop) {
				drop, first = a, false
			}
		}
		delete(s.values, drop)
	}
}

// prune cuts every agent's instants to its detectors' windows at now, and
// forgets agents with no instants left and no activity within MaxWindow.
// It reports whether anything changed.
func (b *breaker) prune(c breakerConfig, now time.Time) (changed bool) {
	// A detector that is off keeps its instants for MaxWindow, the
	// longest window a later policy could turn it on with.
	win := func(r *rateCfg) time.Duration {
		if r == nil {
			return MaxWindow
		}
		return r.window
	}
	for a, s := range b.agents {
		before := len(s.requests) + len(s.denials) + len(s.newDests)
		s.requests = within(s.requests, win(c.requests), now, keep(c.requests))
		s.denials = within(s.denials, win(c.denials), now, keep(c.denials))
		s.newDests = within(s.newDests, win(c.newDests), now, keep(c.newDests))
		after := len(s.requests) + len(s.denials) + len(s.newDests)
		changed = changed || after != before
		if after == 0 && s.last.Before(now.Add(-MaxWindow)) {
			delete(b.agents, a)
			changed = true
		}
	}
	return changed
}

func median(v []*big.Int) *big.Int {
	s := append([]*big.Int{}, v...)
	sort.Slice(s, func(i, j int) bool { return s[i].Cmp(s[j]) < 0 })
	return s[len(s)/2]
}

func describeAsset(p *Policy, asset string, amt *big.Int) string {
	if asset == "native" {
		return formatEther(amt)
	}
	return p.formatToken(amt, common.HexToAddress(asset))
}
