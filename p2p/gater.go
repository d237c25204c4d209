package p2p

import (
	"log/slog"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// memberGater admits connections to and from configured members only. The
// set is fixed at construction from local configuration.
type memberGater struct {
	self     peer.ID
	members  map[peer.ID]bool
	log      *slog.Logger
	counters *Counters
}

var _ connmgr.ConnectionGater = (*memberGater)(nil)

func (g *memberGater) allowed(p peer.ID) bool { return p != g.self && g.members[p] }

func (g *memberGater) refuse(how string, p peer.ID, addr ma.Multiaddr) {
	g.counters.Refused.Add(1)
	g.log.Warn("p2p: refused connection from a non-member", "stage", how, "peer", p.String(), "addr", addr)
}

func (g *memberGater) InterceptPeerDial(p peer.ID) bool {
	if !g.allowed(p) {
		g.refuse("dial", p, nil)
		return false
	}
	return true
}

func (g *memberGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allowed(p) }

// InterceptAccept admits every inbound connection: the peer id is not known
// before the security handshake, so InterceptSecured decides.
func (g *memberGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g *memberGater) InterceptSecured(dir network.Direction, p peer.ID, addrs network.ConnMultiaddrs) bool {
	if !g.allowed(p) {
		g.refuse("secured "+dir.String(), p, addrs.RemoteMultiaddr())
		return false
	}
	return true
}

func (g *memberGater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	if !g.allowed(c.RemotePeer()) {
		g.refuse("upgraded", c.RemotePeer(), c.RemoteMultiaddr())
		return false, 0
	}
	return true, 0
}
