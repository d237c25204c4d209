package coordinator

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/quorum"
	"github.com/custos-wallet/custos/tss"
)

// presignPools keeps, per key and hot-tier quorum, presignatures parked at
// every member of the quorum, so a hot request runs only the online phase
// of signing. The pools live at the members (in memory): the coordinator
// learns what is ready from the members' Status, which every attempt asks
// for anyway, and remembers only what it handed out, so no presignature is
// named twice. Nothing waits for a pool: an attempt finding none ready, or
// refused one by a member, runs the full protocol at once.
type presignPools struct {
	target   int
	interval time.Duration
	wake     chan struct{} // buffered: a signal to look at the pools

	mu sync.Mutex
	// guarded by mu
	taken   map[ids.SessionID]time.Time // named in a proposal: never offered again
	signing int                         // signing attempts and key operations running: the pools fill when 0
	calmed  time.Time                   // when signing last went to 0
}

// refillQuiet is how long signing must have been idle before a refill
// starts. A presign is about a second of CPU at every member of the
// quorum; started the moment one request ends, it would compete with the
// next one of a burst (an agent's transactions arrive one after another,
// each waiting for the last).
const refillQuiet = 250 * time.Millisecond

func newPresignPools(cfg PresignConf) *presignPools {
	return &presignPools{target: cfg.target(), interval: cfg.Interval, wake: make(chan struct{}, 1),
		taken: map[ids.SessionID]time.Time{}}
}

func (p *presignPools) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// busy marks a signing attempt or a key operation running until the
// returned func is called.
func (p *presignPools) busy() func() {
	p.mu.Lock()
	p.signing++
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		p.signing--
		idle := p.signing == 0
		if idle {
			p.calmed = time.Now()
		}
		p.mu.Unlock()
		if idle {
			time.AfterFunc(refillQuiet, p.poke)
		}
	}
}

// idle says whether no signing attempt or key operation runs and none
// ended within refillQuiet; one that ended sooner pokes the pools when its
// quiet time is over.
func (p *presignPools) idle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.signing == 0 && time.Since(p.calmed) >= refillQuiet
}

// ready lists the presignatures of key for quorum q (root path) that
// every member of q reports parked and none was handed out, oldest first.
func (p *presignPools) ready(statuses map[ids.MemberID]*control.Status, key ids.KeyID, q []ids.MemberID) []control.Presignature {
	count := map[ids.SessionID]int{}
	var first []control.Presignature
	for _, m := range q {
		st := statuses[m]
		if st == nil {
			return nil
		}
		for _, ps := range st.Presignatures {
			if ps.Key != key || len(ps.Path) > 0 || !sameSet(ps.Quorum, q) {
				continue
			}
			if count[ps.ID] == 0 && m == q[0] {
				first = append(first, ps)
			}
			count[ps.ID]++
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []control.Presignature
	for _, ps := range first {
		if count[ps.ID] == len(q) && p.taken[ps.ID].IsZero() {
			out = append(out, ps)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// take hands out the oldest ready presignature, or the zero id when none
// is ready, and says how many stay ready.
func (p *presignPools) take(statuses map[ids.MemberID]*control.Status, key ids.KeyID, q []ids.MemberID, now time.Time) (ids.SessionID, int) {
	if p.target == 0 {
		return ids.SessionID{}, 0
	}
	r := p.ready(statuses, key, q)
	if len(r) == 0 {
		return ids.SessionID{}, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.taken[r[0].ID] = now
	// Forget what no member can hold any longer (the engines bound a
	// presignature's age well below this).
	for id, at := range p.taken {
		if now.Sub(at) > 24*time.Hour {
			delete(p.taken, id)
		}
	}
	return r[0].ID, len(r) - 1
}

// release offers a presignature handed out again: its proposal was
// refused or aborted before any member started, so every member still
// holds it parked.
func (p *presignPools) release(id ids.SessionID) {
	if id.IsZero() {
		return
	}
	p.mu.Lock()
	delete(p.taken, id)
	p.mu.Unlock()
}

func sameSet(a, b []ids.MemberID) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// presignable reports whether a request of tier spec at path may use a
// presignature: the pools serve the hot tier's quorums at the root path.
func presignable(p *policy.Policy, spec policy.TierSpec, path []uint32) bool {
	if p == nil || len(path) > 0 {
		return false
	}
	hot, ok := quorum.Hot(p.Tiers())
	return ok && hot.Name == spec.Name
}

// runPresignPools fills the pools while the coordinator is idle: at once,
// refillQuiet after every burst of signing, and every interval.
func (c *Coordinator) runPresignPools(ctx context.Context) {
	p := c.presign
	if p.target == 0 {
		return
	}
	t := time.NewTicker(p.interval)
	defer t.Stop()
	p.poke()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.wake:
		}
		c.refillPools(ctx)
	}
}

// refillPools brings every pool up to its target, one presignature at a
// time, for as long as no signing attempt or key operation runs.
func (c *Coordinator) refillPools(ctx context.Context) {
	p := c.presign
	pol := c.pol.current()
	if pol == nil {
		return
	}
	hot, ok := quorum.Hot(pol.Tiers())
	if !ok {
		return
	}
	keys, err := c.keys(ctx)
	if err != nil {
		c.log.Warn("presignature pools: list keys", "err", err)
		return
	}
	for _, k := range keys {
		if ctx.Err() != nil || !p.idle() {
			return
		}
		ki, err := c.keyInfo(ctx, k.ID)
		if err != nil || quorum.CanGrant(ki.Committee, hot) != nil {
			continue
		}
		for ctx.Err() == nil && p.idle() {
			statuses := c.probe(ctx, ki.Committee.IDs())
			q, err := quorum.Select(ki.Committee, hot, func(m ids.MemberID) bool { return statuses[m] != nil }, nil)
			if err != nil {
				break
			}
			ready := len(p.ready(statuses, ki.ID(), q))
			c.metrics.presignReady.WithLabelValues(ki.ID().String()).Set(float64(ready))
			if ready >= p.target {
				break
			}
			if err := c.presignOnce(ctx, ki, q); err != nil {
				c.log.Warn("presignature pool: refill failed", "key", ki.ID(), "quorum", joinIDs(q), "err", err)
				c.metrics.presignBurned.WithLabelValues("refill").Inc()
				break
			}
		}
	}
}

// presignOnce runs one presign session with quorum q: propose it to every
// member, start it once all joined, and wait until every member parked it.
func (c *Coordinator) presignOnce(ctx context.Context, ki tss.KeyInfo, q []ids.MemberID) error {
	began := time.Now()
	sess := ids.NewSessionID()
	deadline := c.now().Add(c.cfg.Timeouts.Propose)
	pctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose)
	answers := c.callAll(pctx, q, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypePresign, Presign: &control.Presign{Session: sess, Key: ki.ID(), Quorum: q, Deadline: deadline}}
	})
	cancel()
	var joined []ids.MemberID
	var why []string
	for _, a := range answers {
		switch {
		case a.err != nil:
			why = append(why, a.err.Error())
		case a.reply.Refusal != nil:
			why = append(why, a.reply.Refusal.Error())
		case a.reply.Join != nil:
			joined = append(joined, a.member)
		default:
			why = append(why, fmt.Sprintf("%s answered the presign proposal with neither join nor refusal", a.member))
		}
	}
	if len(why) > 0 {
		c.abort(ctx, sess, joined)
		return fmt.Errorf("presign %s: %s", sess, strings.Join(why, "; "))
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose)
	c.callAll(sctx, q, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sess}}
	})
	cancel()
	end := time.Now().Add(c.cfg.Timeouts.Session)
	waiting := slices.Clone(q)
	for len(waiting) > 0 {
		if ctx.Err() != nil || time.Now().After(end) {
			return fmt.Errorf("presign %s: no outcome from %s", sess, joinIDs(waiting))
		}
		wait := min(time.Until(end), control.MaxResultWait)
		rctx, cancel := context.WithTimeout(ctx, wait+c.cfg.Timeouts.Propose)
		answers := c.callAll(rctx, waiting, func(ids.MemberID) *control.Message {
			return &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sess, Wait: control.Duration(wait)}}
		})
		cancel()
		waiting = waiting[:0]
		for _, a := range answers {
			switch {
			case a.err != nil || a.reply.Result == nil:
				waiting = append(waiting, a.member)
			case a.reply.Result.State == control.StateDone:
			case a.reply.Result.State == control.StateFailed || a.reply.Result.State == control.StateUnknown:
				return fmt.Errorf("presign %s at %s: %s %s", sess, a.member, a.reply.Result.State, a.reply.Result.Error)
			default:
				waiting = append(waiting, a.member)
			}
		}
	}
	c.metrics.presignRefill.Observe(time.Since(began).Seconds())
	return nil
}
