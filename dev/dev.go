package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/coordinator"
	"github.com/custos-wallet/custos/devchain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/params"
)

// Defaults of a first run.
const (
	DefaultDir         = ".custos-dev"
	EnvDir             = "CUSTOS_DEV_DIR"
	DefaultChainListen = "127.0.0.1:8545"
	DefaultHTTPListen  = "127.0.0.1:8080"
)

// What custos dev funds its keys with, from dev account 0.
var (
	HotFunding   = new(big.Int).Mul(big.NewInt(10), big.NewInt(params.Ether))
	VaultFunding = new(big.Int).Mul(big.NewInt(100), big.NewInt(params.Ether))
)

// Options configure a dev cluster. ChainID, ChainListen and HTTPListen
// matter on the first run only: later runs take them from the directory.
type Options struct {
	// Dir is the dev directory, created on the first run.
	Dir string
	// ChainID is the dev chain's id (default devchain.DefaultChainID).
	ChainID uint64
	// ChainListen is the dev chain's JSON-RPC address (default
	// 127.0.0.1:8545); port 0 picks a free port, kept for later runs.
	ChainListen string
	// HTTPListen is the coordinator's REST address (default
	// 127.0.0.1:8080); port 0 as for ChainListen.
	HTTPListen string
	// AgentListen and MCPListen are the agent sidecar's JSON-RPC and MCP
	// addresses (default 127.0.0.1:8546 and 127.0.0.1:8547).
	AgentListen string
	MCPListen   string

	// Out receives progress and next steps; nil discards them.
	Out io.Writer
	// Log receives the daemons' logs; nil appends them to dev.log in
	// the dev directory.
	Log io.Writer

	// PreParams, if set, makes the named member's pre-parameters instead
	// of tss.GeneratePreParams: tests hand in fixtures. custos dev never
	// sets it.
	PreParams func(member string) tss.Generator
	// Cores is how many cores the progress estimate assumes (default 2).
	Cores int
	// Program is how the printed steps run the custos binary (default
	// "custos"; words separated by spaces, as in "go run ./cmd/custos").
	Program string
	// NoVault leaves the vault key out: Start makes only the hot key and
	// VaultReady is closed at once with ErrNoVault. The benchmark uses
	// it, so that no background key generation shares the cores.
	NoVault bool
}

// ErrNoVault is VaultErr of a cluster started with Options.NoVault.
var ErrNoVault = errors.New("dev: started without the vault key")

func (o Options) outOrDiscard() io.Writer {
	if o.Out == nil {
		return io.Discard
	}
	return o.Out
}

// Cluster is a running dev cluster.
type Cluster struct {
	p       paths
	out     *lineWriter
	log     *slog.Logger
	logFile *os.File
	gen     *genTracker
	rest    *client.Client
	url     string // the coordinator's REST base URL
	eth     *ethclient.Client
	chain   *devchain.Chain
	sidecar *agentSidecar
	created bool   // the first run laid the directory out
	program string // the custos binary, as the steps name it

	cancel  context.CancelFunc
	daemons []*daemon
	wg      sync.WaitGroup // the vault goroutine

	gate     chan struct{} // closed once the hot key exists: guardian-2 may make pre-parameters
	gateOnce sync.Once

	vaultDone chan struct{}
	vaultErr  error // set before vaultDone is closed

	mu        sync.Mutex
	st        *state // guarded by mu
	closeOnce sync.Once
	closeErr  error
}

// daemon is a node or the coordinator, run until the cluster closes.
type daemon struct {
	name string
	done chan error
}

// Start opens (or, the first time, lays out) the dev directory, starts
// the dev chain, the nodes and the coordinator, pushes the policy, makes
// and funds the hot key, and returns once the hot key can sign. The vault
// key follows in the background (VaultReady). Close stops everything.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Dir == "" {
		opts.Dir = DefaultDir
	}
	root, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if opts.ChainID == 0 {
		opts.ChainID = devchain.DefaultChainID
	}
	if opts.ChainListen == "" {
		opts.ChainListen = DefaultChainListen
	}
	if opts.HTTPListen == "" {
		opts.HTTPListen = DefaultHTTPListen
	}
	if opts.AgentListen == "" {
		opts.AgentListen = DefaultAgentListen
	}
	if opts.MCPListen == "" {
		opts.MCPListen = DefaultMCPListen
	}
	if opts.Cores <= 0 {
		opts.Cores = 2
	}
	if opts.Program == "" {
		opts.Program = "custos"
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	c := &Cluster{p: paths{root}, program: opts.Program, out: &lineWriter{w: out}, gate: make(chan struct{}), vaultDone: make(chan struct{}),
		gen: &genTracker{cores: opts.Cores, prior: 35 * time.Second}}
	st, err := loadState(c.p)
	if err != nil {
		return nil, err
	}
	if st == nil {
		c.out.printf("First run: laying out %s (identities, store keys, dev guardians, agent credential, signed policy).", root)
		if st, err = layout(root, layoutOptions{chainID: opts.ChainID, chainListen: opts.ChainListen, httpListen: opts.HTTPListen,
			agentListen: opts.AgentListen, mcpListen: opts.MCPListen}); err != nil {
			return nil, err
		}
		c.created = true
	} else {
		c.out.printf("Reusing %s.", root)
	}
	c.st = st
	logw := opts.Log
	if logw == nil {
		f, err := os.OpenFile(c.p.log(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		c.logFile, logw = f, f
	}
	c.log = slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if st.Hot != nil {
		c.openGate()
	}
	if err := c.startDaemons(runCtx, opts); err != nil {
		return nil, err
	}
	if err := c.startSidecar(runCtx); err != nil {
		return nil, err
	}
	if err := c.pushPolicy(ctx); err != nil {
		return nil, err
	}
	hot, err := c.makeKey(ctx, "hot", hotCommittee, hotThreshold, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.openGate()
	if err := c.fund(ctx, "hot", hot.Address, HotFunding); err != nil {
		return nil, err
	}
	if opts.NoVault {
		c.vaultErr = ErrNoVault
		close(c.vaultDone)
		return c, nil
	}
	c.wg.Add(1)
	go c.vault(runCtx)
	return c, nil
}

func (c *Cluster) openGate() { c.gateOnce.Do(func() { close(c.gate) }) }

// startDaemons starts the dev chain, the four nodes and the coordinator.
func (c *Cluster) startDaemons(ctx context.Context, opts Options) error {
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	ch, err := devchain.Start(devchain.Config{Listen: st.ChainListen, ChainID: st.ChainID, DataDir: c.p.chain(),
		Logger: c.log.With("daemon", "devchain")})
	if err != nil {
		return fmt.Errorf("dev chain: %w", err)
	}
	c.chain = ch
	if c.eth, err = ethclient.Dial(ch.URL()); err != nil {
		return fmt.Errorf("dev chain: %w", err)
	}
	for _, name := range Members {
		cfg, err := node.LoadConfig(c.p.nodeConfig(name), nil)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		base := tss.GeneratePreParams
		if opts.PreParams != nil {
			base = opts.PreParams(name)
		}
		n, err := node.New(cfg, node.Options{Logger: c.log.With("daemon", name), Generate: c.generator(name, base)})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if n.ID().String() != st.Nodes[name].ID {
			n.Close()
			return fmt.Errorf("%s runs as %s, but %s says %s", name, n.ID(), stateFile, st.Nodes[name].ID)
		}
		c.run(name, func() error { return n.Run(ctx) })
	}
	cfg, err := coordinator.LoadConfig(c.p.coordinatorConfig(), nil)
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	co, err := coordinator.New(cfg, coordinator.Options{Logger: c.log.With("daemon", "coordinator")})
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	c.run("coordinator", func() error { return co.Run(ctx) })
	c.url = co.URL()
	tok, err := os.ReadFile(c.p.operatorToken())
	if err != nil {
		return fmt.Errorf("operator token: %w", err)
	}
	if c.rest, err = client.New(co.URL(), client.Options{Token: strings.TrimSpace(string(tok))}); err != nil {
		return err
	}
	c.log.Info("dev cluster started", "chain", ch.URL(), "rest", co.URL())
	return nil
}

func (c *Cluster) run(name string, f func() error) {
	d := &daemon{name: name, done: make(chan error, 1)}
	c.daemons = append(c.daemons, d)
	go func() { d.done <- f() }()
}

// generator wraps a member's pre-parameter generator so that the hot key's
// three sets get the cores: guardian-2, which the hot key does not need,
// and a hot member's refill (for the vault key) wait until the hot key
// exists. Every set is counted for the progress estimate.
func (c *Cluster) generator(name string, base tss.Generator) tss.Generator {
	var mu sync.Mutex
	made := 0 // sets made by this run
	return func(ctx context.Context) (*tss.PreParams, error) {
		mu.Lock()
		first := made == 0
		mu.Unlock()
		if !first || !slices.Contains(hotCommittee, name) {
			select {
			case <-c.gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := c.gen.begin()
		pp, err := base(ctx)
		done(err == nil)
		if err == nil {
			mu.Lock()
			made++
			mu.Unlock()
		}
		return pp, err
	}
}

// pushPolicy proposes the signed sample policy until every member took
// it (the coordinator reaches the members in its own time).
func (c *Cluster) pushPolicy(ctx context.Context) error {
	c.mu.Lock()
	pushed, wallet := c.st.PolicyPushed, c.st.WalletID
	c.mu.Unlock()
	if pushed {
		return nil
	}
	doc, err := readSignedPolicy(c.p.signedPolicy())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last string
	for {
		p, err := c.rest.ProposePolicy(ctx, doc)
		if err == nil {
			var missing []string
			for _, m := range p.Members {
				if !m.Accepted {
					missing = append(missing, fmt.Sprintf("%s (%s: %s)", c.nameOf(m.Member), m.RuleID, m.Reason))
				}
			}
			if len(missing) == 0 && len(p.Members) == len(Members) {
				break
			}
			last = "not taken by " + strings.Join(missing, ", ")
		} else {
			last = err.Error()
		}
		// A member that took it on an earlier attempt refuses it again as
		// not newer; the coordinator's current policy says it is in force.
		if cur, err := c.rest.Policy(ctx); err == nil && cur.WalletID == wallet && cur.Version >= 1 {
			if h, herr := c.rest.Health(ctx); herr == nil && allOnPolicy(h, cur.Version) {
				break
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("push the sample policy: %s", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
	c.mu.Lock()
	c.st.PolicyPushed = true
	err = saveState(c.p, c.st)
	c.mu.Unlock()
	c.out.printf("Policy v1 signed by guardian-1 and guardian-2 is in force on every node (%s).", c.p.policySource())
	return err
}

func allOnPolicy(h *api.Health, version uint64) bool {
	if len(h.Members) != len(Members) {
		return false
	}
	for _, m := range h.Members {
		if m.PolicyVersion < version {
			return false
		}
	}
	return true
}

func (c *Cluster) nameOf(m ids.MemberID) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, ps := range c.st.Nodes {
		if ps.ID == string(m) {
			return name
		}
	}
	return string(m)
}

func (c *Cluster) committee(names []string) []api.CommitteeMember {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []api.CommitteeMember
	for _, n := range names {
		out = append(out, api.CommitteeMember{ID: ids.MemberID(c.st.Nodes[n].ID), Role: memberRoles[n]})
	}
	return out
}

// keySlot is where the state keeps one key and its operation.
func (c *Cluster) keySlot(which string) (op *string, key **api.Key) {
	if which == "hot" {
		return &c.st.HotOp, &c.st.Hot
	}
	return &c.st.VaultOp, &c.st.Vault
}

// makeKey returns the key the state holds, or waits for the operation
// an earlier run started (the coordinator resumes it), or starts one.
func (c *Cluster) makeKey(ctx context.Context, which string, names []string, threshold int, every time.Duration) (*api.Key, error) {
	c.mu.Lock()
	opID, key := c.keySlot(which)
	if *key != nil {
		k := *key
		c.mu.Unlock()
		return k, nil
	}
	id := *opID
	c.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if id == "" {
			if err := c.waitPools(ctx, which, names, every); err != nil {
				return nil, err
			}
			op, err := c.rest.CreateKey(ctx, api.CreateKey{Committee: c.committee(names), Threshold: threshold})
			if err != nil {
				return nil, fmt.Errorf("%s key: %w", which, err)
			}
			id = op.ID
			c.mu.Lock()
			opID, _ = c.keySlot(which)
			*opID = id
			err = saveState(c.p, c.st)
			c.mu.Unlock()
			if err != nil {
				return nil, err
			}
			c.out.printf("Creating the %s key (%s, threshold %d): operation %s.", which, strings.Join(names, ", "), threshold, id)
		} else {
			c.out.printf("Waiting for the %s key's operation %s, started by an earlier run.", which, id)
		}
		op, err := c.waitOperation(ctx, which, id, every)
		if err != nil {
			return nil, err
		}
		if op.State == api.OpDone && op.Key != nil {
			c.mu.Lock()
			_, key = c.keySlot(which)
			*key = op.Key
			err = saveState(c.p, c.st)
			c.mu.Unlock()
			c.out.printf("The %s key is %s (guardian floor %d).", which, op.Key.Address.Hex(), op.Key.GuardianFloor)
			return op.Key, err
		}
		if attempt >= 2 {
			return nil, fmt.Errorf("%s key: operation %s ended %s: %s", which, id, op.State, op.Error)
		}
		c.out.printf("The %s key's operation %s ended %s (%s); starting another.", which, id, op.State, op.Error)
		id = ""
	}
}

// waitPools waits until every member of a key's committee holds a set of
// pre-parameters. A key generation whose members start it at different
// times fails once one of them has waited for the others longer than the
// engine's idle timeout, and a busy machine can take minutes more for one
// member's safe primes than for another's: so the key generation starts
// only once every member is ready.
func (c *Cluster) waitPools(ctx context.Context, which string, names []string, every time.Duration) error {
	want := map[ids.MemberID]string{}
	order := make([]ids.MemberID, len(names))
	c.mu.Lock()
	for i, n := range names {
		order[i] = ids.MemberID(c.st.Nodes[n].ID)
		want[order[i]] = n
	}
	c.mu.Unlock()
	start := time.Now()
	var lastLine time.Time
	announced := false
	for {
		h, err := c.rest.Health(ctx)
		var waiting []string
		if err != nil {
			waiting = []string{"the coordinator (" + err.Error() + ")"}
		} else {
			got := map[ids.MemberID]bool{}
			for _, m := range h.Members {
				if _, ok := want[m.ID]; ok && m.Reachable && m.PreParams > 0 {
					got[m.ID] = true
				}
			}
			for i, id := range order {
				if !got[id] {
					waiting = append(waiting, names[i])
				}
			}
		}
		if len(waiting) == 0 {
			if announced {
				c.out.printf("  %s key: every member has its pre-parameters (%s)", which, time.Since(start).Round(time.Second))
			}
			return nil
		}
		switch {
		case !announced:
			c.out.printf("  %s key: waiting for pre-parameters of %s (safe primes: tens of seconds of CPU per member, made once and kept)", which, strings.Join(waiting, ", "))
			announced, lastLine = true, time.Now()
		case time.Since(lastLine) >= every:
			c.out.printf("  %s key: still generating at %s: %s (%s so far)", which, strings.Join(waiting, ", "), c.gen.summary(), time.Since(start).Round(time.Second))
			lastLine = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// waitOperation polls a key generation, printing its phase when it
// changes and, while members wait for pre-parameters, an estimate every
// `every`.
func (c *Cluster) waitOperation(ctx context.Context, which, id string, every time.Duration) (*api.Operation, error) {
	var phase string
	var lastLine time.Time
	start := time.Now()
	op, err := c.rest.WaitOperation(ctx, id, 500*time.Millisecond, func(op *api.Operation) {
		if op.State != api.OpRunning {
			return
		}
		if op.Phase != phase {
			phase = op.Phase
			c.out.printf("  %s key: %s", which, describePhase(op.Phase))
			lastLine = time.Now()
			return
		}
		if op.Phase == "pre_params" && time.Since(lastLine) >= every {
			c.out.printf("  %s key: %s (%s so far)", which, c.gen.summary(), time.Since(start).Round(time.Second))
			lastLine = time.Now()
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%s key: operation %s: %w", which, id, err)
	}
	return op, nil
}

func describePhase(p string) string {
	switch p {
	case "pre_params":
		return "members are generating pre-parameters (safe primes: tens of seconds of CPU per member, done once)"
	case "proposing":
		return "proposing the key generation to its committee"
	case "keygen":
		return "running the threshold key generation"
	}
	return p
}

// vault makes and funds the vault key in the background.
func (c *Cluster) vault(ctx context.Context) {
	defer c.wg.Done()
	err := func() error {
		k, err := c.makeKey(ctx, "vault", vaultCommittee, vaultThreshold, 30*time.Second)
		if err != nil {
			return err
		}
		return c.fund(ctx, "vault", k.Address, VaultFunding)
	}()
	if err != nil && ctx.Err() == nil {
		c.out.printf("The vault key could not be made: %v", err)
	}
	c.vaultErr = err
	close(c.vaultDone)
}

// fund sends amount from dev account 0 to a key once, and waits until it
// is mined.
func (c *Cluster) fund(ctx context.Context, which string, to common.Address, amount *big.Int) error {
	c.mu.Lock()
	done := c.st.Funded[to.Hex()]
	c.mu.Unlock()
	if done {
		return nil
	}
	from, err := devchain.DevAccount(0)
	if err != nil {
		return err
	}
	// One funding at a time: both come from the same account.
	fundMu.Lock()
	defer fundMu.Unlock()
	nonce, err := c.eth.PendingNonceAt(ctx, from.Address)
	if err != nil {
		return fmt.Errorf("fund the %s key: %w", which, err)
	}
	feeCap, tip, err := c.fees(ctx)
	if err != nil {
		return fmt.Errorf("fund the %s key: %w", which, err)
	}
	tx, err := types.SignNewTx(from.Key, types.LatestSignerForChainID(c.chain.ChainID()), &types.DynamicFeeTx{
		ChainID: c.chain.ChainID(), Nonce: nonce, To: &to, Value: amount, Gas: 21000, GasFeeCap: feeCap, GasTipCap: tip})
	if err != nil {
		return err
	}
	if err := c.eth.SendTransaction(ctx, tx); err != nil {
		return fmt.Errorf("fund the %s key: %w", which, err)
	}
	if err := c.waitMined(ctx, tx.Hash()); err != nil {
		return fmt.Errorf("fund the %s key: %w", which, err)
	}
	c.mu.Lock()
	c.st.Funded[to.Hex()] = true
	err = saveState(c.p, c.st)
	c.mu.Unlock()
	c.out.printf("Funded the %s key with %s ETH from dev account 0.", which, formatEther(amount))
	return err
}

var fundMu sync.Mutex

// fees are the fee cap and tip of the transactions custos dev writes:
// well above the dev chain's base fee, well under the policy's fee_max.
func (c *Cluster) fees(ctx context.Context) (feeCap, tip *big.Int, err error) {
	return chainFees(ctx, c.eth)
}

func chainFees(ctx context.Context, eth *ethclient.Client) (feeCap, tip *big.Int, err error) {
	h, err := eth.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	tip = big.NewInt(params.GWei)
	feeCap = big.NewInt(20 * params.GWei)
	if h.BaseFee != nil {
		if need := new(big.Int).Add(new(big.Int).Mul(h.BaseFee, big.NewInt(2)), tip); need.Cmp(feeCap) > 0 {
			feeCap = need
		}
	}
	return feeCap, tip, nil
}

func (c *Cluster) waitMined(ctx context.Context, h common.Hash) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		r, err := c.eth.TransactionReceipt(ctx, h)
		if err == nil {
			if r.Status != types.ReceiptStatusSuccessful {
				return fmt.Errorf("transaction %s failed", h.Hex())
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("transaction %s not mined: %w", h.Hex(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close stops the coordinator, the nodes and the dev chain, each flushing
// its store. Closing twice is harmless.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
		var errs []error
		if c.sidecar != nil {
			if err := c.sidecar.close(); err != nil {
				errs = append(errs, fmt.Errorf("agent sidecar: %w", err))
			}
		}
		// The coordinator first, then the nodes, in reverse order of start.
		for i := len(c.daemons) - 1; i >= 0; i-- {
			d := c.daemons[i]
			if err := <-d.done; err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, fmt.Errorf("%s: %w", d.name, err))
			}
		}
		if c.eth != nil {
			c.eth.Close()
		}
		if c.chain != nil {
			if err := c.chain.Close(); err != nil {
				errs = append(errs, fmt.Errorf("dev chain: %w", err))
			}
		}
		if c.logFile != nil {
			c.logFile.Close()
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// Dir is the dev directory.
func (c *Cluster) Dir() string { return c.p.root }

// Created says whether this run laid the directory out.
func (c *Cluster) Created() bool { return c.created }

// ChainURL is the dev chain's JSON-RPC endpoint.
func (c *Cluster) ChainURL() string { return c.chain.URL() }

// ChainID is the dev chain's id.
func (c *Cluster) ChainID() uint64 { return c.chain.ChainID().Uint64() }

// URL is the coordinator's REST base URL.
func (c *Cluster) URL() string { return strings.TrimSuffix(c.url, "/") }

// REST is an operator client of the coordinator.
func (c *Cluster) REST() *client.Client { return c.rest }

// Hot is the hot key.
func (c *Cluster) Hot() api.Key {
	c.mu.Lock()
	defer c.mu.Unlock()
	return *c.st.Hot
}

// Vault is the vault key, once VaultReady is closed without an error.
func (c *Cluster) Vault() (api.Key, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Vault == nil {
		return api.Key{}, false
	}
	return *c.st.Vault, true
}

// VaultReady is closed once the vault key exists and is funded, or its
// making failed or was stopped (VaultErr).
func (c *Cluster) VaultReady() <-chan struct{} { return c.vaultDone }

// VaultErr is why the vault key is missing, after VaultReady.
func (c *Cluster) VaultErr() error {
	<-c.vaultDone
	return c.vaultErr
}

// Generated is how many pre-parameter sets this run made.
func (c *Cluster) Generated() int { return c.gen.completed() }

// AdminSocket is a node's admin socket path.
func (c *Cluster) AdminSocket(name string) string { return c.p.adminSocket(name) }

// CredentialFile is the agent credential `custos sign` takes.
func (c *Cluster) CredentialFile() string { return c.p.credential() }

// Keystore is a dev guardian's keystore file (name guardian-1 or
// guardian-2); PasswordFile holds its password.
func (c *Cluster) Keystore(name string) string { return c.p.keystore(name) }

// PasswordFile holds the dev guardians' keystore password.
func (c *Cluster) PasswordFile() string { return c.p.password() }

// OperatorTokenFile holds the coordinator's operator token.
func (c *Cluster) OperatorTokenFile() string { return c.p.operatorToken() }

// Run is `custos dev`: Start, print the next steps, print the vault's
// steps once it exists, and stop cleanly when ctx ends.
func Run(ctx context.Context, opts Options) error {
	t0 := time.Now()
	c, err := Start(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(opts.outOrDiscard(), "Stopped before the cluster was ready; the next run goes on from where this one got to.")
			return nil
		}
		return err
	}
	steps, err := c.HotSteps(ctx)
	if err != nil {
		c.Close()
		return err
	}
	c.out.printf("\nReady in %s.\n%s", time.Since(t0).Round(100*time.Millisecond), c.Summary())
	c.out.print(FormatSteps(steps, 1))
	c.out.printf("Stop with Ctrl-C; the next `custos dev` reuses %s.", c.Dir())
	_, hadVault := c.Vault()
	go func() {
		select {
		case <-c.VaultReady():
		case <-ctx.Done():
			return
		}
		if c.VaultErr() != nil {
			return
		}
		vs, err := c.VaultSteps(ctx)
		if err != nil {
			c.out.printf("vault steps: %v", err)
			return
		}
		v, _ := c.Vault()
		if hadVault {
			c.out.printf("With the vault key %s (every signature needs a guardian share):", v.Address.Hex())
		} else {
			c.out.printf("\nThe vault key %s is ready (%s after start): every signature needs a guardian share.", v.Address.Hex(), time.Since(t0).Round(time.Second))
		}
		c.out.print(FormatSteps(vs, len(steps)+1))
	}()
	<-ctx.Done()
	c.out.printf("Stopping...")
	err = c.Close()
	if err == nil {
		c.out.printf("Stopped; everything is kept in %s.", c.Dir())
	}
	return err
}

// lineWriter serialises whole lines from several goroutines.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, args ...any) { l.print(fmt.Sprintf(format, args...) + "\n") }

func (l *lineWriter) print(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, s)
}
