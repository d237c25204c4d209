package cluster

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/ethereum/go-ethereum/crypto"
)

// adminClient dials a node's admin socket.
func (c *cluster) adminClient(t *testing.T, name string) *admin.Client {
	t.Helper()
	ac, err := admin.NewClient("unix://"+c.adminSocket(name), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ac.Close)
	return ac
}

// Both keys were made through POST /v1/keys: the operation reports the
// key, GET /v1/keys and GET /v1/keys/{key} show its address, public key,
// committee and guardian floor, the address is the public key's, and
// every member reports the same key from its own share.
func TestKeyCreation(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	// The keys as they stand (a reshare test may have moved the hot key
	// to another committee since).
	members := func(k api.Key) []string {
		var out []string
		for _, m := range k.Committee.Members {
			out = append(out, c.nameOf(m.ID))
		}
		return out
	}
	cases := []struct {
		op        *api.Operation
		key       api.Key
		members   []string
		threshold int
		floor     int
	}{
		{hotOp, hotKey, members(hotKey), 1, 0},
		{vaultOp, vaultKey, members(vaultKey), 2, 1},
	}
	if hotOp.Key.Address != hotKey.Address || vaultOp.Key.Address != vaultKey.Address {
		t.Fatalf("the keys moved address")
	}
	if got := members(*hotOp.Key); !slices.Equal(sorted(got), sorted([]string{nameAgent, namePolicy, nameGuardian1})) {
		t.Errorf("hot key created with committee %v", got)
	}
	if got := members(*vaultOp.Key); len(got) != 4 {
		t.Errorf("vault key created with committee %v", got)
	}
	var list api.Keys
	if err := c.call(ctx, "GET", "/v1/keys", nil, c.opToken, &list); err != nil {
		t.Fatalf("GET /v1/keys: %v", err)
	}
	for _, tc := range cases {
		if tc.op.Kind != "keygen" || tc.op.State != api.OpDone {
			t.Errorf("operation %s: kind %q state %q", tc.op.ID, tc.op.Kind, tc.op.State)
		}
		var got api.Key
		if err := c.call(ctx, "GET", "/v1/keys/"+tc.key.ID.String(), nil, c.opToken, &got); err != nil {
			t.Fatalf("GET /v1/keys/%s: %v", tc.key.ID, err)
		}
		if got.Address != tc.key.Address || !bytes.Equal(got.PublicKey, tc.key.PublicKey) {
			t.Errorf("GET /v1/keys/%s = %s %x, the operation said %s %x", tc.key.ID, got.Address, got.PublicKey, tc.key.Address, tc.key.PublicKey)
		}
		pub, err := crypto.DecompressPubkey(got.PublicKey)
		if err != nil {
			if pub, err = crypto.UnmarshalPubkey(got.PublicKey); err != nil {
				t.Fatalf("public key %x: %v", got.PublicKey, err)
			}
		}
		if a := crypto.PubkeyToAddress(*pub); a != got.Address {
			t.Errorf("key %s: public key's address is %s", got.Address, a)
		}
		if got.GuardianFloor != tc.floor || got.Threshold != tc.threshold || got.Generation != tc.key.Generation {
			t.Errorf("key %s: guardian floor %d threshold %d generation %d, want %d %d %d", got.Address, got.GuardianFloor, got.Threshold, got.Generation, tc.floor, tc.threshold, tc.key.Generation)
		}
		if len(got.Committee.Members) != len(tc.members) {
			t.Errorf("key %s: committee %+v, want %v", got.Address, got.Committee, tc.members)
		}
		for _, n := range tc.members {
			found := false
			for _, m := range got.Committee.Members {
				found = found || (m.ID == c.memberID(n) && m.Role == memberRoles[n])
			}
			if !found {
				t.Errorf("key %s: committee lacks %s (%s)", got.Address, n, c.memberID(n))
			}
		}
		listed := false
		for _, k := range list.Keys {
			listed = listed || k.Address == got.Address
		}
		if !listed {
			t.Errorf("GET /v1/keys does not list %s", got.Address)
		}
		// Every member holds a share of the same key.
		for _, n := range tc.members {
			st, err := c.adminClient(t, n).Status(ctx)
			if err != nil {
				t.Fatalf("%s status: %v", n, err)
			}
			held := false
			for _, k := range st.Keys {
				if k.Address == got.Address {
					held = bytes.Equal(k.PublicKey, got.PublicKey)
				}
			}
			if !held {
				t.Errorf("%s does not report key %s with the same public key: %+v", n, got.Address, st.Keys)
			}
		}
	}
	// A member outside a committee holds no share of it.
	for _, n := range memberNames {
		if slices.Contains(members(hotKey), n) {
			continue
		}
		st, err := c.adminClient(t, n).Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range st.Keys {
			if k.Address == hotKey.Address && k.Generation == hotKey.Generation {
				t.Errorf("%s holds a share of the hot key it is not a member of", n)
			}
		}
	}
	// Invariant 1: the coordinator drove both key generations and holds no
	// share and no pre-parameters of its own.
	c.coord.mu.Lock()
	cst := c.coord.c.Store()
	c.coord.mu.Unlock()
	if held, err := cst.ShareKeys(ctx); err != nil || len(held) != 0 {
		t.Errorf("the coordinator's store holds shares %+v (%v)", held, err)
	}
	if n, err := cst.CountPreParams(ctx); err != nil || n != 0 {
		t.Errorf("the coordinator's store holds %d pre-parameter sets (%v)", n, err)
	}
	// An agent credential cannot create keys.
	body := []byte(`{"committee":[{"id":"` + string(c.memberID(nameAgent)) + `","role":"agent"}],"threshold":0}`)
	err := c.callAgent(ctx, c.w.bot, "POST", "/v1/keys", body, nil)
	if re, ok := err.(*restError); !ok || (re.Status != 401 && re.Status != 403) {
		t.Errorf("POST /v1/keys with an agent credential: %v, want 401 or 403", err)
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
