package p2p

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/custos-wallet/custos/ids"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func testKey(tb testing.TB) (crypto.PrivKey, peer.ID) {
	tb.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return k, id
}

func sampleFrames(tb testing.TB) []*Frame {
	ka, a := testKey(tb)
	_, b := testKey(tb)
	sid := ids.SessionID{1, 2, 3}
	fs := []*Frame{
		{Kind: KindDirect, Session: sid, Seq: 1, From: a, To: b, Payload: []byte("hello")},
		{Kind: KindBroadcast, Session: sid, Seq: 7, From: a, Payload: []byte("round 1")},
		{Kind: KindBroadcast, Session: sid, Seq: 2, From: a, Payload: nil},
	}
	for _, f := range fs {
		if err := f.Sign(ka); err != nil {
			tb.Fatal(err)
		}
	}
	echo := &Frame{Kind: KindEcho, Session: sid, Seq: 1, From: a, Payload: fs[1].HeaderOnly().Encode()}
	if err := echo.Sign(ka); err != nil {
		tb.Fatal(err)
	}
	return append(fs, echo, fs[1].HeaderOnly())
}

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range sampleFrames(t) {
		raw := f.Encode()
		g, err := DecodeFrame(raw)
		if err != nil {
			t.Fatalf("%s: %v", f.Describe(), err)
		}
		if err := g.Verify(); err != nil {
			t.Fatalf("%s: %v", f.Describe(), err)
		}
		if !bytes.Equal(g.Encode(), raw) || g.PayloadHash != f.PayloadHash {
			t.Fatalf("%s: re-encoding differs", f.Describe())
		}
	}
}

func TestFrameTamperingFailsVerification(t *testing.T) {
	f := sampleFrames(t)[0]
	_, other := testKey(t)
	for name, mutate := range map[string]func(g *Frame){
		"payload": func(g *Frame) { g.Payload = []byte("hellO") },
		"session": func(g *Frame) { g.Session[0] ^= 1 },
		"seq":     func(g *Frame) { g.Seq++ },
		"to":      func(g *Frame) { g.To = other },
		"from":    func(g *Frame) { g.From = other },
		"kind":    func(g *Frame) { g.Kind = KindBroadcast; g.To = "" },
	} {
		g, err := DecodeFrame(f.Encode())
		if err != nil {
			t.Fatal(err)
		}
		mutate(g)
		g, err = DecodeFrame(g.Encode()) // recomputes the payload hash
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := g.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: tampered frame verified: %v", name, err)
		}
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	good := sampleFrames(t)[0].Encode()
	cases := map[string][]byte{
		"empty":         nil,
		"version":       append([]byte{2}, good[1:]...),
		"flags":         append([]byte{1, 0x80}, good[2:]...),
		"kind":          append([]byte{1, 0, 9}, good[3:]...),
		"truncated":     good[:len(good)-1],
		"trailing":      append(append([]byte{}, good...), 0),
		"huge length":   append(append([]byte{}, good[:27]...), 0xff, 0xff, 0xff, 0xff, 0x0f),
		"padded length": paddedLength(t, good),
	}
	for name, b := range cases {
		if _, err := DecodeFrame(b); !errors.Is(err, ErrMalformedFrame) {
			t.Errorf("%s: got %v, want ErrMalformedFrame", name, err)
		}
	}
}

// paddedLength re-encodes the sender's length (offset 27, 38 for an
// Ed25519 peer id) as the two-byte uvarint 0xa6 0x00.
func paddedLength(tb testing.TB, good []byte) []byte {
	if good[27] != 0x26 {
		tb.Fatalf("sender length byte is %#x, want 0x26", good[27])
	}
	return append(append(append([]byte{}, good[:27]...), 0xa6, 0x00), good[28:]...)
}

// A kept header must not pin the buffer it was decoded from.
func TestDecodedHeaderDoesNotAliasBuffer(t *testing.T) {
	raw := sampleFrames(t)[1].Encode()
	f, err := DecodeFrame(raw)
	if err != nil {
		t.Fatal(err)
	}
	h := f.HeaderOnly()
	sig := bytes.Clone(h.Sig)
	for i := range raw {
		raw[i] ^= 0xff
	}
	if !bytes.Equal(f.Sig, sig) || !bytes.Equal(h.Sig, sig) {
		t.Fatal("signature aliases the wire buffer")
	}
	if err := h.Verify(); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeFrame: decoding never panics, and whatever decodes re-encodes to
// the same bytes (one encoding per frame, so a signature covers one frame).
func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range sampleFrames(f) {
		raw := fr.Encode()
		f.Add(raw)
		f.Add(raw[:len(raw)/2])
	}
	f.Add(paddedLength(f, sampleFrames(f)[0].Encode()))
	f.Add([]byte{1, 0, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedFrame) {
				t.Fatalf("error %v is not ErrMalformedFrame", err)
			}
			return
		}
		if !bytes.Equal(fr.Encode(), b) {
			t.Fatalf("re-encoding differs")
		}
		_ = fr.Verify()
		_ = fr.Describe()
	})
}
