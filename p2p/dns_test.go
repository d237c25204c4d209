package p2p

import (
	"context"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	ma "github.com/multiformats/go-multiaddr"
)

// TestDialByDNSName: a member's address may name its host
// (/dns4/<service>/tcp/N, as in a compose network); the node resolves it
// when it dials.
func TestDialByDNSName(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, b := c.nodes[0], c.nodes[1]
	port, err := b.ListenAddrs()[0].ValueForProtocol(ma.P_TCP)
	if err != nil {
		t.Fatal(err)
	}
	// a knows b by name only, and b cannot dial a at all: the one way to
	// a connection is a resolving b's name.
	if err := a.SetAddrs(b.ID(), []ma.Multiaddr{mustAddr(t, "/dns4/localhost/tcp/"+port)}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetAddrs(a.ID(), nil); err != nil {
		t.Fatal(err)
	}
	a.Host().Network().ClosePeer(b.ID())
	conns := openAll(t, c, ids.NewSessionID())
	if err := conns[0].Send(context.Background(), b.Self(), []byte("by name")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[1], 10*time.Second); string(m.Payload) != "by name" {
		t.Fatalf("got %+v", m)
	}
	for _, cn := range a.Host().Network().ConnsToPeer(b.ID()) {
		if _, err := cn.RemoteMultiaddr().ValueForProtocol(ma.P_IP4); err != nil {
			t.Fatalf("connection to b over %s", cn.RemoteMultiaddr())
		}
	}
}
