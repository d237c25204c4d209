package store

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/policy"
)

// Ledger is the policy budget ledger kept in the store: reservations and
// their records survive restarts, and each call is one synced transaction.
type Ledger struct {
	s *Store
	// mu makes Reserve's check of every limit and its writes one step:
	// badger's conflict detection does not see a concurrent insert into a
	// range another transaction scanned.
	mu sync.Mutex
}

// Ledger returns the store's budget ledger. Use one per store.
func (s *Store) Ledger() *Ledger { return &Ledger{s: s} }

type ledgerEntry struct {
	Bucket string   `json:"bucket"`
	Amount *big.Int `json:"amount"`
	Count  uint64   `json:"count"`
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

func ledgerReqKey(id policy.RequestID) []byte {
	return append(append([]byte(nil), ledgerReqPrefix...), id...)
}

// ledgerBucketKeyPrefix is "ledger/b/<bucket>\x00": a bucket's records, by
// time, lie under it.
func ledgerBucketKeyPrefix(bucket string) []byte {
	return append(append(append([]byte(nil), ledgerBucketPrefix...), bucket...), 0)
}

// ledgerTime is a time as 20 digits that sort as the times do.
func ledgerTime(t time.Time) []byte {
	return fmt.Appendf(nil, "%020d", uint64(t.UnixNano())+1<<63)
}

// ledgerBucketKey is where entry i of request id lies in its bucket: the
// index keeps two entries of one request in one bucket apart.
func ledgerBucketKey(bucket string, t time.Time, id policy.RequestID, i int) []byte {
	k := append(ledgerBucketKeyPrefix(bucket), ledgerTime(t)...)
	return fmt.Appendf(k, "/%s/%d", id, i)
}

// Reserve checks every entry against its limit over its window (as Usage at
// r.Time) and records all of them, or none; the records are on disk when it
// returns. It fails with policy.ErrBudgetExceeded or
// policy.ErrDuplicateRequest.
func (l *Ledger) Reserve(ctx context.Context, r policy.Reservation) error {
	if r.ID == "" {
		return errors.New("store: reserve: the request id is empty")
	}
	entries := make([]ledgerEntry, 0, len(r.Entries))
	for _, e := range r.Entries {
		amount := new(big.Int)
		if e.Amount != nil {
			amount.Set(e.Amount)
		}
		if amount.Sign() < 0 {
			return fmt.Errorf("store: reserve %s: negative amount in bucket %s", r.ID, e.Bucket)
		}
		if strings.IndexByte(e.Bucket, 0) >= 0 {
			return fmt.Errorf("store: reserve %s: bucket name holds a NUL byte", r.ID)
		}
		entries = append(entries, ledgerEntry{Bucket: e.Bucket, Amount: amount, Count: e.Count})
	}
	at := r.Time.UTC().Round(0)
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.s.update(ctx, func(txn *badgerTxn) error {
		dup, err := exists(txn, ledgerReqKey(r.ID))
		if err != nil {
			return err
		}
		if dup {
			return fmt.Errorf("%w: %s", policy.ErrDuplicateRequest, r.ID)
		}
		for i, e := range r.Entries {
			u, err := l.usage(txn, e.Bucket, e.Window, at)
			if err != nil {
				return err
			}
			amount := entries[i].Amount
			if e.LimitAmount != nil && new(big.Int).Add(u.Amount, amount).Cmp(e.LimitAmount) > 0 {
				return fmt.Errorf("%w: %s: %s used + %s > %s", policy.ErrBudgetExceeded, e.Bucket, u.Amount, amount, e.LimitAmount)
			}
			if e.LimitCount > 0 && u.Count+e.Count > e.LimitCount {
				return fmt.Errorf("%w: %s: count %d used + %d > %d", policy.ErrBudgetExceeded, e.Bucket, u.Count, e.Count, e.LimitCount)
			}
		}
		for i, e := range entries {
			if err := l.s.putJSON(txn, recLedger, ledgerBucketKey(e.Bucket, at, r.ID, i), ledgerUse{Amount: e.Amount, Count: e.Count}); err != nil {
				return err
			}
		}
		return l.s.putJSON(txn, recLedger, ledgerReqKey(r.ID), ledgerRequest{Time: at, State: policy.Reserved, Entries: entries})
	})
	if err != nil {
		return fmt.Errorf("store: reserve %s: %w", r.ID, err)
	}
	return nil
}

// Commit marks a reservation as spent.
func (l *Ledger) Commit(ctx context.Context, id policy.RequestID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.s.update(ctx, func(txn *badgerTxn) error {
		req, err := l.request(txn, id)
		if err != nil {
			return err
		}
		req.State = policy.Committed
		return l.s.putJSON(txn, recLedger, ledgerReqKey(id), req)
	})
	if err != nil {
		return fmt.Errorf("store: commit %s: %w", id, err)
	}
	return nil
}

// Release drops a reservation whose signing failed; releasing a committed
// one is refused, since its signature exists.
func (l *Ledger) Release(ctx context.Context, id policy.RequestID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.s.update(ctx, func(txn *badgerTxn) error {
		req, err := l.request(txn, id)
		if err != nil {
			return err
		}
		if req.State == policy.Committed {
			return errors.New("already committed")
		}
		for i, e := range req.Entries {
			if err := txn.Delete(ledgerBucketKey(e.Bucket, req.Time, id, i)); err != nil {
				return err
			}
		}
		return txn.Delete(ledgerReqKey(id))
	})
	if err != nil {
		return fmt.Errorf("store: release %s: %w", id, err)
	}
	return nil
}

func (l *Ledger) request(txn *badgerTxn, id policy.RequestID) (ledgerRequest, error) {
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
func (l *Ledger) Usage(ctx context.Context, bucket string, window time.Duration, now time.Time) (policy.Usage, error) {
	var u policy.Usage
	err := l.s.view(ctx, func(txn *badgerTxn) error {
		var err error
		u, err = l.usage(txn, bucket, window, now)
		return err
	})
	if err != nil {
		return policy.Usage{}, fmt.Errorf("store: usage of %s: %w", bucket, err)
	}
	return u, nil
}

func (l *Ledger) usage(txn *badgerTxn, bucket string, window time.Duration, now time.Time) (policy.Usage, error) {
	u := policy.Usage{Amount: new(big.Int)}
	prefix := ledgerBucketKeyPrefix(bucket)
	start := prefix
	if window > 0 {
		start = append(append([]byte(nil), prefix...), ledgerTime(now.Add(-window))...)
	}
	it := txn.NewIterator(badgerIteratorOptions(prefix))
	defer it.Close()
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		key := it.Item().KeyCopy(nil)
		val, err := it.Item().ValueCopy(nil)
		if err != nil {
			return u, fmt.Errorf("store: read %q: %w", key, err)
		}
		plain, err := l.s.open(recLedger, key, val)
		if err != nil {
			return u, err
		}
		var use ledgerUse
		if err := jsonUnmarshal(key, plain, &use); err != nil {
			return u, err
		}
		if use.Amount == nil {
			return u, fmt.Errorf("%w: %q: no amount", ErrCorrupt, key)
		}
		u.Amount.Add(u.Amount, use.Amount)
		u.Count += use.Count
	}
	return u, nil
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
			id := policy.RequestID(key[len(ledgerReqPrefix):])
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
