package policy

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// MaxClockSkew bounds how far in the future (relative to the time the
// caller passes in) a guardian's freeze or unfreeze may be issued. A
// future-dated message would otherwise stay valid for as long as its date.
const MaxClockSkew = 5 * time.Minute

// FreezeRetention is how long the engine remembers which freezes and
// unfreezes it applied. Freezes and unfreezes issued longer ago than this
// (relative to the node's time) are refused: their replays could no longer
// be recognised.
const FreezeRetention = 30 * 24 * time.Hour

// FreezeRecord is why and since when a target is frozen.
type FreezeRecord struct {
	// ID identifies this freeze: the EIP-712 hash of a guardian's Freeze
	// message, or BreakerFreezeID for a circuit-breaker trip. An Unfreeze
	// names the ID of the freeze it lifts.
	ID     common.Hash
	Target Target
	Reason string
	// By is the guardian who froze, or the zero address for the breaker.
	By common.Address
	// At is when the freeze took effect: the later of the freeze's issued
	// time and the node's time when it received it.
	At time.Time
}

// BreakerFreezeID is the ID of a circuit-breaker freeze of target at at
// for reason.
func BreakerFreezeID(target Target, at time.Time, reason string) common.Hash {
	return crypto.Keccak256Hash([]byte("custos-breaker-freeze\x00" + string(target) + "\x00" + at.UTC().Format(time.RFC3339Nano) + "\x00" + reason))
}

// FreezeLogEntry is the engine's memory of one freeze it applied: a freeze
// whose ID is logged is never applied again (a replay), and a closed one
// (lifted by an unfreeze, or replaced by a later freeze of its target) is
// not brought back by Restore.
type FreezeLogEntry struct {
	ID     common.Hash
	Target Target
	// Time is the freeze's issued time (the trip time for the breaker);
	// entries older than FreezeRetention are forgotten.
	Time   time.Time
	Closed bool
}

// UsedUnfreeze is an accepted unfreeze, remembered until FreezeRetention
// after its issued time.
type UsedUnfreeze struct {
	Hash   common.Hash
	Issued time.Time
}

func (e *Engine) frozenLocked(req *Request) (FreezeRecord, bool) {
	for _, t := range []Target{TargetAll, AgentTarget(req.Agent), KeyTarget(req.Key)} {
		if r, ok := e.freezes[t]; ok {
			return r, true
		}
	}
	return FreezeRecord{}, false
}

func (p *Policy) describeFreeze(r FreezeRecord) string {
	by := "the circuit breaker"
	if r.By != (common.Address{}) {
		by = "guardian " + p.guardians[r.By]
		if p.guardians[r.By] == "" {
			by = "guardian " + shortAddr(r.By)
		}
	}
	return fmt.Sprintf("%s frozen by %s at %s: %s", r.Target, by, r.At.UTC().Format(time.RFC3339), r.Reason)
}

func (e *Engine) freezeAgentLocked(req *Request, why string) {
	t, reason := AgentTarget(req.Agent), "circuit breaker: "+why
	e.setFreezeLocked(FreezeRecord{ID: BreakerFreezeID(t, req.Time, reason), Target: t, Reason: reason, At: req.Time}, req.Time)
}

// setFreezeLocked makes r the current freeze of its target. A freeze it
// replaces is closed: an unfreeze must name the current one.
func (e *Engine) setFreezeLocked(r FreezeRecord, logTime time.Time) {
	if cur, ok := e.freezes[r.Target]; ok && cur.ID != r.ID {
		e.closeFreezeLocked(cur)
	}
	e.freezes[r.Target] = r
	if _, ok := e.freezeLog[r.ID]; !ok {
		e.freezeLog[r.ID] = FreezeLogEntry{ID: r.ID, Target: r.Target, Time: logTime}
	}
}

func (e *Engine) closeFreezeLocked(r FreezeRecord) {
	l, ok := e.freezeLog[r.ID]
	if !ok {
		l = FreezeLogEntry{ID: r.ID, Target: r.Target, Time: r.At}
	}
	l.Closed = true
	e.freezeLog[r.ID] = l
}

// pruneLocked forgets closed freezes and used unfreezes issued more than
// FreezeRetention before now: messages that old are refused anyway.
func (e *Engine) pruneLocked(now time.Time) (changed bool) {
	cut := now.Add(-FreezeRetention)
	for id, l := range e.freezeLog {
		if l.Closed && l.Time.Before(cut) {
			delete(e.freezeLog, id)
			changed = true
		}
	}
	for h, t := range e.usedUnfreezes {
		if t.Before(cut) {
			delete(e.usedUnfreezes, h)
			changed = true
		}
	}
	return changed
}

func (e *Engine) tripLocked(p *Policy, req *Request, why string) Decision {
	e.freezeAgentLocked(req, why)
	e.seq++
	return deny(p, RuleBreaker, "circuit breaker tripped: "+why+"; agent "+string(req.Agent)+" frozen")
}

// Freeze applies a freeze signed by any one guardian of the current
// policy. It takes effect before the next evaluation and becomes the
// current freeze of its target (the one an unfreeze must name). now is the
// node's own clock: a freeze issued more than MaxClockSkew after it, or
// more than FreezeRetention before it, is refused. Replays are recognised
// by the freeze's EIP-712 hash, not by time: a freeze already applied is
// refused (or, if it is still the current freeze of its target, ignored),
// and any other freeze applies, whatever unfreezes came before it.
func (e *Engine) Freeze(f Freeze, sig []byte, now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	td := f.TypedData(e.policy.wallet)
	signers, err := e.policy.guardianSigners(td, [][]byte{sig})
	if err != nil {
		return errorf("freeze %s: %w", f.Target, err)
	}
	if err := checkTarget(f.Target); err != nil {
		return err
	}
	issued := signedTime(f.Issued)
	if issued.After(now.Add(MaxClockSkew)) {
		return errorf("freeze %s: issued %s, in the future (now %s)", f.Target, fmtTime(issued), fmtTime(now))
	}
	if issued.Before(now.Add(-FreezeRetention)) {
		return errorf("freeze %s: issued %s, more than %s ago", f.Target, fmtTime(issued), FreezeRetention)
	}
	id, err := typedHash(td)
	if err != nil {
		return errorf("freeze %s: %w", f.Target, err)
	}
	if _, ok := e.freezeLog[id]; ok {
		if cur, ok := e.freezes[f.Target]; ok && cur.ID == id {
			return nil // already the current freeze
		}
		return errorf("freeze %s: freeze %s was already applied (a replay)", f.Target, shortHash(id))
	}
	at := issued
	if now.After(at) {
		at = now
	}
	e.pruneLocked(now)
	e.setFreezeLocked(FreezeRecord{ID: id, Target: f.Target, Reason: f.Reason, By: signers[0], At: at}, issued)
	e.seq++
	return nil
}

// Unfreeze lifts a freeze when a quorum of the current guardians signed
// it. The unfreeze names the ID of the freeze it lifts, and lifts it only
// if that is the current freeze of its target: an unfreeze signed before a
// newer freeze cannot lift the newer one. It must be issued no more than
// MaxClockSkew after now and no more than FreezeRetention before it, and
// each signed unfreeze is accepted once.
func (e *Engine) Unfreeze(u Unfreeze, sigs [][]byte, now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.policy
	td := u.TypedData(p.wallet)
	signers, err := p.guardianSigners(td, sigs)
	if err != nil {
		return errorf("unfreeze %s: %w", u.Target, err)
	}
	if len(signers) < p.doc.Quorum {
		return errorf("unfreeze %s: %w: %d of %d", u.Target, ErrQuorum, len(signers), p.doc.Quorum)
	}
	issued := signedTime(u.Issued)
	if issued.After(now.Add(MaxClockSkew)) {
		return errorf("unfreeze %s: issued %s, in the future (now %s)", u.Target, fmtTime(issued), fmtTime(now))
	}
	if issued.Before(now.Add(-FreezeRetention)) {
		return errorf("unfreeze %s: issued %s, more than %s ago", u.Target, fmtTime(issued), FreezeRetention)
	}
	hash, err := typedHash(td)
	if err != nil {
		return errorf("unfreeze %s: %w", u.Target, err)
	}
	if _, used := e.usedUnfreezes[hash]; used {
		return errorf("unfreeze %s: this unfreeze was already used", u.Target)
	}
	r, ok := e.freezes[u.Target]
	if !ok {
		return errorf("unfreeze %s: not frozen", u.Target)
	}
	if r.ID != u.Freeze {
		return errorf("unfreeze %s: it lifts freeze %s, but the current freeze is %s (%s)", u.Target, shortHash(u.Freeze), shortHash(r.ID), p.describeFreeze(r))
	}
	e.pruneLocked(now)
	e.usedUnfreezes[hash] = issued
	e.closeFreezeLocked(r)
	delete(e.freezes, u.Target)
	e.seq++
	return nil
}

func typedHash(td apitypes.TypedData) (common.Hash, error) {
	h, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		return common.Hash{}, err
	}
	return common.BytesToHash(h), nil
}

func shortHash(h common.Hash) string { return h.Hex()[:10] }

// signedTime is t as a guardian signs it: whole Unix seconds. Anything
// finer is not covered by the signature and must not count.
func signedTime(t time.Time) time.Time { return time.Unix(t.Unix(), 0).UTC() }

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func checkTarget(t Target) error {
	s := string(t)
	switch {
	case t == TargetAll, strings.HasPrefix(s, "agent:") && len(s) > len("agent:"):
		return nil
	case strings.HasPrefix(s, "key:") && validKeyTarget(t):
		return nil
	}
	return errorf("bad freeze target %q (want all, agent:<id> or key:<checksummed address>)", s)
}

// validKeyTarget reports whether t is a key target in its one text form.
func validKeyTarget(t Target) bool {
	k, err := ids.ParseKeyID(string(t))
	return err == nil && KeyTarget(k.Address()) == t
}

// Freezes lists the active freezes, sorted by target.
func (e *Engine) Freezes() []FreezeRecord {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]FreezeRecord, 0, len(e.freezes))
	for _, r := range e.freezes {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out
}
