package tss_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/ids"
	. "github.com/custos-wallet/custos/tss" //nolint:staticcheck // the tests read as if in package tss
	"github.com/custos-wallet/custos/tss/tsstest"
	"github.com/ethereum/go-ethereum/crypto"
)

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
	net := tsstest.NewMemNetwork()
	quorums := [][]ids.MemberID{
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
	net := tsstest.NewMemNetwork()
	shares := keygenAll(t, net, c, 0)
	key := shares[agent.ID].Key()
	if key.GuardianFloor != 1 {
		t.Fatalf("guardian floor %d, want 1", key.GuardianFloor)
	}
	digest := digestOf("3-of-5")
	for id, sig := range signAll(t, net, shares, []ids.MemberID{agent.ID, guardian2.ID, guardian3.ID}, digest, nil) {
		if got := recoverAddress(t, digest, sig); got != key.Address {
			t.Fatalf("%s: recovers to %s, want %s", id, got.Hex(), key.Address.Hex())
		}
	}
}

func TestSignRefusesBadQuorumBeforeSending(t *testing.T) {
	shares := shared2of3(t)
	net := tsstest.NewMemNetwork()
	eng := NewEngine(net.Endpoint(agent.ID), testConfig())
	cases := map[string][]ids.MemberID{
		"fewer than t+1":    {agent.ID},
		"non-member":        {agent.ID, "stranger"},
		"duplicate":         {agent.ID, agent.ID},
		"self not a signer": {policy.ID, guardian.ID},
	}
	if _, err := eng.Sign(context.Background(), SignRequest{Session: ids.NewSessionID(), Share: shares[policy.ID], Signers: []ids.MemberID{agent.ID, policy.ID}}); err == nil {
		t.Fatal("signed with another member's share")
	}
	for name, signers := range cases {
		_, err := eng.Sign(context.Background(), SignRequest{Session: ids.NewSessionID(), Share: shares[agent.ID], Signers: signers, Digest: digestOf(name)})
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
	before, err := shares[agent.ID].MarshalSecret()
	if err != nil {
		t.Fatal(err)
	}
	digest := digestOf("child payment")
	for id, sig := range signAll(t, tsstest.NewMemNetwork(), shares, []ids.MemberID{agent.ID, policy.ID}, digest, path) {
		if got := recoverAddress(t, digest, sig); got != child.Address {
			t.Fatalf("%s: child signature recovers to %s, want child %s (parent %s)", id, got.Hex(), child.Address.Hex(), key.Address.Hex())
		}
	}
	if after, _ := shares[agent.ID].MarshalSecret(); string(after) != string(before) {
		t.Fatal("signing for a child changed the parent share")
	}
}

func TestSilentMemberNamedOnTimeout(t *testing.T) {
	shares := shared2of3(t)
	net := tsstest.NewMemNetwork()
	cfg := testConfig()
	cfg.IdleTimeout = 500 * cfg.TickInterval / 50 // 500ms
	_, err := NewEngine(net.Endpoint(agent.ID), cfg).Sign(context.Background(),
		SignRequest{Session: ids.NewSessionID(), Share: shares[agent.ID], Signers: []ids.MemberID{agent.ID, policy.ID}, Digest: digestOf("silent")})
	se, ok := AsSessionError(err)
	if !ok || se.Kind != FailTimeout {
		t.Fatalf("got %v, want a timeout", err)
	}
	if len(se.Waiting) != 1 || se.Waiting[0] != policy.ID {
		t.Fatalf("waiting for %v, want [%s]", se.Waiting, policy.ID)
	}
	t.Log(err)
}

// lateBlame is a transport that finds misbehaviour only when the session
// closes, as p2p does for an equivocation exposed by a late echo.
type lateBlame struct {
	Transport
	blame *SessionError
}

func (t lateBlame) Open(ctx context.Context, id ids.SessionID, members []ids.MemberID) (Conn, error) {
	c, err := t.Transport.Open(ctx, id, members)
	return lateBlameConn{Conn: c, blame: t.blame}, err
}

type lateBlameConn struct {
	Conn
	blame *SessionError
}

func (c lateBlameConn) Close(cause error) error {
	c.Conn.Close(cause)
	if cause == nil {
		return c.blame
	}
	return nil
}

func TestCulpritNamedAtCloseIsKept(t *testing.T) {
	shares := shared2of3(t)
	net := tsstest.NewMemNetwork()
	signers := []ids.MemberID{agent.ID, policy.ID}
	sid := ids.NewSessionID()
	blame := &SessionError{Session: sid, Kind: FailMisbehaviour, Culprits: []ids.MemberID{policy.ID}, Err: errors.New("equivocated")}
	errs := runAll(signers, func(_ int, id ids.MemberID) error {
		var tr Transport = net.Endpoint(id)
		if id == agent.ID {
			tr = lateBlame{Transport: tr, blame: blame}
		}
		_, err := NewEngine(tr, testConfig()).Sign(context.Background(), SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digestOf("late")})
		return err
	})
	se, ok := AsSessionError(errs[agent.ID])
	if !ok || se.Kind != FailMisbehaviour || len(se.Culprits) != 1 || se.Culprits[0] != policy.ID {
		t.Fatalf("agent: got %v, want the transport's verdict naming %s", errs[agent.ID], policy.ID)
	}
	if errs[policy.ID] != nil {
		t.Fatalf("policy: %v", errs[policy.ID])
	}
}

func TestPreParamsServeOneSessionOnly(t *testing.T) {
	pp := fixture(t, 0)
	if err := TakePreParams(pp); err != nil {
		t.Fatal(err)
	}
	net := tsstest.NewMemNetwork()
	c := Committee{Members: []Member{agent, policy, guardian}, Threshold: 1}
	_, err := NewEngine(net.Endpoint(agent.ID), testConfig()).Keygen(context.Background(), KeygenRequest{Session: ids.NewSessionID(), Committee: c, PreParams: pp})
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("keygen with used pre-parameters: %v", err)
	}
	if net.Sent() != 0 {
		t.Fatal("a refused keygen sent messages")
	}
}
