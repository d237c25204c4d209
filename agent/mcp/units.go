package mcp

import (
	"fmt"
	"math/big"
	"strings"
)

// maxDecimals bounds a token's decimals (ERC-20 uses a uint8; no real
// token goes past 36).
const maxDecimals = 77

// ParseUnits reads a decimal amount in human units ("0.05", "12") as an
// integer of base units with decimals places. It refuses signs,
// exponents, more fractional digits than decimals and anything that is
// not plain digits: an amount that means one thing to the agent and
// another to the wallet must not be paid.
func ParseUnits(s string, decimals int) (*big.Int, error) {
	if decimals < 0 || decimals > maxDecimals {
		return nil, fmt.Errorf("amount %q: %d decimals is out of range", s, decimals)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("amount is empty")
	}
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" && (!dot || frac == "") {
		return nil, fmt.Errorf("amount %q is not a decimal number", s)
	}
	for _, part := range []string{whole, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return nil, fmt.Errorf("amount %q is not a plain decimal number (digits and one point only)", s)
			}
		}
	}
	if len(frac) > decimals {
		return nil, fmt.Errorf("amount %q has more than %d decimal places", s, decimals)
	}
	if len(whole)+decimals > 78 {
		return nil, fmt.Errorf("amount %q is too large", s)
	}
	digits := whole + frac + strings.Repeat("0", decimals-len(frac))
	v, ok := new(big.Int).SetString(strings.TrimLeft(digits, "0")+"0", 10)
	if !ok {
		return nil, fmt.Errorf("amount %q is not a decimal number", s)
	}
	v.Div(v, big.NewInt(10))
	return v, nil
}
