package quorum

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
)

func committee(t int, roles ...ids.Role) tss.Committee {
	c := tss.Committee{Threshold: t}
	for i, r := range roles {
		c.Members = append(c.Members, tss.Member{ID: ids.MemberID(fmt.Sprintf("%s-%d", r, i)), Role: r})
	}
	return c
}

func tier(name string, roles ...ids.Role) policy.TierSpec {
	ts := policy.TierSpec{Name: name}
	for _, r := range roles {
		ts.Roles = append(ts.Roles, r)
	}
	return ts
}

var (
	agent    = ids.RoleAgent
	pol      = ids.RolePolicy
	guardian = ids.RoleGuardian
	hot      = tier("hot", agent, pol)
	guarded  = tier("guarded", agent, pol, guardian)
)

func TestUsualWallet(t *testing.T) {
	hotKey := committee(1, agent, pol, guardian)             // 2-of-3, floor 0
	vaultKey := committee(2, agent, pol, guardian, guardian) // 3-of-4, floor 1

	q, err := Select(hotKey, hot, nil, nil)
	if err != nil || !slices.Equal(q, []ids.MemberID{"agent-0", "policy-1"}) {
		t.Errorf("hot key, hot tier: %v, %v; want the agent and policy members only", q, err)
	}
	if err := CanGrant(hotKey, guarded); !errors.Is(err, ErrUngrantable) || !strings.Contains(err.Error(), "guardian floor is 0") {
		t.Errorf("hot key granted the guarded tier: %v", err)
	}
	q, err = Select(vaultKey, guarded, nil, nil)
	if err != nil || !slices.Equal(q, []ids.MemberID{"agent-0", "guardian-2", "policy-1"}) {
		t.Errorf("vault key, guarded tier: %v, %v", q, err)
	}
	// The first guardian unreachable: the second one serves.
	q, err = Select(vaultKey, guarded, func(id ids.MemberID) bool { return id != "guardian-2" }, nil)
	if err != nil || !slices.Equal(q, []ids.MemberID{"agent-0", "guardian-3", "policy-1"}) {
		t.Errorf("vault key without guardian-2: %v, %v", q, err)
	}
	// A hot-tier request on the vault key still needs a guardian's share:
	// the floor says so, whatever the tier.
	q, err = Select(vaultKey, hot, nil, nil)
	if err != nil || len(q) != 3 || !slices.Contains(q, "guardian-2") {
		t.Errorf("vault key, hot tier: %v, %v", q, err)
	}
	// The policy node down: the reason names it, promptly.
	_, err = Select(hotKey, hot, func(id ids.MemberID) bool { return id != "policy-1" }, nil)
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "policy member policy-1 is unreachable") {
		t.Errorf("policy node down: %v", err)
	}
	// A blamed member is excluded and named as such.
	_, err = Select(hotKey, hot, nil, []ids.MemberID{"agent-0"})
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "no agent member") {
		t.Errorf("agent excluded: %v", err)
	}
	// Check refuses a quorum without the tier's guardian, without the policy
	// member, too small, or with a stranger.
	for _, q := range [][]ids.MemberID{
		{"agent-0", "policy-1", "guardian-9"},
		{"agent-0", "guardian-2", "guardian-3"},
		{"agent-0", "policy-1"},
		{"agent-0", "policy-1", "policy-1"},
		{"agent-0", "policy-1", "guardian-2", "coordinator"},
	} {
		if err := Check(vaultKey, guarded, q); !errors.Is(err, ErrBadQuorum) {
			t.Errorf("Check(%v) = %v, want ErrBadQuorum", q, err)
		}
	}
}

// naive is the definition of a satisfying quorum written a second way: a
// bitmask over the canonical members.
func naive(c tss.Committee, ts policy.TierSpec, mask uint) bool {
	ms := c.Canonical().Members
	if bits.OnesCount(mask) < c.Threshold+1 {
		return false
	}
	have := map[ids.Role]bool{}
	for i, m := range ms {
		in := mask&(1<<i) != 0
		if in {
			have[m.Role] = true
		}
		if m.Role == ids.RolePolicy && !in {
			return false
		}
	}
	for _, r := range ts.Roles {
		if !have[r] {
			return false
		}
	}
	return true
}

func members(c tss.Committee, mask uint) []ids.MemberID {
	var q []ids.MemberID
	for i, m := range c.Canonical().Members {
		if mask&(1<<i) != 0 {
			q = append(q, m.ID)
		}
	}
	return q
}

func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 3000 {
		n := 2 + rng.IntN(6)
		roles := make([]ids.Role, n)
		for i := range roles {
			roles[i] = ids.Roles[rng.IntN(3)]
		}
		c := committee(1+rng.IntN(n-1), roles...)
		rng.Shuffle(len(c.Members), func(i, j int) { c.Members[i], c.Members[j] = c.Members[j], c.Members[i] })
		var tr []ids.Role
		for _, r := range ids.Roles {
			if rng.IntN(2) == 0 {
				tr = append(tr, r)
			}
		}
		ts := tier("t", tr...)
		canon := c.Canonical().Members
		var usableMask uint
		var excluded []ids.MemberID
		for i, m := range canon {
			switch rng.IntN(5) {
			case 0:
				excluded = append(excluded, m.ID)
			case 1: // unreachable
			default:
				usableMask |= 1 << i
			}
		}
		reachable := func(id ids.MemberID) bool {
			i := slices.IndexFunc(canon, func(m tss.Member) bool { return m.ID == id })
			return usableMask&(1<<i) != 0 || slices.Contains(excluded, id)
		}
		ctx := fmt.Sprintf("case %d: %s tier %v usable %b", iter, c.Describe(), tr, usableMask)

		// Check agrees with the definition on every subset.
		anyUsable, anyAll, minSize := false, false, n+1
		for mask := uint(0); mask < 1<<n; mask++ {
			want := naive(c, ts, mask)
			if got := Check(c, ts, members(c, mask)) == nil; got != want {
				t.Fatalf("%s: Check(%v) = %v, definition says %v", ctx, members(c, mask), got, want)
			}
			if want {
				anyAll = true
				minSize = min(minSize, bits.OnesCount(mask))
				if mask&^usableMask == 0 {
					anyUsable = true
				}
			}
		}
		// Select finds a quorum exactly when one of usable members exists,
		// and it is deterministic whatever the committee's order.
		q, err := Select(c, ts, reachable, excluded)
		if (err == nil) != anyUsable {
			t.Fatalf("%s: Select = %v, %v; a usable quorum exists: %v", ctx, q, err, anyUsable)
		}
		if err == nil {
			if Check(c, ts, q) != nil {
				t.Fatalf("%s: Select gave failing quorum %v", ctx, q)
			}
			for _, id := range q {
				if !reachable(id) || slices.Contains(excluded, id) {
					t.Fatalf("%s: Select used unusable member %s", ctx, id)
				}
			}
			q2, _ := Select(c.Canonical(), ts, reachable, excluded)
			if !slices.Equal(q, q2) {
				t.Fatalf("%s: Select depends on member order: %v then %v", ctx, q, q2)
			}
		}
		// All yields exactly the satisfying quorums of the smallest size.
		var got [][]ids.MemberID
		for q := range All(c, ts) {
			got = append(got, q)
		}
		var want [][]ids.MemberID
		for mask := uint(0); mask < 1<<n; mask++ {
			if naive(c, ts, mask) && bits.OnesCount(mask) == minSize {
				want = append(want, members(c, mask))
			}
		}
		slices.SortFunc(got, slices.Compare)
		slices.SortFunc(want, slices.Compare)
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("%s: All = %v, want %v", ctx, got, want)
		}
		// CanGrant: some quorum exists, and a guardian tier has a floor.
		wantGrant := anyAll && (!slices.Contains(tr, ids.RoleGuardian) || c.GuardianFloor() >= 1)
		if err := CanGrant(c, ts); (err == nil) != wantGrant {
			t.Fatalf("%s: CanGrant = %v, want grantable %v", ctx, err, wantGrant)
		}
	}
}
