package tss

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"

	tsscrypto "github.com/bnb-chain/tss-lib/v2/crypto"
	"github.com/bnb-chain/tss-lib/v2/crypto/ckd"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// KeyInfo is the public description of a threshold key: who holds it, how
// many sign, its public key and address. Every member holds an identical
// copy.
type KeyInfo struct {
	Address   common.Address `json:"address"`
	PublicKey []byte         `json:"public_key"` // 65-byte uncompressed secp256k1 point
	Committee Committee      `json:"committee"`
	// Generation counts reshares: party ids are derived from it, so a member
	// of both committees of a reshare takes part under two distinct ids.
	Generation    uint32 `json:"generation"`
	GuardianFloor int    `json:"guardian_floor"`
}

// ID returns the key's id.
func (k KeyInfo) ID() ids.KeyID { return ids.KeyIDOf(k.Address) }

// Describe renders the key for logs and CLI output, guardian floor included.
func (k KeyInfo) Describe() string {
	return fmt.Sprintf("%s %s generation %d", k.Address.Hex(), k.Committee.Describe(), k.Generation)
}

// validate checks that the description is self-consistent: a valid
// committee, its guardian floor, and an address that is the public key's.
func (k KeyInfo) validate() error {
	if err := k.Committee.Validate(); err != nil {
		return fmt.Errorf("key %s: %w", k.Address.Hex(), err)
	}
	if k.GuardianFloor != k.Committee.GuardianFloor() {
		return fmt.Errorf("key %s: guardian floor %d does not match the committee's %d", k.Address.Hex(), k.GuardianFloor, k.Committee.GuardianFloor())
	}
	pub, err := k.ecdsaPublicKey()
	if err != nil {
		return err
	}
	if got := crypto.PubkeyToAddress(*pub); got != k.Address {
		return fmt.Errorf("key %s: the public key's address is %s", k.Address.Hex(), got.Hex())
	}
	return nil
}

// canonical is the form bound into sessions: committee members sorted.
func (k KeyInfo) canonical() KeyInfo {
	k = k.clone()
	k.Committee = k.Committee.Canonical()
	return k
}

// ecdsaPublicKey decodes PublicKey.
func (k KeyInfo) ecdsaPublicKey() (*ecdsa.PublicKey, error) {
	pub, err := crypto.UnmarshalPubkey(k.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("tss: key %s public key: %w", k.Address.Hex(), err)
	}
	return pub, nil
}

// ChildKey is a non-hardened child of a threshold key: the same committee
// signs for it, with a public offset derived from the path.
type ChildKey struct {
	Path      []uint32       `json:"path"`
	Address   common.Address `json:"address"`
	PublicKey []byte         `json:"public_key"`
	delta     *big.Int
}

// Child derives the non-hardened child key at path. The chain code is
// derived from the parent public key, since a threshold key has none of its
// own; anyone holding KeyInfo can derive the same child addresses.
func (k KeyInfo) Child(path []uint32) (ChildKey, error) {
	if len(path) == 0 {
		return ChildKey{}, errors.New("tss: child key path is empty")
	}
	for _, i := range path {
		if i >= ckd.HardenedKeyStart {
			return ChildKey{}, fmt.Errorf("tss: child key index %d is hardened; only non-hardened derivation is possible", i)
		}
	}
	pub, err := k.ecdsaPublicKey()
	if err != nil {
		return ChildKey{}, err
	}
	ec := tss.S256()
	compressed := crypto.CompressPubkey(pub)
	chain := sha256.Sum256(append([]byte("custos/chaincode/v1"), compressed...))
	parent := &ckd.ExtendedKey{
		PublicKey:  ecdsa.PublicKey{Curve: ec, X: pub.X, Y: pub.Y},
		ChainCode:  chain[:],
		ParentFP:   []byte{0, 0, 0, 0},
		Version:    []byte{0x04, 0x88, 0xad, 0xe4},
		ChildIndex: 0,
		Depth:      0,
	}
	delta, child, err := ckd.DeriveChildKeyFromHierarchy(path, parent, ec.Params().N, ec)
	if err != nil {
		return ChildKey{}, fmt.Errorf("tss: derive child key %v: %w", path, err)
	}
	childPub := &ecdsa.PublicKey{Curve: crypto.S256(), X: child.X, Y: child.Y}
	return ChildKey{
		Path:      append([]uint32(nil), path...),
		Address:   crypto.PubkeyToAddress(*childPub),
		PublicKey: crypto.FromECDSAPub(childPub),
		delta:     delta,
	}, nil
}

// partyKey is the tss-lib party key of member id in a key's generation gen:
// the same on every node, distinct across generations.
func partyKey(id ids.MemberID, gen uint32) *big.Int {
	var g [4]byte
	binary.BigEndian.PutUint32(g[:], gen)
	h := hashParts([]byte("custos/party/v1"), g[:], []byte(id))
	q := tss.S256().Params().N
	k := new(big.Int).SetBytes(h)
	k.Mod(k, new(big.Int).Sub(q, big.NewInt(1)))
	return k.Add(k, big.NewInt(1))
}

func hashParts(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		var l [8]byte
		binary.BigEndian.PutUint64(l[:], uint64(len(p)))
		h.Write(l[:])
		h.Write(p)
	}
	return h.Sum(nil)
}

// Share is one member's share of a threshold key. Its secret part is
// unexported and never printed; MarshalSecret is its only way out, to be
// stored encrypted.
type Share struct {
	key  KeyInfo
	self ids.MemberID
	data keygen.LocalPartySaveData
}

// ShareFormat is the version tag of the serialised share.
const ShareFormat = "custos-share/1"

type shareJSON struct {
	Format string                    `json:"format"`
	Key    KeyInfo                   `json:"key"`
	Self   ids.MemberID              `json:"self"`
	Data   keygen.LocalPartySaveData `json:"data"`
}

// Key returns the public description of the key (a copy).
func (s *Share) Key() KeyInfo { return s.key.clone() }

func (k KeyInfo) clone() KeyInfo {
	k.PublicKey = bytes.Clone(k.PublicKey)
	k.Committee = Committee{Members: slices.Clone(k.Committee.Members), Threshold: k.Committee.Threshold}
	return k
}

// Equal reports whether k and o describe the same key under the same
// committee and generation.
func (k KeyInfo) Equal(o KeyInfo) bool {
	return k.Address == o.Address && bytes.Equal(k.PublicKey, o.PublicKey) && k.Committee.Equal(o.Committee) &&
		k.Generation == o.Generation && k.GuardianFloor == o.GuardianFloor
}

// Self returns the member that holds this share.
func (s *Share) Self() ids.MemberID { return s.self }

// String redacts the secret part.
func (s *Share) String() string {
	return fmt.Sprintf("share{%s of %s, secret redacted}", s.self, s.key.Address.Hex())
}

// GoString redacts the secret part.
func (s *Share) GoString() string { return s.String() }

// MarshalSecret serialises the share, secret included, with its format
// version. Store the result encrypted only. (It is deliberately not
// MarshalBinary, which generic encoders would call.)
func (s *Share) MarshalSecret() ([]byte, error) {
	return json.Marshal(shareJSON{Format: ShareFormat, Key: s.key, Self: s.self, Data: s.data})
}

// UnmarshalShare decodes and checks a serialised share.
func UnmarshalShare(b []byte) (*Share, error) {
	var j shareJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	// Decoding errors can quote the number being parsed: a piece of the
	// secret. Say only what kind of error it was.
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("tss: decode share: malformed JSON (%T)", err)
	}
	if dec.More() {
		return nil, errors.New("tss: decode share: data after the share")
	}
	if j.Format != ShareFormat {
		return nil, fmt.Errorf("tss: decode share: format %q, want %q", j.Format, ShareFormat)
	}
	s := &Share{key: j.Key, self: j.Self, data: j.Data}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("tss: decode share: %w", err)
	}
	return s, nil
}

// check verifies that the share is complete and consistent with its key:
// its party key, its secret against its public share, every public share
// against the key, its own Paillier and N-tilde setup against its secrets,
// and every party's setup against the rules the hardening checks apply to
// messages (signing uses the peers' setup from here, not from a message).
func (s *Share) check() error {
	k := s.key
	if err := k.Committee.Validate(); err != nil {
		return err
	}
	if !k.Committee.Has(s.self) {
		return fmt.Errorf("holder %s is not a member of the committee", s.self)
	}
	if k.GuardianFloor != k.Committee.GuardianFloor() {
		return fmt.Errorf("guardian floor %d does not match the committee's %d", k.GuardianFloor, k.Committee.GuardianFloor())
	}
	d := s.data
	n := len(k.Committee.Members)
	if d.Xi == nil || d.ShareID == nil || !onCurve(d.ECDSAPub) || len(d.Ks) != n || len(d.BigXj) != n ||
		len(d.PaillierPKs) != n || len(d.NTildej) != n || len(d.H1j) != n || len(d.H2j) != n ||
		!d.LocalPreParams.Validate() || d.PaillierSK.LambdaN == nil || d.PaillierSK.PhiN == nil {
		return errors.New("secret data is incomplete")
	}
	want := map[string]bool{}
	for _, m := range k.Committee.Members {
		want[partyKey(m.ID, k.Generation).String()] = true
	}
	self := -1
	for j := range n {
		if d.Ks[j] == nil || !want[d.Ks[j].String()] {
			return fmt.Errorf("party key %d does not belong to the committee in generation %d", j, k.Generation)
		}
		delete(want, d.Ks[j].String())
		if d.BigXj[j] == nil || d.PaillierPKs[j] == nil || d.PaillierPKs[j].N == nil || d.NTildej[j] == nil || d.H1j[j] == nil || d.H2j[j] == nil {
			return fmt.Errorf("public data of party %d is incomplete", j)
		}
		if !onCurve(d.BigXj[j]) {
			return fmt.Errorf("public share of party %d is not a secp256k1 point", j)
		}
		if err := setupProblem(d.PaillierPKs[j].N, d.NTildej[j], d.H1j[j], d.H2j[j]); err != nil {
			return fmt.Errorf("party %d: %w", j, err)
		}
		if d.Ks[j].Cmp(d.ShareID) == 0 {
			self = j
		}
	}
	if d.ShareID.Cmp(partyKey(s.self, k.Generation)) != 0 || self < 0 {
		return fmt.Errorf("share id does not belong to %s in generation %d", s.self, k.Generation)
	}
	// tss-lib leaves a reshared Xi unreduced: compare it mod q.
	xi := new(big.Int).Mod(d.Xi, tss.S256().Params().N)
	if d.Xi.Sign() <= 0 || xi.Sign() == 0 || !tsscrypto.ScalarBaseMult(tss.S256(), xi).Equals(d.BigXj[self]) {
		return errors.New("secret share does not match its public share")
	}
	if d.PaillierPKs[self].N.Cmp(d.PaillierSK.N) != 0 || d.NTildej[self].Cmp(d.NTildei) != 0 ||
		d.H1j[self].Cmp(d.H1i) != 0 || d.H2j[self].Cmp(d.H2i) != 0 {
		return errors.New("own Paillier or N-tilde setup does not match the public data")
	}
	// The public shares lie on one polynomial of degree t whose value at 0
	// is the public key: the first t+1 of them fix it and give the key,
	// every other one is its value at that party's key (a moved point
	// anywhere would make signing blame an honest signer), and t of them
	// do not give the key (else the threshold would be lower than claimed).
	t := k.Committee.Threshold
	ks, xs := d.Ks[:t+1], d.BigXj[:t+1]
	if y, err := interpolate(ks, xs, big.NewInt(0)); err != nil || !y.Equals(d.ECDSAPub) {
		return errors.New("public shares do not add up to the public key")
	}
	for j := t + 1; j < n; j++ {
		if y, err := interpolate(ks, xs, d.Ks[j]); err != nil || !y.Equals(d.BigXj[j]) {
			return fmt.Errorf("public share of party %d is not on the polynomial of the others", j)
		}
	}
	if y, err := interpolate(d.Ks[:t], d.BigXj[:t], big.NewInt(0)); err == nil && y.Equals(d.ECDSAPub) {
		return fmt.Errorf("public shares have a threshold below %d", t)
	}
	pub := &ecdsa.PublicKey{Curve: crypto.S256(), X: d.ECDSAPub.X(), Y: d.ECDSAPub.Y()}
	if !bytes.Equal(crypto.FromECDSAPub(pub), k.PublicKey) {
		return errors.New("secret data belongs to another public key")
	}
	if crypto.PubkeyToAddress(*pub) != k.Address {
		return errors.New("address does not match the public key")
	}
	return nil
}

func onCurve(p *tsscrypto.ECPoint) bool {
	return p != nil && p.X() != nil && p.Y() != nil && tss.SameCurve(p.Curve(), tss.S256()) && p.IsOnCurve()
}

// interpolate returns the value at x of the degree-(len-1) polynomial
// through points (ks[j], xs[j]), in the exponent.
func interpolate(ks []*big.Int, xs []*tsscrypto.ECPoint, x *big.Int) (*tsscrypto.ECPoint, error) {
	q := tss.S256().Params().N
	var sum *tsscrypto.ECPoint
	for j := range ks {
		num, den := big.NewInt(1), big.NewInt(1)
		for m := range ks {
			if m == j {
				continue
			}
			num.Mul(num, new(big.Int).Sub(ks[m], x)).Mod(num, q)
			den.Mul(den, new(big.Int).Sub(ks[m], ks[j])).Mod(den, q)
		}
		inv := new(big.Int).ModInverse(den, q)
		if inv == nil {
			return nil, errors.New("repeated party key")
		}
		c := num.Mul(num, inv).Mod(num, q)
		if c.Sign() == 0 {
			return nil, errors.New("x is one of the party keys")
		}
		term := xs[j].ScalarMult(c)
		if sum == nil {
			sum = term
			continue
		}
		var err error
		if sum, err = sum.Add(term); err != nil {
			return nil, err
		}
	}
	return sum, nil
}

// cloneSaveData deep-copies tss-lib save data: tss-lib mutates what it is
// given (resharing zeroes the old Xi in place), and a share must survive
// until the new committee has proved itself.
func cloneSaveData(d keygen.LocalPartySaveData) (keygen.LocalPartySaveData, error) {
	var out keygen.LocalPartySaveData
	b, err := json.Marshal(d)
	if err != nil {
		return out, err
	}
	err = json.Unmarshal(b, &out)
	return out, err
}

// newKeyInfo builds the public description from finished save data.
func newKeyInfo(c Committee, gen uint32, d *keygen.LocalPartySaveData) (KeyInfo, error) {
	if d.ECDSAPub == nil {
		return KeyInfo{}, errors.New("tss: protocol ended without a public key")
	}
	pub := &ecdsa.PublicKey{Curve: crypto.S256(), X: d.ECDSAPub.X(), Y: d.ECDSAPub.Y()}
	return KeyInfo{
		Address:       crypto.PubkeyToAddress(*pub),
		PublicKey:     crypto.FromECDSAPub(pub),
		Committee:     c.Canonical(),
		Generation:    gen,
		GuardianFloor: c.GuardianFloor(),
	}, nil
}
