package cluster

import (
	"context"
	"crypto/ecdsa"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/policy"
)

// entries are the authorisation's committee entries of the named members,
// sorted as policy.ReshareAuthorization wants them.
func (c *cluster) entries(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, policy.CommitteeEntry(string(c.memberID(n)), memberRoles[n]))
	}
	slices.Sort(out)
	return out
}

// authorize signs a reshare authorisation with the given guardians.
func (c *cluster) authorize(t *testing.T, a policy.ReshareAuthorization, by ...*ecdsa.PrivateKey) api.Reshare {
	t.Helper()
	s := policy.SignedReshare{Authorization: a}
	for _, g := range by {
		sig, err := policy.SignTypedData(g, a.TypedData(c.w.walletID))
		if err != nil {
			t.Fatal(err)
		}
		s.Signatures = append(s.Signatures, sig)
	}
	return api.ReshareFrom(s)
}

// reshare posts a reshare and waits for the operation to end.
func (c *cluster) reshare(t *testing.T, key api.Key, names []string, threshold int, auth api.Reshare) (*api.Operation, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var op api.Operation
	body := api.ReshareKey{Committee: c.committee(names...), Threshold: threshold, Authorization: auth}
	if err := c.call(ctx, "POST", "/v1/keys/"+key.ID.String()+"/reshare", body, c.opToken, &op); err != nil {
		return nil, err
	}
	return c.waitOperation(ctx, op.ID)
}

// The hot key moves from {agent, policy, guardian-1} to {agent, policy,
// guardian-2} (guardian-1's machine replaced, say). Without the guardian
// quorum's authorisation of exactly this move every old member refuses;
// with it the key keeps its address, the new committee confirms, and the
// next payment is signed under the new committee and mined.
func TestReshareKeepsAddress(t *testing.T) {
	c := setup(t)
	oldNames := []string{nameAgent, namePolicy, nameGuardian1}
	newNames := []string{nameAgent, namePolicy, nameGuardian2}
	auth := policy.ReshareAuthorization{
		Key: hotKey.Address, Generation: hotKey.Generation,
		OldMembers: c.entries(oldNames...), OldThreshold: 1,
		NewMembers: c.entries(newNames...), NewThreshold: 1,
		Expiry: time.Now().Add(time.Hour).UTC().Truncate(time.Second),
	}
	bad := map[string]api.Reshare{
		"one guardian only": c.authorize(t, auth, c.w.alice),
		"another committee": func() api.Reshare {
			other := auth
			other.NewMembers = c.entries(nameAgent, namePolicy, nameGuardian1)
			return c.authorize(t, other, c.w.alice, c.w.bob)
		}(),
		"no signatures": c.authorize(t, auth),
	}
	for name, a := range bad {
		t.Run(name, func(t *testing.T) {
			op, err := c.reshare(t, hotKey, newNames, 1, a)
			if err == nil {
				t.Fatalf("reshare went through: %+v", op)
			}
			t.Logf("refused: %v", err)
			if op != nil {
				// It reached the members: each old member refused it itself.
				if op.State != api.OpFailed {
					t.Fatalf("operation %s", op.State)
				}
				for _, n := range oldNames {
					if !strings.Contains(op.Error, string(c.memberID(n))+" refused (reshare)") {
						t.Errorf("old member %s did not refuse: %s", n, op.Error)
					}
				}
			}
			var k api.Key
			if err := c.call(context.Background(), "GET", "/v1/keys/"+hotKey.ID.String(), nil, c.opToken, &k); err != nil {
				t.Fatal(err)
			}
			if k.Generation != hotKey.Generation || len(k.Committee.Members) != 3 {
				t.Fatalf("after a refused reshare the key is %+v", k)
			}
		})
	}

	op, err := c.reshare(t, hotKey, newNames, 1, c.authorize(t, auth, c.w.alice, c.w.bob))
	if err != nil {
		t.Fatalf("authorised reshare: %v", err)
	}
	nk := *op.Key
	if nk.Address != hotKey.Address || string(nk.PublicKey) != string(hotKey.PublicKey) {
		t.Fatalf("reshare moved the key from %s to %s", hotKey.Address, nk.Address)
	}
	if nk.Generation != hotKey.Generation+1 {
		t.Errorf("generation %d after the reshare, want %d", nk.Generation, hotKey.Generation+1)
	}
	if len(op.Unconfirmed) != 0 || len(op.Confirmed) != len(newNames) {
		t.Errorf("confirmed %v unconfirmed %v, want every new member confirmed", op.Confirmed, op.Unconfirmed)
	}
	for _, m := range nk.Committee.Members {
		if m.ID == c.memberID(nameGuardian1) {
			t.Errorf("guardian-1 is still in the committee: %+v", nk.Committee)
		}
	}
	hotKey = nk
	r := c.submit(t, c.w.bot, hotKey.ID, idem("after-reshare"), c.w.unsignedTx(t, hotKey.Address, vendor1, eth(2)))
	r = c.waitState(t, r.ID)
	c.mine(t, signedTx(t, r, hotKey, vendor1, eth(2)))
}
