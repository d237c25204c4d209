package devchain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/eth"
	"github.com/ethereum/go-ethereum/eth/catalyst"
)

// errNotSealed reports a seal that did not move the head.
var errNotSealed = errors.New("devchain: block not sealed")

// miner is the one goroutine that seals blocks: on demand after transactions
// arrive (period 0), or every period, and whenever mine is called. It is also
// the only caller of TxPool.Sync (sealing calls it too), which keeps a single
// waiter: a second concurrent caller leaves the first waiting for ever
// (go-ethereum v1.17 core/txpool). It is a node lifecycle, so the node starts
// it after the chain and stops it first.
type miner struct {
	beacon *catalyst.SimulatedBeacon
	eth    *eth.Ethereum
	period time.Duration
	log    *slog.Logger

	requests chan chan mined
	quit     chan struct{}
	wg       sync.WaitGroup
}

type mined struct {
	header *types.Header
	err    error
}

func newMiner(beacon *catalyst.SimulatedBeacon, backend *eth.Ethereum, period time.Duration, logger *slog.Logger) *miner {
	return &miner{
		beacon:   beacon,
		eth:      backend,
		period:   period,
		log:      logger,
		requests: make(chan chan mined),
		quit:     make(chan struct{}),
	}
}

// Start implements node.Lifecycle.
func (m *miner) Start() error {
	// pending is set by the watcher and taken by the loop; it never blocks the
	// watcher, because the pool sends its events while holding up its reorg
	// loop, which sealing waits for.
	pending := make(chan struct{}, 1)
	if m.period == 0 {
		newTxs := make(chan core.NewTxsEvent, 16)
		sub := m.eth.TxPool().SubscribeTransactions(newTxs, true)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer sub.Unsubscribe()
			for {
				select {
				case <-newTxs:
					select {
					case pending <- struct{}{}:
					default:
					}
				case <-sub.Err():
					return
				case <-m.quit:
					return
				}
			}
		}()
		// Transactions that came in before the subscription are mined too.
		pending <- struct{}{}
	}
	m.wg.Add(1)
	go m.loop(pending)
	return nil
}

// Stop implements node.Lifecycle.
func (m *miner) Stop() error {
	close(m.quit)
	m.wg.Wait()
	return nil
}

func (m *miner) loop(pending <-chan struct{}) {
	defer m.wg.Done()
	var tick <-chan time.Time
	if m.period > 0 {
		t := time.NewTicker(m.period)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-m.quit:
			return
		case <-pending:
			m.drain()
		case <-tick:
			if _, err := m.seal(); err != nil {
				m.log.Warn("dev chain: seal block", "err", err)
			}
		case reply := <-m.requests:
			h, err := m.seal()
			reply <- mined{h, err}
		}
	}
}

// drain seals blocks until the pool holds no executable transaction.
func (m *miner) drain() {
	pool := m.eth.TxPool()
	for {
		if err := pool.Sync(); err != nil {
			m.log.Warn("dev chain: sync pool", "err", err)
			return
		}
		if executable, _ := pool.Stats(); executable == 0 {
			return
		}
		h, err := m.seal()
		if err != nil {
			m.log.Warn("dev chain: seal block", "err", err)
			return
		}
		if h.TxHash == types.EmptyTxsHash {
			// The builder left executable transactions out (a fee below
			// the miner's floor, say): stop rather than seal empty blocks forever.
			m.log.Warn("dev chain: pool holds transactions the builder does not include", "block", h.Number)
			return
		}
		m.log.Debug("dev chain: sealed block", "number", h.Number, "hash", h.Hash())
	}
}

// seal seals one block and returns the new head.
func (m *miner) seal() (*types.Header, error) {
	chain := m.eth.BlockChain()
	before := chain.CurrentBlock().Number.Uint64()
	m.beacon.Commit()
	head := chain.CurrentBlock()
	if head.Number.Uint64() <= before {
		return nil, fmt.Errorf("%w at height %d", errNotSealed, before)
	}
	return head, nil
}

// mine asks the loop to seal a block and waits for it.
func (m *miner) mine(ctx context.Context) (*types.Header, error) {
	reply := make(chan mined, 1)
	select {
	case m.requests <- reply:
	case <-m.quit:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("devchain: mine: %w", ctx.Err())
	}
	// The loop answers every request it takes before it looks at quit again.
	select {
	case r := <-reply:
		return r.header, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("devchain: mine: %w", ctx.Err())
	}
}
