package sidecar_test

import (
	"context"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agent/mcp"
	"github.com/ethereum/go-ethereum/common"
)

// TestMCPBudgetLeft: get_wallet (given a recipient) and explain say how
// much of the deciding rule's budget remains, and what remains drops by
// at least a transfer's value once the cluster signed it.
func TestMCPBudgetLeft(t *testing.T) {
	w := setup(t)
	cs, _ := mcpSession(t, w, w.wallet(t, 30*time.Second, w.hot))
	ctx := context.Background()
	leftOf := func(tool string, out map[string]any) (*big.Int, float64) {
		t.Helper()
		bs, _ := out["budgets"].([]any)
		if len(bs) != 1 {
			t.Fatalf("%s budgets: %v", tool, out)
		}
		b := bs[0].(map[string]any)
		if b["rule"] != "small-payments" || b["asset"] != "ETH" || b["limit"] != "20" || b["count_limit"] != float64(1000) {
			t.Fatalf("%s budget: %v", tool, b)
		}
		v, err := mcp.ParseUnits(b["left"].(string), 18)
		if err != nil {
			t.Fatal(err)
		}
		return v, b["count_used"].(float64)
	}
	res, out := call(t, cs, "get_wallet", map[string]any{"to": vendor1.Hex(), "amount": "0.003"})
	if res.IsError || out["budget_rule"] != "small-payments" || !strings.Contains(resultText(res), "ETH of 20 left") {
		t.Fatalf("get_wallet: %s %v", resultText(res), out)
	}
	before, count := leftOf("get_wallet", out)
	res, out = call(t, cs, "transfer", map[string]any{"to": vendor1.Hex(), "amount": "0.003"})
	if res.IsError || out["status"] != "sent" {
		t.Fatalf("transfer: %s %v", resultText(res), out)
	}
	if _, err := w.mined(ctx, []common.Hash{common.HexToHash(out["tx_hash"].(string))}); err != nil {
		t.Fatal(err)
	}
	res, out = call(t, cs, "explain", map[string]any{"to": vendor1.Hex(), "amount": "0.003"})
	if res.IsError || out["allowed"] != true || !strings.Contains(resultText(res), `Budget of rule "small-payments"`) {
		t.Fatalf("explain: %s %v", resultText(res), out)
	}
	after, countAfter := leftOf("explain", out)
	drop := new(big.Int).Sub(before, after)
	if drop.Cmp(big.NewInt(3e15)) < 0 || countAfter != count+1 {
		t.Fatalf("budget left %s -> %s (requests %v -> %v) after a transfer of 0.003 ETH", before, after, count, countAfter)
	}
}
