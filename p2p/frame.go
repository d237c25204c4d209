package p2p

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/custos-wallet/custos/ids"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// FrameVersion is the version of the frame encoding this package writes and
// accepts.
const FrameVersion = 1

// Kind says how a frame is routed.
type Kind uint8

// The kinds of frame.
const (
	KindDirect    Kind = 1 // to one member (To is set)
	KindBroadcast Kind = 2 // the same frame to every other member
	KindEcho      Kind = 3 // a receiver's copy of a broadcast header, for cross-checking
)

func (k Kind) String() string {
	switch k {
	case KindDirect:
		return "direct"
	case KindBroadcast:
		return "broadcast"
	case KindEcho:
		return "echo"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Field limits of the encoding. A peer id of an Ed25519 key is 38 bytes; the
// limit leaves room for other key types without letting a frame claim more.
const (
	maxIDLen  = 64
	maxSigLen = 128
	// hashOnly marks a frame whose payload was replaced by its SHA-256: the
	// form carried inside echoes and evidence.
	flagHashOnly = 0x01
)

// Errors of frame decoding and verification.
var (
	ErrMalformedFrame = errors.New("p2p: malformed frame")
	ErrBadSignature   = errors.New("p2p: bad frame signature")
)

// Frame is one signed message on the wire.
//
// Encoding (version 1), all integers big-endian or unsigned varints:
//
//	version   1 byte  (FrameVersion)
//	flags     1 byte  (bit 0: payload replaced by its hash)
//	kind      1 byte
//	session   16 bytes
//	seq       8 bytes
//	from      uvarint length, peer id bytes
//	to        uvarint length, peer id bytes (empty unless kind is direct)
//	payload   uvarint length, bytes; or 32 bytes of SHA-256 when hash-only
//	signature uvarint length, bytes
//
// The signature is the sender's node key over the domain string
// "custos/p2p/frame/v1", then every field above except flags, with the
// payload replaced by its SHA-256. Signing the hash lets an echo or a piece of
// evidence carry a verifiable frame without its payload.
//
// Seq numbers frames per sender, session and kind; broadcasts are numbered
// 1, 2, 3... so that every member names the k-th broadcast of a sender alike.
type Frame struct {
	Kind        Kind
	Session     ids.SessionID
	Seq         uint64
	From        peer.ID
	To          peer.ID // set for KindDirect only
	Payload     []byte  // nil in a hash-only frame
	PayloadHash [32]byte
	HashOnly    bool
	Sig         []byte
}

const sigDomain = "custos/p2p/frame/v1"

// signedBytes is what the sender signs.
func (f *Frame) signedBytes() []byte {
	var b bytes.Buffer
	b.Grow(len(sigDomain) + 1 + 1 + 16 + 8 + 2*(maxIDLen+1) + 32)
	b.WriteString(sigDomain)
	b.WriteByte(FrameVersion)
	b.WriteByte(byte(f.Kind))
	b.Write(f.Session[:])
	b.Write(binary.BigEndian.AppendUint64(nil, f.Seq))
	writeBytes(&b, []byte(f.From))
	writeBytes(&b, []byte(f.To))
	b.Write(f.PayloadHash[:])
	return b.Bytes()
}

func writeBytes(b *bytes.Buffer, p []byte) {
	b.Write(binary.AppendUvarint(nil, uint64(len(p))))
	b.Write(p)
}

// Sign sets PayloadHash from Payload and signs the frame with key.
func (f *Frame) Sign(key crypto.PrivKey) error {
	if !f.HashOnly {
		f.PayloadHash = sha256.Sum256(f.Payload)
	}
	sig, err := key.Sign(f.signedBytes())
	if err != nil {
		return fmt.Errorf("p2p: sign frame: %w", err)
	}
	f.Sig = sig
	return nil
}

// Verify checks that the frame is signed by the key of f.From. It does not
// check who delivered it: the caller compares f.From with the remote peer.
func (f *Frame) Verify() error {
	pub, err := f.From.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: sender %s has no inline public key: %v", ErrBadSignature, f.From, err)
	}
	ok, err := pub.Verify(f.signedBytes(), f.Sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: from %s", ErrBadSignature, f.From)
	}
	return nil
}

// HeaderOnly returns a copy of f with the payload replaced by its hash: the
// form an echo carries. It still verifies.
// The signature is copied, so the result never pins the buffer f was
// decoded from.
func (f *Frame) HeaderOnly() *Frame {
	g := *f
	g.Payload = nil
	g.HashOnly = true
	g.Sig = bytes.Clone(f.Sig)
	return &g
}

// Encode returns the wire form of f (without the stream's length prefix).
func (f *Frame) Encode() []byte {
	var b bytes.Buffer
	b.Grow(3 + 16 + 8 + 3*(maxIDLen+1) + len(f.Payload) + 32 + maxSigLen)
	b.WriteByte(FrameVersion)
	var flags byte
	if f.HashOnly {
		flags |= flagHashOnly
	}
	b.WriteByte(flags)
	b.WriteByte(byte(f.Kind))
	b.Write(f.Session[:])
	b.Write(binary.BigEndian.AppendUint64(nil, f.Seq))
	writeBytes(&b, []byte(f.From))
	writeBytes(&b, []byte(f.To))
	if f.HashOnly {
		writeBytes(&b, f.PayloadHash[:])
	} else {
		writeBytes(&b, f.Payload)
	}
	writeBytes(&b, f.Sig)
	return b.Bytes()
}

// DecodeFrame parses the wire form of a frame. It checks the structure only:
// call Verify for the signature. The payload aliases b; the signature and
// ids are copies, so a header kept after the payload is gone does not pin b.
func DecodeFrame(b []byte) (*Frame, error) {
	d := decoder{b: b}
	f := &Frame{}
	if v := d.byte(); v != FrameVersion {
		if d.err != nil {
			return nil, d.err
		}
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformedFrame, v, FrameVersion)
	}
	flags := d.byte()
	f.Kind = Kind(d.byte())
	copy(f.Session[:], d.next(16))
	if s := d.next(8); s != nil {
		f.Seq = binary.BigEndian.Uint64(s)
	}
	f.From = peer.ID(d.field(maxIDLen))
	f.To = peer.ID(d.field(maxIDLen))
	body := d.field(len(b))
	f.Sig = bytes.Clone(d.field(maxSigLen))
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformedFrame, len(d.b))
	}
	switch {
	case flags&^flagHashOnly != 0:
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrMalformedFrame, flags)
	case f.Kind != KindDirect && f.Kind != KindBroadcast && f.Kind != KindEcho:
		return nil, fmt.Errorf("%w: unknown kind %d", ErrMalformedFrame, f.Kind)
	case f.Seq == 0:
		return nil, fmt.Errorf("%w: sequence number 0", ErrMalformedFrame)
	case len(f.From) == 0:
		return nil, fmt.Errorf("%w: no sender", ErrMalformedFrame)
	case (f.Kind == KindDirect) != (len(f.To) > 0):
		return nil, fmt.Errorf("%w: recipient does not match kind %s", ErrMalformedFrame, f.Kind)
	case len(f.Sig) == 0:
		return nil, fmt.Errorf("%w: no signature", ErrMalformedFrame)
	}
	if flags&flagHashOnly != 0 {
		if len(body) != 32 {
			return nil, fmt.Errorf("%w: hash-only body of %d bytes", ErrMalformedFrame, len(body))
		}
		f.HashOnly = true
		copy(f.PayloadHash[:], body)
	} else {
		f.Payload = body
		f.PayloadHash = sha256.Sum256(body)
	}
	return f, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) next(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("%w: truncated", ErrMalformedFrame)
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) byte() byte {
	p := d.next(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *decoder) field(limit int) []byte {
	if d.err != nil {
		return nil
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.err = fmt.Errorf("%w: bad length", ErrMalformedFrame)
		return nil
	}
	// One encoding per value: a padded uvarint (0xa6 0x00 for 0x26) would
	// give the same frame a second wire form.
	if k != uvarintLen(n) {
		d.err = fmt.Errorf("%w: non-minimal length encoding", ErrMalformedFrame)
		return nil
	}
	if n > uint64(limit) {
		d.err = fmt.Errorf("%w: field of %d bytes exceeds %d", ErrMalformedFrame, n, limit)
		return nil
	}
	d.b = d.b[k:]
	return d.next(int(n))
}

func uvarintLen(n uint64) int {
	k := 1
	for n >= 0x80 {
		n >>= 7
		k++
	}
	return k
}

// Describe renders the frame for logs and test output, without the payload:
// "broadcast sess:.. #3 12D3..abcd -> all, 1234 bytes, payload 9f86d081".
func (f *Frame) Describe() string {
	to := "all"
	if f.Kind == KindDirect {
		to = shortID(f.To)
	}
	size := fmt.Sprintf("%d bytes", len(f.Payload))
	if f.HashOnly {
		size = "hash only"
	}
	return fmt.Sprintf("%s %s #%d %s -> %s, %s, payload %s", f.Kind, f.Session, f.Seq, shortID(f.From), to, size, hex.EncodeToString(f.PayloadHash[:4]))
}

func shortID(p peer.ID) string {
	s := p.String()
	if len(s) > 12 {
		return s[:6] + ".." + s[len(s)-4:]
	}
	return s
}
