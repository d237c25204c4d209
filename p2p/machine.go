package p2p

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

// The session machine holds the broadcast logic of one session at one
// node: echo broadcast, per-sender ordering of broadcasts, duplicate and
// equivocation checks, and the bounds on what a member can make this node
// keep. It has no lock, goroutine, clock or socket. The caller (the
// session, session.go) steps it with each verified frame and carries out
// the actions it returns, in order:
//
//  1. actDeliver: queue the frame's payload for the engine; tell the
//     machine with read when the engine has taken it.
//  2. actEcho: queue the signed echo for every other member but skip.
//  3. actHold: nothing to do; the broadcast waits for its predecessors.
//  4. actDrop: count the drop (and log it when msg is set).
//  5. actEnd: end the session with err.
//
// Echoes come before the deliveries they precede: a member then sees our
// echo of round r before our round r+1, which shares the outbound queue.
// The caller serialises steps and tells the machine when the session ended
// for another reason (end) or was left (shut).

// actionKind says what the caller of the machine must do.
type actionKind uint8

const (
	actDeliver actionKind = iota + 1
	actEcho
	actHold
	actDrop
	actEnd
)

func (k actionKind) String() string {
	switch k {
	case actDeliver:
		return "deliver"
	case actEcho:
		return "echo"
	case actHold:
		return "hold"
	case actDrop:
		return "drop"
	case actEnd:
		return "end"
	}
	return fmt.Sprintf("action(%d)", uint8(k))
}

// action is one thing the machine asks its caller to do.
type action struct {
	kind actionKind
	// frame is what the action is about: the frame to deliver, the echo to
	// send, the broadcast held, the frame dropped.
	frame *Frame
	size  int     // actDeliver, actHold: the frame's length on the wire
	skip  peer.ID // actEcho: the member not to send it to (the broadcast's sender)
	// actEcho: why no echo could be made (frame is nil then).
	fault  error
	reason DropReason        // actDrop
	msg    string            // actDrop: the warning to log; empty: count only
	args   []any             // actDrop: the warning's attributes
	err    *tss.SessionError // actEnd
}

// machineConfig is what a machine is given at Open.
type machineConfig struct {
	session ids.SessionID
	self    peer.ID
	key     crypto.PrivKey // signs our echoes
	others  []peer.ID      // the other members, in the order given to Open

	window       uint64 // Config.BroadcastWindow
	slots        uint64 // Config.SessionSlots
	queueFrames  int    // Config.SessionQueue
	queueBytes   int    // Config.SessionQueueBytes
	maxFrameSize int    // Config.MaxFrameSize
}

// machine is the state of one session at one node (see above).
type machine struct {
	machineConfig
	members map[peer.ID]bool // the other members

	// Each other member's share of the queue.
	shareFrames, shareBytes int

	ended                        bool // the session ended here: no frame is taken any more
	seqDirect, seqBcast, seqEcho uint64
	queued, queuedBytes          int // delivered, not yet taken off the queue for the engine
	senders                      map[peer.ID]*senderState
	direct                       map[seqKey]*Frame       // direct frames seen, header only
	bcast                        map[seqKey]*bcastRecord // broadcasts seen directly or by echo
}

type seqKey struct {
	from peer.ID
	seq  uint64
}

// senderState is what a machine keeps per other member.
type senderState struct {
	next         uint64               // its next broadcast to deliver
	held         map[uint64]heldFrame // broadcasts received ahead of next
	heldBytes    int
	queuedFrames int // its messages delivered, not yet taken off the queue
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

func newMachine(c machineConfig) *machine {
	m := &machine{
		machineConfig: c,
		members:       make(map[peer.ID]bool, len(c.others)),
		senders:       make(map[peer.ID]*senderState, len(c.others)),
		direct:        make(map[seqKey]*Frame),
		bcast:         make(map[seqKey]*bcastRecord),
	}
	for _, p := range c.others {
		m.members[p] = true
		m.senders[p] = &senderState{next: 1, held: make(map[uint64]heldFrame)}
	}
	if k := len(c.others); k > 0 {
		m.shareFrames = max(c.queueFrames/k, 1)
		m.shareBytes = max(c.queueBytes/k, c.maxFrameSize)
	}
	return m
}

// next numbers our next direct or broadcast frame of the session; the
// caller signs it.
func (m *machine) next(kind Kind, to peer.ID, payload []byte) *Frame {
	f := &Frame{Kind: kind, Session: m.session, From: m.self, To: to, Payload: payload}
	if kind == KindDirect {
		m.seqDirect++
		f.Seq = m.seqDirect
	} else {
		m.seqBcast++
		f.Seq = m.seqBcast
	}
	return f
}

// read tells the machine that a delivered message of size bytes from from
// left the queue for the engine (the session's pump took it).
func (m *machine) read(from peer.ID, size int) {
	if m.queued == 0 {
		return // shut meanwhile
	}
	m.queued--
	m.queuedBytes -= size
	if st := m.senders[from]; st != nil {
		st.queuedFrames--
		st.queuedBytes -= size
	}
}

// end marks the session ended here: frames are no longer taken.
func (m *machine) end() { m.ended = true }

// shut ends the session and forgets what was queued and held.
func (m *machine) shut() {
	m.ended = true
	m.queued, m.queuedBytes = 0, 0
	for _, st := range m.senders {
		*st = senderState{}
	}
}

// step takes one verified frame (sender authenticated and checked against
// the signature) of this session; size is its length on the wire.
func (m *machine) step(f *Frame, size int) []action {
	if !m.members[f.From] {
		return dropWarn(f, DropNotMember, "p2p: dropped frame from a non-member of the session", "frame", f.Describe())
	}
	// An echo's own number is not used (stepEcho goes by the inner
	// frame's slot, which it bounds): our echo count grows with the
	// broadcasts received from everyone, so a cap on it would let a member
	// push our echoes over it and hide an equivocation.
	if f.Kind != KindEcho && f.Seq > m.slots {
		return dropWarn(f, DropSeqLimit, "p2p: dropped frame: sequence number over the session limit", "frame", f.Describe(), "limit", m.slots)
	}
	switch f.Kind {
	case KindDirect:
		return m.stepDirect(f, size)
	case KindBroadcast:
		return m.stepBroadcast(f, size)
	case KindEcho:
		return m.stepEcho(f)
	}
	return nil
}

func (m *machine) stepDirect(f *Frame, size int) []action {
	if m.ended {
		return dropCount(f, DropClosed)
	}
	k := seqKey{f.From, f.Seq}
	if prev := m.direct[k]; prev != nil {
		if prev.PayloadHash == f.PayloadHash {
			return dropCount(f, DropDuplicate)
		}
		return m.equivocation(prev, f)
	}
	st := m.senders[f.From]
	if !m.room(st, size) {
		return m.queueFull(f)
	}
	m.direct[k] = f.HeaderOnly()
	return []action{m.deliver(st, f, size)}
}

// stepBroadcast records a broadcast, echoes its header to the other
// members and delivers the sender's broadcasts in sequence: #k only after
// #k-1, never past a gap. Otherwise a sender could number one payload #1
// for one member and another #2 for a second member: the echoes would
// land in different slots and never conflict.
func (m *machine) stepBroadcast(f *Frame, size int) []action {
	if m.ended {
		return dropCount(f, DropClosed)
	}
	k := seqKey{f.From, f.Seq}
	rec := m.bcast[k]
	if rec != nil && rec.first.PayloadHash != f.PayloadHash {
		return m.equivocation(rec.first, f)
	}
	st := m.senders[f.From]
	if (rec != nil && rec.received) || f.Seq < st.next {
		return dropCount(f, DropDuplicate)
	}
	if f.Seq-st.next >= m.window {
		return dropWarn(f, DropBroadcastGap, "p2p: dropped broadcast far ahead of the sender's next", "session", m.session, "frame", f.Describe(), "next", st.next)
	}
	if !m.room(st, size) && (f.Seq != st.next || !m.nextRoom(st, size)) {
		return m.queueFull(f)
	}
	if rec == nil {
		rec = &bcastRecord{first: f.HeaderOnly()}
		m.bcast[k] = rec
	}
	rec.received = true
	st.held[f.Seq] = heldFrame{f: f, size: size}
	st.heldBytes += size

	var acts []action
	if echo, ok := m.echo(rec.first, f.From); ok {
		acts = append(acts, echo)
	}
	if f.Seq != st.next {
		return append(acts, action{kind: actHold, frame: f, size: size})
	}
	for {
		h, ok := st.held[st.next]
		if !ok {
			return acts
		}
		delete(st.held, st.next)
		st.heldBytes -= h.size
		st.next++
		acts = append(acts, m.deliver(st, h.f, h.size))
	}
}

func (m *machine) stepEcho(f *Frame) []action {
	inner, err := DecodeFrame(f.Payload)
	if err == nil {
		switch {
		case !inner.HashOnly || inner.Kind != KindBroadcast:
			err = errors.New("echo does not carry a broadcast header")
		case inner.Session != m.session:
			err = fmt.Errorf("echo of a frame of session %s", inner.Session)
		case inner.From == f.From || inner.From == m.self || !m.members[inner.From]:
			err = fmt.Errorf("echo of a broadcast by %s", inner.From)
		case inner.Seq > m.slots:
			err = fmt.Errorf("echo of broadcast #%d, over the session limit", inner.Seq)
		default:
			err = inner.Verify()
		}
	}
	if err != nil {
		return dropWarn(f, DropBadEcho, "p2p: dropped bad echo", "session", m.session, "err", err)
	}
	if m.ended {
		return nil
	}
	k := seqKey{inner.From, inner.Seq}
	rec := m.bcast[k]
	if rec == nil {
		m.bcast[k] = &bcastRecord{first: inner}
		return nil
	}
	if rec.first.PayloadHash != inner.PayloadHash {
		return m.equivocation(rec.first, inner)
	}
	return nil
}

// room reports whether the sender's share of the queue (with its held
// broadcasts) and the whole queue can take size more bytes.
func (m *machine) room(st *senderState, size int) bool {
	return st.queuedFrames+len(st.held) < m.shareFrames &&
		st.queuedBytes+st.heldBytes+size <= m.shareBytes &&
		m.queued < m.queueFrames &&
		m.queuedBytes+size <= m.queueBytes
}

// nextRoom reports whether the sender's next expected broadcast fits: its
// queued messages, not counting its held broadcasts, are within its share.
// Otherwise held broadcasts could fill the share and keep out the one
// broadcast that releases them, stalling the sender for good. With it, a
// sender's queued and held messages stay within its share plus
// BroadcastWindow frames and twice its share of bytes.
func (m *machine) nextRoom(st *senderState, size int) bool {
	return st.queuedFrames < m.shareFrames && st.queuedBytes+size <= m.shareBytes
}

// deliver counts f as queued for the engine. The caller checked room.
func (m *machine) deliver(st *senderState, f *Frame, size int) action {
	m.queued++
	m.queuedBytes += size
	st.queuedFrames++
	st.queuedBytes += size
	return action{kind: actDeliver, frame: f, size: size}
}

func (m *machine) queueFull(f *Frame) []action {
	return dropWarn(f, DropQueueFull, "p2p: dropped message: the engine is not reading, or the sender floods", "session", m.session, "frame", f.Describe())
}

// echo returns the action that sends a signed echo of the broadcast header
// inner to the other members but skip, or false when there is nobody to
// cross-check with (the sender is the only other member).
func (m *machine) echo(inner *Frame, skip peer.ID) (action, bool) {
	if len(m.others) < 2 {
		return action{}, false
	}
	m.seqEcho++
	e := &Frame{Kind: KindEcho, Session: m.session, Seq: m.seqEcho, From: m.self, Payload: inner.HeaderOnly().Encode()}
	if err := e.Sign(m.key); err != nil {
		return action{kind: actEcho, fault: err}, true
	}
	return action{kind: actEcho, frame: e, skip: skip}, true
}

// equivocation ends the session naming the sender of a and b, two validly
// signed frames for the same slot with different payloads. For a broadcast
// it also echoes both versions to the other members: a member that learnt
// of the conflict before echoing what it received would otherwise leave the
// others unaware of it.
func (m *machine) equivocation(a, b *Frame) []action {
	ev := &Evidence{Sender: ids.MemberID(a.From.String()), First: a.HeaderOnly(), Second: b.HeaderOnly()}
	m.ended = true
	acts := []action{{kind: actEnd, frame: b, err: &tss.SessionError{Session: m.session, Kind: tss.FailMisbehaviour, Culprits: []ids.MemberID{ev.Sender}, Err: ev}}}
	if a.Kind == KindBroadcast {
		for _, f := range []*Frame{a, b} {
			if e, ok := m.echo(f, a.From); ok {
				acts = append(acts, e)
			}
		}
	}
	return acts
}

func dropCount(f *Frame, r DropReason) []action {
	return []action{{kind: actDrop, frame: f, reason: r}}
}

func dropWarn(f *Frame, r DropReason, msg string, args ...any) []action {
	return []action{{kind: actDrop, frame: f, reason: r, msg: msg, args: args}}
}
