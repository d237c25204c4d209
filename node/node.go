package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// Options are what a node takes from its caller rather than its
// configuration file.
type Options struct {
	Logger *slog.Logger
	// Generate makes pre-parameters; nil is tss.GeneratePreParams. Tests
	// pass fixtures.
	Generate tss.Generator
	// Now is the node's clock; nil is time.Now.
	Now func() time.Time
	// Registerer receives the node's metrics; nil is a fresh registry.
	Registerer prometheus.Registerer
	// Getenv reads the passphrase variable of a passphrase key source; nil
	// is os.Getenv.
	Getenv func(string) string
	// TSS tunes the threshold engine (idle timeout and tick); zero takes
	// its defaults.
	TSS tss.Config
}

// Node is a running Custos node: its store, its libp2p host, its share of
// every key it holds, its policy engine and the control protocol it
// serves to coordinators.
type Node struct {
	// Immutable after New.
	cfg      *Config
	set      *parsedSettings
	log      *slog.Logger
	now      func() time.Time
	st       *store.Store
	p2p      *p2p.Node
	tss      *tss.Engine
	pool     *tss.Pool
	metrics  *metrics
	registry prometheus.Registerer
	gatherer prometheus.Gatherer
	self     ids.MemberID

	sessionTimeout time.Duration
	keygenTimeout  time.Duration

	// ctx ends when the node closes; every background goroutine watches it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// policyMu serialises changes of the policy engine and the state
	// snapshots taken after them.
	policyMu sync.Mutex

	mu sync.Mutex
	// engine is nil until the first policy document arrives. Guarded by mu.
	engine *policy.Engine
	// sessions are the sessions proposed, running or finished in this
	// process. Guarded by mu.
	sessions map[ids.SessionID]*session
	// requests maps a request to its newest session here. Guarded by mu.
	requests map[ids.RequestID]ids.SessionID
	// busy marks requests whose proposal is being checked. Guarded by mu.
	busy map[ids.RequestID]bool
	// started holds, with their expiry, the requests a signing session of
	// this process started for and that are not signed: their reservation
	// may have been used, whatever a journal record read before the start
	// says (a start writes nothing). An entry goes when the request is
	// signed, or in the sweep once the request expired (no proposal of it
	// passes the checks after that). Guarded by mu.
	started map[ids.RequestID]time.Time
	// queue is the guardian queue: requests waiting for this node's human.
	// Guarded by mu.
	queue  map[ids.RequestID]*queued
	closed bool
}

// New opens the node's store (refusing a sealed store or a wrong key),
// reloads its policy, state and journal, starts its libp2p host and
// registers the control protocol. Run serves until its context ends.
func New(cfg *Config, opts Options) (*Node, error) {
	if cfg.parsed == nil {
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("node: configuration: %w", err)
		}
	}
	if cfg.parsed.genesis.Hash == ([32]byte{}) && len(cfg.parsed.genesis.Guardians) == 0 {
		return nil, errors.New("node: configuration: genesis is not pinned")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	reg := opts.Registerer
	var gatherer prometheus.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, gatherer = r, r
	} else if g, ok := reg.(prometheus.Gatherer); ok {
		gatherer = g
	}
	n := &Node{
		cfg: cfg, set: cfg.parsed, log: log, now: now, registry: reg, gatherer: gatherer,
		sessions: map[ids.SessionID]*session{},
		requests: map[ids.RequestID]ids.SessionID{},
		busy:     map[ids.RequestID]bool{},
		started:  map[ids.RequestID]time.Time{},
		queue:    map[ids.RequestID]*queued{},
	}
	n.sessionTimeout = durationOr(cfg.Timeouts.Session, 2*time.Minute)
	n.keygenTimeout = durationOr(cfg.Timeouts.Keygen, 10*time.Minute)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			n.cancel()
			if n.p2p != nil {
				n.p2p.Close()
			}
			if n.st != nil {
				n.st.Close()
			}
		}
	}()

	st, err := store.Open(cfg.path(cfg.DataDir), cfg.keySource(getenv), store.Options{Logger: log.With("component", "store")})
	if err != nil {
		return nil, fmt.Errorf("node: open store: %w", err)
	}
	n.st = st
	key, err := p2p.LoadIdentity(cfg.path(cfg.IdentityFile))
	if err != nil {
		return nil, fmt.Errorf("node: identity: %w", err)
	}
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("node: identity: %w", err)
	}
	n.self = ids.MemberID(self.String())
	if r, listed := n.set.memberRoles[n.self]; listed && r != n.set.role {
		return nil, fmt.Errorf("node: configuration: members lists this node (%s) as %s, but its role is %s", n.self, r, n.set.role)
	}
	if n.metrics, err = newMetrics(reg); err != nil {
		return nil, fmt.Errorf("node: metrics: %w", err)
	}
	if err := n.loadPolicy(n.ctx); err != nil {
		return nil, err
	}
	gen := opts.Generate
	if !cfg.Pool.Generates() {
		gen = importedOnly
	}
	n.pool, err = tss.NewPool(n.ctx, tss.PoolConfig{
		Target: cfg.Pool.Target, Concurrency: cfg.Pool.Concurrency, Generate: gen,
		Store: st.PreParams(), Logger: log.With("component", "pool"),
	})
	if err != nil {
		return nil, fmt.Errorf("node: pre-parameter pool: %w", err)
	}
	if err := n.recoverJournal(n.ctx); err != nil {
		return nil, err
	}
	if n.set.role == ids.RoleGuardian && n.engine != nil {
		if err := n.reloadQueue(n.ctx); err != nil {
			return nil, err
		}
	}
	pn, err := p2p.New(p2p.Config{
		Identity:     key,
		ListenAddrs:  cfg.Listen,
		Members:      n.set.members,
		Coordinators: n.set.coordinators,
		Sessions:     st.SessionIDs(),
		Logger:       log.With("component", "p2p"),
		Registerer:   reg,
	})
	if err != nil {
		return nil, fmt.Errorf("node: p2p: %w", err)
	}
	n.p2p = pn
	tcfg := opts.TSS
	tcfg.Logger = log.With("component", "tss")
	n.tss = tss.NewEngine(pn, tcfg)
	if err := pn.RegisterHandler(control.Protocol, control.MaxMessage, n.handle); err != nil {
		return nil, fmt.Errorf("node: control protocol: %w", err)
	}
	ok = true
	log.Info("node started", "member", n.self, "role", n.set.role, "addrs", pn.Addrs())
	return n, nil
}

func durationOr(s string, def time.Duration) time.Duration {
	if d, err := parseDuration(s); err == nil && d > 0 {
		return d
	}
	return def
}

func parseDuration(s string) (time.Duration, error) { return time.ParseDuration(s) }

// Run fills the pre-parameter pool in the background and serves the
// control protocol (and the admin API, when configured) until ctx ends;
// then it closes the node.
func (n *Node) Run(ctx context.Context) error {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.pool.Run(n.ctx); err != nil && !errors.Is(err, context.Canceled) {
			n.log.Error("pre-parameter pool stopped", "err", err)
		}
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.pruneLoop(n.ctx, time.Hour)
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.sweepLoop(n.ctx, time.Minute, 10*time.Minute)
	}()
	adminErr := make(chan error, 1)
	if n.cfg.Admin.Socket != "" || n.cfg.Admin.TCP != "" {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			adminErr <- n.serveAdmin(n.ctx)
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case <-n.ctx.Done():
	case err = <-adminErr:
		if err != nil {
			err = fmt.Errorf("node: admin API: %w", err)
		}
	}
	if cerr := n.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close stops every session and background goroutine, closes the host and
// flushes the store. Closing twice is harmless.
func (n *Node) Close() error { return n.close(true) }

// close stops the node. clean, it first drops the signing proposals
// joined here and never started, releasing their reservations: this
// process knows they never started, which a restart cannot tell from the
// journal (recoverJournal keeps a joined proposal's reservation). Tests
// stand in for a crash with clean false.
func (n *Node) close(clean bool) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	for _, s := range n.sessions {
		if s.timer != nil {
			s.timer.Stop()
		}
	}
	n.mu.Unlock()
	n.cancel()
	perr := n.p2p.Close()
	if clean {
		// No message arrives any more, and a start is refused once
		// closed is set: these proposals never start.
		n.mu.Lock()
		var proposed []*session
		for _, s := range n.sessions {
			if s.kind == kindSign && s.state == control.StateProposed {
				proposed = append(proposed, s)
			}
		}
		n.mu.Unlock()
		for _, s := range proposed {
			n.dropProposal(s, "node closing")
		}
	}
	n.wg.Wait()
	serr := n.st.Close()
	n.log.Info("node stopped", "member", n.self)
	return errors.Join(perr, serr)
}

// ID is the node's libp2p peer id.
func (n *Node) ID() peer.ID { return n.p2p.ID() }

// Self is the node's member id (its peer id's text).
func (n *Node) Self() ids.MemberID { return n.self }

// Addrs are the node's listen addresses with their /p2p suffix.
func (n *Node) Addrs() []ma.Multiaddr { return n.p2p.Addrs() }

// Store is the node's store; tests inspect its ledger and audit log.
func (n *Node) Store() *store.Store { return n.st }

// Role is the node's role.
func (n *Node) Role() ids.Role { return n.set.role }

// SetPeerAddrs replaces the known addresses of a member or coordinator (a
// peer restarted on another port, say).
func (n *Node) SetPeerAddrs(id peer.ID, addrs []ma.Multiaddr) error { return n.p2p.SetAddrs(id, addrs) }

// policyEngine is the current engine, or nil before the first document.
func (n *Node) policyEngine() *policy.Engine {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.engine
}

// audit appends an audit entry; a failure is logged loudly, since the
// entry's effect already happened (callers append before effects where it
// matters).
func (n *Node) audit(ctx context.Context, e store.Entry) error {
	e.Time = n.now().UTC()
	if _, err := n.st.AppendAudit(context.WithoutCancel(ctx), e); err != nil {
		n.log.Error("audit append failed", "kind", e.Kind, "request", e.RequestID, "err", err)
		return err
	}
	return nil
}

// adminSocketPath is the admin socket's path, resolved.
func (n *Node) adminSocketPath() string {
	p := n.cfg.path(n.cfg.Admin.Socket)
	if p == "" {
		return ""
	}
	return filepath.Clean(p)
}

// pruneLoop has the policy engine forget, now and then, what no budget
// window, breaker window or freeze retention can reach any more.
func (n *Node) pruneLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		eng := n.policyEngine()
		if eng == nil {
			continue
		}
		n.policyMu.Lock()
		forgot, err := eng.Prune(ctx, n.now())
		if err == nil {
			err = n.saveState(ctx, eng)
		}
		n.policyMu.Unlock()
		if err != nil {
			n.log.Warn("prune", "err", err)
		} else if forgot > 0 {
			n.log.Info("pruned old ledger reservations", "count", forgot)
		}
	}
}

// AdminAddr is the admin API's address as admin.NewClient takes it
// ("unix:///path" or "http://host:port"), or "" when none is configured.
func (n *Node) AdminAddr() string {
	switch {
	case n.cfg.Admin.TCP != "":
		return "http://" + n.cfg.Admin.TCP
	case n.cfg.Admin.Socket != "":
		return "unix://" + n.adminSocketPath()
	}
	return ""
}

// sweepLoop forgets, in memory, sessions that ended more than keep ago;
// Result then answers from the journal.
func (n *Node) sweepLoop(ctx context.Context, every, keep time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.sweep(time.Now().Add(-keep))
	}
}

func (n *Node) sweep(before time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, expiry := range n.started {
		if expiry.Before(before) {
			delete(n.started, id)
		}
	}
	for id, s := range n.sessions {
		if !s.ended.IsZero() && s.ended.Before(before) {
			delete(n.sessions, id)
			if n.requests[s.request] == id {
				delete(n.requests, s.request)
			}
		}
	}
}
