package policy

import (
	"encoding/json"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
)

func sameGuardians(a, b *Policy) bool {
	if len(a.guardians) != len(b.guardians) || a.doc.Quorum != b.doc.Quorum {
		return false
	}
	for g := range a.guardians {
		if _, ok := b.guardians[g]; !ok {
			return false
		}
	}
	return true
}

// encodeJSON is the encoder behind every comparison of encoded values; a
// test replaces it to show that an encoding error denies.
var encodeJSON = json.Marshal

// sameJSON reports whether a and b encode alike. An encoding error is an
// error, never "equal": two values that fail to encode would otherwise
// compare as the same empty text.
func sameJSON(a, b any) (bool, error) {
	x, err := encodeJSON(a)
	if err != nil {
		return false, errorf("encode for comparison: %w", err)
	}
	y, err := encodeJSON(b)
	if err != nil {
		return false, errorf("encode for comparison: %w", err)
	}
	return string(x) == string(y), nil
}

// checkTightening returns nil when every request that nw allows is allowed
// by old in the same or a more demanding tier, judged conservatively by
// structure. Accepted changes: new deny rules; a rule's verdict raised to a
// more demanding tier or to deny; lower limits and budgets; removed
// allowing rules; address conditions that match fewer requests (entries
// removed from a positive condition such as to or recipient of an allowing
// rule, added to its not_to or not_recipient; the reverse for deny rules);
// more demanding tiers; tighter breaker thresholds. A narrowed or removed
// allowing rule, and any allowing rule turned into a deny rule, is accepted
// only when every allowing rule after it is at least as demanding, because
// requests it no longer matches (or, for a deny rule, no longer allows)
// fall through to them. Address conditions are compared as resolved
// address sets, whatever lists or tokens they were written with.
func checkTightening(old, nw *Policy) error {
	if !sameGuardians(old, nw) {
		return fmt.Errorf("%w: guardians or quorum changed", ErrNotTightening)
	}
	// A new agent, or a new key for one, is someone new who can ask;
	// removing an agent only refuses its requests.
	if len(old.agents) > 0 && len(nw.agents) == 0 {
		// A policy without a registry checks no agent at all.
		return fmt.Errorf("%w: agent registry removed", ErrNotTightening)
	}
	for _, id := range nw.Agents() {
		if k, ok := old.agents[id]; !ok || !k.Equal(nw.agents[id]) {
			return fmt.Errorf("%w: agent %s added or its key changed", ErrNotTightening, id)
		}
	}
	// Declared tokens change what rules mean in both directions: a token
	// removed from tokens is no longer one whose undecoded calldata needs
	// its selector named, so deleting a declaration loosens too.
	for _, sym := range sortedKeys(nw.doc.Tokens) {
		if o, ok := old.doc.Tokens[sym]; !ok || o != nw.doc.Tokens[sym] {
			return fmt.Errorf("%w: token %s added or changed", ErrNotTightening, sym)
		}
	}
	for _, sym := range sortedKeys(old.doc.Tokens) {
		if _, ok := nw.doc.Tokens[sym]; !ok {
			return fmt.Errorf("%w: token %s removed", ErrNotTightening, sym)
		}
	}
	if len(old.tiers) != len(nw.tiers) {
		return fmt.Errorf("%w: tiers added or removed", ErrNotTightening)
	}
	// Compile makes every document's tiers monotonic (each at least as
	// demanding as the one before), so rank comparisons below compare what
	// the tiers demand.
	for i, o := range old.tiers {
		n := nw.tiers[i]
		if n.Name != o.Name || n.Approvals < o.Approvals || n.Delay < o.Delay {
			return fmt.Errorf("%w: tier %s is less demanding", ErrNotTightening, o.Name)
		}
		for _, r := range o.Roles {
			if !hasRole(n.Roles, r) {
				return fmt.Errorf("%w: tier %s drops role %s", ErrNotTightening, o.Name, r)
			}
		}
	}
	if err := tighterBreaker(old.breaker, nw.breaker); err != nil {
		return err
	}

	oldIdx := map[string]int{}
	for i, r := range old.rules {
		oldIdx[r.id] = i
	}
	newByID := map[string]*rule{}
	last := -1
	for _, n := range nw.rules {
		newByID[n.id] = n
		i, ok := oldIdx[n.id]
		if !ok {
			if n.verdict != Deny {
				return fmt.Errorf("%w: new rule %q does not deny", ErrNotTightening, n.id)
			}
			continue
		}
		if i < last {
			return fmt.Errorf("%w: rule %q moved", ErrNotTightening, n.id)
		}
		last = i
	}
	// Requests a rule no longer allows fall through to the allowing rules
	// after it; they must be at least as demanding as the rule was.
	fallthroughSafe := func(i int) error {
		o := old.rules[i]
		for _, later := range old.rules[i+1:] {
			n, ok := newByID[later.id]
			if !ok || n.verdict == Deny {
				continue
			}
			if n.rank(nw) < o.rank(old) {
				return fmt.Errorf("%w: rule %q narrowed, and later rule %q is less demanding", ErrNotTightening, o.id, n.id)
			}
		}
		return nil
	}
	for i, o := range old.rules {
		n, ok := newByID[o.id]
		if !ok {
			if o.verdict == Deny {
				return fmt.Errorf("%w: deny rule %q removed", ErrNotTightening, o.id)
			}
			if err := fallthroughSafe(i); err != nil {
				return err
			}
			continue
		}
		if n.shape != o.shape {
			return fmt.Errorf("%w: rule %q changes conditions other than limits", ErrNotTightening, o.id)
		}
		if o.verdict == Deny {
			same, err := sameLimits(o, n)
			if err != nil {
				return errorf("%w: deny rule %q: %v", ErrNotTightening, o.id, err)
			}
			if n.verdict != Deny || !same {
				return fmt.Errorf("%w: deny rule %q changed", ErrNotTightening, o.id)
			}
			if _, err := fewerMatches(o, n, true); err != nil {
				return err
			}
			continue
		}
		if n.verdict == Deny {
			// Whatever the deny rule's own conditions, what the allowing
			// rule matched and the deny rule does not now falls through.
			if err := fallthroughSafe(i); err != nil {
				return err
			}
			continue
		}
		if n.rank(nw) < o.rank(old) {
			return fmt.Errorf("%w: rule %q moves to a less demanding tier", ErrNotTightening, o.id)
		}
		if err := lowerLimits(o, n); err != nil {
			return err
		}
		narrowed, err := fewerMatches(o, n, false)
		if err != nil {
			return err
		}
		same, err := sameLimits(o, n)
		if err != nil {
			return errorf("%w: rule %q: %v", ErrNotTightening, o.id, err)
		}
		if narrowed || !same {
			if err := fallthroughSafe(i); err != nil {
				return err
			}
		}
	}
	return nil
}

// fewerMatches compares the address conditions of two versions of a rule
// with the same shape. For an allowing rule it refuses any condition that
// now matches more, and reports whether any matches less; for a deny rule
// (deny set) it refuses any condition that now matches less.
func fewerMatches(o, n *rule, deny bool) (narrowed bool, err error) {
	if len(o.sets) != len(n.sets) {
		return false, fmt.Errorf("%w: rule %q changes conditions other than limits", ErrNotTightening, o.id)
	}
	for i, os := range o.sets {
		ns := n.sets[i]
		if ns.cond != os.cond || ns.neg != os.neg {
			return false, fmt.Errorf("%w: rule %q changes conditions other than limits", ErrNotTightening, o.id)
		}
		added, removed := setDiff(os.set, ns.set)
		// A rule matches more when a positive set grows or a negative one
		// shrinks. That loosens an allowing rule and tightens a deny rule.
		more, fewer := added > 0, removed > 0
		if os.neg {
			more, fewer = fewer, more
		}
		switch {
		case !deny && more:
			return false, fmt.Errorf("%w: rule %q matches more: %s gains %d and loses %d addresses", ErrNotTightening, o.id, os.cond, added, removed)
		case deny && fewer:
			return false, fmt.Errorf("%w: deny rule %q matches less: %s gains %d and loses %d addresses", ErrNotTightening, o.id, os.cond, added, removed)
		}
		narrowed = narrowed || fewer
	}
	return narrowed, nil
}

func setDiff(o, n map[common.Address]struct{}) (added, removed int) {
	for a := range n {
		if _, ok := o[a]; !ok {
			added++
		}
	}
	for a := range o {
		if _, ok := n[a]; !ok {
			removed++
		}
	}
	return added, removed
}

func sameLimits(a, b *rule) (bool, error) {
	return sameJSON(limitsView(a), limitsView(b))
}

func limitsView(r *rule) []*big.Int {
	v := []*big.Int{r.limits.valueMax, r.limits.amountMax, r.limits.gasMax, r.limits.feeMax, r.limits.tipMax}
	if r.budget != nil {
		v = append(v, r.budget.value, r.budget.amount, new(big.Int).SetUint64(r.budget.count))
	}
	return v
}

// lowerLimits checks that every limit of o is kept in n at the same or a
// lower value; limits n adds are fine.
func lowerLimits(o, n *rule) error {
	ov, nv := limitsView(o), limitsView(n)
	if o.budget != nil && n.budget == nil {
		return fmt.Errorf("%w: rule %q drops its budget", ErrNotTightening, o.id)
	}
	for i := range ov {
		if i >= len(nv) {
			break
		}
		// The budget count is the last slot only when the rule has a
		// budget; there 0 means no count limit.
		count := o.budget != nil && i == len(ov)-1
		if ov[i] == nil || (count && o.budget.count == 0) {
			continue
		}
		if nv[i] == nil || nv[i].Cmp(ov[i]) > 0 || (count && nv[i].Sign() == 0) {
			return fmt.Errorf("%w: rule %q raises or drops a limit", ErrNotTightening, o.id)
		}
	}
	return nil
}

func tighterBreaker(o, n breakerConfig) error {
	for _, x := range []struct {
		name string
		o, n *rateCfg
	}{{"requests", o.requests, n.requests}, {"denials", o.denials, n.denials}, {"new_destinations", o.newDests, n.newDests}} {
		if x.o == nil {
			continue
		}
		if x.n == nil || x.n.max > x.o.max || x.n.window < x.o.window {
			return fmt.Errorf("%w: breaker %s loosened", ErrNotTightening, x.name)
		}
	}
	if o.outlier != nil && (n.outlier == nil || n.outlier.factor.Cmp(o.outlier.factor) > 0 || n.outlier.minHistory > o.outlier.minHistory) {
		return fmt.Errorf("%w: breaker value_outlier loosened", ErrNotTightening)
	}
	return nil
}
