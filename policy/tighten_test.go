package policy

import (
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
)

// failEncoding makes encodeJSON fail for values of the type of like, for
// the rest of the test.
func failEncoding(t *testing.T, like any) {
	t.Helper()
	prev := encodeJSON
	t.Cleanup(func() { encodeJSON = prev })
	encodeJSON = func(v any) ([]byte, error) {
		if reflectTypeEq(v, like) {
			return nil, errors.New("cannot encode")
		}
		return json.Marshal(v)
	}
}

func reflectTypeEq(a, b any) bool {
	switch b.(type) {
	case []*big.Int:
		_, ok := a.([]*big.Int)
		return ok
	case RuleDoc:
		_, ok := a.(RuleDoc)
		return ok
	}
	return false
}

// TestTighteningDeniesOnEncodingError checks that limits that cannot be
// encoded for comparison make a single-guardian change refused, never
// "the same limits": here a deny rule's limit is lowered, so it denies
// less, which only the quorum may do.
func TestTighteningDeniesOnEncodingError(t *testing.T) {
	doc := func(version int, limit, replaces string) string {
		s := "version: " + string(rune('0'+version)) + "\n"
		if replaces != "" {
			s += "replaces: \"" + replaces + "\"\n"
		}
		return s + `guardians: {alice: "{{alice}}", bob: "{{bob}}"}
quorum: 2
tiers: [{name: hot, signers: [agent, policy]}]
rules:
  - {id: big-to-stranger, when: {to: "{{stranger}}", value_max: ` + limit + `}, deny: true}
  - {id: pay, when: {chain: 1, value_max: 1 ether}, tier: hot}
`
	}
	env := &ddEnv{}
	src := env.expand(doc(1, "2 ether", ""))
	d, err := ParseDocument([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var sigs [][]byte
	for _, g := range []string{"alice", "bob"} {
		s, _ := SignDocument(guardianKey(g), d.Hash(), d)
		sigs = append(sigs, s)
	}
	p, err := VerifyDocument(SignedDocument{Source: []byte(src), Signatures: sigs}, Genesis{Hash: d.Hash()})
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(p, NewMemLedger())
	next := env.expand(doc(2, "0.5 ether", p.Hash().Hex()))
	nd, err := ParseDocument([]byte(next))
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := SignDocument(guardianKey("alice"), p.WalletID(), nd)
	// Without the fault the change is refused as a changed deny rule.
	if err := e.ApplyDocument(SignedDocument{Source: []byte(next), Signatures: [][]byte{sig}}); !errors.Is(err, ErrNotTightening) {
		t.Fatalf("lowered deny limit accepted by one guardian: %v", err)
	}
	failEncoding(t, []*big.Int(nil))
	err = e.ApplyDocument(SignedDocument{Source: []byte(next), Signatures: [][]byte{sig}})
	if !errors.Is(err, ErrNotTightening) || !strings.Contains(err.Error(), "cannot encode") {
		t.Fatalf("with limits that cannot be encoded: %v", err)
	}
	if e.Policy().Version() != 1 {
		t.Fatal("document applied")
	}
}

// TestCompileDeniesOnShapeEncodingError checks that a rule whose shape
// cannot be encoded fails the document: an empty shape would compare
// equal to any other empty shape, and the tightening check would take a
// changed rule for the same one.
func TestCompileDeniesOnShapeEncodingError(t *testing.T) {
	src := (&ddEnv{}).expand(`version: 1
guardians: {alice: "{{alice}}"}
quorum: 1
tiers: [{name: hot, signers: [agent, policy]}]
rules:
  - {id: pay, when: {chain: 1, value_max: 1 ether}, tier: hot}
`)
	if _, err := ParseAndCompile([]byte(src)); err != nil {
		t.Fatal(err)
	}
	failEncoding(t, RuleDoc{})
	if _, err := ParseAndCompile([]byte(src)); err == nil || !strings.Contains(err.Error(), "cannot encode") {
		t.Fatalf("compiled with a shape that cannot be encoded: %v", err)
	}
}
