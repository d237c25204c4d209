package node

import (
	"context"
	"crypto/ecdsa"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
)

// signWith proposes s to every node of the cluster in tier, starts the
// session and returns the signature every member reports.
func signWith(t *testing.T, c *cluster, s agentauth.Signed, id ids.RequestID, tier string, approvals ...api.Approval) (ids.SessionID, []byte) {
	t.Helper()
	sid := ids.NewSessionID()
	msg := propose(sid, id, s, c.memberIDs(), tier, approvals...)
	for _, n := range c.nodes {
		expectJoined(t, n.name, c.send(n, msg))
	}
	res, err := c.run(sid, c.nodes, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var sig []byte
	for i, r := range res {
		if r.State != control.StateDone {
			t.Fatalf("%s: session %s (%s, culprits %v)", c.nodes[i].name, r.State, r.Error, r.Culprits)
		}
		if sig != nil && !slices.Equal(sig, r.Signature) {
			t.Fatalf("members report different signatures")
		}
		sig = r.Signature
	}
	return sid, sig
}

// recovers checks that sig over digest recovers to the key's address.
func recovers(t *testing.T, digest common.Hash, sig []byte, want common.Address) {
	t.Helper()
	pub, err := crypto.SigToPub(digest[:], sig)
	if err != nil {
		t.Fatal(err)
	}
	if got := crypto.PubkeyToAddress(*pub); got != want {
		t.Fatalf("signature recovers to %s, want the key's %s", got.Hex(), want.Hex())
	}
}

func TestKeygenThroughProtocolThenSign(t *testing.T) {
	c, key := shared(t)
	if key.GuardianFloor != 1 || key.Committee.Threshold != 2 {
		t.Fatalf("key %s: want threshold 2 and guardian floor 1", key.Describe())
	}
	for _, n := range c.nodes {
		sh, err := n.Store().LatestShare(context.Background(), key.ID())
		if err != nil {
			t.Fatalf("%s holds no share: %v", n.name, err)
		}
		if !sh.Key().Equal(key) {
			t.Fatalf("%s holds another key", n.name)
		}
	}
	s, id := request(t, c.w.bot, key, vendor, millis(5))
	sid, sig := signWith(t, c, s, id, "hot")
	recovers(t, digestOf(t, s), sig, key.Address)

	// Every node committed the reservation and audited the signature.
	for _, n := range c.nodes {
		recs, err := n.Store().Ledger().Records(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var mine []policy.Record
		for _, r := range recs {
			if r.ID == id {
				mine = append(mine, r)
			}
		}
		if len(mine) == 0 || mine[0].State != policy.Committed {
			t.Fatalf("%s ledger for %s: %+v, want a committed record", n.name, id, mine)
		}
		entries, err := n.Store().AuditByRequest(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if !hasAudit(entries, store.AuditSignature) || !hasAudit(entries, store.AuditDecision) || !hasAudit(entries, store.AuditRequest) {
			t.Fatalf("%s audit of %s lacks request, decision or signature: %v", n.name, id, entries)
		}
	}
	// The request is signed: another proposal of it is refused, and the
	// signature stays available through result.
	expectRefused(t, "agent node", c.send(c.agent(), propose(ids.NewSessionID(), id, s, c.memberIDs(), "hot")), CheckRequest)
	r := c.send(c.policy(), &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sid}})
	if r.Result == nil || !slices.Equal(r.Result.Signature, sig) {
		t.Fatalf("result after signing: %+v", r)
	}
	// Once the session is forgotten in memory, the journal answers.
	c.policy().sweep(time.Now().Add(time.Hour))
	r = c.send(c.policy(), &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sid}})
	if r.Result == nil || r.Result.State != control.StateDone || !slices.Equal(r.Result.Signature, sig) {
		t.Fatalf("result from the journal: %+v", r)
	}
	s2, id2 := request(t, c.w.bot, key, vendor, millis(1))
	expectRefused(t, "policy after forgetting the session", c.send(c.policy(), propose(sid, id2, s2, c.memberIDs(), "hot")), CheckSession)
}

func hasAudit(entries []store.Entry, k store.AuditKind) bool {
	for _, e := range entries {
		if e.Kind == k {
			return true
		}
	}
	return false
}

// TestCompromisedCoordinator plays a coordinator that tries to make the
// nodes sign what the agent and the policy did not allow (invariants 1-4).
func TestCompromisedCoordinator(t *testing.T) {
	c, key := shared(t)
	all := c.memberIDs()

	t.Run("payload changed after the agent signed", func(t *testing.T) {
		s, id := request(t, c.w.bot, key, vendor, millis(5))
		other, _ := request(t, c.w.bot, key, stranger, millis(5))
		forged := s
		forged.Body = other.Body // the coordinator swaps the body, keeps the signature
		_ = id
		p, err := api.ParseSigned(forged, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		fid := control.RequestID(forged.Agent, p.IdempotencyKey)
		for _, n := range c.nodes {
			expectRefused(t, n.name, c.send(n, propose(ids.NewSessionID(), fid, forged, all, "hot")), CheckAgent)
			// The refusal is in the node's audit log.
			entries, err := n.Store().AuditByRequest(context.Background(), fid)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) == 0 || entries[len(entries)-1].Decision != "refused" || entries[len(entries)-1].RuleID != CheckAgent {
				t.Fatalf("%s audit of the refusal: %v", n.name, entries)
			}
		}
	})

	t.Run("claims a lower tier", func(t *testing.T) {
		s, id := request(t, c.w.bot, key, vendor, millis(500)) // larger-payments: guarded
		for _, n := range c.nodes {
			expectRefused(t, n.name, c.send(n, propose(ids.NewSessionID(), id, s, all, "hot")), CheckTier)
		}
		// Nothing stays reserved after the refusals.
		for _, n := range c.nodes {
			assertNoReservation(t, n, id)
		}
	})

	t.Run("quorum without the guardian the tier needs", func(t *testing.T) {
		s, id := request(t, c.w.bot, key, vendor, millis(500))
		a := c.approve(t, c.w.alice, id, digestOf(t, s), key)
		q := []ids.MemberID{c.agent().Self(), c.policy().Self()}
		for _, n := range []*testNode{c.agent(), c.policy()} {
			expectRefused(t, n.name, c.send(n, propose(ids.NewSessionID(), id, s, q, "guarded", a)), CheckQuorum)
		}
		expectRefused(t, "guardian node outside the quorum", c.send(c.guardian(), propose(ids.NewSessionID(), id, s, q, "guarded", a)), CheckQuorum)
	})

	t.Run("reuses a session id", func(t *testing.T) {
		s1, id1 := request(t, c.w.bot, key, vendor, millis(1))
		sid, _ := signWith(t, c, s1, id1, "hot")
		s2, id2 := request(t, c.w.bot, key, vendor, millis(1))
		for _, n := range c.nodes {
			expectRefused(t, n.name, c.send(n, propose(sid, id2, s2, all, "hot")), CheckSession)
		}
		// A session id proposed but never run is refused too.
		fresh := ids.NewSessionID()
		expectJoined(t, "agent", c.send(c.agent(), propose(fresh, id2, s2, all, "hot")))
		c.abortAll(fresh, c.agent())
		s3, id3 := request(t, c.w.bot, key, vendor, millis(1))
		expectRefused(t, "agent", c.send(c.agent(), propose(fresh, id3, s3, all, "hot")), CheckSession)
	})

	t.Run("replays an approval for another request and another digest", func(t *testing.T) {
		s1, id1 := request(t, c.w.bot, key, vendor, millis(500))
		a1 := c.approve(t, c.w.alice, id1, digestOf(t, s1), key)
		_, sig := signWith(t, c, s1, id1, "guarded", a1)
		recovers(t, digestOf(t, s1), sig, key.Address)

		s2, id2 := request(t, c.w.bot, key, vendor, millis(500))
		for _, n := range c.nodes {
			expectRefused(t, n.name, c.send(n, propose(ids.NewSessionID(), id2, s2, all, "guarded", a1)), CheckApproval)
		}
		// An approval naming this request but another digest.
		wrong := c.approve(t, c.w.alice, id2, digestOf(t, s1), key)
		for _, n := range c.nodes {
			expectRefused(t, n.name, c.send(n, propose(ids.NewSessionID(), id2, s2, all, "guarded", wrong)), CheckApproval)
		}
		for _, n := range c.nodes {
			assertNoReservation(t, n, id2)
		}
	})

	t.Run("an approval is used once", func(t *testing.T) {
		// The same approval, re-signed (another signature over the same
		// approval is the same approval), after the request it approved
		// was consumed by another path: the store refuses the second use.
		s, id := request(t, c.w.bot, key, vendor, millis(500))
		a := c.approve(t, c.w.alice, id, digestOf(t, s), key)
		wid, err := approvalID(c.w.walletID, a.Policy().Approval)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.policy().Store().ConsumeApproval(context.Background(), wid, "req:elsewhere"); err != nil {
			t.Fatal(err)
		}
		expectRefused(t, "policy", c.send(c.policy(), propose(ids.NewSessionID(), id, s, all, "guarded", a)), CheckApproval)
		assertNoReservation(t, c.policy(), id)
	})

	t.Run("guardian node without its own guardian's approval", func(t *testing.T) {
		s, id := request(t, c.w.bot, key, vendor, millis(500))
		b := c.approve(t, c.w.bob, id, digestOf(t, s), key)
		expectRefused(t, "guardian (alice's node)", c.send(c.guardian(), propose(ids.NewSessionID(), id, s, all, "guarded", b)), CheckApproval)
	})

	t.Run("request of another agent to the agent node", func(t *testing.T) {
		s, id := request(t, c.w.other, key, vendor, millis(1))
		expectRefused(t, "agent node", c.send(c.agent(), propose(ids.NewSessionID(), id, s, all, "hot")), CheckAgent)
		// The policy node has nothing against agent "other": it joins.
		sid := ids.NewSessionID()
		expectJoined(t, "policy", c.send(c.policy(), propose(sid, id, s, all, "hot")))
		c.abortAll(sid, c.policy())
		assertNoReservation(t, c.policy(), id)
	})

	t.Run("request id not the agent's", func(t *testing.T) {
		s, _ := request(t, c.w.bot, key, vendor, millis(1))
		expectRefused(t, "policy", c.send(c.policy(), propose(ids.NewSessionID(), "req:made-up", s, all, "hot")), CheckRequest)
	})

	t.Run("over-budget request to the policy node", func(t *testing.T) {
		s1, id1 := request(t, c.w.bot, key, cafe, millis(1))
		signWith(t, c, s1, id1, "hot")
		s2, id2 := request(t, c.w.bot, key, cafe, millis(1))
		r := c.send(c.policy(), propose(ids.NewSessionID(), id2, s2, all, "hot"))
		// No other rule allows it, so the denial names the rule whose
		// budget is spent.
		if r.Refusal == nil || r.Refusal.RuleID != "coffee" || !strings.Contains(r.Refusal.Reason, "over budget") {
			t.Fatalf("policy node: %+v, want a refusal naming the budget of rule coffee", r.Refusal)
		}
		assertNoReservation(t, c.policy(), id2)
		t.Logf("policy refused (%s): %s", r.Refusal.RuleID, r.Refusal.Reason)
	})

	t.Run("not from a coordinator", func(t *testing.T) {
		s, id := request(t, c.w.bot, key, vendor, millis(1))
		r := sendFrom(c.agent().p2p, c.policy(), propose(ids.NewSessionID(), id, s, all, "hot"))
		expectRefused(t, "policy (asked by the agent node)", r, CheckPeer)
	})
}

func assertNoReservation(t *testing.T, n *testNode, id ids.RequestID) {
	t.Helper()
	recs, err := n.Store().Ledger().Records(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.ID == id {
			t.Fatalf("%s still holds a reservation for %s: %+v", n.name, id, r)
		}
	}
}

func TestGuardianQueueAndApproval(t *testing.T) {
	c, key := shared(t)
	s, id := request(t, c.w.bot, key, vendor, millis(500))
	r := c.send(c.guardian(), &control.Message{Type: control.TypePending, Pending: &control.Pending{RequestID: id, Request: s, Tier: "guarded", RuleID: "larger-payments"}})
	if r.Refusal != nil {
		t.Fatalf("pending: %v", r.Refusal)
	}
	expectRefused(t, "policy node given a pending request", c.send(c.policy(), &control.Message{Type: control.TypePending, Pending: &control.Pending{RequestID: id, Request: s, Tier: "guarded"}}), CheckMessage)
	ctx := context.Background()
	list, err := c.guardian().Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, p := range list {
		if p.RequestID == id {
			found = true
			if p.Tier != "guarded" || p.RuleID != "larger-payments" || p.Digest != digestOf(t, s) || p.To == nil || *p.To != vendor || p.ValueEther != "0.5" {
				t.Fatalf("queued description: %+v", p)
			}
		}
	}
	if !found {
		t.Fatalf("request %s not in the guardian queue: %+v", id, list)
	}
	// An approval for another digest is refused; alice's approval is
	// taken and sent to the coordinator.
	bad := c.approve(t, c.w.alice, id, common.Hash{1}, key)
	if _, err := c.guardian().Approve(ctx, bad); err == nil {
		t.Fatal("an approval of another digest was taken")
	}
	good := c.approve(t, c.w.alice, id, digestOf(t, s), key)
	d, err := c.guardian().Approve(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Forwarded) != 1 || d.Guardian != addr(c.w.alice) {
		t.Fatalf("delivery: %+v", d)
	}
	c.mu.Lock()
	n := len(c.approvals)
	c.mu.Unlock()
	if n == 0 {
		t.Fatal("the coordinator received no approval")
	}
	_, sig := signWith(t, c, s, id, "guarded", good)
	recovers(t, digestOf(t, s), sig, key.Address)
	if _, err := c.guardian().PendingRequest(ctx, id); err == nil {
		t.Fatal("a signed request is still in the guardian queue")
	}

	// A denial by the guardian ends the request's wait and is sent on;
	// one by a stranger is refused.
	s2, id2 := request(t, c.w.bot, key, vendor, millis(600))
	if r := c.send(c.guardian(), &control.Message{Type: control.TypePending, Pending: &control.Pending{RequestID: id2, Request: s2, Tier: "guarded"}}); r.Refusal != nil {
		t.Fatal(r.Refusal)
	}
	deny := func(k *ecdsa.PrivateKey) api.Denial {
		dn := policy.Denial{RequestID: id2, Digest: digestOf(t, s2), Reason: "not this vendor today", Issued: time.Now().UTC().Truncate(time.Second)}
		sig, err := policy.SignTypedData(k, dn.TypedData(c.w.walletID))
		if err != nil {
			t.Fatal(err)
		}
		return api.DenialFrom(policy.SignedDenial{Denial: dn, Signature: sig})
	}
	stranger, _ := crypto.GenerateKey()
	if _, err := c.guardian().Deny(ctx, deny(stranger)); err == nil {
		t.Fatal("a stranger's denial was taken")
	}
	dd, err := c.guardian().Deny(ctx, deny(c.w.alice))
	if err != nil {
		t.Fatal(err)
	}
	if len(dd.Forwarded) != 1 {
		t.Fatalf("denial delivery: %+v", dd)
	}
	if _, err := c.guardian().PendingRequest(ctx, id2); err == nil {
		t.Fatal("a denied request is still in the guardian queue")
	}
}

func TestFreezeHoldsAndOneGuardianCannotUnfreeze(t *testing.T) {
	c, key := shared(t)
	now := time.Now().UTC().Truncate(time.Second)
	f := policy.Freeze{Target: policy.AgentTarget("bot"), Reason: "suspicious", Issued: now}
	sig, err := policy.SignTypedData(c.w.carol, f.TypedData(c.w.walletID))
	if err != nil {
		t.Fatal(err)
	}
	// Carol's freeze reaches the policy node from the guardian node (a
	// member), the others from the coordinator.
	res, err := c.guardian().Freeze(context.Background(), api.FreezeFrom(f, sig))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Applied || len(res.Failed) != 0 {
		t.Fatalf("freeze: %+v", res)
	}
	s, id := request(t, c.w.bot, key, vendor, millis(1))
	for _, n := range c.nodes {
		expectRefused(t, n.name, c.send(n, propose(ids.NewSessionID(), id, s, c.memberIDs(), "hot")), policy.RuleFreeze)
	}
	// A restarted store keeps it: the state was persisted before the answer.
	st, found, err := c.policy().Store().PolicyState(context.Background())
	if err != nil || !found || len(st.Freezes) == 0 {
		t.Fatalf("policy state after freeze: %+v %v %v", st, found, err)
	}
	fid, _ := f.ID(c.w.walletID)
	u := policy.Unfreeze{Target: f.Target, Freeze: fid, Issued: now.Add(time.Second)}
	one, _ := policy.SignTypedData(c.w.alice, u.TypedData(c.w.walletID))
	single := api.Unfreeze{Target: u.Target, Freeze: u.Freeze, Issued: u.Issued, Signatures: []hexutil.Bytes{one}}
	for _, n := range c.nodes {
		expectRefused(t, n.name, c.send(n, &control.Message{Type: control.TypeUnfreeze, Unfreeze: &single}), CheckUnfreeze)
	}
	two, _ := policy.SignTypedData(c.w.bob, u.TypedData(c.w.walletID))
	quorumU := api.Unfreeze{Target: u.Target, Freeze: u.Freeze, Issued: u.Issued, Signatures: []hexutil.Bytes{one, two}}
	for _, n := range c.nodes {
		if r := c.send(n, &control.Message{Type: control.TypeUnfreeze, Unfreeze: &quorumU}); r.Refusal != nil {
			t.Fatalf("%s: unfreeze with the quorum: %v", n.name, r.Refusal)
		}
	}
	signWith(t, c, s, id, "hot")
}

// TestPolicyNodeKilledMidSigning closes the policy node while its signing
// session runs, restarts it, and retries the request: the reservation is
// reused, never doubled, and the audit chain stays valid (invariant 9).
func TestPolicyNodeKilledMidSigning(t *testing.T) {
	c, key := shared(t)
	ctx := context.Background()
	s, id := request(t, c.w.bot, key, vendor, millis(7))
	sid := ids.NewSessionID()
	for _, n := range c.nodes {
		expectJoined(t, n.name, c.send(n, propose(sid, id, s, c.memberIDs(), "hot")))
	}
	pol := c.policy()
	if r := c.send(pol, &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sid}}); r.Refusal != nil {
		t.Fatal(r.Refusal)
	}
	before := reservationRows(t, pol, id)
	if len(before) == 0 {
		t.Fatal("no reservation before the crash")
	}
	if err := pol.Close(); err != nil {
		t.Fatal(err)
	}
	c.abortAll(sid, c.agent(), c.guardian())
	if err := c.start(pol); err != nil {
		t.Fatal(err)
	}
	// After the restart: the session failed here, the reservation is the
	// same one (kept: the session had run), and the chain verifies.
	r := c.send(pol, &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sid}})
	if r.Result == nil || r.Result.State != control.StateFailed {
		t.Fatalf("result after restart: %+v", r)
	}
	if after := reservationRows(t, pol, id); len(after) != len(before) {
		t.Fatalf("reservation rows %d after restart, %d before", len(after), len(before))
	}
	// The session id of the interrupted session stays used after the
	// restart (the store remembers it, not only the process).
	s2, id2 := request(t, c.w.bot, key, vendor, millis(1))
	expectRefused(t, "restarted policy node", c.send(pol, propose(sid, id2, s2, c.memberIDs(), "hot")), CheckSession)
	_, sig := signWith(t, c, s, id, "hot")
	recovers(t, digestOf(t, s), sig, key.Address)
	rows := reservationRows(t, pol, id)
	if len(rows) != len(before) {
		t.Fatalf("after the retry the policy node holds %d rows for the request, want %d: reserved twice", len(rows), len(before))
	}
	for _, row := range rows {
		if row.State != policy.Committed {
			t.Fatalf("row %+v not committed", row)
		}
	}
	if n, err := pol.Store().VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain after restart: %v", err)
	} else {
		t.Logf("audit chain of %d entries verifies", n)
	}
}

// TestOrphanReservationReleased: a node of an earlier version reserved a
// hot proposal's budget in the ledger, then journaled its decision with
// the join (a proposal's reservation now commits in that batch). A crash
// between the two leaves a reservation that the journal does not record
// and no session can have used (the state is made here directly: the
// crash falls between two statements): for a request never seen
// before, with or without budget entries, and for a retry of one whose
// earlier attempt was refused and released. The restart releases each,
// and audits that it did; it keeps the reservation of a proposal joined
// before the crash, which may have started. (A reservation a session ran
// with is kept: TestPolicyNodeKilledMidSigning.)
func TestOrphanReservationReleased(t *testing.T) {
	c, key := shared(t)
	ctx := context.Background()
	pol := c.policy()
	s, id, sid, held := joinedAtPolicy(t, c, key, millis(3))
	bucket := held[0].Bucket // the orphans draw on the same budget
	reserve := func(id ids.RequestID, entries ...policy.Entry) {
		t.Helper()
		if err := pol.Store().Ledger().Reserve(ctx, policy.Reservation{ID: id, Time: time.Now(), Entries: entries}); err != nil {
			t.Fatal(err)
		}
	}
	fresh := ids.RequestID("req:orphan-" + ids.NewSessionID().String())
	reserve(fresh, policy.Entry{Bucket: bucket, Amount: millis(5), Count: 1})
	unbudgeted := ids.RequestID("req:orphan-" + ids.NewSessionID().String())
	reserve(unbudgeted)
	// A retry: its first attempt refused (a presignature not held here)
	// and its reservation released, then reserved again.
	s2, retried := request(t, c.w.bot, key, vendor, millis(2))
	m := propose(ids.NewSessionID(), retried, s2, c.memberIDs(), "hot")
	m.Propose.Presignature = ids.NewSessionID()
	expectRefused(t, "policy node", c.send(pol, m), control.RulePresignature)
	assertNoReservation(t, pol, retried)
	reserve(retried, policy.Entry{Bucket: bucket, Amount: millis(2), Count: 1})

	orphans := []ids.RequestID{fresh, unbudgeted, retried}
	for _, o := range orphans {
		if !slices.Contains(heldIDs(t, pol), o) {
			t.Fatalf("%s not held before the crash", o)
		}
	}
	if err := pol.close(false); err != nil { // a crash: no clean drop of the joined proposal
		t.Fatal(err)
	}
	if err := c.start(pol); err != nil {
		t.Fatal(err)
	}
	after := heldIDs(t, pol)
	for _, o := range orphans {
		if slices.Contains(after, o) {
			t.Fatalf("the reservation of %s, which the journal does not record, is still held after the restart", o)
		}
		entries, err := pol.Store().AuditByRequest(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 || entries[len(entries)-1].Fields["reservation"] != "released" {
			t.Fatalf("audit of the released orphan %s: %+v", o, entries)
		}
	}
	// The joined proposal never started, but a start writes nothing
	// before the session's first message, so the restart cannot tell:
	// its reservation is kept, and audited as kept.
	if !slices.Contains(after, id) {
		t.Fatal("the joined proposal's reservation was released by the restart, though a session may have run with it")
	}
	entries, err := pol.Store().AuditByRequest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || !strings.HasPrefix(entries[len(entries)-1].Fields["reservation"], "kept") {
		t.Fatalf("audit of the joined proposal after the restart: %+v", entries)
	}
	// A retry of the request reuses it: nothing is reserved twice.
	expectJoined(t, "policy node", c.send(pol, propose(ids.NewSessionID(), id, s, c.memberIDs(), "hot")))
	if rows := reservationRows(t, pol, id); len(rows) != len(held) {
		t.Fatalf("the retry holds %d reservation rows, %d before the restart", len(rows), len(held))
	}
	c.abortAll(sid, pol)
	if _, err := pol.Store().VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain after restart: %v", err)
	}
}

// TestConcurrentProposalsKeepTheBudget: proposals that arrive at once at
// the policy node, each staging its reservation until its join's batch,
// are checked one after another against what the others committed: as
// many join as the budget has room for, the others are refused naming the
// rule, and the ledger holds exactly the joined ones, within the limit.
// Aborted, they leave the budget as it was.
func TestConcurrentProposalsKeepTheBudget(t *testing.T) {
	c, key := shared(t)
	pol := c.policy()
	all := c.memberIDs()
	room := coffeeRoom(t, c, key)
	if room < 1 {
		t.Fatal("rule coffee has no room left for agent other: the test needs one payment")
	}
	const n = 8
	type sent struct {
		id    ids.RequestID
		sid   ids.SessionID
		reply *control.Reply
	}
	out := make([]sent, n)
	var wg sync.WaitGroup
	for i := range out {
		s, id := request(t, c.w.other, key, cafe, millis(1))
		out[i] = sent{id: id, sid: ids.NewSessionID()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].reply = c.send(pol, propose(out[i].sid, id, s, all, "hot"))
		}()
	}
	wg.Wait()
	var joined []ids.RequestID
	for _, o := range out {
		switch {
		case o.reply.Join != nil:
			joined = append(joined, o.id)
		case o.reply.Refusal != nil && (o.reply.Refusal.RuleID == "coffee" || o.reply.Refusal.RuleID == policy.RuleBudget):
			// Rule coffee when its evaluation saw the budget spent; the
			// ledger's own check (budget) when it ran beside the staged
			// reservation that spent it.
		default:
			t.Fatalf("%s: %+v, want a join or a refusal under rule coffee or budget", o.id, o.reply)
		}
	}
	if len(joined) != min(room, n) {
		t.Fatalf("%d of %d proposals joined with room for %d", len(joined), n, room)
	}
	held := heldIDs(t, pol)
	for _, o := range out {
		if slices.Contains(held, o.id) != slices.Contains(joined, o.id) {
			t.Fatalf("%s: held %v, joined %v", o.id, slices.Contains(held, o.id), slices.Contains(joined, o.id))
		}
	}
	for _, o := range out {
		c.abortAll(o.sid, pol)
	}
	for _, id := range joined {
		assertNoReservation(t, pol, id)
	}
}

// coffeeRoom is how many payments rule coffee (one a day) leaves agent
// other at the policy node, by its dry run.
func coffeeRoom(t *testing.T, c *cluster, key tss.KeyInfo) int {
	t.Helper()
	s, id := request(t, c.w.other, key, cafe, millis(1))
	r := c.send(c.policy(), &control.Message{Type: control.TypeEvaluate, Evaluate: &control.Evaluate{RequestID: id, Request: s}})
	if r.Decision == nil || r.Decision.RuleID != "coffee" || len(r.Decision.Budgets) != 1 {
		t.Fatalf("evaluate: %+v %+v", r.Decision, r.Refusal)
	}
	return int(r.Decision.Budgets[0].CountLimit - r.Decision.Budgets[0].CountUsed)
}

// TestStagedReservationHoldsTheNextCheck: while one proposal's
// reservation is staged (authorised, not yet journaled: the proposal is
// held there), a second proposal against the same budget gets no answer;
// once the first commits, the second is checked against it and refused.
func TestStagedReservationHoldsTheNextCheck(t *testing.T) {
	c, key := shared(t)
	pol := c.policy()
	all := c.memberIDs()
	if room := coffeeRoom(t, c, key); room != 1 {
		t.Fatalf("rule coffee leaves agent other %d payments, the test needs exactly one", room)
	}
	s1, id1 := request(t, c.w.other, key, cafe, millis(1))
	s2, id2 := request(t, c.w.other, key, cafe, millis(1))
	staged, release := make(chan struct{}), make(chan struct{})
	afterAuthorize = func(id ids.RequestID) {
		if id == id1 {
			close(staged)
			<-release
		}
	}
	defer func() { afterAuthorize = nil }()
	sid1, sid2 := ids.NewSessionID(), ids.NewSessionID()
	first, second := make(chan *control.Reply, 1), make(chan *control.Reply, 1)
	go func() { first <- c.send(pol, propose(sid1, id1, s1, all, "hot")) }()
	select {
	case <-staged:
	case r := <-first:
		t.Fatalf("the first proposal ended before it was held: %+v", r)
	}
	go func() { second <- c.send(pol, propose(sid2, id2, s2, all, "hot")) }()
	select {
	case r := <-second:
		close(release)
		t.Fatalf("a second proposal was answered while the first's reservation was staged: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	expectJoined(t, "policy node (first)", <-first)
	// Its evaluation ran beside the staged reservation and allowed it;
	// the ledger's check, run once the first committed, refuses it.
	expectRefused(t, "policy node (second)", <-second, policy.RuleBudget)
	c.abortAll(sid1, pol)
	assertNoReservation(t, pol, id1)
	assertNoReservation(t, pol, id2)
}

// TestCleanCloseReleasesJoinedProposals: a node closed cleanly (an
// operator's restart, an upgrade) drops the signing proposals it joined
// and never started, releasing their reservations, since it knows they
// never started; after a crash the journal cannot tell, and the restart
// keeps them (TestOrphanReservationReleased).
func TestCleanCloseReleasesJoinedProposals(t *testing.T) {
	c, key := shared(t)
	pol := c.policy()
	_, id, _, _ := joinedAtPolicy(t, c, key, millis(2))
	if err := pol.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.start(pol); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(heldIDs(t, pol), id) {
		t.Fatal("a clean close kept the reservation of a proposal that never started")
	}
	if _, err := pol.Store().VerifyAudit(context.Background()); err != nil {
		t.Fatalf("audit chain after the restart: %v", err)
	}
}

// TestStartedReservationNeverReleased: once a signing session of a
// request started in this process, no later proposal of the request
// releases its reservation, even when the journal record it read says
// no session started (a start writes nothing, so a retry can read the
// record before the session's own outcome is journaled). The stale
// record is made here directly, with the node's mark of the start.
func TestStartedReservationNeverReleased(t *testing.T) {
	c, key := shared(t)
	pol := c.policy()
	s, id, sid, before := joinedAtPolicy(t, c, key, millis(2))
	pol.mu.Lock()
	pol.started[id] = time.Now().Add(time.Hour) // a session of it ran here; the record says otherwise
	pol.mu.Unlock()
	c.abortAll(sid, pol)
	if rows := reservationRows(t, pol, id); len(rows) != len(before) {
		t.Fatalf("the dropped proposal released the reservation of a request a session started for: %d rows, %d before", len(rows), len(before))
	}
	// A retry reuses it, and its refusal or drop keeps it too.
	sid2 := ids.NewSessionID()
	expectJoined(t, "policy node", c.send(pol, propose(sid2, id, s, c.memberIDs(), "hot")))
	c.abortAll(sid2, pol)
	if rows := reservationRows(t, pol, id); len(rows) != len(before) {
		t.Fatalf("after the retry's drop: %d rows, %d before", len(rows), len(before))
	}
	rec, err := pol.Store().Request(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rec.Body), `"started":true`) {
		t.Fatalf("the journal of %s does not say a session started: %s", id, rec.Body)
	}
	// A retry that reads a stale record (not started) and is refused
	// journals the start all the same, so a crash and restart keep the
	// reservation too.
	ctx := context.Background()
	rs, _, _, err := pol.loadRequest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	rs.Started = false
	if err := pol.saveRequest(ctx, id, reqProposed, rs); err != nil {
		t.Fatal(err)
	}
	expectRefused(t, "policy node", c.send(pol, propose(ids.NewSessionID(), id, s, c.memberIDs(), "no-such-tier")), CheckTier)
	if err := pol.close(false); err != nil {
		t.Fatal(err)
	}
	if err := c.start(pol); err != nil {
		t.Fatal(err)
	}
	if rows := reservationRows(t, pol, id); len(rows) != len(before) {
		t.Fatalf("after a refused retry and a crash: %d rows, %d before", len(rows), len(before))
	}
}

// joinedAtPolicy has the policy node join a hot payment of value to the
// vendor by agent bot, and returns the request, its session and the
// reservation rows the join holds (at least one).
func joinedAtPolicy(t *testing.T, c *cluster, key tss.KeyInfo, value *big.Int) (agentauth.Signed, ids.RequestID, ids.SessionID, []policy.Record) {
	t.Helper()
	pol := c.policy()
	s, id := request(t, c.w.bot, key, vendor, value)
	sid := ids.NewSessionID()
	expectJoined(t, "policy node", c.send(pol, propose(sid, id, s, c.memberIDs(), "hot")))
	rows := reservationRows(t, pol, id)
	if len(rows) == 0 {
		t.Fatal("the joined proposal holds no reservation")
	}
	return s, id, sid, rows
}

// heldIDs lists the requests whose reservations n's ledger holds.
func heldIDs(t *testing.T, n *testNode) []ids.RequestID {
	t.Helper()
	held, err := n.Store().Ledger().Held(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return held
}

func reservationRows(t *testing.T, n *testNode, id ids.RequestID) []policy.Record {
	t.Helper()
	recs, err := n.Store().Ledger().Records(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []policy.Record
	for _, r := range recs {
		if r.ID == id {
			out = append(out, r)
		}
	}
	return out
}

// TestGuardianQueueSurvivesRestart: a request waiting for a human is
// still waiting after its guardian node restarts.
func TestGuardianQueueSurvivesRestart(t *testing.T) {
	c, key := shared(t)
	ctx := context.Background()
	s, id := request(t, c.w.bot, key, vendor, millis(700))
	if r := c.send(c.guardian(), &control.Message{Type: control.TypePending, Pending: &control.Pending{RequestID: id, Request: s, Tier: "guarded", RuleID: "larger-payments"}}); r.Refusal != nil {
		t.Fatal(r.Refusal)
	}
	g := c.guardian()
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.start(g); err != nil {
		t.Fatal(err)
	}
	p, err := g.PendingRequest(ctx, id)
	if err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if p.Digest != digestOf(t, s) || p.Tier != "guarded" {
		t.Fatalf("queued after restart: %+v", p)
	}
	a := c.approve(t, c.w.alice, id, digestOf(t, s), key)
	if _, err := g.Approve(ctx, a); err != nil {
		t.Fatal(err)
	}
	signWith(t, c, s, id, "guarded", a)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.start(g); err != nil {
		t.Fatal(err)
	}
	if _, err := g.PendingRequest(ctx, id); err == nil {
		t.Fatal("a signed request came back to the queue after a restart")
	}
}

// TestTierTheKeyCannotGrant uses a 2-of-3 key whose agent and policy
// shares sign alone (guardian floor 0): it signs hot requests with the two
// of them, and no node joins a guarded request on it, even with the
// guardian in the quorum and its approval, since the guardian's share is
// not needed for a signature.
func TestTierTheKeyCannotGrant(t *testing.T) {
	c, _ := shared(t)
	key, err := c.keygenThreshold(1)
	if err != nil {
		t.Fatal(err)
	}
	if key.GuardianFloor != 0 {
		t.Fatalf("key %s: want guardian floor 0", key.Describe())
	}
	s, id := request(t, c.w.bot, key, vendor, millis(500))
	a := c.approve(t, c.w.alice, id, digestOf(t, s), key)
	for _, n := range c.nodes {
		expectRefused(t, n.name, c.send(n, propose(ids.NewSessionID(), id, s, c.memberIDs(), "guarded", a)), CheckTier)
		assertNoReservation(t, n, id)
	}
	// Two of three sign a hot payment.
	s, id = request(t, c.w.bot, key, vendor, millis(3))
	sid := ids.NewSessionID()
	q := []ids.MemberID{c.agent().Self(), c.policy().Self()}
	two := []*testNode{c.agent(), c.policy()}
	for _, n := range two {
		expectJoined(t, n.name, c.send(n, propose(sid, id, s, q, "hot")))
	}
	res, err := c.run(sid, two, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.State != control.StateDone {
			t.Fatalf("%s: %+v", two[i].name, r)
		}
		recovers(t, digestOf(t, s), r.Signature, key.Address)
	}
}

// TestReshare moves the key to the same members under a fresh sharing:
// refused by every old member without the guardian quorum, done with it,
// same address, old generation gone.
func TestReshare(t *testing.T) {
	c, key := shared(t)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	auth := policy.ReshareAuthorization{
		Key: key.Address, Generation: key.Generation,
		OldMembers: committeeEntries(key.Committee), OldThreshold: key.Committee.Threshold,
		NewMembers: committeeEntries(key.Committee), NewThreshold: key.Committee.Threshold, Expiry: exp,
	}
	sign := func(a policy.ReshareAuthorization, keys ...*ecdsa.PrivateKey) api.Reshare {
		var sigs [][]byte
		for _, k := range keys {
			s, err := policy.SignTypedData(k, a.TypedData(c.w.walletID))
			if err != nil {
				t.Fatal(err)
			}
			sigs = append(sigs, s)
		}
		return api.ReshareFrom(policy.SignedReshare{Authorization: a, Signatures: sigs})
	}
	msg := func(sid ids.SessionID, a api.Reshare, nc tss.Committee) *control.Message {
		return &control.Message{Type: control.TypeReshare, Reshare: &control.Reshare{Session: sid, Key: key, OldSigners: c.memberIDs(),
			NewCommittee: nc, Authorization: a, Deadline: time.Now().Add(time.Minute)}}
	}
	t.Run("one guardian is not the quorum", func(t *testing.T) {
		a := sign(auth, c.w.alice)
		for _, n := range c.nodes {
			expectRefused(t, n.name, c.send(n, msg(ids.NewSessionID(), a, key.Committee)), CheckReshare)
		}
	})
	t.Run("an authorisation for another committee", func(t *testing.T) {
		other := auth
		other.NewThreshold = 1
		a := sign(other, c.w.alice, c.w.bob) // the quorum signed threshold 1, the coordinator asks for 2
		for _, n := range c.nodes {
			expectRefused(t, n.name, c.send(n, msg(ids.NewSessionID(), a, key.Committee)), CheckReshare)
		}
	})
	t.Run("with the quorum", func(t *testing.T) {
		sid := ids.NewSessionID()
		a := sign(auth, c.w.alice, c.w.bob)
		for _, n := range c.nodes {
			expectJoined(t, n.name, c.send(n, msg(sid, a, key.Committee)))
		}
		res, err := c.run(sid, c.nodes, 5*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.State != control.StateDone || r.Key == nil || len(r.Unconfirmed) != 0 {
				t.Fatalf("%s: %+v", c.nodes[i].name, r)
			}
			if r.Key.Address != key.Address || r.Key.Generation != key.Generation+1 {
				t.Fatalf("%s: reshared key %s, want the same address at generation %d", c.nodes[i].name, r.Key.Describe(), key.Generation+1)
			}
			var proof tss.Signature
			copy(proof[:], r.Signature)
			if err := tss.VerifyReshareProof(sid, *r.Key, proof); err != nil {
				t.Fatalf("%s: proof: %v", c.nodes[i].name, err)
			}
		}
		for _, n := range c.nodes {
			gens, err := n.Store().ShareGenerations(ctx, key.ID())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(gens, []uint32{key.Generation + 1}) {
				t.Fatalf("%s keeps generations %v, want only the new one", n.name, gens)
			}
		}
		// The reshared key signs under the same address.
		s, id := request(t, c.w.bot, key, vendor, millis(2))
		_, sig := signWith(t, c, s, id, "hot")
		recovers(t, digestOf(t, s), sig, key.Address)
	})
}

// TestChecksNamedInRefusals covers the remaining checks of a proposal, a
// keygen, a reshare and the other messages, each refused with its name.
func TestChecksNamedInRefusals(t *testing.T) {
	c, key := shared(t)
	all := c.memberIDs()
	ctx := context.Background()

	t.Run("key not held", func(t *testing.T) {
		other := key
		other.Address = common.HexToAddress("0x000000000000000000000000000000000000dEaD")
		s, id := request(t, c.w.bot, other, vendor, millis(1))
		expectRefused(t, "policy", c.send(c.policy(), propose(ids.NewSessionID(), id, s, all, "hot")), CheckKey)
	})
	t.Run("from is not the key's address", func(t *testing.T) {
		wrong := common.HexToAddress("0x00000000000000000000000000000000000000AA")
		s, id := requestWith(t, c.w.bot, key, vendor, millis(1), func(r *api.SignRequest) { r.From = &wrong })
		expectRefused(t, "policy", c.send(c.policy(), propose(ids.NewSessionID(), id, s, all, "hot")), CheckKey)
		right := key.Address
		s, id = requestWith(t, c.w.bot, key, vendor, millis(1), func(r *api.SignRequest) { r.From = &right })
		sid := ids.NewSessionID()
		expectJoined(t, "policy", c.send(c.policy(), propose(sid, id, s, all, "hot")))
		c.abortAll(sid, c.policy())
		assertNoReservation(t, c.policy(), id)
	})
	t.Run("quorum member outside the committee", func(t *testing.T) {
		s, id := request(t, c.w.bot, key, vendor, millis(1))
		q := append(slices.Clone(all), "12D3KooWAJ7pqfR9ua8jj7YqJ3cK6ib8SkJ2dEpDHkkyQ1ZBMVcD")
		expectRefused(t, "policy", c.send(c.policy(), propose(ids.NewSessionID(), id, s, q, "hot")), CheckQuorum)
	})
	t.Run("unknown tier", func(t *testing.T) {
		s, id := request(t, c.w.bot, key, vendor, millis(1))
		expectRefused(t, "policy", c.send(c.policy(), propose(ids.NewSessionID(), id, s, all, "platinum")), CheckTier)
		assertNoReservation(t, c.policy(), id)
	})
	t.Run("a hot refusal after the decision still journals it", func(t *testing.T) {
		// The hot path journals its decision with the join; refused
		// after the decision (a presignature it does not hold, the last
		// check), it writes the decision first, then releases the
		// reservation.
		s, id := request(t, c.w.bot, key, vendor, millis(1))
		m := propose(ids.NewSessionID(), id, s, all, "hot")
		m.Propose.Presignature = ids.NewSessionID()
		expectRefused(t, "agent", c.send(c.agent(), m), control.RulePresignature)
		assertNoReservation(t, c.agent(), id)
		entries, err := c.agent().Store().AuditByRequest(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, e := range entries {
			kinds = append(kinds, string(e.Kind)+" "+e.Decision)
		}
		if len(entries) != 3 || entries[0].Kind != store.AuditRequest || entries[1].Kind != store.AuditDecision || !strings.HasSuffix(entries[1].Decision, " hot") || entries[2].Decision != "refused" {
			t.Fatalf("audit of the refused request: %q", kinds)
		}
		rec, err := c.agent().Store().Request(context.Background(), id)
		if err != nil || rec.State != reqFailed {
			t.Fatalf("journal of the refused request: %+v %v", rec, err)
		}
	})
	t.Run("default deny", func(t *testing.T) {
		s, id := request(t, c.w.bot, key, stranger, millis(1))
		expectRefused(t, "policy", c.send(c.policy(), propose(ids.NewSessionID(), id, s, all, "hot")), policy.RuleDefault)
	})
	t.Run("a proposal not started by its deadline is released", func(t *testing.T) {
		s, id := request(t, c.w.bot, key, vendor, millis(1))
		sid := ids.NewSessionID()
		m := propose(sid, id, s, all, "hot")
		m.Propose.Deadline = time.Now().Add(300 * time.Millisecond)
		expectJoined(t, "policy", c.send(c.policy(), m))
		r := c.send(c.policy(), &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sid, Wait: control.Duration(control.MaxResultWait)}})
		if r.Result == nil || r.Result.State != control.StateFailed {
			t.Fatalf("result: %+v", r)
		}
		assertNoReservation(t, c.policy(), id)
		expectRefused(t, "policy", c.send(c.policy(), &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sid}}), CheckSession)
	})
	t.Run("keygen committee with this node in another role", func(t *testing.T) {
		committee := tss.Committee{Threshold: 1, Members: []tss.Member{
			{ID: c.agent().Self(), Role: ids.RoleAgent}, {ID: c.policy().Self(), Role: ids.RoleGuardian}}}
		m := &control.Message{Type: control.TypeKeygen, Keygen: &control.Keygen{Session: ids.NewSessionID(), Committee: committee, Deadline: time.Now().Add(time.Minute)}}
		expectRefused(t, "policy", c.send(c.policy(), m), CheckKeygen)
		expectRefused(t, "agent", c.send(c.agent(), m), CheckKeygen) // names the policy node as a guardian
	})
	t.Run("keygen committee with a stranger", func(t *testing.T) {
		committee := tss.Committee{Threshold: 1, Members: []tss.Member{
			{ID: c.agent().Self(), Role: ids.RoleAgent}, {ID: "12D3KooWAJ7pqfR9ua8jj7YqJ3cK6ib8SkJ2dEpDHkkyQ1ZBMVcD", Role: ids.RolePolicy}}}
		m := &control.Message{Type: control.TypeKeygen, Keygen: &control.Keygen{Session: ids.NewSessionID(), Committee: committee, Deadline: time.Now().Add(time.Minute)}}
		expectRefused(t, "agent", c.send(c.agent(), m), CheckKeygen)
	})
	t.Run("reshare naming another key state", func(t *testing.T) {
		stale := key
		stale.Generation += 7
		m := &control.Message{Type: control.TypeReshare, Reshare: &control.Reshare{Session: ids.NewSessionID(), Key: stale, OldSigners: all,
			NewCommittee: key.Committee, Deadline: time.Now().Add(time.Minute)}}
		for _, n := range c.nodes {
			expectRefused(t, n.name, c.send(n, m), CheckReshare)
		}
	})
	t.Run("malformed message", func(t *testing.T) {
		resp, err := c.coord.Request(ctx, c.policy().ID(), control.Protocol, []byte(`{"type":"propose","propose":{},"extra":1}`), control.MaxMessage)
		if err != nil {
			t.Fatalf("a malformed message reset the stream: %v", err)
		}
		r, err := control.DecodeReply(resp)
		if err != nil {
			t.Fatal(err)
		}
		expectRefused(t, "policy", r, CheckMessage)
	})
	t.Run("document that is not the pinned genesis's successor", func(t *testing.T) {
		doc := c.w.doc
		doc.Source = strings.Replace(doc.Source, "version: 1", "version: 2", 1) // signed for version 1, names no predecessor
		r := c.send(c.policy(), &control.Message{Type: control.TypePolicy, Policy: &control.PolicyUpdate{Document: &doc}})
		expectRefused(t, "policy", r, CheckPolicy)
	})
	t.Run("grant signed by a stranger", func(t *testing.T) {
		stranger, _ := crypto.GenerateKey()
		g := policy.Grant{ID: "g1", Agent: "bot", Key: key.Address, NotBefore: time.Now().Add(-time.Minute), Expiry: time.Now().Add(time.Hour), MaxCount: 1}
		sg, err := policy.SignGrant(stranger, c.w.walletID, g)
		if err != nil {
			t.Fatal(err)
		}
		ag := api.GrantFrom(*sg)
		expectRefused(t, "policy", c.send(c.policy(), &control.Message{Type: control.TypePolicy, Policy: &control.PolicyUpdate{Grant: &ag}}), CheckPolicy)
		sg, _ = policy.SignGrant(c.w.carol, c.w.walletID, g)
		ag = api.GrantFrom(*sg)
		if r := c.send(c.policy(), &control.Message{Type: control.TypePolicy, Policy: &control.PolicyUpdate{Grant: &ag}}); r.Refusal != nil {
			t.Fatalf("a guardian's grant: %v", r.Refusal)
		}
		if _, err := c.policy().Store().Grant(ctx, "g1"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("evaluate and status", func(t *testing.T) {
		s, id := request(t, c.w.bot, key, vendor, millis(500))
		r := c.send(c.policy(), &control.Message{Type: control.TypeEvaluate, Evaluate: &control.Evaluate{RequestID: id, Request: s}})
		if r.Decision == nil || r.Decision.Tier != "guarded" || r.Decision.RuleID != "larger-payments" || len(r.Decision.Trace) == 0 || r.Decision.Digest != digestOf(t, s) {
			t.Fatalf("evaluate: %+v %+v", r.Decision, r.Refusal)
		}
		assertNoReservation(t, c.policy(), id)
		st := c.send(c.guardian(), &control.Message{Type: control.TypeStatus, Status: &control.StatusQuery{}})
		if st.Status == nil || st.Status.Role != ids.RoleGuardian || st.Status.Guardian != addr(c.w.alice).Hex() || len(st.Status.Keys) == 0 || st.Status.PolicyVersion != 1 {
			t.Fatalf("status: %+v", st.Status)
		}
	})
	for _, n := range c.nodes {
		if _, err := n.Store().VerifyAudit(ctx); err != nil {
			t.Fatalf("%s audit chain: %v", n.name, err)
		}
	}
}

// TestKeygenWaitsForThePool runs last: every node's fixtures are used, so
// a keygen waits for pre-parameters, reports it, and can be aborted.
func TestKeygenWaitsForThePool(t *testing.T) {
	c, _ := shared(t)
	for _, n := range c.nodes {
		if n.pool.Len() != 0 {
			t.Skipf("%s still has pre-parameters", n.name)
		}
	}
	committee := tss.Committee{Threshold: 1}
	for _, n := range c.nodes[:2] {
		committee.Members = append(committee.Members, tss.Member{ID: n.Self(), Role: n.Role()})
	}
	sid := ids.NewSessionID()
	m := &control.Message{Type: control.TypeKeygen, Keygen: &control.Keygen{Session: sid, Committee: committee, Deadline: time.Now().Add(time.Minute)}}
	j := expectJoined(t, "agent", c.send(c.agent(), m))
	if j.PreParams {
		t.Fatal("join says pre-parameters are ready")
	}
	if r := c.send(c.agent(), &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sid}}); r.Refusal != nil {
		t.Fatal(r.Refusal)
	}
	r := c.send(c.agent(), &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sid, Wait: control.Duration(100 * time.Millisecond)}})
	if r.Result == nil || r.Result.State != control.StateRunning || !strings.Contains(r.Result.Progress, "waiting for pre-parameters") {
		t.Fatalf("result while the pool is empty: %+v", r.Result)
	}
	if r := c.send(c.agent(), &control.Message{Type: control.TypeAbort, Abort: &control.SessionRef{Session: sid}}); r.Refusal != nil {
		t.Fatal(r.Refusal)
	}
	r = c.send(c.agent(), &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sid, Wait: control.Duration(control.MaxResultWait)}})
	if r.Result == nil || r.Result.State != control.StateFailed {
		t.Fatalf("result after abort: %+v", r.Result)
	}
}
