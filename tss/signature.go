package tss

import (
	"bytes"
	"encoding/hex"
	"fmt"

	"github.com/ethereum/go-ethereum/crypto"
)

// Signature is an Ethereum signature [R || S || V] with V in {0, 1} and a
// low S, as go-ethereum's crypto.Ecrecover takes it.
type Signature [65]byte

// String returns 0x-prefixed hex.
func (s Signature) String() string { return "0x" + hex.EncodeToString(s[:]) }

// verifySignature checks that sig over digest recovers to pub.
func verifySignature(digest [32]byte, sig Signature, pub []byte) error {
	got, err := crypto.Ecrecover(digest[:], sig[:])
	if err != nil {
		return fmt.Errorf("tss: recover signature: %w", err)
	}
	if !bytes.Equal(got, pub) {
		return fmt.Errorf("tss: signature recovers to another key")
	}
	return nil
}
