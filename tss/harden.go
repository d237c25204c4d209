package tss

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"

	tsscrypto "github.com/bnb-chain/tss-lib/v2/crypto"
	"github.com/bnb-chain/tss-lib/v2/crypto/dlnproof"
	"github.com/bnb-chain/tss-lib/v2/crypto/modproof"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Hardening: checks on incoming messages that tss-lib v2.0.2 lacks (fixed
// upstream after that release) or that Custos adds, run before a message
// reaches tss-lib. A failure names the sender as culprit.
//
// Several of tss-lib's panics happen in goroutines it starts itself (the
// proof checks of keygen round 3, signing rounds 2 and 3, resharing round
// 4), where no recover of ours can reach: every value that can reach one
// is checked here first. The checks also bound the work one message can
// cause: every integer has an upper bound as well as a lower one.

// ErrHardening marks a message refused by a hardening check.
var ErrHardening = errors.New("tss: message failed a hardening check")

var (
	bigOne = big.NewInt(1)
	curveQ = tss.S256().Params().N
)

const (
	// maxIntBytes bounds every integer field of every message: the largest
	// honest one (a Paillier ciphertext mod N^2, a factoring-proof
	// response) is about 5,000 bits, and tss-lib's exponentiations grow
	// with the square of the modulus and linearly in the exponent.
	maxIntBytes = 1024
	// maxParts bounds every repeated field: the largest honest one is a
	// DLN proof (2 + 2*128 parts).
	maxParts = 2 + 2*dlnproof.Iterations
)

// hardener keeps what the checks need across messages of one session.
type hardener struct {
	// vssCount is the number of Feldman VSS commitments a dealer must
	// publish: the threshold of the committee being dealt to, plus one.
	vssCount int
	// paillierN holds each keygen party's Paillier modulus from round 1,
	// needed to check its round-2 modulus proof; in signing, each
	// signer's modulus from the share.
	paillierN map[partyRef]*big.Int
	// setups: who sent each h1 and h2 (this node's own parties included),
	// which tss-lib requires to be distinct across parties.
	setups map[string]setupOwner

	// Resharing: tss-lib checks the dealers' round-1 SSIDs against old
	// party 0's and blames the other party on a mismatch, and never checks
	// the public key they claim. The engine checks both itself.
	wantPub   *tsscrypto.ECPoint // the key being reshared
	wantSSID  []byte             // what honest old signers send; nil when this node holds no old share
	firstSSID []byte             // the first SSID seen, when wantSSID is unknown

	// Signing: the ciphertexts sent to this node are under ownN; tss-lib
	// inverts the sum of the round-3 thetas in round 4 and uses the
	// inverse in round 5 (a nil inverse panics there).
	ownN      *big.Int
	signers   int                   // parties in the signing session
	thetas    map[partyRef]*big.Int // round-3 thetas received
	ownTheta  *big.Int              // this node's own, seen on its way out
	thetaDone bool                  // the sum was checked and is a unit
}

func newHardener(threshold int) *hardener {
	return &hardener{vssCount: threshold + 1, paillierN: map[partyRef]*big.Int{}, thetas: map[partyRef]*big.Int{},
		setups: map[string]setupOwner{}}
}

type setupOwner struct {
	ref partyRef
	own bool // a party of this node sent it
}

// errNoCulprit marks a failure this node cannot attribute to one member;
// the session fails without naming anyone.
var errNoCulprit = errors.New("tss: the culprit cannot be named")

// errDisagree: old signers sent different SSIDs and this node, holding no
// old share, cannot tell which of them is honest.
var errDisagree = fmt.Errorf("%w: old signers sent different session setups (ssid); this node holds no old share to tell which is honest", errNoCulprit)

// errThetaSum: the round-3 thetas sum to zero mod q, so tss-lib's round 5
// would use a nil inverse. Any one signer can cause it with a theta of its
// own choosing; the values are blinded, so this node cannot tell who.
var errThetaSum = fmt.Errorf("%w: the signers' round-3 thetas sum to zero mod q (a signer chose its theta to cancel the others)", errNoCulprit)

// errNotYet means the check needs an earlier message from the same sender
// (or, for signing round 4, every round-3 message) that has not arrived;
// the message waits for it.
var errNotYet = errors.New("tss: message waits for an earlier one")

func hardenErr(check string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrHardening, check, fmt.Sprintf(format, args...))
}

// check runs every check that applies to msg from sender.
func (h *hardener) check(from partyRef, msg tss.ParsedMessage) error {
	if err := checkSizes(msg.Content()); err != nil {
		return err
	}
	switch c := msg.Content().(type) {
	case *keygen.KGRound1Message:
		n, nTilde := c.UnmarshalPaillierPK().N, c.UnmarshalNTilde()
		if err := checkSetup(n, nTilde, c.UnmarshalH1(), c.UnmarshalH2()); err != nil {
			return err
		}
		if err := checkDLNProofs(nTilde, c.GetDlnproof_1(), c.GetDlnproof_2()); err != nil {
			return err
		}
		if err := h.checkSetupUnique(from, c.GetH1(), c.GetH2()); err != nil {
			return err
		}
		h.paillierN[from] = n
	case *keygen.KGRound2Message1:
		return checkNonZeroScalar("vss share", new(big.Int).SetBytes(c.GetShare()))
	case *keygen.KGRound2Message2:
		if err := h.checkVSSCount(len(c.GetDeCommitment())); err != nil {
			return err
		}
		n, ok := h.paillierN[from]
		if !ok {
			return errNotYet
		}
		pf, err := c.UnmarshalModProof()
		return checkModProof(pf, err, n)
	case *resharing.DGRound1Message:
		pub, err := c.UnmarshalECDSAPub(tss.S256())
		if err != nil || h.wantPub == nil || !pub.Equals(h.wantPub) {
			return hardenErr("reshare public key", "the dealer claims a public key other than the key's")
		}
		ssid := c.UnmarshalSSID()
		switch {
		case h.wantSSID != nil:
			if !bytes.Equal(ssid, h.wantSSID) {
				return hardenErr("reshare ssid", "the dealer's ssid does not match the old committee's data")
			}
		case h.firstSSID == nil:
			h.firstSSID = ssid
		case !bytes.Equal(ssid, h.firstSSID):
			return errDisagree
		}
	case *resharing.DGRound2Message1:
		n, nTilde := c.UnmarshalPaillierPK().N, c.UnmarshalNTilde()
		if err := checkSetup(n, nTilde, c.UnmarshalH1(), c.UnmarshalH2()); err != nil {
			return err
		}
		if err := checkDLNProofs(nTilde, c.GetDlnproof_1(), c.GetDlnproof_2()); err != nil {
			return err
		}
		if err := h.checkSetupUnique(from, c.GetH1(), c.GetH2()); err != nil {
			return err
		}
		pf, err := c.UnmarshalModProof()
		return checkModProof(pf, err, n)
	case *resharing.DGRound3Message1:
		return checkNonZeroScalar("vss share", new(big.Int).SetBytes(c.GetShare()))
	case *resharing.DGRound3Message2:
		return h.checkVSSCount(len(c.GetVDecommitment()))
	case *signing.SignRound1Message1:
		if err := checkCiphertext("round-1 ciphertext", c.UnmarshalC(), h.paillierN[from]); err != nil {
			return err
		}
		pf, err := c.UnmarshalRangeProofAlice()
		if err != nil {
			return hardenErr("range proof", "undecodable: %v", err)
		}
		switch {
		case pf.S.Cmp(bigOne) == 0:
			return hardenErr("range proof", "S = 1")
		case pf.Z.Cmp(bigOne) == 0:
			return hardenErr("range proof", "Z = 1")
		case pf.S1.Cmp(pf.S2) == 0:
			return hardenErr("range proof", "S1 = S2")
		}
	case *signing.SignRound2Message:
		// Encrypted under this node's key, which tss-lib decrypts.
		if err := checkCiphertext("round-2 ciphertext c1", new(big.Int).SetBytes(c.GetC1()), h.ownN); err != nil {
			return err
		}
		if err := checkCiphertext("round-2 ciphertext c2", new(big.Int).SetBytes(c.GetC2()), h.ownN); err != nil {
			return err
		}
		// tss-lib multiplies the base point by S1 mod q in its own
		// goroutine (a panic at zero) after checking only q <= S1 <= q^3.
		pf, err := c.UnmarshalProofBobWC(tss.S256())
		if err != nil {
			return hardenErr("bob proof", "undecodable: %v", err)
		}
		if new(big.Int).Mod(pf.S1, curveQ).Sign() == 0 {
			return hardenErr("bob proof", "S1 is a multiple of q")
		}
	case *signing.SignRound3Message:
		theta := new(big.Int).SetBytes(c.GetTheta())
		if err := checkScalar("theta", theta); err != nil {
			return err
		}
		h.thetas[from] = theta
	case *signing.SignRound4Message:
		// tss-lib runs round 5, which uses the inverse of the sum of the
		// thetas, as soon as every round-4 message is in: hold these
		// until the sum is known to be a unit.
		if err := h.checkThetaSum(); err != nil {
			return err
		}
		return checkNonZeroScalar("round-4 proof t", new(big.Int).SetBytes(c.GetProofT()))
	case *signing.SignRound6Message:
		for _, v := range [][]byte{c.GetProofT(), c.GetVProofT(), c.GetVProofU()} {
			if err := checkNonZeroScalar("round-6 proof", new(big.Int).SetBytes(v)); err != nil {
				return err
			}
		}
	case *signing.SignRound9Message:
		return checkScalar("signature share", c.UnmarshalS())
	}
	return nil
}

// sent records what this node's own parties emit that a check needs.
func (h *hardener) sent(from partyRef, msg tss.ParsedMessage) {
	switch c := msg.Content().(type) {
	case *signing.SignRound3Message:
		h.ownTheta = new(big.Int).SetBytes(c.GetTheta())
	case *keygen.KGRound1Message:
		h.recordSetup(from, true, c.GetH1(), c.GetH2())
	case *resharing.DGRound2Message1:
		h.recordSetup(from, true, c.GetH1(), c.GetH2())
	}
}

func (h *hardener) recordSetup(from partyRef, own bool, values ...[]byte) {
	for _, v := range values {
		k := string(new(big.Int).SetBytes(v).Bytes())
		if _, ok := h.setups[k]; !ok {
			h.setups[k] = setupOwner{ref: from, own: own}
		}
	}
}

// checkSetupUnique: tss-lib refuses an h1 or h2 that another party already
// sent, blaming whichever has the higher party index, so a member copying
// an honest member's whole setup (valid proofs included) could have the
// honest one named. Only the member copied from knows which came first;
// any other member cannot name either.
func (h *hardener) checkSetupUnique(from partyRef, values ...[]byte) error {
	for _, v := range values {
		prev, ok := h.setups[string(new(big.Int).SetBytes(v).Bytes())]
		switch {
		case !ok || prev.ref == from:
		case prev.own:
			return hardenErr("range-proof setup", "h1 or h2 copied from this node's own")
		default:
			return fmt.Errorf("%w: %s and %s sent the same range-proof setup value (h1 or h2); one copied the other", errNoCulprit, prev.ref.Member, from.Member)
		}
	}
	h.recordSetup(from, false, values...)
	return nil
}

// checkThetaSum returns errNotYet until every signer's theta is known.
func (h *hardener) checkThetaSum() error {
	if h.thetaDone {
		return nil
	}
	if h.ownTheta == nil || len(h.thetas) < h.signers-1 {
		return errNotYet
	}
	sum := new(big.Int).Set(h.ownTheta)
	for _, t := range h.thetas {
		sum.Add(sum, t)
	}
	if sum.Mod(sum, curveQ).Sign() == 0 {
		return errThetaSum
	}
	h.thetaDone = true
	return nil
}

// checkSizes bounds every integer and every list of integers in a message,
// whatever its type, before anything parses them.
func checkSizes(c tss.MessageContent) error {
	var err error
	c.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.BytesKind {
			return true
		}
		if !fd.IsList() {
			if n := len(v.Bytes()); n > maxIntBytes {
				err = hardenErr("size", "field %s has %d bytes, at most %d", fd.Name(), n, maxIntBytes)
			}
			return err == nil
		}
		l := v.List()
		if l.Len() > maxParts {
			err = hardenErr("size", "field %s has %d parts, at most %d", fd.Name(), l.Len(), maxParts)
			return false
		}
		for i := range l.Len() {
			if n := len(l.Get(i).Bytes()); n > maxIntBytes {
				err = hardenErr("size", "field %s part %d has %d bytes, at most %d", fd.Name(), i, n, maxIntBytes)
				return false
			}
		}
		return true
	})
	return err
}

// checkVSSCount: a hash de-commitment of Feldman commitments holds a
// blinding value and two coordinates per commitment, and there must be
// exactly t+1 commitments; more would let a dealer raise the threshold.
func (h *hardener) checkVSSCount(parts int) error {
	want := 1 + 2*h.vssCount
	if parts != want {
		return hardenErr("vss commitment count", "%d commitments (%d parts), want t+1 = %d", (parts-1)/2, parts, h.vssCount)
	}
	return nil
}

// checkModuli: tss-lib makes every Paillier modulus and N-tilde of exactly
// modulusBits bits, the product of two odd primes. A shorter one is weak;
// a longer one costs every honest verifier time that grows with its cube;
// an even one panics in the Jacobi symbol of the modulus proof.
func moduliProblem(n, nTilde *big.Int) error {
	if err := modulusProblem("paillier modulus", n); err != nil {
		return err
	}
	return modulusProblem("n-tilde", nTilde)
}

func modulusProblem(what string, n *big.Int) error {
	switch {
	case n == nil || n.BitLen() != modulusBits:
		return fmt.Errorf("%s: %d bits, want %d", what, bitLen(n), modulusBits)
	case n.Bit(0) == 0:
		return fmt.Errorf("%s: even", what)
	}
	return nil
}

// checkSetup checks a party's Paillier modulus and its range-proof setup
// as sent in a message.
func checkSetup(n, nTilde, h1, h2 *big.Int) error {
	if err := setupProblem(n, nTilde, h1, h2); err != nil {
		return fmt.Errorf("%w: %v", ErrHardening, err)
	}
	return nil
}

// setupProblem checks a Paillier modulus and a range-proof setup (N-tilde,
// h1, h2: distinct units in (1, N-tilde)), in a message or a share.
func setupProblem(n, nTilde, h1, h2 *big.Int) error {
	if err := moduliProblem(n, nTilde); err != nil {
		return err
	}
	for _, h := range []*big.Int{h1, h2} {
		if h == nil || h.Cmp(bigOne) <= 0 || h.Cmp(nTilde) >= 0 || new(big.Int).GCD(nil, nil, h, nTilde).Cmp(bigOne) != 0 {
			return errors.New("range-proof setup: h1 or h2 is not a unit in (1, n-tilde)")
		}
	}
	if h1.Cmp(h2) == 0 {
		return errors.New("range-proof setup: h1 = h2")
	}
	return nil
}

// checkDLNProofs: tss-lib parses a DLN proof through length prefixes that
// it reads as int64 without a sign check (a slice panic in its own
// goroutine); require the layout honest parties send, with every value
// below N-tilde.
func checkDLNProofs(nTilde *big.Int, proofs ...[][]byte) error {
	const it = dlnproof.Iterations
	for _, bzs := range proofs {
		if len(bzs) != 2+2*it || new(big.Int).SetBytes(bzs[0]).Cmp(big.NewInt(it)) != 0 ||
			new(big.Int).SetBytes(bzs[1+it]).Cmp(big.NewInt(it)) != 0 {
			return hardenErr("dln proof", "malformed layout")
		}
		for i, b := range bzs {
			if i == 0 || i == 1+it {
				continue
			}
			if new(big.Int).SetBytes(b).Cmp(nTilde) >= 0 {
				return hardenErr("dln proof", "value %d is not below n-tilde", i)
			}
		}
	}
	return nil
}

// checkScalar: a value that honest parties reduce mod q.
func checkScalar(what string, x *big.Int) error {
	if x.Cmp(curveQ) >= 0 {
		return hardenErr(what, "not below the curve order")
	}
	return nil
}

// checkNonZeroScalar: a value that tss-lib multiplies a point by, where a
// zero gives the point at infinity and tss-lib panics (ScalarBaseMult in
// the VSS share check, in its own goroutine; the Schnorr checks of
// signing rounds 5 and 7).
func checkNonZeroScalar(what string, x *big.Int) error {
	if x.Sign() == 0 {
		return hardenErr(what, "zero")
	}
	return checkScalar(what, x)
}

// checkCiphertext: a Paillier ciphertext must be a unit mod N^2; tss-lib
// raises it to a negative power in the range-proof check, and a non-unit
// has no inverse there (a nil result, a panic in its goroutine).
func checkCiphertext(what string, c, n *big.Int) error {
	if n == nil {
		return hardenErr(what, "no paillier modulus for the sender")
	}
	if c.Sign() <= 0 || c.Cmp(new(big.Int).Mul(n, n)) >= 0 || new(big.Int).GCD(nil, nil, c, n).Cmp(bigOne) != 0 {
		return hardenErr(what, "not a unit mod N^2")
	}
	return nil
}

func bitLen(x *big.Int) int {
	if x == nil {
		return 0
	}
	return x.BitLen()
}

// checkModProof: the Paillier-Blum modulus proof's W must be a unit mod N;
// with gcd(W, N) != 1 the proof can pass for a modulus that is not a
// product of two safe-ish primes.
func checkModProof(pf *modproof.ProofMod, err error, n *big.Int) error {
	if err != nil {
		return hardenErr("modulus proof", "undecodable: %v", err)
	}
	w := pf.W
	if w == nil || new(big.Int).GCD(nil, nil, w, n).Cmp(bigOne) != 0 {
		return hardenErr("modulus proof", "gcd(W, N) != 1")
	}
	return nil
}
