package p2p

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// DropReason says why a frame was not delivered.
type DropReason string

// The reasons a frame is dropped.
const (
	DropOversized     DropReason = "oversized"      // length prefix above MaxFrameSize
	DropMalformed     DropReason = "malformed"      // does not decode
	DropBadSignature  DropReason = "bad_signature"  // signature does not verify
	DropSpoofedSender DropReason = "spoofed_sender" // names a sender other than the remote peer
	DropNotMember     DropReason = "not_member"     // sender not a member of the session
	DropWrongTo       DropReason = "wrong_recipient"
	DropDuplicate     DropReason = "duplicate"
	DropBadEcho       DropReason = "bad_echo"
	DropPendingFull   DropReason = "pending_full"    // pre-open buffer over a bound
	DropExpired       DropReason = "pending_expired" // pre-open buffer entry expired
	DropClosed        DropReason = "session_closed"  // session already ended here
	DropQueueFull     DropReason = "queue_full"      // engine not reading: the sender's share of the session queue is used up
	DropSeqLimit      DropReason = "seq_limit"       // sequence number above Config.SessionSlots
	DropBroadcastGap  DropReason = "broadcast_gap"   // broadcast too far ahead of the sender's next expected one
	DropOutQueueFull  DropReason = "out_queue_full"  // an echo not forwarded: the target peer's outbound queue is full, echo allowance included
	DropStale         DropReason = "stale_outbound"  // one of our queued frames not written: its session ended here over Config.WriteTimeout ago
)

// Counters are a node's frame and connection counts. They are safe for
// concurrent use and are exported as Prometheus metrics when
// Config.Registerer is set.
type Counters struct {
	mu      sync.Mutex
	dropped map[DropReason]*atomic.Uint64

	Received  atomic.Uint64 // frames read, verified and handled
	Sent      atomic.Uint64 // frames written
	Refused   atomic.Uint64 // connections refused by the gater
	Delivered atomic.Uint64 // messages handed to the engine
	Unsent    atomic.Uint64 // queued frames that could not be written (peer down, write failed)
}

func (c *Counters) drop(r DropReason) {
	c.counter(r).Add(1)
}

func (c *Counters) counter(r DropReason) *atomic.Uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped == nil {
		c.dropped = make(map[DropReason]*atomic.Uint64)
	}
	v := c.dropped[r]
	if v == nil {
		v = new(atomic.Uint64)
		c.dropped[r] = v
	}
	return v
}

// Dropped returns how many frames were dropped for reason r.
func (c *Counters) Dropped(r DropReason) uint64 { return c.counter(r).Load() }

// Describe implements prometheus.Collector.
func (c *Counters) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDropped
	ch <- descReceived
	ch <- descSent
	ch <- descRefused
	ch <- descDelivered
	ch <- descUnsent
}

// Collect implements prometheus.Collector.
func (c *Counters) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	for r, v := range c.dropped {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(v.Load()), string(r))
	}
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(c.Received.Load()))
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(c.Sent.Load()))
	ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(c.Refused.Load()))
	ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.CounterValue, float64(c.Delivered.Load()))
	ch <- prometheus.MustNewConstMetric(descUnsent, prometheus.CounterValue, float64(c.Unsent.Load()))
}

var (
	descDropped   = prometheus.NewDesc("custos_p2p_frames_dropped_total", "Frames dropped, by reason.", []string{"reason"}, nil)
	descReceived  = prometheus.NewDesc("custos_p2p_frames_received_total", "Frames read and verified.", nil, nil)
	descSent      = prometheus.NewDesc("custos_p2p_frames_sent_total", "Frames written.", nil, nil)
	descRefused   = prometheus.NewDesc("custos_p2p_connections_refused_total", "Connections refused because the peer is not a member.", nil, nil)
	descDelivered = prometheus.NewDesc("custos_p2p_messages_delivered_total", "Messages handed to the engine.", nil, nil)
	descUnsent    = prometheus.NewDesc("custos_p2p_frames_unsent_total", "Queued frames that could not be written.", nil, nil)
)

// logLimiter rate-limits repetitive log lines per peer and reason: one
// member must not be able to flood the log. Counters stay exact.
type logLimiter struct {
	mu sync.Mutex
	m  map[logKey]*rate.Limiter // bounded: peers times reasons (removed peers are forgotten)
}

// forget drops the limiters of p, a peer no longer allowed.
func (l *logLimiter) forget(p peer.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.m {
		if k.peer == p {
			delete(l.m, k)
		}
	}
}

type logKey struct {
	peer   peer.ID
	reason string
}

// allow reports whether a line for (p, reason) may be logged now: a burst
// of 3, then one every 10 s.
func (l *logLimiter) allow(p peer.ID, reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = make(map[logKey]*rate.Limiter)
	}
	k := logKey{p, reason}
	lim := l.m[k]
	if lim == nil {
		lim = rate.NewLimiter(rate.Every(10*time.Second), 3)
		l.m[k] = lim
	}
	return lim.Allow()
}
