package p2p

import (
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/libp2p/go-libp2p/core/peer"
)

// pendingSess holds verified frames for a session this node has not opened
// yet. Frames are kept only from members of the peer set (the session
// stream handler admits no one else); session membership is checked when
// the session opens.
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

// pendingQuota is one sender's share of a total: the total divided by the
// number of other members, at least floor, at most the total. So one member
// cannot use up the buffer the others' early frames need.
func (n *Node) pendingQuota(total, floor int) int {
	q := total / max(len(n.peers.Load().members), 1)
	return min(max(q, floor), total)
}

// bufferLocked keeps f (size bytes on the wire) until its session opens,
// within the per-session, per-sender and total bounds. n.mu is held.
func (n *Node) bufferLocked(f *Frame, size int) {
	if n.peers.Load().members[f.From] == nil {
		// Read before SetPeers removed the sender, handled after: its
		// frames left the buffer with it (dropPendingFromLocked).
		n.counters.drop(DropNotMember)
		return
	}
	if !n.ended[f.Session].IsZero() {
		n.counters.drop(DropClosed)
		return
	}
	now := time.Now()
	n.expireLocked(now)
	from := f.From
	p := n.pending[f.Session]
	var share *pendingShare
	if p != nil {
		share = p.senders[from]
	}
	if share == nil {
		// A new session for this sender (whether or not others began it).
		if p == nil && len(n.pending) >= n.cfg.PendingSessions {
			n.dropWarn(DropPendingFull, from, "p2p: dropped frame for an unopened session: too many pending sessions", "frame", f.Describe())
			return
		}
		if n.pendingBySender[from].sessions >= n.pendingQuota(n.cfg.PendingSessions, 2) {
			n.dropWarn(DropPendingFull, from, "p2p: dropped frame for an unopened session: sender has too many pending sessions", "frame", f.Describe())
			return
		}
	}
	switch {
	case p != nil && (len(p.frames) >= n.cfg.PendingFrames || p.bytes+size > n.cfg.PendingBytes),
		n.pendingN+size > n.cfg.PendingTotalBytes:
		n.dropWarn(DropPendingFull, from, "p2p: dropped frame for an unopened session: buffer full", "frame", f.Describe())
		return
	case share != nil && (share.frames >= n.pendingQuota(n.cfg.PendingFrames, 16) || share.bytes+size > n.pendingQuota(n.cfg.PendingBytes, n.cfg.MaxFrameSize)),
		n.pendingBySender[from].bytes+size > n.pendingQuota(n.cfg.PendingTotalBytes, n.cfg.MaxFrameSize):
		n.dropWarn(DropPendingFull, from, "p2p: dropped frame for an unopened session: sender's share full", "frame", f.Describe())
		return
	}
	if p == nil {
		p = &pendingSess{created: now, senders: make(map[peer.ID]*pendingShare)}
		n.pending[f.Session] = p
	}
	tot := n.pendingBySender[from]
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
	n.pendingBySender[from] = tot
	n.pendingN += size
}

// senderPending is one sender's use of the whole pre-open buffer.
type senderPending struct {
	sessions, bytes int
}

// dropPendingLocked forgets the pending session id (opened or expired).
// n.mu is held.
func (n *Node) dropPendingLocked(id ids.SessionID, p *pendingSess) {
	delete(n.pending, id)
	n.pendingN -= p.bytes
	for from, sh := range p.senders {
		tot := n.pendingBySender[from]
		tot.sessions--
		tot.bytes -= sh.bytes
		if tot.sessions <= 0 {
			delete(n.pendingBySender, from)
		} else {
			n.pendingBySender[from] = tot
		}
	}
}

// expireLocked drops pending sessions older than PendingTTL and forgets
// ended sessions after 4 × PendingTTL. n.mu is held.
func (n *Node) expireLocked(now time.Time) {
	for id, p := range n.pending {
		if now.Sub(p.created) > n.cfg.PendingTTL {
			for range p.frames {
				n.counters.drop(DropExpired)
			}
			n.dropPendingLocked(id, p)
			n.log.Info("p2p: expired frames of a session never opened here", "session", id, "frames", len(p.frames))
		}
	}
	for id, t := range n.ended {
		// Keep ended sessions longer than pending ones, so that a late
		// frame cannot make a pending buffer for a finished session.
		if now.Sub(t) > 4*n.cfg.PendingTTL {
			delete(n.ended, id)
		}
	}
}

// PendingStats reports the frames and bytes buffered for unopened sessions.
func (n *Node) PendingStats() (sessions, frames, bytes int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.pending {
		frames += len(p.frames)
	}
	return len(n.pending), frames, n.pendingN
}

// dropPendingFromLocked forgets every frame from p buffered for unopened
// sessions: SetPeers removed p, so none of them can be delivered. n.mu is
// held.
func (n *Node) dropPendingFromLocked(p peer.ID) {
	if _, ok := n.pendingBySender[p]; !ok {
		return
	}
	for id, ps := range n.pending {
		sh := ps.senders[p]
		if sh == nil {
			continue
		}
		kept := ps.frames[:0]
		for _, pf := range ps.frames {
			if pf.f.From == p {
				n.counters.drop(DropNotMember)
				continue
			}
			kept = append(kept, pf)
		}
		clear(ps.frames[len(kept):])
		ps.frames = kept
		ps.bytes -= sh.bytes
		n.pendingN -= sh.bytes
		delete(ps.senders, p)
		if len(ps.frames) == 0 {
			delete(n.pending, id)
		}
	}
	delete(n.pendingBySender, p)
}
