package tss

import (
	"crypto/ecdsa"
	"crypto/rand"
	"math/big"
	"slices"
	"strings"
	"testing"

	tsscrypto "github.com/bnb-chain/tss-lib/v2/crypto"
	"github.com/bnb-chain/tss-lib/v2/crypto/paillier"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/ethereum/go-ethereum/crypto"
)

// syntheticShare builds, without a key generation, the share of member
// self in a 2-of-5 key dealt by a polynomial of degree 1: a committee
// larger than t+2, whose middle public shares are neither among the first
// nor the last t+1.
func syntheticShare(t *testing.T, self int) *Share {
	t.Helper()
	c := Committee{Members: []Member{agent, policy, guardian, guardian2, guardian3}, Threshold: 1}
	q := tss.S256().Params().N
	a0, _ := rand.Int(rand.Reader, q)
	a1, _ := rand.Int(rand.Reader, q)
	f := func(x *big.Int) *big.Int {
		y := new(big.Int).Mul(a1, x)
		return y.Add(y, a0).Mod(y, q)
	}
	n := len(c.Members)
	d := keygen.NewLocalPartySaveData(n)
	for j, m := range c.Members {
		pp := fixture(t, j).p
		d.Ks[j] = partyKey(m.ID, 0)
		d.BigXj[j] = tsscrypto.ScalarBaseMult(tss.S256(), f(d.Ks[j]))
		d.PaillierPKs[j] = &paillier.PublicKey{N: pp.PaillierSK.N}
		d.NTildej[j], d.H1j[j], d.H2j[j] = pp.NTildei, pp.H1i, pp.H2i
		if j == self {
			d.LocalPreParams = pp
			d.Xi, d.ShareID = f(d.Ks[j]), d.Ks[j]
		}
	}
	d.ECDSAPub = tsscrypto.ScalarBaseMult(tss.S256(), a0)
	pub := &ecdsa.PublicKey{Curve: crypto.S256(), X: d.ECDSAPub.X(), Y: d.ECDSAPub.Y()}
	key := KeyInfo{Address: crypto.PubkeyToAddress(*pub), PublicKey: crypto.FromECDSAPub(pub), Committee: c, GuardianFloor: c.GuardianFloor()}
	sh := &Share{key: key, self: c.Members[self].ID, data: d}
	if err := sh.check(); err != nil {
		t.Fatalf("synthetic share: %v", err)
	}
	return sh
}

// Every public share is checked against the polynomial, and every party's
// range-proof setup as well as this node's own.
func TestShareChecksEveryPublicShareAndSetup(t *testing.T) {
	sh := syntheticShare(t, 0)
	b, err := sh.MarshalSecret()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnmarshalShare(b); err != nil {
		t.Fatalf("untampered share refused: %v", err)
	}
	g := tsscrypto.ScalarBaseMult(tss.S256(), big.NewInt(1))
	tampers := map[string]struct {
		want   string
		tamper func(*Share)
	}{
		"moved middle point": {"party 2 is not on the polynomial", func(s *Share) {
			s.data.BigXj = slices.Clone(s.data.BigXj)
			s.data.BigXj[2], _ = s.data.BigXj[2].Add(g)
		}},
		"peer h1 = h2": {"party 3: range-proof setup: h1 = h2", func(s *Share) {
			s.data.H2j = slices.Clone(s.data.H2j)
			s.data.H2j[3] = s.data.H1j[3]
		}},
		"peer h1 not below n-tilde": {"party 1: range-proof setup", func(s *Share) {
			s.data.H1j = slices.Clone(s.data.H1j)
			s.data.H1j[1] = new(big.Int).Add(s.data.H1j[1], s.data.NTildej[1])
		}},
		"peer n-tilde even": {"party 4: n-tilde: even", func(s *Share) {
			s.data.NTildej = slices.Clone(s.data.NTildej)
			s.data.NTildej[4] = new(big.Int).Add(s.data.NTildej[4], bigOne)
		}},
		"peer paillier modulus long": {"party 2: paillier modulus: 2049 bits", func(s *Share) {
			s.data.PaillierPKs = slices.Clone(s.data.PaillierPKs)
			s.data.PaillierPKs[2] = &paillier.PublicKey{N: new(big.Int).Lsh(s.data.PaillierPKs[2].N, 1)}
		}},
	}
	for name, tc := range tampers {
		c, err := UnmarshalShare(b)
		if err != nil {
			t.Fatal(err)
		}
		tc.tamper(c)
		bad, err := c.MarshalSecret()
		if err != nil {
			t.Fatal(err)
		}
		_, err = UnmarshalShare(bad)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
}
