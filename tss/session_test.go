package tss

import (
	"testing"

	"github.com/custos-wallet/custos/ids"
)

// fromReady is a message a session asked to send.
type fromReady struct {
	from ids.MemberID
	out  Outbound
}

// script drives sessions by hand, with no transport, clock or goroutine:
// each message is delivered copies times to its recipients, in order.
type script struct {
	t        *testing.T
	sessions map[ids.MemberID]*Session
	queue    []fromReady
	done     map[ids.MemberID]bool
}

func (sc *script) take(from ids.MemberID, rd Ready) {
	sc.t.Helper()
	if rd.Err != nil {
		sc.t.Fatalf("%s failed: %v", from, rd.Err)
	}
	if rd.Done {
		sc.done[from] = true
	}
	for _, m := range rd.Messages {
		sc.queue = append(sc.queue, fromReady{from, m})
	}
}

func (sc *script) stabilize(copies int) {
	for len(sc.queue) > 0 {
		m := sc.queue[0]
		sc.queue = sc.queue[1:]
		for id, s := range sc.sessions {
			if id == m.from || (!m.out.Broadcast && m.out.To != id) {
				continue
			}
			for range copies {
				sc.take(id, s.Step(Incoming{From: m.from, Broadcast: m.out.Broadcast, Payload: m.out.Payload}))
			}
		}
	}
}

func signSessions(t *testing.T, signers []ids.MemberID, digest [32]byte) (map[ids.MemberID]*Session, map[ids.MemberID]func() (Signature, error)) {
	shares := shared2of3(t)
	net := NewMemNetwork()
	sid := ids.NewSessionID()
	sessions := map[ids.MemberID]*Session{}
	finish := map[ids.MemberID]func() (Signature, error){}
	for _, id := range signers {
		s, f, err := NewEngine(net.Endpoint(id), testConfig()).signSession(SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digest})
		if err != nil {
			t.Fatal(err)
		}
		sessions[id], finish[id] = s, f
	}
	return sessions, finish
}

func TestSessionDropsExactDuplicates(t *testing.T) {
	digest := digestOf("scripted duplicates")
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	sessions, finish := signSessions(t, signers, digest)
	sc := &script{t: t, sessions: sessions, done: map[ids.MemberID]bool{}}
	for id, s := range sessions {
		sc.take(id, s.Start())
	}
	sc.stabilize(3) // every message arrives three times
	key := shared2of3(t)[agent.ID].Key()
	for id, s := range sessions {
		if !sc.done[id] {
			t.Fatalf("%s did not finish", id)
		}
		if s.dups == 0 {
			t.Fatalf("%s dropped no duplicate", id)
		}
		sig, err := finish[id]()
		if err != nil {
			t.Fatal(err)
		}
		if got := recoverAddress(t, digest, sig); got != key.Address {
			t.Fatalf("%s: recovers to %s", id, got.Hex())
		}
	}
}

func TestSessionHoldsMessagesSteppedBeforeStart(t *testing.T) {
	digest := digestOf("scripted early")
	signers := []ids.MemberID{agent.ID, policy.ID}
	sessions, finish := signSessions(t, signers, digest)
	sc := &script{t: t, sessions: sessions, done: map[ids.MemberID]bool{}}
	// The agent starts and its round-1 messages reach the policy node's
	// session before that one starts.
	sc.take(agent.ID, sessions[agent.ID].Start())
	sc.stabilize(1)
	if len(sessions[policy.ID].pre) == 0 {
		t.Fatal("no message held before start")
	}
	sc.take(policy.ID, sessions[policy.ID].Start())
	sc.stabilize(1)
	for _, id := range signers {
		if !sc.done[id] {
			t.Fatalf("%s did not finish", id)
		}
		if _, err := finish[id](); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSessionTimesOutByTicksNamingTheSilent(t *testing.T) {
	sessions, _ := signSessions(t, []ids.MemberID{agent.ID, policy.ID}, digestOf("ticks"))
	s := sessions[agent.ID]
	s.Start()
	var rd Ready
	for i := 0; i < s.maxIdle; i++ {
		rd = s.Tick()
	}
	if rd.Err == nil || rd.Err.Kind != FailTimeout || len(rd.Err.Waiting) != 1 || rd.Err.Waiting[0] != policy.ID {
		t.Fatalf("after %d ticks: %+v", s.maxIdle, rd.Err)
	}
	if again := s.Step(Incoming{From: policy.ID}); again.Err != nil || again.Done || len(again.Messages) > 0 {
		t.Fatal("a failed session acted on a later message")
	}
}
