package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/custos-wallet/custos/tss"
)

// ProtocolID is the libp2p protocol of session traffic. A change to the frame
// encoding that old nodes cannot read needs a new version here.
const ProtocolID protocol.ID = "/custos/tss/1.0.0"

// ErrClosed is returned by a closed Node or session.
var ErrClosed = errors.New("p2p: closed")

// Node is one cluster member's libp2p host. It implements tss.Transport.
type Node struct {
	cfg      Config
	host     host.Host
	key      crypto.PrivKey
	self     peer.ID
	members  map[peer.ID]bool // fixed at construction, this node excluded
	log      *slog.Logger
	counters *Counters
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup // stream readers, session pumps, janitor

	// hook, if set, replaces the write of each outbound frame (tests only).
	hook atomic.Pointer[sendHook]

	mu       sync.Mutex
	closed   bool                           // guarded by mu
	sessions map[tss.SessionID]*session     // guarded by mu
	pending  map[tss.SessionID]*pendingSess // guarded by mu
	pendingN int                            // bytes in pending, guarded by mu
	ended    map[tss.SessionID]time.Time    // recently closed sessions, guarded by mu
	out      map[peer.ID]*outStream         // guarded by mu
	limits   map[peer.ID]*peerLimits        // guarded by mu
	inbound  map[network.Stream]bool        // guarded by mu
}

// sendHook receives every outbound frame with the function that writes it.
type sendHook func(to peer.ID, f *Frame, write func(raw []byte) error) error

type outStream struct {
	mu sync.Mutex
	s  network.Stream // guarded by mu
}

type peerLimits struct {
	frames *rate.Limiter
	bytes  *rate.Limiter
}

var _ tss.Transport = (*Node)(nil)

// New starts a node: a libp2p host listening on cfg.ListenAddrs that talks
// to cfg.Members only.
func New(cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	self, err := peer.IDFromPrivateKey(cfg.Identity)
	if err != nil {
		return nil, fmt.Errorf("p2p: peer id of identity: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:      cfg,
		key:      cfg.Identity,
		self:     self,
		members:  make(map[peer.ID]bool),
		log:      cfg.Logger.With("node", self.String()),
		counters: new(Counters),
		ctx:      ctx,
		cancel:   cancel,
		sessions: make(map[tss.SessionID]*session),
		pending:  make(map[tss.SessionID]*pendingSess),
		ended:    make(map[tss.SessionID]time.Time),
		out:      make(map[peer.ID]*outStream),
		limits:   make(map[peer.ID]*peerLimits),
		inbound:  make(map[network.Stream]bool),
	}
	for _, m := range cfg.Members {
		if m.ID != self {
			n.members[m.ID] = true
		}
	}
	gater := &memberGater{self: self, members: n.members, log: n.log, counters: n.counters}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Identity),
		libp2p.ListenAddrStrings(cfg.ListenAddrs...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(libp2pquic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.ConnectionGater(gater),
		libp2p.DisableRelay(),
		libp2p.Ping(false),
		libp2p.DisableIdentifyAddressDiscovery(),
	}
	if cfg.Registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
		if err := cfg.Registerer.Register(n.counters); err != nil {
			cancel()
			return nil, fmt.Errorf("p2p: register metrics: %w", err)
		}
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		cancel()
		if cfg.Registerer != nil {
			cfg.Registerer.Unregister(n.counters)
		}
		return nil, fmt.Errorf("p2p: start host: %w", err)
	}
	n.host = h
	for _, m := range cfg.Members {
		if m.ID != self && len(m.Addrs) > 0 {
			h.Peerstore().AddAddrs(m.ID, m.Addrs, peerstore.PermanentAddrTTL)
		}
	}
	h.SetStreamHandler(ProtocolID, n.handleStream)
	n.wg.Add(1)
	go n.janitor()
	return n, nil
}

// Self is this node's member id: its peer id in text form.
func (n *Node) Self() tss.MemberID { return tss.MemberID(n.self.String()) }

// ID is this node's peer id.
func (n *Node) ID() peer.ID { return n.self }

// Addrs returns the addresses the node listens on, each with its
// /p2p/<peer id> suffix.
func (n *Node) Addrs() []ma.Multiaddr {
	info := peer.AddrInfo{ID: n.self, Addrs: n.host.Addrs()}
	addrs, err := peer.AddrInfoToP2pAddrs(&info)
	if err != nil {
		return nil
	}
	return addrs
}

// ListenAddrs returns the bare addresses the node listens on.
func (n *Node) ListenAddrs() []ma.Multiaddr { return n.host.Network().ListenAddresses() }

// Counters returns the node's frame and connection counters.
func (n *Node) Counters() *Counters { return n.counters }

// Host is the underlying libp2p host, for diagnostics.
func (n *Node) Host() host.Host { return n.host }

// SetAddrs replaces the known addresses of member id, as configuration
// reloads or tests with port 0 need. It refuses non-members: addresses never
// make a member.
func (n *Node) SetAddrs(id peer.ID, addrs []ma.Multiaddr) error {
	if !n.members[id] {
		return fmt.Errorf("p2p: set addresses of %s: not a configured member", id)
	}
	ps := n.host.Peerstore()
	ps.ClearAddrs(id)
	ps.AddAddrs(id, addrs, peerstore.PermanentAddrTTL)
	return nil
}

// Close ends every session, closes the host and waits for the node's
// goroutines.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	sessions := make([]*session, 0, len(n.sessions))
	for _, s := range n.sessions {
		sessions = append(sessions, s)
	}
	n.mu.Unlock()
	for _, s := range sessions {
		s.fail(&tss.SessionError{Session: s.id, Kind: tss.FailTransport, Err: ErrClosed})
		s.shut()
	}
	n.cancel()
	err := n.host.Close()
	n.mu.Lock()
	for s := range n.inbound {
		s.Reset()
	}
	n.mu.Unlock()
	n.wg.Wait()
	if n.cfg.Registerer != nil {
		n.cfg.Registerer.Unregister(n.counters)
	}
	if err != nil {
		return fmt.Errorf("p2p: close host: %w", err)
	}
	return nil
}

// Open joins session id among members (this node included) and returns its
// connection. Frames buffered for the session before Open are handled first.
func (n *Node) Open(ctx context.Context, id tss.SessionID, members []tss.MemberID) (tss.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("p2p: open %s: %w", id, err)
	}
	s := &session{
		n:        n,
		id:       id,
		members:  make(map[peer.ID]bool, len(members)),
		incoming: make(chan tss.Incoming),
		done:     make(chan struct{}),
		shutCh:   make(chan struct{}),
		notify:   make(chan struct{}, 1),
		direct:   make(map[seqKey]*Frame),
		bcast:    make(map[seqKey]*bcastRecord),
	}
	hasSelf := false
	for _, m := range members {
		p, err := peer.Decode(string(m))
		if err != nil {
			return nil, fmt.Errorf("p2p: open %s: member %q is not a peer id: %w", id, m, err)
		}
		if s.members[p] || (p == n.self && hasSelf) {
			return nil, fmt.Errorf("p2p: open %s: member %s appears twice", id, m)
		}
		if p == n.self {
			hasSelf = true
			continue
		}
		if !n.members[p] {
			return nil, fmt.Errorf("p2p: open %s: %s is not a configured member", id, m)
		}
		s.members[p] = true
		s.others = append(s.others, p)
	}
	if !hasSelf {
		return nil, fmt.Errorf("p2p: open %s: this node %s is not among the members", id, n.self)
	}
	n.mu.Lock()
	switch {
	case n.closed:
		n.mu.Unlock()
		return nil, fmt.Errorf("p2p: open %s: %w", id, ErrClosed)
	case n.sessions[id] != nil:
		n.mu.Unlock()
		return nil, fmt.Errorf("p2p: open %s: session is already open", id)
	case !n.ended[id].IsZero():
		n.mu.Unlock()
		return nil, fmt.Errorf("p2p: open %s: session has already ended here", id)
	}
	n.sessions[id] = s
	early := n.pending[id]
	if early != nil {
		delete(n.pending, id)
		n.pendingN -= early.bytes
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go s.pump()
	if early != nil {
		for _, f := range early.frames {
			s.handle(f)
		}
	}
	return s, nil
}

// endSession forgets an open session and remembers that it ended, so that
// late frames for it are dropped rather than buffered.
func (n *Node) endSession(s *session) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sessions[s.id] == s {
		delete(n.sessions, s.id)
		n.ended[s.id] = time.Now()
	}
}

// handleStream reads frames from one inbound stream until it fails.
func (n *Node) handleStream(s network.Stream) {
	remote := s.Conn().RemotePeer()
	n.mu.Lock()
	if n.closed || !n.members[remote] {
		n.mu.Unlock()
		s.Reset()
		return
	}
	n.inbound[s] = true
	n.wg.Add(1)
	lim := n.limitsLocked(remote)
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.inbound, s)
		n.mu.Unlock()
		n.wg.Done()
	}()
	if err := n.readFrames(s, remote, lim); err != nil {
		if !errors.Is(err, io.EOF) && n.ctx.Err() == nil {
			n.log.Debug("p2p: inbound stream ended", "peer", remote.String(), "err", err)
		}
		s.Reset()
		return
	}
	s.Close()
}

func (n *Node) readFrames(s network.Stream, remote peer.ID, lim *peerLimits) error {
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(s, hdr[:]); err != nil {
			return err
		}
		size := binary.BigEndian.Uint32(hdr[:])
		if size == 0 || uint64(size) > uint64(n.cfg.MaxFrameSize) {
			n.counters.drop(DropOversized)
			n.log.Warn("p2p: frame length out of bounds, resetting stream", "peer", remote.String(), "length", size, "max", n.cfg.MaxFrameSize)
			return fmt.Errorf("p2p: frame of %d bytes from %s exceeds %d", size, remote, n.cfg.MaxFrameSize)
		}
		if err := lim.frames.Wait(n.ctx); err != nil {
			return err
		}
		if err := lim.bytes.WaitN(n.ctx, int(size)); err != nil {
			return err
		}
		if err := s.Scope().ReserveMemory(int(size), network.ReservationPriorityAlways); err != nil {
			n.log.Warn("p2p: no memory for frame, resetting stream", "peer", remote.String(), "length", size, "err", err)
			return fmt.Errorf("p2p: reserve %d bytes for frame from %s: %w", size, remote, err)
		}
		buf := make([]byte, size)
		s.SetReadDeadline(time.Now().Add(n.cfg.WriteTimeout))
		_, err := io.ReadFull(s, buf)
		s.SetReadDeadline(time.Time{})
		if err != nil {
			s.Scope().ReleaseMemory(int(size))
			return fmt.Errorf("p2p: read frame from %s: %w", remote, err)
		}
		n.handleFrame(remote, buf)
		s.Scope().ReleaseMemory(int(size))
	}
}

// handleFrame checks one frame read from remote and routes it.
func (n *Node) handleFrame(remote peer.ID, buf []byte) {
	f, err := DecodeFrame(buf)
	if err != nil || f.HashOnly {
		n.counters.drop(DropMalformed)
		n.log.Warn("p2p: dropped malformed frame", "peer", remote.String(), "err", err)
		return
	}
	if f.From != remote {
		n.counters.drop(DropSpoofedSender)
		n.log.Warn("p2p: dropped frame claiming another sender", "peer", remote.String(), "claimed", f.From.String(), "frame", f.Describe())
		return
	}
	if err := f.Verify(); err != nil {
		n.counters.drop(DropBadSignature)
		n.log.Warn("p2p: dropped frame with bad signature", "peer", remote.String(), "frame", f.Describe())
		return
	}
	n.counters.Received.Add(1)
	if f.Kind == KindDirect && f.To != n.self {
		n.counters.drop(DropWrongTo)
		n.log.Warn("p2p: dropped frame for another recipient", "peer", remote.String(), "frame", f.Describe())
		return
	}
	n.mu.Lock()
	s := n.sessions[f.Session]
	if s == nil {
		n.bufferLocked(f, len(buf))
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	s.handle(f)
}

func (n *Node) limitsLocked(p peer.ID) *peerLimits {
	l := n.limits[p]
	if l == nil {
		l = &peerLimits{
			frames: rate.NewLimiter(n.cfg.PeerFrameRate, n.cfg.PeerFrameBurst),
			bytes:  rate.NewLimiter(n.cfg.PeerByteRate, n.cfg.MaxFrameSize),
		}
		n.limits[p] = l
	}
	return l
}

// send signs nothing: f is signed. It writes f to peer to, through the test
// hook if one is set.
func (n *Node) send(ctx context.Context, to peer.ID, f *Frame) error {
	if h := n.hook.Load(); h != nil {
		return (*h)(to, f, func(raw []byte) error { return n.writeRaw(ctx, to, raw) })
	}
	return n.writeRaw(ctx, to, f.Encode())
}

// writeRaw writes one frame on the long-lived stream to peer to, opening
// (or, after a failure, reopening once) the stream as needed.
func (n *Node) writeRaw(ctx context.Context, to peer.ID, raw []byte) error {
	if len(raw) > n.cfg.MaxFrameSize {
		return fmt.Errorf("p2p: frame of %d bytes to %s exceeds %d", len(raw), to, n.cfg.MaxFrameSize)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	o := n.out[to]
	if o == nil {
		o = &outStream{}
		n.out[to] = o
	}
	n.mu.Unlock()

	buf := make([]byte, 4+len(raw))
	binary.BigEndian.PutUint32(buf, uint32(len(raw)))
	copy(buf[4:], raw)

	o.mu.Lock()
	defer o.mu.Unlock()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		deadline := time.Now().Add(n.cfg.WriteTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if o.s == nil {
			sctx, cancel := context.WithDeadline(ctx, deadline)
			var s network.Stream
			s, err = n.host.NewStream(sctx, to, ProtocolID)
			cancel()
			if err != nil {
				err = fmt.Errorf("p2p: open stream to %s: %w", to, err)
				if ctx.Err() != nil || n.ctx.Err() != nil {
					break
				}
				// Members are configured and few: retry at once even if
				// the swarm's dial backoff remembers a member that was down
				// and has restarted. The engine's idle timeout, not the
				// backoff, decides when a silent member is given up on.
				if sw, ok := n.host.Network().(*swarm.Swarm); ok {
					sw.Backoff().Clear(to)
				}
				continue
			}
			o.s = s
		}
		o.s.SetWriteDeadline(deadline)
		_, err = o.s.Write(buf)
		if err == nil {
			n.counters.Sent.Add(1)
			return nil
		}
		err = fmt.Errorf("p2p: write to %s: %w", to, err)
		o.s.Reset()
		o.s = nil
		if ctx.Err() != nil || n.ctx.Err() != nil {
			break
		}
	}
	return err
}

// janitor expires pre-open buffers and the record of ended sessions.
func (n *Node) janitor() {
	defer n.wg.Done()
	t := time.NewTicker(max(n.cfg.PendingTTL/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case now := <-t.C:
			n.mu.Lock()
			n.expireLocked(now)
			n.mu.Unlock()
		}
	}
}
