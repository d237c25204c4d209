package tss

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"

	tsscrypto "github.com/bnb-chain/tss-lib/v2/crypto"
	"github.com/bnb-chain/tss-lib/v2/crypto/modproof"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
)

// Hardening: checks on incoming messages that tss-lib v2.0.2 lacks (fixed
// upstream after that release) or that Custos adds, run before a message
// reaches tss-lib. A failure names the sender as culprit.

// ErrHardening marks a message refused by a hardening check.
var ErrHardening = errors.New("tss: message failed a hardening check")

var bigOne = big.NewInt(1)

// hardener keeps what the checks need across messages of one session.
type hardener struct {
	// vssCount is the number of Feldman VSS commitments a dealer must
	// publish: the threshold of the committee being dealt to, plus one.
	vssCount int
	// paillierN holds each keygen party's Paillier modulus from round 1,
	// needed to check its round-2 modulus proof.
	paillierN map[partyRef]*big.Int

	// Resharing: tss-lib checks the dealers' round-1 SSIDs against old
	// party 0's and blames the other party on a mismatch, and never checks
	// the public key they claim. The engine checks both itself.
	wantPub   *tsscrypto.ECPoint // the key being reshared
	wantSSID  []byte             // what honest old signers send; nil when this node holds no old share
	firstSSID []byte             // the first SSID seen, when wantSSID is unknown
}

func newHardener(threshold int) *hardener {
	return &hardener{vssCount: threshold + 1, paillierN: map[partyRef]*big.Int{}}
}

// errDisagree: old signers sent different SSIDs and this node, holding no
// old share, cannot tell which of them is honest.
var errDisagree = errors.New("tss: old signers sent different session setups (ssid); this node holds no old share to tell which is honest")

// errNotYet means the check needs an earlier message from the same sender
// that has not arrived; the message waits for it.
var errNotYet = errors.New("tss: message waits for an earlier one")

func hardenErr(check string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrHardening, check, fmt.Sprintf(format, args...))
}

// check runs every check that applies to msg from sender.
func (h *hardener) check(from partyRef, msg tss.ParsedMessage) error {
	switch c := msg.Content().(type) {
	case *keygen.KGRound1Message:
		if err := checkModuli(c.UnmarshalPaillierPK().N, c.UnmarshalNTilde()); err != nil {
			return err
		}
		h.paillierN[from] = c.UnmarshalPaillierPK().N
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
		n := c.UnmarshalPaillierPK().N
		if err := checkModuli(n, c.UnmarshalNTilde()); err != nil {
			return err
		}
		pf, err := c.UnmarshalModProof()
		return checkModProof(pf, err, n)
	case *resharing.DGRound3Message2:
		return h.checkVSSCount(len(c.GetVDecommitment()))
	case *signing.SignRound1Message1:
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
	}
	return nil
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

func checkModuli(n, nTilde *big.Int) error {
	if n == nil || n.BitLen() < minModulusBits {
		return hardenErr("paillier modulus", "%d bits, want at least %d", bitLen(n), minModulusBits)
	}
	if nTilde == nil || nTilde.BitLen() < minModulusBits {
		return hardenErr("n-tilde", "%d bits, want at least %d", bitLen(nTilde), minModulusBits)
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
