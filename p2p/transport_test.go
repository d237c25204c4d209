package p2p

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

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
	sid := tss.NewSessionID()
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
	// C must not deliver A's #2 while #1 is missing.
	expectNone(t, conns[2], 500*time.Millisecond)

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
	sb := sessionOf(conns[1])
	waitFor(t, 10*time.Second, "C's echo of #2 at B", func() bool {
		sb.mu.Lock()
		defer sb.mu.Unlock()
		return sb.bcast[seqKey{a.ID(), 2}] != nil
	})
	writeFrame(t, toB, signed(t, a.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: 2, From: a.ID(), Payload: []byte("P''")}))
	select {
	case <-conns[1].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("B did not detect the equivocation in slot #2")
	}
	if se, ok := tss.AsSessionError(conns[1].Err()); !ok || !slices.Equal(se.Culprits, []tss.MemberID{a.Self()}) {
		t.Fatalf("B: got %v, want misbehaviour by A", conns[1].Err())
	}
	expectNone(t, conns[1], 200*time.Millisecond)
}

func TestBroadcastWindow(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, func(cfg *Config) { cfg.BroadcastWindow = 4 })
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	sid := tss.NewSessionID()
	conns := openAll(t, c, sid)
	s := rawStream(t, b, a)
	defer s.Reset()
	bc := func(seq uint64) *Frame {
		return signed(t, b.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: seq, From: b.ID(), Payload: fmt.Appendf(nil, "#%d", seq)})
	}
	writeFrame(t, s, bc(5)) // 4 ahead of #1: outside the window
	writeFrame(t, s, bc(3))
	writeFrame(t, s, bc(2))
	waitFor(t, 10*time.Second, "gap drop", func() bool { return a.Counters().Dropped(DropBroadcastGap) == 1 })
	expectNone(t, conns[0], 200*time.Millisecond)
	writeFrame(t, s, bc(1))
	for _, want := range []string{"#1", "#2", "#3"} {
		if m := recv(t, conns[0], 10*time.Second); string(m.Payload) != want {
			t.Fatalf("got %q, want %q", m.Payload, want)
		}
	}
	// A sequence number over the session limit is dropped.
	writeFrame(t, s, signed(t, b.key, &Frame{Kind: KindDirect, Session: sid, Seq: a.cfg.SessionSlots + 1, From: b.ID(), To: a.ID(), Payload: []byte("x")}))
	waitFor(t, 10*time.Second, "seq limit drop", func() bool { return a.Counters().Dropped(DropSeqLimit) == 1 })
	expectNone(t, conns[0], 100*time.Millisecond)
}

func TestDropBadEcho(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, nil)
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	sid, other := tss.NewSessionID(), tss.NewSessionID()
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
	waitFor(t, 10*time.Second, "bad echo drops", func() bool { return a.Counters().Dropped(DropBadEcho) == 3 })
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
	sid := tss.NewSessionID()
	// A session of A and B only.
	ab := []tss.MemberID{a.Self(), b.Self()}
	connA, err := a.Open(context.Background(), sid, ab)
	if err != nil {
		t.Fatal(err)
	}
	defer connA.Close(nil)

	fromB := rawStream(t, b, a)
	defer fromB.Reset()
	writeFrame(t, fromB, signed(t, b.key, &Frame{Kind: KindDirect, Session: sid, Seq: 1, From: b.ID(), To: cc.ID(), Payload: []byte("for c")}))
	waitFor(t, 10*time.Second, "wrong recipient drop", func() bool { return a.Counters().Dropped(DropWrongTo) == 1 })

	fromC := rawStream(t, cc, a)
	defer fromC.Reset()
	writeFrame(t, fromC, signed(t, cc.key, &Frame{Kind: KindDirect, Session: sid, Seq: 1, From: cc.ID(), To: a.ID(), Payload: []byte("not a member")}))
	writeFrame(t, fromC, signed(t, cc.key, &Frame{Kind: KindBroadcast, Session: sid, Seq: 1, From: cc.ID(), Payload: []byte("not a member")}))
	waitFor(t, 10*time.Second, "non-member drops", func() bool { return a.Counters().Dropped(DropNotMember) == 2 })
	expectNone(t, connA, 200*time.Millisecond)
}

// A frame signed for one session is neither accepted in another (the
// session id is signed) nor delivered twice in its own.
func TestFrameFromAnotherSession(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	x, y := tss.NewSessionID(), tss.NewSessionID()
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
	waitFor(t, 10*time.Second, "drops", func() bool {
		return a.Counters().Dropped(DropBadSignature) == 1 && a.Counters().Dropped(DropDuplicate) == 1
	})
	expectNone(t, cy[0], 200*time.Millisecond)
	expectNone(t, cx[0], 10*time.Millisecond)
}

// One member flooding a session whose engine is not reading uses up its own
// share of the queue, not the others'.
func TestDropQueueFullPerSender(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, func(cfg *Config) { cfg.SessionQueue = 4 })
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	conns := openAll(t, c, tss.NewSessionID())
	const flood = 8
	for i := 0; i < flood; i++ {
		if err := conns[1].Send(context.Background(), a.Self(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "flood handled", func() bool {
		return a.Counters().Received.Load() == flood
	})
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

// A peer whose writes stall holds up only its own outbound queue: the
// stall does not block reading (echoes to it are dropped), and engine sends
// to it wait for room until their context ends.
func TestSlowPeerDoesNotBlockReader(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, func(cfg *Config) { cfg.OutQueueFrames = 1 })
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	conns := openAll(t, c, tss.NewSessionID())
	release := make(chan struct{})
	stalled := make(chan struct{}, 1)
	hook := sendHook(func(to peer.ID, f *Frame, write func([]byte) error) error {
		if to == cc.ID() {
			select {
			case stalled <- struct{}{}:
			default:
			}
			<-release
		}
		return write(f.Encode())
	})
	b.hook.Store(&hook)
	defer b.hook.Store(nil)
	defer close(release)

	const rounds = 5
	for i := 0; i < rounds; i++ {
		if err := conns[0].Broadcast(context.Background(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < rounds; i++ {
		if m := recv(t, conns[1], 10*time.Second); m.Payload[0] != byte(i) {
			t.Fatalf("B got %v, want %d", m.Payload, i)
		}
	}
	<-stalled
	// One echo is stuck in the hook, one waits in the queue of one frame;
	// the others were dropped, not waited for.
	waitFor(t, 10*time.Second, "echo drops", func() bool { return b.Counters().Dropped(DropOutQueueFull) >= rounds-2 })
	// The queue holds one frame: at most one send fits, the next waits.
	var err error
	for i := 0; i < 2 && err == nil; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err = conns[1].Send(ctx, cc.Self(), []byte("waits"))
		cancel()
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send to a stalled peer: got %v, want a deadline error", err)
	}
	// B still talks to A.
	if err := conns[1].Send(context.Background(), a.Self(), []byte("to a")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[0], 10*time.Second); string(m.Payload) != "to a" {
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
	ids := c.ids()
	var shared tss.SessionID
	for i := 0; i < 3; i++ {
		sid := tss.NewSessionID()
		if i == 0 {
			shared = sid
		}
		conn, err := b.Open(context.Background(), sid, ids)
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
	waitFor(t, 10*time.Second, "B's frames", func() bool { return a.Counters().Received.Load() == 42 })
	if got := a.Counters().Dropped(DropPendingFull); got != 9 {
		t.Fatalf("pending_full drops = %d, want 9", got)
	}
	// C's early frames still find room, in the shared session and in a
	// new one.
	own := tss.NewSessionID()
	for _, sid := range []tss.SessionID{shared, own} {
		conn, err := cc.Open(context.Background(), sid, ids)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(nil)
		if err := conn.Send(context.Background(), a.Self(), []byte("early from c")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "C's frames", func() bool { return a.Counters().Received.Load() == 44 })
	if got := a.Counters().Dropped(DropPendingFull); got != 9 {
		t.Fatalf("C's early frames were dropped: pending_full drops = %d", got)
	}
	if s, n, _ := a.PendingStats(); s != 3 || n != 35 {
		t.Fatalf("pending: %d sessions, %d frames; want 3, 35", s, n)
	}
	conn, err := a.Open(context.Background(), shared, ids)
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
	sid := tss.NewSessionID()
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
	waitFor(t, 10*time.Second, "buffering", func() bool { _, n, _ := a.PendingStats(); return n == early })
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
	// Slow the replay down so that late frames arrive while it runs.
	a.onReplay = func() { time.Sleep(100 * time.Microsecond) }
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
	ids := []tss.MemberID{c.nodes[0].Self(), tss.MemberID(cidForm)}
	_, err := c.nodes[0].Open(context.Background(), tss.NewSessionID(), ids)
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
		writeFrame(t, s, signed(t, b.key, &Frame{Kind: KindDirect, Session: tss.NewSessionID(), Seq: 1, From: b.ID(), To: b.ID(), Payload: []byte("x")}))
	}
	waitFor(t, 10*time.Second, "drops", func() bool { return a.Counters().Dropped(DropWrongTo) == n })
	if got := strings.Count(a.logs.String(), "dropped frame for another recipient"); got < 1 || got > 5 {
		t.Fatalf("%d log lines for %d drops", got, n)
	}
}
