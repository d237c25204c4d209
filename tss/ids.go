package tss

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/custos-wallet/custos/ids"
)

// The identifiers the engine shares with the rest of Custos (member ids,
// roles, session ids) are package ids's.

// Member is one node of a committee.
type Member struct {
	ID   ids.MemberID `json:"id"`
	Role ids.Role     `json:"role"`
}

// Committee is a set of members and a threshold t: any t+1 of them sign.
type Committee struct {
	Members   []Member `json:"members"`
	Threshold int      `json:"threshold"`
}

// ErrBadCommittee is returned when a committee is refused.
var ErrBadCommittee = errors.New("tss: invalid committee")

// MaxCommittee is the largest committee the engine runs: tss-lib's cost grows
// with the square of the committee, and the session's buffers are sized for
// it.
const MaxCommittee = 32

// Validate refuses committees where t < 1, t+1 > n, n > MaxCommittee, a
// member id is empty or repeated, or a role is unknown.
func (c Committee) Validate() error {
	n := len(c.Members)
	if n > MaxCommittee {
		return fmt.Errorf("%w: %d members, at most %d", ErrBadCommittee, n, MaxCommittee)
	}
	if c.Threshold < 1 {
		return fmt.Errorf("%w: threshold %d is below 1", ErrBadCommittee, c.Threshold)
	}
	if c.Threshold+1 > n {
		return fmt.Errorf("%w: threshold %d needs %d signers but the committee has %d members", ErrBadCommittee, c.Threshold, c.Threshold+1, n)
	}
	seen := make(map[ids.MemberID]bool, n)
	for _, m := range c.Members {
		if m.ID == "" {
			return fmt.Errorf("%w: a member has an empty id", ErrBadCommittee)
		}
		if seen[m.ID] {
			return fmt.Errorf("%w: member %s appears twice", ErrBadCommittee, m.ID)
		}
		seen[m.ID] = true
		if !m.Role.Valid() {
			return fmt.Errorf("%w: member %s has unknown role %q", ErrBadCommittee, m.ID, m.Role)
		}
	}
	return nil
}

// GuardianFloor is max(0, t+1 - non-guardian members): the number of
// guardian shares without which no signature on the key can exist.
func (c Committee) GuardianFloor() int {
	nonGuardians := 0
	for _, m := range c.Members {
		if m.Role != ids.RoleGuardian {
			nonGuardians++
		}
	}
	return max(0, c.Threshold+1-nonGuardians)
}

// Has reports whether id is a member.
func (c Committee) Has(id ids.MemberID) bool { return c.Role(id) != "" }

// Role returns the role of member id, or "" if it is not a member.
func (c Committee) Role(id ids.MemberID) ids.Role {
	for _, m := range c.Members {
		if m.ID == id {
			return m.Role
		}
	}
	return ""
}

// IDs returns the member ids in committee order.
func (c Committee) IDs() []ids.MemberID {
	out := make([]ids.MemberID, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.ID
	}
	return out
}

// Describe renders the committee for logs and CLI output, e.g.
// "2-of-3 {agent-1:agent policy-1:policy guardian-1:guardian} guardian floor 0".
func (c Committee) Describe() string {
	parts := make([]string, len(c.Members))
	for i, m := range c.Members {
		parts[i] = string(m.ID) + ":" + string(m.Role)
	}
	return fmt.Sprintf("%d-of-%d {%s} guardian floor %d", c.Threshold+1, len(c.Members), strings.Join(parts, " "), c.GuardianFloor())
}

// Canonical returns a copy with the members sorted by id: the form kept in
// a key's description and bound into sessions, so that members given the
// same committee in another order agree.
func (c Committee) Canonical() Committee {
	ms := slices.Clone(c.Members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return Committee{Members: ms, Threshold: c.Threshold}
}

// Equal reports whether c and o have the same members, roles and threshold,
// in any order.
func (c Committee) Equal(o Committee) bool {
	return c.Threshold == o.Threshold && slices.Equal(c.Canonical().Members, o.Canonical().Members)
}
