package tss

import (
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/bnb-chain/tss-lib/v2/crypto/modproof"
	"github.com/bnb-chain/tss-lib/v2/crypto/mta"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
)

// runForged runs the protocol that build sets up on the scripted
// environment, every message forger sends rewritten by mutate (a nil
// mutate leaves them alone), until every session ended or timed out; it
// returns the honest members' outcomes.
func runForged(t *testing.T, forger ids.MemberID, mutate func(tss.MessageContent) bool, build func(e *env) error) map[ids.MemberID]error {
	t.Helper()
	return runScripted(t, forger, func(e *env) error {
		if mutate != nil {
			e.forgers[forger] = mutate
		}
		return build(e)
	})
}

// runScripted sets up a run with build (which may install a filter) and
// runs it to its end; it returns the outcomes of every member but skip.
func runScripted(t *testing.T, skip ids.MemberID, build func(e *env) error) map[ids.MemberID]error {
	t.Helper()
	e := newEnv(t)
	if err := build(e); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.settle()
	return e.outcomes(skip)
}

// wantCaught checks that every honest member aborted naming the forger,
// with the reason containing check.
func wantCaught(t *testing.T, errs map[ids.MemberID]error, forger ids.MemberID, check string) {
	t.Helper()
	caught := 0
	for id, err := range errs {
		se, ok := AsSessionError(err)
		if !ok {
			t.Fatalf("%s: got %v, want a session error naming %s", id, err, forger)
		}
		if se.Kind == FailMisbehaviour && len(se.Culprits) == 1 && se.Culprits[0] == forger && strings.Contains(se.Error(), check) {
			caught++
			t.Logf("%s: %v", id, err)
			continue
		}
		// A member that never received the forged message (a direct
		// message to someone else) may end otherwise, but never succeed.
		t.Logf("%s ended without catching it: %v", id, err)
	}
	if caught == 0 {
		t.Fatalf("no honest member caught %q by %s", check, forger)
	}
}

func forgedKeygen(t *testing.T, forger ids.MemberID, check string, mutate func(tss.MessageContent) bool) {
	c := Committee{Members: []Member{agent, policy, guardian}, Threshold: 1}
	errs := runForged(t, forger, mutate, func(e *env) error { return e.keygen(c.IDs(), c.Threshold, 0) })
	wantCaught(t, errs, forger, check)
}

func TestForgedKeygenVSSCommitmentCount(t *testing.T) {
	forgedKeygen(t, guardian.ID, "vss commitment count", func(c tss.MessageContent) bool {
		m, ok := c.(*keygen.KGRound2Message2)
		if ok {
			// One more commitment: a dealer raising the threshold.
			d := m.DeCommitment
			m.DeCommitment = append(d, d[len(d)-2], d[len(d)-1])
		}
		return ok
	})
}

func TestForgedKeygenModProofGCD(t *testing.T) {
	forgerIdx := 2 // guardian uses fixture 2
	p := fixture(t, forgerIdx).p.PaillierSK.P
	forgedKeygen(t, guardian.ID, "gcd(W, N) != 1", func(c tss.MessageContent) bool {
		m, ok := c.(*keygen.KGRound2Message2)
		if ok {
			m.ModProof = withModProofW(t, m.ModProof, p)
		}
		return ok
	})
}

// withModProofW sets the modulus proof's W to p, a prime factor of the
// prover's own N, so that gcd(W, N) = p.
func withModProofW(t *testing.T, proof [][]byte, p *big.Int) [][]byte {
	pf, err := modproof.NewProofFromBytes(proof)
	if err != nil {
		t.Errorf("decode mod proof: %v", err)
		return proof
	}
	pf.W = new(big.Int).Set(p)
	b := pf.Bytes()
	return b[:]
}

func TestForgedKeygenShortPaillierModulus(t *testing.T) {
	forgedKeygen(t, policy.ID, "paillier modulus", func(c tss.MessageContent) bool {
		m, ok := c.(*keygen.KGRound1Message)
		if ok {
			m.PaillierN = new(big.Int).Lsh(big.NewInt(1), 1023).Bytes()
		}
		return ok
	})
}

func TestForgedKeygenShortNTilde(t *testing.T) {
	forgedKeygen(t, agent.ID, "n-tilde", func(c tss.MessageContent) bool {
		m, ok := c.(*keygen.KGRound1Message)
		if ok {
			m.NTilde = new(big.Int).Lsh(big.NewInt(1), 1023).Bytes()
		}
		return ok
	})
}

func forgedSign(t *testing.T, check string, mutate func(*mta.RangeProofAlice)) {
	shares := shared2of3(t)
	forger := policy.ID
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	errs := runForged(t, forger, func(c tss.MessageContent) bool {
		m, ok := c.(*signing.SignRound1Message1)
		if ok {
			pf, err := m.UnmarshalRangeProofAlice()
			if err != nil {
				t.Errorf("decode range proof: %v", err)
				return false
			}
			mutate(pf)
			b := pf.Bytes()
			m.RangeProofAlice = b[:]
		}
		return ok
	}, func(e *env) error { return e.sign(shares, signers, digestOf("forged"), nil) })
	wantCaught(t, errs, forger, check)
}

func TestForgedRangeProofS1(t *testing.T) {
	forgedSign(t, "S = 1", func(pf *mta.RangeProofAlice) { pf.S = big.NewInt(1) })
}

func TestForgedRangeProofZ1(t *testing.T) {
	forgedSign(t, "Z = 1", func(pf *mta.RangeProofAlice) { pf.Z = big.NewInt(1) })
}

func TestForgedRangeProofS1EqualsS2(t *testing.T) {
	forgedSign(t, "S1 = S2", func(pf *mta.RangeProofAlice) { pf.S2 = new(big.Int).Set(pf.S1) })
}

func forgedReshare(t *testing.T, forger ids.MemberID, check string, mutate func(tss.MessageContent) bool) {
	wantCaught(t, runForgedReshare(t, forger, mutate), forger, check)
}

// runForgedReshare moves the shared key from {policy, guardian} to
// {agent-2, policy, guardian} while forger's messages are rewritten by
// mutate, and returns the honest members' errors.
func runForgedReshare(t *testing.T, forger ids.MemberID, mutate func(tss.MessageContent) bool) map[ids.MemberID]error {
	old := shared2of3(t)
	oldSigners := []ids.MemberID{policy.ID, guardian.ID}
	newMembers := []ids.MemberID{agent2.ID, policy.ID, guardian.ID}
	return runForged(t, forger, mutate, func(e *env) error { return e.reshare(old, oldSigners, newMembers, 1, 3) })
}

func TestForgedReshareVSSCommitmentCount(t *testing.T) {
	forgedReshare(t, guardian.ID, "vss commitment count", func(c tss.MessageContent) bool {
		m, ok := c.(*resharing.DGRound3Message2)
		if ok {
			d := m.VDecommitment
			m.VDecommitment = append(d, d[len(d)-2], d[len(d)-1])
		}
		return ok
	})
}

func TestForgedReshareModProofGCD(t *testing.T) {
	p := fixture(t, 3).p.PaillierSK.P // agent-2 is new member 0: fixture 3
	forgedReshare(t, agent2.ID, "gcd(W, N) != 1", func(c tss.MessageContent) bool {
		m, ok := c.(*resharing.DGRound2Message1)
		if ok {
			m.ModProof = withModProofW(t, m.ModProof, p)
		}
		return ok
	})
}

func TestForgedResharePublicKey(t *testing.T) {
	forgedReshare(t, policy.ID, "reshare public key", func(c tss.MessageContent) bool {
		m, ok := c.(*resharing.DGRound1Message)
		if ok {
			// Claim the generator as the key: tss-lib v2.0.2 compares
			// every dealer's claim with old party 0's, which may be this one.
			m.EcdsaPubX, m.EcdsaPubY = tss.S256().Params().Gx.Bytes(), tss.S256().Params().Gy.Bytes()
		}
		return ok
	})
}

// A dealer that lies about the SSID is named by every member that holds an
// old share; a member that holds none cannot tell the liar from the honest
// dealer and names nobody (tss-lib would name whoever is not old party 0).
func TestForgedReshareSSIDBlamesOnlyTheForger(t *testing.T) {
	forger := policy.ID
	errs := runForgedReshare(t, forger, func(c tss.MessageContent) bool {
		m, ok := c.(*resharing.DGRound1Message)
		if ok {
			m.Ssid = append([]byte{1}, m.Ssid...)
		}
		return ok
	})
	for id, err := range errs {
		se, ok := AsSessionError(err)
		if !ok {
			t.Fatalf("%s: %v", id, err)
		}
		t.Logf("%s: %v", id, err)
		for _, c := range se.Culprits {
			if c != forger {
				t.Fatalf("%s blamed %s, an honest member", id, c)
			}
		}
	}
	if se, _ := AsSessionError(errs[guardian.ID]); len(se.Culprits) != 1 {
		t.Fatalf("guardian holds an old share and should name the forger: %v", errs[guardian.ID])
	}
}

// Members given different requests (here different digests) find out at
// the first message and blame nobody.
func TestMembersGivenDifferentRequestsStopAtOnce(t *testing.T) {
	shares := shared2of3(t)
	signers := []ids.MemberID{agent.ID, policy.ID}
	sid := ids.NewSessionID()
	errs := runScripted(t, "", func(e *env) error {
		for _, id := range signers {
			s, err := newSignSession(id, SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digestOf("pay " + string(id))}, e.maxIdle)
			if err != nil {
				return err
			}
			e.add(id, s)
		}
		return nil
	})
	for id, err := range errs {
		se, ok := AsSessionError(err)
		if !ok || se.Kind != FailProtocol || len(se.Culprits) != 0 || !strings.Contains(se.Error(), "different request") {
			t.Fatalf("%s: got %v, want a protocol failure with no culprit", id, err)
		}
	}
}

func TestConflictingDuplicateIsMisbehaviour(t *testing.T) {
	shares := shared2of3(t)
	forger := guardian.ID
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	errs := runScripted(t, forger, func(e *env) error {
		e.filter = func(m *inflight) []*inflight {
			r3, ok := contentOf(m.payload).(*signing.SignRound3Message)
			if m.from != forger || !ok {
				return []*inflight{m}
			}
			// Send the real message, then a second, different one.
			r3.Theta = append([]byte{1}, r3.Theta...)
			alt := *m
			alt.payload, alt.note = withContent(t, m.payload, r3), "forged"
			return []*inflight{m, &alt}
		}
		return e.sign(shares, signers, digestOf("dup"), nil)
	})
	wantCaught(t, errs, forger, "two different")
}

func TestMessageBoundToAnotherSession(t *testing.T) {
	shares := shared2of3(t)
	forger := policy.ID
	other := ids.NewSessionID()
	signers := []ids.MemberID{agent.ID, policy.ID}
	errs := runScripted(t, forger, func(e *env) error {
		e.filter = func(m *inflight) []*inflight {
			if m.from == forger {
				env, _ := decodeEnvelope(m.payload)
				env.Session = other
				m.payload = env.encode()
			}
			return []*inflight{m}
		}
		return e.sign(shares, signers, digestOf("x"), nil)
	})
	wantCaught(t, errs, forger, "bound to session")
}

// Every message arrives twice (the copy an exact duplicate, dropped) and
// in an order shuffled by a seeded source, so the run is the same each
// time; every signer still signs.
func TestDuplicatedReorderedDelayedMessagesStillSign(t *testing.T) {
	shares := shared2of3(t)
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	digest := digestOf("chaos")
	e := newEnv(t)
	if err := e.sign(shares, signers, digest, nil); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	e.start()
	for len(e.queue) > 0 {
		rng.Shuffle(len(e.queue), func(i, j int) { e.queue[i], e.queue[j] = e.queue[j], e.queue[i] })
		m := e.queue[0]
		e.queue = e.queue[1:]
		e.deliver(m)
		e.deliver(m)
	}
	key := shares[agent.ID].Key()
	for id, err := range e.outcomes("") {
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if e.nodes[id].s.dups == 0 {
			t.Fatalf("%s dropped no duplicate", id)
		}
		if got := recoverAddress(t, digest, *e.nodes[id].rd.Signature); got != key.Address {
			t.Fatalf("%s: recovers to %s", id, got.Hex())
		}
	}
}

// A member that starts late finds the messages sent before it started.
func TestEarlyMessagesAreBuffered(t *testing.T) {
	shares := shared2of3(t)
	signers := []ids.MemberID{agent.ID, policy.ID}
	e := newEnv(t)
	if err := e.sign(shares, signers, digestOf("late joiner"), nil); err != nil {
		t.Fatal(err)
	}
	e.start(agent.ID) // agent's round 1 arrives first
	e.stabilize()
	if len(e.nodes[policy.ID].s.pre) == 0 {
		t.Fatal("no message held before start")
	}
	e.start(policy.ID)
	e.stabilize()
	for id, err := range e.outcomes("") {
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
}
