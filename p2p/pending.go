package p2p

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos-wallet/custos/ids"
)

// pendingBuffer holds verified frames for sessions this node has not
// opened yet, and remembers the sessions that ended here lately, so that a
// late frame of one is dropped rather than buffered. Like the session
// machine it has no lock or clock: the node calls it with n.mu held and
// passes the time in. Frames are kept only from members of the peer set
// (the session stream handler admits no one else); session membership is
// checked when the session opens.
type pendingBuffer struct {
	limits   pendingLimits
	sessions map[ids.SessionID]*pendingSess
	bytes    int                         // in all sessions
	bySender map[peer.ID]senderPending   // each sender's use of the buffer
	ended    map[ids.SessionID]time.Time // recently closed sessions
}

// pendingLimits are the Config bounds of the buffer.
type pendingLimits struct {
	ttl                       time.Duration
	frames, bytes, totalBytes int // per session, per session, over all
	sessions                  int
	maxFrameSize              int
}

func newPendingBuffer(cfg Config) pendingBuffer {
	return pendingBuffer{
		limits: pendingLimits{
			ttl: cfg.PendingTTL, frames: cfg.PendingFrames, bytes: cfg.PendingBytes,
			totalBytes: cfg.PendingTotalBytes, sessions: cfg.PendingSessions, maxFrameSize: cfg.MaxFrameSize,
		},
		sessions: make(map[ids.SessionID]*pendingSess),
		bySender: make(map[peer.ID]senderPending),
		ended:    make(map[ids.SessionID]time.Time),
	}
}

type pendingSess struct {
	created time.Time
	frames  []pendingFrame
	bytes   int
	senders map[peer.ID]*pendingShare // what each sender put here
}

type pendingFrame struct {
	f    *Frame
	size int
}

// pendingShare is one sender's use of one pending session.
type pendingShare struct {
	frames, bytes int
}

// senderPending is one sender's use of the whole buffer.
type senderPending struct {
	sessions, bytes int
}

// expiredSession is a pending session dropped by expire, for the log.
type expiredSession struct {
	session ids.SessionID
	frames  int
}

// quota is one sender's share of a total: the total divided by the number
// of other members, at least floor, at most the total. So one member cannot
// use up the buffer the others' early frames need.
func quota(total, floor, members int) int {
	q := total / max(members, 1)
	return min(max(q, floor), total)
}

// add keeps f (size bytes on the wire) until its session opens, within the
// per-session, per-sender and total bounds. members is the number of
// members in the peer set and isMember whether f's sender is one of them.
// It returns the drop, if f is not kept, and the sessions that expired at
// now.
func (b *pendingBuffer) add(f *Frame, size int, now time.Time, members int, isMember bool) (*action, []expiredSession) {
	if !isMember {
		// Read before SetPeers removed the sender, handled after: its
		// frames left the buffer with it (dropFrom).
		return &dropCount(f, DropNotMember)[0], nil
	}
	if b.hasEnded(f.Session) {
		return &dropCount(f, DropClosed)[0], nil
	}
	expired := b.expire(now)
	full := func(msg string) (*action, []expiredSession) {
		return &dropWarn(f, DropPendingFull, msg, "frame", f.Describe())[0], expired
	}
	from := f.From
	p := b.sessions[f.Session]
	var share *pendingShare
	if p != nil {
		share = p.senders[from]
	}
	if share == nil {
		// A new session for this sender (whether or not others began it).
		if p == nil && len(b.sessions) >= b.limits.sessions {
			return full("p2p: dropped frame for an unopened session: too many pending sessions")
		}
		if b.bySender[from].sessions >= quota(b.limits.sessions, 2, members) {
			return full("p2p: dropped frame for an unopened session: sender has too many pending sessions")
		}
	}
	switch {
	case p != nil && (len(p.frames) >= b.limits.frames || p.bytes+size > b.limits.bytes),
		b.bytes+size > b.limits.totalBytes:
		return full("p2p: dropped frame for an unopened session: buffer full")
	case share != nil && (share.frames >= quota(b.limits.frames, 16, members) || share.bytes+size > quota(b.limits.bytes, b.limits.maxFrameSize, members)),
		b.bySender[from].bytes+size > quota(b.limits.totalBytes, b.limits.maxFrameSize, members):
		return full("p2p: dropped frame for an unopened session: sender's share full")
	}
	if p == nil {
		p = &pendingSess{created: now, senders: make(map[peer.ID]*pendingShare)}
		b.sessions[f.Session] = p
	}
	tot := b.bySender[from]
	if share == nil {
		share = &pendingShare{}
		p.senders[from] = share
		tot.sessions++
	}
	p.frames = append(p.frames, pendingFrame{f: f, size: size})
	p.bytes += size
	share.frames++
	share.bytes += size
	tot.bytes += size
	b.bySender[from] = tot
	b.bytes += size
	return nil, expired
}

// take removes and returns the frames buffered for id, in arrival order.
func (b *pendingBuffer) take(id ids.SessionID) []pendingFrame {
	p := b.sessions[id]
	if p == nil {
		return nil
	}
	b.forget(id, p)
	return p.frames
}

// forget drops pending session id (opened or expired).
func (b *pendingBuffer) forget(id ids.SessionID, p *pendingSess) {
	delete(b.sessions, id)
	b.bytes -= p.bytes
	for from, sh := range p.senders {
		tot := b.bySender[from]
		tot.sessions--
		tot.bytes -= sh.bytes
		if tot.sessions <= 0 {
			delete(b.bySender, from)
		} else {
			b.bySender[from] = tot
		}
	}
}

// expire drops pending sessions older than the TTL at now and forgets
// ended sessions after 4 × TTL. It returns the sessions dropped.
func (b *pendingBuffer) expire(now time.Time) []expiredSession {
	var out []expiredSession
	for id, p := range b.sessions {
		if now.Sub(p.created) > b.limits.ttl {
			b.forget(id, p)
			out = append(out, expiredSession{session: id, frames: len(p.frames)})
		}
	}
	for id, t := range b.ended {
		// Keep ended sessions longer than pending ones, so that a late
		// frame cannot make a pending buffer for a finished session.
		if now.Sub(t) > 4*b.limits.ttl {
			delete(b.ended, id)
		}
	}
	return out
}

// end records that session id ended here at now.
func (b *pendingBuffer) end(id ids.SessionID, now time.Time) { b.ended[id] = now }

// hasEnded reports whether session id ended here lately.
func (b *pendingBuffer) hasEnded(id ids.SessionID) bool { return !b.ended[id].IsZero() }

// dropFrom forgets every frame from p (SetPeers removed p, so none of them
// can be delivered) and returns how many there were.
func (b *pendingBuffer) dropFrom(p peer.ID) int {
	if _, ok := b.bySender[p]; !ok {
		return 0
	}
	dropped := 0
	for id, ps := range b.sessions {
		sh := ps.senders[p]
		if sh == nil {
			continue
		}
		kept := ps.frames[:0]
		for _, pf := range ps.frames {
			if pf.f.From == p {
				dropped++
				continue
			}
			kept = append(kept, pf)
		}
		clear(ps.frames[len(kept):])
		ps.frames = kept
		ps.bytes -= sh.bytes
		b.bytes -= sh.bytes
		delete(ps.senders, p)
		if len(ps.frames) == 0 {
			delete(b.sessions, id)
		}
	}
	delete(b.bySender, p)
	return dropped
}

// stats reports the sessions, frames and bytes buffered.
func (b *pendingBuffer) stats() (sessions, frames, bytes int) {
	for _, p := range b.sessions {
		frames += len(p.frames)
	}
	return len(b.sessions), frames, b.bytes
}

// reportExpired counts and logs the pending sessions that expired.
func (n *Node) reportExpired(expired []expiredSession) {
	for _, e := range expired {
		for range e.frames {
			n.counters.drop(DropExpired)
		}
		n.log.Info("p2p: expired frames of a session never opened here", "session", e.session, "frames", e.frames)
	}
}

// bufferLocked keeps f (size bytes on the wire) until its session opens,
// or drops it. n.mu is held.
func (n *Node) bufferLocked(f *Frame, size int) {
	members := n.peers.Load().members
	drop, expired := n.pending.add(f, size, time.Now(), len(members), members[f.From] != nil)
	n.reportExpired(expired)
	if drop != nil {
		n.applyDrop(*drop)
	}
}

// expireLocked drops what the pre-open buffer holds past its time. n.mu is
// held.
func (n *Node) expireLocked(now time.Time) { n.reportExpired(n.pending.expire(now)) }

// PendingStats reports the frames and bytes buffered for unopened sessions.
func (n *Node) PendingStats() (sessions, frames, bytes int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pending.stats()
}

// applyDrop counts a dropped frame and logs it when the drop asks so.
func (n *Node) applyDrop(a action) {
	if a.msg == "" {
		n.counters.drop(a.reason)
		return
	}
	n.dropWarn(a.reason, a.frame.From, a.msg, a.args...)
}
