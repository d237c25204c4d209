package p2p

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// sendHook receives every outbound session frame with the function that
// writes it. It runs on the peer's writer goroutine; write may also be
// called later from another goroutine.
type sendHook func(to peer.ID, f *Frame, write func(raw []byte) error) error

// tap puts a sendHook between a node and the session streams it opens: a
// faulty network for the frames a node writes (duplicated, delayed,
// altered, stalled, lost), which a test cannot make real peers produce on
// demand. It wraps the libp2p host (newNode), so the node itself carries
// no test hook.
type tap struct {
	hook atomic.Pointer[sendHook]
}

// set installs h; nil removes the hook.
func (t *tap) set(h sendHook) {
	if h == nil {
		t.hook.Store(nil)
		return
	}
	t.hook.Store(&h)
}

func (t *tap) wrap(h host.Host) host.Host { return &tapHost{Host: h, t: t} }

type tapHost struct {
	host.Host
	t *tap
}

func (h *tapHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	s, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil || len(pids) != 1 || pids[0] != ProtocolID {
		return s, err
	}
	return &tapStream{Stream: s, to: p, t: h.t}, nil
}

// tapStream hands each length-prefixed frame written on it to the hook.
type tapStream struct {
	network.Stream
	to peer.ID
	t  *tap
	mu sync.Mutex // serialises writes: the hook may write later, from elsewhere
}

func (s *tapStream) Write(b []byte) (int, error) {
	h := s.t.hook.Load()
	if h == nil || len(b) < 4 || int(binary.BigEndian.Uint32(b)) != len(b)-4 {
		return s.writeRaw(b)
	}
	f, err := DecodeFrame(b[4:])
	if err != nil {
		return s.writeRaw(b)
	}
	if err := (*h)(s.to, f, s.writeFrame); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (s *tapStream) writeFrame(raw []byte) error {
	// The node set the write deadline before the hook ran, which may have
	// held the frame back: give the write its own, as the node does.
	s.Stream.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := s.writeRaw(binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(raw)), uint32(len(raw))), raw)
	return err
}

func (s *tapStream) writeRaw(parts ...[]byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf []byte
	if len(parts) == 1 {
		buf = parts[0]
	} else {
		for _, p := range parts {
			buf = append(buf, p...)
		}
	}
	return s.Stream.Write(buf)
}
