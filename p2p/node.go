package p2p

import (
	"context"
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
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/custos-wallet/custos/ids"
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
	log      *slog.Logger
	logs     logLimiter // rate limits for repetitive warnings
	counters *Counters
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup // stream readers, peer writers, session pumps, janitor

	// peers is the current peer set; SetPeers replaces it (under setMu,
	// and under mu so that Open and the session scan see one set).
	peers atomic.Pointer[peerSet]
	setMu sync.Mutex

	// Methods whose names end in Locked are called with mu held.
	mu        sync.Mutex
	closed    bool                             // guarded by mu
	sessions  map[ids.SessionID]*session       // guarded by mu
	pending   pendingBuffer                    // frames of sessions not open yet, sessions ended lately; guarded by mu
	limits    map[peer.ID]*peerLimits          // guarded by mu
	inbound   map[network.Stream]inboundStream // guarded by mu
	protocols map[protocol.ID]bool             // request protocols registered, guarded by mu
}

type peerLimits struct {
	frames *rate.Limiter
	bytes  *rate.Limiter
}

var _ tss.Transport = (*Node)(nil)

// New starts a node: a libp2p host listening on cfg.ListenAddrs that talks
// to cfg.Members only.
func New(cfg Config) (*Node, error) { return newNode(cfg, nil) }

// newNode is New with the libp2p host passed through wrap, if set: tests
// put a fault-injecting host around the real one there.
func newNode(cfg Config, wrap func(host.Host) host.Host) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	kinds, err := checkPeers(cfg.Members, cfg.Coordinators)
	if err != nil {
		return nil, err
	}
	self, err := peer.IDFromPrivateKey(cfg.Identity)
	if err != nil {
		return nil, fmt.Errorf("p2p: peer id of identity: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:       cfg,
		key:       cfg.Identity,
		self:      self,
		log:       cfg.Logger.With("node", self.String()),
		counters:  new(Counters),
		ctx:       ctx,
		cancel:    cancel,
		sessions:  make(map[ids.SessionID]*session),
		pending:   newPendingBuffer(cfg),
		limits:    make(map[peer.ID]*peerLimits),
		inbound:   make(map[network.Stream]inboundStream),
		protocols: make(map[protocol.ID]bool),
	}
	initial := &peerSet{members: make(map[peer.ID]*peerOut), coordinators: make(map[peer.ID]bool)}
	for p, k := range kinds {
		switch {
		case p == self:
		case k == PeerMember:
			initial.members[p] = newPeerOut(n, p)
		default:
			initial.coordinators[p] = true
		}
	}
	n.peers.Store(initial)
	gater := &peerGater{self: self, peers: &n.peers, log: n.log, counters: n.counters}
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
	if wrap != nil {
		h = wrap(h)
	}
	n.host = h
	for _, m := range append(append([]Member(nil), cfg.Members...), cfg.Coordinators...) {
		if m.ID != self && len(m.Addrs) > 0 {
			h.Peerstore().AddAddrs(m.ID, m.Addrs, peerstore.PermanentAddrTTL)
		}
	}
	h.Network().Notify(&network.NotifyBundle{ConnectedF: n.connected})
	h.SetStreamHandler(ProtocolID, n.serve(ProtocolID, membersOnly, 0, n.readSession))
	for _, o := range initial.members {
		n.wg.Add(1)
		go o.run()
	}
	n.wg.Add(1)
	go n.janitor()
	return n, nil
}

// Self is this node's member id: its peer id in text form.
func (n *Node) Self() ids.MemberID { return ids.MemberID(n.self.String()) }

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

// SetAddrs replaces the known addresses of member or coordinator id, as
// configuration reloads or tests with port 0 need. It refuses other peers:
// addresses never make a member (SetPeers does).
func (n *Node) SetAddrs(id peer.ID, addrs []ma.Multiaddr) error {
	if n.PeerKind(id) == PeerUnknown {
		return fmt.Errorf("p2p: set addresses of %s: not a configured member or coordinator", id)
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
	for _, o := range n.peers.Load().members {
		o.close()
	}
	if n.cfg.Registerer != nil {
		n.cfg.Registerer.Unregister(n.counters)
	}
	if err != nil {
		return fmt.Errorf("p2p: close host: %w", err)
	}
	return nil
}

// Open joins session id among members (this node included) and returns its
// connection. Frames buffered for the session before Open are handled first,
// before any frame that arrives while Open runs.
//
// Session ids must never be reused: sequence numbers restart at 1 in a new
// session, so a reused id would let peers pair our frames of two runs as
// "equivocation" evidence against us. The engine makes random ids. Open
// claims id in Config.Sessions, which refuses (ErrSessionReused) an id this
// node took part in before, in this process or an earlier one.
//
// Members must be given in the canonical text form of their peer ids (as
// peer.ID.String returns it, which is what Incoming.From carries), and
// each other member must be a member of the current peer set: a
// coordinator, or a peer SetPeers removed, is refused. The session's
// members are its own list: a peer allowed to connect that is not among
// them is refused as a sender in it.
func (n *Node) Open(ctx context.Context, id ids.SessionID, members []ids.MemberID) (tss.Conn, error) {
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
		out:      make(map[peer.ID]*peerOut, len(members)),
	}
	hasSelf := false
	for _, m := range members {
		p, err := peer.Decode(string(m))
		if err != nil {
			return nil, fmt.Errorf("p2p: open %s: member %q is not a peer id: %w", id, m, err)
		}
		if p.String() != string(m) {
			// Incoming.From is always the canonical form: another form
			// would make the engine blame an honest sender.
			return nil, fmt.Errorf("p2p: open %s: member %q is not in canonical form %s", id, m, p)
		}
		if s.members[p] || (p == n.self && hasSelf) {
			return nil, fmt.Errorf("p2p: open %s: member %s appears twice", id, m)
		}
		if p == n.self {
			hasSelf = true
			continue
		}
		s.members[p] = true
		s.others = append(s.others, p)
	}
	if !hasSelf {
		return nil, fmt.Errorf("p2p: open %s: this node %s is not among the members", id, n.self)
	}
	// Checked again under n.mu below; here so that a plain mistake does
	// not use up the id.
	if err := s.attach(n.peers.Load()); err != nil {
		return nil, fmt.Errorf("p2p: open %s: %w", id, err)
	}
	s.m = newMachine(machineConfig{
		session: id, self: n.self, key: n.key, others: s.others,
		window: n.cfg.BroadcastWindow, slots: n.cfg.SessionSlots,
		queueFrames: n.cfg.SessionQueue, queueBytes: n.cfg.SessionQueueBytes, maxFrameSize: n.cfg.MaxFrameSize,
	})
	if err := n.cfg.Sessions.Claim(ctx, id); err != nil {
		return nil, fmt.Errorf("p2p: open %s: %w", id, err)
	}
	// Readers that find the session below wait on hmu until the frames
	// buffered before Open have been handled.
	s.hmu.Lock()
	defer s.hmu.Unlock()
	n.mu.Lock()
	switch {
	case n.closed:
		n.mu.Unlock()
		return nil, fmt.Errorf("p2p: open %s: %w", id, ErrClosed)
	case n.sessions[id] != nil:
		n.mu.Unlock()
		return nil, fmt.Errorf("p2p: open %s: session is already open", id)
	case n.pending.hasEnded(id):
		n.mu.Unlock()
		return nil, fmt.Errorf("p2p: open %s: session has already ended here; session ids must not be reused", id)
	}
	// SetPeers swaps the set under n.mu: the session is checked against
	// the set it is registered under, so a later swap sees it.
	if err := s.attach(n.peers.Load()); err != nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("p2p: open %s: %w", id, err)
	}
	n.sessions[id] = s
	early := n.pending.take(id)
	n.wg.Add(1)
	n.mu.Unlock()
	go s.pump()
	for _, pf := range early {
		s.process(pf.f, pf.size)
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
		n.pending.end(s.id, time.Now())
	}
}

// readSession reads frames from one inbound session stream (served by the
// shell, members only) until it ends.
func (n *Node) readSession(ctx context.Context, s network.Stream, remote peer.ID) error {
	n.mu.Lock()
	lim := n.limitsLocked(remote)
	n.mu.Unlock()
	// Waits between a frame's length and its body: reading slows to the
	// peer's rate, so flow control slows the sender.
	before := func(size int) error {
		if size == 0 {
			n.counters.drop(DropOversized)
			n.warn(remote, string(DropOversized), "p2p: frame length out of bounds, resetting stream", "length", size, "max", n.cfg.MaxFrameSize)
			return fmt.Errorf("p2p: empty frame from %s", remote)
		}
		if err := lim.frames.Wait(ctx); err != nil {
			return err
		}
		return lim.bytes.WaitN(ctx, size)
	}
	for {
		buf, release, err := readMessage(s, n.cfg.MaxFrameSize, n.cfg.ReadTimeout, before)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, ErrMessageTooLarge):
			n.counters.drop(DropOversized)
			n.warn(remote, string(DropOversized), "p2p: frame length out of bounds, resetting stream", "err", err, "max", n.cfg.MaxFrameSize)
			return fmt.Errorf("p2p: frame from %s: %w", remote, err)
		case errors.Is(err, errNoMemory):
			n.warn(remote, "no_memory", "p2p: no memory for frame, resetting stream", "err", err)
			return fmt.Errorf("p2p: frame from %s: %w", remote, err)
		case err != nil:
			return fmt.Errorf("p2p: frame from %s: %w", remote, err)
		}
		n.handleFrame(remote, buf)
		release()
	}
}

// handleFrame checks one frame read from remote and routes it. It never
// waits on the network: echoes are queued, and dropped if the target's
// queue is full.
func (n *Node) handleFrame(remote peer.ID, buf []byte) {
	f, err := DecodeFrame(buf)
	if err != nil || f.HashOnly {
		n.dropWarn(DropMalformed, remote, "p2p: dropped malformed frame", "err", err)
		return
	}
	if f.From != remote {
		n.dropWarn(DropSpoofedSender, remote, "p2p: dropped frame claiming another sender", "claimed", f.From.String(), "frame", f.Describe())
		return
	}
	if err := f.Verify(); err != nil {
		n.dropWarn(DropBadSignature, remote, "p2p: dropped frame with bad signature", "frame", f.Describe())
		return
	}
	// Counted once the frame is handled (delivered, buffered or dropped),
	// so that a reader of the counters sees the outcome with it.
	defer n.counters.Received.Add(1)
	if f.Kind == KindDirect && f.To != n.self {
		n.dropWarn(DropWrongTo, remote, "p2p: dropped frame for another recipient", "frame", f.Describe())
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
	s.handle(f, len(buf))
}

// dropWarn counts a dropped frame from p and logs it, at most a few times
// per 10 s per peer and reason.
func (n *Node) dropWarn(r DropReason, p peer.ID, msg string, args ...any) {
	n.counters.drop(r)
	n.warn(p, string(r), msg, args...)
}

// warn logs at Warn, rate-limited per peer and reason.
func (n *Node) warn(p peer.ID, reason, msg string, args ...any) {
	if n.logs.allow(p, reason) {
		n.log.Warn(msg, append([]any{"peer", p.String(), "reason", reason}, args...)...)
	}
}

// limitsLocked returns the read rate limits of p, made on first use. n.mu
// is held.
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

// send queues f (signed), a frame of session s, for peer to. With wait it
// waits for room in a full queue until ctx is done or deadline passes;
// without, it drops f and counts it.
func (n *Node) send(ctx context.Context, s *session, to peer.ID, f *Frame, wait bool, deadline time.Time) error {
	o := s.out[to]
	if o == nil {
		return fmt.Errorf("p2p: send to %s: not a member of session %s", to, s.id)
	}
	err := o.enqueue(ctx, s, f, wait, deadline)
	if errors.Is(err, errQueueFull) {
		n.dropWarn(DropOutQueueFull, to, "p2p: outbound queue full, frame not forwarded", "frame", f.Describe())
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
