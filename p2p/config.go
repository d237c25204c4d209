package p2p

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Member is one node of the cluster as local configuration names it.
type Member struct {
	ID    peer.ID
	Addrs []ma.Multiaddr
}

// ParseMember builds a Member from the text forms of a peer id and its
// multiaddrs, as they appear in a configuration file.
func ParseMember(id string, addrs ...string) (Member, error) {
	p, err := peer.Decode(id)
	if err != nil {
		return Member{}, fmt.Errorf("p2p: parse member id %q: %w", id, err)
	}
	if err := checkMemberID(p); err != nil {
		return Member{}, err
	}
	m := Member{ID: p}
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return Member{}, fmt.Errorf("p2p: parse address %q of member %s: %w", s, p, err)
		}
		m.Addrs = append(m.Addrs, a)
	}
	return m, nil
}

// Config configures a Node. Zero limits take the defaults below.
type Config struct {
	// Identity is the node key (see LoadOrCreateIdentity). Required.
	Identity crypto.PrivKey
	// ListenAddrs are the multiaddrs to listen on, e.g.
	// "/ip4/0.0.0.0/tcp/4001" and "/ip4/0.0.0.0/udp/4001/quic-v1".
	ListenAddrs []string
	// Members are the committee members of every key this node serves, at
	// start (Node.SetPeers replaces them at run time). It may include this
	// node. Only members can be members of a session.
	Members []Member
	// Coordinators may connect and use request protocols (RegisterHandler),
	// but are never members of a session and cannot open session streams.
	// A peer is a member or a coordinator, not both. Only members and
	// coordinators can connect or be dialled.
	Coordinators []Member
	// Sessions remembers every session id this node has taken part in.
	// Required: Open claims each id there, so a reused id is refused after
	// a restart too. Production uses the node's durable store;
	// NewMemorySessionRegistry is for tests only.
	Sessions SessionRegistry
	// Logger receives refusals, drops and aborts. Nil discards.
	Logger *slog.Logger
	// Registerer, if set, receives the node's Prometheus metrics (and
	// libp2p's own).
	Registerer prometheus.Registerer

	// MaxFrameSize bounds one frame on the wire, checked before the frame
	// is read. Default 4 MiB.
	MaxFrameSize int
	// PeerFrameRate and PeerFrameBurst bound the frames read from one peer
	// per second; PeerByteRate bounds its bytes per second (burst
	// MaxFrameSize). Over the limit, reading from that peer waits, so the
	// sender is slowed by flow control and nothing piles up here.
	// Defaults 2000 frames/s, burst 4000, 32 MiB/s.
	PeerFrameRate  rate.Limit
	PeerFrameBurst int
	PeerByteRate   rate.Limit

	// Frames for a session that is not open yet are kept at most
	// PendingTTL (default 30 s), at most PendingFrames (default 512) and
	// PendingBytes (default 16 MiB) per session, PendingTotalBytes
	// (default 64 MiB) and PendingSessions (default 64) over all.
	PendingTTL        time.Duration
	PendingFrames     int
	PendingBytes      int
	PendingTotalBytes int
	PendingSessions   int

	// SessionQueue and SessionQueueBytes bound the messages received for
	// an open session that the engine has not read yet (defaults 4096
	// messages, 64 MiB). Each other member gets an equal share (at least
	// one message and one frame of bytes), so a member that floods cannot
	// push out the others' messages. Out-of-order broadcasts held back
	// count against their sender's share.
	SessionQueue      int
	SessionQueueBytes int
	// SessionSlots bounds the sequence numbers one sender may use per
	// session and kind (default 1024; a protocol run needs a few dozen).
	// Frames above it are dropped and counted, so the state a member can
	// make another keep for one session is bounded.
	SessionSlots uint64
	// BroadcastWindow is how far ahead of the next expected broadcast of a
	// sender a broadcast may arrive and be held until the gap is filled
	// (default 16). Broadcasts further ahead are dropped and counted.
	BroadcastWindow uint64

	// OutQueueFrames and OutQueueBytes bound the frames waiting to be
	// written to one peer (defaults 1024 frames, 32 MiB, at least one
	// frame). When a peer's queue is full, Send and Broadcast wait for
	// room, at most OutQueueWait (default 30 s) or until their context
	// ends; then the session fails naming that peer. Echoes never wait
	// (stream readers never wait on the network): they may go over the
	// caps by a quarter of OutQueueFrames (at least 16); past that the echo
	// is dropped and counted and its session fails naming the peer.
	OutQueueFrames int
	OutQueueBytes  int
	OutQueueWait   time.Duration
	// WriteTimeout bounds one frame write, or one stream open, to one
	// peer (default 10 s). Our frames of a session that ended here more
	// than WriteTimeout ago are dropped from the queues unwritten.
	WriteTimeout time.Duration
	// ReadTimeout bounds the read of one frame once its length prefix has
	// arrived (default 10 s), so a peer cannot hold a reservation by
	// sending a frame slowly. The wait for the next length prefix on a
	// long-lived session stream is not bounded.
	ReadTimeout time.Duration
	// RequestTimeout bounds one exchange of a request protocol (default
	// 30 s): at the server, reading the request, the handler and the
	// answer; at the client, the whole call when its context has no
	// earlier deadline.
	RequestTimeout time.Duration
	// RedialDelay is how long a peer whose stream could not be opened is
	// treated as down: the next stream open waits until then (frames of
	// sessions that ended here meanwhile are dropped unwritten), and it
	// clears libp2p's dial backoff for the peer once (default 1 s). A
	// direct frame or broadcast that cannot be written fails its session.
	RedialDelay time.Duration
}

// Defaults.
const (
	DefaultMaxFrameSize = 4 << 20
	// maxStreamMemory is the per-stream memory limit of libp2p's default
	// resource manager: a frame is reserved there before it is read, so a
	// larger frame could never be received.
	maxStreamMemory = 16 << 20
)

// checkMemberID refuses peer ids that do not inline an Ed25519 public key:
// frames are verified with the key taken from the sender's id.
func checkMemberID(p peer.ID) error {
	pub, err := p.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("p2p: member %s has no inline public key: %w", p, err)
	}
	if pub.Type() != crypto.Ed25519 {
		return fmt.Errorf("p2p: member %s has a %s key, want Ed25519", p, pub.Type())
	}
	return nil
}

func (c Config) withDefaults() (Config, error) {
	if c.Identity == nil {
		return c, errors.New("p2p: config has no identity")
	}
	if c.Identity.Type() != crypto.Ed25519 {
		return c, fmt.Errorf("p2p: identity is a %s key, want Ed25519", c.Identity.Type())
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&c.MaxFrameSize, DefaultMaxFrameSize)
	if c.PeerFrameRate == 0 {
		c.PeerFrameRate = 2000
	}
	setDefault(&c.PeerFrameBurst, 4000)
	if c.PeerByteRate == 0 {
		c.PeerByteRate = 32 << 20
	}
	if c.PendingTTL == 0 {
		c.PendingTTL = 30 * time.Second
	}
	setDefault(&c.PendingFrames, 512)
	setDefault(&c.PendingBytes, 16<<20)
	setDefault(&c.PendingTotalBytes, 64<<20)
	setDefault(&c.PendingSessions, 64)
	setDefault(&c.SessionQueue, 4096)
	setDefault(&c.SessionQueueBytes, 64<<20)
	if c.SessionSlots == 0 {
		c.SessionSlots = 1024
	}
	if c.BroadcastWindow == 0 {
		c.BroadcastWindow = 16
	}
	setDefault(&c.OutQueueFrames, 1024)
	setDefault(&c.OutQueueBytes, 32<<20)
	if c.OutQueueWait <= 0 {
		c.OutQueueWait = 30 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.RedialDelay <= 0 {
		c.RedialDelay = time.Second
	}
	if c.MaxFrameSize < 1024 {
		return c, fmt.Errorf("p2p: max frame size %d is below 1024", c.MaxFrameSize)
	}
	if c.MaxFrameSize > maxStreamMemory {
		return c, fmt.Errorf("p2p: max frame size %d exceeds the per-stream memory limit %d", c.MaxFrameSize, maxStreamMemory)
	}
	if _, err := checkPeers(c.Members, c.Coordinators); err != nil {
		return c, err
	}
	if c.Sessions == nil {
		return c, errors.New("p2p: config has no session registry")
	}
	return c, nil
}

func setDefault(v *int, d int) {
	if *v <= 0 {
		*v = d
	}
}
