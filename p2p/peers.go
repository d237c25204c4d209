package p2p

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/custos-wallet/custos/tss"
)

// PeerKind says what a peer may do on this node.
type PeerKind uint8

// The kinds of peer.
const (
	// PeerUnknown may not connect.
	PeerUnknown PeerKind = iota
	// PeerMember is a committee member of a key this node serves: it may
	// connect, use request protocols, open session streams and be a
	// member of a session.
	PeerMember
	// PeerCoordinator may connect and use request protocols. It is never a
	// member of a session.
	PeerCoordinator
)

func (k PeerKind) String() string {
	switch k {
	case PeerMember:
		return "member"
	case PeerCoordinator:
		return "coordinator"
	}
	return "unknown"
}

// peerSet is one immutable snapshot of the peers this node talks to. The
// gater, the stream handlers and Open read the current one without a lock;
// SetPeers replaces it.
type peerSet struct {
	members      map[peer.ID]*peerOut // this node excluded; one writer each
	coordinators map[peer.ID]bool
}

func (ps *peerSet) kind(p peer.ID) PeerKind {
	switch {
	case ps.members[p] != nil:
		return PeerMember
	case ps.coordinators[p]:
		return PeerCoordinator
	}
	return PeerUnknown
}

// checkPeers validates a member and a coordinator list and returns the kind
// of every peer named. A peer named as both is refused: a coordinator is
// never a session member.
func checkPeers(members, coordinators []Member) (map[peer.ID]PeerKind, error) {
	kinds := make(map[peer.ID]PeerKind, len(members)+len(coordinators))
	for _, m := range members {
		if err := checkMemberID(m.ID); err != nil {
			return nil, err
		}
		kinds[m.ID] = PeerMember
	}
	for _, c := range coordinators {
		if err := checkMemberID(c.ID); err != nil {
			return nil, fmt.Errorf("p2p: coordinator: %w", err)
		}
		if kinds[c.ID] == PeerMember {
			return nil, fmt.Errorf("p2p: %s is named as a member and as a coordinator; a coordinator is never a session member", c.ID)
		}
		kinds[c.ID] = PeerCoordinator
	}
	return kinds, nil
}

// PeerKind reports what p may do here, by the current peer set.
func (n *Node) PeerKind(p peer.ID) PeerKind {
	if p == n.self {
		return PeerUnknown
	}
	return n.peers.Load().kind(p)
}

// SetPeers replaces the peers this node talks to while it runs, as a
// reshare that adds or removes a member needs: members (committee members
// of every key this node serves; this node may be among them) and
// coordinators. The gater admits the new set at once. Addresses given
// replace the known ones; a peer given without addresses keeps those known.
//
// A peer that is no longer allowed has its connections closed. A peer that
// is no longer a member has its session streams reset and its outbound
// queue stopped, and every open session it is a member of fails here
// (tss.FailTransport, Waiting: that peer).
func (n *Node) SetPeers(members, coordinators []Member) error {
	kinds, err := checkPeers(members, coordinators)
	if err != nil {
		return err
	}
	n.setMu.Lock()
	defer n.setMu.Unlock()

	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return fmt.Errorf("p2p: set peers: %w", ErrClosed)
	}
	old := n.peers.Load()
	next := &peerSet{members: make(map[peer.ID]*peerOut), coordinators: make(map[peer.ID]bool)}
	var added []*peerOut
	for p, k := range kinds {
		switch {
		case p == n.self:
		case k == PeerCoordinator:
			next.coordinators[p] = true
		case old.members[p] != nil:
			next.members[p] = old.members[p]
		default:
			o := newPeerOut(n, p)
			next.members[p] = o
			added = append(added, o)
		}
	}
	var removed []*peerOut
	for p, o := range old.members {
		if next.members[p] == nil {
			removed = append(removed, o)
			delete(n.limits, p)
			for range n.pending.dropFrom(p) {
				n.counters.drop(DropNotMember)
			}
		}
	}
	n.peers.Store(next)
	for _, o := range added {
		n.wg.Add(1)
		go o.run()
	}
	var failing []*session
	for _, s := range n.sessions {
		if memberIDs := s.removedMembers(next); len(memberIDs) > 0 {
			failing = append(failing, s)
		}
	}
	var reset []network.Stream
	for s, in := range n.inbound {
		if !in.admit(next.kind(s.Conn().RemotePeer())) {
			in.cancel(ErrPeerRemoved)
			reset = append(reset, s)
		}
	}
	n.mu.Unlock()

	ps := n.host.Peerstore()
	for _, m := range append(append([]Member(nil), members...), coordinators...) {
		if m.ID != n.self && len(m.Addrs) > 0 {
			ps.ClearAddrs(m.ID)
			ps.AddAddrs(m.ID, m.Addrs, peerstore.PermanentAddrTTL)
		}
	}
	for _, o := range removed {
		o.stop()
	}
	for _, s := range failing {
		memberIDs := s.removedMembers(next)
		s.fail(&tss.SessionError{Session: s.id, Kind: tss.FailTransport, Waiting: memberIDs,
			Err: fmt.Errorf("p2p: session %s: member(s) %v removed from this node's peers", s.id, memberIDs)})
	}
	for _, s := range reset {
		s.Reset()
	}
	// Connections that came up before the swap are closed here; one that
	// comes up after it meets the new set in the gater or in connected.
	for p := range old.members {
		n.dropIfUnknown(next, p)
	}
	for p := range old.coordinators {
		n.dropIfUnknown(next, p)
	}
	n.log.Info("p2p: peers set", "members", len(next.members), "coordinators", len(next.coordinators), "added", len(added), "removed", len(removed))
	return nil
}

// dropIfUnknown closes the connections to p and forgets its addresses if
// p is not allowed in ps.
func (n *Node) dropIfUnknown(ps *peerSet, p peer.ID) {
	if ps.kind(p) != PeerUnknown {
		return
	}
	n.logs.forget(p)
	n.host.Peerstore().ClearAddrs(p)
	if err := n.host.Network().ClosePeer(p); err != nil {
		n.log.Debug("p2p: close connections of a removed peer", "peer", p.String(), "err", err)
	}
}

// connected closes a connection whose peer is not allowed by the current
// set: SetPeers may have removed it between the gater's check and now.
// libp2p calls it synchronously once the connection is added.
func (n *Node) connected(_ network.Network, c network.Conn) {
	if n.PeerKind(c.RemotePeer()) == PeerUnknown {
		n.counters.Refused.Add(1)
		n.log.Warn("p2p: refused connection from a non-member", "stage", "connected", "peer", c.RemotePeer().String())
		c.Close()
	}
}

// peerGater admits connections to and from the peers of the current set
// only (members and coordinators).
type peerGater struct {
	self     peer.ID
	peers    *atomic.Pointer[peerSet]
	log      *slog.Logger
	counters *Counters
}

var _ connmgr.ConnectionGater = (*peerGater)(nil)

func (g *peerGater) allowed(p peer.ID) bool {
	return p != g.self && g.peers.Load().kind(p) != PeerUnknown
}

func (g *peerGater) refuse(how string, p peer.ID, addr ma.Multiaddr) {
	g.counters.Refused.Add(1)
	g.log.Warn("p2p: refused connection from a non-member", "stage", how, "peer", p.String(), "addr", addr)
}

func (g *peerGater) InterceptPeerDial(p peer.ID) bool {
	if !g.allowed(p) {
		g.refuse("dial", p, nil)
		return false
	}
	return true
}

func (g *peerGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allowed(p) }

// InterceptAccept admits every inbound connection: the peer id is not known
// before the security handshake, so InterceptSecured decides.
func (g *peerGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g *peerGater) InterceptSecured(dir network.Direction, p peer.ID, addrs network.ConnMultiaddrs) bool {
	if !g.allowed(p) {
		g.refuse("secured "+dir.String(), p, addrs.RemoteMultiaddr())
		return false
	}
	return true
}

func (g *peerGater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	if !g.allowed(c.RemotePeer()) {
		g.refuse("upgraded", c.RemotePeer(), c.RemoteMultiaddr())
		return false, 0
	}
	return true, 0
}
