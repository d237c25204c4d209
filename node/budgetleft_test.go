package node

import (
	"math/big"
	"testing"
	"time"

	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/policy"
)

// TestDryRunReportsBudgetLeft: a dry run at the policy node names what is
// left of the deciding rule's budget from the node's own ledger, and what
// is left drops by at least the value of a payment the cluster signed,
// with one more request counted.
func TestDryRunReportsBudgetLeft(t *testing.T) {
	c, key := shared(t)
	left := func() control.BudgetLeft {
		t.Helper()
		s, id := request(t, c.w.bot, key, vendor, millis(1))
		r := c.send(c.policy(), &control.Message{Type: control.TypeEvaluate, Evaluate: &control.Evaluate{RequestID: id, Request: s}})
		if r.Decision == nil || r.Decision.RuleID != "small-payments" || len(r.Decision.Budgets) != 1 {
			t.Fatalf("evaluate: %+v %+v", r.Decision, r.Refusal)
		}
		b := r.Decision.Budgets[0]
		if b.Rule != "small-payments" || b.Asset != string(policy.AssetNative) || b.Limit != "500000000000000000" || time.Duration(b.Window) != 24*time.Hour || b.CountLimit != 50 {
			t.Fatalf("budget: %+v", b)
		}
		return b
	}
	num := func(s string) *big.Int {
		t.Helper()
		v, ok := new(big.Int).SetString(s, 10)
		if !ok {
			t.Fatalf("%q is not a decimal amount", s)
		}
		return v
	}
	before := left()
	if new(big.Int).Add(num(before.Used), num(before.Left)).Cmp(num(before.Limit)) != 0 {
		t.Fatalf("used + left is not the limit: %+v", before)
	}
	s, id := request(t, c.w.bot, key, vendor, millis(5))
	_, sig := signWith(t, c, s, id, "hot")
	recovers(t, digestOf(t, s), sig, key.Address)
	after := left()
	drop := new(big.Int).Sub(num(before.Left), num(after.Left))
	if drop.Cmp(millis(5)) < 0 || after.CountUsed != before.CountUsed+1 {
		t.Fatalf("after a payment of 0.005 ether: before %+v, after %+v", before, after)
	}
}
