package tss

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/custos-wallet/custos/ids"
)

// tag says which committee a party belongs to within a session: keygen and
// signing have one committee (tagMain); a reshare has an old and a new one,
// and a member of both runs two parties.
type tag uint8

const (
	tagMain tag = 1
	tagOld  tag = 2
	tagNew  tag = 3
)

func (t tag) String() string {
	switch t {
	case tagMain:
		return "main"
	case tagOld:
		return "old"
	case tagNew:
		return "new"
	}
	return fmt.Sprintf("tag(%d)", uint8(t))
}

// toMask is the set of committees a message is for: one bit per tag.
type toMask uint8

func maskOf(tags ...tag) toMask {
	var m toMask
	for _, t := range tags {
		m |= 1 << t
	}
	return m
}

func (m toMask) has(t tag) bool { return m&(1<<t) != 0 }

// envelope is the engine's message as it travels in a transport payload:
// the tss-lib wire bytes bound to a session, with the sender's committee and
// the recipients' committees. The sender's identity is not in it: the
// transport supplies it.
type envelope struct {
	Session ids.SessionID
	// Params is the hash of the request every member was asked to run
	// (protocol, key, committee, signers, digest...). Members given
	// different requests by a faulty coordinator find out at the first
	// message, before any secret-dependent round.
	Params    [32]byte
	From      tag
	To        toMask
	Broadcast bool
	// Notice marks a stall notice (the members the sender waits for, see
	// Session.Tick) in place of tss-lib wire bytes; always broadcast.
	Notice bool
	Wire   []byte
}

const (
	flagBroadcast = 1 << 0
	flagNotice    = 1 << 1
)

const (
	envelopeMagic   = "CTS1"
	envelopeHeader  = len(envelopeMagic) + len(ids.SessionID{}) + 32 + 3 + 4
	maxEnvelopeWire = 1 << 20 // the largest tss-lib message is well under this
)

var errEnvelope = errors.New("tss: malformed message")

func (e envelope) encode() []byte {
	b := make([]byte, 0, envelopeHeader+len(e.Wire))
	b = append(b, envelopeMagic...)
	b = append(b, e.Session[:]...)
	b = append(b, e.Params[:]...)
	var flags byte
	if e.Broadcast {
		flags |= flagBroadcast
	}
	if e.Notice {
		flags |= flagNotice
	}
	b = append(b, byte(e.From), byte(e.To), flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Wire)))
	return append(b, e.Wire...)
}

func decodeEnvelope(b []byte) (envelope, error) {
	var e envelope
	if len(b) < envelopeHeader {
		return e, fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", errEnvelope, len(b), envelopeHeader)
	}
	if string(b[:4]) != envelopeMagic {
		return e, fmt.Errorf("%w: unknown magic %q", errEnvelope, b[:4])
	}
	b = b[4:]
	copy(e.Session[:], b)
	b = b[len(e.Session):]
	copy(e.Params[:], b)
	b = b[len(e.Params):]
	e.From, e.To = tag(b[0]), toMask(b[1])
	switch b[2] {
	case 0:
	case flagBroadcast:
		e.Broadcast = true
	case flagBroadcast | flagNotice:
		e.Broadcast, e.Notice = true, true
	default:
		return e, fmt.Errorf("%w: unknown flags %#x", errEnvelope, b[2])
	}
	n := binary.BigEndian.Uint32(b[3:])
	b = b[7:]
	if n > maxEnvelopeWire || int(n) != len(b) {
		return e, fmt.Errorf("%w: body of %d bytes declared as %d", errEnvelope, len(b), n)
	}
	if e.From < tagMain || e.From > tagNew {
		return e, fmt.Errorf("%w: unknown sender committee %d", errEnvelope, e.From)
	}
	e.Wire = b
	return e, nil
}
