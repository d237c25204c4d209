package policy

import (
	"context"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/ethereum/go-ethereum/common"
)

// RuleError names decisions made because evaluation itself failed.
const RuleError = "error"

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
