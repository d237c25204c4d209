package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

func TestIdentityPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "identity.key")
	k1, err := LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %04o, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equals(k2) {
		t.Fatal("second start made a new key")
	}
}

func TestIdentityCorruptedIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	if _, err := LoadOrCreateIdentity(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadOrCreateIdentity(path)
	if err == nil || !strings.Contains(err.Error(), "corrupted") {
		t.Fatalf("got %v, want a corrupted-identity error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not a key" {
		t.Fatal("corrupted identity was replaced")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentity(path); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Fatalf("got %v, want a mode error", err)
	}
}

func TestDirectAndBroadcast(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, nil)
	defer c.close()
	conns := openAll(t, c, ids.NewSessionID())
	if err := conns[0].Send(context.Background(), c.nodes[1].Self(), []byte("to one")); err != nil {
		t.Fatal(err)
	}
	m := recv(t, conns[1], 5*time.Second)
	if m.From != c.nodes[0].Self() || m.Broadcast || string(m.Payload) != "to one" {
		t.Fatalf("got %+v", m)
	}
	if err := conns[2].Broadcast(context.Background(), []byte("to all")); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1} {
		m := recv(t, conns[i], 5*time.Second)
		if m.From != c.nodes[2].Self() || !m.Broadcast || string(m.Payload) != "to all" {
			t.Fatalf("node %d got %+v", i, m)
		}
	}
	// The broadcaster does not get its own broadcast; the echoes A and B
	// sent it have been handled once a later frame of each arrives.
	syncPeers(t, c.nodes[0], c.nodes[2])
	syncPeers(t, c.nodes[1], c.nodes[2])
	expectDrained(t, conns[2])
	// The echoes of the broadcast agree: nobody is blamed.
	for i, conn := range conns {
		if err := conn.Close(nil); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
}

func TestQUIC(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, nil)
	defer c.close()
	if len(c.nodes[0].ListenAddrs()) == 0 {
		t.Skip("QUIC does not listen here")
	}
	conns := openAll(t, c, ids.NewSessionID())
	if err := conns[0].Send(context.Background(), c.nodes[1].Self(), []byte("over quic")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[1], 5*time.Second); string(m.Payload) != "over quic" {
		t.Fatalf("got %+v", m)
	}
}

func TestStrangerRefused(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	key, err := LoadOrCreateIdentity(filepath.Join(t.TempDir(), "stranger.key"))
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	target := c.nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = stranger.Connect(ctx, peer.AddrInfo{ID: target.ID(), Addrs: target.ListenAddrs()})
	if err == nil {
		// The handshake may complete on the stranger's side before the
		// member's gater closes it: then no stream may open.
		if _, serr := stranger.NewStream(ctx, target.ID(), ProtocolID); serr == nil {
			t.Fatal("stranger opened a session stream")
		}
	}
	target.waitLog(t, "refused connection from a non-member", 1)
	if target.Counters().Refused.Load() == 0 {
		t.Fatal("refusal not counted")
	}
	if got := len(target.Host().Network().ConnsToPeer(stranger.ID())); got != 0 {
		t.Fatalf("%d connections to the stranger remain", got)
	}
	// A member cannot dial the stranger either, even if told its address.
	target.Host().Peerstore().AddAddrs(stranger.ID(), stranger.Addrs(), peerstore.TempAddrTTL)
	if err := target.Host().Connect(ctx, peer.AddrInfo{ID: stranger.ID()}); err == nil {
		t.Fatal("member dialled a stranger")
	}
	if err := target.SetAddrs(stranger.ID(), stranger.Addrs()); err == nil {
		t.Fatal("SetAddrs made a stranger known")
	}
}

// rawStream opens a session stream from node from to node to, for writing
// hand-made frames.
func rawStream(t *testing.T, from, to *testNode) network.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := from.Host().NewStream(ctx, to.ID(), ProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeFrame(t *testing.T, s network.Stream, f *Frame) {
	t.Helper()
	raw := f.Encode()
	buf := binary.BigEndian.AppendUint32(nil, uint32(len(raw)))
	if _, err := s.Write(append(buf, raw...)); err != nil {
		t.Fatal(err)
	}
}

func TestSpoofedSenderDropped(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, nil)
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	sid := ids.NewSessionID()
	conns := openAll(t, c, sid)
	s := rawStream(t, b, a)
	defer s.Reset()

	// Signed by C itself, but arriving over B's authenticated connection.
	f := &Frame{Kind: KindDirect, Session: sid, Seq: 1, From: cc.ID(), To: a.ID(), Payload: []byte("forged by b, signed by c")}
	if err := f.Sign(cc.key); err != nil {
		t.Fatal(err)
	}
	writeFrame(t, s, f)
	// Claiming C, signed by B.
	g := &Frame{Kind: KindDirect, Session: sid, Seq: 2, From: cc.ID(), To: a.ID(), Payload: []byte("claims c")}
	if err := g.Sign(b.key); err != nil {
		t.Fatal(err)
	}
	writeFrame(t, s, g)
	// Claiming B, signed by C: a bad signature.
	h := &Frame{Kind: KindDirect, Session: sid, Seq: 3, From: b.ID(), To: a.ID(), Payload: []byte("bad sig")}
	if err := h.Sign(cc.key); err != nil {
		t.Fatal(err)
	}
	h.From = b.ID()
	writeFrame(t, s, h)
	// Finally an honest frame from B, which must be the first delivered.
	ok := &Frame{Kind: KindDirect, Session: sid, Seq: 4, From: b.ID(), To: a.ID(), Payload: []byte("honest")}
	if err := ok.Sign(b.key); err != nil {
		t.Fatal(err)
	}
	writeFrame(t, s, ok)

	m := recv(t, conns[0], 5*time.Second)
	if m.From != b.Self() || string(m.Payload) != "honest" {
		t.Fatalf("first delivered message is %q from %s", m.Payload, m.From)
	}
	if got := a.Counters().Dropped(DropSpoofedSender); got != 2 {
		t.Fatalf("spoofed drops = %d, want 2", got)
	}
	if got := a.Counters().Dropped(DropBadSignature); got != 1 {
		t.Fatalf("bad signature drops = %d, want 1", got)
	}
	expectDrained(t, conns[0])
}

func TestOversizedFrameRefusedBeforeAllocation(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	s := rawStream(t, b, a)
	defer s.Reset()

	// The claimed size is above MaxFrameSize but within the resource
	// manager's per-stream limit, so only our own check stands between it
	// and an allocation. TotalAlloc counts every allocation, however
	// short-lived, so a buffer made and dropped would show.
	const claimed = 12 << 20
	if claimed <= DefaultMaxFrameSize || claimed >= maxStreamMemory {
		t.Fatal("claimed size must lie between MaxFrameSize and the stream memory limit")
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], claimed)
	if _, err := s.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	s.SetWriteDeadline(time.Now().Add(5 * time.Second))
	s.Write(make([]byte, 64<<10)) // the start of the claimed frame; may fail once reset
	a.waitLog(t, "frame length out of bounds", 1)
	if got := a.Counters().Dropped(DropOversized); got != 1 {
		t.Fatalf("oversized drops = %d, want 1", got)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > claimed/2 {
		t.Fatalf("%d bytes allocated while refusing a frame claiming %d", grew, claimed)
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(s); err == nil {
		t.Fatal("stream was not reset")
	}
	// A fresh stream still works.
	sid := ids.NewSessionID()
	conns := openAll(t, c, sid)
	if err := conns[1].Send(context.Background(), a.Self(), []byte("after")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[0], 10*time.Second); string(m.Payload) != "after" {
		t.Fatalf("got %q", m.Payload)
	}
}

func TestSendRefusesOversizedPayload(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, func(cfg *Config) { cfg.MaxFrameSize = 4096 })
	defer c.close()
	conns := openAll(t, c, ids.NewSessionID())
	if err := conns[0].Send(context.Background(), c.nodes[1].Self(), make([]byte, 8192)); err == nil {
		t.Fatal("oversized payload sent")
	}
}

func TestEquivocationDetected(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, nil)
	defer c.close()
	a, cc := c.nodes[0], c.nodes[2]
	conns := openAll(t, c, ids.NewSessionID())
	// A sends one payload to B and another, validly signed, to C.
	hook := sendHook(func(to peer.ID, f *Frame, write func([]byte) error) error {
		if f.Kind == KindBroadcast && to == cc.ID() {
			g := *f
			g.Payload = []byte("round 1: evil")
			if err := g.Sign(a.key); err != nil {
				return err
			}
			return write(g.Encode())
		}
		return write(f.Encode())
	})
	a.tap.set(hook)
	if err := conns[0].Broadcast(context.Background(), []byte("round 1: honest")); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		select {
		case <-conns[i].Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("node %d did not detect the equivocation", i)
		}
		err := conns[i].Err()
		se, ok := tss.AsSessionError(err)
		if !ok || se.Kind != tss.FailMisbehaviour || len(se.Culprits) != 1 || se.Culprits[0] != a.Self() {
			t.Fatalf("node %d: got %v, want misbehaviour by %s", i, err, a.Self())
		}
		ev, ok := EvidenceOf(err)
		if !ok {
			t.Fatalf("node %d: no evidence in %v", i, err)
		}
		if err := ev.Verify(); err != nil {
			t.Fatalf("node %d: evidence does not verify: %v", i, err)
		}
		// The evidence survives encoding, as it would when sent to others.
		first, err1 := DecodeFrame(ev.First.Encode())
		second, err2 := DecodeFrame(ev.Second.Encode())
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if err := (&Evidence{Sender: ev.Sender, First: first, Second: second}).Verify(); err != nil {
			t.Fatalf("re-decoded evidence: %v", err)
		}
		if err := conns[i].Close(nil); err == nil {
			t.Fatalf("node %d: Close(nil) succeeded after equivocation", i)
		}
	}
	// Forged evidence does not verify.
	_, stranger := testKey(t)
	ev, _ := EvidenceOf(conns[1].Err())
	if err := ev.Verify(); err != nil {
		t.Fatal(err)
	}
	for name, forge := range map[string]func(e *Evidence){
		"sender": func(e *Evidence) { e.Sender = ids.MemberID(stranger.String()) },
		"signature": func(e *Evidence) {
			g := *e.Second
			g.Sig = bytes.Clone(g.Sig)
			g.Sig[0] ^= 1
			e.Second = &g
		},
		"slot": func(e *Evidence) {
			// Validly signed by the sender, but the next slot.
			g := *e.Second
			g.Seq++
			if err := g.Sign(a.key); err != nil {
				t.Fatal(err)
			}
			e.Second = &g
		},
		"same payload": func(e *Evidence) { e.Second = e.First },
	} {
		forged := *ev
		forge(&forged)
		if forged.Verify() == nil {
			t.Errorf("evidence with a forged %s verified", name)
		}
	}
}

func TestFramesBeforeOpenAreBuffered(t *testing.T) {
	// A long TTL: this part is about buffering, not expiry.
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, func(cfg *Config) {
		cfg.PendingFrames = 3
		cfg.PendingTTL = time.Hour
	})
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	sid := ids.NewSessionID()
	connB, err := b.Open(context.Background(), sid, c.ids())
	if err != nil {
		t.Fatal(err)
	}
	defer connB.Close(nil)
	for i := 0; i < 5; i++ {
		if err := connB.Send(context.Background(), a.Self(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	syncPeers(t, b, a)
	if _, n, _ := a.PendingStats(); n != 3 {
		t.Fatalf("%d frames buffered, want 3", n)
	}
	if got := a.Counters().Dropped(DropPendingFull); got != 2 {
		t.Fatalf("pending_full drops = %d, want 2", got)
	}
	connA, err := a.Open(context.Background(), sid, c.ids())
	if err != nil {
		t.Fatal(err)
	}
	defer connA.Close(nil)
	for i := 0; i < 3; i++ {
		if m := recv(t, connA, 5*time.Second); m.Payload[0] != byte(i) {
			t.Fatalf("buffered message %d is %v", i, m.Payload)
		}
	}
	if s, n, by := a.PendingStats(); s+n+by != 0 {
		t.Fatalf("pending after open: %d sessions, %d frames, %d bytes", s, n, by)
	}
}

func TestPendingFramesExpire(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, func(cfg *Config) { cfg.PendingTTL = 300 * time.Millisecond })
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	// Frames for a session never opened expire.
	other := ids.NewSessionID()
	connB2, err := b.Open(context.Background(), other, c.ids())
	if err != nil {
		t.Fatal(err)
	}
	defer connB2.Close(nil)
	if err := connB2.Send(context.Background(), a.Self(), []byte("late")); err != nil {
		t.Fatal(err)
	}
	// The janitor expires it after PendingTTL and logs it.
	a.waitLog(t, "expired frames of a session never opened here", 1)
	if got := a.Counters().Dropped(DropExpired); got != 1 {
		t.Fatalf("pending_expired drops = %d, want 1", got)
	}
	if s, _, _ := a.PendingStats(); s != 0 {
		t.Fatalf("%d pending sessions after expiry", s)
	}
}

func TestDuplicatesDropped(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, nil)
	defer c.close()
	a := c.nodes[0]
	conns := openAll(t, c, ids.NewSessionID())
	hook := sendHook(func(to peer.ID, f *Frame, write func([]byte) error) error {
		raw := f.Encode()
		if err := write(raw); err != nil {
			return err
		}
		return write(raw)
	})
	a.tap.set(hook)
	if err := conns[0].Broadcast(context.Background(), []byte("b")); err != nil {
		t.Fatal(err)
	}
	if err := conns[0].Send(context.Background(), c.nodes[1].Self(), []byte("d")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[1], 5*time.Second); string(m.Payload) != "b" {
		t.Fatalf("got %q", m.Payload)
	}
	if m := recv(t, conns[1], 5*time.Second); string(m.Payload) != "d" {
		t.Fatalf("got %q", m.Payload)
	}
	a.tap.set(nil)
	syncPeers(t, a, c.nodes[1]) // the second copies have been handled
	expectDrained(t, conns[1])
	if got := c.nodes[1].Counters().Dropped(DropDuplicate); got != 2 {
		t.Fatalf("duplicates dropped = %d, want 2", got)
	}
}

func TestRestartKeepsPeerID(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	before := c.nodes[0].ID()
	if err := c.nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	c.start(t, 0, nil)
	if c.nodes[0].ID() != before {
		t.Fatalf("peer id changed from %s to %s", before, c.nodes[0].ID())
	}
	// The restarted node is reachable under its old id.
	conns := openAll(t, c, ids.NewSessionID())
	if err := conns[1].Send(context.Background(), c.nodes[0].Self(), []byte("again")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[0], 5*time.Second); string(m.Payload) != "again" {
		t.Fatalf("got %q", m.Payload)
	}
}

func TestOpenRefusesNonMembers(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	_, stranger := testKey(t)
	memberIDs := append(c.ids(), ids.MemberID(stranger.String()))
	if _, err := c.nodes[0].Open(context.Background(), ids.NewSessionID(), memberIDs); err == nil {
		t.Fatal("opened a session with a stranger")
	}
	if _, err := c.nodes[0].Open(context.Background(), ids.NewSessionID(), c.ids()[1:]); err == nil {
		t.Fatal("opened a session without self")
	}
}
