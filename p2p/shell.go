package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

// Errors of the protocol shell.
var (
	// ErrMessageTooLarge: a length prefix above the limit. The stream is
	// reset before anything is allocated for the message.
	ErrMessageTooLarge = errors.New("p2p: message over the length limit")
	// ErrNotAllowed: the peer is not allowed to use the protocol here.
	ErrNotAllowed = errors.New("p2p: peer not allowed")
	// ErrPeerRemoved: SetPeers no longer lets the peer do this. It refuses
	// a frame queued for a removed member, and is the cause
	// (context.Cause) of a handler's context that ended that way.
	ErrPeerRemoved = errors.New("p2p: peer removed from this node's peers")
)

// inboundStream is what SetPeers and Close need of an admitted inbound
// stream: whom the protocol admits, and how to end its handler's context.
type inboundStream struct {
	admit  func(PeerKind) bool
	cancel context.CancelCauseFunc
}

// errNoMemory: libp2p's resource manager refused the reservation.
var errNoMemory = errors.New("p2p: no memory for message")

// versioned is the form of a protocol id this package serves: a path that
// ends in a major.minor.patch version, so that an incompatible change gets
// a new id beside the old one.
var versioned = regexp.MustCompile(`^(/[a-z0-9][a-z0-9._-]*)+/[0-9]+\.[0-9]+\.[0-9]+$`)

func checkProtocol(proto protocol.ID) error {
	if !versioned.MatchString(string(proto)) {
		return fmt.Errorf("p2p: protocol id %q is not of the form /name/1.0.0", proto)
	}
	if proto == ProtocolID {
		return fmt.Errorf("p2p: protocol id %s is the session protocol", proto)
	}
	return nil
}

func checkLimit(limit int) error {
	if limit < 1 || limit > maxStreamMemory {
		return fmt.Errorf("p2p: message limit %d is not within 1..%d (the per-stream memory limit)", limit, maxStreamMemory)
	}
	return nil
}

// readMessage reads one message from s: a 4-byte big-endian length, then
// that many bytes. The length is checked against limit before anything is
// allocated, and reserved in the stream's resource scope before the buffer
// is made; release gives the reservation back. before, if set, runs with
// the length first (rate limits, further checks). With timeout > 0 the
// body must arrive within it; otherwise the stream's own deadline holds.
// A stream that ends cleanly before a length prefix gives io.EOF.
func readMessage(s network.Stream, limit int, timeout time.Duration, before func(size int) error) (buf []byte, release func(), err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		return nil, nil, err
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if uint64(size) > uint64(limit) {
		return nil, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, size, limit)
	}
	if before != nil {
		if err := before(int(size)); err != nil {
			return nil, nil, err
		}
	}
	if err := s.Scope().ReserveMemory(int(size), network.ReservationPriorityAlways); err != nil {
		return nil, nil, fmt.Errorf("%w: %d bytes: %w", errNoMemory, size, err)
	}
	release = func() { s.Scope().ReleaseMemory(int(size)) }
	buf = make([]byte, size)
	if timeout > 0 {
		s.SetReadDeadline(time.Now().Add(timeout))
	}
	_, err = io.ReadFull(s, buf)
	if timeout > 0 {
		s.SetReadDeadline(time.Time{})
	}
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("p2p: read message of %d bytes: %w", size, err)
	}
	return buf, release, nil
}

// writeMessage writes msg with its 4-byte length prefix in one write.
func writeMessage(s network.Stream, msg []byte) error {
	buf := make([]byte, 4+len(msg))
	binary.BigEndian.PutUint32(buf, uint32(len(msg)))
	copy(buf[4:], msg)
	if _, err := s.Write(buf); err != nil {
		return fmt.Errorf("p2p: write message of %d bytes: %w", len(msg), err)
	}
	return nil
}

// streamFunc handles one admitted inbound stream; from is its authenticated
// remote peer. An error resets the stream.
type streamFunc func(ctx context.Context, s network.Stream, from peer.ID) error

// serve wraps inner in the shell that every protocol of the node shares.
// The remote peer must be of a kind admit accepts in the current peer set,
// else the stream is reset unread. The stream is tracked, so that Close
// resets it and waits for inner. inner's context ends when the node closes
// and, with timeout > 0, after timeout, which is also set as the stream's
// deadline. An error from inner resets the stream, so the peer sees a
// failure rather than a partial exchange; nil closes it.
func (n *Node) serve(proto protocol.ID, admit func(PeerKind) bool, timeout time.Duration, inner streamFunc) network.StreamHandler {
	return func(s network.Stream) {
		remote := s.Conn().RemotePeer()
		n.mu.Lock()
		kind := n.peers.Load().kind(remote)
		if n.closed || !admit(kind) {
			closed := n.closed
			n.mu.Unlock()
			s.Reset()
			if !closed {
				n.warn(remote, "not_allowed", "p2p: refused stream from a peer not allowed to use the protocol", "protocol", string(proto), "kind", kind.String())
			}
			return
		}
		// The context ends early when SetPeers removes the peer: a handler
		// must not go on acting for a peer that is gone.
		ctx, cancelCause := context.WithCancelCause(n.ctx)
		n.inbound[s] = inboundStream{admit: admit, cancel: cancelCause}
		n.wg.Add(1)
		n.mu.Unlock()
		defer func() {
			n.mu.Lock()
			delete(n.inbound, s)
			n.mu.Unlock()
			cancelCause(nil)
			n.wg.Done()
		}()
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
			s.SetDeadline(time.Now().Add(timeout))
		}
		if err := inner(ctx, s, remote); err != nil {
			if n.ctx.Err() == nil {
				n.log.Debug("p2p: inbound stream ended", "protocol", string(proto), "peer", remote.String(), "err", err)
			}
			s.Reset()
			return
		}
		s.Close()
	}
}

// anyPeer admits members and coordinators.
func anyPeer(k PeerKind) bool { return k != PeerUnknown }

// membersOnly admits members: session streams.
func membersOnly(k PeerKind) bool { return k == PeerMember }

// Handler answers one request of a request protocol (see RegisterHandler).
// from is the authenticated remote peer, a member or a coordinator
// (Node.PeerKind says which; the protocol decides what each may ask). ctx
// ends after Config.RequestTimeout, when the node closes or when SetPeers
// removes from (its cause is then ErrPeerRemoved). A returned
// error resets the stream: the caller's Request fails and learns nothing
// more, so answers the protocol defines (a refusal and its reason) belong
// in the response.
type Handler func(ctx context.Context, from peer.ID, req []byte) ([]byte, error)

// RegisterHandler serves proto, a request protocol beside ProtocolID (the
// control protocol /custos/ctl/1.0.0, say), with h. proto must end in a
// version (/name/1.0.0). Each stream carries one exchange: a request of at
// most limit bytes, then one response, each a 4-byte big-endian length and
// the bytes. A request over limit resets the stream before anything is
// allocated for it. Only members and coordinators of the current peer set
// are admitted; the whole exchange is bounded by Config.RequestTimeout.
func (n *Node) RegisterHandler(proto protocol.ID, limit int, h Handler) error {
	if err := checkProtocol(proto); err != nil {
		return err
	}
	if err := checkLimit(limit); err != nil {
		return fmt.Errorf("p2p: register %s: %w", proto, err)
	}
	if h == nil {
		return fmt.Errorf("p2p: register %s: no handler", proto)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return fmt.Errorf("p2p: register %s: %w", proto, ErrClosed)
	case n.protocols[proto]:
		return fmt.Errorf("p2p: register %s: already registered", proto)
	}
	n.protocols[proto] = true
	n.host.SetStreamHandler(proto, n.serve(proto, anyPeer, n.cfg.RequestTimeout, func(ctx context.Context, s network.Stream, from peer.ID) error {
		req, release, err := readMessage(s, limit, 0, nil)
		if err != nil {
			if errors.Is(err, ErrMessageTooLarge) {
				n.warn(from, "request_too_large", "p2p: request over the limit, resetting stream", "protocol", string(proto), "err", err)
			}
			return fmt.Errorf("p2p: %s request from %s: %w", proto, from, err)
		}
		defer release()
		resp, err := callHandler(ctx, h, from, req)
		if err != nil {
			return fmt.Errorf("p2p: %s handler, request from %s: %w", proto, from, err)
		}
		if len(resp) > maxStreamMemory {
			return fmt.Errorf("p2p: %s response of %d bytes exceeds %d", proto, len(resp), maxStreamMemory)
		}
		return writeMessage(s, resp)
	}))
	return nil
}

// ErrHandlerPanic is wrapped when a request handler panics: the stream is
// reset and the node goes on, since one bad request must not take down a
// node that holds shares.
var ErrHandlerPanic = errors.New("p2p: request handler panicked")

func callHandler(ctx context.Context, h Handler, from peer.ID, req []byte) (resp []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, fmt.Errorf("%w: %v", ErrHandlerPanic, p)
		}
	}()
	return h(ctx, from, req)
}

// Request sends req to peer to on proto (served there by RegisterHandler)
// and returns the response, of at most limit bytes: a longer one is refused
// before anything is allocated for it. to must be a member or a
// coordinator. The call ends at ctx's deadline or after
// Config.RequestTimeout, whichever is first, or when the node closes; the
// stream is reset on any error. A handler error at the peer shows here as
// a reset stream.
func (n *Node) Request(ctx context.Context, to peer.ID, proto protocol.ID, req []byte, limit int) ([]byte, error) {
	wrap := func(err error) error { return fmt.Errorf("p2p: request %s to %s: %w", proto, to, err) }
	if err := checkProtocol(proto); err != nil {
		return nil, err
	}
	if err := checkLimit(limit); err != nil {
		return nil, wrap(err)
	}
	if len(req) > maxStreamMemory {
		return nil, wrap(fmt.Errorf("%w: request of %d bytes", ErrMessageTooLarge, len(req)))
	}
	if n.ctx.Err() != nil {
		return nil, wrap(ErrClosed)
	}
	if n.PeerKind(to) == PeerUnknown {
		return nil, wrap(ErrNotAllowed)
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	defer context.AfterFunc(n.ctx, cancel)()
	n.clearBackoff(to)
	s, err := n.host.NewStream(ctx, to, proto)
	if err != nil {
		return nil, wrap(n.contextErr(ctx, err))
	}
	// An ended context interrupts a blocked read or write. (Not a stream
	// deadline as well: it can fire before the context reports its error.)
	defer context.AfterFunc(ctx, func() { s.Reset() })()
	resp, err := exchange(s, req, limit)
	if err != nil {
		s.Reset()
		return nil, wrap(n.contextErr(ctx, err))
	}
	s.Close()
	return resp, nil
}

// exchange writes one request on s and reads the one response.
func exchange(s network.Stream, req []byte, limit int) ([]byte, error) {
	if err := writeMessage(s, req); err != nil {
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		return nil, fmt.Errorf("p2p: close request side: %w", err)
	}
	resp, release, err := readMessage(s, limit, 0, nil)
	if errors.Is(err, io.EOF) {
		return nil, errors.New("p2p: stream closed without a response")
	}
	if err != nil {
		return nil, err
	}
	release() // the response is the caller's now
	return resp, nil
}

// contextErr puts the reason a call's context ended (the node closed, or
// the context's own error) in front of err, which is often only "stream
// reset".
func (n *Node) contextErr(ctx context.Context, err error) error {
	switch {
	case n.ctx.Err() != nil:
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return err
}

// clearBackoff forgets the swarm's dial backoff for a configured peer. A
// member that was down and came back (often at a new address behind the
// same DNS name) is dialled again at once, not after a backoff that grew
// with every request that failed while it was away. Peers are few and
// configured, so the cost is one dial per request to a peer that is down.
func (n *Node) clearBackoff(p peer.ID) {
	if sw, ok := n.host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(p)
	}
}
