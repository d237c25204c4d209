package chain

import (
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

// Errors of signature checks and assembly.
var (
	ErrSignatureLength  = errors.New("chain: signature is not 65 bytes")
	ErrRecoveryID       = errors.New("chain: signature recovery id is not 0 or 1")
	ErrHighS            = errors.New("chain: signature has a high S value")
	ErrInvalidSignature = errors.New("chain: invalid signature values")
	ErrWrongSigner      = errors.New("chain: signature recovers to another address")
	ErrNotTransaction   = errors.New("chain: payload is not a transaction")
)

var (
	secp256k1N     = crypto.S256().Params().N
	secp256k1HalfN = new(big.Int).Rsh(secp256k1N, 1)
)

// VerifySignature checks that sig, [R || S || V] with V the recovery id 0
// or 1 (as the tss engine produces it), is a signature over digest by
// want. A high S is refused (EIP-2: go-ethereum would refuse the
// transaction), and so is any R or S outside [1, n-1].
func VerifySignature(digest [32]byte, sig []byte, want common.Address) error {
	if len(sig) != 65 {
		return fmt.Errorf("%w: %d bytes", ErrSignatureLength, len(sig))
	}
	if sig[64] > 1 {
		return fmt.Errorf("%w: %d", ErrRecoveryID, sig[64])
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:64])
	if r.Sign() == 0 || s.Sign() == 0 || r.Cmp(secp256k1N) >= 0 || s.Cmp(secp256k1N) >= 0 {
		return fmt.Errorf("%w: R or S outside [1, n-1]", ErrInvalidSignature)
	}
	if s.Cmp(secp256k1HalfN) > 0 {
		return ErrHighS
	}
	pub, err := crypto.SigToPub(digest[:], sig)
	if err != nil {
		return fmt.Errorf("%w: recover: %v", ErrInvalidSignature, err)
	}
	if got := crypto.PubkeyToAddress(*pub); got != want {
		return fmt.Errorf("%w: %s, want %s", ErrWrongSigner, got.Hex(), want.Hex())
	}
	return nil
}

// Verify checks that sig is a signature over the payload's digest by want.
func (p *Payload) Verify(sig []byte, want common.Address) error {
	return VerifySignature(p.digest, sig, want)
}

// SignedTransaction assembles the signed transaction from a transaction
// payload and sig ([R || S || V], V in {0, 1}), after checking that sig is
// from's signature over the payload's digest. For a legacy transaction V
// becomes the EIP-155 value for the payload's chain.
func (p *Payload) SignedTransaction(sig []byte, from common.Address) (*types.Transaction, error) {
	if p.kind != KindTransaction {
		return nil, fmt.Errorf("%w: %s", ErrNotTransaction, p.kind)
	}
	if err := p.Verify(sig, from); err != nil {
		return nil, fmt.Errorf("assemble transaction: %w", err)
	}
	signer := p.Signer()
	signed, err := p.tx.WithSignature(signer, sig)
	if err != nil {
		return nil, fmt.Errorf("assemble transaction: %w", err)
	}
	// go-ethereum's own view of the result must agree with ours.
	got, err := types.Sender(signer, signed)
	if err != nil {
		return nil, fmt.Errorf("assemble transaction: sender: %w", err)
	}
	if got != from {
		return nil, fmt.Errorf("assemble transaction: %w: %s, want %s", ErrWrongSigner, got.Hex(), from.Hex())
	}
	return signed, nil
}

// EthSignature returns sig, after checking it is from's signature over
// the payload, in the form personal_sign and eth_signTypedData_v4 return:
// [R || S || V] with V = 27 + recovery id.
func (p *Payload) EthSignature(sig []byte, from common.Address) ([]byte, error) {
	if err := p.Verify(sig, from); err != nil {
		return nil, fmt.Errorf("signature for %s: %w", p.kind, err)
	}
	out := append([]byte(nil), sig...)
	out[64] += 27
	return out, nil
}
