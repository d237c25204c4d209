package chain

import (
	"math/big"
	"testing"
)

func TestFormatUnits(t *testing.T) {
	cases := []struct {
		v    int64
		dec  int
		want string
	}{
		{10000000000000000, 18, "0.01"},
		{1500000, 6, "1.5"},
		{1000000, 6, "1"},
		{5, 6, "0.000005"},
		{1, 6, "0.000001"},
		{0, 6, "0"},
		{0, 18, "0"},
		{42, 0, "42"},
		{-1500000, 6, "-1.5"},
		{-25, 1, "-2.5"},
	}
	for _, c := range cases {
		if got := FormatUnits(big.NewInt(c.v), c.dec); got != c.want {
			t.Errorf("FormatUnits(%d, %d) = %q, want %q", c.v, c.dec, got, c.want)
		}
	}
	if got := FormatUnits(nil, 6); got != "0" {
		t.Errorf("FormatUnits(nil) = %q, want 0", got)
	}
}
