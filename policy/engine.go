package policy

import (
	"context"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

// Engine holds a policy node's policy state and evaluates requests against
// it. It is safe for concurrent use.
type Engine struct {
	ledger Ledger // immutable

	mu sync.RWMutex
	// guarded by mu
	policy *Policy
	// freezes holds the current freeze of each frozen target.
	freezes map[Target]FreezeRecord
	// freezeLog holds every freeze applied within FreezeRetention, by ID.
	freezeLog map[common.Hash]FreezeLogEntry
	// usedUnfreezes holds the EIP-712 hashes of accepted unfreezes, with
	// their issued times.
	usedUnfreezes map[common.Hash]time.Time
	revoked       map[string]Revocation
	breaker       breaker
	// seq counts changes to the state Export returns.
	seq uint64
}

// NewEngine returns an engine evaluating p (already verified, see
// VerifyDocument) and recording budgets in l.
func NewEngine(p *Policy, l Ledger) *Engine {
	return &Engine{
		ledger:        l,
		policy:        p,
		freezes:       map[Target]FreezeRecord{},
		freezeLog:     map[common.Hash]FreezeLogEntry{},
		usedUnfreezes: map[common.Hash]time.Time{},
		revoked:       map[string]Revocation{},
		breaker:       breaker{agents: map[ids.AgentID]*breakerState{}},
	}
}

// Policy returns the current policy.
func (e *Engine) Policy() *Policy {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.policy
}

// revocation looks a grant up in the revocation list.
func (e *Engine) revocation(id string) (Revocation, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	r, ok := e.revoked[id]
	return r, ok
}

// recoverDeny turns a panic anywhere in an evaluation into a deny: an
// evaluation error is never an allow, and never takes the node down.
func recoverDeny(p *Policy, d *Decision) {
	if r := recover(); r != nil {
		*d = deny(p, RuleError, fmt.Sprintf("evaluation failed: %v", r))
	}
}

// DryRun evaluates req and returns the full decision without reserving
// budget or feeding the circuit breaker.
func (e *Engine) DryRun(ctx context.Context, req *Request) (d Decision) {
	p := e.Policy()
	defer recoverDeny(p, &d)
	req = req.evaluated()
	if err := req.check(); err != nil {
		return deny(p, RuleRequest, err.Error())
	}
	e.mu.RLock()
	p = e.policy
	fr, frozen := e.frozenLocked(req)
	e.mu.RUnlock()
	if frozen {
		return deny(p, RuleFreeze, p.describeFreeze(fr))
	}
	if reason := p.checkAgent(req.Agent); reason != "" {
		return deny(p, RuleRequest, reason)
	}
	d, _ = e.evaluate(ctx, p, req)
	return d
}

// Authorize evaluates req as a node about to contribute its share: it feeds
// the circuit breaker and, when the request is allowed, reserves its budget
// under req.ID. The caller then calls Commit when the signature is produced
// or Release when the session fails.
//
// The ledger is read and written outside the engine's lock. The ledger's
// own Reserve is atomic, so concurrent requests cannot overspend a budget
// between the evaluation and the reservation; and after reserving, the
// engine checks under its lock that no freeze, revocation or new policy
// arrived meanwhile (releasing the reservation if one did), so a freeze
// applied before Authorize returns holds for the request.
func (e *Engine) Authorize(ctx context.Context, req *Request) (d Decision) {
	p := e.Policy()
	defer recoverDeny(p, &d)
	// A request no decoder could produce is refused before it reaches the
	// breaker or the ledger.
	req = req.evaluated()
	if err := req.check(); err != nil {
		return deny(p, RuleRequest, err.Error())
	}
	p, d, done := e.admit(req)
	if done {
		return d
	}
	d, entries := e.evaluate(ctx, p, req)
	if !d.Allowed() {
		return e.denied(p, req, d)
	}
	if err := e.ledger.Reserve(ctx, Reservation{ID: req.ID, Time: req.Time, Entries: entries}); err != nil {
		out := deny(p, RuleBudget, fmt.Sprintf("reserve for rule %q: %v", d.RuleID, err))
		out.Trace = d.Trace
		return out
	}
	if out, ok := e.confirm(p, req); !ok {
		if err := e.ledger.Release(ctx, req.ID); err != nil {
			out.Reason += fmt.Sprintf(" (its reservation stays: release: %v)", err)
		}
		out.Trace = d.Trace
		return out
	}
	d.Reserved = true
	return d
}

// admit is Authorize's first step under the lock: freezes, the agent
// registry and the breaker's request rate. done is set when that decided.
func (e *Engine) admit(req *Request) (p *Policy, d Decision, done bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p = e.policy
	if r, ok := e.frozenLocked(req); ok {
		return p, deny(p, RuleFreeze, p.describeFreeze(r)), true
	}
	if reason := p.checkAgent(req.Agent); reason != "" {
		return p, deny(p, RuleRequest, reason), true
	}
	if p.breaker.requests != nil {
		e.seq++ // the breaker counts the request
	}
	if why := e.breaker.onRequest(p.breaker, req.Agent, req.Time); why != "" {
		return p, e.tripLocked(p, req, why), true
	}
	return p, Decision{}, false
}

// denied feeds a denial to the breaker.
func (e *Engine) denied(p *Policy, req *Request, d Decision) Decision {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p.breaker.denials == nil {
		return d
	}
	e.seq++
	if why := e.breaker.onDenial(p.breaker, req.Agent, req.Time); why != "" {
		out := e.tripLocked(p, req, why)
		out.Reason += fmt.Sprintf(" (the request was denied by rule %q: %s)", d.RuleID, d.Reason)
		out.Trace = d.Trace
		return out
	}
	return d
}

// confirm is Authorize's last step under the lock, after the reservation:
// the state the evaluation assumed must still hold, and the breaker's
// detectors of allowed requests run and record atomically, so concurrent
// requests cannot jointly pass new_destinations. ok is false with the
// decision that refuses the request.
func (e *Engine) confirm(p *Policy, req *Request) (Decision, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.policy != p {
		return deny(e.policy, RuleError, fmt.Sprintf("policy replaced (version %d) during evaluation under version %d; evaluate again", e.policy.Version(), p.Version())), false
	}
	if r, ok := e.frozenLocked(req); ok {
		return deny(p, RuleFreeze, p.describeFreeze(r)), false
	}
	if req.Grant != nil {
		if r, ok := e.revoked[req.Grant.Grant.ID]; ok {
			return deny(p, RuleGrant, fmt.Sprintf("grant %s was revoked at %s", r.GrantID, r.Issued.UTC().Format(time.RFC3339))), false
		}
	}
	dests, assets := breakerInputs(req)
	if why := e.breaker.checkAllowed(p.breaker, p, req, dests, assets); why != "" {
		return e.tripLocked(p, req, why), false
	}
	if e.breaker.recordAllowed(p.breaker, req, dests, assets) {
		e.seq++
	}
	return Decision{}, true
}

// Commit records that the signature for a reserved request was produced.
func (e *Engine) Commit(ctx context.Context, id ids.RequestID) error { return e.ledger.Commit(ctx, id) }

// Release returns the budget of a request whose signing session failed.
// Call it only when this node never sent its last-round share: once it has,
// the others may complete the signature without it, and the reservation
// must stay (and be committed).
func (e *Engine) Release(ctx context.Context, id ids.RequestID) error {
	return e.ledger.Release(ctx, id)
}

// Prune forgets what can no longer matter at now, the node's own clock:
// ledger records older than MaxWindow (no budget window or grant reaches
// that far back), the breaker's memory outside its detectors' windows, and
// freezes and unfreezes past FreezeRetention. Call it now and then; it
// returns how many ledger reservations it forgot.
func (e *Engine) Prune(ctx context.Context, now time.Time) (int, error) {
	e.mu.Lock()
	p := e.policy
	freezes, breaker := e.pruneLocked(now), e.breaker.prune(p.breaker, now)
	if freezes || breaker {
		e.seq++
	}
	e.mu.Unlock()
	n, err := e.ledger.Prune(ctx, now.Add(-MaxWindow))
	if err != nil {
		return n, errorf("prune ledger: %w", err)
	}
	return n, nil
}

func breakerInputs(req *Request) ([]common.Address, map[string]*big.Int) {
	var dests []common.Address
	assets := map[string]*big.Int{}
	if d, ok := req.destination(); ok {
		dests = append(dests, d)
	}
	for _, sp := range req.spends() {
		dests = append(dests, sp.To)
		asset := "native"
		if !sp.IsNative() {
			asset = sp.Token.Hex()
		}
		amt := sp.Amount
		if sp.Unlimited {
			amt = chain.MaxUint256
		}
		if assets[asset] == nil {
			assets[asset] = new(big.Int)
		}
		assets[asset].Add(assets[asset], amt)
	}
	return dedupe(dests), assets
}

func dedupe(a []common.Address) []common.Address {
	seen := map[common.Address]bool{}
	out := a[:0]
	for _, x := range a {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// Revoke adds a grant to the revocation list; any one guardian may
// sign it.
func (e *Engine) Revoke(r Revocation, sig []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := e.policy.guardianSigners(r.TypedData(e.policy.wallet), [][]byte{sig}); err != nil {
		return errorf("revoke grant %s: %w", r.GrantID, err)
	}
	if _, ok := e.revoked[r.GrantID]; !ok {
		e.revoked[r.GrantID] = r
		e.seq++
	}
	return nil
}
