package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/api"
)

// TestPrintDryRunBudgets: the dry run shows what is left of the deciding
// rule's budget, ether in ether and a token in base units.
func TestPrintDryRunBudgets(t *testing.T) {
	d := &api.DryRun{
		Decision: api.Decision{Verdict: "allow", Tier: "hot", RuleID: "coffee", Reason: "small payment"},
		Budgets: []api.BudgetLeft{
			{Rule: "coffee", Window: "24h0m0s", Asset: "native", Limit: "500000000000000000", Used: "100000000000000000", Left: "400000000000000000", CountLimit: 50, CountUsed: 3},
			{Rule: "coffee", Asset: "0x1111111111111111111111111111111111111111", Limit: "1000", Used: "10", Left: "990"},
		},
	}
	var out bytes.Buffer
	printDryRun(&out, d)
	for _, want := range []string{
		`budget    rule "coffee": 0.4 of 0.5 ETH left (0.1 used), 3 of 50 requests used per 24h0m0s`,
		`budget    rule "coffee": 990 of 1000 0x1111111111111111111111111111111111111111 (base units) left (10 used)`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out.String())
		}
	}
}
