package tss

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
)

// modulusBits is the size of every Paillier modulus and N-tilde accepted,
// ours or a peer's: what tss-lib makes, and what its keygen insists on.
const modulusBits = 2048

// PreParams is one set of Paillier pre-parameters (a Paillier key and the
// N-tilde safe-prime setup). Each set is secret and is used for exactly one
// key generation or reshare.
type PreParams struct {
	p    keygen.LocalPreParams
	used atomic.Bool // set by the engine when a session takes the set
}

// NewPreParams wraps and checks tss-lib pre-parameters.
func NewPreParams(p *keygen.LocalPreParams) (*PreParams, error) {
	if p == nil || !p.ValidateWithProof() || p.PaillierSK.LambdaN == nil || p.PaillierSK.PhiN == nil {
		return nil, errors.New("tss: pre-parameters are incomplete")
	}
	if p.PaillierSK.N.BitLen() != modulusBits || p.NTildei.BitLen() != modulusBits {
		return nil, fmt.Errorf("tss: pre-parameters have a modulus of other than %d bits", modulusBits)
	}
	return &PreParams{p: *p}, nil
}

// take marks the set used; it fails if a session already took it, so one
// set never serves two key generations or reshares in this process.
func (p *PreParams) take() error {
	if !p.used.CompareAndSwap(false, true) {
		return errors.New("tss: pre-parameters were already used by another session")
	}
	return nil
}

// String redacts.
func (p *PreParams) String() string { return "preparams{secret redacted}" }

// MarshalSecret serialises the pre-parameters, secrets included: store the
// result encrypted only. (Deliberately not MarshalBinary, which generic
// encoders would call.)
func (p *PreParams) MarshalSecret() ([]byte, error) { return json.Marshal(p.p) }

// valid reports whether p is complete; a zero PreParams is not.
func (p *PreParams) valid() bool { return p != nil && p.p.ValidateWithProof() }

// UnmarshalPreParams decodes and checks serialised pre-parameters.
func UnmarshalPreParams(b []byte) (*PreParams, error) {
	var lp keygen.LocalPreParams
	if err := json.Unmarshal(b, &lp); err != nil {
		// The error could quote a secret number: name its kind only.
		return nil, fmt.Errorf("tss: decode pre-parameters: malformed JSON (%T)", err)
	}
	return NewPreParams(&lp)
}

// PreParamsStore persists a pool's sets. The encrypted store implements it;
// Save must be durable before it returns, because a set handed out must
// never be handed out again after a restart.
type PreParamsStore interface {
	Load(ctx context.Context) ([]*PreParams, error)
	Save(ctx context.Context, sets []*PreParams) error
}

// Generator makes one set of pre-parameters.
type Generator func(ctx context.Context) (*PreParams, error)

// GeneratePreParams makes a set with tss-lib, single-threaded; it honours
// ctx cancellation.
func GeneratePreParams(ctx context.Context) (*PreParams, error) {
	lp, err := keygen.GeneratePreParamsWithContext(ctx, 1)
	if err != nil {
		return nil, fmt.Errorf("tss: generate pre-parameters: %w", err)
	}
	return NewPreParams(lp)
}

// PoolConfig configures a Pool.
type PoolConfig struct {
	Target      int            // sets to keep ready
	Concurrency int            // generations at once (at least 1)
	Generate    Generator      // defaults to GeneratePreParams
	Store       PreParamsStore // optional
	Logger      *slog.Logger
	RetryDelay  time.Duration // after a failed generation; default 1s
}

// Pool keeps pre-parameters ready: Run fills it in the background and Take
// hands each set out once.
type Pool struct {
	cfg PoolConfig

	mu       sync.Mutex
	ready    []*PreParams  // guarded by mu
	inFlight int           // guarded by mu; generations running
	changed  chan struct{} // guarded by mu; closed and replaced on every change
}

// NewPool makes a pool and loads what its store holds.
func NewPool(ctx context.Context, cfg PoolConfig) (*Pool, error) {
	if cfg.Target < 1 {
		return nil, fmt.Errorf("tss: pool target %d is below 1", cfg.Target)
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	if cfg.Generate == nil {
		cfg.Generate = GeneratePreParams
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	p := &Pool{cfg: cfg, changed: make(chan struct{})}
	if cfg.Store != nil {
		sets, err := cfg.Store.Load(ctx)
		if err != nil {
			return nil, fmt.Errorf("tss: load pre-parameter pool: %w", err)
		}
		p.ready = sets
	}
	return p, nil
}

// Len is the number of sets ready.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

// Changed returns a channel closed at the pool's next change: a set added
// or taken, or a generation ended. Read it before looking at Len, so that
// no change falls between the look and the wait.
func (p *Pool) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// Take removes one set from the pool, persists the removal, and only then
// returns it; it waits for the background generation when the pool is empty.
func (p *Pool) Take(ctx context.Context) (*PreParams, error) {
	for {
		p.mu.Lock()
		if len(p.ready) > 0 {
			rest := append([]*PreParams(nil), p.ready[1:]...)
			if err := p.saveLocked(ctx, rest); err != nil {
				p.mu.Unlock()
				return nil, err
			}
			set := p.ready[0]
			p.ready = rest
			p.notifyLocked()
			p.mu.Unlock()
			return set, nil
		}
		wait := p.changed
		p.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("tss: wait for pre-parameters: %w", ctx.Err())
		}
	}
}

// Run generates sets, at most Concurrency at once, until the pool holds
// Target, keeps it topped up as sets are taken, and returns ctx's error once
// ctx is cancelled and every generation has stopped.
func (p *Pool) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		p.mu.Lock()
		if len(p.ready)+p.inFlight < p.cfg.Target && p.inFlight < p.cfg.Concurrency && ctx.Err() == nil {
			p.inFlight++
			p.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.generate(ctx)
			}()
			continue
		}
		wait := p.changed
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wait:
		}
	}
}

func (p *Pool) generate(ctx context.Context) {
	set, err := p.cfg.Generate(ctx)
	if err == nil {
		p.mu.Lock()
		next := append(append([]*PreParams(nil), p.ready...), set)
		if err = p.saveLocked(ctx, next); err == nil {
			p.ready = next
		}
		p.mu.Unlock()
	}
	if err != nil && ctx.Err() == nil {
		p.cfg.Logger.Error("pre-parameter generation failed", "err", err)
		select {
		case <-time.After(p.cfg.RetryDelay):
		case <-ctx.Done():
		}
	}
	p.mu.Lock()
	p.inFlight--
	p.notifyLocked()
	p.mu.Unlock()
}

func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Pool) saveLocked(ctx context.Context, sets []*PreParams) error {
	if p.cfg.Store == nil {
		return nil
	}
	if err := p.cfg.Store.Save(ctx, sets); err != nil {
		return fmt.Errorf("tss: save pre-parameter pool: %w", err)
	}
	return nil
}
