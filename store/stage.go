package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
)

// A Stage lets a budget reservation commit with the writes of a batch that
// comes after it, at one sync: a node reserves while it decides a
// proposal and commits the reservation with the proposal's journal.
//
// Ledger.Reserve under a context from Stage checks every limit as
// always, then holds the ledger's lock and writes nothing: the next
// reservation's check waits until the staged one is committed by
// Batch.CommitStage (its records are on disk, and counted, once that batch
// commits) or dropped by Cancel. So the check and the write stay one step
// for every other reservation, and a crash before the batch leaves
// nothing reserved. Ledger.Release under the same context drops the
// staged reservation. A stage holds at most one reservation.
//
// The holder must not wait, while a reservation is staged, for anything
// that takes the ledger's lock (another reservation, a release outside
// the stage's context, a prune), and must call Cancel on every path; a
// batch that committed the stage makes Cancel do nothing.
type Stage struct {
	s *Store

	mu     sync.Mutex
	held   *staged // the reservation staged, while ledgerMu is held for it
	closed bool    // committed or cancelled: Reserve no longer stages
}

type staged struct {
	id      ids.RequestID
	at      time.Time
	entries []ledgerEntry
}

type stageKey struct{}

// Stage returns a context under which Ledger.Reserve stages its
// reservation in st.
func (s *Store) Stage(ctx context.Context) (context.Context, *Stage) {
	st := &Stage{s: s}
	return context.WithValue(ctx, stageKey{}, st), st
}

// stageOf returns the stage ctx carries for store s, if any (a closed
// one too: it refuses to stage again).
func stageOf(ctx context.Context, s *Store) *Stage {
	st, _ := ctx.Value(stageKey{}).(*Stage)
	if st == nil || st.s != s {
		return nil
	}
	return st
}

// Cancel drops a reservation staged and not committed, and closes the
// stage. It may be called any number of times.
func (st *Stage) Cancel() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	if st.held != nil {
		st.held = nil
		st.s.ledgerMu.Unlock()
	}
}

// Staged reports the id of the reservation staged and not yet committed.
func (st *Stage) Staged() (ids.RequestID, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.held == nil {
		return "", false
	}
	return st.held.id, true
}

// reserve is Ledger.Reserve in a stage: the checks, with ledgerMu taken
// and kept when they pass.
func (st *Stage) reserve(ctx context.Context, l *Ledger, r policy.Reservation, at time.Time, entries []ledgerEntry) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || st.held != nil {
		return fmt.Errorf("store: reserve %s: %w: the stage is closed or holds a reservation already", r.ID, policy.ErrBadReservation)
	}
	l.s.ledgerMu.Lock()
	defer func() {
		if st.held == nil { // refused, or a panic in the check
			l.s.ledgerMu.Unlock()
		}
	}()
	if err := l.check(ctx, r, at, entries); err != nil {
		return fmt.Errorf("store: reserve %s: %w", r.ID, err)
	}
	st.held = &staged{id: r.ID, at: at, entries: entries}
	return nil
}

// release drops the staged reservation of id, reporting whether the
// stage held it.
func (st *Stage) release(id ids.RequestID) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.held == nil || st.held.id != id {
		return false
	}
	st.held = nil
	st.s.ledgerMu.Unlock()
	return true
}

// CommitStage writes the reservation st holds, if any, with the batch's
// other writes. Once the batch commits, its records count in every usage
// and the ledger's lock is let go; if the batch fails, the reservation
// stays staged for Cancel. The batch must be of st's store.
func (b *Batch) CommitStage(st *Stage) error {
	if st == nil {
		return nil
	}
	if st.s != b.s {
		return fmt.Errorf("store: commit stage: a stage of another store")
	}
	st.mu.Lock()
	held := st.held
	st.mu.Unlock()
	if held == nil {
		return nil
	}
	l := b.s.Ledger()
	if err := l.write(b.txn, held.id, held.at, held.entries); err != nil {
		return fmt.Errorf("store: reserve %s: %w", held.id, err)
	}
	b.state.staged = st
	return nil
}

// committed ends st after its batch: the reservation counted and the lock
// let go when err is nil; otherwise it stays staged, its buckets read from
// disk again (the commit may have reached the disk all the same).
func (st *Stage) committed(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.held == nil {
		return
	}
	l := st.s.Ledger()
	if err != nil {
		l.invalidate(st.held.entries)
		return
	}
	l.counted(st.held.id, st.held.at, st.held.entries)
	st.held = nil
	st.closed = true
	st.s.ledgerMu.Unlock()
}
