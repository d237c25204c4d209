package p2p

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

// Transport-level tests: hand-made frames on raw streams between real
// hosts on loopback.

func signed(tb testing.TB, key crypto.PrivKey, f *Frame) *Frame {
	tb.Helper()
	if err := f.Sign(key); err != nil {
		tb.Fatal(err)
	}
	return f
}

// sessionOf returns the transport's session behind conn.
func sessionOf(conn tss.Conn) *session { return conn.(*session) }

// A sender that numbers one payload #1 for B and another #2 for C gets the
// echoes into different slots. Contiguous delivery keeps B and C from
// delivering different payloads: C holds #2 until #1 arrives.
func TestEquivocationBySequenceNumber(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, nil)
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	sid := ids.NewSessionID()
	conns := openAll(t, c, sid)
	toB, toC := rawStream(t, a, b), rawStream(t, a, cc)
	defer toB.Reset()
	defer toC.Reset()

	p1 := signed(t, a.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: 1, From: a.ID(), Payload: []byte("P")})
	p2 := signed(t, a.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: 2, From: a.ID(), Payload: []byte("P'")})
	writeFrame(t, toB, p1)
	writeFrame(t, toC, p2)

	if m := recv(t, conns[1], 10*time.Second); m.From != a.Self() || !m.Broadcast || string(m.Payload) != "P" {
		t.Fatalf("B got %+v", m)
	}
	// C must not deliver A's #2 while #1 is missing: a direct frame A
	// writes after it comes first.
	writeFrame(t, toC, signed(t, a.key, &Frame{Kind: KindDirect, Session: sid, Seq: 1, From: a.ID(), To: cc.ID(), Payload: []byte("after #2")}))
	if m := recv(t, conns[2], 10*time.Second); string(m.Payload) != "after #2" {
		t.Fatalf("C got %q before A's direct frame", m.Payload)
	}

	// Once A's #1 reaches C, C delivers #1, then #2: the same first
	// payload as B.
	writeFrame(t, toC, p1)
	for _, want := range []string{"P", "P'"} {
		if m := recv(t, conns[2], 10*time.Second); m.From != a.Self() || string(m.Payload) != want {
			t.Fatalf("C got %q, want %q", m.Payload, want)
		}
	}
	for i, conn := range conns[1:] {
		if err := conn.Err(); err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}

	// B learnt A's #2 from C's echo: another #2 for B is caught.
	// C queued its echo of #2 for B before it delivered #2; a frame C
	// sends B now follows the echo, so B has handled the echo once the
	// frame arrives.
	if err := conns[2].Send(context.Background(), b.Self(), []byte("after the echo")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[1], 10*time.Second); string(m.Payload) != "after the echo" {
		t.Fatalf("B got %q", m.Payload)
	}
	sb := sessionOf(conns[1])
	sb.mu.Lock()
	rec := sb.m.bcast[seqKey{a.ID(), 2}]
	sb.mu.Unlock()
	if rec == nil {
		t.Fatal("B has no record of A's #2 from C's echo")
	}
	writeFrame(t, toB, signed(t, a.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: 2, From: a.ID(), Payload: []byte("P''")}))
	select {
	case <-conns[1].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("B did not detect the equivocation in slot #2")
	}
	if se, ok := tss.AsSessionError(conns[1].Err()); !ok || !slices.Equal(se.Culprits, []ids.MemberID{a.Self()}) {
		t.Fatalf("B: got %v, want misbehaviour by A", conns[1].Err())
	}
	expectDrained(t, conns[1])
}

func TestBroadcastWindow(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, func(cfg *Config) { cfg.BroadcastWindow = 4 })
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	sid := ids.NewSessionID()
	conns := openAll(t, c, sid)
	s := rawStream(t, b, a)
	defer s.Reset()
	bc := func(seq uint64) *Frame {
		return signed(t, b.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: seq, From: b.ID(), Payload: fmt.Appendf(nil, "#%d", seq)})
	}
	writeFrame(t, s, bc(5)) // 4 ahead of #1: outside the window
	writeFrame(t, s, bc(3))
	writeFrame(t, s, bc(2))
	syncRaw(t, s, b, a)
	if got := a.Counters().Dropped(DropBroadcastGap); got != 1 {
		t.Fatalf("broadcast_gap drops = %d, want 1", got)
	}
	expectDrained(t, conns[0])
	writeFrame(t, s, bc(1))
	for _, want := range []string{"#1", "#2", "#3"} {
		if m := recv(t, conns[0], 10*time.Second); string(m.Payload) != want {
			t.Fatalf("got %q, want %q", m.Payload, want)
		}
	}
	// A sequence number over the session limit is dropped.
	writeFrame(t, s, signed(t, b.key, &Frame{Kind: KindDirect, Session: sid, Seq: a.cfg.SessionSlots + 1, From: b.ID(), To: a.ID(), Payload: []byte("x")}))
	syncRaw(t, s, b, a)
	if got := a.Counters().Dropped(DropSeqLimit); got != 1 {
		t.Fatalf("seq_limit drops = %d, want 1", got)
	}
	expectDrained(t, conns[0])
}

func TestDropBadEcho(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, nil)
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	sid, other := ids.NewSessionID(), ids.NewSessionID()
	conns := openAll(t, c, sid)
	s := rawStream(t, b, a)
	defer s.Reset()
	echo := func(seq uint64, inner *Frame) *Frame {
		return signed(t, b.key, &Frame{Kind: KindEcho, Session: sid, Seq: seq, From: b.ID(), Payload: inner.HeaderOnly().Encode()})
	}
	// A broadcast "by C" signed with B's key.
	forged := signed(t, b.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: 1, From: cc.ID(), Payload: []byte("forged")})
	// C's real broadcast, but of another session.
	elsewhere := signed(t, cc.key, &Frame{Kind: KindBroadcast, Session: other, Seq: 1, From: cc.ID(), Payload: []byte("other session")})
	// A's own broadcast, with a payload A never sent.
	own := signed(t, a.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: 1, From: a.ID(), Payload: []byte("own")})
	writeFrame(t, s, echo(1, forged))
	writeFrame(t, s, echo(2, elsewhere))
	writeFrame(t, s, echo(3, own))
	syncRaw(t, s, b, a)
	if got := a.Counters().Dropped(DropBadEcho); got != 3 {
		t.Fatalf("bad_echo drops = %d, want 3", got)
	}
	// None of them made a record or ended the session: C's real #1 is
	// delivered.
	if err := conns[2].Broadcast(context.Background(), []byte("real")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[0], 10*time.Second); m.From != cc.Self() || string(m.Payload) != "real" {
		t.Fatalf("got %+v", m)
	}
	if err := conns[0].Err(); err != nil {
		t.Fatal(err)
	}
}

func TestDropWrongToAndNotMember(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, nil)
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	sid := ids.NewSessionID()
	// A session of A and B only.
	ab := []ids.MemberID{a.Self(), b.Self()}
	connA, err := a.Open(context.Background(), sid, ab)
	if err != nil {
		t.Fatal(err)
	}
	defer connA.Close(nil)

	fromB := rawStream(t, b, a)
	defer fromB.Reset()
	writeFrame(t, fromB, signed(t, b.key, &Frame{Kind: KindDirect, Session: sid, Seq: 1, From: b.ID(), To: cc.ID(), Payload: []byte("for c")}))
	syncRaw(t, fromB, b, a)
	if got := a.Counters().Dropped(DropWrongTo); got != 1 {
		t.Fatalf("wrong_recipient drops = %d, want 1", got)
	}

	fromC := rawStream(t, cc, a)
	defer fromC.Reset()
	writeFrame(t, fromC, signed(t, cc.key, &Frame{Kind: KindDirect, Session: sid, Seq: 1, From: cc.ID(), To: a.ID(), Payload: []byte("not a member")}))
	writeFrame(t, fromC, signed(t, cc.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: 1, From: cc.ID(), Payload: []byte("not a member")}))
	syncRaw(t, fromC, cc, a)
	if got := a.Counters().Dropped(DropNotMember); got != 2 {
		t.Fatalf("not_member drops = %d, want 2", got)
	}
	expectDrained(t, connA)
}

// A frame signed for one session is neither accepted in another (the
// session id is signed) nor delivered twice in its own.
func TestFrameFromAnotherSession(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	x, y := ids.NewSessionID(), ids.NewSessionID()
	cx, cy := openAll(t, c, x), openAll(t, c, y)
	s := rawStream(t, b, a)
	defer s.Reset()
	f := signed(t, b.key, &Frame{Kind: KindDirect, Session: x, Seq: 1, From: b.ID(), To: a.ID(), Payload: []byte("for x")})
	writeFrame(t, s, f)
	if m := recv(t, cx[0], 10*time.Second); string(m.Payload) != "for x" {
		t.Fatalf("got %q", m.Payload)
	}
	moved := *f
	moved.Session = y
	writeFrame(t, s, &moved)
	writeFrame(t, s, f)
	syncRaw(t, s, b, a)
	if bad, dup := a.Counters().Dropped(DropBadSignature), a.Counters().Dropped(DropDuplicate); bad != 1 || dup != 1 {
		t.Fatalf("bad_signature drops = %d, duplicate drops = %d; want 1 and 1", bad, dup)
	}
	expectDrained(t, cy[0])
	expectDrained(t, cx[0])
}

// One member flooding a session whose engine is not reading uses up its own
// share of the queue, not the others'.
func TestDropQueueFullPerSender(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, func(cfg *Config) { cfg.SessionQueue = 4 })
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	conns := openAll(t, c, ids.NewSessionID())
	const flood = 8
	for i := 0; i < flood; i++ {
		if err := conns[1].Send(context.Background(), a.Self(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	syncPeers(t, b, a)
	if got := a.Counters().Received.Load(); got < flood {
		t.Fatalf("%d frames received, want the %d flooded", got, flood)
	}
	dropped := a.Counters().Dropped(DropQueueFull)
	if dropped < flood-3 {
		t.Fatalf("%d of %d flooded messages dropped, want at least %d", dropped, flood, flood-3)
	}
	if err := conns[2].Send(context.Background(), a.Self(), []byte("honest")); err != nil {
		t.Fatal(err)
	}
	fromB, last, gotC := 0, -1, false
	for !gotC {
		m := recv(t, conns[0], 10*time.Second)
		switch m.From {
		case b.Self():
			if int(m.Payload[0]) <= last {
				t.Fatalf("message from B out of order: %v after %d", m.Payload, last)
			}
			last = int(m.Payload[0])
			fromB++
		case cc.Self():
			gotC = true
		}
	}
	if got := a.Counters().Dropped(DropQueueFull); got != dropped {
		t.Fatalf("C's message was dropped too (%d drops, then %d)", dropped, got)
	}
	if fromB+int(dropped) != flood {
		t.Fatalf("%d delivered + %d dropped from B, want %d", fromB, dropped, flood)
	}
}

// A peer whose writes stall does not block reading: echoes to it go over
// its queue's cap up to the allowance, then are dropped, which ends their
// session naming it. Engine sends to it wait for room at most OutQueueWait,
// then fail their session naming it. Other peers are unaffected.
func TestSlowPeerDoesNotBlockReader(t *testing.T) {
	c := newClusterEach(t, t.TempDir(), 3, tcpLoopback, func(i int, cfg *Config) {
		if i == 1 {
			cfg.OutQueueFrames = 1
			cfg.OutQueueWait = 500 * time.Millisecond
		}
	})
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	conns := openAll(t, c, ids.NewSessionID())
	h := stall(t, b, cc.ID())
	defer h.release()

	// 1 echo in the writer, 1 + allowance queued, the last one dropped.
	rounds := echoAllowance(b.cfg) + 3
	for i := 0; i < rounds; i++ {
		if err := conns[0].Broadcast(context.Background(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-h.stalled
		}
	}
	got := 0
	for got < rounds {
		select {
		case m := <-conns[1].Incoming():
			if m.Payload[0] != byte(got) {
				t.Fatalf("B got %v, want %d", m.Payload, got)
			}
			got++
		case <-conns[1].Done():
			// Expected once the allowance is used up; the reader went on.
			got = rounds
		case <-time.After(10 * time.Second):
			t.Fatalf("B got %d of %d broadcasts", got, rounds)
		}
	}
	// B counted the echo it dropped before the session ended.
	if got := b.Counters().Dropped(DropOutQueueFull); got != 1 {
		t.Fatalf("out_queue_full drops = %d, want 1", got)
	}
	se, ok := tss.AsSessionError(conns[1].Err())
	if !ok || se.Kind != tss.FailTransport || !slices.Equal(se.Waiting, []ids.MemberID{cc.Self()}) {
		t.Fatalf("B: got %v, want a transport failure waiting for C", conns[1].Err())
	}

	// In a new session, a send to C waits OutQueueWait, then fails it.
	conns2 := openAll(t, c, ids.NewSessionID())
	start := time.Now()
	if err := conns2[1].Send(context.Background(), cc.Self(), []byte("waits")); err == nil {
		t.Fatal("send to a stalled peer succeeded")
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 5*time.Second {
		t.Fatalf("send gave up after %v, want about 500ms", d)
	}
	se, ok = tss.AsSessionError(conns2[1].Err())
	if !ok || se.Kind != tss.FailTransport || !slices.Equal(se.Waiting, []ids.MemberID{cc.Self()}) {
		t.Fatalf("B: got %v, want a transport failure waiting for C", conns2[1].Err())
	}
	// B still talks to A.
	conns3 := openAll(t, c, ids.NewSessionID())
	if err := conns3[1].Send(context.Background(), a.Self(), []byte("to a")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns3[0], 10*time.Second); string(m.Payload) != "to a" {
		t.Fatalf("A got %q", m.Payload)
	}
}

// A member cannot use up the pre-open buffer that the others' early frames
// need: sessions and frames are counted per sender.
func TestPendingPerSenderLimits(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, func(cfg *Config) {
		cfg.PendingSessions = 4 // 2 per sender
		cfg.PendingFrames = 64  // 32 per sender and session
	})
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	memberIDs := c.ids()
	var shared ids.SessionID
	for i := 0; i < 3; i++ {
		sid := ids.NewSessionID()
		if i == 0 {
			shared = sid
		}
		conn, err := b.Open(context.Background(), sid, memberIDs)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(nil)
		n := 1
		if i == 0 {
			n = 40
		}
		for j := 0; j < n; j++ {
			if err := conn.Send(context.Background(), a.Self(), []byte{byte(j)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// B: 32 frames in the shared session, 1 in a second; the third
	// session and 8 frames over its share are refused.
	syncPeers(t, b, a)
	if got := a.Counters().Received.Load(); got < 42 {
		t.Fatalf("%d of B's 42 frames received", got)
	}
	if got := a.Counters().Dropped(DropPendingFull); got != 9 {
		t.Fatalf("pending_full drops = %d, want 9", got)
	}
	// C's early frames still find room, in the shared session and in a
	// new one.
	own := ids.NewSessionID()
	for _, sid := range []ids.SessionID{shared, own} {
		conn, err := cc.Open(context.Background(), sid, memberIDs)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(nil)
		if err := conn.Send(context.Background(), a.Self(), []byte("early from c")); err != nil {
			t.Fatal(err)
		}
	}
	syncPeers(t, cc, a)
	if got := a.Counters().Dropped(DropPendingFull); got != 9 {
		t.Fatalf("C's early frames were dropped: pending_full drops = %d", got)
	}
	if s, n, _ := a.PendingStats(); s != 3 || n != 35 {
		t.Fatalf("pending: %d sessions, %d frames; want 3, 35", s, n)
	}
	conn, err := a.Open(context.Background(), shared, memberIDs)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(nil)
	fromB := 0
	for range 33 {
		m := recv(t, conn, 10*time.Second)
		if m.From == b.Self() {
			if int(m.Payload[0]) != fromB {
				t.Fatalf("B's buffered message %d is %v", fromB, m.Payload)
			}
			fromB++
		}
	}
	if fromB != 32 {
		t.Fatalf("%d of B's buffered messages delivered, want 32", fromB)
	}
}

// Frames buffered before Open are delivered before frames that arrive
// while Open replays them.
func TestReplayOrderAtOpen(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	sid := ids.NewSessionID()
	connB, err := b.Open(context.Background(), sid, c.ids())
	if err != nil {
		t.Fatal(err)
	}
	defer connB.Close(nil)
	const early, late = 300, 300
	send := func(i int) error {
		return connB.Send(context.Background(), a.Self(), []byte{byte(i >> 8), byte(i)})
	}
	for i := 0; i < early; i++ {
		if err := send(i); err != nil {
			t.Fatal(err)
		}
	}
	syncPeers(t, b, a)
	if _, n, _ := a.PendingStats(); n != early {
		t.Fatalf("%d frames buffered, want %d", n, early)
	}
	errc := make(chan error, 1)
	go func() {
		for i := early; i < early+late; i++ {
			if err := send(i); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	// Late frames arrive while Open replays the early ones (300 frames
	// through the session machine); readers that find the session wait
	// for the replay.
	connA, err := a.Open(context.Background(), sid, c.ids())
	if err != nil {
		t.Fatal(err)
	}
	defer connA.Close(nil)
	for i := 0; i < early+late; i++ {
		m := recv(t, connA, 10*time.Second)
		if got := int(m.Payload[0])<<8 | int(m.Payload[1]); got != i {
			t.Fatalf("message %d is %d", i, got)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesNonCanonicalMemberID(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	other := c.nodes[1].ID()
	cidForm := peer.ToCid(other).String()
	if !strings.HasPrefix(cidForm, "b") || cidForm == other.String() {
		t.Fatalf("unexpected CID form %q", cidForm)
	}
	if p, err := peer.Decode(cidForm); err != nil || p != other {
		t.Fatalf("CID form does not decode to the member: %v", err)
	}
	memberIDs := []ids.MemberID{c.nodes[0].Self(), ids.MemberID(cidForm)}
	_, err := c.nodes[0].Open(context.Background(), ids.NewSessionID(), memberIDs)
	if err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Fatalf("got %v, want a refusal of the non-canonical id", err)
	}
}

func TestConfigLimits(t *testing.T) {
	key, _ := testKey(t)
	if _, err := New(Config{Identity: key, MaxFrameSize: 32 << 20}); err == nil || !strings.Contains(err.Error(), "per-stream memory") {
		t.Fatalf("got %v, want a refusal of a frame size over the stream memory limit", err)
	}
	// A peer id that hashes its key instead of inlining it.
	hashed, err := peer.Decode("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Identity: key, Members: []Member{{ID: hashed}}}); err == nil || !strings.Contains(err.Error(), "inline public key") {
		t.Fatalf("got %v, want a refusal of a member without an inline key", err)
	}
	if _, err := ParseMember(hashed.String()); err == nil {
		t.Fatal("ParseMember took a member without an inline key")
	}
}

func TestStaleIdentityTempRemoved(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, ".identity-123")
	fresh := filepath.Join(dir, ".identity-456")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("half a key"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateIdentity(filepath.Join(dir, "identity.key")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp file survived: %v", err)
	}
	// A recent one may belong to a creator running now.
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("recent temp file removed: %v", err)
	}
}

// Dropped frames are counted exactly but logged a few times only.
func TestDropLogsRateLimited(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	s := rawStream(t, b, a)
	defer s.Reset()
	const n = 50
	for i := 0; i < n; i++ {
		writeFrame(t, s, signed(t, b.key, &Frame{Kind: KindDirect, Session: ids.NewSessionID(), Seq: 1, From: b.ID(), To: b.ID(), Payload: []byte("x")}))
	}
	syncRaw(t, s, b, a)
	if got := a.Counters().Dropped(DropWrongTo); got != n {
		t.Fatalf("wrong_recipient drops = %d, want %d", got, n)
	}
	if got := strings.Count(a.logs.String(), "dropped frame for another recipient"); got < 1 || got > 5 {
		t.Fatalf("%d log lines for %d drops", got, n)
	}
}

// A member that pushes everyone's echo numbers past SessionSlots (by
// re-sending one payload under many broadcast numbers, which the engine
// drops as duplicates) must not hide an equivocation: echoes are not
// bounded by their own number, only by the slot of the broadcast inside.
func TestEquivocationPastEchoSlotLimit(t *testing.T) {
	const slots = 8
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, func(cfg *Config) { cfg.SessionSlots = slots })
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	sid := ids.NewSessionID()
	conns := openAll(t, c, sid)
	toB, toC := rawStream(t, a, b), rawStream(t, a, cc)
	defer toB.Reset()
	defer toC.Reset()
	// Honest traffic first: B and C each echo one broadcast of the other.
	for _, conn := range conns[1:] {
		if err := conn.Broadcast(context.Background(), []byte("honest")); err != nil {
			t.Fatal(err)
		}
	}
	for _, conn := range conns[1:] {
		if m := recv(t, conn, 10*time.Second); string(m.Payload) != "honest" {
			t.Fatalf("got %q", m.Payload)
		}
	}
	bc := func(seq uint64, payload string) *Frame {
		return signed(t, a.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: seq, From: a.ID(), Payload: []byte(payload)})
	}
	for seq := uint64(1); seq < slots; seq++ {
		f := bc(seq, "P")
		writeFrame(t, toB, f)
		writeFrame(t, toC, f)
	}
	// B's and C's echoes of A's last broadcast now carry number slots+1.
	writeFrame(t, toB, bc(slots, "X"))
	writeFrame(t, toC, bc(slots, "X'"))
	for i, conn := range conns[1:] {
		select {
		case <-conn.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("node %d did not detect the equivocation in slot #%d", i+1, slots)
		}
		if se, ok := tss.AsSessionError(conn.Err()); !ok || se.Kind != tss.FailMisbehaviour || !slices.Equal(se.Culprits, []ids.MemberID{a.Self()}) {
			t.Fatalf("node %d: got %v, want misbehaviour by A", i+1, conn.Err())
		}
	}
	if got := b.Counters().Dropped(DropSeqLimit) + cc.Counters().Dropped(DropSeqLimit); got != 0 {
		t.Fatalf("%d frames dropped as seq_limit", got)
	}
}

// stall makes node n's writes to peer `to` wait until the returned release
// is called; stalled is signalled when the first write waits. It records
// the kind of every frame handed to the writer for `to`, in order.
type stallHook struct {
	release func()
	stalled chan struct{}
	mu      sync.Mutex
	kinds   []Kind
}

func (h *stallHook) seen() []Kind {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.kinds)
}

func stall(t *testing.T, n *testNode, to peer.ID) *stallHook {
	t.Helper()
	ch := make(chan struct{})
	h := &stallHook{stalled: make(chan struct{}, 1)}
	var once sync.Once
	h.release = func() { once.Do(func() { close(ch) }) }
	hook := sendHook(func(p peer.ID, f *Frame, write func([]byte) error) error {
		if p == to {
			h.mu.Lock()
			h.kinds = append(h.kinds, f.Kind)
			h.mu.Unlock()
			select {
			case h.stalled <- struct{}{}:
			default:
			}
			<-ch
		}
		return write(f.Encode())
	})
	n.tap.set(hook)
	t.Cleanup(func() { n.tap.set(nil); h.release() })
	// Callers also defer h.release(): a stalled writer blocks Node.Close,
	// which tests defer, and deferred calls run before cleanups.
	return h
}

// A member whose queue is full does not hold up a broadcast to the members
// after it; the wait for it is bounded and names it.
func TestBroadcastNotHeldUpByStuckMember(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, func(cfg *Config) {
		cfg.OutQueueFrames = 1
		cfg.OutQueueWait = time.Second
	})
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	conns := openAll(t, c, ids.NewSessionID())
	h := stall(t, a, b.ID()) // B comes before C in A's member list
	defer h.release()
	for i := 0; i < 2; i++ {
		if err := conns[0].Broadcast(context.Background(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-h.stalled // #1 is in the writer, #2 fills B's queue
	errc := make(chan error, 1)
	go func() { errc <- conns[0].Broadcast(context.Background(), []byte{2}) }()
	for i := 0; i < 3; i++ {
		if m := recv(t, conns[2], 5*time.Second); m.Payload[0] != byte(i) {
			t.Fatalf("C got %v, want %d", m.Payload, i)
		}
	}
	var err error
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("Broadcast still waits for the stuck member")
	}
	if err == nil {
		t.Fatal("Broadcast to a stuck member succeeded")
	}
	se, ok := tss.AsSessionError(conns[0].Err())
	if !ok || se.Kind != tss.FailTransport || !slices.Equal(se.Waiting, []ids.MemberID{b.Self()}) {
		t.Fatalf("got %v, want a transport failure waiting for B", conns[0].Err())
	}
}

// A frame the writer cannot deliver (the member's host is gone) ends the
// session here, naming that member rather than leaving it to an idle
// timeout elsewhere that would name us.
func TestUnreachableMemberFailsSession(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, nil)
	defer c.close()
	b, cc := c.nodes[1], c.nodes[2]
	conns := openAll(t, c, ids.NewSessionID())
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := conns[0].Broadcast(context.Background(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[1], 10*time.Second); string(m.Payload) != "x" {
		t.Fatalf("B got %q", m.Payload)
	}
	select {
	case <-conns[0].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("session not ended after a frame to a closed member was lost")
	}
	se, ok := tss.AsSessionError(conns[0].Err())
	if !ok || se.Kind != tss.FailTransport || !slices.Equal(se.Waiting, []ids.MemberID{cc.Self()}) {
		t.Fatalf("got %v, want a transport failure waiting for C", conns[0].Err())
	}
	_ = b
}

// Frames of a session that ended here a while ago are not written: a
// restarted member would only buffer them as early frames.
func TestStaleFramesNotWritten(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, func(cfg *Config) { cfg.WriteTimeout = time.Second })
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	conn, err := a.Open(context.Background(), ids.NewSessionID(), c.ids())
	if err != nil {
		t.Fatal(err)
	}
	h := stall(t, a, b.ID())
	defer h.release() // before c.close: a stalled writer blocks Close
	for i := 0; i < 3; i++ {
		if err := conn.Send(context.Background(), b.Self(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-h.stalled // #1 is in the writer, #2 and #3 queued
	conn.Close(nil)
	// The session ended longer ago than WriteTimeout (dated back rather
	// than waited for).
	s := sessionOf(conn)
	s.mu.Lock()
	s.shutAt = s.shutAt.Add(-2 * a.cfg.WriteTimeout)
	s.mu.Unlock()
	h.release()
	// The writer handles a frame queued now after #2 and #3.
	syncPeers(t, a, b)
	if got := a.Counters().Dropped(DropStale); got != 2 {
		t.Fatalf("stale_outbound drops = %d, want 2", got)
	}
	if _, n, _ := b.PendingStats(); n != 1 {
		t.Fatalf("B buffered %d frames of the ended session, want 1 (the frame taken before the end)", n)
	}
}

// An echo is not dropped in favour of a later engine frame on the same
// queue: it goes over the cap, so the member sees it first.
func TestEchoNotOvertakenOnFullQueue(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, func(cfg *Config) { cfg.OutQueueFrames = 2 })
	defer c.close()
	b, cc := c.nodes[1], c.nodes[2]
	conns := openAll(t, c, ids.NewSessionID())
	h := stall(t, b, cc.ID())
	defer h.release() // before c.close: a stalled writer blocks Close
	for i := 0; i < 3; i++ {
		if err := conns[1].Send(context.Background(), cc.Self(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-h.stalled // one in the writer, two fill the queue
	if err := conns[0].Broadcast(context.Background(), []byte("round r")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[1], 10*time.Second); string(m.Payload) != "round r" {
		t.Fatalf("B got %q", m.Payload)
	}
	// B's echo is queued (or dropped) by now; its round r+1 waits for room.
	errc := make(chan error, 1)
	go func() { errc <- conns[1].Send(context.Background(), cc.Self(), []byte("round r+1")) }()
	h.release()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	syncPeers(t, b, cc) // the writer has handed every frame to C before
	if got, want := h.seen()[:5], []Kind{KindDirect, KindDirect, KindDirect, KindEcho, KindDirect}; !slices.Equal(got, want) {
		t.Fatalf("frames to C in order %v, want %v", got, want)
	}
	if got := b.Counters().Dropped(DropOutQueueFull); got != 0 {
		t.Fatalf("%d echoes dropped", got)
	}
}

// Held broadcasts must not keep out the next expected one, which releases
// them, when the sender's share is no larger than the window.
func TestNextBroadcastAdmittedWithHeldShare(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, func(cfg *Config) { cfg.SessionQueue = 4 })
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	sid := ids.NewSessionID()
	conns := openAll(t, c, sid)
	s := rawStream(t, b, a)
	defer s.Reset()
	bc := func(seq uint64) *Frame {
		return signed(t, b.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: seq, From: b.ID(), Payload: fmt.Appendf(nil, "#%d", seq)})
	}
	for seq := uint64(2); seq <= 5; seq++ {
		writeFrame(t, s, bc(seq))
	}
	writeFrame(t, s, bc(1))
	for i := 1; i <= 5; i++ {
		if m := recv(t, conns[0], 10*time.Second); string(m.Payload) != fmt.Sprintf("#%d", i) {
			t.Fatalf("got %q, want #%d", m.Payload, i)
		}
	}
	if got := a.Counters().Dropped(DropQueueFull); got != 0 {
		t.Fatalf("%d broadcasts dropped as queue_full", got)
	}
}
