package chain

import (
	"bytes"
	"math/big"
	"testing"
)

// FuzzPayloadJSON feeds arbitrary envelopes to the canonical decoder. Run
// it with: go test -run '^$' -fuzz FuzzPayloadJSON ./chain/
func FuzzPayloadJSON(f *testing.F) {
	for _, c := range unsignedTxs(f) {
		p, err := ParseTransaction(chain1, mustBinary(f, c.tx))
		if err != nil {
			f.Fatal(err)
		}
		b, _ := p.MarshalJSON()
		f.Add(b)
	}
	for _, p := range []func() (*Payload, error){
		func() (*Payload, error) { return ParseTypedData(chain1, []byte(permitJSON)) },
		func() (*Payload, error) { return ParsePersonalMessage(chain1, []byte("hello")) },
	} {
		pl, err := p()
		if err != nil {
			f.Fatal(err)
		}
		b, _ := pl.MarshalJSON()
		f.Add(b)
	}
	f.Add([]byte(`{"kind":"transaction","chain_id":"1","data":"0x02c0"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePayloadJSON(b)
		if err != nil {
			return
		}
		// Accepted means canonical: it re-encodes to exactly b, and
		// re-parses to the same digest.
		again, err := p.MarshalJSON()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted %q re-encodes to %q (%v)", b, again, err)
		}
		back, err := ParsePayloadJSON(again)
		if err != nil || back.Digest() != p.Digest() || back.Describe() != p.Describe() {
			t.Fatalf("re-parse of %q: %v", b, err)
		}
	})
}

// FuzzParseTransaction feeds arbitrary bytes to the transaction decoder:
// whatever it accepts is exactly its input and hashes as go-ethereum does.
func FuzzParseTransaction(f *testing.F) {
	for _, c := range unsignedTxs(f) {
		f.Add(mustBinary(f, c.tx))
	}
	f.Add([]byte{0xc0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParseTransaction(chain1, raw)
		if err != nil {
			return
		}
		again, err := p.Transaction().MarshalBinary()
		if err != nil || !bytes.Equal(again, raw) || !bytes.Equal(p.Bytes(), raw) {
			t.Fatalf("accepted %x, holds %x", raw, again)
		}
		if p.Digest() != p.Signer().Hash(p.Transaction()) {
			t.Fatal("digest differs from the signer's hash")
		}
		if p.Tx().ChainID.Cmp(big.NewInt(1)) != 0 {
			t.Fatalf("view chain id %v", p.Tx().ChainID)
		}
	})
}
