package chain

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Permit2Address is the canonical Permit2 deployment, the same on every chain.
var Permit2Address = common.HexToAddress("0x000000000022D473030F116dDEE9F6B43aC78BA3")

// ErrMalformedTypedData is returned when typed data claims to be a permit but
// its message does not have the permit's shape.
var ErrMalformedTypedData = errors.New("chain: malformed typed data")

// Typed is the decoded form of EIP-712 typed data: its domain, primary type,
// signing digest and what it spends.
type Typed struct {
	DomainName    string
	DomainVersion string
	// ChainID is nil when the domain has none.
	ChainID *big.Int
	// VerifyingContract is the zero address when the domain has none.
	VerifyingContract common.Address
	PrimaryType       string
	Digest            common.Hash
	// Decoded is set when the primary type is one whose effect this
	// package understands (permits, Permit2, EIP-3009); Spends is then
	// complete. Other typed data may move assets in ways nobody decoded.
	Decoded bool
	Spends  []Spend
}

// DecodeTypedDataJSON parses eth_signTypedData_v4 JSON.
func DecodeTypedDataJSON(raw []byte) (apitypes.TypedData, error) {
	var td apitypes.TypedData
	if err := json.Unmarshal(raw, &td); err != nil {
		return td, fmt.Errorf("chain: decode typed data: %w", err)
	}
	return td, nil
}

// DescribeTypedData computes the EIP-712 digest of td and decodes the spends
// of EIP-2612 permits (including the DAI variant), of Permit2 (PermitSingle,
// PermitBatch, PermitTransferFrom, PermitBatchTransferFrom and their witness
// forms) and of EIP-3009 (TransferWithAuthorization,
// ReceiveWithAuthorization; CancelAuthorization moves nothing). Other typed
// data is not decoded (Decoded is false): the policy decides on its domain
// and primary type, and must not assume it moves nothing.
func DescribeTypedData(td apitypes.TypedData) (*Typed, error) {
	digest, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		return nil, fmt.Errorf("chain: hash typed data: %w", err)
	}
	out := &Typed{
		DomainName:    td.Domain.Name,
		DomainVersion: td.Domain.Version,
		PrimaryType:   td.PrimaryType,
		Digest:        common.BytesToHash(digest),
	}
	if td.Domain.ChainId != nil {
		out.ChainID = new(big.Int).Set((*big.Int)(td.Domain.ChainId))
	}
	if td.Domain.VerifyingContract != "" {
		if !common.IsHexAddress(td.Domain.VerifyingContract) {
			return nil, fmt.Errorf("%w: verifying contract %q", ErrMalformedTypedData, td.Domain.VerifyingContract)
		}
		out.VerifyingContract = common.HexToAddress(td.Domain.VerifyingContract)
	}
	spends, decoded, err := typedSpends(td, out.VerifyingContract)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformedTypedData, td.PrimaryType, err)
	}
	out.Spends, out.Decoded = spends, decoded
	return out, nil
}

// typedSpends returns what td spends and whether its primary type is one
// this package decodes.
func typedSpends(td apitypes.TypedData, contract common.Address) ([]Spend, bool, error) {
	spends, err := typedSpendsOf(td, contract)
	if err != nil {
		return nil, false, err
	}
	return spends, spends != nil || isDecodedEmpty(td, contract), nil
}

// isDecodedEmpty reports typed data this package decodes as moving
// nothing: an EIP-3009 CancelAuthorization, with exactly its fields.
func isDecodedEmpty(td apitypes.TypedData, contract common.Address) bool {
	if td.Domain.Name == "Permit2" || contract == Permit2Address {
		return false
	}
	return td.PrimaryType == "CancelAuthorization" && hasFields(td, "CancelAuthorization", shapeCancelAuthorization)
}

// The exact EIP-712 struct shapes this package decodes. The primary type's
// name alone decides nothing: a contract may call any struct
// "CancelAuthorization" or "Permit" and give it any meaning, so typed data
// is decoded only when its types are exactly these (fields, order and
// types); otherwise it is not decoded.
var (
	shapeCancelAuthorization = []apitypes.Type{{Name: "authorizer", Type: "address"}, {Name: "nonce", Type: "bytes32"}}
	shapeEIP3009             = []apitypes.Type{{Name: "from", Type: "address"}, {Name: "to", Type: "address"}, {Name: "value", Type: "uint256"},
		{Name: "validAfter", Type: "uint256"}, {Name: "validBefore", Type: "uint256"}, {Name: "nonce", Type: "bytes32"}}
	shapePermit = []apitypes.Type{{Name: "owner", Type: "address"}, {Name: "spender", Type: "address"}, {Name: "value", Type: "uint256"},
		{Name: "nonce", Type: "uint256"}, {Name: "deadline", Type: "uint256"}}
	shapeDAIPermit = []apitypes.Type{{Name: "holder", Type: "address"}, {Name: "spender", Type: "address"}, {Name: "nonce", Type: "uint256"},
		{Name: "expiry", Type: "uint256"}, {Name: "allowed", Type: "bool"}}
	shapePermitDetails = []apitypes.Type{{Name: "token", Type: "address"}, {Name: "amount", Type: "uint160"},
		{Name: "expiration", Type: "uint48"}, {Name: "nonce", Type: "uint48"}}
	shapePermitSingle      = []apitypes.Type{{Name: "details", Type: "PermitDetails"}, {Name: "spender", Type: "address"}, {Name: "sigDeadline", Type: "uint256"}}
	shapePermitBatch       = []apitypes.Type{{Name: "details", Type: "PermitDetails[]"}, {Name: "spender", Type: "address"}, {Name: "sigDeadline", Type: "uint256"}}
	shapeTokenPermissions  = []apitypes.Type{{Name: "token", Type: "address"}, {Name: "amount", Type: "uint256"}}
	shapePermitTransfer    = []apitypes.Type{{Name: "permitted", Type: "TokenPermissions"}, {Name: "spender", Type: "address"}, {Name: "nonce", Type: "uint256"}, {Name: "deadline", Type: "uint256"}}
	shapePermitBatchTransf = []apitypes.Type{{Name: "permitted", Type: "TokenPermissions[]"}, {Name: "spender", Type: "address"}, {Name: "nonce", Type: "uint256"}, {Name: "deadline", Type: "uint256"}}
)

// hasFields reports whether td declares type name with exactly the fields
// want, in order.
func hasFields(td apitypes.TypedData, name string, want []apitypes.Type) bool {
	got, ok := td.Types[name]
	if !ok || len(got) != len(want) {
		return false
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].Type != want[i].Type {
			return false
		}
	}
	return true
}

// hasFieldsPlusOne reports whether td declares type name with exactly the
// fields want followed by one more (a Permit2 witness, of any type).
func hasFieldsPlusOne(td apitypes.TypedData, name string, want []apitypes.Type) bool {
	got, ok := td.Types[name]
	if !ok || len(got) != len(want)+1 {
		return false
	}
	trimmed := apitypes.TypedData{Types: apitypes.Types{name: got[:len(want)]}}
	return hasFields(trimmed, name, want)
}

// permit2TransferShape reports whether td's primary type is one of
// Permit2's signature-transfer types with exactly its fields.
func permit2TransferShape(td apitypes.TypedData) bool {
	if !hasFields(td, "TokenPermissions", shapeTokenPermissions) {
		return false
	}
	switch pt := td.PrimaryType; pt {
	case "PermitTransferFrom":
		return hasFields(td, pt, shapePermitTransfer)
	case "PermitBatchTransferFrom":
		return hasFields(td, pt, shapePermitBatchTransf)
	case "PermitWitnessTransferFrom":
		return hasFieldsPlusOne(td, pt, shapePermitTransfer)
	case "PermitBatchWitnessTransferFrom":
		return hasFieldsPlusOne(td, pt, shapePermitBatchTransf)
	}
	return false
}

func typedSpendsOf(td apitypes.TypedData, contract common.Address) ([]Spend, error) {
	m := td.Message
	if td.Domain.Name == "Permit2" || contract == Permit2Address {
		switch {
		case td.PrimaryType == "PermitSingle" && hasFields(td, "PermitSingle", shapePermitSingle) && hasFields(td, "PermitDetails", shapePermitDetails):
			d, ok := m["details"].(map[string]any)
			if !ok {
				return nil, errors.New("details is not a struct")
			}
			s, err := permit2Details(d, m["spender"])
			if err != nil {
				return nil, err
			}
			return []Spend{s}, nil
		case td.PrimaryType == "PermitBatch" && hasFields(td, "PermitBatch", shapePermitBatch) && hasFields(td, "PermitDetails", shapePermitDetails):
			ds, ok := m["details"].([]any)
			if !ok {
				return nil, errors.New("details is not a list")
			}
			var out []Spend
			for i, x := range ds {
				d, ok := x.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("details[%d] is not a struct", i)
				}
				s, err := permit2Details(d, m["spender"])
				if err != nil {
					return nil, fmt.Errorf("details[%d]: %w", i, err)
				}
				out = append(out, s)
			}
			return out, nil
		case permit2TransferShape(td):
			var perms []any
			switch p := m["permitted"].(type) {
			case map[string]any:
				perms = []any{p}
			case []any:
				perms = p
			default:
				return nil, errors.New("permitted is missing")
			}
			spender, err := toAddress(m["spender"])
			if err != nil {
				return nil, fmt.Errorf("spender: %w", err)
			}
			var out []Spend
			for i, x := range perms {
				p, ok := x.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("permitted[%d] is not a struct", i)
				}
				token, err := toAddress(p["token"])
				if err != nil {
					return nil, fmt.Errorf("permitted[%d].token: %w", i, err)
				}
				amt, err := toBig(p["amount"])
				if err != nil {
					return nil, fmt.Errorf("permitted[%d].amount: %w", i, err)
				}
				out = append(out, Spend{Kind: SpendPermit2Transfer, Token: token, To: spender, Amount: amt,
					Unlimited: amt.Cmp(MaxUint256) == 0})
			}
			return out, nil
		}
		return nil, nil
	}
	if (td.PrimaryType == "TransferWithAuthorization" || td.PrimaryType == "ReceiveWithAuthorization") && hasFields(td, td.PrimaryType, shapeEIP3009) {
		// EIP-3009: the signature itself moves value tokens from from to to.
		from, err := toAddress(m["from"])
		if err != nil {
			return nil, fmt.Errorf("from: %w", err)
		}
		to, err := toAddress(m["to"])
		if err != nil {
			return nil, fmt.Errorf("to: %w", err)
		}
		v, err := toBig(m["value"])
		if err != nil {
			return nil, fmt.Errorf("value: %w", err)
		}
		return []Spend{{Kind: SpendTransferWithAuthorization, Token: contract, From: from, To: to, Amount: v, Unlimited: v.Cmp(MaxUint256) == 0}}, nil
	}
	if td.PrimaryType != "Permit" || !(hasFields(td, "Permit", shapePermit) || hasFields(td, "Permit", shapeDAIPermit)) {
		return nil, nil
	}
	spender, err := toAddress(m["spender"])
	if err != nil {
		return nil, fmt.Errorf("spender: %w", err)
	}
	if hasFields(td, "Permit", shapeDAIPermit) { // DAI: permit(holder, spender, nonce, expiry, allowed)
		b, ok := m["allowed"].(bool)
		if !ok {
			return nil, errors.New("allowed is not a bool")
		}
		s := Spend{Kind: SpendPermit, Token: contract, To: spender, Amount: new(big.Int)}
		if b {
			s.Amount, s.Unlimited = new(big.Int).Set(MaxUint256), true
		}
		return []Spend{s}, nil
	}
	v, err := toBig(m["value"])
	if err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	return []Spend{{Kind: SpendPermit, Token: contract, To: spender, Amount: v, Unlimited: v.Cmp(MaxUint256) == 0}}, nil
}

func permit2Details(d map[string]any, spenderV any) (Spend, error) {
	token, err := toAddress(d["token"])
	if err != nil {
		return Spend{}, fmt.Errorf("token: %w", err)
	}
	amt, err := toBig(d["amount"])
	if err != nil {
		return Spend{}, fmt.Errorf("amount: %w", err)
	}
	spender, err := toAddress(spenderV)
	if err != nil {
		return Spend{}, fmt.Errorf("spender: %w", err)
	}
	return Spend{Kind: SpendPermit2, Token: token, To: spender, Amount: amt, Unlimited: amt.Cmp(MaxUint160) >= 0}, nil
}

func toAddress(v any) (common.Address, error) {
	switch a := v.(type) {
	case string:
		if common.IsHexAddress(a) {
			return common.HexToAddress(a), nil
		}
	case common.Address:
		return a, nil
	}
	return common.Address{}, fmt.Errorf("not an address: %v", v)
}

func toBig(v any) (*big.Int, error) {
	var b *big.Int
	switch x := v.(type) {
	case string:
		var h math.HexOrDecimal256
		if err := h.UnmarshalText([]byte(x)); err != nil {
			return nil, err
		}
		b = (*big.Int)(&h)
	case float64:
		if x != float64(int64(x)) {
			return nil, fmt.Errorf("not an integer: %v", x)
		}
		b = big.NewInt(int64(x))
	case json.Number:
		var ok bool
		if b, ok = new(big.Int).SetString(string(x), 10); !ok {
			return nil, fmt.Errorf("not an integer: %v", x)
		}
	case *big.Int:
		b = new(big.Int).Set(x)
	case *math.HexOrDecimal256:
		b = new(big.Int).Set((*big.Int)(x))
	case int:
		b = big.NewInt(int64(x))
	case int64:
		b = big.NewInt(x)
	case uint64:
		b = new(big.Int).SetUint64(x)
	default:
		return nil, fmt.Errorf("not an integer: %v", v)
	}
	if b.Sign() < 0 || b.BitLen() > 256 {
		return nil, fmt.Errorf("integer out of range: %v", b)
	}
	return b, nil
}
