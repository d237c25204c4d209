package policy

import (
	"math/big"
	"sort"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// State is the engine's state besides the policy and the ledger: freezes,
// what unfreezes have been used, revoked grants and the circuit breaker's
// memory. It is a plain value that a node persists (after every change
// that Freeze, Unfreeze, Revoke and Authorize make) and hands back to
// Restore after a restart, so that a freeze, a revocation or a breaker trip
// survives it.
type State struct {
	Freezes []FreezeRecord
	// Lifted is the issued time of the last unfreeze of each target.
	Lifted []LiftRecord
	// UsedUnfreezes are the EIP-712 hashes of accepted unfreezes.
	UsedUnfreezes []common.Hash
	Revoked       []Revocation
	Breaker       []BreakerHistory
}

// LiftRecord is when a target was last unfrozen.
type LiftRecord struct {
	Target Target
	Issued time.Time
}

// BreakerHistory is what the circuit breaker remembers about one agent.
type BreakerHistory struct {
	Agent    AgentID
	Requests []time.Time
	Denials  []time.Time
	NewDests []time.Time
	// Known are the destinations the agent has used.
	Known []common.Address
	// Values are the agent's recent allowed spends per asset ("native" or
	// a token address), oldest first.
	Values map[string][]*big.Int
}

// Export returns a copy of the engine's state, for persistence.
func (e *Engine) Export() State {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var s State
	for _, r := range e.freezes {
		s.Freezes = append(s.Freezes, r)
	}
	sort.Slice(s.Freezes, func(i, j int) bool { return s.Freezes[i].Target < s.Freezes[j].Target })
	for t, at := range e.lifted {
		s.Lifted = append(s.Lifted, LiftRecord{Target: t, Issued: at})
	}
	sort.Slice(s.Lifted, func(i, j int) bool { return s.Lifted[i].Target < s.Lifted[j].Target })
	for h := range e.usedUnfreezes {
		s.UsedUnfreezes = append(s.UsedUnfreezes, h)
	}
	sort.Slice(s.UsedUnfreezes, func(i, j int) bool { return s.UsedUnfreezes[i].Cmp(s.UsedUnfreezes[j]) < 0 })
	for _, r := range e.revoked {
		s.Revoked = append(s.Revoked, r)
	}
	sort.Slice(s.Revoked, func(i, j int) bool { return s.Revoked[i].GrantID < s.Revoked[j].GrantID })
	for a, b := range e.breaker.agents {
		h := BreakerHistory{
			Agent:    a,
			Requests: append([]time.Time(nil), b.requests...),
			Denials:  append([]time.Time(nil), b.denials...),
			NewDests: append([]time.Time(nil), b.newDests...),
			Values:   map[string][]*big.Int{},
		}
		for d := range b.known {
			h.Known = append(h.Known, d)
		}
		sort.Slice(h.Known, func(i, j int) bool { return h.Known[i].Cmp(h.Known[j]) < 0 })
		for asset, vs := range b.values {
			for _, v := range vs {
				h.Values[asset] = append(h.Values[asset], new(big.Int).Set(v))
			}
		}
		s.Breaker = append(s.Breaker, h)
	}
	sort.Slice(s.Breaker, func(i, j int) bool { return s.Breaker[i].Agent < s.Breaker[j].Agent })
	return s
}

// Restore replaces the engine's state with s, as exported before a
// restart. Freezes, breaker trips included, are re-applied as they were,
// without signatures: s comes from the node's own storage, and every
// freeze in it was checked when it was first applied.
func (e *Engine) Restore(s State) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.freezes = map[Target]FreezeRecord{}
	for _, r := range s.Freezes {
		e.setFreezeLocked(r)
	}
	e.lifted = map[Target]time.Time{}
	for _, l := range s.Lifted {
		if cur, ok := e.lifted[l.Target]; !ok || l.Issued.After(cur) {
			e.lifted[l.Target] = l.Issued
		}
	}
	e.usedUnfreezes = map[common.Hash]bool{}
	for _, h := range s.UsedUnfreezes {
		e.usedUnfreezes[h] = true
	}
	e.revoked = map[string]Revocation{}
	for _, r := range s.Revoked {
		if _, ok := e.revoked[r.GrantID]; !ok {
			e.revoked[r.GrantID] = r
		}
	}
	e.breaker = breaker{agents: map[AgentID]*breakerState{}}
	for _, h := range s.Breaker {
		b := e.breaker.state(h.Agent)
		b.requests = append(b.requests, h.Requests...)
		b.denials = append(b.denials, h.Denials...)
		b.newDests = append(b.newDests, h.NewDests...)
		for _, d := range h.Known {
			b.known[d] = true
		}
		for asset, vs := range h.Values {
			for _, v := range vs {
				b.values[asset] = append(b.values[asset], new(big.Int).Set(v))
			}
		}
	}
}
