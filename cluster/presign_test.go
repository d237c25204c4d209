package cluster

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
)

// presigned lists the presignatures node name holds for key's quorum of
// the named members (root path).
func (c *cluster) presigned(t *testing.T, name string, key api.Key, quorum ...string) []ids.SessionID {
	t.Helper()
	n := c.node(name)
	if n == nil {
		t.Fatalf("%s is not running", name)
	}
	var q []ids.MemberID
	for _, m := range quorum {
		q = append(q, c.memberID(m))
	}
	slices.Sort(q)
	var out []ids.SessionID
	for _, p := range n.Presignatures() {
		pq := slices.Clone(p.Quorum)
		slices.Sort(pq)
		if p.Key == key.ID && len(p.Path) == 0 && slices.Equal(pq, q) {
			out = append(out, p.ID)
		}
	}
	return out
}

// waitPool waits until the agent and policy nodes both hold at least n
// presignatures of the hot key for their quorum, none of them in gone.
func (c *cluster) waitPool(t *testing.T, n int, gone ...ids.SessionID) []ids.SessionID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var common []ids.SessionID
	err := waitFor(ctx, 50*time.Millisecond, func() (bool, error) {
		a := c.presigned(t, nameAgent, hotKey, nameAgent, namePolicy)
		p := c.presigned(t, namePolicy, hotKey, nameAgent, namePolicy)
		common = common[:0]
		for _, id := range a {
			if slices.Contains(p, id) && !slices.Contains(gone, id) {
				common = append(common, id)
			}
		}
		return len(common) >= n, nil
	})
	if err != nil {
		t.Fatalf("the hot key's pool at the agent and policy nodes: %d presignatures held by both, want %d: %v", len(common), n, err)
	}
	return common
}

// A hot payment with a ready presignature: the coordinator names it, the
// agent and policy nodes run only the online phase, the transaction is
// mined, and the pool refills to its target without the one used.
func TestPresignedHotTransfer(t *testing.T) {
	c := setup(t)
	c.waitPool(t, 2)
	value := eth(2)
	r := c.submit(t, c.w.bot, hotKey.ID, idem("presigned"), c.w.unsignedTx(t, hotKey.Address, vendor1, value))
	r = c.waitState(t, r.ID)
	tx := signedTx(t, r, hotKey, vendor1, value)
	last := r.Attempts[len(r.Attempts)-1]
	if last.Presignature.IsZero() || last.State != "done" {
		t.Fatalf("the signing attempt named no presignature: %+v", r.Attempts)
	}
	c.mine(t, tx)
	c.checkCommittedOnce(t, namePolicy, r.ID)
	for _, name := range []string{nameAgent, namePolicy} {
		if slices.Contains(c.presigned(t, name, hotKey, nameAgent, namePolicy), last.Presignature) {
			t.Fatalf("%s still holds presignature %s after signing with it", name, last.Presignature)
		}
	}
	c.waitPool(t, 2, last.Presignature)
}

// A member restarted between presign and the request holds no
// presignature any more (memory only): the request is signed all the same,
// with the full protocol, and mined.
func TestPresignatureLostInARestartOfTheCluster(t *testing.T) {
	c := setup(t)
	before := c.waitPool(t, 1)
	if err := c.stopNode(namePolicy); err != nil {
		t.Fatal(err)
	}
	if err := c.startNode(namePolicy); err != nil {
		t.Fatal(err)
	}
	if held := c.presigned(t, namePolicy, hotKey, nameAgent, namePolicy); len(held) > 0 {
		t.Fatalf("the restarted policy node holds presignatures %v", held)
	}
	value := eth(1)
	r := c.submit(t, c.w.bot, hotKey.ID, idem("presign-restart"), c.w.unsignedTx(t, hotKey.Address, vendor1, value))
	r = c.waitState(t, r.ID)
	tx := signedTx(t, r, hotKey, vendor1, value)
	for _, a := range r.Attempts {
		if slices.Contains(before, a.Presignature) && a.State == "done" {
			t.Fatalf("attempt %s signed with presignature %s, which the restarted policy node cannot hold", a.Session, a.Presignature)
		}
		if !a.Presignature.IsZero() && a.State == "refused" && !strings.Contains(a.Error, "("+control.RulePresignature+")") {
			t.Fatalf("attempt %s refused for another reason than its presignature: %s", a.Session, a.Error)
		}
	}
	c.mine(t, tx)
	c.checkCommittedOnce(t, namePolicy, r.ID)
}
