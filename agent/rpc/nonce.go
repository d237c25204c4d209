package rpc

import (
	"context"
	"fmt"
	"sync"

	"github.com/ethereum/go-ethereum/common"
)

// nonces serialises the sends of each address and remembers the next nonce
// each one will use. A send holds its address's turn from choosing the nonce
// until upstream took (or refused) the signed transaction, and the nonce
// counts as used only once upstream took it. Signing transactions with
// later nonces before an earlier one is known to go through would leave a
// gap whenever that one is denied or fails, and every later transaction
// would wait behind it in the pool; one send at a time per address is the
// price of never having a gap. Different addresses send concurrently.
type nonces struct {
	mu    sync.Mutex
	addrs map[common.Address]*addrNonce // guarded by mu
}

type addrNonce struct {
	turn chan struct{} // holds one token: whoever took it may send
	next uint64        // guarded by turn
	seen bool          // next has been set; guarded by turn
}

func newNonces() *nonces {
	return &nonces{addrs: make(map[common.Address]*addrNonce)}
}

func (n *nonces) get(a common.Address) *addrNonce {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.addrs[a]
	if !ok {
		s = &addrNonce{turn: make(chan struct{}, 1)}
		s.turn <- struct{}{}
		n.addrs[a] = s
	}
	return s
}

// lease is one send's hold on its address's turn.
type lease struct {
	s     *addrNonce
	nonce uint64
	done  bool
}

// acquire waits for a's turn and returns the nonce to use: the larger of
// the one remembered and upstream's pending count, which covers
// transactions sent from a by anyone else. pending is called under the turn.
func (n *nonces) acquire(ctx context.Context, a common.Address, pending func(context.Context) (uint64, error)) (*lease, error) {
	s := n.get(a)
	select {
	case <-s.turn:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the nonce of %s: %w", a.Hex(), ctx.Err())
	}
	up, err := pending(ctx)
	if err != nil {
		s.turn <- struct{}{}
		return nil, err
	}
	if !s.seen || up > s.next {
		s.next, s.seen = up, true
	}
	return &lease{s: s, nonce: s.next}, nil
}

// use records that upstream took a transaction with nonce used (the lease's
// own, or one the caller chose) and ends the lease.
func (l *lease) use(used uint64) {
	if l.done {
		return
	}
	if used+1 > l.s.next {
		l.s.next = used + 1
	}
	l.release()
}

// release ends the lease without using a nonce: the next send reuses it.
func (l *lease) release() {
	if l.done {
		return
	}
	l.done = true
	l.s.turn <- struct{}{}
}
