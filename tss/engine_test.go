package tss

import (
	"context"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

func recoverAddress(t *testing.T, digest [32]byte, sig Signature) common.Address {
	t.Helper()
	pub, err := crypto.SigToPub(digest[:], sig[:])
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	return crypto.PubkeyToAddress(*pub)
}

func TestKeygenAndSign2of3EveryQuorum(t *testing.T) {
	shares := shared2of3(t)
	key := shares[agent.ID].Key()
	for id, sh := range shares {
		if sh.Key().Address != key.Address {
			t.Fatalf("%s has address %s, agent has %s", id, sh.Key().Address.Hex(), key.Address.Hex())
		}
	}
	if key.GuardianFloor != 0 {
		t.Fatalf("guardian floor %d, want 0 for {agent, policy, guardian} 2-of-3", key.GuardianFloor)
	}
	net := NewMemNetwork()
	quorums := [][]MemberID{
		{agent.ID, policy.ID}, {agent.ID, guardian.ID}, {policy.ID, guardian.ID},
		{agent.ID, policy.ID, guardian.ID},
	}
	for _, q := range quorums {
		digest := digestOf("pay vendor " + string(q[0]) + string(q[1]))
		sigs := signAll(t, net, shares, q, digest, nil)
		for id, sig := range sigs {
			if got := recoverAddress(t, digest, sig); got != key.Address {
				t.Fatalf("quorum %v: %s's signature recovers to %s, want %s", q, id, got.Hex(), key.Address.Hex())
			}
			if !crypto.VerifySignature(key.PublicKey, digest[:], sig[:64]) {
				t.Fatalf("quorum %v: signature fails go-ethereum's low-S verification", q)
			}
		}
	}
}

func TestKeygenAndSign3of5(t *testing.T) {
	if testing.Short() {
		t.Skip("five-party keygen takes tens of seconds")
	}
	c := Committee{Members: []Member{agent, policy, guardian, guardian2, guardian3}, Threshold: 2}
	net := NewMemNetwork()
	shares := keygenAll(t, net, c, 0)
	key := shares[agent.ID].Key()
	if key.GuardianFloor != 1 {
		t.Fatalf("guardian floor %d, want 1", key.GuardianFloor)
	}
	digest := digestOf("3-of-5")
	for id, sig := range signAll(t, net, shares, []MemberID{agent.ID, guardian2.ID, guardian3.ID}, digest, nil) {
		if got := recoverAddress(t, digest, sig); got != key.Address {
			t.Fatalf("%s: recovers to %s, want %s", id, got.Hex(), key.Address.Hex())
		}
	}
}

func TestSignRefusesBadQuorumBeforeSending(t *testing.T) {
	shares := shared2of3(t)
	net := NewMemNetwork()
	eng := NewEngine(net.Endpoint(agent.ID), testConfig())
	cases := map[string][]MemberID{
		"fewer than t+1":    {agent.ID},
		"non-member":        {agent.ID, "stranger"},
		"duplicate":         {agent.ID, agent.ID},
		"self not a signer": {policy.ID, guardian.ID},
	}
	for name, signers := range cases {
		_, err := eng.Sign(context.Background(), SignRequest{Session: NewSessionID(), Share: shares[agent.ID], Signers: signers, Digest: digestOf(name)})
		if err == nil {
			t.Fatalf("%s: signing with %v succeeded", name, signers)
		}
		t.Logf("%s: %v", name, err)
	}
	if n := net.Sent(); n != 0 {
		t.Fatalf("refused requests sent %d messages", n)
	}
}

func TestChildKeySigning(t *testing.T) {
	shares := shared2of3(t)
	key := shares[agent.ID].Key()
	path := []uint32{44, 60, 0, 7}
	child, err := key.Child(path)
	if err != nil {
		t.Fatal(err)
	}
	if child.Address == key.Address {
		t.Fatal("child address equals the parent's")
	}
	other, err := key.Child([]uint32{44, 60, 0, 8})
	if err != nil || other.Address == child.Address {
		t.Fatalf("sibling child: %v, same address %v", err, other.Address == child.Address)
	}
	if _, err := key.Child([]uint32{1 << 31}); err == nil {
		t.Fatal("hardened index accepted")
	}
	digest := digestOf("child payment")
	for id, sig := range signAll(t, NewMemNetwork(), shares, []MemberID{agent.ID, policy.ID}, digest, path) {
		if got := recoverAddress(t, digest, sig); got != child.Address {
			t.Fatalf("%s: child signature recovers to %s, want child %s (parent %s)", id, got.Hex(), child.Address.Hex(), key.Address.Hex())
		}
	}
}

func TestSilentMemberNamedOnTimeout(t *testing.T) {
	shares := shared2of3(t)
	net := NewMemNetwork()
	cfg := testConfig()
	cfg.IdleTimeout = 500 * cfg.TickInterval / 50 // 500ms
	_, err := NewEngine(net.Endpoint(agent.ID), cfg).Sign(context.Background(),
		SignRequest{Session: NewSessionID(), Share: shares[agent.ID], Signers: []MemberID{agent.ID, policy.ID}, Digest: digestOf("silent")})
	se, ok := AsSessionError(err)
	if !ok || se.Kind != FailTimeout {
		t.Fatalf("got %v, want a timeout", err)
	}
	if len(se.Waiting) != 1 || se.Waiting[0] != policy.ID {
		t.Fatalf("waiting for %v, want [%s]", se.Waiting, policy.ID)
	}
	t.Log(err)
}

func TestShareRoundTripAndRedaction(t *testing.T) {
	sh := shared2of3(t)[policy.ID]
	b, err := sh.MarshalBinary()
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
	// A share claimed by another member, or with a changed key, is refused.
	tampered := *back
	tampered.self = agent.ID
	if err := tampered.check(); err == nil {
		t.Fatal("share accepted under another member's name")
	}
	if _, err := UnmarshalShare(append([]byte(`{"unknown":1,`), b[1:]...)); err == nil {
		t.Fatal("unknown field accepted")
	}
	if _, err := UnmarshalShare(b[:len(b)/2]); err == nil {
		t.Fatal("truncated share accepted")
	}
}
