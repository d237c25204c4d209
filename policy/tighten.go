package policy

import (
	"encoding/json"
	"fmt"
	"math/big"
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

func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// checkTightening returns nil when every request that nw allows is allowed
// by old in the same or a less demanding tier, judged conservatively by
// structure. Accepted changes: new deny rules; a rule's verdict raised to a
// more demanding tier or to deny; lower limits and budgets; removed
// allowing rules; entries removed from lists that only narrow rules, or
// added to lists that only widen deny rules; more demanding tiers; tighter
// breaker thresholds. A narrowed or removed allowing rule is accepted only
// when every allowing rule after it is at least as demanding, because
// requests it no longer matches fall through to them.
func checkTightening(old, nw *Policy) error {
	if !sameGuardians(old, nw) {
		return fmt.Errorf("%w: guardians or quorum changed", ErrNotTightening)
	}
	for sym, t := range nw.doc.Tokens {
		if o, ok := old.doc.Tokens[sym]; !ok || o != t {
			return fmt.Errorf("%w: token %s added or changed", ErrNotTightening, sym)
		}
	}
	if len(old.tiers) != len(nw.tiers) {
		return fmt.Errorf("%w: tiers added or removed", ErrNotTightening)
	}
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
	// Requests a rule no longer matches fall through to the allowing rules
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
	narrowed := map[string]bool{}
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
			if n.verdict != Deny || !sameLimits(o, n) {
				return fmt.Errorf("%w: deny rule %q changed", ErrNotTightening, o.id)
			}
			continue
		}
		if n.rank(nw) < o.rank(old) {
			return fmt.Errorf("%w: rule %q moves to a less demanding tier", ErrNotTightening, o.id)
		}
		if err := lowerLimits(o, n); err != nil {
			return err
		}
		if n.verdict != Deny && !sameLimits(o, n) {
			narrowed[o.id] = true
		}
	}
	// Lists: entries may leave lists that narrow allowing rules and join
	// lists that widen deny rules or exclusions.
	shrinkOK, growOK := map[string]bool{}, map[string]bool{}
	users := map[string][]string{}
	for _, p := range []*Policy{old, nw} {
		for _, r := range p.rules {
			pos, neg := r.pos, r.neg
			if r.verdict == Deny {
				pos, neg = neg, pos
			}
			for _, l := range pos {
				growOK[l] = true // growing would widen an allowing rule: refused below
				users[l] = append(users[l], r.id)
			}
			for _, l := range neg {
				shrinkOK[l] = true // shrinking would narrow a deny: refused below
			}
		}
	}
	names := map[string]bool{}
	for n := range old.lists {
		names[n] = true
	}
	for n := range nw.lists {
		names[n] = true
	}
	for name := range names {
		o, n := old.lists[name], nw.lists[name]
		added, removed := 0, 0
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
		if added > 0 && growOK[name] {
			return fmt.Errorf("%w: list %s gains %d entries", ErrNotTightening, name, added)
		}
		if removed > 0 && shrinkOK[name] {
			return fmt.Errorf("%w: list %s loses %d entries used to deny or exclude", ErrNotTightening, name, removed)
		}
		if removed > 0 {
			for _, id := range users[name] {
				narrowed[id] = true
			}
		}
	}
	for i, o := range old.rules {
		if narrowed[o.id] {
			if err := fallthroughSafe(i); err != nil {
				return err
			}
		}
	}
	return nil
}

func sameLimits(a, b *rule) bool {
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
		if ov[i] == nil || (i == len(ov)-1 && o.budget != nil && o.budget.count == 0) {
			continue
		}
		if nv[i] == nil || nv[i].Cmp(ov[i]) > 0 || (i == len(ov)-1 && nv[i].Sign() == 0) {
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
