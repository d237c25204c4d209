package store

import (
	"context"
	"fmt"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/p2p"
)

var sessionPrefix = []byte("session/")

func sessionKey(id ids.SessionID) []byte {
	return append(append([]byte(nil), sessionPrefix...), id.String()...)
}

type claimedSession struct {
	Claimed time.Time `json:"claimed"`
}

// SessionIDs is the durable registry of the session ids this node has
// taken part in: each id is claimed once, ever. It is the p2p.Config
// Sessions of a node.
type SessionIDs struct{ s *Store }

var _ p2p.SessionRegistry = (*SessionIDs)(nil)

// SessionIDs returns the store's session id registry.
func (s *Store) SessionIDs() *SessionIDs { return &SessionIDs{s: s} }

// Claim records id, committed and synced before it returns, and fails with
// an error wrapping p2p.ErrSessionReused if id was claimed before.
func (r *SessionIDs) Claim(ctx context.Context, id ids.SessionID) error {
	if id.IsZero() {
		return fmt.Errorf("store: claim session: the session id is zero")
	}
	key := sessionKey(id)
	err := r.s.update(ctx, func(txn *badgerTxn) error {
		used, err := exists(txn, key)
		if err != nil {
			return err
		}
		if used {
			return p2p.ErrSessionReused
		}
		return r.s.putJSON(txn, recSession, key, claimedSession{Claimed: time.Now().UTC()})
	})
	if err != nil {
		return fmt.Errorf("store: claim session %s: %w", id, err)
	}
	return nil
}

// Used reports whether id was claimed.
func (r *SessionIDs) Used(ctx context.Context, id ids.SessionID) (bool, error) {
	var used bool
	err := r.s.view(ctx, func(txn *badgerTxn) error {
		var err error
		used, err = exists(txn, sessionKey(id))
		return err
	})
	return used, err
}
