package p2p

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

// frameOverhead bounds the bytes a frame adds to its payload.
const frameOverhead = 3 + 16 + 8 + 3*10 + 2*maxIDLen + maxSigLen

// session is one node's end of one session. It implements tss.Conn. It is
// the layer around the session machine (machine.go): it owns the locks,
// the channel to the engine, the pump that feeds it and the outbound
// queues, steps the machine with each received frame and carries out the
// actions it returns.
type session struct {
	n        *Node
	id       ids.SessionID
	members  map[peer.ID]bool     // the other members
	others   []peer.ID            // the same, in the order given to Open
	out      map[peer.ID]*peerOut // their outbound queues, from the peer set at Open
	incoming chan tss.Incoming
	done     chan struct{} // closed when the transport ends the session
	shutCh   chan struct{} // closed by Close: stops the pump
	notify   chan struct{} // wakes the pump

	// hmu serialises the handling of received frames, from the step of the
	// machine to the last of its actions: Open holds it while it replays
	// the frames buffered before Open, so they come first. Handling never
	// waits on the network, so holding it is cheap.
	hmu sync.Mutex

	// echoLost is set (under the peer queue's lock) to the member an echo
	// of this session could not be queued for: no later engine frame of
	// the session may then be queued, or it would overtake the lost echo.
	echoLost atomic.Pointer[peer.ID]

	mu       sync.Mutex
	m        *machine  // guarded by mu
	err      error     // guarded by mu; set once, with done closed
	shutDown bool      // guarded by mu
	shutAt   time.Time // guarded by mu; when shutDown was set
	queue    []queued  // guarded by mu; delivered by the machine, not yet read
}

// queued is a message for the engine with what it costs its sender's share.
type queued struct {
	m    tss.Incoming
	from peer.ID
	size int
}

var _ tss.Conn = (*session)(nil)

// attach checks that every other member is a member of ps and takes its
// outbound queue from ps. A coordinator is never a session member.
func (s *session) attach(ps *peerSet) error {
	for _, p := range s.others {
		o := ps.members[p]
		switch {
		case o != nil:
			s.out[p] = o
		case ps.coordinators[p]:
			return fmt.Errorf("%s is a coordinator, never a session member", p)
		default:
			return fmt.Errorf("%s is not a configured member", p)
		}
	}
	return nil
}

// removedMembers returns the other members that are not members of ps (or
// were removed and added again: their queue is a new one).
func (s *session) removedMembers(ps *peerSet) []ids.MemberID {
	var out []ids.MemberID
	for _, p := range s.others {
		if ps.members[p] != s.out[p] {
			out = append(out, ids.MemberID(p.String()))
		}
	}
	return out
}

func (s *session) Incoming() <-chan tss.Incoming { return s.incoming }
func (s *session) Done() <-chan struct{}         { return s.done }

func (s *session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *session) checkPayload(payload []byte) error {
	if len(payload)+frameOverhead > s.n.cfg.MaxFrameSize {
		return fmt.Errorf("p2p: session %s: payload of %d bytes exceeds the frame limit %d", s.id, len(payload), s.n.cfg.MaxFrameSize)
	}
	return nil
}

// Send signs payload as a direct frame to one member and queues it for
// writing; nil means queued. It waits while that member's outbound queue is
// full, at most Config.OutQueueWait and until ctx is done; a wait that ends
// so fails the session naming that member (FailTransport, Waiting), as
// does a frame the writer cannot deliver.
func (s *session) Send(ctx context.Context, to ids.MemberID, payload []byte) error {
	if err := s.checkPayload(payload); err != nil {
		return err
	}
	p, err := peer.Decode(string(to))
	if err != nil || !s.members[p] {
		return fmt.Errorf("p2p: session %s: send to %s: not another member of the session", s.id, to)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := s.nextFrame(KindDirect, p, payload)
	if f == nil {
		return err
	}
	if err := s.n.send(ctx, s, p, f, true, time.Now().Add(s.n.cfg.OutQueueWait)); err != nil {
		return s.sendFailed(ctx, err, p)
	}
	return nil
}

// nextFrame numbers and signs the session's next direct or broadcast frame.
// It returns no frame once the session is over: an error after Close, and
// nil after the transport ended it (sends are then dropped and Err says
// why).
func (s *session) nextFrame(kind Kind, to peer.ID, payload []byte) (*Frame, error) {
	s.mu.Lock()
	if s.shutDown {
		s.mu.Unlock()
		return nil, fmt.Errorf("p2p: session %s: %w", s.id, ErrClosed)
	}
	if s.err != nil {
		// The transport ended the session: sends are dropped without an
		// error; Done and Err report the reason, with its culprits.
		s.mu.Unlock()
		return nil, nil
	}
	f := s.m.next(kind, to, payload)
	s.mu.Unlock()
	if err := f.Sign(s.n.key); err != nil {
		return nil, err
	}
	return f, nil
}

// sendFailed ends the session after an engine frame could not be queued
// for p, naming p, and returns the error for Send or Broadcast. The engine
// reads Err first when a send fails.
func (s *session) sendFailed(ctx context.Context, err error, peers ...peer.ID) error {
	p := peers[0]
	switch {
	case errors.Is(err, ErrClosed):
		return fmt.Errorf("p2p: session %s: %w", s.id, err)
	case errors.Is(err, errSessionEnded):
		// The transport ended the session already; Err says why.
		return fmt.Errorf("p2p: session %s: send to %s: %w", s.id, p, err)
	case errors.Is(err, errEchoLost):
		// The echo's sender fails the session too; whichever comes first.
		s.failEchoLost()
		return fmt.Errorf("p2p: session %s: send to %s: %w", s.id, p, err)
	}
	waiting := make([]ids.MemberID, len(peers))
	for i, q := range peers {
		waiting[i] = ids.MemberID(q.String())
	}
	if errors.Is(err, errQueueStuck) {
		err = fmt.Errorf("p2p: outbound queue to %v stayed full for %v", peers, s.n.cfg.OutQueueWait)
	} else if ctx.Err() != nil {
		err = fmt.Errorf("p2p: gave up waiting for room in the outbound queue to %v: %w", peers, err)
	}
	s.fail(&tss.SessionError{Session: s.id, Kind: tss.FailTransport, Waiting: waiting, Err: err})
	return fmt.Errorf("p2p: session %s: %w", s.id, err)
}

// Broadcast signs payload once and queues the same frame for every other
// member. It first queues it, without waiting, for every member whose
// outbound queue has room, and only then waits for the members whose queues
// were full (at most Config.OutQueueWait, and until ctx is done), so one
// stuck member delays nobody else's copy. A wait that ends so, or a frame
// the writer cannot deliver, fails the session naming that member.
func (s *session) Broadcast(ctx context.Context, payload []byte) error {
	if err := s.checkPayload(payload); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := s.nextFrame(KindBroadcast, "", payload)
	if f == nil {
		return err
	}
	var full []peer.ID
	for _, p := range s.others {
		err := s.out[p].enqueue(ctx, s, f, false, time.Time{})
		switch {
		case errors.Is(err, errQueueFull):
			full = append(full, p)
		case err != nil:
			return s.sendFailed(ctx, err, p)
		}
	}
	if len(full) == 0 {
		return nil
	}
	// Wait for the full queues side by side: a stuck member must not keep
	// the frame from another member whose queue drains meanwhile.
	deadline := time.Now().Add(s.n.cfg.OutQueueWait)
	errs := make([]error, len(full))
	var wg sync.WaitGroup
	for i, p := range full {
		wg.Go(func() { errs[i] = s.out[p].enqueue(ctx, s, f, true, deadline) })
	}
	wg.Wait()
	var stuck []peer.ID
	var first error
	for i, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, ErrClosed), errors.Is(err, errSessionEnded), errors.Is(err, errEchoLost):
			return s.sendFailed(ctx, err, full[i])
		default:
			stuck = append(stuck, full[i])
			if first == nil {
				first = err
			}
		}
	}
	if len(stuck) > 0 {
		return s.sendFailed(ctx, first, stuck...)
	}
	return nil
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
		s.shutAt = time.Now()
		s.queue = nil
		s.m.shut()
		close(s.shutCh)
	}
}

// staleAt reports whether, at now, the session ended here more than
// Config.WriteTimeout ago: its frames still queued are then dropped. Frames
// of a session that just ended (its last round, evidence echoes) still go.
func (s *session) staleAt(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutDown && now.Sub(s.shutAt) > s.n.cfg.WriteTimeout
}

// ended reports whether the session ended here (closed, or failed).
func (s *session) ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutDown || s.err != nil
}

// fail ends the session on the transport's side with err.
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.err != nil || s.shutDown {
		s.mu.Unlock()
		return
	}
	s.err = err
	s.m.end()
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
			q := s.queue[0]
			s.queue[0] = queued{}
			s.queue = s.queue[1:]
			// No longer counted against its sender once taken from the
			// queue: the one message in hand per session is outside the
			// shares, and a message the engine has read is never still
			// counted, whoever looks.
			s.m.read(q.from, q.size)
			s.mu.Unlock()
			select {
			case s.incoming <- q.m:
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

// handle takes one verified frame (sender authenticated and checked against
// the signature) for this session; size is its length on the wire.
func (s *session) handle(f *Frame, size int) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	s.process(f, size)
}

// process steps the machine with f and carries out its actions in order.
// s.hmu is held: the actions of one frame are all carried out before the
// next frame is stepped.
func (s *session) process(f *Frame, size int) {
	s.mu.Lock()
	acts := s.m.step(f, size)
	s.mu.Unlock()
	for _, a := range acts {
		s.apply(a)
	}
}

// apply carries out one action of the machine.
func (s *session) apply(a action) {
	switch a.kind {
	case actDeliver:
		s.mu.Lock()
		if s.shutDown || s.err != nil {
			// Ended while the actions before it ran (an echo that could
			// not be queued): nothing more reaches the engine.
			s.mu.Unlock()
			return
		}
		f := a.frame
		m := tss.Incoming{From: ids.MemberID(f.From.String()), Broadcast: f.Kind == KindBroadcast, Payload: f.Payload}
		s.queue = append(s.queue, queued{m: m, from: f.From, size: a.size})
		s.mu.Unlock()
		select {
		case s.notify <- struct{}{}:
		default:
		}
	case actEcho:
		if a.fault != nil {
			s.n.log.Error("p2p: sign echo", "session", s.id, "err", a.fault)
			return
		}
		s.sendEcho(a.frame, a.skip)
	case actHold:
		// The broadcast waits in the machine for its predecessors.
	case actDrop:
		s.n.applyDrop(a)
	case actEnd:
		s.fail(a.err)
	}
}

// sendEcho queues echo for the other members but skip, without waiting.
// Echoes may go over a full queue's caps by echoAllowance; past that the
// echo is dropped and counted, and the session fails naming that member:
// a later frame of ours must not reach it without the echo before it.
func (s *session) sendEcho(echo *Frame, skip peer.ID) {
	if echo == nil {
		return
	}
	for _, p := range s.others {
		if p == skip {
			continue
		}
		if err := s.n.send(s.n.ctx, s, p, echo, false, time.Time{}); errors.Is(err, errQueueFull) {
			s.failEchoLost()
		}
	}
}

// failEchoLost fails the session naming the member an echo was lost for.
func (s *session) failEchoLost() {
	if p := s.echoLost.Load(); p != nil {
		s.fail(&tss.SessionError{Session: s.id, Kind: tss.FailTransport, Waiting: []ids.MemberID{ids.MemberID(p.String())},
			Err: fmt.Errorf("p2p: outbound queue to %s full, echo allowance included: an echo was not queued", *p)})
	}
}
