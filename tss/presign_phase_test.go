package tss

import (
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/ids"
)

// pump delivers the messages of hand-driven sessions to each other until
// none is left, starting with first; it returns every message delivered.
func pump(t *testing.T, sessions map[ids.MemberID]*Session, first map[ids.MemberID]Ready) []Incoming {
	t.Helper()
	type envelopeTo struct {
		to ids.MemberID
		in Incoming
	}
	var queue []envelopeTo
	var all []Incoming
	add := func(from ids.MemberID, rd Ready) {
		if rd.Err != nil {
			t.Fatalf("%s: %v", from, rd.Err)
		}
		for _, m := range rd.Messages {
			for to := range sessions {
				if to != from && (m.Broadcast || m.To == to) {
					queue = append(queue, envelopeTo{to, Incoming{From: from, Broadcast: m.Broadcast, Payload: m.Payload}})
				}
			}
		}
	}
	for id, rd := range first {
		add(id, rd)
	}
	for len(queue) > 0 {
		m := queue[0]
		queue = queue[1:]
		all = append(all, m.in)
		add(m.to, sessions[m.to].Step(m.in))
	}
	return all
}

// TestPresignPhases drives two presign sessions by hand: a round-4 message
// released before the online phase, and a message of rounds 1-3 replayed
// in it, are misbehaviour of their sender.
func TestPresignPhases(t *testing.T) {
	shares := shared2of3(t)
	signers := []ids.MemberID{agent.ID, policy.ID}
	sid := ids.NewSessionID()
	sessions := map[ids.MemberID]*Session{}
	phases := map[ids.MemberID]*presignPhase{}
	first := map[ids.MemberID]Ready{}
	for _, id := range signers {
		phases[id] = &presignPhase{}
		s, err := newSignSessionWith(id, SignRequest{Session: sid, Share: shares[id], Signers: signers,
			Digest: presignPlaceholder}, 100, new(big.Int).SetBytes(presignPlaceholder[:]), phases[id])
		if err != nil {
			t.Fatal(err)
		}
		sessions[id] = s
	}
	for id, s := range sessions {
		first[id] = s.Start()
	}
	early := pump(t, sessions, first)
	for id, p := range phases {
		if !p.parked || len(p.held) != 1 {
			t.Fatalf("%s: parked=%v with %d held messages, want parked holding its round-4 message", id, p.parked, len(p.held))
		}
	}
	released := Incoming{From: policy.ID, Broadcast: true, Payload: phases[policy.ID].held[0].Payload}
	rd := sessions[agent.ID].Step(released)
	if rd.Err == nil || rd.Err.Kind != FailMisbehaviour || !slices.Equal(rd.Err.Culprits, []ids.MemberID{policy.ID}) ||
		!strings.Contains(rd.Err.Error(), "before the online phase") {
		t.Fatalf("early round-4 message: got %v, want misbehaviour by %s", rd.Err, policy.ID)
	}

	// The policy member's session, moved online, refuses a replayed
	// round-1 message re-bound to the online session.
	online := ids.NewSessionID()
	s := sessions[policy.ID]
	s.rebind(online, paramsHash("signing-online", s.params, sid, digestOf("d"), []byte("r")))
	if rd := s.resume(); rd.Err != nil || len(rd.Messages) != 1 {
		t.Fatalf("resume: %+v, want the held round-4 message", rd)
	}
	replay := early[0]
	for _, in := range early {
		if in.From == agent.ID {
			replay = in
			break
		}
	}
	env, err := decodeEnvelope(replay.Payload)
	if err != nil {
		t.Fatal(err)
	}
	env.Session, env.Params = s.id, s.params
	replay.Payload = env.encode()
	rd = s.Step(replay)
	if rd.Err == nil || rd.Err.Kind != FailMisbehaviour || !slices.Equal(rd.Err.Culprits, []ids.MemberID{agent.ID}) ||
		!strings.Contains(rd.Err.Error(), "in the online phase") {
		t.Fatalf("replayed early message: got %v, want misbehaviour by %s", rd.Err, agent.ID)
	}
}
