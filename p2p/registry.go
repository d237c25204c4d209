package p2p

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/custos-wallet/custos/ids"
)

// ErrSessionReused is wrapped by the error of a SessionRegistry's Claim,
// and so of Open, for a session id this node has taken part in before.
var ErrSessionReused = errors.New("p2p: session id reused")

// SessionRegistry remembers every session id this node has taken part in, durably.
type SessionRegistry interface {
	// Claim records id; it fails with an error wrapping ErrSessionReused if id was
	// claimed before, by this process or an earlier one.
	Claim(ctx context.Context, id ids.SessionID) error
}

// MemorySessionRegistry is a SessionRegistry in memory, for tests. It is
// not durable: after a restart it has forgotten every id, so a node must
// not run on it.
type MemorySessionRegistry struct {
	mu   sync.Mutex
	used map[ids.SessionID]bool // guarded by mu
}

// NewMemorySessionRegistry returns an empty in-memory registry (tests only;
// see MemorySessionRegistry).
func NewMemorySessionRegistry() *MemorySessionRegistry {
	return &MemorySessionRegistry{used: make(map[ids.SessionID]bool)}
}

// Claim records id, refusing one claimed before.
func (r *MemorySessionRegistry) Claim(ctx context.Context, id ids.SessionID) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("p2p: claim session %s: %w", id, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.used[id] {
		return fmt.Errorf("p2p: claim session %s: %w", id, ErrSessionReused)
	}
	r.used[id] = true
	return nil
}
