// Package ledgertest is the conformance suite of policy.Ledger, in the
// manner of Vault's shared backend tests: every Ledger implementation (the
// in-memory one in package policy, the badger one in package store) runs
// Run, and a persistent one RunPersistent, from its own tests.
package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common"
)

// t0 is the suite's reference time.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

var key = common.HexToAddress("0xaAaAaAaaAaAaAaaAaAAAAAAAAaaaAaAaAaaAaaAa")

func bucket(name string) policy.Bucket {
	return policy.BudgetBucket(name, "bot", key, policy.AssetNative)
}

func entry(b policy.Bucket, amount int64) policy.Entry {
	return policy.Entry{Bucket: b, Amount: big.NewInt(amount), Count: 1, Window: time.Hour}
}

func closeLedger(t *testing.T, l policy.Ledger) {
	t.Helper()
	if c, ok := l.(io.Closer); ok {
		if err := c.Close(); err != nil {
			t.Fatalf("close ledger: %v", err)
		}
	}
}

// Run runs the suite against fresh ledgers made by open. open must return
// an empty ledger each time; the suite closes it (if it is an io.Closer)
// at the end of each subtest.
func Run(t *testing.T, open func(t *testing.T) policy.Ledger) {
	for _, c := range []struct {
		name string
		f    func(*testing.T, policy.Ledger)
	}{
		{"ReserveCommitUsage", testReserveCommitUsage},
		{"Duplicates", testDuplicates},
		{"AllOrNothing", testAllOrNothing},
		{"Limits", testLimits},
		{"Windows", testWindows},
		{"CommitRelease", testCommitRelease},
		{"Copies", testCopies},
		{"BadReservations", testBadReservations},
		{"CancelledContext", testCancelledContext},
		{"Prune", testPrune},
		{"BucketsApart", testBucketsApart},
		{"Concurrency", testConcurrency},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := open(t)
			defer closeLedger(t, l)
			c.f(t, l)
		})
	}
}

func usage(t *testing.T, l policy.Ledger, b policy.Bucket, window time.Duration, now time.Time) policy.Usage {
	t.Helper()
	u, err := l.Usage(t.Context(), b, window, now)
	if err != nil {
		t.Fatalf("usage %s: %v", b, err)
	}
	if u.Amount == nil {
		t.Fatalf("usage %s: nil amount", b)
	}
	return u
}

func wantUsage(t *testing.T, l policy.Ledger, b policy.Bucket, window time.Duration, now time.Time, amount int64, count uint64) {
	t.Helper()
	u := usage(t, l, b, window, now)
	if u.Amount.Cmp(big.NewInt(amount)) != 0 || u.Count != count {
		t.Fatalf("usage of %s over %s at %s: %s / %d, want %d / %d", b, window, now.Format(time.RFC3339), u.Amount, u.Count, amount, count)
	}
}

func reserve(t *testing.T, l policy.Ledger, id ids.RequestID, at time.Time, entries ...policy.Entry) {
	t.Helper()
	if err := l.Reserve(t.Context(), policy.Reservation{ID: id, Time: at, Entries: entries}); err != nil {
		t.Fatalf("reserve %s: %v", id, err)
	}
}

func testReserveCommitUsage(t *testing.T, l policy.Ledger) {
	a, b := bucket("a"), bucket("b")
	wantUsage(t, l, a, time.Hour, t0, 0, 0)
	reserve(t, l, "r1", t0, entry(a, 70), entry(b, 5))
	wantUsage(t, l, a, time.Hour, t0, 70, 1)
	wantUsage(t, l, b, time.Hour, t0, 5, 1)
	if err := l.Commit(t.Context(), "r1"); err != nil {
		t.Fatal(err)
	}
	// Committed records count as reserved ones did.
	wantUsage(t, l, a, time.Hour, t0, 70, 1)
	reserve(t, l, "r2", t0.Add(time.Minute), entry(a, 30))
	wantUsage(t, l, a, time.Hour, t0.Add(time.Minute), 100, 2)
	wantUsage(t, l, bucket("untouched"), 0, t0, 0, 0)
	// An entry may count nothing but requests, or nothing but an amount.
	reserve(t, l, "r3", t0, policy.Entry{Bucket: b, Amount: new(big.Int), Count: 2})
	wantUsage(t, l, b, 0, t0, 5, 3)
}

func testDuplicates(t *testing.T, l policy.Ledger) {
	a := bucket("a")
	reserve(t, l, "r1", t0, entry(a, 1))
	if err := l.Reserve(t.Context(), policy.Reservation{ID: "r1", Time: t0, Entries: []policy.Entry{entry(bucket("other"), 1)}}); !errors.Is(err, policy.ErrDuplicateRequest) {
		t.Fatalf("second reservation of r1: %v", err)
	}
	if err := l.Commit(t.Context(), "r1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reserve(t.Context(), policy.Reservation{ID: "r1", Time: t0, Entries: []policy.Entry{entry(a, 1)}}); !errors.Is(err, policy.ErrDuplicateRequest) {
		t.Fatalf("reservation of committed r1: %v", err)
	}
	wantUsage(t, l, a, time.Hour, t0, 1, 1)
	wantUsage(t, l, bucket("other"), time.Hour, t0, 0, 0)
	// A released id may be reserved again (a new attempt of the request).
	reserve(t, l, "r2", t0, entry(a, 1))
	if err := l.Release(t.Context(), "r2"); err != nil {
		t.Fatal(err)
	}
	reserve(t, l, "r2", t0, entry(a, 2))
	wantUsage(t, l, a, time.Hour, t0, 3, 2)
	// An empty reservation still holds its id.
	reserve(t, l, "r3", t0)
	if err := l.Reserve(t.Context(), policy.Reservation{ID: "r3", Time: t0}); !errors.Is(err, policy.ErrDuplicateRequest) {
		t.Fatalf("second empty reservation: %v", err)
	}
	if err := l.Commit(t.Context(), "r3"); err != nil {
		t.Fatalf("commit of an empty reservation: %v", err)
	}
}

func testAllOrNothing(t *testing.T, l policy.Ledger) {
	a, b := bucket("a"), bucket("b")
	limited := entry(b, 10)
	limited.LimitAmount = big.NewInt(5)
	err := l.Reserve(t.Context(), policy.Reservation{ID: "r1", Time: t0, Entries: []policy.Entry{entry(a, 3), limited}})
	if !errors.Is(err, policy.ErrBudgetExceeded) {
		t.Fatalf("over-limit reservation: %v", err)
	}
	// Neither entry was recorded, nor the id.
	wantUsage(t, l, a, 0, t0, 0, 0)
	wantUsage(t, l, b, 0, t0, 0, 0)
	if err := l.Commit(t.Context(), "r1"); !errors.Is(err, policy.ErrUnknownRequest) {
		t.Fatalf("commit of a refused reservation: %v", err)
	}
	reserve(t, l, "r1", t0, entry(a, 3))
	// Two entries of one reservation in one bucket are checked together.
	half := entry(b, 3)
	half.LimitAmount = big.NewInt(5)
	err = l.Reserve(t.Context(), policy.Reservation{ID: "r2", Time: t0, Entries: []policy.Entry{half, half}})
	if !errors.Is(err, policy.ErrBudgetExceeded) {
		t.Fatalf("two entries jointly over the limit: %v", err)
	}
	wantUsage(t, l, b, 0, t0, 0, 0)
}

func testLimits(t *testing.T, l policy.Ledger) {
	a := bucket("a")
	e := entry(a, 40)
	e.LimitAmount, e.LimitCount = big.NewInt(100), 3
	reserve(t, l, "r1", t0, e)
	reserve(t, l, "r2", t0, e)
	// Exactly at the limit is allowed; one more unit is not.
	e2 := e
	e2.Amount = big.NewInt(21)
	if err := l.Reserve(t.Context(), policy.Reservation{ID: "r3", Time: t0, Entries: []policy.Entry{e2}}); !errors.Is(err, policy.ErrBudgetExceeded) {
		t.Fatalf("amount over the limit: %v", err)
	}
	e2.Amount = big.NewInt(20)
	reserve(t, l, "r3", t0, e2)
	wantUsage(t, l, a, time.Hour, t0, 100, 3)
	// The count limit holds on its own.
	e3 := policy.Entry{Bucket: a, Amount: new(big.Int), Count: 1, Window: time.Hour, LimitCount: 3}
	if err := l.Reserve(t.Context(), policy.Reservation{ID: "r4", Time: t0, Entries: []policy.Entry{e3}}); !errors.Is(err, policy.ErrBudgetExceeded) {
		t.Fatalf("count over the limit: %v", err)
	}
	// Usage outside the entry's window does not count against it.
	late := e
	late.Amount = big.NewInt(100)
	reserve(t, l, "r5", t0.Add(time.Hour+time.Nanosecond), late)
}

func testWindows(t *testing.T, l policy.Ledger) {
	a := bucket("a")
	reserve(t, l, "r1", t0, entry(a, 10))
	// A record at exactly now-window counts; one instant later it does not.
	wantUsage(t, l, a, time.Hour, t0.Add(time.Hour), 10, 1)
	wantUsage(t, l, a, time.Hour, t0.Add(time.Hour+time.Nanosecond), 0, 0)
	// A zero window is all time.
	wantUsage(t, l, a, 0, t0.Add(1000*time.Hour), 10, 1)
	// A record dated after now counts too.
	reserve(t, l, "r2", t0.Add(2*time.Hour), entry(a, 5))
	wantUsage(t, l, a, time.Hour, t0, 15, 2)
	wantUsage(t, l, a, time.Hour, t0.Add(2*time.Hour), 5, 1)
	// And it counts against a reservation dated earlier.
	e := entry(a, 1)
	e.LimitAmount = big.NewInt(15)
	if err := l.Reserve(t.Context(), policy.Reservation{ID: "r3", Time: t0, Entries: []policy.Entry{e}}); !errors.Is(err, policy.ErrBudgetExceeded) {
		t.Fatalf("reservation under a later one: %v", err)
	}
}

func testCommitRelease(t *testing.T, l policy.Ledger) {
	a := bucket("a")
	for _, f := range []func(context.Context, ids.RequestID) error{l.Commit, l.Release} {
		if err := f(t.Context(), "nobody"); !errors.Is(err, policy.ErrUnknownRequest) {
			t.Fatalf("unknown request: %v", err)
		}
	}
	reserve(t, l, "r1", t0, entry(a, 10))
	reserve(t, l, "r2", t0, entry(a, 20))
	if err := l.Release(t.Context(), "r1"); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, l, a, time.Hour, t0, 20, 1)
	if err := l.Release(t.Context(), "r1"); !errors.Is(err, policy.ErrUnknownRequest) {
		t.Fatalf("second release: %v", err)
	}
	if err := l.Commit(t.Context(), "r2"); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(t.Context(), "r2"); err != nil {
		t.Fatalf("second commit: %v", err)
	}
	if err := l.Release(t.Context(), "r2"); !errors.Is(err, policy.ErrCommitted) {
		t.Fatalf("release of a committed request: %v", err)
	}
	wantUsage(t, l, a, time.Hour, t0, 20, 1)
}

func testCopies(t *testing.T, l policy.Ledger) {
	a := bucket("a")
	amt := big.NewInt(10)
	reserve(t, l, "r1", t0, policy.Entry{Bucket: a, Amount: amt, Count: 1})
	amt.SetInt64(1000) // the caller's value is not the ledger's
	u := usage(t, l, a, 0, t0)
	u.Amount.SetInt64(5000) // nor is the usage returned
	wantUsage(t, l, a, 0, t0, 10, 1)
}

func testBadReservations(t *testing.T, l policy.Ledger) {
	a := bucket("a")
	for name, r := range map[string]policy.Reservation{
		"no id":           {Time: t0, Entries: []policy.Entry{entry(a, 1)}},
		"nil amount":      {ID: "r1", Time: t0, Entries: []policy.Entry{{Bucket: a, Count: 1}}},
		"negative amount": {ID: "r2", Time: t0, Entries: []policy.Entry{entry(a, -5)}},
		"no bucket":       {ID: "r3", Time: t0, Entries: []policy.Entry{{Amount: big.NewInt(1)}}},
		"negative window": {ID: "r4", Time: t0, Entries: []policy.Entry{{Bucket: a, Amount: big.NewInt(1), Window: -time.Hour}}},
	} {
		if err := l.Reserve(t.Context(), r); !errors.Is(err, policy.ErrBadReservation) {
			t.Errorf("%s: %v", name, err)
		}
	}
	wantUsage(t, l, a, 0, t0, 0, 0)
}

func testCancelledContext(t *testing.T, l policy.Ledger) {
	a := bucket("a")
	reserve(t, l, "r1", t0, entry(a, 1))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Reserve(ctx, policy.Reservation{ID: "r2", Time: t0, Entries: []policy.Entry{entry(a, 1)}}); !errors.Is(err, context.Canceled) {
		t.Errorf("reserve: %v", err)
	}
	if err := l.Commit(ctx, "r1"); !errors.Is(err, context.Canceled) {
		t.Errorf("commit: %v", err)
	}
	if err := l.Release(ctx, "r1"); !errors.Is(err, context.Canceled) {
		t.Errorf("release: %v", err)
	}
	if _, err := l.Usage(ctx, a, 0, t0); !errors.Is(err, context.Canceled) {
		t.Errorf("usage: %v", err)
	}
	if _, err := l.Prune(ctx, t0.Add(time.Hour)); !errors.Is(err, context.Canceled) {
		t.Errorf("prune: %v", err)
	}
	// Nothing changed: r1 is still reserved, r2 was never recorded.
	wantUsage(t, l, a, 0, t0, 1, 1)
	if err := l.Release(t.Context(), "r1"); err != nil {
		t.Errorf("r1 after the cancelled calls: %v", err)
	}
	if err := l.Commit(t.Context(), "r2"); !errors.Is(err, policy.ErrUnknownRequest) {
		t.Errorf("r2 after a cancelled reserve: %v", err)
	}
}

func testPrune(t *testing.T, l policy.Ledger) {
	a := bucket("a")
	reserve(t, l, "old-committed", t0, entry(a, 1))
	if err := l.Commit(t.Context(), "old-committed"); err != nil {
		t.Fatal(err)
	}
	reserve(t, l, "old-reserved", t0.Add(time.Minute), entry(a, 2))
	reserve(t, l, "at-cut", t0.Add(time.Hour), entry(a, 4))
	reserve(t, l, "new", t0.Add(2*time.Hour), entry(a, 8))
	n, err := l.Prune(t.Context(), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("pruned %d reservations, want 2", n)
	}
	// A record at the cut-off stays; the older ones are gone, whatever
	// their state, and their ids are free again.
	wantUsage(t, l, a, 0, t0, 12, 2)
	if err := l.Commit(t.Context(), "old-reserved"); !errors.Is(err, policy.ErrUnknownRequest) {
		t.Errorf("commit of a pruned reservation: %v", err)
	}
	if err := l.Commit(t.Context(), "at-cut"); err != nil {
		t.Errorf("commit of a kept reservation: %v", err)
	}
	if n, err := l.Prune(t.Context(), t0.Add(time.Hour)); err != nil || n != 0 {
		t.Errorf("second prune: %d, %v", n, err)
	}
}

func testBucketsApart(t *testing.T, l policy.Ledger) {
	// Ids that contain the separators of a bucket name cannot reach
	// another rule's or agent's bucket.
	b1 := policy.BudgetBucket("r/agent/evil", "z", key, policy.AssetNative)
	b2 := policy.BudgetBucket("r", "evil/agent/z", key, policy.AssetNative)
	g1 := policy.GrantBucket("g/asset/native", policy.AssetNative)
	g2 := policy.GrantBucket("g", policy.Asset("native/asset/native"))
	for i, b := range []policy.Bucket{b1, b2, g1, g2} {
		reserve(t, l, ids.RequestID(fmt.Sprint("r", i)), t0, entry(b, int64(1)<<i))
	}
	for i, b := range []policy.Bucket{b1, b2, g1, g2} {
		wantUsage(t, l, b, 0, t0, int64(1)<<i, 1)
	}
}

func testConcurrency(t *testing.T, l policy.Ledger) {
	a := bucket("a")
	const workers, per = 8, 25
	limit, count := big.NewInt(500), uint64(40)
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				id := ids.RequestID(fmt.Sprintf("w%d-%d", w, i))
				e := policy.Entry{Bucket: a, Amount: big.NewInt(int64(7 + (w*per+i)%23)), Count: 1, Window: time.Hour, LimitAmount: limit, LimitCount: count}
				err := l.Reserve(context.Background(), policy.Reservation{ID: id, Time: t0, Entries: []policy.Entry{e}})
				if err != nil && !errors.Is(err, policy.ErrBudgetExceeded) {
					errs <- err
					continue
				}
				if err == nil && i%3 == 1 {
					if err := l.Release(context.Background(), id); err != nil {
						errs <- err
					}
				} else if err == nil && i%3 == 2 {
					if err := l.Commit(context.Background(), id); err != nil {
						errs <- err
					}
				}
				u, err := l.Usage(context.Background(), a, time.Hour, t0)
				if err != nil {
					errs <- err
				} else if u.Amount.Cmp(limit) > 0 || u.Count > count {
					errs <- fmt.Errorf("usage %s / %d exceeds %s / %d", u.Amount, u.Count, limit, count)
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	u := usage(t, l, a, time.Hour, t0)
	if u.Amount.Cmp(limit) > 0 || u.Count > count {
		t.Fatalf("final usage %s / %d exceeds %s / %d", u.Amount, u.Count, limit, count)
	}
	if u.Count == 0 {
		t.Fatal("nothing reserved")
	}
}

// RunPersistent runs the suite, and then checks that what a ledger
// holds survives closing it and opening the same store again: open(t, dir)
// opens the store in dir (a fresh directory per subtest), and the suite
// closes each ledger (if it is an io.Closer) before it reopens.
func RunPersistent(t *testing.T, open func(t *testing.T, dir string) policy.Ledger) {
	Run(t, func(t *testing.T) policy.Ledger { return open(t, t.TempDir()) })
	t.Run("Reopen", func(t *testing.T) {
		dir := t.TempDir()
		a, b := bucket("a"), bucket("b")
		l := open(t, dir)
		reserve(t, l, "committed", t0, entry(a, 10), entry(b, 1))
		if err := l.Commit(t.Context(), "committed"); err != nil {
			t.Fatal(err)
		}
		reserve(t, l, "reserved", t0.Add(time.Minute), entry(a, 20))
		reserve(t, l, "released", t0, entry(a, 40))
		if err := l.Release(t.Context(), "released"); err != nil {
			t.Fatal(err)
		}
		closeLedger(t, l)

		l = open(t, dir)
		wantUsage(t, l, a, time.Hour, t0.Add(time.Minute), 30, 2)
		wantUsage(t, l, b, 0, t0, 1, 1)
		for _, id := range []ids.RequestID{"committed", "reserved"} {
			if err := l.Reserve(t.Context(), policy.Reservation{ID: id, Time: t0, Entries: []policy.Entry{entry(a, 1)}}); !errors.Is(err, policy.ErrDuplicateRequest) {
				t.Errorf("%s reserved again after reopening: %v", id, err)
			}
		}
		if err := l.Release(t.Context(), "committed"); !errors.Is(err, policy.ErrCommitted) {
			t.Errorf("release of committed after reopening: %v", err)
		}
		// Limits see the reopened records.
		e := entry(a, 1)
		e.LimitAmount = big.NewInt(30)
		if err := l.Reserve(t.Context(), policy.Reservation{ID: "over", Time: t0, Entries: []policy.Entry{e}}); !errors.Is(err, policy.ErrBudgetExceeded) {
			t.Errorf("limit after reopening: %v", err)
		}
		if err := l.Release(t.Context(), "reserved"); err != nil {
			t.Errorf("release of reserved after reopening: %v", err)
		}
		if _, err := l.Prune(t.Context(), t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		closeLedger(t, l)

		// The release and the prune persisted too.
		l = open(t, dir)
		defer closeLedger(t, l)
		wantUsage(t, l, a, 0, t0, 0, 0)
		wantUsage(t, l, b, 0, t0, 0, 0)
	})
}
