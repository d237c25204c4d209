package policy

import (
	"errors"
	"testing"

	"github.com/ethereum/go-ethereum/common"
)

// TestSignatureCountCheckedFirst checks that too many signatures, or one
// of the wrong length, are refused before the document is parsed: the
// source here would not parse at all.
func TestSignatureCountCheckedFirst(t *testing.T) {
	src := []byte("version: [")
	many := make([][]byte, MaxSignatures+1)
	for i := range many {
		many[i] = make([]byte, 65)
	}
	for name, sigs := range map[string][][]byte{"too many": many, "short": {make([]byte, 64)}} {
		_, err := VerifyDocument(SignedDocument{Source: src, Signatures: sigs}, Genesis{Hash: common.Hash{1}})
		if !errors.Is(err, ErrBadSignature) {
			t.Errorf("verify, %s: %v", name, err)
		}
		e := NewEngine(testPolicy(t, "  - {id: r, when: {chain: 1, to: \"0x1111111111111111111111111111111111111111\"}, tier: hot}\n"), NewMemLedger())
		if err := e.ApplyDocument(SignedDocument{Source: src, Signatures: sigs}); !errors.Is(err, ErrBadSignature) {
			t.Errorf("apply, %s: %v", name, err)
		}
	}
}
