package tss

import (
	"context"
	"math/big"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bnb-chain/tss-lib/v2/crypto/modproof"
	"github.com/bnb-chain/tss-lib/v2/crypto/mta"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// forge rewrites, in flight, every message from forger whose content
// mutate changes (mutate returns true): the forged message is still sent by
// the forger, as a real member would send it.
func forge(t *testing.T, net *MemNetwork, forger ids.MemberID, mutate func(tss.MessageContent) bool) {
	t.Helper()
	dummy := tss.NewPartyID("x", "x", big.NewInt(1))
	dummy.Index = 0
	net.SetFilter(func(m MemMessage) []MemMessage {
		if m.From != forger {
			return []MemMessage{m}
		}
		env, err := decodeEnvelope(m.Payload)
		if err != nil {
			t.Errorf("forge: %v", err)
			return nil
		}
		msg, err := tss.ParseWireMessage(env.Wire, dummy, env.Broadcast)
		if err != nil {
			t.Errorf("forge: %v", err)
			return nil
		}
		c := msg.Content()
		if !mutate(c) {
			return []MemMessage{m}
		}
		a, err := anypb.New(c)
		if err != nil {
			t.Errorf("forge: %v", err)
			return nil
		}
		if env.Wire, err = proto.Marshal(a); err != nil {
			t.Errorf("forge: %v", err)
			return nil
		}
		m.Payload = env.encode()
		return []MemMessage{m}
	})
}

// runWithForger runs f for every member; the forger's run is cancelled once
// the honest members have ended. It returns the honest members' errors.
func runWithForger(members []ids.MemberID, forger ids.MemberID, f func(ctx context.Context, i int, id ids.MemberID) error) map[ids.MemberID]error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	honest := make(chan struct{})
	go func() {
		<-honest
		cancel()
	}()
	var honestIDs []ids.MemberID
	for _, id := range members {
		if id != forger {
			honestIDs = append(honestIDs, id)
		}
	}
	forgerDone := make(chan struct{})
	go func() {
		defer close(forgerDone)
		f(ctx, indexOf(members, forger), forger)
	}()
	errs := runAll(honestIDs, func(_ int, id ids.MemberID) error { return f(context.Background(), indexOf(members, id), id) })
	close(honest)
	<-forgerDone
	return errs
}

func indexOf(memberIDs []ids.MemberID, id ids.MemberID) int {
	for i, x := range memberIDs {
		if x == id {
			return i
		}
	}
	return -1
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
	net := NewMemNetwork()
	forge(t, net, forger, mutate)
	sid := ids.NewSessionID()
	errs := runWithForger(c.IDs(), forger, func(ctx context.Context, i int, id ids.MemberID) error {
		_, err := NewEngine(net.Endpoint(id), testConfig()).Keygen(ctx, KeygenRequest{Session: sid, Committee: c, PreParams: fixture(t, i)})
		return err
	})
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
	net := NewMemNetwork()
	forger := policy.ID
	forge(t, net, forger, func(c tss.MessageContent) bool {
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
	})
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	sid := ids.NewSessionID()
	errs := runWithForger(signers, forger, func(ctx context.Context, _ int, id ids.MemberID) error {
		_, err := NewEngine(net.Endpoint(id), testConfig()).Sign(ctx, SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digestOf("forged")})
		return err
	})
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
	key := old[agent.ID].Key()
	net := NewMemNetwork()
	forge(t, net, forger, mutate)
	oldSigners := []ids.MemberID{policy.ID, guardian.ID}
	nc := Committee{Members: []Member{agent2, policy, guardian}, Threshold: 1}
	everyone := []ids.MemberID{agent2.ID, policy.ID, guardian.ID}
	sid := ids.NewSessionID()
	return runWithForger(everyone, forger, func(ctx context.Context, i int, id ids.MemberID) error {
		req := ReshareRequest{Session: sid, Key: key, OldSigners: oldSigners, NewCommittee: nc, PreParams: fixture(t, 3+i)}
		if id != agent2.ID {
			req.OldShare = old[id]
		}
		_, err := NewEngine(net.Endpoint(id), testConfig()).Reshare(ctx, req)
		return err
	})
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
	net := NewMemNetwork()
	signers := []ids.MemberID{agent.ID, policy.ID}
	sid := ids.NewSessionID()
	errs := runAll(signers, func(_ int, id ids.MemberID) error {
		_, err := NewEngine(net.Endpoint(id), testConfig()).Sign(context.Background(),
			SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digestOf("pay " + string(id))})
		return err
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
	net := NewMemNetwork()
	forger := guardian.ID
	dummy := tss.NewPartyID("x", "x", big.NewInt(1))
	dummy.Index = 0
	net.SetFilter(func(m MemMessage) []MemMessage {
		env, _ := decodeEnvelope(m.Payload)
		msg, err := tss.ParseWireMessage(env.Wire, dummy, env.Broadcast)
		if m.From != forger || err != nil {
			return []MemMessage{m}
		}
		r3, ok := msg.Content().(*signing.SignRound3Message)
		if !ok {
			return []MemMessage{m}
		}
		// Send the real message, then a second, different one.
		r3.Theta = append([]byte{1}, r3.Theta...)
		a, _ := anypb.New(r3)
		env.Wire, _ = proto.Marshal(a)
		alt := m
		alt.Payload = env.encode()
		return []MemMessage{m, alt}
	})
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	sid := ids.NewSessionID()
	errs := runWithForger(signers, forger, func(ctx context.Context, _ int, id ids.MemberID) error {
		_, err := NewEngine(net.Endpoint(id), testConfig()).Sign(ctx, SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digestOf("dup")})
		return err
	})
	wantCaught(t, errs, forger, "two different")
}

func TestMessageBoundToAnotherSession(t *testing.T) {
	shares := shared2of3(t)
	net := NewMemNetwork()
	forger := policy.ID
	other := ids.NewSessionID()
	net.SetFilter(func(m MemMessage) []MemMessage {
		if m.From == forger {
			env, _ := decodeEnvelope(m.Payload)
			env.Session = other
			m.Payload = env.encode()
		}
		return []MemMessage{m}
	})
	signers := []ids.MemberID{agent.ID, policy.ID}
	sid := ids.NewSessionID()
	errs := runWithForger(signers, forger, func(ctx context.Context, _ int, id ids.MemberID) error {
		_, err := NewEngine(net.Endpoint(id), testConfig()).Sign(ctx, SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digestOf("x")})
		return err
	})
	wantCaught(t, errs, forger, "bound to session")
}

func TestDuplicatedReorderedDelayedMessagesStillSign(t *testing.T) {
	shares := shared2of3(t)
	net := NewMemNetwork()
	rng := rand.New(rand.NewPCG(1, 2))
	var mu sync.Mutex
	var wg sync.WaitGroup
	net.SetFilter(func(m MemMessage) []MemMessage {
		mu.Lock()
		delay := time.Duration(rng.IntN(40)) * time.Millisecond
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(delay)
			for range 2 { // the copy is an exact duplicate: dropped
				if err := net.Inject(m); err != nil {
					t.Errorf("inject: %v", err)
				}
			}
		}()
		return nil
	})
	digest := digestOf("chaos")
	key := shares[agent.ID].Key()
	for id, sig := range signAll(t, net, shares, []ids.MemberID{agent.ID, policy.ID, guardian.ID}, digest, nil) {
		if got := recoverAddress(t, digest, sig); got != key.Address {
			t.Fatalf("%s: recovers to %s", id, got.Hex())
		}
	}
	wg.Wait()
}

func TestEarlyMessagesAreBuffered(t *testing.T) {
	shares := shared2of3(t)
	net := NewMemNetwork()
	signers := []ids.MemberID{agent.ID, policy.ID}
	sid := ids.NewSessionID()
	digest := digestOf("late joiner")
	errs := runAll(signers, func(_ int, id ids.MemberID) error {
		if id == policy.ID {
			time.Sleep(300 * time.Millisecond) // agent's round 1 arrives first
		}
		_, err := NewEngine(net.Endpoint(id), testConfig()).Sign(context.Background(), SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digest})
		return err
	})
	for id, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
}
