package store

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
)

// Ledger is the policy budget ledger kept in the store: reservations and
// their records survive restarts, and each call is one synced transaction.
type Ledger struct{ s *Store }

var _ policy.Ledger = (*Ledger)(nil)

// Ledger returns the store's budget ledger.
func (s *Store) Ledger() *Ledger { return &Ledger{s: s} }

type ledgerEntry struct {
	Bucket policy.Bucket `json:"bucket"`
	Amount *big.Int      `json:"amount"`
	Count  uint64        `json:"count"`
}

// ledgerRequest is a reservation as stored under its request id.
type ledgerRequest struct {
	Time    time.Time          `json:"time"`
	State   policy.RecordState `json:"state"`
	Entries []ledgerEntry      `json:"entries"`
}

type ledgerUse struct {
	Amount *big.Int `json:"amount"`
	Count  uint64   `json:"count"`
}

var (
	ledgerReqPrefix    = []byte("ledger/r/")
	ledgerBucketPrefix = []byte("ledger/b/")
)

func ledgerReqKey(id ids.RequestID) []byte {
	return append(append([]byte(nil), ledgerReqPrefix...), id...)
}

// ledgerBucketKeyPrefix is "ledger/b/<bucket>\x00": a bucket's records, by
// time, lie under it.
func ledgerBucketKeyPrefix(bucket policy.Bucket) []byte {
	return append(append(append([]byte(nil), ledgerBucketPrefix...), bucket...), 0)
}

// ledgerTime is a time as 20 digits that sort as the times do.
func ledgerTime(t time.Time) []byte {
	return fmt.Appendf(nil, "%020d", uint64(t.UnixNano())+1<<63)
}

// ledgerBucketKey is where entry i of request id lies in its bucket: the
// index keeps two entries of one request in one bucket apart.
func ledgerBucketKey(bucket policy.Bucket, t time.Time, id ids.RequestID, i int) []byte {
	k := append(ledgerBucketKeyPrefix(bucket), ledgerTime(t)...)
	return fmt.Appendf(k, "/%s/%d", id, i)
}

// Reserve checks every entry against its limit over its window (as Usage at
// r.Time), entries of one bucket together, and records all of them, or
// none; the records are on disk when it returns. It fails with
// policy.ErrBudgetExceeded, policy.ErrDuplicateRequest or
// policy.ErrBadReservation. Under a context from Store.Stage it checks
// the same and stages the reservation instead (see Stage).
func (l *Ledger) Reserve(ctx context.Context, r policy.Reservation) error {
	entries := make([]ledgerEntry, 0, len(r.Entries))
	for i, e := range r.Entries {
		switch {
		case e.Bucket == "" || strings.IndexByte(string(e.Bucket), 0) >= 0:
			return fmt.Errorf("store: reserve %s: %w: entry %d has no bucket or a NUL in it", r.ID, policy.ErrBadReservation, i)
		case e.Amount == nil || e.Amount.Sign() < 0:
			return fmt.Errorf("store: reserve %s: %w: entry %d has no amount or a negative one", r.ID, policy.ErrBadReservation, i)
		case e.Window < 0:
			return fmt.Errorf("store: reserve %s: %w: entry %d has a negative window", r.ID, policy.ErrBadReservation, i)
		}
		entries = append(entries, ledgerEntry{Bucket: e.Bucket, Amount: new(big.Int).Set(e.Amount), Count: e.Count})
	}
	if r.ID == "" {
		return fmt.Errorf("store: reserve: %w: no request id", policy.ErrBadReservation)
	}
	at := r.Time.UTC().Round(0)
	if st := stageOf(ctx, l.s); st != nil {
		return st.reserve(ctx, l, r, at, entries)
	}
	l.s.ledgerMu.Lock()
	defer l.s.ledgerMu.Unlock()
	if err := l.check(ctx, r, at, entries); err != nil {
		return fmt.Errorf("store: reserve %s: %w", r.ID, err)
	}
	err := l.s.update(ctx, func(txn *badgerTxn) error { return l.write(txn, r.ID, at, entries) })
	if err != nil {
		if !errors.Is(err, policy.ErrDuplicateRequest) {
			// The commit may have reached the disk all the same (a
			// failed sync): read these buckets from disk again.
			l.invalidate(entries)
		}
		return fmt.Errorf("store: reserve %s: %w", r.ID, err)
	}
	l.counted(r.ID, at, entries)
	return nil
}

// check is Reserve's check of r, whose entries are entries, at time at:
// no reservation of its id yet, and every limit kept, entries of one
// bucket together. The caller holds ledgerMu: every writer holds it and
// updates the records in memory before it lets go, so the usages read
// here are the committed ones.
func (l *Ledger) check(ctx context.Context, r policy.Reservation, at time.Time, entries []ledgerEntry) error {
	used := make([]policy.Usage, len(r.Entries))
	for i, e := range r.Entries {
		u, err := l.cachedUsage(ctx, e.Bucket, e.Window, at)
		if err != nil {
			return err
		}
		used[i] = u
	}
	var dup bool
	if err := l.s.view(ctx, func(txn *badgerTxn) error {
		var err error
		dup, err = exists(txn, ledgerReqKey(r.ID))
		return err
	}); err != nil {
		return err
	}
	if dup {
		return fmt.Errorf("%w: %s", policy.ErrDuplicateRequest, r.ID)
	}
	pending := map[policy.Bucket]policy.Usage{}
	for i, e := range r.Entries {
		u := policy.Usage{Amount: new(big.Int).Set(used[i].Amount), Count: used[i].Count}
		if p, ok := pending[e.Bucket]; ok {
			u.Amount.Add(u.Amount, p.Amount)
			u.Count += p.Count
		}
		amount := entries[i].Amount
		if e.LimitAmount != nil && new(big.Int).Add(u.Amount, amount).Cmp(e.LimitAmount) > 0 {
			return fmt.Errorf("%w: %s: %s used + %s > %s", policy.ErrBudgetExceeded, e.Bucket, u.Amount, amount, e.LimitAmount)
		}
		if e.LimitCount > 0 && u.Count+e.Count > e.LimitCount {
			return fmt.Errorf("%w: %s: count %d used + %d > %d", policy.ErrBudgetExceeded, e.Bucket, u.Count, e.Count, e.LimitCount)
		}
		p := pending[e.Bucket]
		if p.Amount == nil {
			p.Amount = new(big.Int)
		}
		p.Amount.Add(p.Amount, amount)
		p.Count += e.Count
		pending[e.Bucket] = p
	}
	return nil
}

// write records a checked reservation in txn: its bucket records and the
// reservation under its id, refused if the id holds one already.
func (l *Ledger) write(txn *badgerTxn, id ids.RequestID, at time.Time, entries []ledgerEntry) error {
	dup, err := exists(txn, ledgerReqKey(id))
	if err != nil {
		return err
	}
	if dup {
		return fmt.Errorf("%w: %s", policy.ErrDuplicateRequest, id)
	}
	for i, e := range entries {
		if err := l.s.putJSON(txn, recLedger, ledgerBucketKey(e.Bucket, at, id, i), ledgerUse{Amount: e.Amount, Count: e.Count}); err != nil {
			return err
		}
	}
	return l.s.putJSON(txn, recLedger, ledgerReqKey(id), ledgerRequest{Time: at, State: policy.Reserved, Entries: entries})
}

// counted adds a committed reservation's records to the buckets in
// memory; the caller holds ledgerMu.
func (l *Ledger) counted(id ids.RequestID, at time.Time, entries []ledgerEntry) {
	l.s.usageMu.Lock()
	defer l.s.usageMu.Unlock()
	for i, e := range entries {
		if recs := l.s.usage[e.Bucket]; recs != nil {
			recs[string(ledgerBucketKey(e.Bucket, at, id, i))] = ledgerUse{Amount: e.Amount, Count: e.Count}
		}
	}
}

// Commit marks a reservation as spent.
func (l *Ledger) Commit(ctx context.Context, id ids.RequestID) error {
	l.s.ledgerMu.Lock()
	defer l.s.ledgerMu.Unlock()
	err := l.s.update(ctx, func(txn *badgerTxn) error {
		_, err := l.commit(txn, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: commit %s: %w", id, err)
	}
	return nil
}

// commit marks id's reservation spent in txn, reporting false when it
// was committed already; a reservation not held is policy.ErrUnknownRequest.
func (l *Ledger) commit(txn *badgerTxn, id ids.RequestID) (bool, error) {
	req, err := l.request(txn, id)
	if err != nil || req.State == policy.Committed {
		return false, err
	}
	req.State = policy.Committed
	return true, l.s.putJSON(txn, recLedger, ledgerReqKey(id), req)
}

// Release drops a reservation whose signing failed; releasing a committed
// one is refused, since its signature exists.
func (l *Ledger) Release(ctx context.Context, id ids.RequestID) error {
	if st := stageOf(ctx, l.s); st != nil && st.release(id) {
		return nil // staged, never written
	}
	l.s.ledgerMu.Lock()
	defer l.s.ledgerMu.Unlock()
	var dropped ledgerRequest
	err := l.s.update(ctx, func(txn *badgerTxn) error {
		req, err := l.request(txn, id)
		if err != nil {
			return err
		}
		if req.State == policy.Committed {
			return fmt.Errorf("%w: %s", policy.ErrCommitted, id)
		}
		dropped = req
		return l.drop(txn, id, req)
	})
	if err != nil {
		l.invalidate(dropped.Entries)
		return fmt.Errorf("store: release %s: %w", id, err)
	}
	l.forget(map[ids.RequestID]ledgerRequest{id: dropped})
	return nil
}

// invalidate drops the records in memory of the entries' buckets, after
// a write whose outcome on disk is not known: the next check reads them
// from disk.
func (l *Ledger) invalidate(entries []ledgerEntry) {
	l.s.usageMu.Lock()
	defer l.s.usageMu.Unlock()
	for _, e := range entries {
		delete(l.s.usage, e.Bucket)
	}
}

// forget removes reservations whose drop committed from the bucket
// records in memory; the caller holds ledgerMu.
func (l *Ledger) forget(dropped map[ids.RequestID]ledgerRequest) {
	l.s.usageMu.Lock()
	defer l.s.usageMu.Unlock()
	for id, req := range dropped {
		for i, e := range req.Entries {
			if recs := l.s.usage[e.Bucket]; recs != nil {
				delete(recs, string(ledgerBucketKey(e.Bucket, req.Time, id, i)))
			}
		}
	}
}

// drop deletes a reservation and its bucket records.
func (l *Ledger) drop(txn *badgerTxn, id ids.RequestID, req ledgerRequest) error {
	for i, e := range req.Entries {
		if err := txn.Delete(ledgerBucketKey(e.Bucket, req.Time, id, i)); err != nil {
			return fmt.Errorf("store: delete ledger record: %w", err)
		}
	}
	if err := txn.Delete(ledgerReqKey(id)); err != nil {
		return fmt.Errorf("store: delete ledger record: %w", err)
	}
	return nil
}

// pruneBatch bounds the reservations deleted in one transaction, below
// badger's transaction size limit (a variable for tests).
var pruneBatch = 256

// Prune forgets every reservation dated before before, reserved or
// committed, and returns how many it forgot. Each batch of reservations is
// one transaction, so a crash between batches leaves whole reservations.
func (l *Ledger) Prune(ctx context.Context, before time.Time) (int, error) {
	l.s.ledgerMu.Lock()
	defer l.s.ledgerMu.Unlock()
	n := 0
	for {
		done := 0
		var dropped map[ids.RequestID]ledgerRequest
		err := l.s.update(ctx, func(txn *badgerTxn) error {
			done = 0
			dropped = map[ids.RequestID]ledgerRequest{}
			var old []ids.RequestID
			var reqs []ledgerRequest
			err := l.s.scan(txn, recLedger, ledgerReqPrefix, func(key, plain []byte) error {
				var req ledgerRequest
				if err := jsonUnmarshal(key, plain, &req); err != nil {
					return err
				}
				if req.Time.Before(before) {
					old = append(old, ids.RequestID(key[len(ledgerReqPrefix):]))
					reqs = append(reqs, req)
					if len(old) == pruneBatch {
						return errStop
					}
				}
				return nil
			})
			if err != nil && !errors.Is(err, errStop) {
				return err
			}
			for i, id := range old {
				if err := l.drop(txn, id, reqs[i]); err != nil {
					return err
				}
				dropped[id] = reqs[i]
			}
			done = len(old)
			return nil
		})
		if err != nil {
			for _, req := range dropped {
				l.invalidate(req.Entries)
			}
			return n, fmt.Errorf("store: prune ledger: %w", err)
		}
		l.forget(dropped)
		n += done
		if done < pruneBatch {
			return n, nil
		}
	}
}

func (l *Ledger) request(txn *badgerTxn, id ids.RequestID) (ledgerRequest, error) {
	var req ledgerRequest
	err := l.s.getJSON(txn, recLedger, ledgerReqKey(id), &req)
	if errors.Is(err, ErrNotFound) {
		return req, fmt.Errorf("%w: %s", policy.ErrUnknownRequest, id)
	}
	return req, err
}

// Usage sums the reserved and committed records of bucket dated at or after
// now-window (records dated after now count too); a zero window means all
// time.
//
// A bucket's records are read from disk (decrypted and decoded) the first
// time it is asked for, and kept in memory after that, as Reserve, Release
// and Prune change them: a reservation's check no longer reads every
// record of its window, which grows with the agent's traffic.
func (l *Ledger) Usage(ctx context.Context, bucket policy.Bucket, window time.Duration, now time.Time) (policy.Usage, error) {
	u, err := l.cachedUsage(ctx, bucket, window, now)
	if err != nil {
		return policy.Usage{}, fmt.Errorf("store: usage of %s: %w", bucket, err)
	}
	return u, nil
}

// cachedUsage is Usage from the bucket's records in memory, read from
// disk first if they are not.
func (l *Ledger) cachedUsage(ctx context.Context, bucket policy.Bucket, window time.Duration, now time.Time) (policy.Usage, error) {
	if err := ctx.Err(); err != nil {
		return policy.Usage{}, fmt.Errorf("store: %w", err)
	}
	l.s.mu.RLock()
	closed := l.s.closed
	l.s.mu.RUnlock()
	if closed {
		return policy.Usage{}, ErrSealed
	}
	l.s.usageMu.Lock()
	defer l.s.usageMu.Unlock()
	recs := l.s.usage[bucket]
	if recs == nil {
		if ledgerReadHook != nil {
			ledgerReadHook(bucket)
		}
		recs = map[string]ledgerUse{}
		err := l.s.view(ctx, func(txn *badgerTxn) error { return l.records(txn, bucket, recs) })
		if err != nil {
			return policy.Usage{}, err
		}
		if l.s.usage == nil {
			l.s.usage = map[policy.Bucket]map[string]ledgerUse{}
		}
		l.s.usage[bucket] = recs
	}
	u := policy.Usage{Amount: new(big.Int)}
	start := ""
	if window > 0 {
		start = string(append(ledgerBucketKeyPrefix(bucket), ledgerTime(now.Add(-window))...))
	}
	for key, use := range recs {
		// The keys sort by time within the bucket, as the records on
		// disk do: those from the window's start on count.
		if key >= start {
			u.Amount.Add(u.Amount, use.Amount)
			u.Count += use.Count
		}
	}
	return u, nil
}

// ledgerReadHook, if set (by tests), is called when a bucket's records are
// read from disk.
var ledgerReadHook func(policy.Bucket)

// records reads every record of bucket into recs, by key.
func (l *Ledger) records(txn *badgerTxn, bucket policy.Bucket, recs map[string]ledgerUse) error {
	return l.s.scan(txn, recLedger, ledgerBucketKeyPrefix(bucket), func(key, plain []byte) error {
		var use ledgerUse
		if err := jsonUnmarshal(key, plain, &use); err != nil {
			return err
		}
		if use.Amount == nil {
			return fmt.Errorf("%w: %q: no amount", ErrCorrupt, key)
		}
		recs[string(key)] = use
		return nil
	})
}

// Held lists the requests whose reservation the ledger holds reserved,
// not committed, in id order: those without any budget entry too, which
// Records, a row per entry, does not show.
func (l *Ledger) Held(ctx context.Context) ([]ids.RequestID, error) {
	var out []ids.RequestID
	err := l.s.view(ctx, func(txn *badgerTxn) error {
		return l.s.scan(txn, recLedger, ledgerReqPrefix, func(key, plain []byte) error {
			var req ledgerRequest
			if err := jsonUnmarshal(key, plain, &req); err != nil {
				return err
			}
			if req.State == policy.Reserved {
				out = append(out, ids.RequestID(key[len(ledgerReqPrefix):]))
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: ledger reservations: %w", err)
	}
	return out, nil
}

// Records returns every ledger record, one per request and bucket.
func (l *Ledger) Records(ctx context.Context) ([]policy.Record, error) {
	var out []policy.Record
	err := l.s.view(ctx, func(txn *badgerTxn) error {
		return l.s.scan(txn, recLedger, ledgerReqPrefix, func(key, plain []byte) error {
			var req ledgerRequest
			if err := jsonUnmarshal(key, plain, &req); err != nil {
				return err
			}
			id := ids.RequestID(key[len(ledgerReqPrefix):])
			for _, e := range req.Entries {
				out = append(out, policy.Record{ID: id, Bucket: e.Bucket, Amount: e.Amount, Count: e.Count, Time: req.Time, State: req.State})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: ledger records: %w", err)
	}
	return out, nil
}

// CommitReservation marks request id's reservation as spent, as
// Ledger.Commit, with the batch's other writes: a node commits the spend
// with the signature's journal, at one sync. It reports false, and
// writes nothing, when the ledger holds no reservation of id or holds it
// committed already; the batch goes on either way, since the signature it
// journals exists. It takes no ledger lock: it changes no usage, only the
// reservation's state, and badger's conflict detection orders it with a
// release or prune of the same reservation (the batch runs again).
func (b *Batch) CommitReservation(id ids.RequestID) (bool, error) {
	ok, err := b.s.Ledger().commit(b.txn, id)
	switch {
	case errors.Is(err, policy.ErrUnknownRequest):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("store: commit %s: %w", id, err)
	}
	return ok, nil
}
