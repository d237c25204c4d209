package policy

import (
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"
)

// Ledger errors.
var (
	ErrBudgetExceeded   = errors.New("policy: budget exceeded")
	ErrDuplicateRequest = errors.New("policy: request already reserved")
	ErrUnknownRequest   = errors.New("policy: no reservation for request")
)

// Entry is one budget bucket that a reservation draws on, with the limits
// to enforce atomically at reservation time.
type Entry struct {
	// Bucket names what is counted: see BudgetBucket and GrantBucket.
	Bucket string
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
	ID      RequestID
	Time    time.Time
	Entries []Entry
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
	ID     RequestID
	Bucket string
	Amount *big.Int
	Count  uint64
	Time   time.Time
	State  RecordState
}

// Ledger records budget use. Implementations must make Reserve atomic: the
// check of every entry's limit and the recording of all entries happen
// together, so concurrent requests cannot jointly exceed a budget. A
// persistent implementation must keep reservations across restarts.
type Ledger interface {
	// Reserve checks every entry against its limit over its window (as
	// Usage at r.Time) and records all of them, or none. It fails with
	// ErrBudgetExceeded or ErrDuplicateRequest.
	Reserve(r Reservation) error
	// Commit marks a reservation as spent.
	Commit(id RequestID) error
	// Release drops a reservation whose signing failed.
	Release(id RequestID) error
	// Usage sums reserved and committed records of bucket with times at
	// or after now-window (records dated after now count too: a
	// reservation must not escape a window by its date); a zero window
	// means all time.
	Usage(bucket string, window time.Duration, now time.Time) (Usage, error)
}

// MemLedger is an in-memory Ledger, safe for concurrent use. Records and
// NewMemLedger let a caller persist and restore it.
type MemLedger struct {
	mu sync.Mutex
	// guarded by mu
	buckets map[string][]*Record
	byID    map[RequestID][]*Record
}

// NewMemLedger returns a ledger holding records (for example, reloaded
// after a restart).
func NewMemLedger(records ...Record) *MemLedger {
	l := &MemLedger{buckets: map[string][]*Record{}, byID: map[RequestID][]*Record{}}
	for i := range records {
		r := records[i]
		r.Amount = new(big.Int).Set(r.Amount)
		l.buckets[r.Bucket] = append(l.buckets[r.Bucket], &r)
		l.byID[r.ID] = append(l.byID[r.ID], &r)
	}
	return l
}

// Reserve implements Ledger.
func (l *MemLedger) Reserve(r Reservation) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.byID[r.ID]; dup {
		return fmt.Errorf("%w: %s", ErrDuplicateRequest, r.ID)
	}
	for _, e := range r.Entries {
		u := l.usageLocked(e.Bucket, e.Window, r.Time)
		if e.LimitAmount != nil && new(big.Int).Add(u.Amount, e.Amount).Cmp(e.LimitAmount) > 0 {
			return fmt.Errorf("%w: %s: %s used + %s > %s", ErrBudgetExceeded, e.Bucket, u.Amount, e.Amount, e.LimitAmount)
		}
		if e.LimitCount > 0 && u.Count+e.Count > e.LimitCount {
			return fmt.Errorf("%w: %s: count %d used + %d > %d", ErrBudgetExceeded, e.Bucket, u.Count, e.Count, e.LimitCount)
		}
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
func (l *MemLedger) Commit(id RequestID) error {
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
func (l *MemLedger) Release(id RequestID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	recs, ok := l.byID[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownRequest, id)
	}
	for _, r := range recs {
		if r.State == Committed {
			return fmt.Errorf("policy: release %s: already committed", id)
		}
	}
	for _, r := range recs {
		b := l.buckets[r.Bucket]
		for i, x := range b {
			if x == r {
				l.buckets[r.Bucket] = append(b[:i:i], b[i+1:]...)
				break
			}
		}
	}
	delete(l.byID, id)
	return nil
}

// Usage implements Ledger.
func (l *MemLedger) Usage(bucket string, window time.Duration, now time.Time) (Usage, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.usageLocked(bucket, window, now), nil
}

func (l *MemLedger) usageLocked(bucket string, window time.Duration, now time.Time) Usage {
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

// BudgetBucket names the bucket of a rule's budget for one agent, key and
// asset ("native" or a token address).
func BudgetBucket(rule string, agent AgentID, key fmt.Stringer, asset string) string {
	return "rule/" + rule + "/agent/" + string(agent) + "/key/" + key.String() + "/asset/" + asset
}

// GrantBucket names the bucket of a grant's total caps.
func GrantBucket(grant string, asset string) string { return "grant/" + grant + "/asset/" + asset }
