// Package coordinator is the Custos coordinator: the cluster member that
// takes agents' signing requests and operators' key operations over a REST
// API (/v1), picks quorums, drives keygen, signing and reshare sessions over
// the control protocol (package control), stores request state in its own
// encrypted badger store and broadcasts signed transactions.
//
// It holds no share and no secret that can move funds (invariant 1 of
// DESIGN.md): every node of a quorum checks the agent-signed request, the
// policy, the tier, the quorum and the approvals itself. The coordinator is
// trusted for availability only; a coordinator that lies is refused by the
// nodes, with their reasons.
//
// Requests persist: a coordinator restarted mid-request first asks the
// members of the request's last session for its outcome (a node that
// signed returns the signature through Result) and only then, if no
// signature exists and no member still runs it, tries a new session, so a
// restart never makes two signature sessions run at once for one request.
package coordinator

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// Chain is what the coordinator needs of an Ethereum node: satisfied by
// *ethclient.Client and by go-ethereum's simulated backend client
// (ethclient/simulated).
type Chain interface {
	ChainID(ctx context.Context) (*big.Int, error)
	SendTransaction(ctx context.Context, tx *types.Transaction) error
}

// Options are the coordinator's dependencies.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Chain: nil dials Config's chain RPC URL with ethclient (no URL: no
	// broadcasting).
	Chain Chain
	// Registerer receives the metrics; nil makes a registry of its own,
	// served on /metrics. A Registerer that is also a prometheus.Gatherer
	// is served on /metrics.
	Registerer prometheus.Registerer
}

// Coordinator is a running coordinator.
type Coordinator struct {
	cfg     *Config
	log     *slog.Logger
	now     func() time.Time
	chain   Chain
	chainID uint64 // 0: any
	store   *store.Store
	p2p     *p2p.Node
	ln      net.Listener
	srv     *http.Server
	url     string
	roles   map[ids.MemberID]ids.Role // the configured members
	metrics *metrics
	presign *presignPools

	verifier *agentauth.Verifier
	limAgent *httpapi.Limiter
	limOper  *httpapi.Limiter
	limAnon  *httpapi.Limiter
	pol      *policyHolder
	ctx      context.Context // ends at Close: the work goroutines' lifetime
	// httpCtx is the requests' base context, ended when serving stops.
	httpCtx    context.Context
	httpCancel context.CancelFunc
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error

	mu sync.Mutex
	// guarded by mu
	running map[string]bool          // request or operation ids with a driver
	changed map[string]chan struct{} // closed when the record changes
	started bool
}

// New opens the coordinator's store, its libp2p host and its HTTP
// listener. Run serves them.
func New(cfg *Config, opts Options) (*Coordinator, error) {
	if cfg == nil {
		return nil, errors.New("coordinator: no configuration")
	}
	if cfg.getenv == nil {
		cfg.getenv = os.Getenv
	}
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("coordinator: config: %w", err)
	}
	c := &Coordinator{cfg: cfg, log: opts.Logger, now: opts.Now, chain: opts.Chain, chainID: cfg.Chain.ChainID,
		running: map[string]bool{}, changed: map[string]chan struct{}{}, roles: map[ids.MemberID]ids.Role{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			c.cancel()
			c.closeParts()
		}
	}()
	var gatherer prometheus.Gatherer
	reg := opts.Registerer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, gatherer = r, r
	} else if g, isG := reg.(prometheus.Gatherer); isG {
		gatherer = g
	}
	c.metrics = newMetrics(reg, gatherer)
	c.presign = newPresignPools(cfg.Presign)

	if c.chain == nil && cfg.Chain.RPCURL != "" {
		ec, err := ethclient.Dial(cfg.Chain.RPCURL)
		if err != nil {
			return nil, fmt.Errorf("coordinator: dial chain %s: %w", cfg.Chain.RPCURL, err)
		}
		c.chain = ec
	}
	if c.chain != nil {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		id, err := c.chain.ChainID(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("coordinator: chain id: %w", err)
		}
		if !id.IsUint64() || id.Sign() == 0 {
			return nil, fmt.Errorf("coordinator: chain id %s unusable", id)
		}
		if c.chainID != 0 && c.chainID != id.Uint64() {
			return nil, fmt.Errorf("coordinator: configured chain_id %d, but the chain's id is %s", c.chainID, id)
		}
		c.chainID = id.Uint64()
	}

	st, err := store.Open(cfg.DataDir, cfg.keySource(), store.Options{Logger: c.log})
	if err != nil {
		return nil, fmt.Errorf("coordinator: open store: %w", err)
	}
	c.store = st

	c.pol, err = loadPolicy(c.ctx, st, mustGenesis(cfg))
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}

	key, err := p2p.LoadOrCreateIdentity(cfg.Identity)
	if err != nil {
		return nil, fmt.Errorf("coordinator: identity: %w", err)
	}
	var members []p2p.Member
	for _, m := range cfg.Members {
		pm, err := p2p.ParseMember(m.ID, m.Addrs...)
		if err != nil {
			return nil, fmt.Errorf("coordinator: member %s: %w", m.ID, err)
		}
		members = append(members, pm)
		c.roles[ids.MemberID(pm.ID.String())] = ids.Role(m.Role)
	}
	c.p2p, err = p2p.New(p2p.Config{Identity: key, ListenAddrs: cfg.Listen, Members: members,
		Sessions: st.SessionIDs(), Logger: c.log, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("coordinator: p2p: %w", err)
	}
	if err := c.p2p.RegisterHandler(control.Protocol, control.MaxMessage, c.handleControl); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}

	c.verifier = &agentauth.Verifier{Lookup: c.agentKey}
	c.limAgent = httpapi.NewLimiter(cfg.RateLimits.Agent.PerSecond, cfg.RateLimits.Agent.Burst)
	c.limOper = httpapi.NewLimiter(cfg.RateLimits.Operator.PerSecond, cfg.RateLimits.Operator.Burst)
	c.limAnon = httpapi.NewLimiter(cfg.RateLimits.Anonymous.PerSecond, cfg.RateLimits.Anonymous.Burst)

	c.ln, err = net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("coordinator: listen %s: %w", cfg.HTTP.Listen, err)
	}
	c.url = "http://" + c.ln.Addr().String()
	c.srv = httpapi.Server(cfg.HTTP.Listen, c.handler(), c.log)
	c.httpCtx, c.httpCancel = context.WithCancel(context.Background())
	c.srv.BaseContext = func(net.Listener) context.Context { return c.httpCtx }
	ok = true
	return c, nil
}

func mustGenesis(cfg *Config) policy.Genesis {
	g, _ := cfg.genesis() // checked by LoadConfig
	return g
}

// Run serves the REST API and the control protocol, and resumes every
// request and key operation that was not finished, until ctx ends (or
// Close is called); then it stops every goroutine and closes the libp2p
// host and the store, as Close does.
func (c *Coordinator) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return errors.New("coordinator: Run called twice")
	}
	c.started = true
	c.mu.Unlock()
	c.log.Info("coordinator running", "url", c.url, "peer", c.p2p.ID(), "members", len(c.roles))
	if err := c.resume(); err != nil {
		return err
	}
	c.spawn("presign-pools", c.runPresignPools)
	serve, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	go func() {
		select {
		case <-c.ctx.Done():
		case <-ctx.Done():
		case <-serve.Done():
			return
		}
		// End the requests in flight (a long poll, say) first, so the
		// shutdown that follows does not wait for them.
		c.httpCancel()
		stopServing()
	}()
	err := httpapi.Serve(serve, c.srv, c.ln, 5*time.Second)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, c.Close())
}

// Close stops every goroutine, the libp2p host and the store.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		// Under mu, so no driver is added (spawn, pushLater) after the
		// wait below began.
		c.mu.Lock()
		c.cancel()
		c.mu.Unlock()
		if c.httpCancel != nil {
			c.httpCancel()
		}
		if c.srv != nil {
			_ = c.srv.Close()
		}
		if c.ln != nil {
			_ = c.ln.Close()
		}
		c.wg.Wait()
		c.closeErr = c.closeParts()
	})
	return c.closeErr
}

func (c *Coordinator) closeParts() error {
	var errs []error
	if c.p2p != nil {
		errs = append(errs, c.p2p.Close())
	}
	if c.store != nil {
		errs = append(errs, c.store.Close())
	}
	if c.ln != nil && c.srv == nil {
		_ = c.ln.Close()
	}
	if cl, ok := c.chain.(interface{ Close() }); ok && c.cfg.Chain.RPCURL != "" {
		cl.Close()
	}
	return errors.Join(errs...)
}

// URL is the base URL of the REST API, with the port the listener got.
func (c *Coordinator) URL() string { return c.url }

// ID is the coordinator's libp2p peer id: list it as a coordinator in
// every node's configuration.
func (c *Coordinator) ID() peer.ID { return c.p2p.ID() }

// Addrs are the coordinator's libp2p addresses.
func (c *Coordinator) Addrs() []ma.Multiaddr { return c.p2p.Addrs() }

// Store is the coordinator's store, for tests that inspect it.
func (c *Coordinator) Store() *store.Store { return c.store }

func (c *Coordinator) agentKey(a ids.AgentID) ed25519.PublicKey {
	p := c.pol.current()
	if p == nil {
		return nil
	}
	k, ok := p.AgentKey(a)
	if !ok {
		return nil
	}
	return k
}

// watch returns a channel closed at the next change of record id.
func (c *Coordinator) watch(id string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.changed[id]
	if !ok {
		ch = make(chan struct{})
		c.changed[id] = ch
	}
	return ch
}

// notify wakes the watchers of record id.
func (c *Coordinator) notify(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.changed[id]; ok {
		close(ch)
		delete(c.changed, id)
	}
}

// spawn runs fn as the one driver of id; it does nothing when id has one.
func (c *Coordinator) spawn(id string, fn func(ctx context.Context)) {
	c.mu.Lock()
	if c.running[id] || c.ctx.Err() != nil {
		c.mu.Unlock()
		return
	}
	c.running[id] = true
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.running, id)
			c.mu.Unlock()
		}()
		fn(c.ctx)
	}()
}

// inProgress counts the requests not yet final: each has its driver
// (spawn) from its submission, or from the coordinator's start, until it
// is final. Health reads it, so no request record is read for it.
func (c *Coordinator) inProgress() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for id := range c.running {
		if strings.HasPrefix(id, "req:") {
			n++
		}
	}
	return n
}

// sleep waits d or until ctx ends or wake is closed.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-wake:
	}
}
