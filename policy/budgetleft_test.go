package policy

import (
	"math/big"
	"testing"
	"time"
)

// TestBudgetsLeft: the budget left under the deciding rule drops by what an
// authorised request reserved (its value and its most gas), counts the
// request, and is reported for the rule whose budget refused a request;
// another agent's budget is untouched, and a rule without a budget has
// none.
func TestBudgetsLeft(t *testing.T) {
	p := testPolicy(t, "  - {id: r, when: {chain: 1, value_max: 1 ether}, budget: {window: 1h, value: 1 ether, count: 5}, tier: hot}\n"+
		"  - {id: free, when: {chain: 5}, tier: hot}\n")
	e := NewEngine(p, NewMemLedger())
	vendor := aliases["vendor1"]
	ether := big.NewInt(1e18)
	left := func(req *Request, rule string) BudgetLeft {
		t.Helper()
		bl, err := e.BudgetsLeft(t.Context(), req, rule)
		if err != nil || len(bl) != 1 {
			t.Fatalf("budgets left: %v %+v", err, bl)
		}
		return bl[0]
	}
	probe := payment(t, "probe", "bot", vendor, 1)
	b := left(probe, e.DryRun(t.Context(), probe).RuleID)
	if b.Rule != "r" || b.Window != time.Hour || b.Asset != AssetNative || b.Limit.Cmp(ether) != 0 || b.Used.Sign() != 0 || b.Left.Cmp(ether) != 0 || b.CountLimit != 5 || b.CountUsed != 0 {
		t.Fatalf("before any payment: %+v", b)
	}
	pay := payment(t, "pay", "bot", vendor, 6e17)
	if d := e.Authorize(t.Context(), pay); !d.Allowed() || !d.Reserved {
		t.Fatalf("payment: %s", d.Describe())
	}
	spent := new(big.Int).Add(big.NewInt(6e17), pay.maxFeeCost())
	b = left(probe, "r")
	if b.Used.Cmp(spent) != 0 || b.Left.Cmp(new(big.Int).Sub(ether, spent)) != 0 || b.CountUsed != 1 {
		t.Fatalf("after a payment of 0.6 ether: %+v (spent %s)", b, spent)
	}
	// Over budget: the denial names r, and r's budget is what is left.
	over := payment(t, "over", "bot", vendor, 5e17)
	d := e.DryRun(t.Context(), over)
	if d.Allowed() || d.RuleID != "r" {
		t.Fatalf("over budget: %s", d.Describe())
	}
	if b := left(over, d.RuleID); b.Left.Cmp(new(big.Int).Sub(ether, spent)) != 0 {
		t.Fatalf("over budget, left: %+v", b)
	}
	if b := left(payment(t, "other", "other-bot", vendor, 1), "r"); b.Used.Sign() != 0 || b.Left.Cmp(ether) != 0 {
		t.Fatalf("another agent's budget: %+v", b)
	}
	for _, rule := range []string{"free", "no-such-rule", RuleDefault} {
		if bl, err := e.BudgetsLeft(t.Context(), probe, rule); err != nil || len(bl) != 0 {
			t.Fatalf("rule %s: %v %+v", rule, err, bl)
		}
	}
}
