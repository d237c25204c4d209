package devchain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/rawdb"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/eth"
	"github.com/ethereum/go-ethereum/eth/catalyst"
	"github.com/ethereum/go-ethereum/eth/ethconfig"
	"github.com/ethereum/go-ethereum/eth/filters"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/node"
	"github.com/ethereum/go-ethereum/p2p"
	"github.com/ethereum/go-ethereum/rpc"
)

// ErrOtherChain refuses a data directory that holds a chain with another
// genesis or chain id than the configuration asks for.
var ErrOtherChain = errors.New("devchain: data directory holds another chain")

// ErrClosed is returned by calls on a dev chain that is shutting down.
var ErrClosed = errors.New("devchain: closed")

// Chain is a running dev chain.
type Chain struct {
	cfg      Config
	log      *slog.Logger
	stack    *node.Node
	eth      *eth.Ethereum
	miner    *miner
	accounts []Account
	url      string

	closeOnce sync.Once
	closeErr  error
}

// Start starts a dev chain and returns once its JSON-RPC server accepts
// requests at URL.
func Start(cfg Config) (*Chain, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	host, port, err := listenAddr(cfg.Listen, cfg.AllowRemote)
	if err != nil {
		return nil, err
	}
	accounts, err := DevAccounts(cfg.Accounts)
	if err != nil {
		return nil, err
	}
	if err := checkPortFree(host, port); err != nil {
		return nil, err
	}

	nodeConf := node.DefaultConfig
	nodeConf.Name = "custos-devchain"
	nodeConf.DataDir = cfg.DataDir
	nodeConf.IPCPath = "" // with no data dir the default would be a shared socket in /tmp
	nodeConf.HTTPHost = host
	nodeConf.HTTPPort = port
	nodeConf.HTTPModules = []string{"eth", "net", "web3", "txpool", "dev", "evm"}
	if cfg.AllowRemote {
		// Clients in other containers address it by service name.
		nodeConf.HTTPVirtualHosts = []string{"*"}
	}
	// Dev mode has no peers, as in geth --dev.
	nodeConf.P2P = p2p.Config{NoDiscovery: true, NoDial: true, MaxPeers: 0, ListenAddr: ""}
	nodeConf.Logger = log.NewLogger(cfg.Logger.Handler())

	stack, err := node.New(&nodeConf)
	if err != nil {
		return nil, fmt.Errorf("devchain: new node: %w", err)
	}
	c := &Chain{cfg: cfg, log: cfg.Logger, stack: stack, accounts: accounts}
	if err := c.register(); err != nil {
		stack.Close()
		return nil, err
	}
	if err := stack.Start(); err != nil {
		// A failed Start has closed the node already; what eth.New started
		// keeps running, as the service was never started (see checkPortFree).
		return nil, fmt.Errorf("devchain: start node: %w", err)
	}
	if err := c.waitIndexed(); err != nil {
		c.Close()
		return nil, err
	}
	c.url = stack.HTTPEndpoint()
	c.log.Info("dev chain started", "url", c.url, "chain_id", cfg.ChainID, "accounts", len(accounts),
		"block", c.eth.BlockChain().CurrentBlock().Number, "data_dir", cfg.DataDir, "block_period", cfg.BlockPeriod)
	return c, nil
}

// checkPortFree fails early when the listen address is taken. The node binds
// its HTTP server only in Start, after the Ethereum service has started
// goroutines that only a started service can stop; checking first keeps a
// busy port (a second dev chain on 8545) from leaving them behind. Port 0
// cannot be taken. Another process can still take the port between this
// check and the node's bind; Start then fails all the same.
func checkPortFree(host string, port int) error {
	if port == 0 {
		return nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("devchain: listen: %w", err)
	}
	return ln.Close()
}

// register sets up the Ethereum service, the simulated beacon that drives it,
// the miner and the extra RPC methods on the not yet started node, in the
// order geth --dev uses.
func (c *Chain) register() error {
	genesis := c.genesis()
	if err := c.checkStoredChain(genesis); err != nil {
		return err
	}
	ethConf := ethconfig.Defaults
	ethConf.Genesis = genesis
	ethConf.NetworkId = c.cfg.ChainID
	ethConf.SyncMode = ethconfig.FullSync
	ethConf.Miner.GasCeil = c.cfg.GasLimit
	// A minimum tip of 1 wei, as geth --dev: any fee a client suggests is mined.
	ethConf.Miner.GasPrice = big.NewInt(1)
	ethConf.TxPool.PriceLimit = 1
	// No journal of local transactions: what is sent is mined at once.
	ethConf.TxPool.NoLocals = true
	// Mainnet-sized caches would dominate the memory of a tiny chain.
	ethConf.DatabaseCache = 16
	ethConf.TrieCleanCache = 16
	ethConf.TrieDirtyCache = 16
	ethConf.SnapshotCache = 16

	backend, err := eth.New(c.stack, &ethConf)
	if err != nil {
		return fmt.Errorf("devchain: open chain (data dir %q): %w", c.cfg.DataDir, err)
	}
	c.eth = backend
	filterSystem := filters.NewFilterSystem(backend.APIBackend, filters.Config{
		LogCacheSize:  ethConf.FilterLogCacheSize,
		LogQueryLimit: ethConf.LogQueryLimit,
	})
	// Fees go to the zero address so that dev balances move only by what
	// their transactions send and burn.
	beacon, err := catalyst.NewSimulatedBeacon(0, common.Address{}, backend)
	if err != nil {
		return fmt.Errorf("devchain: simulated beacon: %w", err)
	}
	// The beacon's own on-demand loop (catalyst.RegisterSimulatedBeaconAPIs)
	// is not used: it would seal blocks concurrently with dev_mine, and
	// sealing is not safe for concurrent use. The miner is the one goroutine
	// that seals.
	c.miner = newMiner(beacon, backend, c.cfg.BlockPeriod, c.log)
	c.stack.RegisterLifecycle(beacon)
	c.stack.RegisterLifecycle(c.miner)
	c.stack.RegisterAPIs([]rpc.API{
		{Namespace: "eth", Service: filters.NewFilterAPI(filterSystem)},
		{Namespace: "dev", Service: &devAPI{chain: c}},
		{Namespace: "evm", Service: &evmAPI{chain: c}},
	})
	return nil
}

// checkStoredChain refuses a data directory made for another chain. geth
// itself refuses only another genesis block, and would rewrite the stored
// chain id; a dev chain whose id changed under its history is not wanted.
func (c *Chain) checkStoredChain(genesis *core.Genesis) error {
	if c.cfg.DataDir == "" || rawdb.PreexistingDatabase(c.stack.ResolvePath("chaindata")) == "" {
		return nil
	}
	db, err := c.stack.OpenDatabaseWithOptions("chaindata", node.DatabaseOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("devchain: open chain in %s: %w", c.cfg.DataDir, err)
	}
	defer db.Close()
	stored := rawdb.ReadCanonicalHash(db, 0)
	if stored == (common.Hash{}) {
		return nil
	}
	if want := genesis.ToBlock().Hash(); stored != want {
		return fmt.Errorf("devchain: open chain in %s: genesis %s, configuration gives %s (other accounts, balance or gas limit): %w",
			c.cfg.DataDir, stored.TerminalString(), want.TerminalString(), ErrOtherChain)
	}
	if cc := rawdb.ReadChainConfig(db, stored); cc != nil && cc.ChainID != nil && cc.ChainID.Cmp(genesis.Config.ChainID) != 0 {
		return fmt.Errorf("devchain: open chain in %s: chain id %s, configuration gives %s: %w",
			c.cfg.DataDir, cc.ChainID, genesis.Config.ChainID, ErrOtherChain)
	}
	return nil
}

// genesis is geth's dev genesis (every fork active, system contracts and
// precompiles present) with this chain's id, gas limit and dev accounts.
func (c *Chain) genesis() *core.Genesis {
	g := core.DeveloperGenesisBlock(c.cfg.GasLimit, nil)
	g.Config.ChainID = new(big.Int).SetUint64(c.cfg.ChainID)
	for _, a := range c.accounts {
		g.Alloc[a.Address] = types.Account{Balance: new(big.Int).Set(c.cfg.Balance)}
	}
	return g
}

// indexWait bounds how long Start waits for the transaction index, which on
// a new or reopened chain takes milliseconds.
const indexWait = 30 * time.Second

// waitIndexed returns once the transaction index covers the chain. Until it
// does, geth answers eth_getTransactionReceipt for a transaction not yet mined
// with "transaction indexing is in progress" instead of null, which clients
// waiting for a receipt take as a failure. On a new chain the indexer starts
// only at block 1, so an empty block 1 is sealed first. The indexer publishes
// no event when it is done: its progress is polled, at start-up only.
func (c *Chain) waitIndexed() error {
	ctx, cancel := context.WithTimeout(context.Background(), indexWait)
	defer cancel()
	bc := c.eth.BlockChain()
	if bc.CurrentBlock().Number.Sign() == 0 {
		if _, err := c.Mine(ctx); err != nil {
			return fmt.Errorf("devchain: seal block 1: %w", err)
		}
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !bc.TxIndexDone() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("devchain: wait for the transaction index: %w", ctx.Err())
		}
	}
	return nil
}

// URL is the HTTP JSON-RPC endpoint, with the port actually bound.
func (c *Chain) URL() string { return c.url }

// ChainID is the chain's EIP-155 chain id.
func (c *Chain) ChainID() *big.Int { return new(big.Int).SetUint64(c.cfg.ChainID) }

// Accounts returns the prefunded dev accounts, private keys included.
func (c *Chain) Accounts() []Account { return append([]Account(nil), c.accounts...) }

// Mine seals a block now, with whatever transactions the pool holds, and
// returns its header.
func (c *Chain) Mine(ctx context.Context) (*types.Header, error) {
	return c.miner.mine(ctx)
}

// Close stops the miner, the JSON-RPC server and the node, and closes the
// database. It is safe to call more than once.
func (c *Chain) Close() error {
	c.closeOnce.Do(func() {
		if err := c.stack.Close(); err != nil {
			c.closeErr = fmt.Errorf("devchain: close node: %w", err)
		}
		c.log.Info("dev chain stopped", "url", c.url)
	})
	return c.closeErr
}

// Run starts a dev chain, serves until ctx is done, then closes it.
func Run(ctx context.Context, cfg Config) error {
	c, err := Start(cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return c.Close()
}
