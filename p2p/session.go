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

// session is one node's end of one session. It implements tss.Conn.
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

	// Each other member's share of the queue (fixed at Open).
	shareFrames, shareBytes int

	// hmu serialises the handling of received frames: Open holds it while
	// it replays the frames buffered before Open, so they come first.
	// Handling never waits on the network, so holding it is cheap.
	hmu sync.Mutex

	// echoLost is set (under the peer queue's lock) to the member an echo
	// of this session could not be queued for: no later engine frame of
	// the session may then be queued, or it would overtake the lost echo.
	echoLost atomic.Pointer[peer.ID]

	mu        sync.Mutex
	err       error                    // guarded by mu; set once, with done closed
	shutDown  bool                     // guarded by mu
	shutAt    time.Time                // guarded by mu; when shutDown was set
	queue     []queued                 // guarded by mu; received, not yet read
	qBytes    int                      // guarded by mu; bytes in queue
	senders   map[peer.ID]*senderState // guarded by mu; one per other member
	seqDirect uint64                   // guarded by mu
	seqBcast  uint64                   // guarded by mu
	seqEcho   uint64                   // guarded by mu
	direct    map[seqKey]*Frame        // guarded by mu; direct frames seen, header only
	bcast     map[seqKey]*bcastRecord  // guarded by mu; broadcasts seen directly or by echo
}

type seqKey struct {
	from peer.ID
	seq  uint64
}

// queued is a message for the engine with what it costs its sender's share.
type queued struct {
	m    tss.Incoming
	from peer.ID
	size int
}

// senderState is what a session keeps per other member.
type senderState struct {
	next         uint64               // its next broadcast to deliver
	held         map[uint64]heldFrame // broadcasts received ahead of next
	heldBytes    int
	queuedFrames int // its messages in the queue
	queuedBytes  int
}

type heldFrame struct {
	f    *Frame
	size int
}

// bcastRecord is what this node knows of one broadcast slot.
type bcastRecord struct {
	first    *Frame // header only: the first validly signed version seen
	received bool   // received directly (held or delivered)
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
	if err := s.usableLocked(); err != nil || s.err != nil {
		s.mu.Unlock()
		return nil, err
	}
	f := &Frame{Kind: kind, Session: s.id, From: s.n.self, To: to, Payload: payload}
	if kind == KindDirect {
		s.seqDirect++
		f.Seq = s.seqDirect
	} else {
		s.seqBcast++
		f.Seq = s.seqBcast
	}
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
		s.qBytes = 0
		for _, st := range s.senders {
			*st = senderState{}
		}
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
			s.qBytes -= q.size
			if st := s.senders[q.from]; st != nil {
				st.queuedFrames--
				st.queuedBytes -= q.size
			}
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

// roomLocked reports whether the sender's share of the queue (with its held
// broadcasts) and the whole queue can take size more bytes.
func (s *session) roomLocked(st *senderState, size int) bool {
	return st.queuedFrames+len(st.held) < s.shareFrames &&
		st.queuedBytes+st.heldBytes+size <= s.shareBytes &&
		len(s.queue) < s.n.cfg.SessionQueue &&
		s.qBytes+size <= s.n.cfg.SessionQueueBytes
}

// nextRoomLocked reports whether the sender's next expected broadcast fits:
// its queued messages, not counting its held broadcasts, are within its
// share. Otherwise held broadcasts could fill the share and keep out the
// one broadcast that releases them, stalling the sender for good. With it,
// a sender's queued and held messages stay within its share plus
// BroadcastWindow frames and twice its share of bytes.
func (s *session) nextRoomLocked(st *senderState, size int) bool {
	return st.queuedFrames < s.shareFrames && st.queuedBytes+size <= s.shareBytes
}

// enqueueLocked hands f's payload to the pump. The caller checked room.
func (s *session) enqueueLocked(st *senderState, f *Frame, size int) {
	m := tss.Incoming{From: ids.MemberID(f.From.String()), Broadcast: f.Kind == KindBroadcast, Payload: f.Payload}
	s.queue = append(s.queue, queued{m: m, from: f.From, size: size})
	s.qBytes += size
	st.queuedFrames++
	st.queuedBytes += size
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *session) queueFullLocked(f *Frame) {
	s.n.dropWarn(DropQueueFull, f.From, "p2p: dropped message: the engine is not reading, or the sender floods", "session", s.id, "frame", f.Describe())
}

// handle takes one verified frame (sender authenticated and checked against
// the signature) for this session; size is its length on the wire.
func (s *session) handle(f *Frame, size int) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	s.handleLocked(f, size)
}

// handleLocked is handle with s.hmu held.
func (s *session) handleLocked(f *Frame, size int) {
	if !s.members[f.From] {
		s.n.dropWarn(DropNotMember, f.From, "p2p: dropped frame from a non-member of the session", "frame", f.Describe())
		return
	}
	// An echo's own number is not used (handleEcho goes by the inner
	// frame's slot, which it bounds): our echo count grows with the
	// broadcasts received from everyone, so a cap on it would let a member
	// push our echoes over it and hide an equivocation.
	if f.Kind != KindEcho && f.Seq > s.n.cfg.SessionSlots {
		s.n.dropWarn(DropSeqLimit, f.From, "p2p: dropped frame: sequence number over the session limit", "frame", f.Describe(), "limit", s.n.cfg.SessionSlots)
		return
	}
	switch f.Kind {
	case KindDirect:
		s.handleDirect(f, size)
	case KindBroadcast:
		s.handleBroadcast(f, size)
	case KindEcho:
		s.handleEcho(f)
	}
}

func (s *session) handleDirect(f *Frame, size int) {
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
	st := s.senders[f.From]
	if !s.roomLocked(st, size) {
		s.queueFullLocked(f)
		s.mu.Unlock()
		return
	}
	s.direct[k] = f.HeaderOnly()
	s.enqueueLocked(st, f, size)
	s.mu.Unlock()
}

// handleBroadcast records a broadcast, echoes its header to the other
// members and delivers the sender's broadcasts in sequence: #k only after
// #k-1, never past a gap. Otherwise a sender could number one payload #1
// for one member and another #2 for a second member: the echoes would
// land in different slots and never conflict.
func (s *session) handleBroadcast(f *Frame, size int) {
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
	st := s.senders[f.From]
	if (rec != nil && rec.received) || f.Seq < st.next {
		s.mu.Unlock()
		s.n.counters.drop(DropDuplicate)
		return
	}
	if f.Seq-st.next >= s.n.cfg.BroadcastWindow {
		s.mu.Unlock()
		s.n.dropWarn(DropBroadcastGap, f.From, "p2p: dropped broadcast far ahead of the sender's next", "session", s.id, "frame", f.Describe(), "next", st.next)
		return
	}
	if !s.roomLocked(st, size) && (f.Seq != st.next || !s.nextRoomLocked(st, size)) {
		s.queueFullLocked(f)
		s.mu.Unlock()
		return
	}
	if rec == nil {
		rec = &bcastRecord{first: f.HeaderOnly()}
		s.bcast[k] = rec
	}
	rec.received = true
	st.held[f.Seq] = heldFrame{f: f, size: size}
	st.heldBytes += size
	echo := s.echoLocked(rec.first)
	s.mu.Unlock()

	// Echo before delivering: our later messages to each member then
	// follow our echo in the same outbound queue.
	s.sendEcho(echo, f.From)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutDown || s.err != nil {
		return
	}
	for {
		h, ok := st.held[st.next]
		if !ok {
			return
		}
		delete(st.held, st.next)
		st.heldBytes -= h.size
		st.next++
		s.enqueueLocked(st, h.f, h.size)
	}
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
		case inner.Seq > s.n.cfg.SessionSlots:
			err = fmt.Errorf("echo of broadcast #%d, over the session limit", inner.Seq)
		default:
			err = inner.Verify()
		}
	}
	if err != nil {
		s.n.dropWarn(DropBadEcho, f.From, "p2p: dropped bad echo", "session", s.id, "err", err)
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

// echoLocked returns a signed echo of the broadcast header inner, or nil
// when there is nobody to cross-check with (the sender is the only other
// member). s.mu is held.
func (s *session) echoLocked(inner *Frame) *Frame {
	if len(s.others) < 2 {
		return nil
	}
	s.seqEcho++
	echo := &Frame{Kind: KindEcho, Session: s.id, Seq: s.seqEcho, From: s.n.self, Payload: inner.HeaderOnly().Encode()}
	if err := echo.Sign(s.n.key); err != nil {
		s.n.log.Error("p2p: sign echo", "session", s.id, "err", err)
		return nil
	}
	return echo
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

// equivocation ends the session naming the sender of a and b, two validly
// signed frames for the same slot with different payloads. For a broadcast
// it also echoes both versions to the other members: a member that learnt
// of the conflict before echoing what it received would otherwise leave the
// others unaware of it.
func (s *session) equivocation(a, b *Frame) {
	ev := &Evidence{Sender: ids.MemberID(a.From.String()), First: a.HeaderOnly(), Second: b.HeaderOnly()}
	s.fail(&tss.SessionError{Session: s.id, Kind: tss.FailMisbehaviour, Culprits: []ids.MemberID{ev.Sender}, Err: ev})
	if a.Kind == KindBroadcast {
		s.mu.Lock()
		ea, eb := s.echoLocked(a), s.echoLocked(b)
		s.mu.Unlock()
		s.sendEcho(ea, a.From)
		s.sendEcho(eb, a.From)
	}
}
