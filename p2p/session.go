package p2p

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos-wallet/custos/tss"
)

// frameOverhead bounds the bytes a frame adds to its payload.
const frameOverhead = 3 + 16 + 8 + 3*10 + 2*maxIDLen + maxSigLen

// session is one node's end of one session. It implements tss.Conn.
type session struct {
	n        *Node
	id       tss.SessionID
	members  map[peer.ID]bool // the other members
	others   []peer.ID        // the same, in the order given to Open
	incoming chan tss.Incoming
	done     chan struct{} // closed when the transport ends the session
	shutCh   chan struct{} // closed by Close: stops the pump
	notify   chan struct{} // wakes the pump

	mu        sync.Mutex
	err       error                   // guarded by mu; set once, with done closed
	shutDown  bool                    // guarded by mu
	queue     []tss.Incoming          // guarded by mu; received, not yet read
	seqDirect uint64                  // guarded by mu
	seqBcast  uint64                  // guarded by mu
	seqEcho   uint64                  // guarded by mu
	direct    map[seqKey]*Frame       // guarded by mu; direct frames seen, header only
	bcast     map[seqKey]*bcastRecord // guarded by mu; broadcasts seen directly or by echo
}

type seqKey struct {
	from peer.ID
	seq  uint64
}

// bcastRecord is what this node knows of one broadcast slot.
type bcastRecord struct {
	first     *Frame // header only: the first validly signed version seen
	delivered bool   // received directly and handed to the engine
}

var _ tss.Conn = (*session)(nil)

func (s *session) Incoming() <-chan tss.Incoming { return s.incoming }
func (s *session) Done() <-chan struct{}         { return s.done }

func (s *session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// usableLocked returns why the session cannot send, or nil. After the
// transport ended the session, sends are dropped without an error: Done and
// Err report the reason, with its culprits, to the engine.
func (s *session) usableLocked() error {
	if s.shutDown {
		return fmt.Errorf("p2p: session %s: %w", s.id, ErrClosed)
	}
	return nil
}

func (s *session) checkPayload(payload []byte) error {
	if len(payload)+frameOverhead > s.n.cfg.MaxFrameSize {
		return fmt.Errorf("p2p: session %s: payload of %d bytes exceeds the frame limit %d", s.id, len(payload), s.n.cfg.MaxFrameSize)
	}
	return nil
}

// Send signs payload as a direct frame to one member and writes it.
func (s *session) Send(ctx context.Context, to tss.MemberID, payload []byte) error {
	if err := s.checkPayload(payload); err != nil {
		return err
	}
	p, err := peer.Decode(string(to))
	if err != nil || !s.members[p] {
		return fmt.Errorf("p2p: session %s: send to %s: not another member of the session", s.id, to)
	}
	s.mu.Lock()
	if err := s.usableLocked(); err != nil || s.err != nil {
		s.mu.Unlock()
		return err
	}
	s.seqDirect++
	f := &Frame{Kind: KindDirect, Session: s.id, Seq: s.seqDirect, From: s.n.self, To: p, Payload: payload}
	s.mu.Unlock()
	if err := f.Sign(s.n.key); err != nil {
		return err
	}
	return s.n.send(ctx, p, f)
}

// Broadcast signs payload once and writes the same frame to every other
// member. Delivery is best effort per member: a member that cannot be
// reached is logged and left to the engine's idle timeout, which names it;
// the error is for a closed session or a cancelled context.
func (s *session) Broadcast(ctx context.Context, payload []byte) error {
	if err := s.checkPayload(payload); err != nil {
		return err
	}
	s.mu.Lock()
	if err := s.usableLocked(); err != nil || s.err != nil {
		s.mu.Unlock()
		return err
	}
	s.seqBcast++
	f := &Frame{Kind: KindBroadcast, Session: s.id, Seq: s.seqBcast, From: s.n.self, Payload: payload}
	s.mu.Unlock()
	if err := f.Sign(s.n.key); err != nil {
		return err
	}
	s.sendAll(ctx, f, "")
	return ctx.Err()
}

// sendAll writes f to every other member except skip.
func (s *session) sendAll(ctx context.Context, f *Frame, skip peer.ID) {
	for _, p := range s.others {
		if p == skip {
			continue
		}
		if err := s.n.send(ctx, p, f); err != nil {
			s.n.log.Warn("p2p: could not send to member", "session", s.id, "peer", p.String(), "frame", f.Describe(), "err", err)
		}
	}
}

// Close leaves the session. A nil cause after an equivocation was detected
// returns that error, so the engine does not report success.
func (s *session) Close(cause error) error {
	s.n.endSession(s)
	s.shut()
	if cause != nil {
		if se, ok := tss.AsSessionError(cause); ok && len(se.Culprits) > 0 {
			s.n.log.Warn("p2p: session aborted", "session", s.id, "kind", se.Kind, "culprits", se.Culprits, "err", cause)
		} else {
			s.n.log.Info("p2p: session aborted", "session", s.id, "err", cause)
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil && !errors.Is(s.err, ErrClosed) {
		return s.err
	}
	return nil
}

// shut stops the pump; the session takes no more frames.
func (s *session) shut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.shutDown {
		s.shutDown = true
		s.queue = nil
		close(s.shutCh)
	}
}

// fail ends the session on the transport's side with err.
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.err != nil || s.shutDown {
		s.mu.Unlock()
		return
	}
	s.err = err
	close(s.done)
	s.mu.Unlock()
	s.n.log.Error("p2p: session ended by the transport", "session", s.id, "err", err)
}

// pump hands queued messages to the engine, so that the stream readers
// never block on a slow engine.
func (s *session) pump() {
	defer s.n.wg.Done()
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			m := s.queue[0]
			s.queue[0] = tss.Incoming{}
			s.queue = s.queue[1:]
			s.mu.Unlock()
			select {
			case s.incoming <- m:
				s.n.counters.Delivered.Add(1)
			case <-s.shutCh:
				return
			}
			continue
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-s.shutCh:
			return
		}
	}
}

func (s *session) enqueueLocked(m tss.Incoming) {
	if len(s.queue) >= s.n.cfg.SessionQueue {
		s.n.counters.drop(DropQueueFull)
		s.n.log.Warn("p2p: dropped message: the engine is not reading", "session", s.id, "from", m.From)
		return
	}
	s.queue = append(s.queue, m)
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// handle takes one verified frame (sender authenticated and checked against
// the signature) for this session.
func (s *session) handle(f *Frame) {
	if !s.members[f.From] {
		s.n.counters.drop(DropNotMember)
		s.n.log.Warn("p2p: dropped frame from a non-member of the session", "frame", f.Describe())
		return
	}
	switch f.Kind {
	case KindDirect:
		s.handleDirect(f)
	case KindBroadcast:
		s.handleBroadcast(f)
	case KindEcho:
		s.handleEcho(f)
	}
}

func (s *session) handleDirect(f *Frame) {
	s.mu.Lock()
	if s.shutDown || s.err != nil {
		s.mu.Unlock()
		s.n.counters.drop(DropClosed)
		return
	}
	k := seqKey{f.From, f.Seq}
	if prev := s.direct[k]; prev != nil {
		s.mu.Unlock()
		if prev.PayloadHash == f.PayloadHash {
			s.n.counters.drop(DropDuplicate)
			return
		}
		s.equivocation(prev, f)
		return
	}
	s.direct[k] = f.HeaderOnly()
	s.enqueueLocked(tss.Incoming{From: tss.MemberID(f.From.String()), Payload: f.Payload})
	s.mu.Unlock()
}

func (s *session) handleBroadcast(f *Frame) {
	s.mu.Lock()
	if s.shutDown || s.err != nil {
		s.mu.Unlock()
		s.n.counters.drop(DropClosed)
		return
	}
	k := seqKey{f.From, f.Seq}
	rec := s.bcast[k]
	if rec != nil && rec.first.PayloadHash != f.PayloadHash {
		s.mu.Unlock()
		s.equivocation(rec.first, f)
		return
	}
	if rec != nil && rec.delivered {
		s.mu.Unlock()
		s.n.counters.drop(DropDuplicate)
		return
	}
	if rec == nil {
		rec = &bcastRecord{first: f.HeaderOnly()}
		s.bcast[k] = rec
	}
	rec.delivered = true
	s.mu.Unlock()

	// Echo before delivering: our later messages to each member then
	// follow our echo on the same ordered stream.
	s.sendEcho(rec.first)
	s.mu.Lock()
	if !s.shutDown && s.err == nil {
		s.enqueueLocked(tss.Incoming{From: tss.MemberID(f.From.String()), Broadcast: true, Payload: f.Payload})
	}
	s.mu.Unlock()
}

func (s *session) handleEcho(f *Frame) {
	inner, err := DecodeFrame(f.Payload)
	if err == nil {
		switch {
		case !inner.HashOnly || inner.Kind != KindBroadcast:
			err = errors.New("echo does not carry a broadcast header")
		case inner.Session != s.id:
			err = fmt.Errorf("echo of a frame of session %s", inner.Session)
		case inner.From == f.From || inner.From == s.n.self || !s.members[inner.From]:
			err = fmt.Errorf("echo of a broadcast by %s", inner.From)
		default:
			err = inner.Verify()
		}
	}
	if err != nil {
		s.n.counters.drop(DropBadEcho)
		s.n.log.Warn("p2p: dropped bad echo", "session", s.id, "peer", f.From.String(), "err", err)
		return
	}
	s.mu.Lock()
	if s.shutDown || s.err != nil {
		s.mu.Unlock()
		return
	}
	k := seqKey{inner.From, inner.Seq}
	rec := s.bcast[k]
	if rec == nil {
		s.bcast[k] = &bcastRecord{first: inner}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if rec.first.PayloadHash != inner.PayloadHash {
		s.equivocation(rec.first, inner)
	}
}

// sendEcho forwards the signed header of a broadcast to the other members
// but its sender.
func (s *session) sendEcho(inner *Frame) {
	if len(s.others) < 2 {
		return // the sender is the only other member: nobody to cross-check with
	}
	s.mu.Lock()
	s.seqEcho++
	echo := &Frame{Kind: KindEcho, Session: s.id, Seq: s.seqEcho, From: s.n.self, Payload: inner.HeaderOnly().Encode()}
	s.mu.Unlock()
	if err := echo.Sign(s.n.key); err != nil {
		s.n.log.Error("p2p: sign echo", "session", s.id, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(s.n.ctx, s.n.cfg.WriteTimeout)
	defer cancel()
	s.sendAll(ctx, echo, inner.From)
}

// equivocation ends the session naming the sender of a and b, two validly
// signed frames for the same slot with different payloads. For a broadcast
// it also echoes both versions to the other members: a member that learnt
// of the conflict before echoing what it received would otherwise leave the
// others unaware of it.
func (s *session) equivocation(a, b *Frame) {
	ev := &Evidence{Sender: tss.MemberID(a.From.String()), First: a.HeaderOnly(), Second: b.HeaderOnly()}
	s.fail(&tss.SessionError{Session: s.id, Kind: tss.FailMisbehaviour, Culprits: []tss.MemberID{ev.Sender}, Err: ev})
	if a.Kind == KindBroadcast {
		s.sendEcho(a)
		s.sendEcho(b)
	}
}
