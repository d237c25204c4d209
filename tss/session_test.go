package tss

import (
	"testing"

	"github.com/custos-wallet/custos/ids"
)

// signSessions builds the signing sessions of signers over the shared key.
func signSessions(t *testing.T, signers []ids.MemberID, digest [32]byte) map[ids.MemberID]*Session {
	e := newEnv(t)
	if err := e.sign(shared2of3(t), signers, digest, nil); err != nil {
		t.Fatal(err)
	}
	sessions := map[ids.MemberID]*Session{}
	for id, n := range e.nodes {
		sessions[id] = n.s
	}
	return sessions
}

func TestSessionDropsExactDuplicates(t *testing.T) {
	digest := digestOf("scripted duplicates")
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	e := newEnv(t)
	if err := e.sign(shared2of3(t), signers, digest, nil); err != nil {
		t.Fatal(err)
	}
	e.start()
	for len(e.queue) > 0 { // every message arrives three times
		m := e.queue[0]
		e.queue = e.queue[1:]
		for range 3 {
			e.deliver(m)
		}
	}
	key := shared2of3(t)[agent.ID].Key()
	for _, id := range signers {
		n := e.nodes[id]
		if n.rd.Err != nil || !n.rd.Done {
			t.Fatalf("%s did not finish: %v", id, n.rd.Err)
		}
		if n.s.dups == 0 {
			t.Fatalf("%s dropped no duplicate", id)
		}
		if got := recoverAddress(t, digest, *n.rd.Signature); got != key.Address {
			t.Fatalf("%s: recovers to %s", id, got.Hex())
		}
	}
}

func TestSessionHoldsMessagesSteppedBeforeStart(t *testing.T) {
	digest := digestOf("scripted early")
	signers := []ids.MemberID{agent.ID, policy.ID}
	e := newEnv(t)
	if err := e.sign(shared2of3(t), signers, digest, nil); err != nil {
		t.Fatal(err)
	}
	// The agent starts and its round-1 messages reach the policy node's
	// session before that one starts.
	e.start(agent.ID)
	e.stabilize()
	if len(e.nodes[policy.ID].s.pre) == 0 {
		t.Fatal("no message held before start")
	}
	e.start(policy.ID)
	e.stabilize()
	for _, id := range signers {
		n := e.nodes[id]
		if !n.rd.Done || n.rd.Signature == nil {
			t.Fatalf("%s did not finish with a signature: %v", id, n.rd.Err)
		}
	}
}

func TestSessionTimesOutByTicksNamingTheSilent(t *testing.T) {
	s := signSessions(t, []ids.MemberID{agent.ID, policy.ID}, digestOf("ticks"))[agent.ID]
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
