package tss

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/ids"
)

// The confirmation round's core: a bad proof, a second different
// confirmation or a malformed one names the sender; a refusal and silence
// leave a member unconfirmed without blame.
func TestConfirmRoundVerdicts(t *testing.T) {
	key := syntheticShare(t, 0).Key() // 2-of-5: agent, policy, guardian, guardian-2, guardian-3
	sid := ids.NewSessionID()
	r := newConfirmRound(sid, key, agent.ID, 3)
	digest := ReshareProofDigest(sid, key)
	r.own(confirmation{Session: sid, Digest: digest, Reason: "proof timed out"})
	r.step(Incoming{From: policy.ID, Broadcast: true, Payload: confirmation{Session: sid, Digest: digest, OK: true}.encode()}) // zero proof
	refusal := confirmation{Session: sid, Digest: digest, Reason: "no"}.encode()
	r.step(Incoming{From: guardian.ID, Broadcast: true, Payload: refusal})
	r.step(Incoming{From: guardian.ID, Broadcast: true, Payload: refusal}) // an exact repeat is harmless
	r.step(Incoming{From: guardian2.ID, Broadcast: true, Payload: []byte("CTR1 short")})
	r.step(Incoming{From: "stranger", Broadcast: true, Payload: refusal})
	if r.done() {
		t.Fatal("done before guardian-3 was heard or the round timed out")
	}
	for !r.done() {
		r.tick()
	}
	confirmed, unconfirmed, err := r.outcome()
	if len(confirmed) != 0 || !slices.Equal(unconfirmed, sortedIDs(key.Committee.IDs())) {
		t.Fatalf("confirmed %v, unconfirmed %v", confirmed, unconfirmed)
	}
	se, ok := AsSessionError(err)
	if !ok || !errors.Is(err, ErrReshareIncomplete) || se.Kind != FailMisbehaviour ||
		!slices.Equal(se.Culprits, []ids.MemberID{guardian2.ID, policy.ID}) || !slices.Equal(se.Waiting, []ids.MemberID{guardian3.ID}) {
		t.Fatalf("got %v (culprits %v, waiting %v)", err, se.Culprits, se.Waiting)
	}
	t.Log(err)

	// A different second message from the same member is misbehaviour.
	r = newConfirmRound(sid, key, agent.ID, 3)
	r.step(Incoming{From: guardian.ID, Broadcast: true, Payload: refusal})
	r.step(Incoming{From: guardian.ID, Broadcast: true, Payload: confirmation{Session: sid, Digest: digest, Reason: "other"}.encode()})
	if !slices.Equal(r.culprits, []ids.MemberID{guardian.ID}) {
		t.Fatalf("culprits %v, want [%s]", r.culprits, guardian.ID)
	}
	// A confirmation of another reshare is misbehaviour too.
	r.step(Incoming{From: policy.ID, Broadcast: true, Payload: confirmation{Session: ids.NewSessionID(), Digest: digest, Reason: "x"}.encode()})
	if !slices.Contains(r.culprits, policy.ID) {
		t.Fatal("a confirmation bound to another session was accepted")
	}
}

// A member that repeats its confirmation does not keep the round waiting:
// only a member's first message is progress, so a silent member still
// times the round out.
func TestConfirmRoundRepeatsDoNotStall(t *testing.T) {
	key := syntheticShare(t, 0).Key()
	sid := ids.NewSessionID()
	r := newConfirmRound(sid, key, agent.ID, 3)
	refusal := confirmation{Session: sid, Digest: ReshareProofDigest(sid, key), Reason: "no"}.encode()
	for i := 0; i < 10 && !r.done(); i++ {
		r.step(Incoming{From: guardian.ID, Broadcast: true, Payload: refusal})
		r.tick()
	}
	if !r.done() {
		t.Fatal("repeats of one confirmation kept the round from timing out")
	}
}

// A confirmation sent directly rather than broadcast escapes the
// transport's equivocation check (a member could tell some members it
// confirmed and others it did not): it is misbehaviour.
func TestConfirmRoundDirectConfirmationIsMisbehaviour(t *testing.T) {
	key := syntheticShare(t, 0).Key()
	sid := ids.NewSessionID()
	r := newConfirmRound(sid, key, agent.ID, 3)
	r.step(Incoming{From: guardian.ID, Payload: confirmation{Session: sid, Digest: ReshareProofDigest(sid, key), Reason: "no"}.encode()})
	if !slices.Equal(r.culprits, []ids.MemberID{guardian.ID}) {
		t.Fatalf("culprits %v, want [%s]", r.culprits, guardian.ID)
	}
}

// fakeConfirmConn delivers the given messages, then ends as the transport
// says: closing done with err (an equivocation found during the round), or
// returning closeErr from Close (one found by a late echo).
type fakeConfirmConn struct {
	in       chan Incoming
	done     chan struct{}
	err      error
	closeErr error
}

func (c *fakeConfirmConn) Send(context.Context, ids.MemberID, []byte) error { return nil }
func (c *fakeConfirmConn) Broadcast(context.Context, []byte) error          { return nil }
func (c *fakeConfirmConn) Incoming() <-chan Incoming                        { return c.in }
func (c *fakeConfirmConn) Done() <-chan struct{}                            { return c.done }
func (c *fakeConfirmConn) Err() error                                       { return c.err }
func (c *fakeConfirmConn) Close(error) error                                { return c.closeErr }

type fakeConfirmTransport struct{ conn *fakeConfirmConn }

func (f fakeConfirmTransport) Self() ids.MemberID { return agent.ID }
func (f fakeConfirmTransport) Open(context.Context, ids.SessionID, []ids.MemberID) (Conn, error) {
	return f.conn, nil
}

// A member the transport names for equivocating in the confirmation round
// (at once, or at the end) is a culprit and not confirmed.
func TestConfirmKeepsTheTransportsCulprits(t *testing.T) {
	key := syntheticShare(t, 0).Key()
	sid := ids.NewSessionID()
	digest := ReshareProofDigest(sid, key)
	mine := &confirmation{Session: sid, Digest: digest, Reason: "no"}
	equivocated := func(who ids.MemberID) error {
		return &SessionError{Session: sid, Kind: FailMisbehaviour, Culprits: []ids.MemberID{who}, Err: errors.New("equivocated")}
	}

	during := &fakeConfirmConn{in: make(chan Incoming), done: make(chan struct{}), err: equivocated(policy.ID)}
	close(during.done)
	r := NewEngine(fakeConfirmTransport{during}, testConfig()).confirm(context.Background(), sid, key.Committee.IDs(), key, mine)
	if !slices.Contains(r.culprits, policy.ID) {
		t.Errorf("transport named %s during the round; culprits %v", policy.ID, r.culprits)
	}

	atEnd := &fakeConfirmConn{in: make(chan Incoming, 8), done: make(chan struct{}), closeErr: equivocated(guardian.ID)}
	for _, id := range []ids.MemberID{policy.ID, guardian.ID, guardian2.ID, guardian3.ID} {
		atEnd.in <- Incoming{From: id, Broadcast: true, Payload: confirmation{Session: sid, Digest: digest, Reason: "no"}.encode()}
	}
	r = NewEngine(fakeConfirmTransport{atEnd}, testConfig()).confirm(context.Background(), sid, key.Committee.IDs(), key, mine)
	if !slices.Contains(r.culprits, guardian.ID) {
		t.Errorf("transport named %s at close; culprits %v", guardian.ID, r.culprits)
	}
	if _, _, err := r.outcome(); err == nil {
		t.Error("outcome succeeded despite an equivocating member")
	}
}

// A member's reason is its own text: it is quoted, so it cannot add lines
// or blame to the round's error.
func TestConfirmRoundQuotesReasons(t *testing.T) {
	key := syntheticShare(t, 0).Key()
	sid := ids.NewSessionID()
	r := newConfirmRound(sid, key, agent.ID, 1)
	lie := "x)\nguardian-1 sent an invalid proof"
	r.step(Incoming{From: policy.ID, Broadcast: true, Payload: confirmation{Session: sid, Digest: ReshareProofDigest(sid, key), Reason: lie}.encode()})
	r.tick()
	_, _, err := r.outcome()
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %q", err)
	}
}
