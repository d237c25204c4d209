package node

import (
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// presignAt runs a presign session of key by the whole cluster at path
// and checks every node parked it.
func presignAt(t *testing.T, c *cluster, key tss.KeyInfo, path []uint32) ids.SessionID {
	t.Helper()
	sid := ids.NewSessionID()
	msg := &control.Message{Type: control.TypePresign, Presign: &control.Presign{Session: sid, Key: key.ID(), Quorum: c.memberIDs(),
		Path: path, Deadline: time.Now().Add(time.Minute)}}
	for _, n := range c.nodes {
		expectJoined(t, n.name, c.send(n, msg))
	}
	res, err := c.run(sid, c.nodes, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.State != control.StateDone {
			t.Fatalf("%s: presign %s (%s)", c.nodes[i].name, r.State, r.Error)
		}
	}
	for _, n := range c.nodes {
		if !holds(t, c, n, sid) {
			t.Fatalf("%s does not report presignature %s parked", n.name, sid)
		}
	}
	return sid
}

// holds reports whether n's status lists presignature id.
func holds(t *testing.T, c *cluster, n *testNode, id ids.SessionID) bool {
	t.Helper()
	r := c.send(n, &control.Message{Type: control.TypeStatus, Status: &control.StatusQuery{}})
	if r.Status == nil {
		t.Fatalf("%s: status: %+v", n.name, r.Refusal)
	}
	for _, p := range r.Status.Presignatures {
		if p.ID == id {
			return true
		}
	}
	return false
}

func proposeWith(sid ids.SessionID, id ids.RequestID, s agentauth.Signed, q []ids.MemberID, tier string, presig ids.SessionID) *control.Message {
	m := propose(sid, id, s, q, tier)
	m.Propose.Presignature = presig
	return m
}

// TestPresignedSigningAtTheNodes drives the nodes as a coordinator would,
// honest and then compromised: a presignature made by the quorum signs one
// request and only one; every check of a proposal still runs, and a
// proposal refused before its start leaves the presignature parked.
func TestPresignedSigningAtTheNodes(t *testing.T) {
	c, key := shared(t)
	p := presignAt(t, c, key, nil)

	// A proposal failing a lifecycle check is refused as without a
	// presignature, and the presignature stays parked at every node.
	s, id := request(t, c.w.bot, key, stranger, millis(1)) // no rule allows it
	expectRefused(t, "policy node, denied payment", c.send(c.policy(), proposeWith(ids.NewSessionID(), id, s, c.memberIDs(), "hot", p)), policy.RuleDefault)
	s, id = request(t, c.w.bot, key, vendor, millis(50)) // the guarded tier's
	expectRefused(t, "policy node, tier too low", c.send(c.policy(), proposeWith(ids.NewSessionID(), id, s, c.memberIDs(), "hot", p)), CheckTier)
	s, id = requestWith(t, c.w.bot, key, vendor, millis(1), func(r *api.SignRequest) { r.Path = []uint32{7} })
	expectRefused(t, "agent node, another path", c.send(c.agent(), proposeWith(ids.NewSessionID(), id, s, c.memberIDs(), "hot", p)), control.RulePresignature)
	for _, n := range c.nodes {
		if !holds(t, c, n, p) {
			t.Fatalf("%s lost presignature %s to a refused proposal", n.name, p)
		}
		assertNoReservation(t, n, id)
	}

	// Two open proposals cannot claim one presignature; the first, never
	// started, leaves it parked when aborted.
	s1, id1 := request(t, c.w.bot, key, vendor, millis(1))
	s2, id2 := request(t, c.w.bot, key, vendor, millis(2))
	first := ids.NewSessionID()
	for _, n := range c.nodes {
		expectJoined(t, n.name, c.send(n, proposeWith(first, id1, s1, c.memberIDs(), "hot", p)))
		expectRefused(t, n.name+", claimed", c.send(n, proposeWith(ids.NewSessionID(), id2, s2, c.memberIDs(), "hot", p)), control.RulePresignature)
	}
	c.abortAll(first, c.nodes...)
	for _, n := range c.nodes {
		if !holds(t, c, n, p) {
			t.Fatalf("%s lost presignature %s to an aborted proposal", n.name, p)
		}
	}

	// The honest use: every node joins, the online phase signs, the
	// signature recovers to the key, and the presignature is gone.
	used := make([]uint64, len(c.nodes))
	for i, n := range c.nodes {
		used[i] = n.tss.PresignStats().Used
	}
	sid := ids.NewSessionID()
	for _, n := range c.nodes {
		expectJoined(t, n.name, c.send(n, proposeWith(sid, id1, s1, c.memberIDs(), "hot", p)))
	}
	res, err := c.run(sid, c.nodes, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.State != control.StateDone {
			t.Fatalf("%s: presigned session %s (%s)", c.nodes[i].name, r.State, r.Error)
		}
	}
	recovers(t, digestOf(t, s1), res[0].Signature, key.Address)
	for i, n := range c.nodes {
		if got := n.tss.PresignStats().Used; got != used[i]+1 {
			t.Fatalf("%s: presignatures used %d, want %d: the session did not run from the presignature", n.name, got, used[i]+1)
		}
		if holds(t, c, n, p) {
			t.Fatalf("%s still reports presignature %s after using it", n.name, p)
		}
	}

	// A compromised coordinator naming it again, for another request, is
	// refused at every node.
	for _, n := range c.nodes {
		expectRefused(t, n.name+", used twice", c.send(n, proposeWith(ids.NewSessionID(), id2, s2, c.memberIDs(), "hot", p)), control.RulePresignature)
	}

	// One session, one presignature, two requests (two digests): the
	// online phase stops at every member, the presignature is burned
	// everywhere and neither request is signed; the first then completes
	// with the full protocol.
	q := presignAt(t, c, key, nil)
	s3, id3 := request(t, c.w.bot, key, vendor, millis(3))
	split := ids.NewSessionID()
	for _, n := range c.nodes[:2] {
		expectJoined(t, n.name, c.send(n, proposeWith(split, id2, s2, c.memberIDs(), "hot", q)))
	}
	expectJoined(t, c.guardian().name, c.send(c.guardian(), proposeWith(split, id3, s3, c.memberIDs(), "hot", q)))
	res, err = c.run(split, c.nodes, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.State != control.StateFailed || len(r.Signature) > 0 {
			t.Fatalf("%s: a session with two digests ended %s (signature %x)", c.nodes[i].name, r.State, r.Signature)
		}
		if holds(t, c, c.nodes[i], q) {
			t.Fatalf("%s keeps presignature %s after a failed online phase", c.nodes[i].name, q)
		}
	}
	_, sig := signWith(t, c, s2, id2, "hot")
	recovers(t, digestOf(t, s2), sig, key.Address)
}

// TestPresignatureLostInARestart restarts the policy node between presign
// and the request: it holds none (memory only) and refuses the proposal
// naming it, under the rule the coordinator falls back on, and the request
// completes with the full protocol.
func TestPresignatureLostInARestart(t *testing.T) {
	c, key := shared(t)
	p := presignAt(t, c, key, nil)
	pol := c.policy()
	if err := pol.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.start(pol); err != nil {
		t.Fatal(err)
	}
	if holds(t, c, pol, p) {
		t.Fatalf("the restarted policy node reports presignature %s", p)
	}
	s, id := request(t, c.w.bot, key, vendor, millis(1))
	sid := ids.NewSessionID()
	var joined []*testNode
	for _, n := range c.nodes {
		r := c.send(n, proposeWith(sid, id, s, c.memberIDs(), "hot", p))
		if n == pol {
			expectRefused(t, n.name, r, control.RulePresignature)
			continue
		}
		expectJoined(t, n.name, r)
		joined = append(joined, n)
	}
	c.abortAll(sid, joined...)
	_, sig := signWith(t, c, s, id, "hot")
	recovers(t, digestOf(t, s), sig, key.Address)
}

// TestPresignChecksAndFreeze: a presignature only for a hot-tier quorum
// of a key held here, and a freeze of the key burns those parked.
func TestPresignChecksAndFreeze(t *testing.T) {
	c, key := shared(t)
	bad := func(who string, n *testNode, change func(*control.Presign), rule string) {
		t.Helper()
		ps := &control.Presign{Session: ids.NewSessionID(), Key: key.ID(), Quorum: c.memberIDs(), Deadline: time.Now().Add(time.Minute)}
		change(ps)
		expectRefused(t, who, c.send(n, &control.Message{Type: control.TypePresign, Presign: ps}), rule)
	}
	bad("unknown key", c.agent(), func(p *control.Presign) { p.Key = ids.KeyIDOf(stranger) }, CheckKey)
	bad("quorum without this node", c.agent(), func(p *control.Presign) { p.Quorum = c.memberIDs()[1:] }, CheckQuorum)
	bad("deadline passed", c.agent(), func(p *control.Presign) { p.Deadline = time.Now().Add(-time.Second) }, CheckRequest)
	bad("zero session", c.agent(), func(p *control.Presign) { p.Session = ids.SessionID{} }, CheckSession)
	saved := maxPresignatures
	maxPresignatures = 0
	bad("over the bound", c.policy(), func(*control.Presign) {}, control.RulePresignature)
	maxPresignatures = saved
	// Members take presign messages from coordinators only.
	r := sendFrom(c.agent().p2p, c.policy(), &control.Message{Type: control.TypePresign, Presign: &control.Presign{
		Session: ids.NewSessionID(), Key: key.ID(), Quorum: c.memberIDs(), Deadline: time.Now().Add(time.Minute)}})
	expectRefused(t, "presign from a member", r, CheckPeer)

	p := presignAt(t, c, key, nil)
	now := time.Now().UTC().Truncate(time.Second)
	f := policy.Freeze{Target: policy.KeyTarget(key.Address), Reason: "presignature test", Issued: now}
	sig, err := policy.SignTypedData(c.w.carol, f.TypedData(c.w.walletID))
	if err != nil {
		t.Fatal(err)
	}
	freeze := api.FreezeFrom(f, sig)
	for _, n := range c.nodes {
		if r := c.send(n, &control.Message{Type: control.TypeFreeze, Freeze: &freeze}); r.Refusal != nil {
			t.Fatalf("%s: freeze: %v", n.name, r.Refusal)
		}
	}
	for _, n := range c.nodes {
		if holds(t, c, n, p) {
			t.Errorf("%s keeps presignature %s of a frozen key", n.name, p)
		}
	}
	fid, _ := f.ID(c.w.walletID)
	u := policy.Unfreeze{Target: f.Target, Freeze: fid, Issued: now.Add(time.Second)}
	one, _ := policy.SignTypedData(c.w.alice, u.TypedData(c.w.walletID))
	two, _ := policy.SignTypedData(c.w.bob, u.TypedData(c.w.walletID))
	uf := api.Unfreeze{Target: u.Target, Freeze: u.Freeze, Issued: u.Issued, Signatures: []hexutil.Bytes{one, two}}
	for _, n := range c.nodes {
		if r := c.send(n, &control.Message{Type: control.TypeUnfreeze, Unfreeze: &uf}); r.Refusal != nil {
			t.Fatalf("%s: unfreeze: %v", n.name, r.Refusal)
		}
	}
}
