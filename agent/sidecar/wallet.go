package sidecar

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strconv"
	"sync"
	"time"

	"github.com/custos-wallet/custos/agent/rpc"
	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Defaults applied by New to a zero Config field.
const (
	// DefaultWait is how long Sign waits for a request to become final
	// (a guardian's approval, say) before it answers *rpc.Pending.
	DefaultWait = 30 * time.Second
	// DefaultExpiry is how long a submitted request stays valid: a
	// guardian may approve it that long after the agent asked.
	DefaultExpiry = time.Hour
	// DefaultSigningGrace is how long Sign keeps waiting past the wait
	// for a request that is no longer waiting for anyone but still signing.
	DefaultSigningGrace = 2 * time.Minute
	// DefaultKeysTTL is how long Accounts answers from the key list it
	// last read: every send checks its from address, and the list changes
	// only with a key generation.
	DefaultKeysTTL = 30 * time.Second
)

// pollSlice bounds one long poll: a wake-up the coordinator misses then
// costs at most this long.
const pollSlice = 15 * time.Second

// Errors of the Wallet.
var (
	// ErrUnknownAccount: the address is not one of the agent's keys.
	ErrUnknownAccount = errors.New("sidecar: address is not one of the agent's keys")
	// ErrUntrusted: the coordinator's answer does not match what the
	// sidecar asked for (another digest, a signature of someone else).
	ErrUntrusted = errors.New("sidecar: coordinator answer does not match the request")
	// ErrFailed: the request ended without a signature and without a
	// policy denial (failed or expired).
	ErrFailed = errors.New("sidecar: request ended without a signature")
)

// Config configures a Wallet.
type Config struct {
	// Client is the coordinator's REST client. Required.
	Client *client.Client
	// Credential is the agent's credential; every request is signed with
	// it. Required.
	Credential *agentauth.Credential
	// Keys are the keys the agent signs with; empty means every key the
	// coordinator lists.
	Keys []ids.KeyID
	// Wait bounds how long Sign waits for a final answer before a request
	// still pending approval is returned as *rpc.Pending.
	Wait time.Duration
	// Expiry is the lifetime of each request submitted.
	Expiry time.Duration
	// SigningGrace: see DefaultSigningGrace.
	SigningGrace time.Duration
	// KeysTTL: see DefaultKeysTTL.
	KeysTTL time.Duration
	// Grant, if set, is a guardian-signed session grant (the policy's JSON
	// form) attached to every request.
	Grant json.RawMessage
	// Now is the clock; nil is time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Wallet signs through the cluster. It implements rpc.Wallet and, through
// Signer, x402.Signer. It is safe for concurrent use.
type Wallet struct {
	cfg Config
	cl  *client.Client
	log *slog.Logger

	mu       sync.Mutex
	keys     map[common.Address]api.Key // guarded by mu; nil until first loaded
	list     []api.Key                  // guarded by mu: in order
	loadedAt time.Time                  // guarded by mu
}

// New returns a Wallet for cfg, with defaults filled in.
func New(cfg Config) (*Wallet, error) {
	if cfg.Client == nil {
		return nil, errors.New("sidecar: a coordinator client is required")
	}
	if cfg.Credential == nil {
		return nil, errors.New("sidecar: an agent credential is required")
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = DefaultExpiry
	}
	if cfg.Expiry > api.MaxExpiry {
		return nil, fmt.Errorf("sidecar: expiry %v is over the API's bound %v", cfg.Expiry, api.MaxExpiry)
	}
	if cfg.SigningGrace <= 0 {
		cfg.SigningGrace = DefaultSigningGrace
	}
	if cfg.KeysTTL <= 0 {
		cfg.KeysTTL = DefaultKeysTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Grant) > 0 {
		var v map[string]json.RawMessage
		if err := json.Unmarshal(cfg.Grant, &v); err != nil {
			return nil, fmt.Errorf("sidecar: grant is not a JSON object: %w", err)
		}
	}
	return &Wallet{cfg: cfg, cl: cfg.Client, log: cfg.Logger}, nil
}

// Agent returns the agent id the wallet signs for.
func (w *Wallet) Agent() ids.AgentID { return w.cfg.Credential.Agent() }

// Client returns the coordinator client.
func (w *Wallet) Client() *client.Client { return w.cl }

// Keys returns the agent's keys, as the coordinator lists them, in the
// order of Config.Keys (or the coordinator's).
func (w *Wallet) Keys(ctx context.Context) ([]api.Key, error) {
	var out []api.Key
	if len(w.cfg.Keys) == 0 {
		var ks []api.Key
		err := w.outlast(ctx, "keys", func() error {
			var err error
			ks, err = w.cl.Keys(ctx)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("sidecar: list keys: %w", err)
		}
		out = ks
	} else {
		for _, id := range w.cfg.Keys {
			var k *api.Key
			err := w.outlast(ctx, "keys", func() error {
				var err error
				k, err = w.cl.Key(ctx, id)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("sidecar: key %s: %w", id, err)
			}
			out = append(out, *k)
		}
	}
	m := make(map[common.Address]api.Key, len(out))
	for _, k := range out {
		m[k.Address] = k
	}
	w.mu.Lock()
	w.keys, w.list, w.loadedAt = m, out, w.cfg.Now()
	w.mu.Unlock()
	return out, nil
}

// outlast makes call again after each 429's Retry-After, for as long as
// the configured wait allows, so the agent's own rate limit slows its
// calls rather than failing them; any other outcome is returned. The call
// must be safe to repeat (a submit carries the same body, so its
// idempotency key makes it one request).
func (w *Wallet) outlast(ctx context.Context, what string, call func() error) error {
	until := w.cfg.Now().Add(w.cfg.Wait)
	for {
		err := call()
		pause, limited := client.RateLimited(err)
		if !limited || !w.cfg.Now().Add(pause).Before(until) {
			return err
		}
		w.log.Info("rate-limited, waiting", "call", what, "retry_after", pause)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Accounts returns the addresses of the agent's keys, from the list read
// within Config.KeysTTL.
func (w *Wallet) Accounts(ctx context.Context) ([]common.Address, error) {
	w.mu.Lock()
	ks, fresh := w.list, w.keys != nil && w.cfg.Now().Sub(w.loadedAt) < w.cfg.KeysTTL
	w.mu.Unlock()
	if !fresh {
		var err error
		if ks, err = w.Keys(ctx); err != nil {
			return nil, err
		}
	}
	out := make([]common.Address, 0, len(ks))
	for _, k := range ks {
		out = append(out, k.Address)
	}
	return out, nil
}

// key returns the key of address a, reloading the list on a miss (a key
// made since the last load).
func (w *Wallet) key(ctx context.Context, a common.Address) (api.Key, error) {
	w.mu.Lock()
	k, ok := w.keys[a]
	w.mu.Unlock()
	if ok {
		return k, nil
	}
	if _, err := w.Keys(ctx); err != nil {
		return api.Key{}, err
	}
	w.mu.Lock()
	k, ok = w.keys[a]
	w.mu.Unlock()
	if !ok {
		return api.Key{}, fmt.Errorf("%w: %s", ErrUnknownAccount, a.Hex())
	}
	return k, nil
}

// NewIdempotencyKey returns a fresh random idempotency key.
func NewIdempotencyKey() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "agent-" + hex.EncodeToString(b[:])
}

// SignRequest returns the signing request for p as from: the body the
// agent signs. An empty idem gets a fresh random idempotency key.
func (w *Wallet) SignRequest(ctx context.Context, from common.Address, p *chain.Payload, idem string) (api.SignRequest, error) {
	if p == nil {
		return api.SignRequest{}, errors.New("sidecar: no payload")
	}
	k, err := w.key(ctx, from)
	if err != nil {
		return api.SignRequest{}, err
	}
	if !p.ChainID().IsUint64() || p.ChainID().Sign() <= 0 {
		return api.SignRequest{}, fmt.Errorf("sidecar: chain id %s is not a positive 64-bit number", p.ChainID())
	}
	var payload json.RawMessage
	switch p.Kind() {
	case chain.KindTransaction, chain.KindPersonalMessage:
		payload = json.RawMessage(strconv.Quote(hexutil.Encode(p.Bytes())))
	case chain.KindTypedData:
		var buf bytes.Buffer
		if err := json.Compact(&buf, p.Bytes()); err != nil {
			return api.SignRequest{}, fmt.Errorf("sidecar: typed data: %w", err)
		}
		payload = buf.Bytes()
	default:
		return api.SignRequest{}, fmt.Errorf("sidecar: payload kind %s cannot be signed", p.Kind())
	}
	if idem == "" {
		idem = NewIdempotencyKey()
	}
	f := from
	return api.SignRequest{
		Key:            k.ID,
		From:           &f,
		ChainID:        p.ChainID().Uint64(),
		Kind:           p.Kind().String(),
		Payload:        payload,
		IdempotencyKey: idem,
		Expiry:         w.cfg.Now().Add(w.cfg.Expiry).UTC().Truncate(time.Second),
		Grant:          w.cfg.Grant,
	}, nil
}

// Submit sends p as from to the coordinator under idempotency key idem
// (a fresh one if empty) and returns the request as stored, without
// waiting. A retry with the same key returns the first request.
func (w *Wallet) Submit(ctx context.Context, from common.Address, p *chain.Payload, idem string) (*api.Request, error) {
	req, err := w.SignRequest(ctx, from, p, idem)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("sidecar: encode request: %w", err)
	}
	// A transport error may hide a request that was stored: the retry
	// carries the same body, so the coordinator answers with the first.
	// The agent's own rate limit (429) is waited out, within the wait, so
	// a burst is slowed rather than failed.
	var r *api.Request
	for attempt := 0; ; attempt++ {
		err = w.outlast(ctx, "submit", func() error {
			var err error
			r, err = w.cl.SubmitBody(ctx, w.cfg.Credential, body)
			return err
		})
		var apiErr *client.Error
		if err == nil || errors.As(err, &apiErr) || attempt == 2 || ctx.Err() != nil {
			break
		}
		w.log.Warn("submit failed, retrying", "idempotency_key", req.IdempotencyKey, "err", err)
	}
	if err != nil {
		return nil, fmt.Errorf("sidecar: submit: %w", err)
	}
	if r.Digest != common.Hash(p.Digest()) {
		return nil, fmt.Errorf("%w: request %s has digest %s, the payload's is %s", ErrUntrusted, r.ID, r.Digest, common.Hash(p.Digest()))
	}
	return r, nil
}

// Sign asks the cluster to sign p as from and waits for the answer: the
// 65-byte [R || S || V] signature with V = 0 or 1, checked to recover to
// from. A denial is *rpc.Denied; a request still pending approval after
// Config.Wait is *rpc.Pending.
func (w *Wallet) Sign(ctx context.Context, from common.Address, p *chain.Payload) ([]byte, error) {
	r, err := w.Submit(ctx, from, p, "")
	if err != nil {
		return nil, err
	}
	r, err = w.settle(ctx, r)
	if err != nil {
		return nil, err
	}
	return w.signature(r, from, p)
}

// settle waits for r to be final, up to the configured wait (plus the
// signing grace for a request no longer waiting for a guardian), and
// maps a denial, a failure or a pending approval to its error.
func (w *Wallet) settle(ctx context.Context, r *api.Request) (*api.Request, error) {
	start := w.cfg.Now()
	for !api.Final(r.State) {
		left := w.cfg.Wait - w.cfg.Now().Sub(start)
		if r.State != api.StatePendingApproval {
			left += w.cfg.SigningGrace
		}
		if left <= 0 {
			if r.State == api.StatePendingApproval {
				return r, &rpc.Pending{RequestID: r.ID}
			}
			return r, fmt.Errorf("sidecar: request %s still %s after %v", r.ID, r.State, w.cfg.Wait+w.cfg.SigningGrace)
		}
		next, err := w.cl.Poll(ctx, r.ID, left, pollSlice)
		if err != nil {
			return r, fmt.Errorf("sidecar: wait for request %s: %w", r.ID, err)
		}
		r = next
	}
	return r, Outcome(r)
}

// Outcome is the error of a final request: nil once signed, *rpc.Denied
// when denied, ErrFailed (with the reason) when failed or expired.
func Outcome(r *api.Request) error {
	switch r.State {
	case api.StateSigned:
		return nil
	case api.StateDenied:
		rule, reason := r.RuleID, r.Reason
		if rule == "" && r.Decision != nil {
			rule, reason = r.Decision.RuleID, r.Decision.Reason
		}
		if rule == "" && r.Denial != nil {
			rule, reason = "guardian-denial", r.Denial.Reason
		}
		return &rpc.Denied{Rule: rule, Reason: reason, RequestID: r.ID}
	case api.StatePendingApproval:
		return &rpc.Pending{RequestID: r.ID}
	case api.StateFailed, api.StateExpired:
		return fmt.Errorf("%w: request %s %s: %s", ErrFailed, r.ID, r.State, r.Reason)
	}
	return fmt.Errorf("sidecar: request %s is %s", r.ID, r.State)
}

// signature checks r's signature against p and from and returns it with
// V = 0 or 1.
func (w *Wallet) signature(r *api.Request, from common.Address, p *chain.Payload) ([]byte, error) {
	if r.From != (common.Address{}) && r.From != from {
		return nil, fmt.Errorf("%w: request %s signs as %s, not %s", ErrUntrusted, r.ID, r.From.Hex(), from.Hex())
	}
	sig := append([]byte(nil), r.Signature...)
	if len(sig) != 65 {
		return nil, fmt.Errorf("%w: request %s: signature of %d bytes", ErrUntrusted, r.ID, len(sig))
	}
	if sig[64] >= 27 {
		sig[64] -= 27
	}
	if err := p.Verify(sig, from); err != nil {
		return nil, fmt.Errorf("%w: request %s: %v", ErrUntrusted, r.ID, err)
	}
	return sig, nil
}

// Status returns the request's state now.
func (w *Wallet) Status(ctx context.Context, id ids.RequestID) (*api.Request, error) {
	r, err := w.cl.Request(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("sidecar: request %s: %w", id, err)
	}
	return r, nil
}

// WaitFor waits up to timeout for the request to be final and returns it
// as it then is (final or not).
func (w *Wallet) WaitFor(ctx context.Context, id ids.RequestID, timeout time.Duration) (*api.Request, error) {
	deadline := w.cfg.Now().Add(timeout)
	for {
		left := deadline.Sub(w.cfg.Now())
		if left <= 0 {
			return w.Status(ctx, id)
		}
		r, err := w.cl.Poll(ctx, id, left, pollSlice)
		if err != nil {
			return nil, fmt.Errorf("sidecar: wait for request %s: %w", id, err)
		}
		if api.Final(r.State) || w.cfg.Now().After(deadline) {
			return r, nil
		}
	}
}

// Explain evaluates p as from without signing: the decision (tier, rule,
// reason) and the rule trace.
func (w *Wallet) Explain(ctx context.Context, from common.Address, p *chain.Payload) (*api.DryRun, error) {
	req, err := w.SignRequest(ctx, from, p, "")
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("sidecar: encode request: %w", err)
	}
	s := w.cfg.Credential.Sign(api.SignRequestMethod, api.SignRequestPath, body, w.cfg.Now())
	d, err := w.cl.DryRun(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("sidecar: dry run: %w", err)
	}
	return d, nil
}

// Policy returns the policy in force, as the coordinator serves it.
func (w *Wallet) Policy(ctx context.Context) (*api.Policy, error) {
	p, err := w.cl.Policy(ctx)
	if err != nil {
		return nil, fmt.Errorf("sidecar: policy: %w", err)
	}
	return p, nil
}

// Signer returns an x402.Signer (and any EIP-712 signer) for address
// from on chainID: typed data is sent through the cluster like any other
// request.
func (w *Wallet) Signer(from common.Address) *TypedSigner {
	return &TypedSigner{w: w, from: from}
}

// TypedSigner signs EIP-712 typed data as one address through the
// cluster.
type TypedSigner struct {
	w    *Wallet
	from common.Address
}

// Address is the address it signs as.
func (s *TypedSigner) Address() common.Address { return s.from }

// SignTypedData signs td through the cluster; the chain id is the
// domain's.
func (s *TypedSigner) SignTypedData(ctx context.Context, td apitypes.TypedData) ([]byte, error) {
	p, err := TypedPayload(td)
	if err != nil {
		return nil, err
	}
	return s.w.Sign(ctx, s.from, p)
}

// TypedPayload is td as a payload on its domain's chain.
func TypedPayload(td apitypes.TypedData) (*chain.Payload, error) {
	if td.Domain.ChainId == nil {
		return nil, errors.New("sidecar: typed data without a domain chain id")
	}
	raw, err := json.Marshal(td)
	if err != nil {
		return nil, fmt.Errorf("sidecar: encode typed data: %w", err)
	}
	p, err := chain.ParseTypedData((*big.Int)(td.Domain.ChainId), raw)
	if err != nil {
		return nil, fmt.Errorf("sidecar: typed data: %w", err)
	}
	return p, nil
}
