package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestErrorsSayPolicyOnce: an error of this package that wraps others of
// this package (sentinels, or errors made by errorf) names the package once,
// and errors.Is still finds every sentinel it wraps.
func TestErrorsSayPolicyOnce(t *testing.T) {
	inner := wrapf("signature %d by %s: %w", 1, "0x5c47", ErrNotGuardian)
	tightening := errorf("%w: rule %q: %v", ErrNotTightening, "r", errorf("encode for comparison: %w", context.Canceled))
	for _, c := range []struct {
		err  error
		text string
		is   []error
	}{
		{errorf("unfreeze %s: %w: %d of %d", "agent:bot", ErrQuorum, 1, 2),
			"policy: unfreeze agent:bot: not enough guardian signatures: 1 of 2", []error{ErrQuorum}},
		{errorf("revoke grant %s: %w", "g6", inner),
			"policy: revoke grant g6: signature 1 by 0x5c47: signer is not a guardian", []error{ErrNotGuardian}},
		{errorf("%w: %w: %d of %d guardians signed", ErrAuthorization, ErrQuorum, 1, 2),
			"policy: reshare authorisation refused: not enough guardian signatures: 1 of 2 guardians signed", []error{ErrAuthorization, ErrQuorum}},
		{errorf("apply document v%d: tighten only: %w", 2, tightening),
			"policy: apply document v2: tighten only: change loosens the policy: rule \"r\": encode for comparison: context canceled", []error{ErrNotTightening}},
		{errorf("reserve %s: %w", "r1", context.Canceled),
			"policy: reserve r1: context canceled", []error{context.Canceled}},
	} {
		if got := c.err.Error(); got != c.text {
			t.Errorf("text\n  %s\nwant\n  %s", got, c.text)
		}
		// Each part of an error text follows ": ".
		if n := strings.Count(": "+c.err.Error(), ": policy: "); n != 1 {
			t.Errorf("%q names the package %d times", c.err, n)
		}
		for _, s := range c.is {
			if !errors.Is(c.err, s) {
				t.Errorf("%q: errors.Is(%q) is false", c.err, s)
			}
		}
	}
	// A sentinel on its own keeps the package name.
	if ErrQuorum.Error() != "policy: not enough guardian signatures" {
		t.Errorf("sentinel text %q", ErrQuorum)
	}
}
