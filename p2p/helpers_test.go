package p2p

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
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

// syncBuffer is a log sink that tests can read while nodes write to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testNode is one member host with what a test needs to restart it.
type testNode struct {
	*Node
	keyPath  string
	key      crypto.PrivKey
	logs     *syncBuffer
	sessions SessionRegistry // kept across restarts, as a node's store is
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
	node, err := New(cfg)
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

// expectNone checks that conn yields no message for a while.
func expectNone(tb testing.TB, conn tss.Conn, within time.Duration) {
	tb.Helper()
	select {
	case m := <-conn.Incoming():
		tb.Fatalf("unexpected message from %s: %q", m.From, m.Payload)
	case <-time.After(within):
	}
}

// waitFor polls cond until it holds or the time is up.
func waitFor(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustAddr(tb testing.TB, s string) ma.Multiaddr {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}
