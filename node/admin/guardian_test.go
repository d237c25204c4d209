package admin

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

func guardianOf(t *testing.T, seed string) *Guardian {
	t.Helper()
	k, err := crypto.ToECDSA(crypto.Keccak256([]byte("custos-admin-test-guardian/" + seed)))
	if err != nil {
		t.Fatal(err)
	}
	return NewGuardian(k)
}

func TestSignDocumentVerifies(t *testing.T) {
	a, b := guardianOf(t, "a"), guardianOf(t, "b")
	src := "version: 1\nguardians: {a: \"" + a.Address().Hex() + "\", b: \"" + b.Address().Hex() + "\"}\nquorum: 2\n" +
		"tiers:\n  - {name: hot, signers: [agent, policy]}\nrules:\n  - {id: none, when: {chain: 1}, deny: true}\n"
	d, err := policy.ParseDocument([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	pd, err := a.SignDocument(d.Hash(), api.PolicyDocument{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.SignDocument(d.Hash(), pd); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("a second signature by a: %v", err)
	}
	pd, err = b.SignDocument(d.Hash(), pd)
	if err != nil {
		t.Fatal(err)
	}
	who, err := DocumentSigners(d.Hash(), pd)
	if err != nil || !slices.Equal(who, []common.Address{a.Address(), b.Address()}) {
		t.Fatalf("signers %v %v", who, err)
	}
	if _, err := policy.VerifyDocument(pd.Policy(), policy.Genesis{Hash: d.Hash()}); err != nil {
		t.Fatalf("VerifyDocument: %v", err)
	}
	if _, err := a.SignDocument(d.Hash(), api.PolicyDocument{Source: "version: [1"}); err == nil {
		t.Fatal("signed a document that does not parse")
	}
}

func TestSignReshareVerifies(t *testing.T) {
	a := guardianOf(t, "a")
	old := tss.Committee{Threshold: 1, Members: []tss.Member{{ID: "x", Role: ids.RolePolicy}, {ID: "g-2", Role: ids.RoleGuardian}, {ID: "g", Role: ids.RoleGuardian}}}
	// Sorted as strings: "g-2:…" before "g:…", unlike the member ids.
	if e := CommitteeEntries(old); !slices.Equal(e, []string{"g-2:guardian", "g:guardian", "x:policy"}) {
		t.Fatalf("entries %v", e)
	}
	wallet := common.Hash{5}
	r := api.Reshare{Key: common.Address{1}, Generation: 2, OldMembers: CommitteeEntries(old), OldThreshold: 1,
		NewMembers: CommitteeEntries(old), NewThreshold: 1, Expiry: time.Now().Add(time.Hour)}
	s, err := a.SignReshare(wallet, r)
	if err != nil {
		t.Fatal(err)
	}
	if s.Expiry.Nanosecond() != 0 || s.Expiry.Location() != time.UTC {
		t.Fatalf("expiry %v is not whole seconds in UTC", s.Expiry)
	}
	if _, err := a.SignReshare(wallet, s); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("a second signature by a: %v", err)
	}
	who, err := ReshareSigners(wallet, s)
	if err != nil || !slices.Equal(who, []common.Address{a.Address()}) {
		t.Fatalf("signers %v %v", who, err)
	}
	// Under another wallet id it recovers to someone else.
	if who, _ := ReshareSigners(common.Hash{6}, s); slices.Equal(who, []common.Address{a.Address()}) {
		t.Fatal("the signature is not bound to the wallet id")
	}
}
