package store

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
)

// held lists the reservations on disk.
func heldIDs(t *testing.T, l *Ledger) []ids.RequestID {
	t.Helper()
	held, err := l.Held(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return held
}

// TestStagedReservation: a staged reservation is checked at once and
// written only with the batch that commits it; until then every other
// reservation waits, and after it counts the staged one, so the two
// together never exceed a limit. Cancelled, released under the stage, or
// in a batch that failed, it leaves nothing on disk and frees the lock.
func TestStagedReservation(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir(), newKeyFile(t))
	l := s.Ledger()
	const bucket = policy.Bucket("agent/native")
	full := func(id string) policy.Reservation { return res(id, t0, spend(bucket, 60, 100, time.Hour)) }

	t.Run("committed with a batch, and counted by the reservation that waited for it", func(t *testing.T) {
		sctx, st := s.Stage(ctx)
		defer st.Cancel()
		if err := l.Reserve(sctx, full("req:a")); err != nil {
			t.Fatal(err)
		}
		if id, ok := st.Staged(); !ok || id != "req:a" {
			t.Fatalf("staged %q %v", id, ok)
		}
		if held := heldIDs(t, l); len(held) != 0 {
			t.Fatalf("a staged reservation is on disk before its batch: %v", held)
		}
		// A second reservation of the same bucket waits for the stage.
		second := make(chan error, 1)
		go func() { second <- l.Reserve(ctx, full("req:b")) }()
		select {
		case err := <-second:
			t.Fatalf("a reservation went through while another was staged: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if err := s.Batch(ctx, func(b *Batch) error {
			if err := b.CommitStage(st); err != nil {
				return err
			}
			return b.SaveRequest("req:a", "proposed", []byte(`{}`))
		}); err != nil {
			t.Fatal(err)
		}
		if _, ok := st.Staged(); ok {
			t.Fatal("the stage still holds the committed reservation")
		}
		if err := <-second; !errors.Is(err, policy.ErrBudgetExceeded) {
			t.Fatalf("the second reservation: %v, want it over the limit with the staged one counted", err)
		}
		if held := heldIDs(t, l); !slices.Equal(held, []ids.RequestID{"req:a"}) {
			t.Fatalf("held after the batch: %v", held)
		}
		if amount, count := usage(t, l, bucket, time.Hour, t0); amount != 60 || count != 1 {
			t.Fatalf("usage %d/%d, want 60/1", amount, count)
		}
		// The stage is closed: it stages nothing more, and Cancel changes
		// nothing.
		if err := l.Reserve(sctx, res("req:c", t0)); !errors.Is(err, policy.ErrBadReservation) {
			t.Fatalf("a second reservation in a committed stage: %v", err)
		}
		st.Cancel()
		if held := heldIDs(t, l); !slices.Equal(held, []ids.RequestID{"req:a"}) {
			t.Fatalf("held after Cancel of a committed stage: %v", held)
		}
	})
	if err := l.Release(ctx, "req:a"); err != nil {
		t.Fatal(err)
	}

	// Each of these leaves nothing on disk and the budget whole: a
	// reservation of the full limit goes through after it.
	ends := map[string]func(t *testing.T, sctx context.Context, st *Stage){
		"cancelled": func(t *testing.T, _ context.Context, st *Stage) { st.Cancel() },
		"released under the stage": func(t *testing.T, sctx context.Context, _ *Stage) {
			if err := l.Release(sctx, "req:x"); err != nil {
				t.Fatal(err)
			}
		},
		"in a batch that failed, then cancelled": func(t *testing.T, _ context.Context, st *Stage) {
			bad := errors.New("a later write failed")
			err := s.Batch(ctx, func(b *Batch) error {
				if err := b.CommitStage(st); err != nil {
					return err
				}
				return bad
			})
			if !errors.Is(err, bad) {
				t.Fatalf("batch: %v", err)
			}
			if id, ok := st.Staged(); !ok || id != "req:x" {
				t.Fatalf("after the failed batch the stage holds %q %v, want req:x still staged", id, ok)
			}
			st.Cancel()
		},
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			sctx, st := s.Stage(ctx)
			defer st.Cancel()
			if err := l.Reserve(sctx, res("req:x", t0, spend(bucket, 100, 100, time.Hour))); err != nil {
				t.Fatal(err)
			}
			end(t, sctx, st)
			if held := heldIDs(t, l); len(held) != 0 {
				t.Fatalf("held: %v", held)
			}
			if err := l.Reserve(ctx, res("req:y", t0, spend(bucket, 100, 100, time.Hour))); err != nil {
				t.Fatalf("the full budget after the staged reservation ended: %v", err)
			}
			if err := l.Release(ctx, "req:y"); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("refused at the check, holding nothing", func(t *testing.T) {
		if err := l.Reserve(ctx, res("req:on-disk", t0, spend(bucket, 10, 100, time.Hour))); err != nil {
			t.Fatal(err)
		}
		for _, r := range []policy.Reservation{
			res("req:over", t0, spend(bucket, 91, 100, time.Hour)),
			res("req:on-disk", t0),
		} {
			sctx, st := s.Stage(ctx)
			err := l.Reserve(sctx, r)
			if !errors.Is(err, policy.ErrBudgetExceeded) && !errors.Is(err, policy.ErrDuplicateRequest) {
				t.Fatalf("%s: %v", r.ID, err)
			}
			if _, ok := st.Staged(); ok {
				t.Fatalf("%s: staged after a refusal", r.ID)
			}
			// The lock is free: a plain reservation does not wait.
			if err := l.Reserve(ctx, res("req:free", t0)); err != nil {
				t.Fatal(err)
			}
			if err := l.Release(ctx, "req:free"); err != nil {
				t.Fatal(err)
			}
			st.Cancel()
		}
	})
}
