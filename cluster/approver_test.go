package cluster

import (
	"context"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/policy"
)

// A guarded request approved by guardian-1 while guardian-1's node is out
// of reach: guardian-2's node is up, but it joins only with its own
// human's approval and would refuse, ending the request as denied. The
// coordinator waits for the approver's node instead, naming it, and signs
// with it once it is back.
func TestApproversNodeOutOfReachWaits(t *testing.T) {
	c := setup(t)
	value := eth(510)
	r := c.submit(t, c.w.bot, vaultKey.ID, idem("approver-away"), c.w.unsignedTx(t, vaultKey.Address, vendor2, value))
	r = c.waitState(t, r.ID, api.StatePendingApproval)
	if r.State != api.StatePendingApproval {
		t.Fatalf("request %s, want pending_approval", describeRequest(r))
	}
	if err := c.stopNode(nameGuardian1); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			_ = c.startNode(nameGuardian1)
		}
	}()
	// guardian-1's human approves (signed with their key, posted to the
	// coordinator directly: their node is down).
	a := policy.Approval{RequestID: r.ID, Digest: r.Digest, ChainID: big.NewInt(simChainID), Key: vaultKey.Address,
		Issued: nowSigned(), Expiry: time.Now().Add(30 * time.Minute).UTC().Truncate(time.Second)}
	sig, err := policy.SignTypedData(c.w.alice, a.TypedData(c.w.walletID))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.call(ctx, "POST", "/v1/requests/"+string(r.ID)+"/approvals", api.ApprovalFrom(policy.SignedApproval{Approval: a, Signature: sig}), "", nil); err != nil {
		t.Fatalf("approval: %v", err)
	}
	// The request waits, naming the approver's node, rather than asking
	// guardian-2's node (which would refuse).
	g1 := string(c.memberID(nameGuardian1))
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := waitFor(wctx, 100*time.Millisecond, func() (bool, error) {
		cur := c.request(t, r.ID)
		if api.Final(cur.State) {
			t.Fatalf("request ended while the approver's node was away: %s", describeRequest(cur))
		}
		return strings.Contains(cur.Reason, "cannot reach") && strings.Contains(cur.Reason, g1), nil
	}); err != nil {
		t.Fatalf("the request never said it waits for %s: %s", g1, describeRequest(c.request(t, r.ID)))
	}
	if err := c.startNode(nameGuardian1); err != nil {
		t.Fatal(err)
	}
	restarted = true
	r = c.waitState(t, r.ID)
	if r.State != api.StateSigned {
		t.Fatalf("after the approver's node came back: %s", describeRequest(r))
	}
	if q := c.quorumOf(r); !slices.Contains(q, nameGuardian1) || slices.Contains(q, nameGuardian2) {
		t.Fatalf("signed by %v, want the approving guardian-1 and not guardian-2", q)
	}
}
