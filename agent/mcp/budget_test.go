package mcp

import (
	"strings"
	"testing"

	"github.com/custos-wallet/custos/api"
	"github.com/ethereum/go-ethereum/common"
)

// TestBudgetsOf: a dry run's budgets in base units become human units
// (ether, a token the policy names by its decimals, an unknown token in
// base units), a malformed amount is an error naming it, and the sentence
// says what is left.
func TestBudgetsOf(t *testing.T) {
	usdc := common.HexToAddress("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48")
	other := common.HexToAddress("0x3333333333333333333333333333333333333333")
	known := func(a common.Address) (string, int, bool) {
		if a == usdc {
			return "USDC", 6, true
		}
		return "", 0, false
	}
	in := []api.BudgetLeft{
		{Rule: "small", Window: "24h0m0s", Asset: "native", Limit: "500000000000000000", Used: "5021000000000000", Left: "494979000000000000", CountLimit: 50, CountUsed: 1},
		{Rule: "small", Window: "24h0m0s", Asset: usdc.Hex(), Limit: "100000000", Used: "2500000", Left: "97500000"},
		{Rule: "small", Asset: other.Hex(), Used: "7", CountLimit: 2, CountUsed: 3},
	}
	got, err := budgetsOf(in, known)
	if err != nil {
		t.Fatal(err)
	}
	want := []BudgetLeft{
		{Rule: "small", Window: "24h0m0s", Asset: "ETH", Limit: "0.5", Used: "0.005021", Left: "0.494979", CountLimit: 50, CountUsed: 1},
		{Rule: "small", Window: "24h0m0s", Asset: "USDC", Limit: "100", Used: "2.5", Left: "97.5"},
		{Rule: "small", Asset: other.Hex() + " (base units)", Used: "7", CountLimit: 2, CountUsed: 3},
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("budget %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	s := describeBudgets(got)
	for _, w := range []string{`rule "small"`, "0.494979 ETH of 0.5 left", "49 of 50 requests left per 24h0m0s", "97.5 USDC of 100 left", "0 of 2 requests left"} {
		if !strings.Contains(s, w) {
			t.Errorf("sentence %q lacks %q", s, w)
		}
	}
	if describeBudgets(nil) != "" {
		t.Error("no budget gave a sentence")
	}
	for _, bad := range []api.BudgetLeft{
		{Rule: "r", Asset: "native", Used: "-1"},
		{Rule: "r", Asset: "native", Used: "1", Left: "0x10"},
		{Rule: "r", Asset: "gold", Used: "1"},
	} {
		if _, err := budgetsOf([]api.BudgetLeft{bad}, known); err == nil || !strings.Contains(err.Error(), `rule "r"`) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
