package mcp

import (
	"context"
	"fmt"
	"math/big"
	"strings"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/ethereum/go-ethereum/common"
)

// BudgetLeft is what remains of the deciding rule's budget for this agent
// and address, in human units, as a policy member's ledger has it.
type BudgetLeft struct {
	Rule       string `json:"rule"`
	Window     string `json:"window,omitempty" jsonschema:"the budget's window, e.g. 24h0m0s"`
	Asset      string `json:"asset" jsonschema:"ETH, or the token's symbol (its address if the policy names none)"`
	Limit      string `json:"limit,omitempty" jsonschema:"the budget per window, human units; absent when only requests are counted"`
	Used       string `json:"used" jsonschema:"spent or reserved in the window, human units (ether includes the most gas each request could cost)"`
	Left       string `json:"left,omitempty" jsonschema:"what can still be spent in the window, human units"`
	CountLimit uint64 `json:"count_limit,omitempty" jsonschema:"requests allowed per window"`
	CountUsed  uint64 `json:"count_used"`
}

// budgetsOf turns a dry run's budgets into human units; decimalsOf names
// a token's symbol and decimals (ok false: unknown, shown in base units).
func budgetsOf(in []api.BudgetLeft, decimalsOf func(common.Address) (string, int, bool)) ([]BudgetLeft, error) {
	var out []BudgetLeft
	for _, b := range in {
		sym, dec := "ETH", 18
		if b.Asset != "native" {
			if !common.IsHexAddress(b.Asset) {
				return nil, fmt.Errorf("budget of rule %q: asset %q is neither native nor a token address", b.Rule, b.Asset)
			}
			var ok bool
			if sym, dec, ok = decimalsOf(common.HexToAddress(b.Asset)); !ok {
				sym, dec = common.HexToAddress(b.Asset).Hex()+" (base units)", 0
			}
		}
		human := func(field, s string) (string, error) {
			if s == "" {
				return "", nil
			}
			v, ok := new(big.Int).SetString(s, 10)
			if !ok || v.Sign() < 0 {
				return "", fmt.Errorf("budget of rule %q: %s %q is not a decimal amount", b.Rule, field, s)
			}
			return chain.FormatUnits(v, dec), nil
		}
		o := BudgetLeft{Rule: b.Rule, Window: b.Window, Asset: sym, CountLimit: b.CountLimit, CountUsed: b.CountUsed}
		var err error
		if o.Limit, err = human("limit", b.Limit); err != nil {
			return nil, err
		}
		if o.Used, err = human("used", b.Used); err != nil {
			return nil, err
		}
		if o.Left, err = human("left", b.Left); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// describeBudgets is one sentence on what is left, "" for no budget.
func describeBudgets(bl []BudgetLeft) string {
	if len(bl) == 0 {
		return ""
	}
	var parts []string
	for _, b := range bl {
		var p []string
		if b.Limit != "" {
			p = append(p, fmt.Sprintf("%s %s of %s left", b.Left, b.Asset, b.Limit))
		}
		if b.CountLimit > 0 {
			left := uint64(0)
			if b.CountUsed < b.CountLimit {
				left = b.CountLimit - b.CountUsed
			}
			p = append(p, fmt.Sprintf("%d of %d requests left", left, b.CountLimit))
		}
		if len(p) == 0 {
			continue
		}
		s := strings.Join(p, ", ")
		if b.Window != "" {
			s += " per " + b.Window
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf(" Budget of rule %q: %s.", bl[0].Rule, strings.Join(parts, "; "))
}

// budgetsLeft converts a dry run's budgets with the policy's tokens.
func (s *Server) budgetsLeft(ctx context.Context, in []api.BudgetLeft) ([]BudgetLeft, error) {
	if len(in) == 0 {
		return nil, nil
	}
	ts, _, err := s.tokens(ctx)
	if err != nil {
		return nil, err
	}
	return budgetsOf(in, func(a common.Address) (string, int, bool) {
		for _, t := range ts {
			if t.Address == a {
				return t.Symbol, t.Decimals, true
			}
		}
		return "", 0, false
	})
}
