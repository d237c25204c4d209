package tss

import (
	"bytes"
	"context"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"

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

// TestPresignSingleUse: bad online requests are refused without consuming
// the presignature; once used, a second online call is refused at every
// member.
func TestPresignSingleUse(t *testing.T) {
	c := newPresignCluster(t, nil)
	signers := []ids.MemberID{agent.ID, policy.ID}
	pid := c.presign(t, signers, nil)
	e := c.engines[agent.ID]
	var high [32]byte
	for i := range high {
		high[i] = 0xff
	}
	for _, bad := range []struct {
		req  OnlineRequest
		want string
	}{
		{OnlineRequest{Presign: pid, Digest: digestOf("x")}, "session id is missing"},
		{OnlineRequest{Session: ids.NewSessionID(), Digest: digestOf("x")}, "presignature id is missing"},
		{OnlineRequest{Presign: pid, Session: pid, Digest: digestOf("x")}, "must be fresh"},
		{OnlineRequest{Presign: pid, Session: ids.NewSessionID(), Digest: high}, "below the group order"},
	} {
		_, err := e.SignPresigned(context.Background(), bad.req)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Fatalf("online request %+v: got %v, want an error saying %q", bad.req, err, bad.want)
		}
	}
	if got := e.Presignatures(); len(got) != 1 || got[0].ID != pid {
		t.Fatalf("after refused requests the parked set is %+v, want the presignature still there", got)
	}
	sent := c.net.Sent()
	d := digestOf("once")
	_, errs := c.online(signers, pid, d)
	wantNoErrs(t, "sign presigned", errs)
	if c.net.Sent() == sent {
		t.Fatal("the online phase sent nothing")
	}
	sent = c.net.Sent()
	for _, digest := range [][32]byte{d, digestOf("another")} {
		_, errs = c.online(signers, pid, digest)
		for id, err := range errs {
			if !errors.Is(err, ErrPresignUnknown) {
				t.Fatalf("second use at %s: got %v, want ErrPresignUnknown", id, err)
			}
		}
	}
	if c.net.Sent() != sent {
		t.Fatalf("a refused second use sent %d messages", c.net.Sent()-sent)
	}
	for _, id := range signers {
		st := c.engines[id].PresignStats()
		if st != (PresignStats{Made: 1, Used: 1}) {
			t.Fatalf("%s: stats %+v, want one made and used", id, st)
		}
	}
}

// messageTypes records the tss-lib message type of every message on net.
func messageTypes(t *testing.T, net *MemNetwork) func() []string {
	dummy := tss.NewPartyID("x", "x", big.NewInt(1))
	dummy.Index = 0
	var mu sync.Mutex
	var seen []string
	net.SetFilter(func(m MemMessage) []MemMessage {
		env, err := decodeEnvelope(m.Payload)
		if err != nil {
			t.Errorf("record: %v", err)
			return nil
		}
		if !env.Notice {
			msg, err := tss.ParseWireMessage(env.Wire, dummy, env.Broadcast)
			if err != nil {
				t.Errorf("record: %v", err)
				return nil
			}
			mu.Lock()
			seen = append(seen, msg.Type())
			mu.Unlock()
		}
		return []MemMessage{m}
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// TestPresignDifferentRequestsStop: members given different digests (or
// bindings) stop at the first online message, before round 5, so no
// signature share (round 9) ever leaves a member; the presignature is
// burned everywhere.
func TestPresignDifferentRequestsStop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		digests [][32]byte
		binding func(id ids.MemberID) []byte
	}{
		{"digests", [][32]byte{digestOf("pay alice"), digestOf("pay mallory"), digestOf("pay alice")}, func(ids.MemberID) []byte { return []byte("req-1") }},
		{"bindings", [][32]byte{digestOf("pay alice")}, func(id ids.MemberID) []byte { return []byte("req-for-" + id) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newPresignCluster(t, nil)
			signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
			pid := c.presign(t, signers, nil)
			types := messageTypes(t, c.net)
			sid := ids.NewSessionID()
			errs := runAll(signers, func(i int, id ids.MemberID) error {
				d := tc.digests[0]
				if len(tc.digests) > 1 {
					d = tc.digests[i]
				}
				_, err := c.engines[id].SignPresigned(context.Background(), OnlineRequest{Presign: pid, Session: sid, Digest: d, Binding: tc.binding(id)})
				return err
			})
			for id, err := range errs {
				se, ok := AsSessionError(err)
				if !ok || se.Kind != FailProtocol || len(se.Culprits) != 0 || !strings.Contains(se.Error(), "different request") {
					t.Fatalf("%s: got %v, want a protocol failure naming a different request", id, err)
				}
				st := c.engines[id].PresignStats()
				if st.Parked != 0 || st.Failed != 1 || st.Burned != 1 || st.Used != 0 {
					t.Fatalf("%s: stats %+v, want the presignature burned as failed", id, st)
				}
			}
			sent := types()
			if !slices.Contains(sent, round4Type) {
				t.Fatalf("no round-4 message was sent (%v): the online phase did not start", sent)
			}
			for _, typ := range sent {
				if typ != round4Type {
					t.Fatalf("a %s message left a member; only round-4 messages may before the binding check", typ)
				}
			}
		})
	}
}

// TestPresignForgedOnlineMessage: a forged message of the online phase (the
// released round-4 message, the round-9 signature share) names its sender,
// and the presignature is burned.
func TestPresignForgedOnlineMessage(t *testing.T) {
	for _, tc := range []struct {
		name, check string
		mutate      func(tss.MessageContent) bool
	}{
		{"round 4", "round-4 proof t", func(c tss.MessageContent) bool {
			m, ok := c.(*signing.SignRound4Message)
			if ok {
				m.ProofT = curveQ.Bytes()
			}
			return ok
		}},
		{"round 9", "signature share", func(c tss.MessageContent) bool {
			m, ok := c.(*signing.SignRound9Message)
			if ok {
				m.S = curveQ.Bytes()
			}
			return ok
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newPresignCluster(t, nil)
			signers := []ids.MemberID{agent.ID, policy.ID}
			forger := policy.ID
			pid := c.presign(t, signers, nil)
			forge(t, c.net, forger, tc.mutate)
			sid := ids.NewSessionID()
			errs := runWithForger(signers, forger, func(ctx context.Context, _ int, id ids.MemberID) error {
				_, err := c.engines[id].SignPresigned(ctx, OnlineRequest{Presign: pid, Session: sid, Digest: digestOf("forged"), Binding: []byte("r")})
				return err
			})
			wantCaught(t, errs, forger, tc.check)
			if st := c.engines[agent.ID].PresignStats(); st.Parked != 0 || st.Failed != 1 {
				t.Fatalf("honest member's stats %+v, want the presignature burned as failed", st)
			}
		})
	}
}

// TestPresignMisbehaviourNotParked: a forged message in rounds 1-4 ends the
// presign session naming its sender, and nothing is parked.
func TestPresignMisbehaviourNotParked(t *testing.T) {
	c := newPresignCluster(t, nil)
	signers := []ids.MemberID{agent.ID, policy.ID, guardian.ID}
	forger := guardian.ID
	forge(t, c.net, forger, func(m tss.MessageContent) bool {
		r3, ok := m.(*signing.SignRound3Message)
		if ok {
			r3.Theta = curveQ.Bytes()
		}
		return ok
	})
	sid := ids.NewSessionID()
	errs := runWithForger(signers, forger, func(ctx context.Context, _ int, id ids.MemberID) error {
		_, err := c.engines[id].Presign(ctx, PresignRequest{Session: sid, Share: c.shares[id], Signers: signers})
		return err
	})
	wantCaught(t, errs, forger, "theta")
	for id := range errs {
		if got := c.engines[id].Presignatures(); len(got) != 0 {
			t.Fatalf("%s parked %+v after misbehaviour", id, got)
		}
		if st := c.engines[id].PresignStats(); st.Made != 0 || st.Aborted != 1 {
			t.Fatalf("%s: stats %+v, want one aborted, none made", id, st)
		}
	}
}

// pump delivers the messages of hand-driven sessions to each other until
// none is left, starting with first; it returns every message delivered.
func pump(t *testing.T, sessions map[ids.MemberID]*Session, first map[ids.MemberID]Ready) []Incoming {
	t.Helper()
	type envelopeTo struct {
		to ids.MemberID
		in Incoming
	}
	var queue []envelopeTo
	var all []Incoming
	add := func(from ids.MemberID, rd Ready) {
		if rd.Err != nil {
			t.Fatalf("%s: %v", from, rd.Err)
		}
		for _, m := range rd.Messages {
			for to := range sessions {
				if to != from && (m.Broadcast || m.To == to) {
					queue = append(queue, envelopeTo{to, Incoming{From: from, Broadcast: m.Broadcast, Payload: m.Payload}})
				}
			}
		}
	}
	for id, rd := range first {
		add(id, rd)
	}
	for len(queue) > 0 {
		m := queue[0]
		queue = queue[1:]
		all = append(all, m.in)
		add(m.to, sessions[m.to].Step(m.in))
	}
	return all
}

// TestPresignPhases drives two presign sessions by hand: a round-4 message
// released before the online phase, and a message of rounds 1-3 replayed
// in it, are misbehaviour of their sender.
func TestPresignPhases(t *testing.T) {
	shares := shared2of3(t)
	net := NewMemNetwork()
	signers := []ids.MemberID{agent.ID, policy.ID}
	sid := ids.NewSessionID()
	sessions := map[ids.MemberID]*Session{}
	phases := map[ids.MemberID]*presignPhase{}
	first := map[ids.MemberID]Ready{}
	for _, id := range signers {
		phases[id] = &presignPhase{}
		s, _, err := NewEngine(net.Endpoint(id), testConfig()).signSessionWith(SignRequest{Session: sid, Share: shares[id], Signers: signers,
			Digest: presignPlaceholder}, new(big.Int).SetBytes(presignPlaceholder[:]), phases[id])
		if err != nil {
			t.Fatal(err)
		}
		sessions[id] = s
	}
	for id, s := range sessions {
		first[id] = s.Start()
	}
	early := pump(t, sessions, first)
	for id, p := range phases {
		if !p.parked || len(p.held) != 1 {
			t.Fatalf("%s: parked=%v with %d held messages, want parked holding its round-4 message", id, p.parked, len(p.held))
		}
	}
	released := Incoming{From: policy.ID, Broadcast: true, Payload: phases[policy.ID].held[0].Payload}
	rd := sessions[agent.ID].Step(released)
	if rd.Err == nil || rd.Err.Kind != FailMisbehaviour || !slices.Equal(rd.Err.Culprits, []ids.MemberID{policy.ID}) ||
		!strings.Contains(rd.Err.Error(), "before the online phase") {
		t.Fatalf("early round-4 message: got %v, want misbehaviour by %s", rd.Err, policy.ID)
	}

	// The policy member's session, moved online, refuses a replayed
	// round-1 message re-bound to the online session.
	online := ids.NewSessionID()
	s := sessions[policy.ID]
	s.rebind(online, paramsHash("signing-online", s.params, sid, digestOf("d"), []byte("r")))
	if rd := s.resume(); rd.Err != nil || len(rd.Messages) != 1 {
		t.Fatalf("resume: %+v, want the held round-4 message", rd)
	}
	replay := early[0]
	for _, in := range early {
		if in.From == agent.ID {
			replay = in
			break
		}
	}
	env, err := decodeEnvelope(replay.Payload)
	if err != nil {
		t.Fatal(err)
	}
	env.Session, env.Params = s.id, s.params
	replay.Payload = env.encode()
	rd = s.Step(replay)
	if rd.Err == nil || rd.Err.Kind != FailMisbehaviour || !slices.Equal(rd.Err.Culprits, []ids.MemberID{agent.ID}) ||
		!strings.Contains(rd.Err.Error(), "in the online phase") {
		t.Fatalf("replayed early message: got %v, want misbehaviour by %s", rd.Err, agent.ID)
	}
}

// fakeClock is a clock for presignature ages, safe for concurrent use.
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// TestPresignBounds: the oldest presignature is evicted beyond
// MaxPresignatures, one older than PresignMaxAge is burned, and
// BurnPresignature burns one; each is counted, and none can be used after.
func TestPresignBounds(t *testing.T) {
	clock := &fakeClock{}
	c := newPresignCluster(t, func(cfg *Config) { cfg.MaxPresignatures, cfg.PresignMaxAge = 2, time.Hour })
	for _, e := range c.engines {
		e.now = clock.now
	}
	signers := []ids.MemberID{agent.ID, policy.ID}
	p1 := c.presign(t, signers, nil)
	p2 := c.presign(t, signers, nil)
	p3 := c.presign(t, signers, nil)
	for _, id := range signers {
		e := c.engines[id]
		got := e.Presignatures()
		if len(got) != 2 || got[0].ID != p2 || got[1].ID != p3 {
			t.Fatalf("%s: parked %+v, want %s then %s", id, got, p2, p3)
		}
		if st := e.PresignStats(); st != (PresignStats{Parked: 2, Made: 3, Burned: 1, Evicted: 1}) {
			t.Fatalf("%s: stats %+v after eviction", id, st)
		}
	}
	_, errs := c.online(signers, p1, digestOf("evicted"))
	for id, err := range errs {
		if !errors.Is(err, ErrPresignUnknown) {
			t.Fatalf("%s: using an evicted presignature: got %v, want ErrPresignUnknown", id, err)
		}
	}
	for _, id := range signers {
		e := c.engines[id]
		if !e.BurnPresignature(p2) || e.BurnPresignature(p2) || e.BurnPresignature(p1) {
			t.Fatalf("%s: BurnPresignature burned other than p2, once", id)
		}
	}
	clock.advance(time.Hour)
	for _, id := range signers {
		e := c.engines[id]
		if got := e.Presignatures(); len(got) != 0 {
			t.Fatalf("%s: %+v still parked after an hour", id, got)
		}
		if st := e.PresignStats(); st != (PresignStats{Made: 3, Burned: 3, Evicted: 1, Discarded: 1, Expired: 1}) {
			t.Fatalf("%s: stats %+v after burn and expiry", id, st)
		}
	}
	for _, p := range []ids.SessionID{p2, p3} {
		_, errs := c.online(signers, p, digestOf("late"))
		for id, err := range errs {
			if !errors.Is(err, ErrPresignUnknown) {
				t.Fatalf("%s: using burned %s: got %v, want ErrPresignUnknown", id, p, err)
			}
		}
	}
}

// TestPresignExpiresAtUse: a presignature that expires between listing and
// use is refused and counted as expired.
func TestPresignExpiresAtUse(t *testing.T) {
	clock := &fakeClock{}
	c := newPresignCluster(t, func(cfg *Config) { cfg.PresignMaxAge = time.Minute })
	signers := []ids.MemberID{agent.ID, policy.ID}
	for _, e := range c.engines {
		e.now = clock.now
	}
	pid := c.presign(t, signers, nil)
	clock.advance(time.Minute)
	_, err := c.engines[agent.ID].SignPresigned(context.Background(), OnlineRequest{Presign: pid, Session: ids.NewSessionID(), Digest: digestOf("x")})
	if !errors.Is(err, ErrPresignUnknown) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("got %v, want ErrPresignUnknown saying it expired", err)
	}
	if st := c.engines[agent.ID].PresignStats(); st.Expired != 1 || st.Burned != 1 || st.Parked != 0 {
		t.Fatalf("stats %+v, want one expired", st)
	}
}

// TestPresignLostOnRestart: presignatures live in memory only. A member
// restarted after presigning has none; the others' online phase fails and
// burns theirs, and the request still signs with the full protocol.
func TestPresignLostOnRestart(t *testing.T) {
	c := newPresignCluster(t, nil)
	signers := []ids.MemberID{agent.ID, policy.ID}
	pid := c.presign(t, signers, nil)
	restarted := NewEngine(c.net.Endpoint(policy.ID), testConfig())
	sid := ids.NewSessionID()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agentErr := make(chan error, 1)
	go func() {
		_, err := c.engines[agent.ID].SignPresigned(ctx, OnlineRequest{Presign: pid, Session: sid, Digest: digestOf("pay")})
		agentErr <- err
	}()
	_, err := restarted.SignPresigned(context.Background(), OnlineRequest{Presign: pid, Session: sid, Digest: digestOf("pay")})
	if !errors.Is(err, ErrPresignUnknown) {
		t.Fatalf("restarted member: got %v, want ErrPresignUnknown", err)
	}
	cancel() // the restarted member said it cannot: give up, as a caller would
	if err := <-agentErr; err == nil {
		t.Fatal("online phase succeeded without the restarted member")
	}
	if st := c.engines[agent.ID].PresignStats(); st.Parked != 0 || st.Failed != 1 {
		t.Fatalf("agent's stats %+v, want the presignature burned as failed", st)
	}
	d := digestOf("pay")
	sigs := signAll(t, c.net, c.shares, signers, d, nil)
	if got := recoverAddress(t, d, sigs[agent.ID]); got != c.shares[agent.ID].Key().Address {
		t.Fatalf("full protocol signature recovers to %s", got.Hex())
	}
}

// TestPresignRefusesBadRequests: a presign request is checked before any
// message is sent.
func TestPresignRefusesBadRequests(t *testing.T) {
	c := newPresignCluster(t, nil)
	e := c.engines[agent.ID]
	sh := c.shares[agent.ID]
	for _, bad := range []struct {
		req  PresignRequest
		want string
	}{
		{PresignRequest{Share: sh, Signers: []ids.MemberID{agent.ID, policy.ID}}, "session id is missing"},
		{PresignRequest{Session: ids.NewSessionID(), Signers: []ids.MemberID{agent.ID, policy.ID}}, "share is missing"},
		{PresignRequest{Session: ids.NewSessionID(), Share: sh, Signers: []ids.MemberID{agent.ID}}, "the key needs 2"},
		{PresignRequest{Session: ids.NewSessionID(), Share: sh, Signers: []ids.MemberID{policy.ID, guardian.ID}}, "not among the signers"},
		{PresignRequest{Session: ids.NewSessionID(), Share: c.shares[policy.ID], Signers: []ids.MemberID{agent.ID, policy.ID}}, "belongs to"},
		{PresignRequest{Session: ids.NewSessionID(), Share: sh, Signers: []ids.MemberID{agent.ID, policy.ID}, Path: []uint32{1 << 31}}, "hardened"},
	} {
		_, err := e.Presign(context.Background(), bad.req)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Fatalf("presign request %+v: got %v, want an error saying %q", bad.req, err, bad.want)
		}
	}
	if c.net.Sent() != 0 || len(e.Presignatures()) != 0 || e.PresignStats() != (PresignStats{}) {
		t.Fatalf("refused requests sent %d messages or changed the engine: %+v", c.net.Sent(), e.PresignStats())
	}
}
