package mcp

import (
	"math/big"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/chain"
)

func TestParseUnits(t *testing.T) {
	ok := []struct {
		in   string
		dec  int
		want string
	}{
		{"0.01", 18, "10000000000000000"},
		{"1", 6, "1000000"},
		{"12.5", 6, "12500000"},
		{".5", 6, "500000"},
		{"5.", 6, "5000000"},
		{"007", 0, "7"},
		{"0", 18, "0"},
		{" 2 ", 2, "200"},
	}
	for _, c := range ok {
		got, err := ParseUnits(c.in, c.dec)
		if err != nil || got.String() != c.want {
			t.Errorf("ParseUnits(%q, %d) = %v, %v; want %s", c.in, c.dec, got, err, c.want)
		}
	}
	bad := []struct {
		in   string
		dec  int
		text string
	}{
		{"", 18, "empty"},
		{".", 18, "not a decimal"},
		{"-1", 18, "plain decimal"},
		{"+1", 18, "plain decimal"},
		{"1e18", 18, "plain decimal"},
		{"0x10", 18, "plain decimal"},
		{"1,5", 6, "plain decimal"},
		{"1.2.3", 6, "plain decimal"},
		{"0.0000001", 6, "more than 6 decimal places"},
		{"1", -1, "out of range"},
		{strings.Repeat("9", 80), 0, "too large"},
	}
	for _, c := range bad {
		if got, err := ParseUnits(c.in, c.dec); err == nil || !strings.Contains(err.Error(), c.text) {
			t.Errorf("ParseUnits(%q, %d) = %v, %v; want an error mentioning %q", c.in, c.dec, got, err, c.text)
		}
	}
}

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
		{0, 6, "0"},
		{42, 0, "42"},
		{-1500000, 6, "-1.5"},
	}
	for _, c := range cases {
		if got := chain.FormatUnits(big.NewInt(c.v), c.dec); got != c.want {
			t.Errorf("chain.FormatUnits(%d, %d) = %q, want %q", c.v, c.dec, got, c.want)
		}
		if c.v >= 0 {
			back, err := ParseUnits(c.want, c.dec)
			if err != nil || back.Int64() != c.v {
				t.Errorf("round trip of %q: %v %v", c.want, back, err)
			}
		}
	}
}
