package policy

import (
	"fmt"
	"math/big"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/ethereum/go-ethereum/common"
)

// RequestID identifies a signing request; budget reservations are keyed by it.
type RequestID string

// AgentID identifies an agent.
type AgentID string

// Kind is the kind of payload a request asks to sign.
type Kind uint8

// Payload kinds.
const (
	KindTransaction     Kind = iota + 1 // an Ethereum transaction
	KindTypedData                       // EIP-712 typed data (eth_signTypedData_v4)
	KindPersonalMessage                 // EIP-191 personal message (personal_sign)
	KindRawDigest                       // a bare 32-byte hash (eth_sign)
)

var kindNames = map[Kind]string{
	KindTransaction:     "transaction",
	KindTypedData:       "typed_data",
	KindPersonalMessage: "personal_message",
	KindRawDigest:       "raw_digest",
}

// String returns the kind's name as written in policy documents.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func parseKind(s string) (Kind, error) {
	for k, n := range kindNames {
		if n == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown kind %q", s)
}

// Request is what the engine evaluates: who asks, with which key, on which
// chain, to sign what (already decoded by package chain), under which
// session grant, and when.
type Request struct {
	ID      RequestID
	Agent   AgentID
	Key     common.Address
	ChainID *big.Int
	Kind    Kind
	// Tx is set for KindTransaction.
	Tx *chain.Tx
	// Typed is set for KindTypedData.
	Typed *chain.Typed
	// Message is set for KindPersonalMessage.
	Message []byte
	// Digest is set for KindRawDigest.
	Digest common.Hash
	// Grant is an optional session grant the agent presents.
	Grant *SignedGrant
	// Time is the evaluation time; the engine never reads a clock. It must
	// be the evaluating node's own clock, never a time the agent or the
	// coordinator supplies: budgets, grants and the breaker are judged at
	// this time.
	Time time.Time
}

// destination is the address the request acts on: the transaction's
// recipient or the typed data's verifying contract.
func (r *Request) destination() (common.Address, bool) {
	switch r.Kind {
	case KindTransaction:
		if r.Tx != nil && r.Tx.To != nil {
			return *r.Tx.To, true
		}
	case KindTypedData:
		if r.Typed != nil && r.Typed.VerifyingContract != (common.Address{}) {
			return r.Typed.VerifyingContract, true
		}
	}
	return common.Address{}, false
}

func (r *Request) spends() []chain.Spend {
	switch {
	case r.Kind == KindTransaction && r.Tx != nil:
		return r.Tx.Spends
	case r.Kind == KindTypedData && r.Typed != nil:
		return r.Typed.Spends
	}
	return nil
}

func (r *Request) nativeValue() *big.Int {
	if r.Kind == KindTransaction && r.Tx != nil && r.Tx.Value != nil {
		return r.Tx.Value
	}
	return new(big.Int)
}

// maxFeeCost is the most a transaction can pay in gas fees: its gas limit
// times its max fee per gas (the gas price for legacy and access-list
// transactions).
func (r *Request) maxFeeCost() *big.Int {
	if r.Kind != KindTransaction || r.Tx == nil || r.Tx.GasFeeCap == nil {
		return new(big.Int)
	}
	return new(big.Int).Mul(new(big.Int).SetUint64(r.Tx.Gas), r.Tx.GasFeeCap)
}

// check rejects requests whose parts disagree, before any rule is read.
func (r *Request) check() error {
	if r.ChainID == nil || r.ChainID.Sign() <= 0 {
		return fmt.Errorf("request has no chain id")
	}
	switch r.Kind {
	case KindTransaction:
		if r.Tx == nil {
			return fmt.Errorf("transaction request without a decoded transaction")
		}
		// An unsigned legacy transaction has no chain id of its own: it is
		// signed with EIP-155 under the request's chain id.
		if r.Tx.ChainID != nil && r.Tx.ChainID.Cmp(r.ChainID) != 0 {
			return fmt.Errorf("transaction chain id %s differs from request chain id %s", r.Tx.ChainID, r.ChainID)
		}
	case KindTypedData:
		if r.Typed == nil {
			return fmt.Errorf("typed-data request without decoded typed data")
		}
		if r.Typed.ChainID != nil && r.Typed.ChainID.Cmp(r.ChainID) != 0 {
			return fmt.Errorf("typed data domain chain id %s differs from request chain id %s", r.Typed.ChainID, r.ChainID)
		}
	case KindPersonalMessage, KindRawDigest:
	default:
		return fmt.Errorf("unknown payload kind %d", r.Kind)
	}
	return nil
}
