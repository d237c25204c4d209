// Package tsstest holds what tests of the threshold engine and of the
// packages built on it share: an in-process network with a fault filter.
// Only tests import it; internal/purity checks that no production package
// does.
package tsstest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

// MemNetwork is an in-process tss.Transport for tests and benchmarks: every
// endpoint is a member, senders are authenticated by construction, and a
// filter can drop, duplicate, reorder or alter messages in flight. It keeps
// a record of every closed session, so it is not meant for long-lived use.
type MemNetwork struct {
	mu       sync.Mutex
	conns    map[connKey]*memConn          // guarded by mu; open sessions
	early    map[connKey][]MemMessage      // guarded by mu; before Open
	closed   map[connKey]bool              // guarded by mu
	filter   func(MemMessage) []MemMessage // guarded by mu
	sent     int                           // guarded by mu
	maxEarly int
}

type connKey struct {
	member  ids.MemberID
	session ids.SessionID
}

// MemMessage is one message in flight.
type MemMessage struct {
	Session   ids.SessionID
	From, To  ids.MemberID
	Broadcast bool
	Payload   []byte
}

// NewMemNetwork makes an empty in-process network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{
		conns:    map[connKey]*memConn{},
		early:    map[connKey][]MemMessage{},
		closed:   map[connKey]bool{},
		maxEarly: 1024,
	}
}

// Endpoint returns the transport of member id.
func (n *MemNetwork) Endpoint(id ids.MemberID) tss.Transport { return memEndpoint{n: n, self: id} }

// SetFilter installs f, which sees every message and returns what to
// deliver in its place (nil drops it). Tests use it to inject faults.
func (n *MemNetwork) SetFilter(f func(MemMessage) []MemMessage) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.filter = f
}

// Sent counts the messages handed to the network so far.
func (n *MemNetwork) Sent() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sent
}

// Inject delivers m as if its sender had sent it, bypassing the filter:
// tests use it to deliver late what a filter held back.
func (n *MemNetwork) Inject(m MemMessage) error { return n.push([]MemMessage{m}) }

func (n *MemNetwork) deliver(m MemMessage) error {
	n.mu.Lock()
	n.sent++
	f := n.filter
	n.mu.Unlock()
	msgs := []MemMessage{m}
	if f != nil {
		msgs = f(m)
	}
	return n.push(msgs)
}

func (n *MemNetwork) push(msgs []MemMessage) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range msgs {
		k := connKey{m.To, m.Session}
		if n.closed[k] {
			continue
		}
		if c, ok := n.conns[k]; ok {
			if !c.push(tss.Incoming{From: m.From, Broadcast: m.Broadcast, Payload: m.Payload}) {
				return fmt.Errorf("tsstest: memnet: %s's queue for %s is full", m.To, m.Session)
			}
			continue
		}
		if _, ok := n.early[k]; !ok && len(n.early) >= n.maxEarly {
			continue // too many sessions waiting to be opened
		}
		if len(n.early[k]) < n.maxEarly {
			n.early[k] = append(n.early[k], m)
		}
	}
	return nil
}

type memEndpoint struct {
	n    *MemNetwork
	self ids.MemberID
}

func (e memEndpoint) Self() ids.MemberID { return e.self }

func (e memEndpoint) Open(ctx context.Context, id ids.SessionID, members []ids.MemberID) (tss.Conn, error) {
	if !slices.Contains(members, e.self) {
		return nil, fmt.Errorf("tsstest: memnet: %s is not among the session's members", e.self)
	}
	n := e.n
	n.mu.Lock()
	defer n.mu.Unlock()
	k := connKey{e.self, id}
	if _, ok := n.conns[k]; ok || n.closed[k] {
		return nil, fmt.Errorf("tsstest: memnet: %s already opened %s", e.self, id)
	}
	c := &memConn{n: n, key: k, members: slices.Clone(members), in: make(chan tss.Incoming, 4096), done: make(chan struct{})}
	for _, m := range n.early[k] {
		c.push(tss.Incoming{From: m.From, Broadcast: m.Broadcast, Payload: m.Payload})
	}
	delete(n.early, k)
	n.conns[k] = c
	return c, nil
}

type memConn struct {
	n       *MemNetwork
	key     connKey
	members []ids.MemberID
	in      chan tss.Incoming
	done    chan struct{}
}

func (c *memConn) push(in tss.Incoming) bool {
	select {
	case c.in <- in:
		return true
	default:
		return false
	}
}

func (c *memConn) Send(ctx context.Context, to ids.MemberID, payload []byte) error {
	if !slices.Contains(c.members, to) {
		return fmt.Errorf("tsstest: memnet: %s is not a member of %s", to, c.key.session)
	}
	return c.n.deliver(MemMessage{Session: c.key.session, From: c.key.member, To: to, Payload: slices.Clone(payload)})
}

func (c *memConn) Broadcast(ctx context.Context, payload []byte) error {
	for _, to := range c.members {
		if to == c.key.member {
			continue
		}
		m := MemMessage{Session: c.key.session, From: c.key.member, To: to, Broadcast: true, Payload: slices.Clone(payload)}
		if err := c.n.deliver(m); err != nil {
			return err
		}
	}
	return nil
}

func (c *memConn) Incoming() <-chan tss.Incoming { return c.in }
func (c *memConn) Done() <-chan struct{}         { return c.done }
func (c *memConn) Err() error                    { return errors.New("tsstest: memnet: session closed") }

func (c *memConn) Close(cause error) error {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	delete(c.n.conns, c.key)
	c.n.closed[c.key] = true
	return nil
}
