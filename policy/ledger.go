package policy

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

// Ledger errors.
var (
	ErrBudgetExceeded   = errors.New("policy: budget exceeded")
	ErrDuplicateRequest = errors.New("policy: request already reserved")
	ErrUnknownRequest   = errors.New("policy: no reservation for request")
	ErrBadReservation   = errors.New("policy: malformed reservation")
	ErrCommitted        = errors.New("policy: reservation already committed")
)

// MaxWindow is the longest budget window, breaker window and grant
// lifetime a policy may use, and so how far back the ledger must remember:
// Engine.Prune forgets records older than this.
const MaxWindow = 366 * 24 * time.Hour

// Bucket names what a budget counts: see BudgetBucket and GrantBucket. Its
// text form is what a persistent ledger keys records by.
type Bucket string

// String returns the bucket's text form.
func (b Bucket) String() string { return string(b) }

// Asset is what a bucket counts: AssetNative (wei) or a token (TokenAsset).
type Asset string

// AssetNative is ether.
const AssetNative Asset = "native"

// TokenAsset is the asset of the ERC-20 contract token.
func TokenAsset(token common.Address) Asset { return Asset(token.Hex()) }

// escapeKey makes a free-form id safe as one component of a bucket key, so
// that no choice of rule, agent or grant id can name another's bucket.
func escapeKey(s string) string {
	if !strings.ContainsAny(s, "%/") {
		return s
	}
	return keyEscaper.Replace(s)
}

var keyEscaper = strings.NewReplacer("%", "%25", "/", "%2F")

// BudgetBucket names the bucket of a rule's budget for one agent, key and
// asset.
func BudgetBucket(rule string, agent ids.AgentID, key common.Address, asset Asset) Bucket {
	return Bucket("rule/" + escapeKey(rule) + "/agent/" + escapeKey(string(agent)) + "/key/" + key.Hex() + "/asset/" + escapeKey(string(asset)))
}

// GrantBucket names the bucket of a grant's total caps in one asset.
func GrantBucket(grant string, asset Asset) Bucket {
	return Bucket("grant/" + escapeKey(grant) + "/asset/" + escapeKey(string(asset)))
}

// Entry is one budget bucket that a reservation draws on, with the limits
// to enforce atomically at reservation time.
type Entry struct {
	Bucket Bucket
	// Amount is at least zero.
	Amount *big.Int
	Count  uint64
	// Window over which usage is summed; zero means all time.
	Window time.Duration
	// LimitAmount and LimitCount are the caps; nil and zero mean none.
	LimitAmount *big.Int
	LimitCount  uint64
}

// Reservation is the budget a request holds from approval until its
// signature is produced (Commit) or its session fails (Release).
type Reservation struct {
	ID      ids.RequestID
	Time    time.Time
	Entries []Entry
}

func (r Reservation) check() error {
	if r.ID == "" {
		return fmt.Errorf("%w: no request id", ErrBadReservation)
	}
	for i, e := range r.Entries {
		switch {
		case e.Bucket == "":
			return fmt.Errorf("%w: %s: entry %d has no bucket", ErrBadReservation, r.ID, i)
		case e.Amount == nil || e.Amount.Sign() < 0:
			return fmt.Errorf("%w: %s: entry %d has no amount or a negative one", ErrBadReservation, r.ID, i)
		case e.Window < 0:
			return fmt.Errorf("%w: %s: entry %d has a negative window", ErrBadReservation, r.ID, i)
		}
	}
	return nil
}

// Usage is what a bucket has spent over a window, reserved and committed.
type Usage struct {
	Amount *big.Int
	Count  uint64
}

// RecordState says whether a ledger record is held or spent.
type RecordState uint8

// Record states.
const (
	Reserved RecordState = iota + 1
	Committed
)

// Record is one stored ledger row; a persistent ledger stores these keyed by
// request id and bucket, and reloads them on restart.
type Record struct {
	ID     ids.RequestID
	Bucket Bucket
	Amount *big.Int
	Count  uint64
	Time   time.Time
	State  RecordState
}

// Ledger records budget use. Implementations must make Reserve atomic: the
// check of every entry's limit and the recording of all entries happen
// together, so concurrent requests cannot jointly exceed a budget. A
// persistent implementation must keep reservations across restarts.
// Package policy/ledgertest is the conformance suite every implementation
// must pass. Every method fails with the context's error, changing
// nothing, when ctx is already done.
type Ledger interface {
	// Reserve checks every entry against its limit over its window (as
	// Usage at r.Time) and records all of them, or none. It fails with
	// ErrBudgetExceeded, ErrDuplicateRequest (the id holds a reservation,
	// reserved or committed) or ErrBadReservation.
	Reserve(ctx context.Context, r Reservation) error
	// Commit marks a reservation as spent; committing twice is not an
	// error. It fails with ErrUnknownRequest.
	Commit(ctx context.Context, id ids.RequestID) error
	// Release drops a reservation whose signing failed; its id may be
	// reserved again. It fails with ErrUnknownRequest, or ErrCommitted
	// (the signature exists, so the budget stays spent).
	Release(ctx context.Context, id ids.RequestID) error
	// Usage sums reserved and committed records of bucket with times at
	// or after now-window (records dated after now count too: a
	// reservation must not escape a window by its date); a zero window
	// means all time.
	Usage(ctx context.Context, bucket Bucket, window time.Duration, now time.Time) (Usage, error)
	// Prune forgets every reservation dated before before, reserved or
	// committed, and returns how many it forgot. Engine.Prune calls it
	// with a cut-off no budget window or grant can reach back to.
	Prune(ctx context.Context, before time.Time) (int, error)
}

// MemLedger is an in-memory Ledger, safe for concurrent use. Records and
// NewMemLedger let a caller persist and restore it.
type MemLedger struct {
	mu sync.Mutex
	// guarded by mu
	buckets map[Bucket][]*Record
	byID    map[ids.RequestID][]*Record
}

// NewMemLedger returns a ledger holding records (for example, reloaded
// after a restart).
func NewMemLedger(records ...Record) *MemLedger {
	l := &MemLedger{buckets: map[Bucket][]*Record{}, byID: map[ids.RequestID][]*Record{}}
	for i := range records {
		r := records[i]
		r.Amount = new(big.Int).Set(r.Amount)
		l.buckets[r.Bucket] = append(l.buckets[r.Bucket], &r)
		l.byID[r.ID] = append(l.byID[r.ID], &r)
	}
	return l
}

// Reserve implements Ledger.
func (l *MemLedger) Reserve(ctx context.Context, r Reservation) error {
	if err := ctx.Err(); err != nil {
		return errorf("reserve %s: %w", r.ID, err)
	}
	if err := r.check(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.byID[r.ID]; dup {
		return fmt.Errorf("%w: %s", ErrDuplicateRequest, r.ID)
	}
	// Entries of one reservation may share a bucket: each is checked with
	// the ones before it counted.
	pending := map[Bucket]Usage{}
	for _, e := range r.Entries {
		u := l.usageLocked(e.Bucket, e.Window, r.Time)
		if p, ok := pending[e.Bucket]; ok {
			u.Amount.Add(u.Amount, p.Amount)
			u.Count += p.Count
		}
		if e.LimitAmount != nil && new(big.Int).Add(u.Amount, e.Amount).Cmp(e.LimitAmount) > 0 {
			return fmt.Errorf("%w: %s: %s used + %s > %s", ErrBudgetExceeded, e.Bucket, u.Amount, e.Amount, e.LimitAmount)
		}
		if e.LimitCount > 0 && u.Count+e.Count > e.LimitCount {
			return fmt.Errorf("%w: %s: count %d used + %d > %d", ErrBudgetExceeded, e.Bucket, u.Count, e.Count, e.LimitCount)
		}
		p := pending[e.Bucket]
		if p.Amount == nil {
			p.Amount = new(big.Int)
		}
		p.Amount.Add(p.Amount, e.Amount)
		p.Count += e.Count
		pending[e.Bucket] = p
	}
	recs := make([]*Record, 0, len(r.Entries))
	for _, e := range r.Entries {
		rec := &Record{ID: r.ID, Bucket: e.Bucket, Amount: new(big.Int).Set(e.Amount), Count: e.Count, Time: r.Time, State: Reserved}
		l.buckets[e.Bucket] = append(l.buckets[e.Bucket], rec)
		recs = append(recs, rec)
	}
	l.byID[r.ID] = recs
	return nil
}

// Commit implements Ledger.
func (l *MemLedger) Commit(ctx context.Context, id ids.RequestID) error {
	if err := ctx.Err(); err != nil {
		return errorf("commit %s: %w", id, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	recs, ok := l.byID[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownRequest, id)
	}
	for _, r := range recs {
		r.State = Committed
	}
	return nil
}

// Release implements Ledger. Releasing a committed request is refused: the
// signature exists.
func (l *MemLedger) Release(ctx context.Context, id ids.RequestID) error {
	if err := ctx.Err(); err != nil {
		return errorf("release %s: %w", id, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	recs, ok := l.byID[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownRequest, id)
	}
	for _, r := range recs {
		if r.State == Committed {
			return fmt.Errorf("%w: %s", ErrCommitted, id)
		}
	}
	l.dropLocked(id, recs)
	return nil
}

func (l *MemLedger) dropLocked(id ids.RequestID, recs []*Record) {
	for _, r := range recs {
		b := l.buckets[r.Bucket]
		for i, x := range b {
			if x == r {
				b = append(b[:i:i], b[i+1:]...)
				break
			}
		}
		if len(b) == 0 {
			delete(l.buckets, r.Bucket)
		} else {
			l.buckets[r.Bucket] = b
		}
	}
	delete(l.byID, id)
}

// Usage implements Ledger.
func (l *MemLedger) Usage(ctx context.Context, bucket Bucket, window time.Duration, now time.Time) (Usage, error) {
	if err := ctx.Err(); err != nil {
		return Usage{}, errorf("usage %s: %w", bucket, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.usageLocked(bucket, window, now), nil
}

// Prune implements Ledger.
func (l *MemLedger) Prune(ctx context.Context, before time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, errorf("prune: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for id, recs := range l.byID {
		if len(recs) > 0 && recs[0].Time.Before(before) {
			l.dropLocked(id, recs)
			n++
		}
	}
	return n, nil
}

func (l *MemLedger) usageLocked(bucket Bucket, window time.Duration, now time.Time) Usage {
	u := Usage{Amount: new(big.Int)}
	since := now.Add(-window)
	for _, r := range l.buckets[bucket] {
		if window > 0 && r.Time.Before(since) {
			continue
		}
		u.Amount.Add(u.Amount, r.Amount)
		u.Count += r.Count
	}
	return u
}

// Records returns a copy of every record, for persistence.
func (l *MemLedger) Records() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Record
	for _, recs := range l.byID {
		for _, r := range recs {
			c := *r
			c.Amount = new(big.Int).Set(r.Amount)
			out = append(out, c)
		}
	}
	return out
}
