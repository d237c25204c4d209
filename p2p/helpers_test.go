package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

func TestMain(m *testing.M) {
	code := m.Run()
	teardownShared()
	if code == 0 {
		// go-log starts this at init, not our nodes.
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/ipfs/go-log/writer.(*MirrorWriter).logRoutine")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// syncBuffer is a log sink that tests can read, and wait on, while nodes
// write to it.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed (and replaced) on every write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// count returns how many times substr occurs in the log, and a channel
// closed at the next write.
func (s *syncBuffer) count(substr string) (int, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return strings.Count(s.b.String(), substr), s.changed
}

// waitLog waits until the node has logged substr at least n times. Nodes
// count a drop or a refusal before they log it, so the count holds by then.
// The time limit only keeps a broken test from hanging.
func (t *testNode) waitLog(tb testing.TB, substr string, n int) {
	tb.Helper()
	limit := time.After(20 * time.Second)
	for {
		got, changed := t.logs.count(substr)
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-limit:
			tb.Fatalf("the node logged %q %d times, waited for %d", substr, got, n)
		}
	}
}

// testNode is one member host with what a test needs to restart it.
type testNode struct {
	*Node
	keyPath  string
	key      crypto.PrivKey
	logs     *syncBuffer
	sessions SessionRegistry // kept across restarts, as a node's store is
	tap      *tap            // faults on the frames it writes (see tap_test.go)
}

// cluster is a set of member nodes on loopback that know each other.
type cluster struct {
	nodes   []*testNode
	members []Member
	listen  []string
}

func (c *cluster) ids() []ids.MemberID {
	memberIDs := make([]ids.MemberID, len(c.nodes))
	for i, n := range c.nodes {
		memberIDs[i] = n.Self()
	}
	return memberIDs
}

// newCluster starts n member nodes (plus, in the member list, the extra
// peers given), each with its own identity file under dir.
func newCluster(tb testing.TB, dir string, n int, listen []string, tune func(*Config)) *cluster {
	tb.Helper()
	return newClusterEach(tb, dir, n, listen, func(_ int, cfg *Config) {
		if tune != nil {
			tune(cfg)
		}
	})
}

// newClusterEach is newCluster with a configuration tweak per node index.
func newClusterEach(tb testing.TB, dir string, n int, listen []string, tune func(i int, cfg *Config)) *cluster {
	tb.Helper()
	c := &cluster{listen: listen}
	for i := 0; i < n; i++ {
		path := filepath.Join(dir, fmt.Sprintf("node%d", i), "identity.key")
		key, err := LoadOrCreateIdentity(path)
		if err != nil {
			tb.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(key)
		c.nodes = append(c.nodes, &testNode{keyPath: path, key: key, logs: new(syncBuffer), sessions: NewMemorySessionRegistry()})
		c.members = append(c.members, Member{ID: id})
	}
	for i := range c.nodes {
		c.start(tb, i, func(cfg *Config) { tune(i, cfg) })
	}
	if t, ok := tb.(*testing.T); ok {
		t.Cleanup(func() {
			if t.Failed() {
				for i, n := range c.nodes {
					t.Logf("node %d logs:\n%s", i, n.logs.String())
				}
			}
		})
	}
	return c
}

// start (re)starts node i from its identity file and tells the others its
// new addresses.
func (c *cluster) start(tb testing.TB, i int, tune func(*Config)) {
	tb.Helper()
	t := c.nodes[i]
	key, err := LoadIdentity(t.keyPath)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := Config{
		Identity:    key,
		ListenAddrs: c.listen,
		Members:     c.members,
		Sessions:    t.sessions,
		Logger:      slog.New(slog.NewTextHandler(t.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tune != nil {
		tune(&cfg)
	}
	t.tap = new(tap)
	node, err := newNode(cfg, t.tap.wrap)
	if err != nil {
		tb.Fatal(err)
	}
	t.Node = node
	for j, o := range c.nodes {
		if j == i || o.Node == nil {
			continue
		}
		if err := o.SetAddrs(node.ID(), node.ListenAddrs()); err != nil {
			tb.Fatal(err)
		}
		if err := node.SetAddrs(o.ID(), o.ListenAddrs()); err != nil {
			tb.Fatal(err)
		}
	}
}

func (c *cluster) close() {
	for _, n := range c.nodes {
		if n.Node != nil {
			n.Close()
		}
	}
}

var tcpLoopback = []string{"/ip4/127.0.0.1/tcp/0"}

// openAll opens session id on every node of c with all of c as members.
func openAll(tb testing.TB, c *cluster, id ids.SessionID) []tss.Conn {
	tb.Helper()
	conns := make([]tss.Conn, len(c.nodes))
	for i, n := range c.nodes {
		conn, err := n.Open(context.Background(), id, c.ids())
		if err != nil {
			tb.Fatal(err)
		}
		conns[i] = conn
	}
	tb.Cleanup(func() {
		for _, conn := range conns {
			conn.Close(nil)
		}
	})
	return conns
}

// recv waits for one message on conn.
func recv(tb testing.TB, conn tss.Conn, within time.Duration) tss.Incoming {
	tb.Helper()
	select {
	case m := <-conn.Incoming():
		return m
	case <-conn.Done():
		tb.Fatalf("session ended: %v", conn.Err())
	case <-time.After(within):
		tb.Fatalf("no message within %v", within)
	}
	return tss.Incoming{}
}

// expectDrained checks that conn holds no message for the engine: none
// queued, none in the pump's hands. Callers first make sure that every
// frame they sent was handled (syncPeers, syncRaw), so that no message can
// still be on its way.
func expectDrained(tb testing.TB, conn tss.Conn) {
	tb.Helper()
	s := sessionOf(conn)
	s.mu.Lock()
	queued, n := s.m.queued, len(s.queue)
	s.mu.Unlock()
	if queued != 0 || n != 0 {
		tb.Fatalf("session holds %d messages for the engine (%d queued)", queued, n)
	}
	select {
	case m := <-conn.Incoming():
		tb.Fatalf("unexpected message from %s: %q", m.From, m.Payload)
	default:
	}
}

// syncPeers returns once every frame that from queued for to before the
// call has been handled at to: it sends a frame of a new session of the
// two over the same outbound queue and stream, and waits for it at to,
// which reads that stream in order.
func syncPeers(tb testing.TB, from, to *testNode) {
	tb.Helper()
	sid := ids.NewSessionID()
	members := []ids.MemberID{from.Self(), to.Self()}
	cf, err := from.Open(context.Background(), sid, members)
	if err != nil {
		tb.Fatal(err)
	}
	defer cf.Close(nil)
	ct, err := to.Open(context.Background(), sid, members)
	if err != nil {
		tb.Fatal(err)
	}
	defer ct.Close(nil)
	if err := cf.Send(context.Background(), to.Self(), []byte("sync")); err != nil {
		tb.Fatal(err)
	}
	if m := recv(tb, ct, 20*time.Second); string(m.Payload) != "sync" {
		tb.Fatalf("sync got %q", m.Payload)
	}
}

// syncRaw returns once every frame written on s, a raw session stream
// from from to to, has been handled at to, in the same way as syncPeers.
func syncRaw(tb testing.TB, s network.Stream, from, to *testNode) {
	tb.Helper()
	sid := ids.NewSessionID()
	ct, err := to.Open(context.Background(), sid, []ids.MemberID{from.Self(), to.Self()})
	if err != nil {
		tb.Fatal(err)
	}
	defer ct.Close(nil)
	f := &Frame{Kind: KindDirect, Session: sid, Seq: 1, From: from.ID(), To: to.ID(), Payload: []byte("sync")}
	if err := f.Sign(from.key); err != nil {
		tb.Fatal(err)
	}
	raw := f.Encode()
	if _, err := s.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(raw))), raw...)); err != nil {
		tb.Fatal(err)
	}
	if m := recv(tb, ct, 20*time.Second); string(m.Payload) != "sync" {
		tb.Fatalf("sync got %q", m.Payload)
	}
}

// waitDisconnected waits until h has no connection to p, checking again at
// every disconnection h reports.
func waitDisconnected(tb testing.TB, h host.Host, p peer.ID) {
	tb.Helper()
	gone := make(chan struct{}, 1)
	nb := &network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) {
		if c.RemotePeer() == p {
			select {
			case gone <- struct{}{}:
			default:
			}
		}
	}}
	h.Network().Notify(nb)
	defer h.Network().StopNotify(nb)
	limit := time.After(20 * time.Second)
	for len(h.Network().ConnsToPeer(p)) > 0 {
		select {
		case <-gone:
		case <-limit:
			tb.Fatalf("%d connections to %s remain", len(h.Network().ConnsToPeer(p)), p)
		}
	}
}

func mustAddr(tb testing.TB, s string) ma.Multiaddr {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}
