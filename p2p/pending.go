package p2p

import "time"

// pendingSess holds verified frames for a session this node has not opened
// yet. Frames are kept only from configured members (the gater sees to
// that); session membership is checked when the session opens.
type pendingSess struct {
	created time.Time
	frames  []*Frame
	bytes   int
}

// bufferLocked keeps f (size bytes on the wire) until its session opens,
// within the per-session and total bounds. n.mu is held.
func (n *Node) bufferLocked(f *Frame, size int) {
	if !n.ended[f.Session].IsZero() {
		n.counters.drop(DropClosed)
		return
	}
	now := time.Now()
	n.expireLocked(now)
	p := n.pending[f.Session]
	if p == nil {
		if len(n.pending) >= n.cfg.PendingSessions {
			n.counters.drop(DropPendingFull)
			n.log.Warn("p2p: dropped frame for an unopened session: too many pending sessions", "frame", f.Describe())
			return
		}
		p = &pendingSess{created: now}
		n.pending[f.Session] = p
	}
	if len(p.frames) >= n.cfg.PendingFrames || p.bytes+size > n.cfg.PendingBytes || n.pendingN+size > n.cfg.PendingTotalBytes {
		n.counters.drop(DropPendingFull)
		n.log.Warn("p2p: dropped frame for an unopened session: buffer full", "frame", f.Describe())
		if len(p.frames) == 0 {
			delete(n.pending, f.Session)
		}
		return
	}
	p.frames = append(p.frames, f)
	p.bytes += size
	n.pendingN += size
}

// expireLocked drops pending sessions older than PendingTTL and forgets
// ended sessions after the same time. n.mu is held.
func (n *Node) expireLocked(now time.Time) {
	for id, p := range n.pending {
		if now.Sub(p.created) > n.cfg.PendingTTL {
			for range p.frames {
				n.counters.drop(DropExpired)
			}
			n.pendingN -= p.bytes
			delete(n.pending, id)
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
