// Package quorum owns the one check of which signers may serve a tier
// (invariant 3): for a key's committee and a tier, whether the key can grant
// the tier at all, which quorums satisfy it, whether a given quorum does, and
// which quorum to pick from the members that can be reached. The coordinator
// picks with it and every node checks with it, so the two cannot disagree.
//
// A quorum Q of a key with committee C and threshold t satisfies tier T when:
//
//  1. every member of Q is a member of C, none twice;
//  2. Q has at least t+1 members (fewer cannot sign);
//  3. every role that T names has at least one member in Q;
//  4. every policy member of C is in Q: budgets live in each policy node's
//     own ledger, so a quorum without one of them could spend a budget twice
//     across ledgers.
//
// A key can grant T when some quorum of its committee satisfies T and, if T
// names the guardian role, the key's guardian floor is at least 1: otherwise
// the agent and policy shares alone could sign without any guardian, and
// the tier's guardian would be a matter of policy, not of cryptography.
package quorum

import (
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
)

// ErrNoQuorum is wrapped when no quorum satisfies a tier.
var ErrNoQuorum = errors.New("quorum: no quorum satisfies the tier")

// ErrUngrantable is wrapped when a key cannot grant a tier.
var ErrUngrantable = errors.New("quorum: key cannot grant the tier")

// ErrBadQuorum is wrapped when a given quorum fails a tier.
var ErrBadQuorum = errors.New("quorum: quorum fails the tier")

func tierRoles(t policy.TierSpec) []ids.Role {
	rs := make([]ids.Role, 0, len(t.Roles))
	for _, r := range t.Roles {
		if !slices.Contains(rs, r) {
			rs = append(rs, r)
		}
	}
	return rs
}

// Check reports whether q satisfies tier for a key with committee c. The
// error names the first condition that fails.
func Check(c tss.Committee, tier policy.TierSpec, q []ids.MemberID) error {
	seen := make(map[ids.MemberID]bool, len(q))
	for _, m := range q {
		if c.Role(m) == "" {
			return fmt.Errorf("%w %s: %s is not a member of the key's committee", ErrBadQuorum, tier.Name, m)
		}
		if seen[m] {
			return fmt.Errorf("%w %s: %s appears twice", ErrBadQuorum, tier.Name, m)
		}
		seen[m] = true
	}
	if len(q) < c.Threshold+1 {
		return fmt.Errorf("%w %s: %d signers, the key needs %d", ErrBadQuorum, tier.Name, len(q), c.Threshold+1)
	}
	for _, r := range tierRoles(tier) {
		if !slices.ContainsFunc(q, func(m ids.MemberID) bool { return c.Role(m) == r }) {
			return fmt.Errorf("%w %s: no %s member among the signers", ErrBadQuorum, tier.Name, r)
		}
	}
	for _, m := range c.Members {
		if m.Role == ids.RolePolicy && !seen[m.ID] {
			return fmt.Errorf("%w %s: policy member %s is not among the signers (every policy member of a key signs, so no budget is spent twice)", ErrBadQuorum, tier.Name, m.ID)
		}
	}
	return nil
}

// CanGrant reports whether a key with committee c can serve tier at all.
func CanGrant(c tss.Committee, tier policy.TierSpec) error {
	for _, r := range tierRoles(tier) {
		if !slices.ContainsFunc(c.Members, func(m tss.Member) bool { return m.Role == r }) {
			return fmt.Errorf("%w %s: the key has no %s member", ErrUngrantable, tier.Name, r)
		}
	}
	if slices.Contains(tierRoles(tier), ids.RoleGuardian) && c.GuardianFloor() < 1 {
		return fmt.Errorf("%w %s: the tier needs a guardian but the key's guardian floor is 0 (its agent and policy shares sign alone); use a key whose every quorum includes a guardian", ErrUngrantable, tier.Name)
	}
	if _, err := Select(c, tier, nil, nil); err != nil {
		return fmt.Errorf("%w %s: %v", ErrUngrantable, tier.Name, err)
	}
	return nil
}

// Select picks the quorum for tier from the members for which reachable
// reports true (nil: every member), leaving out excluded ones (members a
// failed attempt blamed). It is deterministic: the forced members (every
// policy member, and one member of each role the tier names that the rest
// does not cover, the first by id), then members in id order, non-guardians
// before guardians (a guardian is not asked for its share unless the tier
// or the key's guardian floor needs one), up to t+1. It fails, naming what is
// missing, when no quorum of reachable, non-excluded members satisfies the
// tier.
func Select(c tss.Committee, tier policy.TierSpec, reachable func(ids.MemberID) bool, excluded []ids.MemberID) ([]ids.MemberID, error) {
	members := c.Canonical().Members
	usable := func(id ids.MemberID) bool {
		return !slices.Contains(excluded, id) && (reachable == nil || reachable(id))
	}
	var q []ids.MemberID
	in := func(id ids.MemberID) bool { return slices.Contains(q, id) }
	var missing []string
	for _, m := range members {
		id := m.ID
		if m.Role != ids.RolePolicy {
			continue
		}
		if !usable(id) {
			missing = append(missing, fmt.Sprintf("policy member %s is %s", id, why(id, excluded)))
			continue
		}
		q = append(q, id)
	}
	for _, r := range tierRoles(tier) {
		if slices.ContainsFunc(q, func(id ids.MemberID) bool { return c.Role(id) == r }) {
			continue
		}
		i := slices.IndexFunc(members, func(m tss.Member) bool {
			return m.Role == r && usable(m.ID)
		})
		if i < 0 {
			missing = append(missing, fmt.Sprintf("no %s member can be used", r))
			continue
		}
		q = append(q, members[i].ID)
	}
	for _, guardians := range []bool{false, true} {
		for _, m := range members {
			id := m.ID
			if len(q) >= c.Threshold+1 {
				break
			}
			if (m.Role == ids.RoleGuardian) == guardians && usable(id) && !in(id) {
				q = append(q, id)
			}
		}
	}
	if len(q) < c.Threshold+1 {
		missing = append(missing, fmt.Sprintf("%d usable members, the key needs %d", len(q), c.Threshold+1))
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w %s: %s", ErrNoQuorum, tier.Name, strings.Join(missing, "; "))
	}
	slices.Sort(q)
	if err := Check(c, tier, q); err != nil {
		// Unreachable by construction; fail closed all the same.
		return nil, err
	}
	return q, nil
}

func why(id ids.MemberID, excluded []ids.MemberID) string {
	if slices.Contains(excluded, id) {
		return "excluded after a failed attempt"
	}
	return "unreachable"
}

// All yields every quorum of the smallest size that satisfies tier, each
// sorted by id, in lexicographic order of the committee's canonical order.
// It enumerates subsets, so it is meant for small committees (tests, CLI
// explanations); Select is what services call.
func All(c tss.Committee, tier policy.TierSpec) iter.Seq[[]ids.MemberID] {
	return func(yield func([]ids.MemberID) bool) {
		members := c.Canonical().Members
		n := len(members)
		for size := max(c.Threshold+1, 1); size <= n; size++ {
			found := false
			idx := make([]int, size)
			for i := range idx {
				idx[i] = i
			}
			for {
				q := make([]ids.MemberID, size)
				for i, j := range idx {
					q[i] = members[j].ID
				}
				if Check(c, tier, q) == nil {
					found = true
					if !yield(q) {
						return
					}
				}
				if !nextCombination(idx, n) {
					break
				}
			}
			if found {
				return
			}
		}
	}
}

// nextCombination advances idx to the next k-subset of 0..n-1 in
// lexicographic order, reporting false after the last.
func nextCombination(idx []int, n int) bool {
	k := len(idx)
	i := k - 1
	for i >= 0 && idx[i] == n-k+i {
		i--
	}
	if i < 0 {
		return false
	}
	idx[i]++
	for j := i + 1; j < k; j++ {
		idx[j] = idx[j-1] + 1
	}
	return true
}

// Hot is the least demanding of tiers when it needs no approval and no
// delay: the tier whose quorums get presignatures (a request that waits for
// a human gains nothing from a fast online phase). Nodes and coordinators
// both take it from here, so they agree on which quorums qualify.
func Hot(tiers []policy.TierSpec) (policy.TierSpec, bool) {
	if len(tiers) == 0 {
		return policy.TierSpec{}, false
	}
	hot := tiers[0]
	for _, t := range tiers[1:] {
		if t.Rank < hot.Rank {
			hot = t
		}
	}
	if hot.Approvals > 0 || hot.Delay > 0 {
		return policy.TierSpec{}, false
	}
	return hot, true
}
