package tss

import (
	"context"

	"github.com/custos-wallet/custos/ids"
)

// Transport carries the engine's session traffic between member nodes. The
// engine never learns how: package p2p implements it over libp2p,
// tsstest.MemNetwork in process for tests.
//
// A Transport must:
//   - set Incoming.From from the authenticated sender, never from the payload;
//   - deliver only messages from members of the session, for that session;
//   - deliver one broadcast payload identically to every member, or end the
//     session naming the sender (equivocation);
//   - buffer, bounded, messages for a session that has not been opened yet.
type Transport interface {
	// Self is this node's member id.
	Self() ids.MemberID
	// Open joins session id among members (Self included) and returns its
	// connection. Messages that arrived for the session before Open are
	// delivered first.
	Open(ctx context.Context, id ids.SessionID, members []ids.MemberID) (Conn, error)
}

// Conn is one node's end of one session.
type Conn interface {
	// Send delivers payload to one member of the session.
	Send(ctx context.Context, to ids.MemberID, payload []byte) error
	// Broadcast delivers payload to every other member of the session.
	Broadcast(ctx context.Context, payload []byte) error
	// Incoming yields the messages addressed to this node.
	Incoming() <-chan Incoming
	// Done is closed when the transport ends the session on its own (an
	// equivocating member, a closed network); Err then says why.
	Done() <-chan struct{}
	// Err is the reason the transport ended the session, or nil. When a
	// member is to blame it is a *SessionError naming the culprits.
	Err() error
	// Close leaves the session; cause is nil after success, or the reason
	// the engine aborted it (a *SessionError naming culprits).
	Close(cause error) error
}

// Incoming is a message as the transport delivers it.
type Incoming struct {
	From      ids.MemberID // the authenticated sender
	Broadcast bool         // sent with Broadcast, so checked for equivocation
	Payload   []byte
}
