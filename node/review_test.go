package node

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// TestRetryWithAnotherPayloadRefused: the request id is the agent and its
// idempotency key only, so a retry under it may carry another body. After
// a session ran with the first body (its reservation kept across a
// restart), a proposal of a larger payment under the same request id must
// not reuse that reservation: it is refused.
func TestRetryWithAnotherPayloadRefused(t *testing.T) {
	c, key := shared(t)
	var idem string
	small, id := requestWith(t, c.w.bot, key, vendor, millis(2), func(r *api.SignRequest) { idem = r.IdempotencyKey })
	large, _ := requestWith(t, c.w.bot, key, vendor, millis(9), func(r *api.SignRequest) { r.IdempotencyKey = idem })
	id2 := control.RequestID(large.Agent, idem)
	if id != id2 {
		t.Fatalf("request ids differ: %s %s", id, id2)
	}
	pol := c.policy()
	sid := ids.NewSessionID()
	expectJoined(t, pol.name, c.send(pol, propose(sid, id, small, c.memberIDs(), "hot")))
	if r := c.send(pol, &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sid}}); r.Refusal != nil {
		t.Fatal(r.Refusal)
	}
	// The node stops while its session runs: the reservation is kept.
	if err := pol.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.start(pol); err != nil {
		t.Fatal(err)
	}
	before := reservationRows(t, pol, id)
	if len(before) == 0 {
		t.Fatal("no reservation kept after the restart")
	}
	sid2 := ids.NewSessionID()
	r := c.send(pol, propose(sid2, id, large, c.memberIDs(), "hot"))
	if r.Refusal == nil {
		c.abortAll(sid2, pol)
	}
	expectRefused(t, pol.name, r, CheckRequest)
	// The same body again is still a retry the node takes.
	sid3 := ids.NewSessionID()
	expectJoined(t, pol.name, c.send(pol, propose(sid3, id, small, c.memberIDs(), "hot")))
	c.abortAll(sid3, pol)
}

// TestFreezeBetweenProposalAndStart: a freeze that arrives after a node
// joined a proposal holds at the Start (invariant 8): the session does not
// run, and its reservation is released.
func TestFreezeBetweenProposalAndStart(t *testing.T) {
	c, key := shared(t)
	ctx := context.Background()
	s, id := request(t, c.w.bot, key, vendor, millis(1))
	sid := ids.NewSessionID()
	for _, n := range c.nodes {
		expectJoined(t, n.name, c.send(n, propose(sid, id, s, c.memberIDs(), "hot")))
	}
	now := time.Now().UTC().Truncate(time.Second)
	f := policy.Freeze{Target: policy.AgentTarget("bot"), Reason: "between proposal and start", Issued: now}
	sig, err := policy.SignTypedData(c.w.carol, f.TypedData(c.w.walletID))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.guardian().Freeze(ctx, api.FreezeFrom(f, sig))
	if err != nil || !res.Applied || len(res.Failed) != 0 {
		t.Fatalf("freeze: %+v %v", res, err)
	}
	defer func() {
		fid, _ := f.ID(c.w.walletID)
		u := policy.Unfreeze{Target: f.Target, Freeze: fid, Issued: now.Add(time.Second)}
		one, _ := policy.SignTypedData(c.w.alice, u.TypedData(c.w.walletID))
		two, _ := policy.SignTypedData(c.w.bob, u.TypedData(c.w.walletID))
		uq := api.Unfreeze{Target: u.Target, Freeze: u.Freeze, Issued: u.Issued, Signatures: []hexutil.Bytes{one, two}}
		for _, n := range c.nodes {
			if r := c.send(n, &control.Message{Type: control.TypeUnfreeze, Unfreeze: &uq}); r.Refusal != nil {
				t.Errorf("%s: unfreeze: %v", n.name, r.Refusal)
			}
		}
	}()
	for _, n := range c.nodes {
		r := c.send(n, &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sid}})
		if r.Refusal == nil {
			c.abortAll(sid, c.nodes...)
			t.Fatalf("%s started a session of a frozen agent: %+v", n.name, r.Result)
		}
		t.Logf("%s refused the start (%s): %s", n.name, r.Refusal.RuleID, r.Refusal.Reason)
	}
	for _, n := range c.nodes {
		r := c.send(n, &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sid, Wait: control.Duration(5 * time.Second)}})
		if r.Result == nil || r.Result.State != control.StateFailed {
			t.Fatalf("%s: result %+v", n.name, r)
		}
		assertNoReservation(t, n, id)
	}
}

// TestOpenProposalsBounded: a coordinator that proposes sessions and never
// starts them is refused once it has maxOpenProposals open at a node.
func TestOpenProposalsBounded(t *testing.T) {
	c, key := shared(t)
	saved := maxOpenProposals
	maxOpenProposals = 2
	defer func() { maxOpenProposals = saved }()
	n := c.agent()
	keygen := func() *control.Reply {
		return c.send(n, &control.Message{Type: control.TypeKeygen, Keygen: &control.Keygen{Session: ids.NewSessionID(),
			Committee: key.Committee, Deadline: time.Now().Add(time.Hour)}})
	}
	var open []ids.SessionID
	defer func() {
		for _, sid := range open {
			c.abortAll(sid, n)
		}
	}()
	for range 2 {
		expectJoined(t, n.name, keygen())
	}
	n.mu.Lock()
	for id, s := range n.sessions {
		if s.kind == kindKeygen && s.state == control.StateProposed {
			open = append(open, id)
		}
	}
	n.mu.Unlock()
	expectRefused(t, n.name, keygen(), CheckSession)
	s, id := request(t, c.w.bot, key, vendor, millis(1))
	expectRefused(t, n.name, c.send(n, propose(ids.NewSessionID(), id, s, c.memberIDs(), "hot")), CheckSession)
}

// TestQueueKeepsTheFirstPayload: a second Pending under a queued request
// id with another payload does not replace what the human was shown (and
// may have approved).
func TestQueueKeepsTheFirstPayload(t *testing.T) {
	c, key := shared(t)
	var idem string
	first, id := requestWith(t, c.w.bot, key, vendor, millis(500), func(r *api.SignRequest) { idem = r.IdempotencyKey })
	other, _ := requestWith(t, c.w.bot, key, vendor, millis(900), func(r *api.SignRequest) { r.IdempotencyKey = idem })
	g := c.guardian()
	pending := func(s agentauth.Signed) *control.Reply {
		return c.send(g, &control.Message{Type: control.TypePending, Pending: &control.Pending{RequestID: id, Request: s, Tier: "guarded", RuleID: "larger-payments"}})
	}
	if r := pending(first); r.Refusal != nil {
		t.Fatalf("pending: %v", r.Refusal)
	}
	expectRefused(t, g.name, pending(other), CheckRequest)
	p, err := g.PendingRequest(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest != digestOf(t, first) {
		t.Fatalf("the queue shows digest %s, not the first payload's %s", p.Digest.Hex(), digestOf(t, first).Hex())
	}
	if r := pending(first); r.Refusal != nil {
		t.Fatalf("the same pending again: %v", r.Refusal)
	}
}

// TestSigningEndsByTheRequestExpiry: a session started just before the
// request expires ends at the expiry, not a session timeout later.
func TestSigningEndsByTheRequestExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	expiry := now.Add(10 * time.Second)
	if got := signDeadline(now, 2*time.Minute, expiry); got.After(expiry) {
		t.Fatalf("a session started %s before the request's expiry runs until %s, past it", expiry.Sub(now), got)
	}
	if got := signDeadline(now, time.Second, expiry); !got.Equal(now.Add(time.Second)) {
		t.Fatalf("deadline %s, want the session timeout %s", got, now.Add(time.Second))
	}
}

// TestGuardianNodeRefusesAnotherPathThanQueued: the guardian's human was
// shown the request signed by the key itself; a proposal of the same
// transaction under the same request id at a child path (same digest, so
// the approval still matches) is refused by the guardian node.
func TestGuardianNodeRefusesAnotherPathThanQueued(t *testing.T) {
	c, key := shared(t)
	var idem string
	var payload json.RawMessage
	first, id := requestWith(t, c.w.bot, key, vendor, millis(500), func(r *api.SignRequest) { idem, payload = r.IdempotencyKey, r.Payload })
	child, _ := requestWith(t, c.w.bot, key, vendor, millis(500), func(r *api.SignRequest) {
		r.IdempotencyKey, r.Payload, r.Path = idem, payload, []uint32{1}
	})
	if digestOf(t, first) != digestOf(t, child) {
		t.Fatal("the two bodies should sign the same digest")
	}
	g := c.guardian()
	if r := c.send(g, &control.Message{Type: control.TypePending, Pending: &control.Pending{RequestID: id, Request: first, Tier: "guarded", RuleID: "larger-payments"}}); r.Refusal != nil {
		t.Fatalf("pending: %v", r.Refusal)
	}
	a := c.approve(t, c.w.alice, id, digestOf(t, first), key)
	sid := ids.NewSessionID()
	r := c.send(g, propose(sid, id, child, c.memberIDs(), "guarded", a))
	if r.Refusal == nil {
		c.abortAll(sid, g)
	}
	expectRefused(t, g.name, r, CheckRequest)
}

// TestFailedSessionKeepsItsReservation: a signing session that ran and
// failed keeps its reservation, since this node may have sent its last
// share and a member that withheld its own could finish the signature
// alone. Here a freeze cancels the running session (it holds before the
// next signature); a retry reuses the reservation once unfrozen.
func TestFailedSessionKeepsItsReservation(t *testing.T) {
	c, key := shared(t)
	ctx := context.Background()
	s, id := request(t, c.w.bot, key, vendor, millis(3))
	sid := ids.NewSessionID()
	for _, n := range c.nodes {
		expectJoined(t, n.name, c.send(n, propose(sid, id, s, c.memberIDs(), "hot")))
	}
	pol := c.policy()
	if r := c.send(pol, &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sid}}); r.Refusal != nil {
		t.Fatal(r.Refusal)
	}
	c.abortAll(sid, c.agent(), c.guardian())
	before := reservationRows(t, pol, id)
	if len(before) == 0 {
		t.Fatal("no reservation while the session runs")
	}
	now := time.Now().UTC().Truncate(time.Second)
	f := policy.Freeze{Target: policy.AgentTarget("bot"), Reason: "during a running session", Issued: now}
	sig, err := policy.SignTypedData(c.w.carol, f.TypedData(c.w.walletID))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.send(pol, &control.Message{Type: control.TypeFreeze, Freeze: ptr(api.FreezeFrom(f, sig))}); r.Refusal != nil {
		t.Fatalf("freeze: %v", r.Refusal)
	}
	r := c.send(pol, &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sid, Wait: control.Duration(control.MaxResultWait)}})
	if r.Result == nil || r.Result.State != control.StateFailed {
		t.Fatalf("the freeze did not end the running session: %+v", r)
	}
	if after := reservationRows(t, pol, id); len(after) != len(before) {
		t.Fatalf("%d reservation rows after the failed session, %d before: released while a signature may exist", len(after), len(before))
	}
	fid, _ := f.ID(c.w.walletID)
	u := policy.Unfreeze{Target: f.Target, Freeze: fid, Issued: now.Add(time.Second)}
	one, _ := policy.SignTypedData(c.w.alice, u.TypedData(c.w.walletID))
	two, _ := policy.SignTypedData(c.w.bob, u.TypedData(c.w.walletID))
	uq := api.Unfreeze{Target: u.Target, Freeze: u.Freeze, Issued: u.Issued, Signatures: []hexutil.Bytes{one, two}}
	if r := c.send(pol, &control.Message{Type: control.TypeUnfreeze, Unfreeze: &uq}); r.Refusal != nil {
		t.Fatalf("unfreeze: %v", r.Refusal)
	}
	_, got := signWith(t, c, s, id, "hot")
	recovers(t, digestOf(t, s), got, key.Address)
	if rows := reservationRows(t, pol, id); len(rows) != len(before) {
		t.Fatalf("after the retry %d rows, want %d: reserved twice", len(rows), len(before))
	}
	if n, err := pol.Store().VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain: %v after %d", err, n)
	}
}

func ptr[T any](v T) *T { return &v }

// TestRetryAtTheBudgetEdge: the retry of a request whose session ran and
// failed reuses its held reservation and is judged without counting that
// reservation twice, so a request that used a rule's last unit of budget
// can still be retried. A cluster of its own: the coffee rule allows one
// request a day.
func TestRetryAtTheBudgetEdge(t *testing.T) {
	c, err := newCluster(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	key, err := c.keygen()
	if err != nil {
		t.Fatal(err)
	}
	s, id := request(t, c.w.bot, key, cafe, millis(1))
	sid := ids.NewSessionID()
	for _, n := range c.nodes {
		expectJoined(t, n.name, c.send(n, propose(sid, id, s, c.memberIDs(), "hot")))
	}
	pol := c.policy()
	if r := c.send(pol, &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sid}}); r.Refusal != nil {
		t.Fatal(r.Refusal)
	}
	c.abortAll(sid, c.agent(), c.guardian())
	// A freeze ends the running session; the quorum's unfreeze lifts it.
	now := time.Now().UTC().Truncate(time.Second)
	f := policy.Freeze{Target: policy.AgentTarget("bot"), Reason: "end the session", Issued: now}
	sig, err := policy.SignTypedData(c.w.carol, f.TypedData(c.w.walletID))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.send(pol, &control.Message{Type: control.TypeFreeze, Freeze: ptr(api.FreezeFrom(f, sig))}); r.Refusal != nil {
		t.Fatalf("freeze: %v", r.Refusal)
	}
	if r := c.send(pol, &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sid, Wait: control.Duration(control.MaxResultWait)}}); r.Result == nil || r.Result.State != control.StateFailed {
		t.Fatalf("result: %+v", r)
	}
	fid, _ := f.ID(c.w.walletID)
	u := policy.Unfreeze{Target: f.Target, Freeze: fid, Issued: now.Add(time.Second)}
	one, _ := policy.SignTypedData(c.w.alice, u.TypedData(c.w.walletID))
	two, _ := policy.SignTypedData(c.w.bob, u.TypedData(c.w.walletID))
	uq := api.Unfreeze{Target: u.Target, Freeze: u.Freeze, Issued: u.Issued, Signatures: []hexutil.Bytes{one, two}}
	if r := c.send(pol, &control.Message{Type: control.TypeUnfreeze, Unfreeze: &uq}); r.Refusal != nil {
		t.Fatalf("unfreeze: %v", r.Refusal)
	}
	_, got := signWith(t, c, s, id, "hot")
	recovers(t, digestOf(t, s), got, key.Address)
	// The budget is spent once: a second request to the cafe is refused.
	s2, id2 := request(t, c.w.bot, key, cafe, millis(1))
	if r := c.send(pol, propose(ids.NewSessionID(), id2, s2, c.memberIDs(), "hot")); r.Refusal == nil || r.Refusal.RuleID != "coffee" {
		t.Fatalf("a second coffee: %+v, want the coffee budget's refusal", r)
	}
}

// TestDenialAfterApprovalHolds: a guardian who approved and then denied
// ends the request at its node: the approval given before no longer makes
// the guardian node join, and the request cannot be queued again.
func TestDenialAfterApprovalHolds(t *testing.T) {
	c, key := shared(t)
	ctx := context.Background()
	s, id := request(t, c.w.bot, key, vendor, millis(500))
	g := c.guardian()
	pending := &control.Message{Type: control.TypePending, Pending: &control.Pending{RequestID: id, Request: s, Tier: "guarded", RuleID: "larger-payments"}}
	if r := c.send(g, pending); r.Refusal != nil {
		t.Fatal(r.Refusal)
	}
	a := c.approve(t, c.w.alice, id, digestOf(t, s), key)
	if _, err := g.Approve(ctx, a); err != nil {
		t.Fatal(err)
	}
	dn := policy.Denial{RequestID: id, Digest: digestOf(t, s), Reason: "changed my mind", Issued: time.Now().UTC().Truncate(time.Second)}
	sig, err := policy.SignTypedData(c.w.alice, dn.TypedData(c.w.walletID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Deny(ctx, api.DenialFrom(policy.SignedDenial{Denial: dn, Signature: sig})); err != nil {
		t.Fatal(err)
	}
	sid := ids.NewSessionID()
	r := c.send(g, propose(sid, id, s, c.memberIDs(), "guarded", a))
	if r.Refusal == nil {
		c.abortAll(sid, g)
	}
	expectRefused(t, g.name, r, CheckApproval)
	expectRefused(t, g.name+" queueing it again", c.send(g, pending), CheckApproval)
}
