package policy

import (
	"context"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// RuleError names decisions made because evaluation itself failed.
const RuleError = "error"

// MaxClockSkew bounds how far in the future (relative to the time the
// caller passes in) a guardian's freeze or unfreeze may be issued. A
// future-dated message would otherwise stay valid for as long as its date.
const MaxClockSkew = 5 * time.Minute

// FreezeRetention is how long the engine remembers which freezes and
// unfreezes it applied. Freezes and unfreezes issued longer ago than this
// (relative to the node's time) are refused: their replays could no longer
// be recognised.
const FreezeRetention = 30 * 24 * time.Hour

// FreezeRecord is why and since when a target is frozen.
type FreezeRecord struct {
	// ID identifies this freeze: the EIP-712 hash of a guardian's Freeze
	// message, or BreakerFreezeID for a circuit-breaker trip. An Unfreeze
	// names the ID of the freeze it lifts.
	ID     common.Hash
	Target Target
	Reason string
	// By is the guardian who froze, or the zero address for the breaker.
	By common.Address
	// At is when the freeze took effect: the later of the freeze's issued
	// time and the node's time when it received it.
	At time.Time
}

// BreakerFreezeID is the ID of a circuit-breaker freeze of target at at
// for reason.
func BreakerFreezeID(target Target, at time.Time, reason string) common.Hash {
	return crypto.Keccak256Hash([]byte("custos-breaker-freeze\x00" + string(target) + "\x00" + at.UTC().Format(time.RFC3339Nano) + "\x00" + reason))
}

// FreezeLogEntry is the engine's memory of one freeze it applied: a freeze
// whose ID is logged is never applied again (a replay), and a closed one
// (lifted by an unfreeze, or replaced by a later freeze of its target) is
// not brought back by Restore.
type FreezeLogEntry struct {
	ID     common.Hash
	Target Target
	// Time is the freeze's issued time (the trip time for the breaker);
	// entries older than FreezeRetention are forgotten.
	Time   time.Time
	Closed bool
}

// UsedUnfreeze is an accepted unfreeze, remembered until FreezeRetention
// after its issued time.
type UsedUnfreeze struct {
	Hash   common.Hash
	Issued time.Time
}

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

// evalCtx is one evaluation's view of a request.
type evalCtx struct {
	ctx     context.Context
	req     *Request
	p       *Policy
	ledger  Ledger
	dest    common.Address
	hasDest bool
	spends  []chain.Spend
	grant   *Grant
	// err is the first ledger error; it aborts the evaluation with a deny
	// under rule "error" (a ledger that cannot answer is not "no match").
	err error
}

func (c *evalCtx) usage(bucket Bucket, window time.Duration) (Usage, error) {
	u, err := c.ledger.Usage(c.ctx, bucket, window, c.req.Time)
	if err == nil && u.Amount == nil {
		err = fmt.Errorf("usage of %s has no amount", bucket)
	}
	if err != nil && c.err == nil {
		c.err = fmt.Errorf("ledger: %w", err)
	}
	return u, err
}

func (c *evalCtx) budgetEntries(rule string, b *budget) []Entry {
	var out []Entry
	if b.value != nil || b.amount == nil {
		// Native spending is the value plus the most the gas can cost.
		out = append(out, Entry{
			Bucket: BudgetBucket(rule, c.req.Agent, c.req.Key, AssetNative), Amount: new(big.Int).Add(c.req.nativeValue(), c.req.maxFeeCost()),
			Count: 1, Window: b.window, LimitAmount: b.value, LimitCount: b.count,
		})
	}
	if b.amount != nil {
		amt, unlimited := c.tokenTotal(b.token.addr)
		if unlimited {
			amt = new(big.Int).Set(chain.MaxUint256)
		}
		e := Entry{
			Bucket: BudgetBucket(rule, c.req.Agent, c.req.Key, TokenAsset(b.token.addr)), Amount: amt,
			Count: 1, Window: b.window, LimitAmount: b.amount,
		}
		if b.value == nil {
			e.LimitCount = b.count
		}
		out = append(out, e)
	}
	return out
}

func (c *evalCtx) checkBudget(rule string, b *budget) (bool, string) {
	for _, e := range c.budgetEntries(rule, b) {
		u, err := c.usage(e.Bucket, e.Window)
		if err != nil {
			return false, fmt.Sprintf("budget: ledger: %v", err)
		}
		if e.LimitAmount != nil && new(big.Int).Add(u.Amount, e.Amount).Cmp(e.LimitAmount) > 0 {
			if b.amount != nil && e.LimitAmount == b.amount {
				return false, fmt.Sprintf("budget %s: %s used + %s exceeds %s", b.window, c.p.formatToken(u.Amount, b.token.addr), c.p.formatToken(e.Amount, b.token.addr), c.p.formatToken(b.amount, b.token.addr))
			}
			return false, fmt.Sprintf("budget %s: %s used + %s exceeds %s", b.window, formatEther(u.Amount), formatEther(e.Amount), formatEther(e.LimitAmount))
		}
		if e.LimitCount > 0 && u.Count+e.Count > e.LimitCount {
			return false, fmt.Sprintf("budget %s: %d requests used of %d", b.window, u.Count, e.LimitCount)
		}
	}
	return true, ""
}

func deny(p *Policy, rule, reason string) Decision {
	return Decision{Verdict: Deny, RuleID: rule, Reason: reason, PolicyHash: p.hash, PolicyVersion: p.doc.Version}
}

func (e *Engine) frozenLocked(req *Request) (FreezeRecord, bool) {
	for _, t := range []Target{TargetAll, AgentTarget(req.Agent), KeyTarget(req.Key)} {
		if r, ok := e.freezes[t]; ok {
			return r, true
		}
	}
	return FreezeRecord{}, false
}

// revocation looks a grant up in the revocation list.
func (e *Engine) revocation(id string) (Revocation, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	r, ok := e.revoked[id]
	return r, ok
}

// evaluate runs the rules of p. It returns the decision and the ledger
// entries an allowed request would reserve. It changes nothing, and holds
// no lock of the engine while it reads the ledger. The caller has checked
// the request and its freezes.
func (e *Engine) evaluate(ctx context.Context, p *Policy, req *Request) (d Decision, entries []Entry) {
	c := &evalCtx{ctx: ctx, req: req, p: p, ledger: e.ledger, spends: req.spends()}
	c.dest, c.hasDest = req.destination()
	if req.Grant != nil {
		ents, reason := e.checkGrant(p, c)
		if c.err != nil {
			return deny(p, RuleError, c.err.Error()), nil
		}
		if reason != "" {
			return deny(p, RuleGrant, reason), nil
		}
		c.grant = &req.Grant.Grant
		entries = ents
	}
	var (
		winner  *rule
		trace   = make([]Step, 0, len(p.rules))
		nearest *Step
		bestN   = -1
		// overBudget is the first allowing rule that matched in every
		// condition but its budget: when no rule allows the request, the
		// denial names that rule, since its budget is what refused it.
		overBudget *Step
	)
	for _, r := range p.rules {
		if winner != nil && r.verdict != Deny {
			trace = append(trace, Step{Rule: r.id, Detail: "not evaluated: rule " + winner.id + " already matched"})
			continue
		}
		ok, n, why, failed := true, 0, "", ""
		for _, cd := range r.conds {
			ok, why = cd.check(c)
			if c.err != nil {
				d = deny(p, RuleError, fmt.Sprintf("rule %q: %v", r.id, c.err))
				d.Trace = append(trace, Step{Rule: r.id, Detail: c.err.Error()})
				return d, nil
			}
			if !ok {
				failed = cd.name
				break
			}
			if cd.name != "kind" && cd.name != "calldata" {
				n++
			}
		}
		if !ok {
			trace = append(trace, Step{Rule: r.id, Detail: why})
			// The nearest miss is the allowing rule that got furthest; a
			// rule for another payload kind, or one failing only on the
			// implicit narrowing, is a poor guide.
			if failed == "implicit" {
				n = 0
			}
			if r.verdict != Deny && failed != "kind" && n > bestN {
				bestN, nearest = n, &trace[len(trace)-1]
			}
			if r.verdict != Deny && failed == "budget" && overBudget == nil {
				overBudget = &trace[len(trace)-1]
			}
			continue
		}
		if r.verdict == Deny {
			trace = append(trace, Step{Rule: r.id, Matched: true, Detail: "deny rule matched"})
			d = deny(p, r.id, "explicit deny: "+describeMatch(r))
			d.Trace = trace
			return d, nil
		}
		trace = append(trace, Step{Rule: r.id, Matched: true, Detail: "all conditions hold"})
		winner = r
	}
	if winner == nil && overBudget != nil {
		d = deny(p, overBudget.Rule, fmt.Sprintf("over budget: %s (no other rule allows the request)", overBudget.Detail))
		d.Trace = trace
		return d, nil
	}
	if winner == nil {
		reason := "no rule matched"
		if nearest != nil {
			reason = fmt.Sprintf("no rule matched; nearest rule %q: %s", nearest.Rule, nearest.Detail)
		}
		d = deny(p, RuleDefault, reason)
		d.Trace = trace
		return d, nil
	}
	t := *winner.tier
	d = Decision{
		Verdict: winner.verdict, RuleID: winner.id, Tier: &t,
		PolicyHash: p.hash, PolicyVersion: p.doc.Version, Trace: trace,
		Reason: "allowed: " + describeMatch(winner),
	}
	if winner.budget != nil {
		entries = append(entries, c.budgetEntries(winner.id, winner.budget)...)
	}
	return d, entries
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
		return n, fmt.Errorf("policy: prune ledger: %w", err)
	}
	return n, nil
}

// tokenTotal sums the spends of one token.
func (c *evalCtx) tokenTotal(token common.Address) (*big.Int, bool) {
	sum := new(big.Int)
	for _, sp := range c.spends {
		if sp.IsNative() || sp.Token != token {
			continue
		}
		if sp.Unlimited {
			return nil, true
		}
		sum.Add(sum, sp.Amount)
	}
	return sum, false
}

func (c *evalCtx) typedField(f func(*chain.Typed) string) string {
	if c.req.Kind == KindTypedData {
		return f(c.req.Typed)
	}
	return ""
}

func (p *Policy) describeFreeze(r FreezeRecord) string {
	by := "the circuit breaker"
	if r.By != (common.Address{}) {
		by = "guardian " + p.guardians[r.By]
		if p.guardians[r.By] == "" {
			by = "guardian " + shortAddr(r.By)
		}
	}
	return fmt.Sprintf("%s frozen by %s at %s: %s", r.Target, by, r.At.UTC().Format(time.RFC3339), r.Reason)
}

func describeMatch(r *rule) string {
	names := make([]string, 0, len(r.conds))
	for _, c := range r.conds {
		if c.name != "implicit" && c.name != "kind" && c.name != "calldata" && !strings.HasPrefix(c.name, "default_") {
			names = append(names, c.name)
		}
	}
	if len(names) == 0 {
		return "rule has no conditions"
	}
	return "matched " + strings.Join(names, ", ")
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

func (e *Engine) freezeAgentLocked(req *Request, why string) {
	t, reason := AgentTarget(req.Agent), "circuit breaker: "+why
	e.setFreezeLocked(FreezeRecord{ID: BreakerFreezeID(t, req.Time, reason), Target: t, Reason: reason, At: req.Time}, req.Time)
}

// setFreezeLocked makes r the current freeze of its target. A freeze it
// replaces is closed: an unfreeze must name the current one.
func (e *Engine) setFreezeLocked(r FreezeRecord, logTime time.Time) {
	if cur, ok := e.freezes[r.Target]; ok && cur.ID != r.ID {
		e.closeFreezeLocked(cur)
	}
	e.freezes[r.Target] = r
	if _, ok := e.freezeLog[r.ID]; !ok {
		e.freezeLog[r.ID] = FreezeLogEntry{ID: r.ID, Target: r.Target, Time: logTime}
	}
}

func (e *Engine) closeFreezeLocked(r FreezeRecord) {
	l, ok := e.freezeLog[r.ID]
	if !ok {
		l = FreezeLogEntry{ID: r.ID, Target: r.Target, Time: r.At}
	}
	l.Closed = true
	e.freezeLog[r.ID] = l
}

// pruneLocked forgets closed freezes and used unfreezes issued more than
// FreezeRetention before now: messages that old are refused anyway.
func (e *Engine) pruneLocked(now time.Time) (changed bool) {
	cut := now.Add(-FreezeRetention)
	for id, l := range e.freezeLog {
		if l.Closed && l.Time.Before(cut) {
			delete(e.freezeLog, id)
			changed = true
		}
	}
	for h, t := range e.usedUnfreezes {
		if t.Before(cut) {
			delete(e.usedUnfreezes, h)
			changed = true
		}
	}
	return changed
}

func (e *Engine) tripLocked(p *Policy, req *Request, why string) Decision {
	e.freezeAgentLocked(req, why)
	e.seq++
	return deny(p, RuleBreaker, "circuit breaker tripped: "+why+"; agent "+string(req.Agent)+" frozen")
}

// Freeze applies a freeze signed by any one guardian of the current
// policy. It takes effect before the next evaluation and becomes the
// current freeze of its target (the one an unfreeze must name). now is the
// node's own clock: a freeze issued more than MaxClockSkew after it, or
// more than FreezeRetention before it, is refused. Replays are recognised
// by the freeze's EIP-712 hash, not by time: a freeze already applied is
// refused (or, if it is still the current freeze of its target, ignored),
// and any other freeze applies, whatever unfreezes came before it.
func (e *Engine) Freeze(f Freeze, sig []byte, now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	td := f.TypedData(e.policy.wallet)
	signers, err := e.policy.guardianSigners(td, [][]byte{sig})
	if err != nil {
		return fmt.Errorf("policy: freeze %s: %w", f.Target, err)
	}
	if err := checkTarget(f.Target); err != nil {
		return err
	}
	issued := signedTime(f.Issued)
	if issued.After(now.Add(MaxClockSkew)) {
		return fmt.Errorf("policy: freeze %s: issued %s, in the future (now %s)", f.Target, fmtTime(issued), fmtTime(now))
	}
	if issued.Before(now.Add(-FreezeRetention)) {
		return fmt.Errorf("policy: freeze %s: issued %s, more than %s ago", f.Target, fmtTime(issued), FreezeRetention)
	}
	id, err := typedHash(td)
	if err != nil {
		return fmt.Errorf("policy: freeze %s: %w", f.Target, err)
	}
	if _, ok := e.freezeLog[id]; ok {
		if cur, ok := e.freezes[f.Target]; ok && cur.ID == id {
			return nil // already the current freeze
		}
		return fmt.Errorf("policy: freeze %s: freeze %s was already applied (a replay)", f.Target, shortHash(id))
	}
	at := issued
	if now.After(at) {
		at = now
	}
	e.pruneLocked(now)
	e.setFreezeLocked(FreezeRecord{ID: id, Target: f.Target, Reason: f.Reason, By: signers[0], At: at}, issued)
	e.seq++
	return nil
}

// Unfreeze lifts a freeze when a quorum of the current guardians signed
// it. The unfreeze names the ID of the freeze it lifts, and lifts it only
// if that is the current freeze of its target: an unfreeze signed before a
// newer freeze cannot lift the newer one. It must be issued no more than
// MaxClockSkew after now and no more than FreezeRetention before it, and
// each signed unfreeze is accepted once.
func (e *Engine) Unfreeze(u Unfreeze, sigs [][]byte, now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.policy
	td := u.TypedData(p.wallet)
	signers, err := p.guardianSigners(td, sigs)
	if err != nil {
		return fmt.Errorf("policy: unfreeze %s: %w", u.Target, err)
	}
	if len(signers) < p.doc.Quorum {
		return fmt.Errorf("policy: unfreeze %s: %w: %d of %d", u.Target, ErrQuorum, len(signers), p.doc.Quorum)
	}
	issued := signedTime(u.Issued)
	if issued.After(now.Add(MaxClockSkew)) {
		return fmt.Errorf("policy: unfreeze %s: issued %s, in the future (now %s)", u.Target, fmtTime(issued), fmtTime(now))
	}
	if issued.Before(now.Add(-FreezeRetention)) {
		return fmt.Errorf("policy: unfreeze %s: issued %s, more than %s ago", u.Target, fmtTime(issued), FreezeRetention)
	}
	hash, err := typedHash(td)
	if err != nil {
		return fmt.Errorf("policy: unfreeze %s: %w", u.Target, err)
	}
	if _, used := e.usedUnfreezes[hash]; used {
		return fmt.Errorf("policy: unfreeze %s: this unfreeze was already used", u.Target)
	}
	r, ok := e.freezes[u.Target]
	if !ok {
		return fmt.Errorf("policy: unfreeze %s: not frozen", u.Target)
	}
	if r.ID != u.Freeze {
		return fmt.Errorf("policy: unfreeze %s: it lifts freeze %s, but the current freeze is %s (%s)", u.Target, shortHash(u.Freeze), shortHash(r.ID), p.describeFreeze(r))
	}
	e.pruneLocked(now)
	e.usedUnfreezes[hash] = issued
	e.closeFreezeLocked(r)
	delete(e.freezes, u.Target)
	e.seq++
	return nil
}

func typedHash(td apitypes.TypedData) (common.Hash, error) {
	h, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		return common.Hash{}, err
	}
	return common.BytesToHash(h), nil
}

func shortHash(h common.Hash) string { return h.Hex()[:10] }

// signedTime is t as a guardian signs it: whole Unix seconds. Anything
// finer is not covered by the signature and must not count.
func signedTime(t time.Time) time.Time { return time.Unix(t.Unix(), 0).UTC() }

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func checkTarget(t Target) error {
	s := string(t)
	switch {
	case t == TargetAll, strings.HasPrefix(s, "agent:") && len(s) > len("agent:"):
		return nil
	case strings.HasPrefix(s, "key:") && validKeyTarget(t):
		return nil
	}
	return fmt.Errorf("policy: bad freeze target %q (want all, agent:<id> or key:<checksummed address>)", s)
}

// Freezes lists the active freezes, sorted by target.
func (e *Engine) Freezes() []FreezeRecord {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]FreezeRecord, 0, len(e.freezes))
	for _, r := range e.freezes {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out
}

// Revoke adds a grant to the revocation list; any one guardian may
// sign it.
func (e *Engine) Revoke(r Revocation, sig []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := e.policy.guardianSigners(r.TypedData(e.policy.wallet), [][]byte{sig}); err != nil {
		return fmt.Errorf("policy: revoke grant %s: %w", r.GrantID, err)
	}
	if _, ok := e.revoked[r.GrantID]; !ok {
		e.revoked[r.GrantID] = r
		e.seq++
	}
	return nil
}

// ApplyDocument replaces the current policy with a signed document. The
// document must carry exactly the next version and name the current
// document's hash in replaces. A quorum of the current guardians (and of
// the new document's own guardians, if it changes them) may make any
// change; a single current guardian may only tighten (see docs/policy.md).
func (e *Engine) ApplyDocument(sd SignedDocument) error {
	if err := checkSignatureCount(sd.Signatures); err != nil {
		return fmt.Errorf("policy: apply document: %w", err)
	}
	np, err := ParseAndCompile(sd.Source)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	cur := e.policy
	if np.Version() <= cur.Version() {
		return fmt.Errorf("%w: version %d is not newer than current version %d", ErrRollback, np.Version(), cur.Version())
	}
	if np.doc.Replaces != cur.hash.Hex() {
		return fmt.Errorf("%w: it replaces %q, the current document is %s", ErrRollback, np.doc.Replaces, cur.hash.Hex())
	}
	// Versions grow one at a time: a jump (to 2^64-1, say) would leave no
	// version for the next document, locking the policy for good.
	if np.Version() != cur.Version()+1 {
		return fmt.Errorf("%w: version %d does not follow current version %d", ErrRollback, np.Version(), cur.Version())
	}
	np.wallet = cur.wallet
	td := DocumentTypedData(np.wallet, np.doc)
	signers, err := cur.guardianSigners(td, sd.Signatures)
	if err != nil {
		return fmt.Errorf("policy: apply document v%d: %w", np.Version(), err)
	}
	if len(signers) == 0 {
		return fmt.Errorf("policy: apply document v%d: %w: none", np.Version(), ErrQuorum)
	}
	if len(signers) >= cur.doc.Quorum {
		if !sameGuardians(cur, np) {
			own, err := np.guardianSigners(td, sd.Signatures)
			if err != nil || len(own) < np.doc.Quorum {
				return fmt.Errorf("policy: apply document v%d: %w of the new guardian set (%d needed)", np.Version(), ErrQuorum, np.doc.Quorum)
			}
		}
		e.policy = np
		return nil
	}
	if err := checkTightening(cur, np); err != nil {
		return fmt.Errorf("policy: apply document v%d: %d of %d guardian signatures suffice only to tighten: %w", np.Version(), len(signers), cur.doc.Quorum, err)
	}
	e.policy = np
	return nil
}

// validKeyTarget reports whether t is a key target in its one text form.
func validKeyTarget(t Target) bool {
	k, err := ids.ParseKeyID(string(t))
	return err == nil && KeyTarget(k.Address()) == t
}
