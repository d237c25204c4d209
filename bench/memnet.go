package bench

import (
	"context"
	"errors"
	"sync"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

// memNet is the floor's transport: every member in this process, each
// message handed over as it is, senders known by construction. It has
// none of a network's costs and none of its checks, which is the point
// of a floor. (tss/tsstest has a fuller one, for tests only.)
type memNet struct {
	mu      sync.Mutex
	conns   map[memKey]*memConn       // guarded by mu: open sessions
	pending map[memKey][]tss.Incoming // guarded by mu: messages for sessions not open yet
}

type memKey struct {
	session ids.SessionID
	member  ids.MemberID
}

// memQueue bounds the messages waiting for one member in one session:
// a 2-of-3 signature exchanges a few dozen.
const memQueue = 1024

func newMemNet() *memNet {
	return &memNet{conns: map[memKey]*memConn{}, pending: map[memKey][]tss.Incoming{}}
}

func (n *memNet) endpoint(id ids.MemberID) tss.Transport { return memEndpoint{n: n, self: id} }

type memEndpoint struct {
	n    *memNet
	self ids.MemberID
}

func (e memEndpoint) Self() ids.MemberID { return e.self }

func (e memEndpoint) Open(_ context.Context, sid ids.SessionID, members []ids.MemberID) (tss.Conn, error) {
	c := &memConn{n: e.n, key: memKey{sid, e.self}, members: members, in: make(chan tss.Incoming, memQueue), done: make(chan struct{})}
	e.n.mu.Lock()
	defer e.n.mu.Unlock()
	if _, dup := e.n.conns[c.key]; dup {
		return nil, errors.New("bench: session open twice")
	}
	for _, m := range e.n.pending[c.key] {
		c.in <- m
	}
	delete(e.n.pending, c.key)
	e.n.conns[c.key] = c
	return c, nil
}

type memConn struct {
	n       *memNet
	key     memKey
	members []ids.MemberID
	in      chan tss.Incoming
	done    chan struct{} // never closed: this transport ends no session on its own
}

func (c *memConn) deliver(to ids.MemberID, broadcast bool, payload []byte) error {
	k := memKey{c.key.session, to}
	m := tss.Incoming{From: c.key.member, Broadcast: broadcast, Payload: payload}
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	if dst, ok := c.n.conns[k]; ok {
		select {
		case dst.in <- m:
			return nil
		default:
			return errors.New("bench: in-memory queue full")
		}
	}
	if len(c.n.pending[k]) >= memQueue {
		return errors.New("bench: in-memory queue full")
	}
	c.n.pending[k] = append(c.n.pending[k], m)
	return nil
}

func (c *memConn) Send(_ context.Context, to ids.MemberID, payload []byte) error {
	return c.deliver(to, false, payload)
}

func (c *memConn) Broadcast(_ context.Context, payload []byte) error {
	for _, m := range c.members {
		if m != c.key.member {
			if err := c.deliver(m, true, payload); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *memConn) Incoming() <-chan tss.Incoming { return c.in }
func (c *memConn) Done() <-chan struct{}         { return c.done }
func (c *memConn) Err() error                    { return nil }

func (c *memConn) Close(error) error {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	delete(c.n.conns, c.key)
	delete(c.n.pending, c.key)
	return nil
}
