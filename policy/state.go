package policy

import (
	"math/big"
	"sort"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

// State is the engine's state besides the policy and the ledger: freezes,
// the freezes and unfreezes already applied, revoked grants and the
// circuit breaker's memory. It is a plain value that a node persists (after
// every change that Freeze, Unfreeze, Revoke and Authorize make) and hands
// back to Restore after a restart, so that a freeze, a revocation or a
// breaker trip survives it.
type State struct {
	// Seq grows with every change to the engine's state (and with every
	// Restore). A node persisting snapshots from concurrent Exports keeps
	// the one with the highest Seq and must not overwrite a stored
	// snapshot with a lower one.
	Seq     uint64
	Freezes []FreezeRecord
	// FreezeLog lists the freezes applied within FreezeRetention, closed
	// (lifted or replaced) or not.
	FreezeLog []FreezeLogEntry
	// UsedUnfreezes are the accepted unfreezes within FreezeRetention.
	UsedUnfreezes []UsedUnfreeze
	Revoked       []Revocation
	Breaker       []BreakerHistory
}

// BreakerHistory is what the circuit breaker remembers about one agent.
type BreakerHistory struct {
	Agent    ids.AgentID
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
	s := State{Seq: e.seq}
	for _, r := range e.freezes {
		s.Freezes = append(s.Freezes, r)
	}
	sort.Slice(s.Freezes, func(i, j int) bool { return s.Freezes[i].Target < s.Freezes[j].Target })
	for _, l := range e.freezeLog {
		s.FreezeLog = append(s.FreezeLog, l)
	}
	sort.Slice(s.FreezeLog, func(i, j int) bool { return s.FreezeLog[i].ID.Cmp(s.FreezeLog[j].ID) < 0 })
	for h, t := range e.usedUnfreezes {
		s.UsedUnfreezes = append(s.UsedUnfreezes, UsedUnfreeze{Hash: h, Issued: t})
	}
	sort.Slice(s.UsedUnfreezes, func(i, j int) bool { return s.UsedUnfreezes[i].Hash.Cmp(s.UsedUnfreezes[j].Hash) < 0 })
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

// Restore merges s, as exported before a restart, into the engine's state.
// It never undoes what the engine already holds, so a freeze or revocation
// applied before Restore (or a snapshot older than the engine's state)
// loses nothing:
//   - the freeze logs and used unfreezes are united, a freeze closed in
//     either is closed;
//   - freezes are united, dropping closed ones; of two different current
//     freezes of one target the later (by At) stays and the other is
//     closed;
//   - revocations are united;
//   - the breaker's timestamps are merged (an instant recorded k times in
//     one and m times in the other is kept max(k, m) times, so restoring
//     the same snapshot twice counts nothing twice), known destinations
//     united, and of the two spend histories of an asset the longer kept.
//
// Freezes, breaker trips included, are re-applied without signatures: s
// comes from the node's own storage, and every freeze in it was checked
// when it was first applied. The engine's Seq becomes one more than the
// larger of its own and s.Seq.
func (e *Engine) Restore(s State) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range s.FreezeLog {
		cur, ok := e.freezeLog[l.ID]
		if !ok {
			e.freezeLog[l.ID] = l
			continue
		}
		cur.Closed = cur.Closed || l.Closed
		e.freezeLog[l.ID] = cur
	}
	for _, u := range s.UsedUnfreezes {
		if _, ok := e.usedUnfreezes[u.Hash]; !ok {
			e.usedUnfreezes[u.Hash] = u.Issued
		}
	}
	for _, r := range s.Freezes {
		if e.freezeLog[r.ID].Closed {
			continue
		}
		cur, ok := e.freezes[r.Target]
		switch {
		case !ok:
			e.freezes[r.Target] = r
		case cur.ID == r.ID:
		case r.At.After(cur.At) || (r.At.Equal(cur.At) && r.ID.Cmp(cur.ID) > 0):
			e.closeFreezeLocked(cur)
			e.freezes[r.Target] = r
		default:
			e.closeFreezeLocked(r)
		}
		if _, ok := e.freezeLog[r.ID]; !ok {
			e.freezeLog[r.ID] = FreezeLogEntry{ID: r.ID, Target: r.Target, Time: r.At, Closed: e.freezes[r.Target].ID != r.ID}
		}
	}
	// A freeze applied before Restore that the snapshot knows was lifted
	// is a replay the engine could not recognise yet.
	for t, r := range e.freezes {
		if e.freezeLog[r.ID].Closed {
			delete(e.freezes, t)
		}
	}
	for _, r := range s.Revoked {
		if _, ok := e.revoked[r.GrantID]; !ok {
			e.revoked[r.GrantID] = r
		}
	}
	for _, h := range s.Breaker {
		b := e.breaker.state(h.Agent, latest(h))
		b.requests = mergeTimes(b.requests, h.Requests)
		b.denials = mergeTimes(b.denials, h.Denials)
		b.newDests = mergeTimes(b.newDests, h.NewDests)
		for _, d := range h.Known {
			if _, ok := b.known[d]; !ok {
				b.known[d] = time.Time{} // used at some time before the snapshot
			}
		}
		for asset, vs := range h.Values {
			if len(vs) <= len(b.values[asset]) {
				continue
			}
			b.values[asset] = nil
			for _, v := range vs[max(0, len(vs)-historyLen):] {
				b.values[asset] = append(b.values[asset], new(big.Int).Set(v))
			}
		}
		c := e.policy.breaker
		b.requests = within(b.requests, 0, time.Time{}, max(keep(c.requests), maxBreakerTimes))
		b.denials = within(b.denials, 0, time.Time{}, max(keep(c.denials), maxBreakerTimes))
		b.newDests = within(b.newDests, 0, time.Time{}, max(keep(c.newDests), maxBreakerTimes))
		b.capLocked()
	}
	e.seq = max(e.seq, s.Seq) + 1
}

// latest is the last instant a breaker history records.
func latest(h BreakerHistory) time.Time {
	var t time.Time
	for _, l := range [][]time.Time{h.Requests, h.Denials, h.NewDests} {
		for _, x := range l {
			if x.After(t) {
				t = x
			}
		}
	}
	return t
}

// mergeTimes merges two sorted lists of instants, keeping each instant as
// many times as the list that has it most often.
func mergeTimes(a, b []time.Time) []time.Time {
	a, b = sortedTimes(a), sortedTimes(b)
	out := make([]time.Time, 0, max(len(a), len(b)))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i].Before(b[j])):
			out = append(out, a[i])
			i++
		case i == len(a) || b[j].Before(a[i]):
			out = append(out, b[j])
			j++
		default: // equal: one of each
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

func sortedTimes(t []time.Time) []time.Time {
	t = append([]time.Time(nil), t...)
	sort.Slice(t, func(i, j int) bool { return t[i].Before(t[j]) })
	return t
}
