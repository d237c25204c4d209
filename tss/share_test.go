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
	"github.com/custos-wallet/custos/ids"
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

func TestShareRoundTripAndRedaction(t *testing.T) {
	sh := shared2of3(t)[policy.ID]
	b, err := sh.MarshalSecret()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalShare(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Key().Address != sh.Key().Address || back.Self() != sh.Self() || back.data.Xi.Cmp(sh.data.Xi) != 0 {
		t.Fatal("share changed in a round trip")
	}
	if s := sh.String(); len(s) > 120 || strings.Contains(s, sh.data.Xi.String()[:8]) {
		t.Fatalf("String leaks: %q", s)
	}
	// A share claimed by another member, or with its data altered, is
	// refused; so is anything after the share.
	tampers := map[string]func(*Share){
		"holder":           func(s *Share) { s.self = agent.ID },
		"secret":           func(s *Share) { s.data.Xi = new(big.Int).Add(s.data.Xi, big.NewInt(1)) },
		"party key":        func(s *Share) { s.data.Ks[0] = new(big.Int).Add(s.data.Ks[0], big.NewInt(1)) },
		"public share":     func(s *Share) { s.data.BigXj[0] = s.data.BigXj[1] },
		"missing paillier": func(s *Share) { s.data.PaillierPKs[2] = nil },
		"threshold":        func(s *Share) { s.key.Committee.Threshold = 2; s.key.GuardianFloor = 1 },
		"own n-tilde": func(s *Share) {
			s.data.NTildej = slices.Clone(s.data.NTildej)
			s.data.NTildej[indexOfKey(s)] = s.data.H1i
		},
	}
	for name, tamper := range tampers {
		c, err := UnmarshalShare(b)
		if err != nil {
			t.Fatal(err)
		}
		tamper(c)
		bad, err := c.MarshalSecret()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := UnmarshalShare(bad); err == nil {
			t.Errorf("share with altered %s accepted", name)
		} else if strings.Contains(err.Error(), sh.data.Xi.String()[:8]) {
			t.Errorf("%s: error leaks the secret: %v", name, err)
		}
	}
	if _, err := UnmarshalShare(append([]byte(`{"unknown":1,`), b[1:]...)); err == nil {
		t.Fatal("unknown field accepted")
	}
	if _, err := UnmarshalShare(b[:len(b)/2]); err == nil {
		t.Fatal("truncated share accepted")
	}
	if _, err := UnmarshalShare(append(append([]byte(nil), b...), []byte(`{"x":1}`)...)); err == nil {
		t.Fatal("data after the share accepted")
	}
	k := sh.Key()
	k.Committee.Members[0].Role = ids.RoleGuardian
	k.PublicKey[1] ^= 1
	if sh.Key().Committee.Members[0].Role == ids.RoleGuardian || sh.Key().PublicKey[1] == k.PublicKey[1] {
		t.Fatal("Key() hands out the share's own slices")
	}
}

func indexOfKey(s *Share) int {
	for j, k := range s.data.Ks {
		if k.Cmp(s.data.ShareID) == 0 {
			return j
		}
	}
	return -1
}
