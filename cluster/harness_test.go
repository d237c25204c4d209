package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/coordinator"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/tss"
	"github.com/goccy/go-yaml"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The harness: one coordinator and four nodes in this process, each with
// its own directory (configuration file, libp2p identity, store key file,
// badger data, admin socket) under one temporary root, listening on
// loopback ports chosen once so that a node or the coordinator restarted
// on its directory is found where the others expect it.

// nodeProc is one node of the cluster, running or stopped.
type nodeProc struct {
	name    string
	role    ids.Role
	dir     string
	cfgPath string
	port    int
	id      peer.ID
	gen     *fixtureGenerator

	mu     sync.Mutex
	n      *node.Node // nil while stopped; guarded by mu
	cancel context.CancelFunc
	done   chan error
}

// coordProc is the coordinator, running or stopped.
type coordProc struct {
	dir     string
	cfgPath string
	port    int
	id      peer.ID

	mu     sync.Mutex
	c      *coordinator.Coordinator // guarded by mu
	url    string
	cancel context.CancelFunc
	done   chan error
}

// cluster is the whole thing.
type cluster struct {
	w       *world
	root    string
	nodes   map[string]*nodeProc
	coord   *coordProc
	opToken string
	logOut  io.Writer
}

// logWriter is where the daemons log: nowhere unless CUSTOS_CLUSTER_LOG
// is set (to "1" for stderr, or a file path).
func logWriter() io.Writer {
	switch v := os.Getenv("CUSTOS_CLUSTER_LOG"); v {
	case "":
		return io.Discard
	case "1":
		return os.Stderr
	default:
		f, err := os.OpenFile(v, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return os.Stderr
		}
		return f
	}
}

func (c *cluster) logger(name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(c.logOut, &slog.HandlerOptions{Level: slog.LevelDebug})).With("daemon", name)
}

// freePorts reserves n loopback TCP ports by listening on port 0 and
// closing: the daemons then listen on them for the rest of the binary.
func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func addr(port int) string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port) }

// newCluster lays out every directory (node init for each node, an
// identity and a key file for the coordinator), writes the configuration
// files and starts everything.
func newCluster(w *world) (*cluster, error) {
	root, err := os.MkdirTemp("", "custos-cluster-")
	if err != nil {
		return nil, err
	}
	c := &cluster{w: w, root: root, nodes: map[string]*nodeProc{}, opToken: "op-" + randomHex(16), logOut: logWriter()}
	ports, err := freePorts(len(memberNames) + 1)
	if err != nil {
		return nil, err
	}
	guardianOf := map[string]string{
		nameGuardian1: w.guardianAddr(w.alice).Hex(),
		nameGuardian2: w.guardianAddr(w.bob).Hex(),
	}
	for i, name := range memberNames {
		p := &nodeProc{name: name, role: memberRoles[name], dir: filepath.Join(root, name), port: ports[i],
			gen: &fixtureGenerator{list: fixtureOrder[name], name: name}}
		opts := node.InitOptions{Role: p.role, Listen: []string{addr(p.port)}, GenesisHash: w.walletID}
		switch p.role {
		case ids.RoleAgent:
			opts.Agent = agentBot
		case ids.RoleGuardian:
			opts.Guardian, _ = ids.ParseAddress(guardianOf[name])
		}
		cfg, path, err := node.Init(p.dir, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		p.cfgPath = path
		p.id, err = peer.Decode(cfg.Members[0].PeerID)
		if err != nil {
			return nil, fmt.Errorf("%s: init wrote peer id %q: %w", name, cfg.Members[0].PeerID, err)
		}
		c.nodes[name] = p
	}
	cp := &coordProc{dir: filepath.Join(root, "coordinator"), port: ports[len(memberNames)]}
	if err := os.MkdirAll(cp.dir, 0o700); err != nil {
		return nil, err
	}
	key, err := p2p.LoadOrCreateIdentity(filepath.Join(cp.dir, "identity.key"))
	if err != nil {
		return nil, err
	}
	if cp.id, err = peer.IDFromPrivateKey(key); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cp.dir, "store.key"), []byte(randomHex(32)+"\n"), 0o600); err != nil {
		return nil, err
	}
	c.coord = cp
	for _, name := range memberNames {
		if err := c.writeNodeConfig(c.nodes[name], guardianOf[name]); err != nil {
			return nil, err
		}
	}
	if err := c.writeCoordinatorConfig(); err != nil {
		return nil, err
	}
	for _, name := range memberNames {
		if err := c.startNode(name); err != nil {
			c.close()
			return nil, err
		}
	}
	if err := c.startCoordinator(); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// members is the member list of every configuration.
func (c *cluster) members() []node.PeerConfig {
	var out []node.PeerConfig
	for _, name := range memberNames {
		p := c.nodes[name]
		out = append(out, node.PeerConfig{PeerID: p.id.String(), Addrs: []string{addr(p.port)}, Role: string(p.role)})
	}
	return out
}

// writeNodeConfig replaces the starter configuration node init wrote with
// the cluster's: the same identity, key file and data directory, every
// member, the coordinator, the pinned genesis, a pool that draws one
// fixture at a time.
func (c *cluster) writeNodeConfig(p *nodeProc, guardian string) error {
	cfg := node.Config{
		Role:         string(p.role),
		DataDir:      "data",
		IdentityFile: "identity.key",
		Listen:       []string{addr(p.port)},
		Members:      c.members(),
		Coordinators: []node.PeerConfig{{PeerID: c.coord.id.String(), Addrs: []string{addr(c.coord.port)}}},
		Admin:        node.AdminConfig{Socket: "admin.sock"},
		StoreKey:     node.StoreKeyConfig{File: "store.key"},
		Genesis:      node.GenesisConfig{Hash: c.w.walletID.Hex()},
		Pool:         node.PoolConfig{Target: 1, Concurrency: 1},
		Log:          node.LogConfig{Level: "debug", Format: "text"},
	}
	switch p.role {
	case ids.RoleAgent:
		cfg.Agent = string(agentBot)
	case ids.RoleGuardian:
		cfg.Guardian = guardian
	}
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(p.cfgPath, b, 0o600)
}

func (c *cluster) writeCoordinatorConfig() error {
	cp := c.coord
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: data\nstore_key: {file: store.key}\nidentity: %s\n", filepath.Join(cp.dir, "identity.key"))
	fmt.Fprintf(&b, "listen: [%q]\nhttp: {listen: \"127.0.0.1:0\"}\nmembers:\n", addr(cp.port))
	for _, m := range c.members() {
		fmt.Fprintf(&b, "  - {id: %s, role: %s, addrs: [%q]}\n", m.PeerID, m.Role, m.Addrs[0])
	}
	fmt.Fprintf(&b, "operators:\n  - {name: ops, token: %q}\n", c.opToken)
	// Generous agent limits: the tests submit in bursts.
	fmt.Fprintf(&b, "rate_limits: {agent: {per_second: 50, burst: 200}, operator: {per_second: 50, burst: 200}, anonymous: {per_second: 50, burst: 200}}\n")
	fmt.Fprintf(&b, "chain: {chain_id: %d}\npolicy: {genesis_hash: %q}\nlog_level: debug\n", simChainID, c.w.walletID.Hex())
	cp.cfgPath = filepath.Join(cp.dir, "coordinator.yaml")
	return os.WriteFile(cp.cfgPath, []byte(b.String()), 0o600)
}

// startNode loads the node's configuration file and runs it.
func (c *cluster) startNode(name string) error {
	p := c.nodes[name]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n != nil {
		return fmt.Errorf("%s is running", name)
	}
	cfg, err := node.LoadConfig(p.cfgPath, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	// A member gone mid-session is given up on after 30s rather than the
	// engine's 60s: the crash tests wait for it.
	n, err := node.New(cfg, node.Options{Logger: c.logger(name), Generate: p.gen.Generate, TSS: tss.Config{IdleTimeout: 30 * time.Second}})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if n.ID() != p.id {
		n.Close()
		return fmt.Errorf("%s: runs as %s, init wrote %s", name, n.ID(), p.id)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.n, p.cancel, p.done = n, cancel, make(chan error, 1)
	go func(done chan error) { done <- n.Run(ctx) }(p.done)
	// Run opens the admin socket in the background: wait until it takes
	// connections, so that no test dials it too early.
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	sock := filepath.Join(p.dir, "admin.sock")
	return waitFor(wctx, 20*time.Millisecond, func() (bool, error) {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	})
}

// stopNode ends the node's Run and waits until it closed its store.
func (c *cluster) stopNode(name string) error {
	p := c.nodes[name]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		return nil
	}
	p.cancel()
	err := <-p.done
	p.n = nil
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// node returns a running node.
func (c *cluster) node(name string) *node.Node {
	p := c.nodes[name]
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (c *cluster) memberID(name string) ids.MemberID { return ids.MemberID(c.nodes[name].id.String()) }

func (c *cluster) nameOf(m ids.MemberID) string {
	for _, name := range memberNames {
		if c.memberID(name) == m {
			return name
		}
	}
	return string(m)
}

func (c *cluster) adminSocket(name string) string {
	return filepath.Join(c.nodes[name].dir, "admin.sock")
}

func (c *cluster) startCoordinator() error {
	cp := c.coord
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.c != nil {
		return errors.New("coordinator is running")
	}
	cfg, err := coordinator.LoadConfig(cp.cfgPath, nil)
	if err != nil {
		return err
	}
	co, err := coordinator.New(cfg, coordinator.Options{Logger: c.logger("coordinator"), Chain: c.w.sim.Client()})
	if err != nil {
		return err
	}
	if co.ID() != cp.id {
		co.Close()
		return fmt.Errorf("coordinator runs as %s, its identity file says %s", co.ID(), cp.id)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cp.c, cp.url, cp.cancel, cp.done = co, co.URL(), cancel, make(chan error, 1)
	go func(done chan error) { done <- co.Run(ctx) }(cp.done)
	return nil
}

func (c *cluster) stopCoordinator() error {
	cp := c.coord
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.c == nil {
		return nil
	}
	cp.cancel()
	err := <-cp.done
	cp.c = nil
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// url is the running coordinator's REST base URL.
func (c *cluster) url() string {
	c.coord.mu.Lock()
	defer c.coord.mu.Unlock()
	return c.coord.url
}

func (c *cluster) close() {
	c.stopCoordinator()
	for _, name := range memberNames {
		c.stopNode(name)
	}
	os.RemoveAll(c.root)
}

// waitFor polls cond until it holds or the deadline passes: for state the
// daemons reach in their own time (a keygen, a signature). The deadline
// is a bound on a hang, not a timed assertion.
func waitFor(ctx context.Context, every time.Duration, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// unixDialer dials a unix socket whatever the address asked for.
func unixDialer(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}
