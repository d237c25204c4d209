package tss

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-wallet/custos/ids"
)

// The confirmation round ends a reshare. tss-lib's reshare and the proof
// signature can each finish at some members and not at others (a member
// that withholds its last message from one peer strands that peer alone),
// so no member can tell from its own run that the new key is held by the
// whole new committee. Each new member therefore broadcasts whether it
// holds its share and the checked proof; a reshare is complete only when
// every new member has confirmed, and until then no old share may be
// deleted.

const (
	confirmMagic     = "CTR1"
	confirmHeader    = len(confirmMagic) + len(ids.SessionID{}) + 32 + 1
	maxConfirmReason = 256
)

type confirmation struct {
	Session ids.SessionID // the reshare's
	Digest  [32]byte      // ReshareProofDigest of the new key: what is confirmed
	OK      bool
	Proof   Signature // when OK: the proof, which every receiver checks
	Reason  string    // when not OK: why, for the logs
}

func (c confirmation) encode() []byte {
	b := make([]byte, 0, confirmHeader+len(Signature{})+len(c.Reason))
	b = append(b, confirmMagic...)
	b = append(b, c.Session[:]...)
	b = append(b, c.Digest[:]...)
	if c.OK {
		b = append(b, 1)
		return append(b, c.Proof[:]...)
	}
	b = append(b, 0)
	return append(b, c.Reason[:min(len(c.Reason), maxConfirmReason)]...)
}

func decodeConfirmation(b []byte) (confirmation, error) {
	var c confirmation
	if len(b) < confirmHeader || string(b[:4]) != confirmMagic {
		return c, fmt.Errorf("%w: not a reshare confirmation", errEnvelope)
	}
	b = b[4:]
	copy(c.Session[:], b)
	b = b[len(c.Session):]
	copy(c.Digest[:], b)
	b = b[len(c.Digest):]
	switch status, rest := b[0], b[1:]; {
	case status == 1 && len(rest) == len(c.Proof):
		c.OK = true
		copy(c.Proof[:], rest)
	case status == 0 && len(rest) <= maxConfirmReason:
		c.Reason = string(rest)
	default:
		return c, fmt.Errorf("%w: malformed reshare confirmation", errEnvelope)
	}
	return c, nil
}

// confirmRound is the pure core of the confirmation round at one node:
// it takes the new members' confirmations and says who confirmed.
type confirmRound struct {
	session ids.SessionID
	key     KeyInfo // the new key
	digest  [32]byte
	self    ids.MemberID
	maxIdle int

	got      map[ids.MemberID][]byte // payload from each new member
	verdicts map[ids.MemberID]error  // nil: confirmed
	culprits []ids.MemberID          // sent an invalid confirmation
	proof    *Signature              // the first valid proof seen
	idle     int
	timedOut bool
}

func newConfirmRound(session ids.SessionID, key KeyInfo, self ids.MemberID, maxIdle int) *confirmRound {
	return &confirmRound{session: session, key: key, digest: ReshareProofDigest(session, key), self: self,
		maxIdle: max(maxIdle, 1), got: map[ids.MemberID][]byte{}, verdicts: map[ids.MemberID]error{}}
}

// own records this node's own confirmation (or refusal).
func (r *confirmRound) own(c confirmation) {
	r.got[r.self] = c.encode()
	if c.OK {
		r.verdicts[r.self] = nil
		r.proof = &c.Proof
	} else {
		r.verdicts[r.self] = fmt.Errorf("did not finish: %q", c.Reason)
	}
}

// step takes one message; done reports whether every new member is heard.
func (r *confirmRound) step(in Incoming) {
	from := in.From
	if !r.key.Committee.Has(from) || from == r.self {
		return // old-only members confirm nothing; the transport admits only members
	}
	if prev, ok := r.got[from]; ok {
		if !bytes.Equal(prev, in.Payload) {
			r.blame(from, errors.New("sent two different confirmations"))
		}
		return
	}
	// Only a member's first message is progress: a member repeating its
	// own must not keep the round waiting for a silent one.
	r.idle = 0
	r.got[from] = bytes.Clone(in.Payload)
	c, err := decodeConfirmation(in.Payload)
	switch {
	case !in.Broadcast:
		// Only a broadcast is checked for equivocation.
		r.blame(from, errors.New("sent its confirmation directly, not as a broadcast"))
	case err != nil:
		r.blame(from, err)
	case c.Session != r.session || c.Digest != r.digest:
		r.blame(from, errors.New("confirmed another reshare"))
	case !c.OK:
		r.verdicts[from] = fmt.Errorf("did not finish: %q", c.Reason)
	default:
		if err := VerifyReshareProof(r.session, r.key, c.Proof); err != nil {
			r.blame(from, fmt.Errorf("sent an invalid proof: %w", err))
			return
		}
		r.verdicts[from] = nil
		if r.proof == nil {
			r.proof = &c.Proof
		}
	}
}

func (r *confirmRound) blame(who ids.MemberID, err error) {
	r.verdicts[who] = err
	if !slices.Contains(r.culprits, who) {
		r.culprits = append(r.culprits, who)
	}
}

// transportFailed records the members the transport named (an
// equivocating confirmation): a new member among them is not confirmed.
func (r *confirmRound) transportFailed(err error) {
	se, ok := AsSessionError(err)
	if !ok {
		return
	}
	for _, who := range se.Culprits {
		switch {
		case who == r.self:
		case r.key.Committee.Has(who):
			r.blame(who, fmt.Errorf("named by the transport: %v", se.Err))
		case !slices.Contains(r.culprits, who):
			r.culprits = append(r.culprits, who)
		}
	}
}

func (r *confirmRound) tick() {
	r.idle++
	if r.idle >= r.maxIdle {
		r.timedOut = true
	}
}

func (r *confirmRound) done() bool {
	return r.timedOut || len(r.verdicts) == len(r.key.Committee.Members)
}

// outcome lists the new members that confirmed and those that did not, and
// the error for the result when not all did.
func (r *confirmRound) outcome() (confirmed, unconfirmed []ids.MemberID, err error) {
	var silent []ids.MemberID
	var reasons []string
	for _, id := range r.key.Committee.IDs() {
		v, heard := r.verdicts[id]
		switch {
		case heard && v == nil:
			confirmed = append(confirmed, id)
		case heard:
			unconfirmed = append(unconfirmed, id)
			reasons = append(reasons, fmt.Sprintf("%s %v", id, v))
		default:
			unconfirmed = append(unconfirmed, id)
			silent = append(silent, id)
			reasons = append(reasons, fmt.Sprintf("%s sent no confirmation", id))
		}
	}
	slices.Sort(confirmed)
	slices.Sort(unconfirmed)
	if len(unconfirmed) == 0 {
		return confirmed, nil, nil
	}
	slices.Sort(r.culprits)
	kind := FailUnconfirmed
	if len(r.culprits) > 0 {
		kind = FailMisbehaviour
	}
	return confirmed, unconfirmed, &SessionError{Session: r.session, Kind: kind, Culprits: r.culprits, Waiting: silent,
		Err: fmt.Errorf("%w: unconfirmed %s (%s)", ErrReshareIncomplete, joinIDs(unconfirmed), strings.Join(reasons, "; "))}
}

// ErrReshareIncomplete: not every member of the new committee confirmed
// that it holds its share and the checked proof. No old share may be
// deleted; the new shares are kept until the reshare is resolved.
var ErrReshareIncomplete = errors.New("tss: reshare incomplete")

// Idle timeouts a confirmation round waits without a confirmation: a new
// member starts it after its own proof signature, when any other new
// member is at most one idle timeout from giving up on its own; an
// old-only member starts it before the new committee's proof signature,
// whose nine rounds may each take up to an idle timeout.
const (
	confirmWaitNew     = 2
	confirmWaitOldOnly = 10
)

// confirm runs the confirmation round: this node broadcasts mine (when it
// is a new member) and waits for every other new member's.
func (e *Engine) confirm(ctx context.Context, session ids.SessionID, members []ids.MemberID, key KeyInfo, mine *confirmation) *confirmRound {
	wait := confirmWaitOldOnly
	if mine != nil {
		wait = confirmWaitNew
	}
	ticks := wait * int((e.cfg.IdleTimeout+e.cfg.TickInterval-1)/e.cfg.TickInterval)
	r := newConfirmRound(session, key, e.tr.Self(), ticks)
	id := session.Derive("reshare-confirm")
	conn, err := e.tr.Open(ctx, id, members)
	if err != nil {
		r.timedOut = true
		return r
	}
	defer func() { r.transportFailed(conn.Close(nil)) }() // a late echo may expose an equivocation
	if mine != nil {
		r.own(*mine)
		if err := conn.Broadcast(ctx, r.got[r.self]); err != nil {
			e.log.Warn("reshare confirmation not sent", "session", session, "err", err)
		}
	}
	ticker := time.NewTicker(e.cfg.TickInterval)
	defer ticker.Stop()
	for !r.done() {
		select {
		case in, ok := <-conn.Incoming():
			if !ok {
				return r
			}
			r.step(in)
		case <-ticker.C:
			r.tick()
		case <-conn.Done():
			r.transportFailed(conn.Err())
			return r
		case <-ctx.Done():
			return r
		}
	}
	return r
}
