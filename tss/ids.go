package tss

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// MemberID names a member node of a committee. Over the network it is the
// node's peer id; the engine treats it as an opaque, comparable name.
type MemberID string

// Role is what a member node is for.
type Role string

// The roles a committee member can have.
const (
	RoleAgent    Role = "agent"
	RolePolicy   Role = "policy"
	RoleGuardian Role = "guardian"
)

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	switch r {
	case RoleAgent, RolePolicy, RoleGuardian:
		return true
	}
	return false
}

// SessionID identifies one run of a protocol. Every message the engine emits
// or accepts carries it.
type SessionID [16]byte

const sessionPrefix = "sess:"

// NewSessionID returns a fresh random session id.
func NewSessionID() SessionID {
	var id SessionID
	if _, err := rand.Read(id[:]); err != nil {
		panic(fmt.Sprintf("tss: read random session id: %v", err))
	}
	return id
}

// String returns the text form, "sess:" followed by 32 hex digits.
func (id SessionID) String() string { return sessionPrefix + hex.EncodeToString(id[:]) }

// IsZero reports whether id is unset.
func (id SessionID) IsZero() bool { return id == SessionID{} }

// ParseSessionID parses the text form of a session id.
func ParseSessionID(s string) (SessionID, error) {
	var id SessionID
	h, ok := strings.CutPrefix(s, sessionPrefix)
	if !ok {
		return id, fmt.Errorf("tss: session id %q lacks prefix %q", s, sessionPrefix)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("tss: session id %q is not %d hex bytes", s, len(id))
	}
	copy(id[:], b)
	return id, nil
}

// MarshalText implements encoding.TextMarshaler.
func (id SessionID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *SessionID) UnmarshalText(b []byte) error {
	v, err := ParseSessionID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// derive returns a session id bound to id and a label, for the sub-sessions
// of one protocol run (the proof signature after a reshare).
func (id SessionID) derive(label string) SessionID {
	h := hashParts([]byte("custos/session/v1"), id[:], []byte(label))
	var out SessionID
	copy(out[:], h)
	return out
}

// Member is one node of a committee.
type Member struct {
	ID   MemberID `json:"id"`
	Role Role     `json:"role"`
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
	seen := make(map[MemberID]bool, n)
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
		if m.Role != RoleGuardian {
			nonGuardians++
		}
	}
	return max(0, c.Threshold+1-nonGuardians)
}

// Has reports whether id is a member.
func (c Committee) Has(id MemberID) bool { return c.Role(id) != "" }

// Role returns the role of member id, or "" if it is not a member.
func (c Committee) Role(id MemberID) Role {
	for _, m := range c.Members {
		if m.ID == id {
			return m.Role
		}
	}
	return ""
}

// IDs returns the member ids in committee order.
func (c Committee) IDs() []MemberID {
	ids := make([]MemberID, len(c.Members))
	for i, m := range c.Members {
		ids[i] = m.ID
	}
	return ids
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
