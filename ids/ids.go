// Package ids holds the identifiers that the engine, the network, the policy
// and the services share: roles, members, keys, agents, requests and
// sessions. Each is its own type, so that a request id cannot be passed where
// a session id is meant, and each that travels as text has one text form
// with a parser.
package ids

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/ethereum/go-ethereum/common"
)

// ErrInvalid is wrapped by every parse error of this package.
var ErrInvalid = errors.New("ids: invalid identifier")

// Role is what a committee member is for.
type Role string

// The roles a committee member can have.
const (
	RoleAgent    Role = "agent"
	RolePolicy   Role = "policy"
	RoleGuardian Role = "guardian"
)

// Roles lists the known roles in their canonical order.
var Roles = []Role{RoleAgent, RolePolicy, RoleGuardian}

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	switch r {
	case RoleAgent, RolePolicy, RoleGuardian:
		return true
	}
	return false
}

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("%w: unknown role %q (want agent, policy or guardian)", ErrInvalid, s)
	}
	return r, nil
}

// MemberID names a member node of a committee. Over the network it is the
// node's libp2p peer id in its text form; the engine and the policy treat it
// as an opaque, comparable name.
type MemberID string

// AgentID names an agent in the policy's agent registry.
type AgentID string

// Bounds on the names of agents and requests.
const (
	maxAgent   = 64
	maxRequest = 128
)

// ParseAgentID checks an agent name: 1 to 64 characters of letters,
// digits, '.', '_' and '-', starting with a letter or digit.
func ParseAgentID(s string) (AgentID, error) {
	if err := checkName(s, maxAgent); err != nil {
		return "", fmt.Errorf("%w: agent id %q: %v", ErrInvalid, s, err)
	}
	return AgentID(s), nil
}

// RequestID identifies a signing request; budget reservations, approvals
// and the journal are keyed by it. The coordinator makes them with
// NewRequestID ("req:" and 32 hex digits).
type RequestID string

const requestPrefix = "req:"

// NewRequestID returns a fresh random request id.
func NewRequestID() RequestID {
	var b [16]byte
	mustRandom(b[:])
	return RequestID(requestPrefix + hex.EncodeToString(b[:]))
}

// ParseRequestID checks a request id: 1 to 128 characters of letters,
// digits, ':', '.', '_' and '-'.
func ParseRequestID(s string) (RequestID, error) {
	if err := checkName(strings.ReplaceAll(s, ":", "-"), maxRequest); err != nil {
		return "", fmt.Errorf("%w: request id %q: %v", ErrInvalid, s, err)
	}
	return RequestID(s), nil
}

func checkName(s string, maxLen int) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > maxLen {
		return fmt.Errorf("longer than %d characters", maxLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("must start with a letter or digit")
		}
		if !alnum && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

// KeyID names a threshold key by its Ethereum address. Its text form is
// "key:" and the EIP-55 checksummed address; shares, freeze targets, the
// REST API and the audit log all use it.
type KeyID common.Address

const keyPrefix = "key:"

// KeyIDOf returns the id of the key with address a.
func KeyIDOf(a common.Address) KeyID { return KeyID(a) }

// Address returns the key's Ethereum address.
func (k KeyID) Address() common.Address { return common.Address(k) }

// IsZero reports whether k is unset.
func (k KeyID) IsZero() bool { return k == KeyID{} }

// String returns the text form, "key:0x" and the checksummed address.
func (k KeyID) String() string { return keyPrefix + common.Address(k).Hex() }

// ParseKeyID parses "key:0x..." (or a bare address). The address must be
// all lower case, all upper case, or carry a valid EIP-55 checksum: a
// mistyped mixed-case address is refused rather than read as another key.
func ParseKeyID(s string) (KeyID, error) {
	a, err := ParseAddress(strings.TrimPrefix(s, keyPrefix))
	if err != nil {
		return KeyID{}, fmt.Errorf("%w: key id %q: %v", ErrInvalid, s, err)
	}
	return KeyID(a), nil
}

// ParseAddress parses a 0x-prefixed 20-byte hex address, refusing a
// mixed-case address whose EIP-55 checksum is wrong.
func ParseAddress(s string) (common.Address, error) {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok {
		h, ok = strings.CutPrefix(s, "0X")
	}
	if !ok || len(h) != 40 {
		return common.Address{}, errors.New("not a 0x-prefixed 20-byte hex address")
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return common.Address{}, errors.New("not a 0x-prefixed 20-byte hex address")
	}
	a := common.BytesToAddress(b)
	if h != strings.ToLower(h) && h != strings.ToUpper(h) && a.Hex()[2:] != h {
		return common.Address{}, fmt.Errorf("bad EIP-55 checksum (want %s)", a.Hex())
	}
	return a, nil
}

// MarshalText implements encoding.TextMarshaler.
func (k KeyID) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *KeyID) UnmarshalText(b []byte) error {
	v, err := ParseKeyID(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// SessionID identifies one run of a protocol. Every protocol message carries
// it, and a node never takes part in the same session id twice.
type SessionID [16]byte

const sessionPrefix = "sess:"

// NewSessionID returns a fresh random session id.
func NewSessionID() SessionID {
	var id SessionID
	mustRandom(id[:])
	return id
}

// Derive returns a session id bound to id and a label, for the sub-sessions
// of one protocol run (the proof signature after a reshare).
func (id SessionID) Derive(label string) SessionID {
	h := sha256.New()
	h.Write([]byte("custos/session/v1\x00"))
	h.Write(id[:])
	h.Write([]byte(label))
	var out SessionID
	copy(out[:], h.Sum(nil))
	return out
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
		return id, fmt.Errorf("%w: session id %q lacks prefix %q", ErrInvalid, s, sessionPrefix)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("%w: session id %q is not %d hex bytes", ErrInvalid, s, len(id))
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

func mustRandom(b []byte) {
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("ids: read random bytes: %v", err))
	}
}
