package policy

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// twoGuardianPolicy is signed by alice and bob, with a quorum of two.
func twoGuardianPolicy(t *testing.T) *Policy {
	t.Helper()
	addr := func(n string) string { return crypto.PubkeyToAddress(guardianKey(n).PublicKey).Hex() }
	src := fmt.Sprintf("version: 1\nguardians: {alice: %q, bob: %q}\nquorum: 2\ntiers: [{name: hot, signers: [agent, policy]}, {name: vault, signers: [agent, policy, guardian], approvals: 2}]\nrules:\n  - {id: r, when: {chain: 1}, tier: vault}\n", addr("alice"), addr("bob"))
	d, err := ParseDocument([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var sigs [][]byte
	for _, n := range []string{"alice", "bob"} {
		sig, err := SignDocument(guardianKey(n), d.Hash(), d)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, sig)
	}
	p, err := VerifyDocument(SignedDocument{Source: []byte(src), Signatures: sigs}, Genesis{Hash: d.Hash()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func approve(t *testing.T, p *Policy, who string, a Approval) SignedApproval {
	t.Helper()
	sig, err := SignTypedData(guardianKey(who), a.TypedData(p.WalletID()))
	if err != nil {
		t.Fatal(err)
	}
	return SignedApproval{Approval: a, Signature: sig}
}

func TestVerifyApprovals(t *testing.T) {
	p := twoGuardianPolicy(t)
	now := time.Unix(1_800_000_000, 0)
	target := ApprovalTarget{RequestID: "req:1", Digest: common.HexToHash("0xd1"), ChainID: big.NewInt(1), Key: common.HexToAddress("0xabc")}
	good := Approval{RequestID: target.RequestID, Digest: target.Digest, ChainID: target.ChainID, Key: target.Key, Issued: now.Add(-time.Minute), Expiry: now.Add(time.Hour)}
	alice, bob := approve(t, p, "alice", good), approve(t, p, "bob", good)
	need1, need2 := TierSpec{Name: "one", Approvals: 1}, TierSpec{Name: "two", Approvals: 2}

	got, err := p.VerifyApprovals(target, []SignedApproval{alice, bob}, need2, now)
	if err != nil || len(got) != 2 {
		t.Fatalf("two guardians: %v, %v", got, err)
	}
	// The same guardian twice counts once.
	if _, err := p.VerifyApprovals(target, []SignedApproval{alice, alice}, need2, now); !errors.Is(err, ErrApproval) || !strings.Contains(err.Error(), "1 distinct") {
		t.Errorf("alice twice: %v", err)
	}
	// Each binding field: an approval for anything else is refused, even
	// when the signature over it is genuine.
	other := map[string]func(*Approval){
		"request": func(a *Approval) { a.RequestID = "req:2" },
		"digest":  func(a *Approval) { a.Digest = common.HexToHash("0xd2") },
		"chain":   func(a *Approval) { a.ChainID = big.NewInt(5) },
		"key":     func(a *Approval) { a.Key = common.HexToAddress("0xdef") },
		"expiry":  func(a *Approval) { a.Expiry = now },
	}
	for name, f := range other {
		a := good
		f(&a)
		if _, err := p.VerifyApprovals(target, []SignedApproval{approve(t, p, "alice", a), bob}, need2, now); !errors.Is(err, ErrApproval) || !strings.Contains(err.Error(), "approval 0") {
			t.Errorf("approval for another %s: %v", name, err)
		}
	}
	// A signature over one approval does not carry over to an edited one,
	// nor to the same approval dated back (the tier delay runs from it).
	backdated := alice
	backdated.Approval.Issued = now.Add(-48 * time.Hour)
	if _, err := p.VerifyApprovals(target, []SignedApproval{backdated}, need1, now); !errors.Is(err, ErrNotGuardian) {
		t.Errorf("backdated approval: %v", err)
	}
	edited := alice
	edited.Approval.Digest = common.HexToHash("0xd2")
	if _, err := p.VerifyApprovals(ApprovalTarget{RequestID: target.RequestID, Digest: edited.Approval.Digest, ChainID: target.ChainID, Key: target.Key}, []SignedApproval{edited}, need1, now); !errors.Is(err, ErrNotGuardian) {
		t.Errorf("edited approval: %v", err)
	}
	// Not a guardian.
	if _, err := p.VerifyApprovals(target, []SignedApproval{approve(t, p, "mallory", good)}, need1, now); !errors.Is(err, ErrNotGuardian) {
		t.Errorf("mallory: %v", err)
	}
	// An approval from another wallet's domain does not verify here.
	sig, _ := SignTypedData(guardianKey("alice"), good.TypedData(common.HexToHash("0x77")))
	if _, err := p.VerifyApprovals(target, []SignedApproval{{Approval: good, Signature: sig}}, need1, now); !errors.Is(err, ErrNotGuardian) {
		t.Errorf("approval for another wallet: %v", err)
	}
	// A denial is bound the same way.
	d := Denial{RequestID: target.RequestID, Digest: target.Digest, Reason: "not this vendor", Issued: now}
	dsig, _ := SignTypedData(guardianKey("bob"), d.TypedData(p.WalletID()))
	if who, err := p.VerifyDenial(target, SignedDenial{Denial: d, Signature: dsig}); err != nil || who != crypto.PubkeyToAddress(guardianKey("bob").PublicKey) {
		t.Errorf("denial: %v %v", who, err)
	}
	d.Digest = common.HexToHash("0xd2")
	if _, err := p.VerifyDenial(target, SignedDenial{Denial: d, Signature: dsig}); !errors.Is(err, ErrApproval) {
		t.Errorf("denial of another digest: %v", err)
	}
}

// TestVerifyApprovalsDelay: a tier's delay runs from the approval that
// completes its count, as signed by the guardians; before that the
// approvals are refused, and one guardian's backdated approval does not
// shorten the wait.
func TestVerifyApprovalsDelay(t *testing.T) {
	p := twoGuardianPolicy(t)
	now := time.Unix(1_800_000_000, 0)
	target := ApprovalTarget{RequestID: "req:1", Digest: common.HexToHash("0xd1"), ChainID: big.NewInt(1), Key: common.HexToAddress("0xabc")}
	at := func(issued time.Time) Approval {
		return Approval{RequestID: target.RequestID, Digest: target.Digest, ChainID: target.ChainID, Key: target.Key, Issued: issued, Expiry: now.Add(24 * time.Hour)}
	}
	var vault TierSpec
	for _, ts := range p.Tiers() {
		if ts.Name == "vault" {
			vault = ts
		}
	}
	vault.Delay = time.Hour
	// Alice approved long ago (or says so); Bob ten minutes ago.
	alice := approve(t, p, "alice", at(now.Add(-48*time.Hour)))
	bob := approve(t, p, "bob", at(now.Add(-10*time.Minute)))
	if _, err := p.VerifyApprovals(target, []SignedApproval{alice, bob}, vault, now); !errors.Is(err, ErrApproval) || !strings.Contains(err.Error(), "delay") {
		t.Errorf("within the delay after the second approval: %v", err)
	}
	if _, err := p.VerifyApprovals(target, []SignedApproval{alice, bob}, vault, now.Add(50*time.Minute)); err != nil {
		t.Errorf("after the delay: %v", err)
	}
	// Without a delay the same approvals serve at once.
	vault.Delay = 0
	if _, err := p.VerifyApprovals(target, []SignedApproval{alice, bob}, vault, now); err != nil {
		t.Errorf("no delay: %v", err)
	}
}

func TestVerifyReshare(t *testing.T) {
	p := twoGuardianPolicy(t)
	now := time.Unix(1_800_000_000, 0)
	want := ReshareAuthorization{
		Key:        common.HexToAddress("0xabc"),
		Generation: 0,
		OldMembers: []string{CommitteeEntry("agent-1", ids.RoleAgent), CommitteeEntry("guardian-1", ids.RoleGuardian), CommitteeEntry("policy-1", ids.RolePolicy)}, OldThreshold: 1,
		NewMembers: []string{CommitteeEntry("agent-2", ids.RoleAgent), CommitteeEntry("guardian-1", ids.RoleGuardian), CommitteeEntry("policy-1", ids.RolePolicy)}, NewThreshold: 1,
		Expiry: now.Add(time.Hour),
	}
	sign := func(a ReshareAuthorization, who ...string) SignedReshare {
		s := SignedReshare{Authorization: a}
		for _, w := range who {
			sig, err := SignTypedData(guardianKey(w), a.TypedData(p.WalletID()))
			if err != nil {
				t.Fatal(err)
			}
			s.Signatures = append(s.Signatures, sig)
		}
		return s
	}
	if err := p.VerifyReshare(want, sign(want, "alice", "bob"), now); err != nil {
		t.Fatalf("quorum-signed reshare: %v", err)
	}
	if err := p.VerifyReshare(want, sign(want, "alice"), now); !errors.Is(err, ErrQuorum) {
		t.Errorf("one guardian: %v", err)
	}
	if err := p.VerifyReshare(want, sign(want, "alice", "alice"), now); !errors.Is(err, ErrQuorum) {
		t.Errorf("one guardian twice: %v", err)
	}
	// A coordinator that asks the old members to deal to a committee of its
	// choosing, under an authorisation for another, is refused.
	evil := want
	evil.NewMembers = []string{CommitteeEntry("agent-evil", ids.RoleAgent), CommitteeEntry("guardian-1", ids.RoleGuardian), CommitteeEntry("policy-evil", ids.RolePolicy)}
	if err := p.VerifyReshare(evil, sign(want, "alice", "bob"), now); !errors.Is(err, ErrAuthorization) || !strings.Contains(err.Error(), "new committee") {
		t.Errorf("other new committee: %v", err)
	}
	lower := want
	lower.NewThreshold = 0
	if err := p.VerifyReshare(lower, sign(want, "alice", "bob"), now); !errors.Is(err, ErrAuthorization) {
		t.Errorf("other threshold: %v", err)
	}
	later := want
	later.Generation = 1
	if err := p.VerifyReshare(later, sign(want, "alice", "bob"), now); !errors.Is(err, ErrAuthorization) || !strings.Contains(err.Error(), "generation") {
		t.Errorf("replayed at a later generation: %v", err)
	}
	if err := p.VerifyReshare(want, sign(want, "alice", "bob"), now.Add(time.Hour)); !errors.Is(err, ErrAuthorization) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired: %v", err)
	}
	// Editing the signed authorisation to match breaks the signatures.
	forged := sign(want, "alice", "bob")
	forged.Authorization = evil
	if err := p.VerifyReshare(evil, forged, now); !errors.Is(err, ErrNotGuardian) {
		t.Errorf("edited authorisation: %v", err)
	}
}
