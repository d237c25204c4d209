package policy

import (
	"fmt"
	"math/big"
	"sort"
	"time"

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
	if err != nil || w <= 0 || r.Max < 1 {
		return nil, fmt.Errorf("max %d window %q", r.Max, r.Window)
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

// historyLen bounds the spends kept per agent and asset for the outlier
// detector.
const historyLen = 64

// breakerState is what the circuit breaker remembers about one agent.
type breakerState struct {
	requests []time.Time
	denials  []time.Time
	newDests []time.Time
	known    map[common.Address]bool
	values   map[string][]*big.Int
}

type breaker struct {
	agents map[AgentID]*breakerState
}

func (b *breaker) state(a AgentID) *breakerState {
	s, ok := b.agents[a]
	if !ok {
		s = &breakerState{known: map[common.Address]bool{}, values: map[string][]*big.Int{}}
		b.agents[a] = s
	}
	return s
}

// hit appends now to times, drops times outside the window, and reports
// whether the count now exceeds the limit.
func hit(times []time.Time, r *rateCfg, now time.Time) ([]time.Time, bool) {
	times = append(times, now)
	cut := 0
	for cut < len(times) && times[cut].Before(now.Add(-r.window)) {
		cut++
	}
	times = times[cut:]
	return times, len(times) > r.max
}

// onRequest counts a request; it returns a reason when the rate trips.
func (b *breaker) onRequest(c breakerConfig, a AgentID, now time.Time) string {
	if c.requests == nil {
		return ""
	}
	s := b.state(a)
	var trip bool
	if s.requests, trip = hit(s.requests, c.requests, now); trip {
		return fmt.Sprintf("request rate: %d requests within %s exceeds %d", len(s.requests), c.requests.window, c.requests.max)
	}
	return ""
}

// onDenial counts a denial; it returns a reason when repeated denials trip.
func (b *breaker) onDenial(c breakerConfig, a AgentID, now time.Time) string {
	if c.denials == nil {
		return ""
	}
	s := b.state(a)
	var trip bool
	if s.denials, trip = hit(s.denials, c.denials, now); trip {
		return fmt.Sprintf("repeated denials: %d denials within %s exceeds %d", len(s.denials), c.denials.window, c.denials.max)
	}
	return ""
}

// checkAllowed runs the detectors that look at an allowed request before it
// is reserved: new destinations and value outliers. It changes nothing.
func (b *breaker) checkAllowed(c breakerConfig, p *Policy, req *Request, dests []common.Address, assets map[string]*big.Int) string {
	s := b.state(req.Agent)
	if c.newDests != nil {
		fresh := 0
		for _, d := range dests {
			if !s.known[d] {
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

// recordAllowed remembers the destinations and amounts of a reserved request.
func (b *breaker) recordAllowed(req *Request, dests []common.Address, assets map[string]*big.Int) {
	s := b.state(req.Agent)
	for _, d := range dests {
		if !s.known[d] {
			s.known[d] = true
			s.newDests = append(s.newDests, req.Time)
		}
	}
	for asset, amt := range assets {
		h := append(s.values[asset], new(big.Int).Set(amt))
		if len(h) > historyLen {
			h = h[len(h)-historyLen:]
		}
		s.values[asset] = h
	}
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
