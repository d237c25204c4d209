package tss

import (
	"context"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bnb-chain/tss-lib/v2/crypto/modproof"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
)

// An even Paillier modulus of the right length passes tss-lib's keygen
// round 2 and panics in the Jacobi symbol of round 3's modulus-proof
// check, in a goroutine of tss-lib's own.
func TestForgedKeygenEvenPaillierModulus(t *testing.T) {
	forgedKeygen(t, guardian.ID, "paillier modulus: even", func(c tss.MessageContent) bool {
		m, ok := c.(*keygen.KGRound1Message)
		if ok {
			m.PaillierN = new(big.Int).Add(new(big.Int).SetBytes(m.PaillierN), bigOne).Bytes()
		}
		return ok
	})
}

func TestForgedReshareEvenPaillierModulus(t *testing.T) {
	forgedReshare(t, agent2.ID, "paillier modulus: even", func(c tss.MessageContent) bool {
		m, ok := c.(*resharing.DGRound2Message1)
		if ok {
			m.PaillierN = new(big.Int).Add(new(big.Int).SetBytes(m.PaillierN), bigOne).Bytes()
		}
		return ok
	})
}

func TestForgedKeygenEqualH1H2(t *testing.T) {
	forgedKeygen(t, policy.ID, "h1 = h2", func(c tss.MessageContent) bool {
		m, ok := c.(*keygen.KGRound1Message)
		if ok {
			m.H2 = m.H1
		}
		return ok
	})
}

// A DLN proof whose length prefix reads as a negative int64 makes
// tss-lib's parser slice out of range.
func TestForgedKeygenDLNProofLayout(t *testing.T) {
	forgedKeygen(t, agent.ID, "dln proof", func(c tss.MessageContent) bool {
		m, ok := c.(*keygen.KGRound1Message)
		if ok {
			m.Dlnproof_1[0] = new(big.Int).Lsh(bigOne, 63).Bytes()
		}
		return ok
	})
}

// An integer field larger than any honest one is refused before any
// check parses it.
func TestForgedKeygenOversizedField(t *testing.T) {
	forgedKeygen(t, guardian.ID, "size: field dlnproof_2 part 5", func(c tss.MessageContent) bool {
		m, ok := c.(*keygen.KGRound1Message)
		if ok {
			m.Dlnproof_2[5] = make([]byte, maxIntBytes+1)
			m.Dlnproof_2[5][0] = 1
		}
		return ok
	})
}

// forgedSignWith runs a 3-signer signature while policy's messages are
// rewritten by mutate, and returns the honest members' errors.
func forgedSignWith(t *testing.T, mutate func(tss.MessageContent) bool) map[ids.MemberID]error {
	shares := shared2of3(t)
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	return runForged(t, policy.ID, mutate, func(e *env) error { return e.sign(shares, signers, digestOf("forged"), nil) })
}

// C = N is no unit mod N^2: tss-lib's range-proof check raises it to a
// negative power and panics on the nil result in its own goroutine.
func TestForgedSignCiphertextNotAUnit(t *testing.T) {
	n := fixture(t, 1).p.PaillierSK.N // policy's key: fixture 1
	errs := forgedSignWith(t, func(c tss.MessageContent) bool {
		m, ok := c.(*signing.SignRound1Message1)
		if ok {
			m.C = n.Bytes()
		}
		return ok
	})
	wantCaught(t, errs, policy.ID, "round-1 ciphertext")
}

func TestForgedSignOversizedTheta(t *testing.T) {
	errs := forgedSignWith(t, func(c tss.MessageContent) bool {
		m, ok := c.(*signing.SignRound3Message)
		if ok {
			m.Theta = new(big.Int).Add(new(big.Int).SetBytes(m.Theta), curveQ).Bytes()
		}
		return ok
	})
	wantCaught(t, errs, policy.ID, "theta")
}

// A signer that waits for the others' round-3 thetas and sends one that
// cancels them makes the sum zero mod q: tss-lib's round 5 would use a nil
// inverse. The culprit cannot be named; every honest signer ends cleanly.
func TestForgedSignThetaSumZero(t *testing.T) {
	shares := shared2of3(t)
	forger := policy.ID
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	var (
		thetas = map[ids.MemberID]*big.Int{} // honest signers' thetas
		held   []*inflight                   // the forger's round-3 broadcast
		sent   bool
	)
	release := func() []*inflight {
		if sent || len(held) < len(signers)-1 || len(thetas) < len(signers)-1 {
			return nil
		}
		sent = true
		theta := new(big.Int)
		for _, th := range thetas {
			theta.Sub(theta, th)
		}
		theta.Mod(theta, curveQ)
		out := make([]*inflight, len(held))
		for i, m := range held {
			m.payload, m.note = withContent(t, m.payload, &signing.SignRound3Message{Theta: theta.Bytes()}), "forged"
			out[i] = m
		}
		return out
	}
	errs := runScripted(t, forger, func(e *env) error {
		e.filter = func(m *inflight) []*inflight {
			r3, ok := contentOf(m.payload).(*signing.SignRound3Message)
			if !ok {
				return []*inflight{m}
			}
			if m.from == forger {
				held = append(held, m)
				return release()
			}
			thetas[m.from] = new(big.Int).SetBytes(r3.Theta)
			for _, f := range release() {
				e.inject(f)
			}
			return []*inflight{m}
		}
		return e.sign(shares, signers, digestOf("theta"), nil)
	})
	if !sent {
		t.Fatal("the forged theta was never sent")
	}
	for id, err := range errs {
		se, ok := AsSessionError(err)
		if !ok || se.Kind != FailProtocol || len(se.Culprits) != 0 || !strings.Contains(se.Error(), "sum to zero") ||
			!strings.Contains(se.Error(), "cannot be named") {
			t.Fatalf("%s: got %v, want a protocol failure naming nobody", id, err)
		}
		t.Logf("%s: %v", id, err)
	}
}

// panicParty is a fault no real message causes once the checks are in: a
// tss-lib party that panics on the engine's own goroutine.
type panicParty struct{ tss.Party }

func (panicParty) Update(tss.ParsedMessage) (bool, *tss.Error) { panic("boom") }

func TestSessionSurvivesPanic(t *testing.T) {
	digest := digestOf("panic")
	signers := []ids.MemberID{agent.ID, policy.ID}
	sessions := signSessions(t, signers, digest)
	victim := sessions[policy.ID]
	victim.local[0].party = panicParty{victim.local[0].party}
	rd := sessions[agent.ID].Start()
	if rd.Err != nil {
		t.Fatal(rd.Err)
	}
	victim.Start()
	var got *SessionError
	for _, m := range rd.Messages {
		if r := victim.Step(Incoming{From: agent.ID, Broadcast: m.Broadcast, Payload: m.Payload}); r.Err != nil {
			got = r.Err
			break
		}
	}
	if got == nil || got.Kind != FailLocal || !errors.Is(got, ErrPanic) || !strings.Contains(got.Error(), "boom") {
		t.Fatalf("got %v, want the session failed by the panic", got)
	}
	if again := victim.Step(Incoming{From: agent.ID}); again.Err != nil || again.Done || len(again.Messages) > 0 {
		t.Fatal("a session failed by a panic acted on a later message")
	}
	t.Log(got)
}

const (
	childEnv  = "CUSTOS_TSS_CHILD"         // which child test to run
	sharesEnv = "CUSTOS_TSS_SHARED_SHARES" // where the parent left the 2-of-3 shares
)

// runChild re-runs this test binary as a child that runs only test name,
// under a CPU-time limit (and, without the race detector's shadow memory, a
// memory limit) that the child sets on itself; a regression that burns CPU
// or memory fails the test instead of hanging or killing the binary.
func runChild(t *testing.T, name string) {
	t.Helper()
	dir := t.TempDir()
	for id, sh := range shared2of3(t) {
		b, err := sh.MarshalSecret()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, string(id)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Only a guard against a child that blocks without using CPU.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+name, sharesEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("child output:\n%s", out)
	if err != nil {
		t.Fatalf("child %s: %v", name, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("child %s did not pass", name)
	}
}

// inChild limits the process when it is the child for name, and reports
// whether it is.
func inChild(t *testing.T, name string) bool {
	if os.Getenv(childEnv) != name {
		return false
	}
	const cpuSeconds = 300 // the honest path needs a few seconds of CPU, tens under -race
	if err := syscall.Setrlimit(syscall.RLIMIT_CPU, &syscall.Rlimit{Cur: cpuSeconds, Max: cpuSeconds}); err != nil {
		t.Fatalf("limit cpu: %v", err)
	}
	if !raceEnabled {
		const mem = 4 << 30
		if err := syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: mem, Max: mem}); err != nil {
			t.Fatalf("limit memory: %v", err)
		}
	}
	return true
}

// hugeModulus is an odd 48,000-bit modulus without small factors, and a W
// that passes the first steps of tss-lib's modulus-proof check for it (a
// Jacobi symbol of -1), so that the check goes on to 80 exponentiations
// modulo it: tens of minutes of CPU per honest joiner in tss-lib v2.0.2.
func hugeModulus() (n, w *big.Int) {
	n = new(big.Int).Lsh(bigOne, 48000-1)
	n.Add(n, big.NewInt(1))
	small := []int64{3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37}
	for {
		ok := true
		for _, p := range small {
			if new(big.Int).Mod(n, big.NewInt(p)).Sign() == 0 {
				ok = false
				break
			}
		}
		if ok {
			break
		}
		n.Add(n, big.NewInt(2))
	}
	for w = big.NewInt(2); big.Jacobi(w, n) != -1; w.Add(w, bigOne) {
	}
	return n, w
}

func TestReshareHugeModulusIsRefusedInChild(t *testing.T) {
	runChild(t, "TestReshareHugeModulusChild")
}

func TestReshareHugeModulusChild(t *testing.T) {
	if !inChild(t, "TestReshareHugeModulusChild") {
		t.Skip("runs as a child of TestReshareHugeModulusIsRefusedInChild")
	}
	n, w := hugeModulus()
	forgedReshare(t, agent2.ID, "size: field paillier_n", func(c tss.MessageContent) bool {
		m, ok := c.(*resharing.DGRound2Message1)
		if ok {
			m.PaillierN = n.Bytes()
			pf, err := modproof.NewProofFromBytes(m.ModProof)
			if err != nil {
				t.Errorf("decode mod proof: %v", err)
				return false
			}
			pf.W = w
			b := pf.Bytes()
			m.ModProof = b[:]
		}
		return ok
	})
}

// A modulus longer than tss-lib makes is refused: its cost to every
// honest verifier grows with the cube of its length.
func TestForgedReshareLongPaillierModulus(t *testing.T) {
	forgedReshare(t, agent2.ID, "paillier modulus: 4096 bits, want 2048", func(c tss.MessageContent) bool {
		m, ok := c.(*resharing.DGRound2Message1)
		if ok {
			n := new(big.Int).Lsh(bigOne, 4095)
			m.PaillierN = n.Add(n, bigOne).Bytes()
		}
		return ok
	})
}

// A member that withholds its round-1 message from one signer stalls that
// signer, which then sends nothing more: without stall notices the third
// signer would name the victim. Every honest signer names the withholder,
// and only it.
func TestWithheldRound1NamesTheWithholder(t *testing.T) {
	shares := shared2of3(t)
	forger, victim := policy.ID, agent.ID
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	errs := runScripted(t, forger, func(e *env) error {
		e.filter = func(m *inflight) []*inflight {
			if _, ok := contentOf(m.payload).(*signing.SignRound1Message1); ok && m.from == forger && m.to == victim {
				return nil
			}
			return []*inflight{m}
		}
		return e.sign(shares, signers, digestOf("withheld"), nil)
	})
	for id, err := range errs {
		se, ok := AsSessionError(err)
		if !ok || se.Kind != FailTimeout || len(se.Waiting) != 1 || se.Waiting[0] != forger || len(se.Culprits) != 0 {
			t.Fatalf("%s: got %v, want a timeout waiting for %s only", id, err, forger)
		}
		t.Logf("%s: %v", id, err)
	}
}

// Culprits from tss-lib are named once each, never this node.
func TestFailProtocolNamesEachCulpritOnce(t *testing.T) {
	sessions := signSessions(t, []ids.MemberID{agent.ID, policy.ID, guardian.ID}, digestOf("culprits"))
	s := sessions[agent.ID]
	p := s.parties
	pids := []*tss.PartyID{p[partyRef{policy.ID, tagMain}], p[partyRef{agent.ID, tagMain}], p[partyRef{policy.ID, tagMain}], p[partyRef{guardian.ID, tagMain}]}
	s.failProtocol(tss.NewError(errors.New("bad proofs"), "signing", 2, nil, pids...))
	got := s.take().Err
	if got == nil || !slices.Equal(got.Culprits, []ids.MemberID{guardian.ID, policy.ID}) {
		t.Fatalf("got %v, want culprits [%s %s]", got, guardian.ID, policy.ID)
	}
}

// A zero VSS share makes tss-lib's share check multiply the base point by
// zero, which panics in a goroutine of its own.
func TestForgedKeygenZeroVSSShare(t *testing.T) {
	forgedKeygen(t, policy.ID, "vss share: zero", func(c tss.MessageContent) bool {
		m, ok := c.(*keygen.KGRound2Message1)
		if ok {
			m.Share = []byte{0}
		}
		return ok
	})
}

// A zero response in a round-6 Schnorr proof is a multiplication by zero
// in tss-lib's round 7: a panic.
func TestForgedSignZeroSchnorrResponse(t *testing.T) {
	errs := forgedSignWith(t, func(c tss.MessageContent) bool {
		m, ok := c.(*signing.SignRound6Message)
		if ok {
			m.VProofT = []byte{0}
		}
		return ok
	})
	wantCaught(t, errs, policy.ID, "round-6 proof: zero")
}

func TestForgedSignBobProofS1MultipleOfQIsRefusedInChild(t *testing.T) {
	runChild(t, "TestForgedSignBobProofS1MultipleOfQChild")
}

// tss-lib checks a round-2 Bob proof (with check) only for q <= S1 <= q^3
// and then multiplies the base point by S1 mod q in its own goroutine: S1
// = q makes that a multiplication by zero, a panic that ends the process
// of every signer the proof is for. Run in a child so that a regression
// fails this test instead of killing the test binary.
func TestForgedSignBobProofS1MultipleOfQChild(t *testing.T) {
	if !inChild(t, "TestForgedSignBobProofS1MultipleOfQChild") {
		t.Skip("runs as a child of TestForgedSignBobProofS1MultipleOfQIsRefusedInChild")
	}
	errs := forgedSignWith(t, func(c tss.MessageContent) bool {
		m, ok := c.(*signing.SignRound2Message)
		if ok {
			m.ProofBobWc[6] = curveQ.Bytes() // S1
		}
		return ok
	})
	wantCaught(t, errs, policy.ID, "bob proof")
}

// A member that copies another's range-proof setup (N-tilde, h1, h2 and
// the DLN proofs, all valid) makes tss-lib's uniqueness check of h1 and h2
// blame whichever of the two has the higher party index: with the copier
// lower, the member copied from. The member copied from knows its own
// values and names the copier; a third member cannot tell which came
// first and names neither; nobody names the member copied from.
func TestForgedKeygenCopiedSetupBlamesOnlyTheCopier(t *testing.T) {
	c := Committee{Members: []Member{agent, policy, guardian}, Threshold: 1}
	byIndex := c.IDs()
	slices.SortFunc(byIndex, func(a, b ids.MemberID) int { return partyKey(a, 0).Cmp(partyKey(b, 0)) })
	forger, third, victim := byIndex[0], byIndex[1], byIndex[2]
	errs := runScripted(t, forger, func(e *env) error {
		copySetup(t, e, forger, victim, func(dst, src tss.MessageContent) bool {
			d, ok := dst.(*keygen.KGRound1Message)
			if s, _ := src.(*keygen.KGRound1Message); ok && s != nil {
				d.NTilde, d.H1, d.H2, d.Dlnproof_1, d.Dlnproof_2 = s.NTilde, s.H1, s.H2, s.Dlnproof_1, s.Dlnproof_2
			}
			return ok
		})
		return e.keygen(c.IDs(), c.Threshold, 0)
	})
	wantCopierBlamed(t, errs, forger, third, victim)
}

// The same in a reshare, where the new members send their setups.
func TestForgedReshareCopiedSetupBlamesOnlyTheCopier(t *testing.T) {
	old := shared2of3(t)
	key := old[agent.ID].Key()
	nc := Committee{Members: []Member{agent2, policy, guardian}, Threshold: 1}
	gen := key.Generation + 1
	byIndex := nc.IDs()
	slices.SortFunc(byIndex, func(a, b ids.MemberID) int { return partyKey(a, gen).Cmp(partyKey(b, gen)) })
	forger, third, victim := byIndex[0], byIndex[1], byIndex[2]
	oldSigners := []ids.MemberID{policy.ID, guardian.ID}
	errs := runScripted(t, forger, func(e *env) error {
		copySetup(t, e, forger, victim, func(dst, src tss.MessageContent) bool {
			d, ok := dst.(*resharing.DGRound2Message1)
			if s, _ := src.(*resharing.DGRound2Message1); ok && s != nil {
				d.NTilde, d.H1, d.H2, d.Dlnproof_1, d.Dlnproof_2 = s.NTilde, s.H1, s.H2, s.Dlnproof_1, s.Dlnproof_2
			}
			return ok
		})
		return e.reshare(old, oldSigners, nc.IDs(), nc.Threshold, 3)
	})
	wantCopierBlamed(t, errs, forger, third, victim)
}

// copySetup holds forger's messages that copy reports as setup messages
// (copy(m, nil)) until victim's has passed, then sends them with victim's
// setup copied in (copy(m, victim's)).
func copySetup(t *testing.T, e *env, forger, victim ids.MemberID, copy func(dst, src tss.MessageContent) bool) {
	var (
		held   []*inflight
		copied tss.MessageContent
	)
	setup := func(m *inflight) tss.MessageContent {
		c := contentOf(m.payload)
		if c == nil || !copy(c, nil) {
			return nil
		}
		return c
	}
	rewrite := func(m *inflight) *inflight {
		c := setup(m)
		copy(c, copied)
		m.payload, m.note = withContent(t, m.payload, c), "forged"
		return m
	}
	e.filter = func(m *inflight) []*inflight {
		c := setup(m)
		switch {
		case c == nil:
		case m.from == forger && copied == nil:
			held = append(held, m) // until the victim's values are known
			return nil
		case m.from == forger:
			return []*inflight{rewrite(m)}
		case m.from == victim && copied == nil:
			copied = c
			out := []*inflight{m}
			for _, h := range held {
				out = append(out, rewrite(h))
			}
			held = nil
			return out
		}
		return []*inflight{m}
	}
}

func wantCopierBlamed(t *testing.T, errs map[ids.MemberID]error, forger, third, victim ids.MemberID) {
	t.Helper()
	for id, err := range errs {
		se, ok := AsSessionError(err)
		if !ok {
			t.Fatalf("%s: got %v, want a session error", id, err)
		}
		t.Logf("%s: %v", id, err)
		if slices.Contains(se.Culprits, victim) {
			t.Errorf("%s names %s, whose setup was copied", id, victim)
		}
	}
	if se, _ := AsSessionError(errs[victim]); se == nil || !slices.Equal(se.Culprits, []ids.MemberID{forger}) {
		t.Errorf("%s: got %v, want the copier %s named", victim, errs[victim], forger)
	}
	if se, _ := AsSessionError(errs[third]); se == nil || len(se.Culprits) != 0 {
		t.Errorf("%s: got %v, want no culprit named", third, errs[third])
	}
}
