package tss_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
	. "github.com/custos-wallet/custos/tss" //nolint:staticcheck // the tests read as if in package tss
	"github.com/custos-wallet/custos/tss/tsstest"
	"github.com/ethereum/go-ethereum/crypto"
)

// reshareAll runs a reshare of key from oldSigners to nc; new member i uses
// fixture first+i. Old signers pass their share from old.
func reshareAll(t *testing.T, net *tsstest.MemNetwork, old map[ids.MemberID]*Share, oldSigners []ids.MemberID, nc Committee, first int) map[ids.MemberID]*ReshareResult {
	t.Helper()
	var key KeyInfo
	for _, sh := range old {
		key = sh.Key()
	}
	sid := ids.NewSessionID()
	everyone := slices.Clone(oldSigners)
	for _, id := range nc.IDs() {
		if !slices.Contains(everyone, id) {
			everyone = append(everyone, id)
		}
	}
	results := map[ids.MemberID]*ReshareResult{}
	errs := runAll(everyone, func(_ int, id ids.MemberID) error {
		req := ReshareRequest{Session: sid, Key: key, OldSigners: oldSigners, NewCommittee: nc}
		if slices.Contains(oldSigners, id) {
			req.OldShare = old[id]
		}
		if i := slices.Index(nc.IDs(), id); i >= 0 {
			req.PreParams = fixture(t, first+i)
		}
		res, err := NewEngine(net.Endpoint(id), reshareConfig()).Reshare(context.Background(), req)
		runMu.Lock()
		results[id] = res
		runMu.Unlock()
		return err
	})
	for id, err := range errs {
		if err != nil {
			t.Fatalf("reshare at %s: %v", id, err)
		}
	}
	for id, res := range results {
		if res.Key.Address != key.Address {
			t.Fatalf("%s: address changed from %s to %s", id, key.Address.Hex(), res.Key.Address.Hex())
		}
		if !res.Complete() || len(res.Unconfirmed) != 0 || !slices.Equal(res.Confirmed, sortedIDs(nc.IDs())) {
			t.Fatalf("%s: reshare not complete: confirmed %v, unconfirmed %v", id, res.Confirmed, res.Unconfirmed)
		}
		// Old-only members too get the proof, from the confirmations.
		if err := VerifyReshareProof(sid, res.Key, res.Proof); err != nil {
			t.Fatalf("%s: proof: %v", id, err)
		}
		if nc.Has(id) {
			if res.Share == nil {
				t.Fatalf("%s is in the new committee but got no share", id)
			}
			if err := VerifyReshareProof(sid, res.Key, res.Proof); err != nil {
				t.Fatalf("%s: proof: %v", id, err)
			}
		} else if res.Share != nil {
			t.Fatalf("old-only member %s got a new share", id)
		}
	}
	return results
}

// reshareConfig is for reshares with no faults: an old-only member hears
// nothing while the new committee checks each other's proofs (several
// seconds of CPU per new member, much longer on a loaded test machine).
func reshareConfig() Config {
	cfg := testConfig()
	cfg.IdleTimeout = 2 * time.Minute
	return cfg
}

func newShares(results map[ids.MemberID]*ReshareResult) map[ids.MemberID]*Share {
	out := map[ids.MemberID]*Share{}
	for id, r := range results {
		if r.Share != nil {
			out[id] = r.Share
		}
	}
	return out
}

// The agent's node is rotated out: it takes part as an old signer only, the
// policy node is in both committees (two party ids), the guardian only in
// the new one, and a new agent node joins.
func TestReshareRotatesAgentNode(t *testing.T) {
	old := shared2of3(t)
	key := old[policy.ID].Key()
	before, err := old[policy.ID].MarshalSecret()
	if err != nil {
		t.Fatal(err)
	}
	net := tsstest.NewMemNetwork()
	nc := Committee{Members: []Member{agent2, policy, guardian}, Threshold: 1}
	results := reshareAll(t, net, old, []ids.MemberID{agent.ID, policy.ID}, nc, 3)
	shares := newShares(results)
	if len(shares) != 3 {
		t.Fatalf("%d new shares, want 3", len(shares))
	}
	if got := shares[agent2.ID].Key(); got.Generation != key.Generation+1 || !got.Committee.Has(agent2.ID) || got.Committee.Has(agent.ID) {
		t.Fatalf("new key description %s", got.Describe())
	}
	// The old-only agent node checks the proof it gets from a new member
	// before it may delete its share.
	retired := results[agent.ID]
	if err := VerifyReshareProof(retired.Session(), retired.Key, results[guardian.ID].Proof); err != nil {
		t.Fatalf("old-only member cannot verify the proof: %v", err)
	}
	if err := VerifyReshareProof(retired.Session(), retired.Key, Signature{}); err == nil {
		t.Fatal("an empty proof verified")
	}
	after, err := old[policy.ID].MarshalSecret()
	if err != nil || string(after) != string(before) {
		t.Fatal("reshare changed the old share in memory before the proof was checked")
	}
	digest := digestOf("after reshare")
	for id, sig := range signAll(t, net, shares, []ids.MemberID{agent2.ID, guardian.ID}, digest, nil) {
		if got := recoverAddress(t, digest, sig); got != key.Address {
			t.Fatalf("%s: new quorum signs for %s, want %s", id, got.Hex(), key.Address.Hex())
		}
	}
}

func TestReshareToLargerCommitteeWithHigherThreshold(t *testing.T) {
	if testing.Short() {
		t.Skip("five new parties take tens of seconds")
	}
	old := shared2of3(t)
	key := old[agent.ID].Key()
	net := tsstest.NewMemNetwork()
	nc := Committee{Members: []Member{agent, policy, guardian, guardian2, guardian3}, Threshold: 2}
	results := reshareAll(t, net, old, []ids.MemberID{agent.ID, policy.ID, guardian.ID}, nc, 2)
	shares := newShares(results)
	if floor := shares[guardian3.ID].Key().GuardianFloor; floor != 1 {
		t.Fatalf("guardian floor %d, want 1", floor)
	}
	digest := digestOf("bigger committee")
	for id, sig := range signAll(t, net, shares, []ids.MemberID{agent.ID, guardian2.ID, guardian3.ID}, digest, nil) {
		if got := recoverAddress(t, digest, sig); got != key.Address {
			t.Fatalf("%s: recovers to %s, want %s", id, got.Hex(), key.Address.Hex())
		}
	}
	// Two new shares are no longer enough.
	_, err := NewEngine(net.Endpoint(agent.ID), testConfig()).Sign(context.Background(),
		SignRequest{Session: ids.NewSessionID(), Share: shares[agent.ID], Signers: []ids.MemberID{agent.ID, policy.ID}, Digest: digest})
	if err == nil {
		t.Fatal("two signers accepted under threshold 2")
	}
}

func TestReshareRefusesBadRequests(t *testing.T) {
	old := shared2of3(t)
	key := old[agent.ID].Key()
	net := tsstest.NewMemNetwork()
	nc := Committee{Members: []Member{agent2, policy, guardian}, Threshold: 1}
	cases := map[string]ReshareRequest{
		"too few old signers":      {Key: key, OldShare: old[policy.ID], OldSigners: []ids.MemberID{policy.ID}, NewCommittee: nc, PreParams: fixture(t, 0)},
		"bad new committee":        {Key: key, OldShare: old[policy.ID], OldSigners: []ids.MemberID{policy.ID, guardian.ID}, NewCommittee: Committee{Members: nc.Members, Threshold: 3}},
		"old signer no share":      {Key: key, OldSigners: []ids.MemberID{policy.ID, guardian.ID}, NewCommittee: nc, PreParams: fixture(t, 0)},
		"new member no pre-params": {Key: key, OldShare: old[policy.ID], OldSigners: []ids.MemberID{policy.ID, guardian.ID}, NewCommittee: nc},
		"zero pre-params":          {Key: key, OldShare: old[policy.ID], OldSigners: []ids.MemberID{policy.ID, guardian.ID}, NewCommittee: nc, PreParams: &PreParams{}},
		"another member's share":   {Key: key, OldShare: old[guardian.ID], OldSigners: []ids.MemberID{policy.ID, guardian.ID}, NewCommittee: nc, PreParams: fixture(t, 0)},
		"key differs from share":   {Key: withThreshold(key, 2), OldShare: old[policy.ID], OldSigners: []ids.MemberID{policy.ID, guardian.ID}, NewCommittee: nc, PreParams: fixture(t, 0)},
	}
	for name, req := range cases {
		req.Session = ids.NewSessionID()
		if _, err := NewEngine(net.Endpoint(policy.ID), testConfig()).Reshare(context.Background(), req); err == nil {
			t.Fatalf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if net.Sent() != 0 {
		t.Fatalf("refused reshares sent %d messages", net.Sent())
	}
}

func withThreshold(k KeyInfo, t int) KeyInfo {
	k = CloneKey(k)
	k.Committee.Threshold = t
	k.GuardianFloor = k.Committee.GuardianFloor()
	return k
}

// A joiner told the right address with a wrong public key refuses before
// it sends anything, instead of blaming the honest dealers whose round-1
// messages carry the real key; nobody is named.
func TestReshareJoinerGivenWrongPublicKey(t *testing.T) {
	old := shared2of3(t)
	key := old[policy.ID].Key()
	wrong := CloneKey(key)
	g := tss.S256().Params()
	wrong.PublicKey = crypto.FromECDSAPub(&ecdsa.PublicKey{Curve: crypto.S256(), X: g.Gx, Y: g.Gy})
	net := tsstest.NewMemNetwork()
	var joinerSent atomic.Bool
	net.SetFilter(func(m tsstest.MemMessage) []tsstest.MemMessage {
		if m.From == agent2.ID {
			joinerSent.Store(true)
		}
		return []tsstest.MemMessage{m}
	})
	nc := Committee{Members: []Member{agent2, policy, guardian}, Threshold: 1}
	oldSigners := []ids.MemberID{policy.ID, guardian.ID}
	cfg := testConfig()
	cfg.IdleTimeout = 2 * time.Second // the others wait for the joiner in vain
	sid := ids.NewSessionID()
	errs := runAll(nc.IDs(), func(i int, id ids.MemberID) error {
		req := ReshareRequest{Session: sid, Key: key, OldSigners: oldSigners, NewCommittee: nc, PreParams: fixture(t, 3+i)}
		if id == agent2.ID {
			req.Key = wrong
		} else {
			req.OldShare = old[id]
		}
		_, err := NewEngine(net.Endpoint(id), cfg).Reshare(context.Background(), req)
		return err
	})
	if err := errs[agent2.ID]; err == nil || !strings.Contains(err.Error(), "public key's address") {
		t.Fatalf("joiner: got %v, want a refusal of the inconsistent key", err)
	}
	if joinerSent.Load() {
		t.Fatal("the joiner sent a message for a key it should have refused")
	}
	for id, err := range errs {
		if err == nil {
			t.Fatalf("%s: the reshare completed without the joiner", id)
		}
		if se, ok := AsSessionError(err); ok && len(se.Culprits) > 0 {
			t.Fatalf("%s blamed %v: %v", id, se.Culprits, err)
		}
		t.Logf("%s: %v", id, err)
	}
}

// A joining member that withholds only its last proof-phase message from
// one other new member strands that member alone: the others finish the
// proof. The confirmation round makes every honest node end with the
// reshare incomplete, naming the member that did not confirm, so that no
// old share is deleted; the stranded member keeps its new share.
func TestReshareStrandedMemberIsNamedUnconfirmed(t *testing.T) {
	old := shared2of3(t)
	key := old[agent.ID].Key()
	net := tsstest.NewMemNetwork()
	forger, victim := agent2.ID, guardian.ID
	sid := ids.NewSessionID()
	proofSession := sid.Derive("reshare-proof")
	var withheld atomic.Bool
	net.SetFilter(func(m tsstest.MemMessage) []tsstest.MemMessage {
		if m.Session == proofSession && m.From == forger && m.To == victim && TypeOf(m.Payload) == "SignRound9Message" {
			withheld.Store(true)
			return nil
		}
		return []tsstest.MemMessage{m}
	})
	oldSigners := []ids.MemberID{policy.ID, guardian.ID}
	nc := Committee{Members: []Member{agent2, policy, guardian}, Threshold: 1}
	cfg := testConfig()
	cfg.IdleTimeout = 5 * time.Second // the victim's proof signature times out
	results := map[ids.MemberID]*ReshareResult{}
	errs := runWithForger(nc.IDs(), forger, func(ctx context.Context, i int, id ids.MemberID) error {
		req := ReshareRequest{Session: sid, Key: key, OldSigners: oldSigners, NewCommittee: nc, PreParams: fixture(t, 3+i)}
		if id != agent2.ID {
			req.OldShare = old[id]
		}
		res, err := NewEngine(net.Endpoint(id), cfg).Reshare(ctx, req)
		runMu.Lock()
		results[id] = res
		runMu.Unlock()
		return err
	})
	if !withheld.Load() {
		t.Fatal("the forger's round-9 message was never withheld")
	}
	for id, err := range errs {
		res := results[id]
		t.Logf("%s: %v", id, err)
		se, ok := AsSessionError(err)
		if !ok || se.Kind != FailUnconfirmed || !errors.Is(err, ErrReshareIncomplete) {
			t.Fatalf("%s: got %v, want the reshare incomplete", id, err)
		}
		if res == nil || res.Complete() || !slices.Equal(res.Unconfirmed, []ids.MemberID{victim}) {
			t.Fatalf("%s: result %+v, want %s named unconfirmed", id, res, victim)
		}
		if !slices.Equal(res.Confirmed, sortedIDs([]ids.MemberID{forger, policy.ID})) {
			t.Fatalf("%s: confirmed %v", id, res.Confirmed)
		}
		if res.Share == nil {
			t.Fatalf("%s lost its new share", id)
		}
		// The proof exists (the others made it): the victim holds a good
		// share, so the reshare can be resolved without a new one.
		if err := VerifyReshareProof(sid, res.Key, res.Proof); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
}
