package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

// errQueueFull is returned by a non-waiting enqueue on a full peer queue.
var errQueueFull = errors.New("p2p: outbound queue full")

// errQueueStuck is why Send or Broadcast gave up on a member whose queue
// stayed full for Config.OutQueueWait.
var errQueueStuck = errors.New("p2p: outbound queue stayed full")

// errEchoLost refuses an engine frame of a session that lost an echo.
var errEchoLost = errors.New("p2p: an echo of the session could not be queued")

// errSessionEnded stops a wait for room when the transport ended the session.
var errSessionEnded = errors.New("p2p: session ended by the transport")

// peerOut is the outbound side of one peer: a bounded FIFO queue and the
// one goroutine (run) that writes it on a long-lived stream. Engine sends
// and echoes share the queue, so a peer sees our echoes of round r before
// our round r+1. A slow or dead peer holds up its own queue; Send and
// Broadcast wait for room in it at most Config.OutQueueWait.
type peerOut struct {
	n      *Node
	to     peer.ID
	wake   chan struct{}   // capacity 1: something was queued
	ctx    context.Context // ends when the node closes or the peer is removed
	cancel context.CancelFunc

	mu    sync.Mutex
	queue []outItem     // guarded by mu
	bytes int           // guarded by mu; encoded bytes in queue
	room  chan struct{} // guarded by mu; closed (and replaced) when the queue shrinks

	smu       sync.Mutex     // serialises writes on s
	s         network.Stream // guarded by smu
	downUntil time.Time      // guarded by smu; no stream open attempt before then
	retry     bool           // guarded by smu; the next open clears the swarm's dial backoff
}

type outItem struct {
	f   *Frame
	raw []byte
	s   *session // the session the frame belongs to
}

// echoAllowance is how far echoes may go over Config.OutQueueFrames (and
// past Config.OutQueueBytes: an echo is a few hundred bytes). An echo is
// never dropped while a later engine frame of its session waits for room
// in the same queue: it goes in over the cap, and when even the allowance
// is used up the echo's session fails naming the peer, so that no later
// frame of that session goes to the peer ahead of the lost echo.
func echoAllowance(cfg Config) int { return max(cfg.OutQueueFrames/4, 16) }

func newPeerOut(n *Node, to peer.ID) *peerOut {
	ctx, cancel := context.WithCancel(n.ctx)
	return &peerOut{n: n, to: to, wake: make(chan struct{}, 1), room: make(chan struct{}), ctx: ctx, cancel: cancel}
}

// stop ends the writer of a peer that is no longer a member; its stream is
// reset as the writer exits.
func (o *peerOut) stop() { o.cancel() }

// ended returns why the writer has stopped: ErrClosed once the node
// closes, ErrPeerRemoved once the peer was removed.
func (o *peerOut) ended() error {
	if o.n.ctx.Err() != nil {
		return ErrClosed
	}
	return ErrPeerRemoved
}

// enqueue queues f, a frame of session s, for writing. With wait it blocks
// until there is room, ctx is done, the deadline passes (zero: none) or s
// is ended by the transport; without, a full queue is errQueueFull. Echoes
// (never waited for) may use echoAllowance over the caps. A nil return
// means queued, not written: the writer fails s if it cannot write f (see
// run).
func (o *peerOut) enqueue(ctx context.Context, s *session, f *Frame, wait bool, deadline time.Time) error {
	raw := f.Encode()
	if len(raw) > o.n.cfg.MaxFrameSize {
		return fmt.Errorf("p2p: frame of %d bytes to %s exceeds %d", len(raw), o.to, o.n.cfg.MaxFrameSize)
	}
	echo := f.Kind == KindEcho
	var timer <-chan time.Time
	for {
		if o.ctx.Err() != nil {
			return o.ended()
		}
		o.mu.Lock()
		if !echo && s.echoLost.Load() != nil {
			// An echo of this session to some member was lost: nothing
			// later of the session may overtake it (s has failed).
			o.mu.Unlock()
			return errEchoLost
		}
		fits := len(o.queue) == 0 || (len(o.queue) < o.n.cfg.OutQueueFrames && o.bytes+len(raw) <= o.n.cfg.OutQueueBytes)
		if echo && !fits {
			fits = len(o.queue) < o.n.cfg.OutQueueFrames+echoAllowance(o.n.cfg)
		}
		if fits {
			o.queue = append(o.queue, outItem{f: f, raw: raw, s: s})
			o.bytes += len(raw)
			o.mu.Unlock()
			select {
			case o.wake <- struct{}{}:
			default:
			}
			return nil
		}
		if echo {
			// Set under o.mu: a waiting engine frame of s cannot slip into
			// this queue before it sees the flag.
			s.echoLost.CompareAndSwap(nil, &o.to)
		}
		room := o.room
		o.mu.Unlock()
		if !wait {
			return errQueueFull
		}
		if timer == nil && !deadline.IsZero() {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer:
			return errQueueStuck
		case <-s.done:
			return errSessionEnded
		case <-o.ctx.Done():
			return o.ended()
		}
	}
}

// run writes queued frames in order until the node closes or the peer is
// removed.
func (o *peerOut) run() {
	defer o.n.wg.Done()
	defer o.close()
	for {
		o.mu.Lock()
		if len(o.queue) == 0 {
			o.mu.Unlock()
			select {
			case <-o.wake:
				continue
			case <-o.ctx.Done():
				return
			}
		}
		it := o.queue[0]
		o.queue[0] = outItem{}
		o.queue = o.queue[1:]
		o.bytes -= len(it.raw)
		close(o.room)
		o.room = make(chan struct{})
		o.mu.Unlock()
		if o.ctx.Err() != nil {
			return
		}
		if it.s.staleAt(time.Now()) {
			// Its session ended here a while ago: a restarted member would
			// only buffer it as an early frame.
			o.n.counters.Unsent.Add(1)
			o.n.counters.drop(DropStale)
			continue
		}
		if it.s.ended() && o.isDown() {
			// Not worth a wait for the peer to come back.
			o.n.counters.Unsent.Add(1)
			continue
		}
		if err := o.write(it.raw); err != nil {
			o.n.counters.Unsent.Add(1)
			if o.ctx.Err() == nil && o.n.logs.allow(o.to, "unsent") {
				o.n.log.Warn("p2p: could not send to member", "peer", o.to.String(), "frame", it.f.Describe(), "err", err)
			}
			if it.f.Kind != KindEcho && o.ctx.Err() == nil {
				// The member misses one of our messages: the session
				// cannot complete there (broadcasts are delivered in
				// order), so end it here, naming that member, rather
				// than let the engine's idle timeout blame a sender.
				it.s.fail(&tss.SessionError{Session: it.s.id, Kind: tss.FailTransport, Waiting: []ids.MemberID{ids.MemberID(o.to.String())},
					Err: fmt.Errorf("p2p: %s not written: %w", it.f.Describe(), err)})
			}
		}
	}
}

// write writes one encoded frame on the stream to o.to, opening it (or,
// after a write failure, reopening it once) as needed. Each write and each
// stream open has its own deadline, Config.WriteTimeout. A failed open marks
// the peer down for Config.RedialDelay: the next open waits until then (run
// drops frames of ended sessions meanwhile) and clears the swarm's dial
// backoff for it, so a restarted member is reached again quickly.
func (o *peerOut) write(raw []byte) error {
	n := o.n
	if len(raw) > n.cfg.MaxFrameSize {
		return fmt.Errorf("p2p: frame of %d bytes to %s exceeds %d", len(raw), o.to, n.cfg.MaxFrameSize)
	}
	buf := make([]byte, 4+len(raw))
	binary.BigEndian.PutUint32(buf, uint32(len(raw)))
	copy(buf[4:], raw)

	o.smu.Lock()
	defer o.smu.Unlock()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if o.ctx.Err() != nil {
			return o.ended()
		}
		if o.s == nil {
			if d := time.Until(o.downUntil); d > 0 {
				// Wait out the pause, then try: a member restarted
				// meanwhile must not lose the frames of a new session.
				select {
				case <-time.After(d):
				case <-o.ctx.Done():
					return o.ended()
				}
			}
			// Members are configured and few: after a failure, the swarm's
			// backoff must not keep a restarted member unreachable; the
			// engine's idle timeout decides when a silent member is given up.
			if o.retry || attempt > 0 {
				o.retry = false
				n.clearBackoff(o.to)
			}
			ctx, cancel := context.WithTimeout(o.ctx, n.cfg.WriteTimeout)
			s, oerr := n.host.NewStream(ctx, o.to, ProtocolID)
			cancel()
			if oerr != nil {
				err = fmt.Errorf("p2p: open stream to %s: %w", o.to, oerr)
				if attempt == 0 {
					// Two members dialling each other at the same moment
					// can both fail the handshake: try once more after a
					// random pause, so that the two do not collide again.
					select {
					case <-time.After(time.Duration(25+rand.IntN(125)) * time.Millisecond):
					case <-o.ctx.Done():
						return o.ended()
					}
					continue
				}
				o.downUntil = time.Now().Add(n.cfg.RedialDelay)
				o.retry = true
				return err
			}
			o.s = s
		}
		o.s.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout))
		_, err = o.s.Write(buf)
		if err == nil {
			n.counters.Sent.Add(1)
			return nil
		}
		// Frames written earlier on this stream but not yet read by the
		// peer are lost with it; the engine's idle timeout covers that.
		err = fmt.Errorf("p2p: write to %s: %w", o.to, err)
		o.s.Reset()
		o.s = nil
	}
	return err
}

// isDown reports whether a stream open to the peer failed a moment ago.
func (o *peerOut) isDown() bool {
	o.smu.Lock()
	defer o.smu.Unlock()
	return o.s == nil && time.Now().Before(o.downUntil)
}

// close resets the stream, if any. The writer has stopped.
func (o *peerOut) close() {
	o.smu.Lock()
	defer o.smu.Unlock()
	if o.s != nil {
		o.s.Reset()
		o.s = nil
	}
}
