package policy

import (
	"context"
	"math/big"
	"strings"
	"time"
)

// BudgetLeft is what remains of one budget bucket of a rule for the
// request's agent and key, at the request's time: the rule's limit over
// its window, what the ledger holds against it (spent and reserved), and
// the difference (never below zero). Limit and Left are nil when the
// bucket caps only the number of requests.
type BudgetLeft struct {
	Rule       string
	Window     time.Duration
	Asset      Asset
	Limit      *big.Int
	Used       *big.Int
	Left       *big.Int
	CountLimit uint64
	CountUsed  uint64
}

// BudgetsLeft reports the budget left under the rule ruleID (the RuleID of a
// DryRun of req: the rule that allowed it, or the rule whose budget
// refused it) for req's agent and key. A rule without a budget, or an id
// that is no rule of the current policy, has none: the answer is empty.
// It reads the ledger and changes nothing.
func (e *Engine) BudgetsLeft(ctx context.Context, req *Request, ruleID string) ([]BudgetLeft, error) {
	p := e.Policy()
	var r *rule
	for _, x := range p.rules {
		if x.id == ruleID {
			r = x
		}
	}
	if r == nil || r.budget == nil {
		return nil, nil
	}
	req = req.evaluated()
	c := &evalCtx{ctx: ctx, req: req, p: p, ledger: e.ledger, spends: req.spends()}
	var out []BudgetLeft
	for _, en := range c.budgetEntries(r.id, r.budget) {
		u, err := c.usage(en.Bucket, en.Window)
		if err != nil {
			return nil, errorf("budget of rule %q: %w", r.id, err)
		}
		b := BudgetLeft{Rule: r.id, Window: en.Window, Asset: bucketAsset(en.Bucket), Used: new(big.Int).Set(u.Amount),
			CountLimit: en.LimitCount, CountUsed: u.Count}
		if en.LimitAmount != nil {
			b.Limit = new(big.Int).Set(en.LimitAmount)
			b.Left = new(big.Int).Sub(en.LimitAmount, u.Amount)
			if b.Left.Sign() < 0 {
				b.Left.SetInt64(0)
			}
		}
		out = append(out, b)
	}
	return out, nil
}

// bucketAsset is the asset a budget bucket counts, its last component.
func bucketAsset(b Bucket) Asset {
	s := string(b)
	if i := strings.LastIndex(s, "/asset/"); i >= 0 {
		return Asset(s[i+len("/asset/"):])
	}
	return AssetNative
}
