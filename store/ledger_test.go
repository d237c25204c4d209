package store

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/policy/ledgertest"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// closingLedger closes its store when the suite closes the ledger.
type closingLedger struct {
	*Ledger
	s *Store
}

func (c closingLedger) Close() error { return c.s.Close() }

func TestLedgerConformance(t *testing.T) {
	key := newKeyFile(t)
	ledgertest.RunPersistent(t, func(t *testing.T, dir string) policy.Ledger {
		s, err := Open(dir, key, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return closingLedger{Ledger: s.Ledger(), s: s}
	})
}

func res(id string, at time.Time, entries ...policy.Entry) policy.Reservation {
	return policy.Reservation{ID: ids.RequestID(id), Time: at, Entries: entries}
}

func spend(bucket policy.Bucket, amount int64, limit int64, window time.Duration) policy.Entry {
	return policy.Entry{Bucket: bucket, Amount: big.NewInt(amount), Count: 1, Window: window, LimitAmount: big.NewInt(limit)}
}

func usage(t *testing.T, l *Ledger, bucket policy.Bucket, window time.Duration, now time.Time) (int64, uint64) {
	t.Helper()
	u, err := l.Usage(context.Background(), bucket, window, now)
	if err != nil {
		t.Fatal(err)
	}
	return u.Amount.Int64(), u.Count
}

func TestLedgerReserveCommitRelease(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	l := s.Ledger()
	day := 24 * time.Hour
	if err := l.Reserve(ctx, res("r1", t0, spend("a", 60, 100, day), spend("b", 1, 10, 0))); err != nil {
		t.Fatal(err)
	}
	if err := l.Reserve(ctx, res("r1", t0, spend("c", 1, 10, 0))); !errors.Is(err, policy.ErrDuplicateRequest) {
		t.Fatalf("duplicate: %v", err)
	}
	// One entry over its limit: nothing of the reservation is recorded.
	if err := l.Reserve(ctx, res("r2", t0.Add(time.Hour), spend("b", 1, 10, 0), spend("a", 41, 100, day))); !errors.Is(err, policy.ErrBudgetExceeded) {
		t.Fatalf("over budget: %v", err)
	}
	if a, n := usage(t, l, "b", 0, t0); a != 1 || n != 1 {
		t.Fatalf("a refused reservation was recorded: b used %d (%d)", a, n)
	}
	if err := l.Reserve(ctx, res("r2", t0.Add(time.Hour), spend("a", 40, 100, day))); err != nil {
		t.Fatal(err)
	}
	// Windows: r1 falls out a day after t0, r2 an hour later; later
	// records count too.
	if a, _ := usage(t, l, "a", day, t0.Add(day)); a != 100 {
		t.Fatalf("usage at t0+24h: %d", a)
	}
	if a, _ := usage(t, l, "a", day, t0.Add(day+time.Minute)); a != 40 {
		t.Fatalf("usage at t0+24h1m: %d", a)
	}
	if a, _ := usage(t, l, "a", day, t0.Add(-time.Hour)); a != 100 {
		t.Fatalf("usage before the records: %d", a)
	}
	if err := l.Commit(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx, "r1"); !errors.Is(err, policy.ErrCommitted) {
		t.Fatalf("release of a committed reservation: %v", err)
	}
	if err := l.Release(ctx, "r2"); err != nil {
		t.Fatal(err)
	}
	for _, op := range []func(context.Context, ids.RequestID) error{l.Commit, l.Release} {
		if err := op(ctx, "r2"); !errors.Is(err, policy.ErrUnknownRequest) {
			t.Fatalf("released request: %v", err)
		}
	}
	// A crash now, and a clean restart: the same records.
	crashed := openTest(t, crashCopy(t, s), key)
	s = reopen(t, s, key)
	for _, st := range []*Store{s, crashed} {
		l := st.Ledger()
		if a, n := usage(t, l, "a", 0, t0); a != 60 || n != 1 {
			t.Fatalf("usage after a restart: %d (%d)", a, n)
		}
		recs, err := l.Records(ctx)
		if err != nil || len(recs) != 2 {
			t.Fatalf("records: %+v %v", recs, err)
		}
		for _, r := range recs {
			if r.ID != "r1" || r.State != policy.Committed || !r.Time.Equal(t0) {
				t.Fatalf("record %+v", r)
			}
		}
		// The remaining budget holds across the restart.
		if err := l.Reserve(ctx, res("r3", t0, spend("a", 41, 100, day))); !errors.Is(err, policy.ErrBudgetExceeded) {
			t.Fatalf("over budget after a restart: %v", err)
		}
	}
}

// TestCommitReservationInBatch: a batch commits a reservation's spend
// with its other writes, all or none; a reservation not held, or held
// committed, is reported and the batch goes on.
func TestCommitReservationInBatch(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	l := s.Ledger()
	if err := l.Reserve(ctx, res("r1", t0, spend("a", 60, 100, 0))); err != nil {
		t.Fatal(err)
	}
	state := func(id ids.RequestID) policy.RecordState {
		t.Helper()
		recs, err := l.Records(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.ID == id {
				return r.State
			}
		}
		return 0
	}
	// A batch that fails after the commit commits nothing of it.
	failed := errors.New("a later write failed")
	err := s.Batch(ctx, func(b *Batch) error {
		if ok, err := b.CommitReservation("r1"); !ok || err != nil {
			t.Fatalf("commit in a batch: %v %v", ok, err)
		}
		return failed
	})
	if !errors.Is(err, failed) || state("r1") != policy.Reserved {
		t.Fatalf("a failed batch: %v, state %v", err, state("r1"))
	}
	var got []bool
	if err := s.Batch(ctx, func(b *Batch) error {
		got = got[:0]
		for _, id := range []ids.RequestID{"r1", "r1", "unknown"} {
			ok, err := b.CommitReservation(id)
			if err != nil {
				return err
			}
			got = append(got, ok)
		}
		return b.SaveRequest("r1", "signed", []byte(`{}`))
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[true false false]" {
		t.Fatalf("commits reported %v, want [true false false]", got)
	}
	s = reopen(t, s, key)
	l = s.Ledger()
	if state("r1") != policy.Committed {
		t.Fatalf("after a restart the reservation is %v, not committed", state("r1"))
	}
	if err := l.Release(ctx, "r1"); !errors.Is(err, policy.ErrCommitted) {
		t.Fatalf("release of a reservation committed in a batch: %v", err)
	}
	if a, n := usage(t, l, "a", 0, t0); a != 60 || n != 1 {
		t.Fatalf("usage of the committed spend: %d (%d)", a, n)
	}
}

func TestLedgerOneBucketTwiceInOneReservation(t *testing.T) {
	ctx := context.Background()
	l := openTest(t, t.TempDir(), newKeyFile(t)).Ledger()
	if err := l.Reserve(ctx, res("r1", t0, spend("a", 3, 100, 0), spend("a", 4, 100, 0))); err != nil {
		t.Fatal(err)
	}
	if a, n := usage(t, l, "a", 0, t0); a != 7 || n != 2 {
		t.Fatalf("usage %d (%d), want 7 (2)", a, n)
	}
	if err := l.Release(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if a, n := usage(t, l, "a", 0, t0); a != 0 || n != 0 {
		t.Fatalf("usage after release %d (%d)", a, n)
	}
}

func TestLedgerConcurrentReservationsHoldTheLimit(t *testing.T) {
	ctx := context.Background()
	l := openTest(t, t.TempDir(), newKeyFile(t)).Ledger()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := l.Reserve(ctx, res(fmt.Sprint("r", i), t0, policy.Entry{Bucket: "a", Amount: big.NewInt(1), Count: 1, LimitCount: 5}))
			if err != nil && !errors.Is(err, policy.ErrBudgetExceeded) {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			}
		}()
	}
	wg.Wait()
	if ok != 5 {
		t.Fatalf("%d reservations passed a count limit of 5", ok)
	}
}

func TestLedgerPruneInBatches(t *testing.T) {
	ctx := context.Background()
	defer func(n int) { pruneBatch = n }(pruneBatch)
	pruneBatch = 3
	l := openTest(t, t.TempDir(), newKeyFile(t)).Ledger()
	for i := range 10 {
		if err := l.Reserve(ctx, res(fmt.Sprint("r", i), t0.Add(time.Duration(i)*time.Minute), spend("a", 1, 100, 0))); err != nil {
			t.Fatal(err)
		}
	}
	n, err := l.Prune(ctx, t0.Add(7*time.Minute))
	if err != nil || n != 7 {
		t.Fatalf("pruned %d, %v; want 7", n, err)
	}
	if a, c := usage(t, l, "a", 0, t0); a != 3 || c != 3 {
		t.Fatalf("usage after prune %d (%d)", a, c)
	}
}

// TestLedgerUsageKeptInMemory: a bucket's records are read from disk
// once; after reservations, releases, commits and a prune, the usage in
// memory is what a reopened store reads from disk, for every window.
func TestLedgerUsageKeptInMemory(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	reads := map[policy.Bucket]int{}
	var mu sync.Mutex
	ledgerReadHook = func(b policy.Bucket) { mu.Lock(); reads[b]++; mu.Unlock() }
	t.Cleanup(func() { ledgerReadHook = nil })
	const a, b = policy.Bucket("rule/a"), policy.Bucket("rule/b")
	l := s.Ledger()
	// Two records on disk before the bucket is first read.
	for i := range 2 {
		if err := l.Reserve(ctx, res(fmt.Sprintf("req-pre%d", i), t0.Add(time.Duration(i)*time.Hour), spend(a, 10, 1000, 24*time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	if amt, n := usage(t, l, a, 0, t0); amt != 20 || n != 2 {
		t.Fatalf("usage of %s: %d in %d, want 20 in 2", a, amt, n)
	}
	for i := range 20 {
		at := t0.Add(time.Duration(i) * 3 * time.Hour)
		id := fmt.Sprintf("req-%02d", i)
		if err := l.Reserve(ctx, res(id, at, spend(a, int64(i+1), 1000, 24*time.Hour), spend(b, 1, 1000, time.Hour))); err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			if err := l.Commit(ctx, ids.RequestID(id)); err != nil {
				t.Fatal(err)
			}
		case 1:
			if err := l.Release(ctx, ids.RequestID(id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Over the limit: refused, counted nowhere.
	if err := l.Reserve(ctx, res("req-big", t0.Add(57*time.Hour), spend(a, 1000, 1000, 24*time.Hour))); !errors.Is(err, policy.ErrBudgetExceeded) {
		t.Fatalf("reserve over the limit: %v, want budget exceeded", err)
	}
	if _, err := l.Prune(ctx, t0.Add(20*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if reads[a] != 1 || reads[b] != 1 {
		t.Fatalf("bucket reads from disk %v: want one each", reads)
	}
	type point struct {
		bucket policy.Bucket
		window time.Duration
		now    time.Time
	}
	var points []point
	for _, bk := range []policy.Bucket{a, b, "rule/none"} {
		for _, w := range []time.Duration{0, time.Hour, 6 * time.Hour, 24 * time.Hour} {
			for h := 0; h <= 70; h += 7 {
				points = append(points, point{bk, w, t0.Add(time.Duration(h) * time.Hour)})
			}
		}
	}
	inMemory := make([][2]int64, len(points))
	for i, p := range points {
		amt, n := usage(t, l, p.bucket, p.window, p.now)
		inMemory[i] = [2]int64{amt, int64(n)}
	}
	s = reopen(t, s, key)
	l = s.Ledger()
	for i, p := range points {
		amt, n := usage(t, l, p.bucket, p.window, p.now)
		if got := [2]int64{amt, int64(n)}; got != inMemory[i] {
			t.Errorf("usage of %s over %v at %v: %v in memory, %v on disk", p.bucket, p.window, p.now, inMemory[i], got)
		}
	}
	if amt, n := usage(t, l, a, 0, t0); amt == 0 || n == 0 {
		t.Fatalf("usage of %s after the prune: %d in %d, want what the prune kept", a, amt, n)
	}
}

// TestLedgerUsageBesideReservations: usages read while reservations of
// the same bucket commit (the first read racing the first writes) end at
// the reservations' sum.
func TestLedgerUsageBesideReservations(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir(), newKeyFile(t))
	l := s.Ledger()
	const bk = policy.Bucket("rule/race")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- l.Reserve(ctx, res(fmt.Sprintf("req-r%02d", i), t0, spend(bk, 5, 1000, time.Hour)))
		}()
		go func() {
			defer wg.Done()
			_, err := l.Usage(ctx, bk, time.Hour, t0)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if amt, n := usage(t, l, bk, time.Hour, t0); amt != 80 || n != 16 {
		t.Fatalf("usage %d in %d, want 80 in 16", amt, n)
	}
}

// benchStore opens a store in a temporary directory, closed at the end.
func benchStore(b *testing.B) *Store {
	s, err := Open(b.TempDir(), Passphrase([]byte("bench")), fastArgon2)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkLedgerUsage: one usage of a bucket holding n records in its
// window, as a reservation's check reads it.
func BenchmarkLedgerUsage(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			ctx := context.Background()
			s := benchStore(b)
			l := s.Ledger()
			const bk = policy.Bucket("rule/bench")
			for i := range n {
				if err := l.Reserve(ctx, res(fmt.Sprintf("req-%05d", i), t0.Add(time.Duration(i)*time.Second), spend(bk, 1, 1<<40, 24*time.Hour))); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				if _, err := l.Usage(ctx, bk, 24*time.Hour, t0.Add(time.Hour)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestLedgerUsageAfterClose: a closed store answers no usage from the
// records it kept in memory.
func TestLedgerUsageAfterClose(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), newKeyFile(t), fastArgon2)
	if err != nil {
		t.Fatal(err)
	}
	l := s.Ledger()
	if err := l.Reserve(ctx, res("req-c1", t0, spend("rule/c", 1, 10, time.Hour))); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Usage(ctx, "rule/c", time.Hour, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Usage(ctx, "rule/c", time.Hour, t0); !errors.Is(err, ErrSealed) {
		t.Fatalf("usage after close: %v, want %v", err, ErrSealed)
	}
}

// BenchmarkSignatureJournal: what a signer writes once a signature
// exists, the ledger's commit of the spend then the signature's batch
// (two synced transactions, "separate"), or the commit inside the batch
// (one, "batched"). Alternate the two with -count to compare.
func BenchmarkSignatureJournal(b *testing.B) {
	for _, batched := range []bool{false, true} {
		name := "separate"
		if batched {
			name = "batched"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			s := benchStore(b)
			l := s.Ledger()
			for i := range b.N {
				if err := l.Reserve(ctx, res(fmt.Sprintf("req-%08d", i), t0, spend("rule/bench", 1, 1<<40, 0))); err != nil {
					b.Fatal(err)
				}
			}
			body := []byte(`{"signature":"0x00"}`)
			b.ResetTimer()
			for i := range b.N {
				id := ids.RequestID(fmt.Sprintf("req-%08d", i))
				if !batched {
					if err := l.Commit(ctx, id); err != nil {
						b.Fatal(err)
					}
				}
				err := s.Batch(ctx, func(bt *Batch) error {
					if batched {
						if _, err := bt.CommitReservation(id); err != nil {
							return err
						}
					}
					if err := bt.SaveRequest(id, "signed", body); err != nil {
						return err
					}
					if err := bt.AppendAudit(Entry{Kind: AuditSignature, RequestID: id, Decision: "signed", Time: t0}); err != nil {
						return err
					}
					return bt.AppendAudit(Entry{Kind: AuditSession, RequestID: id, Decision: "done", Time: t0})
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
