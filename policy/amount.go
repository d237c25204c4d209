package policy

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/custos-wallet/custos/chain"
)

// Native units accepted in amounts, with their decimals.
var nativeUnits = map[string]int{"wei": 0, "gwei": 9, "ether": 18, "eth": 18}

// parseAmount reads "0.05 ether", "30 gwei", "100 USDC" or a plain integer in
// base units. decimalsOf resolves a token symbol to its decimals. The
// returned unit is "" for a plain integer, the native unit name, or the token
// symbol. A fraction finer than the unit's decimals is an error, never
// rounded.
func parseAmount(s string, decimalsOf func(string) (int, bool)) (*big.Int, string, error) {
	s = strings.TrimSpace(s)
	num, unit, hasUnit := strings.Cut(s, " ")
	unit = strings.TrimSpace(unit)
	dec := 0
	if hasUnit {
		if d, ok := nativeUnits[strings.ToLower(unit)]; ok {
			dec = d
		} else if d, ok := decimalsOf(unit); ok {
			dec = d
		} else {
			return nil, "", fmt.Errorf("amount %q: unknown unit %q", s, unit)
		}
	}
	whole, frac, hasFrac := strings.Cut(num, ".")
	if whole == "" || !isDigits(whole) || (hasFrac && (frac == "" || !isDigits(frac))) {
		return nil, "", fmt.Errorf("amount %q: not a decimal number", s)
	}
	if len(frac) > dec {
		return nil, "", fmt.Errorf("amount %q: more than %d decimal places", s, dec)
	}
	frac += strings.Repeat("0", dec-len(frac))
	v, ok := new(big.Int).SetString(whole+frac, 10)
	if !ok || v.BitLen() > 256 {
		return nil, "", fmt.Errorf("amount %q: out of range", s)
	}
	return v, unit, nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// formatUnits renders v with dec decimals, trimming trailing zeros.
func formatUnits(v *big.Int, dec int) string { return chain.FormatUnits(v, dec) }

// formatEther renders wei as "0.05 ether".
func formatEther(v *big.Int) string { return formatUnits(v, 18) + " ether" }
