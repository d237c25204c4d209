package policy

import (
	"fmt"
	"math/big"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

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
// grant, and when.
type Request struct {
	ID      ids.RequestID
	Agent   ids.AgentID
	Key     common.Address
	ChainID *big.Int
	Kind    Kind
	// Payload is what the node will sign, as it decoded it: the exact
	// bytes, their decoded form and the digest. A node always sets it
	// (NewRequest), and then the engine evaluates the Payload's own decoded
	// form, whatever Kind, ChainID, Tx, Typed and Message say: the policy
	// judges the very object whose hash is signed. Without a Payload the
	// engine evaluates those fields as given (dry runs of a described
	// request, tests), after the same checks.
	Payload *chain.Payload
	// Tx is set for KindTransaction.
	Tx *chain.Tx
	// Typed is set for KindTypedData.
	Typed *chain.Typed
	// Message is set for KindPersonalMessage.
	Message []byte
	// Digest is set for KindRawDigest.
	Digest common.Hash
	// Grant is an optional grant the agent presents.
	Grant *SignedGrant
	// Time is the evaluation time; the engine never reads a clock. It must
	// be the evaluating node's own clock, never a time the agent or the
	// coordinator supplies: budgets, grants and the breaker are judged at
	// this time.
	Time time.Time
}

// NewRequest is the request a node evaluates for payload p, which it parsed
// itself from the bytes the agent signed.
func NewRequest(id ids.RequestID, agent ids.AgentID, key common.Address, p *chain.Payload, grant *SignedGrant, now time.Time) *Request {
	r := &Request{ID: id, Agent: agent, Key: key, Payload: p, Grant: grant, Time: now}
	r.fillFromPayload()
	return r
}

// fillFromPayload sets the decoded views from the Payload.
func (r *Request) fillFromPayload() {
	p := r.Payload
	r.ChainID, r.Tx, r.Typed, r.Message, r.Digest = p.ChainID(), nil, nil, nil, common.Hash{}
	switch p.Kind() {
	case chain.KindTransaction:
		r.Kind, r.Tx = KindTransaction, p.Tx()
	case chain.KindTypedData:
		r.Kind, r.Typed = KindTypedData, p.Typed()
	case chain.KindPersonalMessage:
		r.Kind, r.Message = KindPersonalMessage, p.Message()
	default:
		r.Kind = 0 // refused by check
	}
}

// evaluated returns the request the engine evaluates: a copy whose decoded
// views come from its Payload, when it has one, so that no caller can
// have one object evaluated and another signed.
func (r *Request) evaluated() *Request {
	if r == nil || r.Payload == nil {
		return r
	}
	c := *r
	c.fillFromPayload()
	return &c
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

// check rejects requests whose parts disagree, or hold values no decoder
// produces (negative amounts, missing fee caps, spends that the calldata
// does not say), before anything reads them: a hand-built request must not
// get further than a decoded one would.
func (r *Request) check() error {
	if r == nil {
		return fmt.Errorf("no request")
	}
	if r.ChainID == nil || r.ChainID.Sign() <= 0 {
		return fmt.Errorf("request has no chain id")
	}
	if r.Time.IsZero() {
		return fmt.Errorf("request has no evaluation time")
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
		if err := checkTx(r.Tx); err != nil {
			return err
		}
	case KindTypedData:
		if r.Typed == nil {
			return fmt.Errorf("typed-data request without decoded typed data")
		}
		if r.Typed.ChainID != nil && r.Typed.ChainID.Cmp(r.ChainID) != 0 {
			return fmt.Errorf("typed data domain chain id %s differs from request chain id %s", r.Typed.ChainID, r.ChainID)
		}
		if err := checkSpends(r.Typed.Spends, false); err != nil {
			return fmt.Errorf("typed data: %w", err)
		}
	case KindPersonalMessage, KindRawDigest:
	default:
		return fmt.Errorf("unknown payload kind %d", r.Kind)
	}
	if g := r.Grant; g != nil {
		for _, v := range []*big.Int{g.Grant.ValuePerTx, g.Grant.ValueTotal, g.Grant.AmountPerTx, g.Grant.AmountTotal, g.Grant.ChainID} {
			if v != nil && v.Sign() < 0 {
				return fmt.Errorf("grant %s has a negative amount or chain id", g.Grant.ID)
			}
		}
	}
	return nil
}

func checkTx(tx *chain.Tx) error {
	for _, f := range []struct {
		name string
		v    *big.Int
		need bool
	}{
		{"value", tx.Value, false},
		{"max fee per gas", tx.GasFeeCap, true},
		{"priority fee per gas", tx.GasTipCap, tx.Type == types.DynamicFeeTxType || tx.Type == types.SetCodeTxType},
	} {
		if f.v == nil && f.need {
			return fmt.Errorf("transaction without a %s", f.name)
		}
		if f.v != nil && f.v.Sign() < 0 {
			return fmt.Errorf("transaction with a negative %s %s", f.name, f.v)
		}
	}
	if (tx.Call != nil) != (len(tx.Data) > 0) {
		return fmt.Errorf("transaction calldata and its decoded call disagree")
	}
	// The spends must be exactly what the value and the calldata say, so
	// that no recipient or amount condition looks at an edited list.
	var want []chain.Spend
	if v := tx.Value; v != nil && v.Sign() > 0 {
		s := chain.Spend{Kind: chain.SpendNative, Amount: v}
		if tx.To != nil {
			s.To = *tx.To
		}
		want = append(want, s)
	}
	if tx.Call != nil {
		var sel [4]byte
		copy(sel[:], tx.Data)
		if tx.Call.Selector != sel {
			return fmt.Errorf("transaction selector 0x%x is not its calldata's 0x%x", tx.Call.Selector, sel)
		}
		if tx.To != nil {
			call, spends, err := chain.DecodeCalldata(*tx.To, tx.Data)
			if err != nil {
				return fmt.Errorf("transaction calldata: %w", err)
			}
			if call.Method != tx.Call.Method || len(call.Args) != len(tx.Call.Args) {
				return fmt.Errorf("transaction's decoded call is not its calldata's")
			}
			for i, a := range call.Args {
				b := tx.Call.Args[i]
				if a.Name != b.Name || a.Addr != b.Addr || !sameInt(a.Int, b.Int) {
					return fmt.Errorf("transaction's decoded call is not its calldata's")
				}
			}
			want = append(want, spends...)
		}
	}
	if err := checkSpends(tx.Spends, true); err != nil {
		return fmt.Errorf("transaction: %w", err)
	}
	if len(want) != len(tx.Spends) {
		return fmt.Errorf("transaction spends are not what its value and calldata say")
	}
	for i, w := range want {
		s := tx.Spends[i]
		if s.Kind != w.Kind || s.Token != w.Token || s.From != w.From || s.To != w.To || s.Amount.Cmp(w.Amount) != 0 || s.Unlimited != w.Unlimited {
			return fmt.Errorf("transaction spends are not what its value and calldata say")
		}
	}
	return nil
}

// checkSpends refuses spends no decoder produces: a missing or negative
// amount, an unknown kind, a token spend without a token.
func checkSpends(spends []chain.Spend, nativeOK bool) error {
	for i, s := range spends {
		switch {
		case s.Amount == nil:
			return fmt.Errorf("spend %d has no amount", i)
		case s.Amount.Sign() < 0:
			return fmt.Errorf("spend %d has a negative amount %s", i, s.Amount)
		case s.Kind < chain.SpendNative || s.Kind > chain.SpendTransferWithAuthorization:
			return fmt.Errorf("spend %d has unknown kind %d", i, s.Kind)
		case s.IsNative() && (!nativeOK || s.Token != (common.Address{})):
			return fmt.Errorf("spend %d: a native spend here", i)
		case !s.IsNative() && s.Token == (common.Address{}):
			return fmt.Errorf("spend %d: a %s without a token", i, s.Kind)
		}
	}
	return nil
}

func sameInt(a, b *big.Int) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Cmp(b) == 0
}
