package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// toyProto is a request protocol of the tests, registered beside the
// session protocol as the control protocol will be.
const toyProto protocol.ID = "/custos/toy/1.0.0"

// toyServer counts the requests its handler was called with.
type toyServer struct {
	calls atomic.Int32
}

// register serves toyProto on n with a request limit of limit bytes;
// handle, if set, answers instead of the echo.
func (ts *toyServer) register(t *testing.T, n *testNode, limit int, handle Handler) {
	t.Helper()
	err := n.RegisterHandler(toyProto, limit, func(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
		ts.calls.Add(1)
		if handle != nil {
			return handle(ctx, from, req)
		}
		return append([]byte("echo: "), req...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func toyStream(t *testing.T, from, to *testNode) network.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := from.Host().NewStream(ctx, to.ID(), toyProto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Reset() })
	return s
}

// expectReset checks that the other side reset s (and did not, say, close
// it cleanly or leave it open).
func expectReset(t *testing.T, s network.Stream) {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(s)
	if !errors.Is(err, network.ErrReset) {
		t.Fatalf("got %v, want the stream reset", err)
	}
}

func TestRequestResponse(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	var from atomic.Pointer[peer.ID]
	var ts toyServer
	ts.register(t, a, 1024, func(_ context.Context, p peer.ID, req []byte) ([]byte, error) {
		from.Store(&p)
		return append([]byte("echo: "), req...), nil
	})
	for _, req := range []string{"hello", ""} {
		resp, err := b.Request(context.Background(), a.ID(), toyProto, []byte(req), 1024)
		if err != nil {
			t.Fatal(err)
		}
		if string(resp) != "echo: "+req {
			t.Fatalf("got %q", resp)
		}
	}
	if p := from.Load(); p == nil || *p != b.ID() {
		t.Fatalf("handler saw the request from %v, want %s", p, b.ID())
	}
	// The session protocol runs beside it on the same hosts.
	conns := openAll(t, c, ids.NewSessionID())
	if err := conns[1].Send(context.Background(), a.Self(), []byte("frame")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[0], 10*time.Second); string(m.Payload) != "frame" {
		t.Fatalf("got %q", m.Payload)
	}
	// Registration takes versioned ids only, once each, never the session
	// protocol's, with a limit libp2p can reserve.
	for name, reg := range map[string]func() error{
		"unversioned": func() error { return a.RegisterHandler("/custos/ctl", 1024, nil) },
		"session":     func() error { return a.RegisterHandler(ProtocolID, 1024, nil) },
		"twice":       func() error { return a.RegisterHandler(toyProto, 1024, nil) },
		"no limit":    func() error { return a.RegisterHandler("/custos/other/1.0.0", 0, nil) },
		"huge limit":  func() error { return a.RegisterHandler("/custos/other/1.0.0", 32<<20, nil) },
	} {
		if reg() == nil {
			t.Errorf("%s: registered", name)
		}
	}
}

// A request over the limit resets the stream before anything is allocated
// for it, and the handler never sees it.
func TestRequestOverLimitRefusedBeforeAllocation(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	var ts toyServer
	ts.register(t, a, 1024, nil)

	if _, err := b.Request(context.Background(), a.ID(), toyProto, make([]byte, 1025), 1024); err == nil {
		t.Fatal("request over the limit answered")
	}

	// Within the resource manager's per-stream limit, so only the shell's
	// own check stands between the claim and an allocation.
	const claimed = 12 << 20
	s := toyStream(t, b, a)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := s.Write(binary.BigEndian.AppendUint32(nil, claimed)); err != nil {
		t.Fatal(err)
	}
	s.SetWriteDeadline(time.Now().Add(5 * time.Second))
	s.Write(make([]byte, 64<<10)) // may fail once reset
	expectReset(t, s)
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > claimed/2 {
		t.Fatalf("%d bytes allocated while refusing a request claiming %d", grew, claimed)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
	// A response over the caller's limit is refused the same way.
	if _, err := b.Request(context.Background(), a.ID(), toyProto, make([]byte, 1000), 16); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("got %v, want ErrMessageTooLarge for the response", err)
	}
}

// The server's deadline ends a handler that runs too long and a request
// that arrives too slowly; the caller's context ends its wait.
func TestRequestDeadlines(t *testing.T) {
	c := newClusterEach(t, t.TempDir(), 2, tcpLoopback, func(i int, cfg *Config) {
		if i == 0 {
			cfg.RequestTimeout = 300 * time.Millisecond
		}
	})
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	var ts toyServer
	handlerErr := make(chan error, 1)
	stop := make(chan struct{}) // a way out for a handler the deadline misses
	defer close(stop)
	ts.register(t, a, 1024, func(ctx context.Context, _ peer.ID, _ []byte) ([]byte, error) {
		select {
		case <-ctx.Done():
			handlerErr <- ctx.Err()
		case <-stop:
			handlerErr <- errors.New("handler context never ended")
		}
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Request(ctx, a.ID(), toyProto, []byte("block"), 1024); err == nil || ctx.Err() != nil {
		t.Fatalf("got %v before the server's deadline, want the server to end the exchange", err)
	}
	if err := <-handlerErr; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handler context ended with %v, want its deadline", err)
	}

	// A request that arrives too slowly is reset unhandled.
	calls := ts.calls.Load()
	s := toyStream(t, b, a)
	if _, err := s.Write(append(binary.BigEndian.AppendUint32(nil, 100), "ten bytes."...)); err != nil {
		t.Fatal(err)
	}
	expectReset(t, s)
	if got := ts.calls.Load(); got != calls {
		t.Fatal("handler called for a request that never arrived")
	}

	// The caller's own deadline, with the server's far off.
	if _, err := a.Request(context.Background(), b.ID(), toyProto, []byte("x"), 1024); err == nil {
		t.Fatal("request to a peer without the protocol succeeded")
	}
	release := make(chan struct{})
	defer close(release) // before c.close: Close waits for the handler
	var tsB toyServer
	tsB.register(t, b, 1024, func(ctx context.Context, _ peer.ID, _ []byte) ([]byte, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return []byte("late"), nil
	})
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := a.Request(ctx, b.ID(), toyProto, []byte("wait for release"), 1024); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the caller's deadline", err)
	}
}

// A handler's error resets the stream: the caller learns that it failed,
// not a partial answer.
func TestHandlerErrorResetsStream(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	var ts toyServer
	ts.register(t, a, 1024, func(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
		if string(req) == "fail" {
			return []byte("partial"), errors.New("inner failure")
		}
		return req, nil
	})
	_, err := b.Request(context.Background(), a.ID(), toyProto, []byte("fail"), 1024)
	if !errors.Is(err, network.ErrReset) {
		t.Fatalf("got %v, want a reset stream", err)
	}
	s := toyStream(t, b, a)
	if _, err := s.Write(append(binary.BigEndian.AppendUint32(nil, 4), "fail"...)); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(s)
	if !errors.Is(err, network.ErrReset) || bytes.Contains(got, []byte("partial")) {
		t.Fatalf("read %q, %v; want a reset and no answer", got, err)
	}
	// The next request is served.
	if resp, err := b.Request(context.Background(), a.ID(), toyProto, []byte("ok"), 1024); err != nil || string(resp) != "ok" {
		t.Fatalf("got %q, %v", resp, err)
	}
}

// A handler that panics resets its stream and leaves the node serving: one
// bad request must not take down a node that holds shares.
func TestHandlerPanicResetsStream(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	var ts toyServer
	ts.register(t, a, 1024, func(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
		if string(req) == "panic" {
			var m map[string]int
			m["x"]++ // a nil-map write: a real runtime panic
		}
		return req, nil
	})
	if _, err := b.Request(context.Background(), a.ID(), toyProto, []byte("panic"), 1024); !errors.Is(err, network.ErrReset) {
		t.Fatalf("got %v, want a reset stream", err)
	}
	if resp, err := b.Request(context.Background(), a.ID(), toyProto, []byte("ok"), 1024); err != nil || string(resp) != "ok" {
		t.Fatalf("after the panic: %q, %v", resp, err)
	}
}

// A peer that is not a member or coordinator is refused: by the gater, and
// by the shell for a peer removed while connected.
func TestRequestFromUnknownPeerRefused(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	var ts toyServer
	ts.register(t, a, 1024, nil)

	key, err := LoadOrCreateIdentity(filepath.Join(t.TempDir(), "stranger.key"))
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stranger.Peerstore().AddAddrs(a.ID(), a.ListenAddrs(), time.Hour)
	if s, err := stranger.NewStream(ctx, a.ID(), toyProto); err == nil {
		// The handshake may complete on the stranger's side first.
		writeMsg := append(binary.BigEndian.AppendUint32(nil, 2), "hi"...)
		s.Write(writeMsg)
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(s); err == nil {
			t.Fatal("stranger's request stream ended cleanly")
		}
		s.Reset()
	}
	if _, err := a.Request(ctx, stranger.ID(), toyProto, []byte("hi"), 1024); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("got %v, want ErrNotAllowed for a request to a stranger", err)
	}

	// B is removed at A; its request is refused even if a connection
	// survives long enough to open a stream.
	if _, err := b.Request(ctx, a.ID(), toyProto, []byte("before"), 1024); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPeers([]Member{{ID: a.ID()}}, nil); err != nil {
		t.Fatal(err)
	}
	calls := ts.calls.Load()
	if _, err := b.Request(ctx, a.ID(), toyProto, []byte("after"), 1024); err == nil {
		t.Fatal("a removed member's request was answered")
	}
	if got := ts.calls.Load(); got != calls {
		t.Fatal("handler called for a removed member")
	}
	if !strings.Contains(a.logs.String(), "refused connection from a non-member") {
		t.Fatal("refusal not logged")
	}
}

// The shell's admission check alone (the gater aside) refuses a stream
// from a peer that is not allowed: a connection that came up before
// SetPeers removed its peer cannot open streams afterwards.
func TestShellRefusesPeerNotAllowed(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	called := make(chan struct{}, 1)
	h := a.serve(toyProto, membersOnly, 0, func(context.Context, network.Stream, peer.ID) error {
		called <- struct{}{}
		return nil
	})
	a.Host().SetStreamHandler(toyProto, h)
	s := toyStream(t, b, a)
	s.Write([]byte{0})
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(s)
	select {
	case <-called:
	default:
		t.Fatal("a member was not admitted")
	}
	// Drop B from the set behind SetPeers' back: the connection stays.
	old := a.peers.Load()
	a.peers.Store(&peerSet{members: map[peer.ID]*peerOut{}, coordinators: map[peer.ID]bool{}})
	defer a.peers.Store(old)
	s = toyStream(t, b, a)
	s.Write([]byte{0})
	expectReset(t, s)
	select {
	case <-called:
		t.Fatal("the shell admitted a peer not in the set")
	default:
	}
	// A connection that comes up just after its peer's removal is closed
	// as libp2p reports it.
	conns := a.Host().Network().ConnsToPeer(b.ID())
	if len(conns) == 0 {
		t.Fatal("no connection to B")
	}
	refused := a.Counters().Refused.Load()
	for _, conn := range conns {
		a.connected(a.Host().Network(), conn)
	}
	if len(a.Host().Network().ConnsToPeer(b.ID())) != 0 || a.Counters().Refused.Load() != refused+uint64(len(conns)) {
		t.Fatal("connection of a peer not in the set left open")
	}
}

// The body of a frame must arrive within ReadTimeout, a setting of its own:
// a peer that sends a length and then trickles is reset, however long
// writes may take.
func TestReadTimeoutOwnSetting(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, func(cfg *Config) {
		cfg.WriteTimeout = time.Hour
		cfg.ReadTimeout = 200 * time.Millisecond
	})
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	if a.cfg.ReadTimeout != 200*time.Millisecond || a.cfg.WriteTimeout != time.Hour {
		t.Fatalf("timeouts %v and %v", a.cfg.ReadTimeout, a.cfg.WriteTimeout)
	}
	s := rawStream(t, b, a)
	defer s.Reset()
	if _, err := s.Write(append(binary.BigEndian.AppendUint32(nil, 100), "ten bytes."...)); err != nil {
		t.Fatal(err)
	}
	expectReset(t, s)
	if got := a.Counters().Received.Load(); got != 0 {
		t.Fatalf("%d frames handled", got)
	}
}
