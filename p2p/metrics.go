package p2p

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
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
	DropQueueFull     DropReason = "queue_full"      // engine not reading
)

// Counters are a node's frame and connection counts. They are safe for
// concurrent use and are exported as Prometheus metrics when
// Config.Registerer is set.
type Counters struct {
	mu      sync.Mutex
	dropped map[DropReason]*atomic.Uint64

	Received  atomic.Uint64 // frames read and verified
	Sent      atomic.Uint64 // frames written
	Refused   atomic.Uint64 // connections refused by the gater
	Delivered atomic.Uint64 // messages handed to the engine
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
}

var (
	descDropped   = prometheus.NewDesc("custos_p2p_frames_dropped_total", "Frames dropped, by reason.", []string{"reason"}, nil)
	descReceived  = prometheus.NewDesc("custos_p2p_frames_received_total", "Frames read and verified.", nil, nil)
	descSent      = prometheus.NewDesc("custos_p2p_frames_sent_total", "Frames written.", nil, nil)
	descRefused   = prometheus.NewDesc("custos_p2p_connections_refused_total", "Connections refused because the peer is not a member.", nil, nil)
	descDelivered = prometheus.NewDesc("custos_p2p_messages_delivered_total", "Messages handed to the engine.", nil, nil)
)
