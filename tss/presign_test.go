package tss

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// presignCluster is one engine per member of the shared 2-of-3 key, on one
// in-process network; engines keep their parked presignatures across calls.
type presignCluster struct {
	net     *MemNetwork
	shares  map[ids.MemberID]*Share
	engines map[ids.MemberID]*Engine
}

func newPresignCluster(t testing.TB, tune func(*Config)) *presignCluster {
	t.Helper()
	c := &presignCluster{net: NewMemNetwork(), shares: shared2of3(t), engines: map[ids.MemberID]*Engine{}}
	for id := range c.shares {
		cfg := testConfig()
		if tune != nil {
			tune(&cfg)
		}
		c.engines[id] = NewEngine(c.net.Endpoint(id), cfg)
	}
	return c
}

// presign parks one presignature at every signer and checks that each
// describes it alike.
func (c *presignCluster) presign(t testing.TB, signers []ids.MemberID, path []uint32) ids.SessionID {
	t.Helper()
	sid := ids.NewSessionID()
	infos := map[ids.MemberID]PresignInfo{}
	errs := runAll(signers, func(_ int, id ids.MemberID) error {
		info, err := c.engines[id].Presign(context.Background(), PresignRequest{Session: sid, Share: c.shares[id], Signers: signers, Path: path})
		runMu.Lock()
		infos[id] = info
		runMu.Unlock()
		return err
	})
	for id, err := range errs {
		if err != nil {
			t.Fatalf("presign at %s: %v", id, err)
		}
		info := infos[id]
		if info.ID != sid || info.Key != c.shares[id].Key().Address || !slices.Equal(info.Signers, sortedIDs(signers)) || !slices.Equal(info.Path, path) {
			t.Fatalf("presign at %s: info %+v does not describe the request", id, info)
		}
	}
	return sid
}

// online runs SignPresigned at every signer, member i with digests[i] (or
// digests[0] for all).
func (c *presignCluster) online(signers []ids.MemberID, presign ids.SessionID, digests ...[32]byte) (map[ids.MemberID]Signature, map[ids.MemberID]error) {
	sid := ids.NewSessionID()
	sigs := map[ids.MemberID]Signature{}
	errs := runAll(signers, func(i int, id ids.MemberID) error {
		d := digests[0]
		if len(digests) > 1 {
			d = digests[i]
		}
		sig, err := c.engines[id].SignPresigned(context.Background(), OnlineRequest{Presign: presign, Session: sid, Digest: d, Binding: []byte("req-1")})
		runMu.Lock()
		sigs[id] = sig
		runMu.Unlock()
		return err
	})
	return sigs, errs
}

func wantNoErrs(t *testing.T, what string, errs map[ids.MemberID]error) {
	t.Helper()
	for id, err := range errs {
		if err != nil {
			t.Fatalf("%s at %s: %v", what, id, err)
		}
	}
}

// TestPresignGuard guards the tss-lib detail presignatures rely on: the
// signing party reads the digest at round 5, so the signature is over the
// digest given after rounds 1-4, not over the placeholder they ran with.
func TestPresignGuard(t *testing.T) {
	c := newPresignCluster(t, nil)
	signers := []ids.MemberID{agent.ID, policy.ID}
	key := c.shares[agent.ID].Key()
	pid := c.presign(t, signers, nil)
	late := digestOf("late digest")
	sigs, errs := c.online(signers, pid, late)
	wantNoErrs(t, "sign presigned", errs)
	for id, sig := range sigs {
		if got := recoverAddress(t, late, sig); got != key.Address {
			t.Fatalf("%s: signature recovers to %s for the late digest, want %s", id, got.Hex(), key.Address.Hex())
		}
		pub, err := crypto.Ecrecover(presignPlaceholder[:], sig[:])
		if err == nil && bytes.Equal(pub, key.PublicKey) {
			t.Fatalf("%s: signature is over the placeholder digest", id)
		}
		if sig != sigs[agent.ID] {
			t.Fatalf("members finished with different signatures")
		}
	}
}

// TestPresignAddresses: a presignature signs for the key, or for the child
// key whose path was fixed at presign time.
func TestPresignAddresses(t *testing.T) {
	c := newPresignCluster(t, nil)
	key := c.shares[agent.ID].Key()
	child, err := key.Child([]uint32{0, 7})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		signers []ids.MemberID
		path    []uint32
		want    common.Address
	}{
		{"root", []ids.MemberID{policy.ID, guardian.ID}, nil, key.Address},
		{"child", []ids.MemberID{agent.ID, guardian.ID}, child.Path, child.Address},
		{"all three", []ids.MemberID{agent.ID, policy.ID, guardian.ID}, nil, key.Address},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid := c.presign(t, tc.signers, tc.path)
			d := digestOf("pay " + tc.name)
			sigs, errs := c.online(tc.signers, pid, d)
			wantNoErrs(t, "sign presigned", errs)
			for id, sig := range sigs {
				if got := recoverAddress(t, d, sig); got != tc.want {
					t.Fatalf("%s: signature recovers to %s, want %s", id, got.Hex(), tc.want.Hex())
				}
			}
		})
	}
}
