package chain

import (
	"math/big"
	"strings"
)

// FormatUnits writes v base units of an asset with dec decimals in whole
// units, without trailing zeros: FormatUnits(1500000, 6) is "1.5",
// FormatUnits(10^16, 18) is "0.01". A nil v is "0".
func FormatUnits(v *big.Int, dec int) string {
	if v == nil {
		return "0"
	}
	neg := v.Sign() < 0
	s := new(big.Int).Abs(v).String()
	if dec > 0 {
		if len(s) <= dec {
			s = strings.Repeat("0", dec-len(s)+1) + s
		}
		whole, frac := s[:len(s)-dec], strings.TrimRight(s[len(s)-dec:], "0")
		s = whole
		if frac != "" {
			s += "." + frac
		}
	}
	if neg {
		s = "-" + s
	}
	return s
}
