package tss

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// ignoreLogger skips tss-lib's logger goroutine, started at package init.
var ignoreLogger = goleak.IgnoreTopFunction("github.com/ipfs/go-log/writer.(*MirrorWriter).logRoutine")

// memStore is a PreParamsStore that keeps serialised sets, as the encrypted
// store will.
type memStore struct {
	mu    sync.Mutex
	blobs [][]byte
	saves int
}

func (s *memStore) Load(ctx context.Context) ([]*PreParams, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*PreParams
	for _, b := range s.blobs {
		p, err := UnmarshalPreParams(b)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func (s *memStore) Save(ctx context.Context, sets []*PreParams) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs = nil
	for _, p := range sets {
		b, err := p.MarshalSecret()
		if err != nil {
			return err
		}
		s.blobs = append(s.blobs, b)
	}
	s.saves++
	return nil
}

func (s *memStore) holds(p *PreParams) bool {
	b, _ := p.MarshalSecret()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.blobs {
		if string(x) == string(b) {
			return true
		}
	}
	return false
}

func TestPoolHandsOutEachSetOnceAndPersists(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreLogger)
	// Three takes, a target of two and two generations at once make at
	// most seven sets: every one a distinct fixture.
	var next, started atomic.Int32
	var running, peak atomic.Int32
	// The first two generations wait for each other, so that the two
	// allowed at once do run at once; a third at once would show in peak.
	both := make(chan struct{})
	gen := func(ctx context.Context) (*PreParams, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if s := started.Add(1); s == 2 {
			close(both)
		} else if s < 2 {
			select {
			case <-both:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		i := int(next.Add(1) - 1)
		if i >= 7 {
			return nil, errors.New("test generator ran out of fixtures")
		}
		return fixture(t, i), nil
	}
	store := &memStore{}
	ctx, cancel := context.WithCancel(context.Background())
	pool, err := NewPool(ctx, PoolConfig{Target: 2, Concurrency: 2, Generate: gen, Store: store, RetryDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- pool.Run(ctx) }()
	var taken []*PreParams
	for range 3 {
		p, err := pool.Take(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The removal is durable before the set is handed out.
		if store.holds(p) {
			t.Fatal("a set was handed out while the store still held it")
		}
		for _, q := range taken {
			a, _ := p.MarshalSecret()
			b, _ := q.MarshalSecret()
			if string(a) == string(b) {
				t.Fatal("a set was handed out twice")
			}
		}
		taken = append(taken, p)
	}
	// The pool tops itself up to its target.
	refill := time.NewTimer(30 * time.Second)
	defer refill.Stop()
	for {
		changed := pool.Changed()
		if pool.Len() >= 2 {
			break
		}
		select {
		case <-changed:
		case <-refill.C:
			t.Fatalf("pool holds %d after 30s, want its target 2", pool.Len())
		}
	}
	if pool.Len() != 2 {
		t.Fatalf("pool holds %d, want its target 2", pool.Len())
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	if peak.Load() > 2 {
		t.Fatalf("%d generations ran at once, limit 2", peak.Load())
	}
	// A restart loads the two ready sets, none of those handed out.
	reloaded, err := NewPool(context.Background(), PoolConfig{Target: 2, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if reloaded.Len() != 2 {
		t.Fatalf("reloaded pool holds %d, want 2", reloaded.Len())
	}
	for _, p := range taken {
		if store.holds(p) {
			t.Fatal("a set handed out is back in the store")
		}
	}
}

func TestPoolTakeWaitsAndHonoursContext(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreLogger)
	pool, err := NewPool(context.Background(), PoolConfig{Target: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := pool.Take(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Take on an empty pool without Run: %v", err)
	}
}

func TestPoolRealGenerationIsCancellable(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreLogger)
	ctx, cancel := context.WithCancel(context.Background())
	// The real generation, cancelled once it has begun.
	began := make(chan struct{})
	gen := func(ctx context.Context) (*PreParams, error) {
		close(began)
		return GeneratePreParams(ctx)
	}
	pool, err := NewPool(ctx, PoolConfig{Target: 1, Generate: gen})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- pool.Run(ctx) }()
	<-began
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop after cancel")
	}
}

func TestPreParamsRefusesShortOrIncomplete(t *testing.T) {
	if _, err := NewPreParams(nil); err == nil {
		t.Fatal("nil accepted")
	}
	lp := fixture(t, 0).p
	lp.NTildei = lp.NTildei.Rsh(lp.NTildei, 1100)
	if _, err := NewPreParams(&lp); err == nil {
		t.Fatal("short N-tilde accepted")
	}
	if _, err := UnmarshalPreParams([]byte(`{"PaillierSK":null}`)); err == nil {
		t.Fatal("incomplete pre-parameters accepted")
	}
	if s := fixture(t, 1).String(); s != "preparams{secret redacted}" {
		t.Fatalf("String = %q", s)
	}
}
