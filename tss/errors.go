package tss

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/custos-wallet/custos/ids"
)

// FailureKind classifies why a session ended without a result.
type FailureKind string

// The kinds of session failure.
const (
	FailTimeout      FailureKind = "timeout"      // no progress in time; Waiting names who
	FailProtocol     FailureKind = "protocol"     // tss-lib rejected a message; Culprits are its verdict
	FailMisbehaviour FailureKind = "misbehaviour" // a hardening check or duplicate rule caught a member
	FailTransport    FailureKind = "transport"    // the transport ended the session
	FailLocal        FailureKind = "local"        // this node could not go on (bad input, internal error)
	// FailUnconfirmed: a reshare ran, but not every new member confirmed
	// its share and the proof; Waiting names the members not heard from.
	FailUnconfirmed FailureKind = "unconfirmed"
)

// SessionError is how a failed session ends: what happened and who is to
// blame or was missing. A failed session is final for that attempt.
type SessionError struct {
	Session  ids.SessionID
	Kind     FailureKind
	Culprits []ids.MemberID // members shown to have misbehaved
	Waiting  []ids.MemberID // members the session was still waiting for
	Err      error
}

func (e *SessionError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tss: session %s failed (%s)", e.Session, e.Kind)
	if len(e.Culprits) > 0 {
		fmt.Fprintf(&b, ", culprits %s", joinIDs(e.Culprits))
	}
	if len(e.Waiting) > 0 {
		fmt.Fprintf(&b, ", waiting for %s", joinIDs(e.Waiting))
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *SessionError) Unwrap() error { return e.Err }

// AsSessionError returns the *SessionError in err's chain, if any.
func AsSessionError(err error) (*SessionError, bool) {
	var se *SessionError
	ok := errors.As(err, &se)
	return se, ok
}

func joinIDs(memberIDs []ids.MemberID) string {
	s := make([]string, len(memberIDs))
	for i, id := range memberIDs {
		s[i] = string(id)
	}
	slices.Sort(s)
	return strings.Join(slices.Compact(s), ",")
}
