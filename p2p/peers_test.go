package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

// extraNode starts a node outside cluster c, with its own member and
// coordinator lists, and registers its close with t.
func extraNode(t *testing.T, name string, members, coordinators []Member) *testNode {
	t.Helper()
	path := filepath.Join(t.TempDir(), name, "identity.key")
	key, err := LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{keyPath: path, key: key, logs: new(syncBuffer), sessions: NewMemorySessionRegistry()}
	id, _ := peer.IDFromPrivateKey(key)
	node, err := New(Config{
		Identity:     key,
		ListenAddrs:  tcpLoopback,
		Members:      append(slices.Clone(members), Member{ID: id}),
		Coordinators: coordinators,
		Sessions:     tn.sessions,
		Logger:       slog.New(slog.NewTextHandler(tn.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = node
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, tn.logs.String())
		}
		node.Close()
	})
	return tn
}

// info is n as a Member with its current addresses.
func info(n *testNode) Member { return Member{ID: n.ID(), Addrs: n.ListenAddrs()} }

func memberIDs(ns ...*testNode) []ids.MemberID {
	memberIDs := make([]ids.MemberID, len(ns))
	for i, n := range ns {
		memberIDs[i] = n.Self()
	}
	return memberIDs
}

func openOn(t *testing.T, sid ids.SessionID, ns ...*testNode) []tss.Conn {
	t.Helper()
	conns := make([]tss.Conn, len(ns))
	for i, n := range ns {
		conn, err := n.Open(context.Background(), sid, memberIDs(ns...))
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = conn
		t.Cleanup(func() { conn.Close(nil) })
	}
	return conns
}

// A member added while the hosts run is admitted; a member removed while
// they run has its connections closed, its open sessions failed and is
// refused afterwards, while the others go on.
func TestMembershipChangesAtRunTime(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	// C knows A and B from the start; they do not know C yet.
	cc := extraNode(t, "c", []Member{info(a), info(b)}, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	refused := a.Counters().Refused.Load()
	if err := cc.Host().Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.ListenAddrs()}); err == nil {
		// The handshake may complete on C's side before A's gater closes it.
		if _, err := cc.Host().NewStream(ctx, a.ID(), ProtocolID); err == nil {
			t.Fatal("a peer not yet a member opened a session stream")
		}
	}
	a.waitLog(t, "refused connection from a non-member", 1)
	if a.Counters().Refused.Load() <= refused {
		t.Fatal("refusal of C not counted")
	}
	if a.PeerKind(cc.ID()) != PeerUnknown {
		t.Fatal("C known before it was added")
	}
	if _, err := a.Open(context.Background(), ids.NewSessionID(), memberIDs(a, b, cc)); err == nil {
		t.Fatal("opened a session with a peer not yet a member")
	}

	// The reshare adds C: no restart.
	for _, n := range []*testNode{a, b} {
		if err := n.SetPeers([]Member{info(a), info(b), info(cc)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if a.PeerKind(cc.ID()) != PeerMember {
		t.Fatalf("C is %v at A after SetPeers", a.PeerKind(cc.ID()))
	}
	conns := openOn(t, ids.NewSessionID(), a, b, cc)
	if err := conns[2].Broadcast(context.Background(), []byte("from the new member")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if m := recv(t, conns[i], 10*time.Second); m.From != cc.Self() || string(m.Payload) != "from the new member" {
			t.Fatalf("node %d got %+v", i, m)
		}
	}
	if err := conns[0].Send(context.Background(), cc.Self(), []byte("welcome")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[2], 10*time.Second); string(m.Payload) != "welcome" {
		t.Fatalf("C got %q", m.Payload)
	}
	if len(a.Host().Network().ConnsToPeer(cc.ID())) == 0 {
		t.Fatal("no connection between A and C to close")
	}

	// A second reshare removes C again, at A only: A closes its
	// connections, fails the session C is in, and refuses C from now on.
	if err := a.SetPeers([]Member{info(a), info(b)}, nil); err != nil {
		t.Fatal(err)
	}
	waitDisconnected(t, a.Host(), cc.ID())
	select {
	case <-conns[0].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("A's session with the removed member still runs")
	}
	if se, ok := tss.AsSessionError(conns[0].Err()); !ok || se.Kind != tss.FailTransport || !slices.Equal(se.Waiting, []ids.MemberID{cc.Self()}) {
		t.Fatalf("A: got %v, want a transport failure naming C", conns[0].Err())
	}
	if _, err := a.Open(context.Background(), ids.NewSessionID(), memberIDs(a, cc)); err == nil || !strings.Contains(err.Error(), "not a configured member") {
		t.Fatalf("got %v, want a refusal of the removed member", err)
	}
	if err := a.SetAddrs(cc.ID(), cc.ListenAddrs()); err == nil {
		t.Fatal("SetAddrs took the removed member")
	}
	// C still counts A as a member; its dial is refused by A's gater and
	// no frame of it reaches A.
	waitDisconnected(t, cc.Host(), a.ID())
	refused = a.Counters().Refused.Load()
	refusals, _ := a.logs.count("refused connection from a non-member")
	if err := cc.Host().Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.ListenAddrs()}); err == nil {
		if s, err := cc.Host().NewStream(ctx, a.ID(), ProtocolID); err == nil {
			writeFrame(t, s, signed(t, cc.key, &Frame{Kind: KindDirect, Session: ids.NewSessionID(), Seq: 1, From: cc.ID(), To: a.ID(), Payload: []byte("after removal")}))
			s.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := s.Read(make([]byte, 1)); err == nil {
				t.Fatal("session stream of a removed member stays open")
			}
		}
	}
	a.waitLog(t, "refused connection from a non-member", refusals+1)
	if a.Counters().Refused.Load() <= refused {
		t.Fatal("refusal of the removed member not counted")
	}
	// Had A handled C's frame, for a session not open there, it would
	// hold it for that session.
	if s, n, _ := a.PendingStats(); s != 0 || n != 0 {
		t.Fatalf("A holds %d frames of %d sessions after C's removal", n, s)
	}
	// A and B go on.
	ab := openOn(t, ids.NewSessionID(), a, b)
	if err := ab[1].Send(context.Background(), a.Self(), []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ab[0], 10*time.Second); string(m.Payload) != "still here" {
		t.Fatalf("A got %q", m.Payload)
	}
}

// A coordinator may connect and use request protocols, but is never a
// member of a session: Open refuses it and its session streams are reset
// unread.
func TestCoordinatorIsNotASessionMember(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	k := extraNode(t, "coordinator", []Member{info(a), info(b)}, nil)
	if err := a.SetPeers(c.members, []Member{info(k)}); err != nil {
		t.Fatal(err)
	}
	if a.PeerKind(k.ID()) != PeerCoordinator {
		t.Fatalf("K is %v at A", a.PeerKind(k.ID()))
	}
	if _, err := a.Open(context.Background(), ids.NewSessionID(), memberIDs(a, k)); err == nil || !strings.Contains(err.Error(), "coordinator") {
		t.Fatalf("got %v, want a refusal of the coordinator as a session member", err)
	}
	if err := a.SetPeers(c.members, []Member{{ID: b.ID()}}); err == nil {
		t.Fatal("a peer was taken as a member and a coordinator")
	}

	// A session stream from K is reset unread, even for a session A
	// has open.
	sid := ids.NewSessionID()
	connA, err := a.Open(context.Background(), sid, memberIDs(a, b))
	if err != nil {
		t.Fatal(err)
	}
	defer connA.Close(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := k.Host().NewStream(ctx, a.ID(), ProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	writeFrame(t, s, signed(t, k.key, &Frame{Kind: KindDirect, Session: sid, Seq: 1, From: k.ID(), To: a.ID(), Payload: []byte("from a coordinator")}))
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, network.ErrReset) {
		t.Fatalf("coordinator's session stream: got %v, want a reset", err)
	}
	if got := a.Counters().Received.Load(); got != 0 {
		t.Fatalf("A handled %d frames from the coordinator", got)
	}
	expectDrained(t, connA)

	// The same coordinator is served on a request protocol.
	const proto = "/custos/test/1.0.0"
	if err := a.RegisterHandler(proto, 1024, func(_ context.Context, from peer.ID, req []byte) ([]byte, error) {
		return fmt.Appendf(nil, "%s from %s", req, a.PeerKind(from)), nil
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := k.Request(ctx, a.ID(), proto, []byte("propose"), 1024)
	if err != nil {
		t.Fatal(err)
	}
	if string(resp) != "propose from coordinator" {
		t.Fatalf("got %q", resp)
	}
}

// A request a peer made before SetPeers removed it does not go on running
// at this node on that peer's behalf (a propose reserving budget for a
// coordinator that is gone, say): its handler's context ends with the
// removal, not at Config.RequestTimeout.
func TestRemovedPeerHandlerContextEnds(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, func(cfg *Config) { cfg.RequestTimeout = 30 * time.Second })
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	started := make(chan struct{})
	cause := make(chan error, 1)
	var ts toyServer
	ts.register(t, a, 1024, func(ctx context.Context, _ peer.ID, _ []byte) ([]byte, error) {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	go b.Request(context.Background(), a.ID(), toyProto, []byte("propose"), 1024)
	<-started
	if err := a.SetPeers([]Member{info(a)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-cause; !errors.Is(err, ErrPeerRemoved) {
		t.Fatalf("handler's context ended with %v, want %v", err, ErrPeerRemoved)
	}
}

// Frames a member sent for sessions not yet open here leave the pre-open
// buffer when SetPeers removes it: they can never be delivered, and left
// until PendingTTL they would hold buffer room the remaining members need.
func TestRemovedMemberPendingFramesDropped(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, tcpLoopback, nil)
	defer c.close()
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := cc.Host().NewStream(ctx, a.ID(), ProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	for seq := range uint64(4) {
		writeFrame(t, s, signed(t, cc.key, &Frame{Kind: KindDirect, Session: ids.NewSessionID(), Seq: seq + 1, From: cc.ID(), To: a.ID(), Payload: []byte("early")}))
	}
	syncRaw(t, s, cc, a)
	if _, n, _ := a.PendingStats(); n != 4 {
		t.Fatalf("%d of C's frames buffered at A, want 4", n)
	}
	if err := a.SetPeers([]Member{info(a), info(b)}, nil); err != nil {
		t.Fatal(err)
	}
	if s, n, bytes := a.PendingStats(); s != 0 || n != 0 || bytes != 0 {
		t.Fatalf("A holds %d frames (%d bytes) of %d sessions from the removed member", n, bytes, s)
	}
	// A frame read before the swap and handled after it is not buffered
	// either.
	a.handleFrame(cc.ID(), signed(t, cc.key, &Frame{Kind: KindDirect, Session: ids.NewSessionID(), Seq: 1, From: cc.ID(), To: a.ID(), Payload: []byte("late")}).Encode())
	if s, n, _ := a.PendingStats(); s != 0 || n != 0 {
		t.Fatalf("A buffered %d frames of %d sessions from the removed member after the swap", n, s)
	}
}
