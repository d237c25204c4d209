package chain

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// SpendKind says how a payload moves or exposes an asset.
type SpendKind uint8

// The kinds of spending a payload can express.
const (
	SpendNative                    SpendKind = iota + 1 // ether sent as transaction value
	SpendTransfer                                       // ERC-20 transfer
	SpendTransferFrom                                   // ERC-20 transferFrom
	SpendApprove                                        // ERC-20 approve
	SpendIncreaseAllowance                              // ERC-20 increaseAllowance
	SpendPermit                                         // EIP-2612 permit signature
	SpendPermit2                                        // Permit2 allowance (PermitSingle, PermitBatch)
	SpendPermit2Transfer                                // Permit2 signature transfer (PermitTransferFrom and batch)
	SpendTransferWithAuthorization                      // EIP-3009 TransferWithAuthorization or ReceiveWithAuthorization
)

var spendKindNames = map[SpendKind]string{
	SpendNative:                    "native",
	SpendTransfer:                  "transfer",
	SpendTransferFrom:              "transferFrom",
	SpendApprove:                   "approve",
	SpendIncreaseAllowance:         "increaseAllowance",
	SpendPermit:                    "permit",
	SpendPermit2:                   "permit2",
	SpendPermit2Transfer:           "permit2-transfer",
	SpendTransferWithAuthorization: "transferWithAuthorization",
}

// String returns the kind's short name, as used in policy documents.
func (k SpendKind) String() string {
	if s, ok := spendKindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("spend(%d)", uint8(k))
}

// Spend is one movement (or grant of power over) an asset. For approvals and
// permits To is the spender, who may later take Amount of the token; policy
// treats that as spending the whole approved amount.
type Spend struct {
	Kind SpendKind
	// Token is the ERC-20 contract; the zero address with Kind SpendNative
	// means ether.
	Token common.Address
	// From is set for transferFrom: the account the tokens leave.
	From common.Address
	// To receives the asset, or the allowance. It is the zero address for
	// ether sent with a contract creation, whose recipient (the new
	// contract) the payload does not name.
	To common.Address
	// Amount in base units (wei, or the token's smallest unit).
	Amount *big.Int
	// Unlimited is set when the amount is the maximum of its type
	// (2^256-1, or 2^160-1 in Permit2): an "infinite" approval.
	Unlimited bool
}

// IsNative reports whether the spend moves ether rather than a token.
func (s Spend) IsNative() bool { return s.Kind == SpendNative }

// Describe renders a spend for logs and golden files.
func (s Spend) Describe() string {
	amt := s.Amount.String()
	if s.Unlimited {
		amt = "unlimited"
	}
	if s.IsNative() {
		return fmt.Sprintf("native %s wei to %s", amt, s.To.Hex())
	}
	return fmt.Sprintf("%s %s of token %s to %s", s.Kind, amt, s.Token.Hex(), s.To.Hex())
}

// Arg is one decoded argument of a known method. Addresses are in Addr,
// integers in Int.
type Arg struct {
	Name string
	Addr common.Address
	Int  *big.Int
}

// Call is the decoded calldata of a transaction.
type Call struct {
	Selector [4]byte
	// Method is the name of a known method ("transfer", "approve", ...), or
	// empty when the selector is not one this package decodes.
	Method string
	// Args holds the decoded arguments of a known method.
	Args []Arg
}

// Known reports whether the calldata was decoded as a known method.
func (c *Call) Known() bool { return c != nil && c.Method != "" }

// Arg returns the argument called name.
func (c *Call) Arg(name string) (Arg, bool) {
	for _, a := range c.Args {
		if a.Name == name {
			return a, true
		}
	}
	return Arg{}, false
}

// Authorization is one EIP-7702 authorization of a set-code transaction: the
// signing account delegates its code to Delegate.
type Authorization struct {
	ChainID  *big.Int
	Delegate common.Address
	Nonce    uint64
}

// Tx is the decoded form of a transaction: its fields, its calldata and what
// it spends.
type Tx struct {
	Type uint8
	// ChainID is nil for an unsigned legacy transaction, which gets its
	// chain id (EIP-155) from the signer.
	ChainID *big.Int
	Nonce   uint64
	// To is nil for contract creation.
	To        *common.Address
	Value     *big.Int
	Gas       uint64
	GasFeeCap *big.Int // gas price for legacy and access-list transactions
	GasTipCap *big.Int
	Data      []byte
	// Call is nil when Data is empty.
	Call           *Call
	Authorizations []Authorization
	Spends         []Spend
}

// TipCap is the priority fee per gas of a transaction type that has one
// (dynamic-fee and set-code), or nil. For legacy and access-list
// transactions go-ethereum reports the gas price as the tip cap; that is
// not a separate tip, and fee caps (GasFeeCap) already bound it.
func (t *Tx) TipCap() *big.Int {
	if t.Type != types.DynamicFeeTxType && t.Type != types.SetCodeTxType {
		return nil
	}
	return t.GasTipCap
}

// Errors returned by decoding.
var (
	ErrBlobTx          = errors.New("chain: blob transactions are not supported")
	ErrShortCalldata   = errors.New("chain: calldata shorter than a selector")
	ErrMalformedArgs   = errors.New("chain: malformed arguments")
	errUnsupportedType = errors.New("chain: unsupported transaction type")
)

// DecodeTransaction decodes a transaction from its binary (RLP, typed
// envelope) encoding, as signed and broadcast.
func DecodeTransaction(raw []byte) (*types.Transaction, error) {
	tx := new(types.Transaction)
	if err := tx.UnmarshalBinary(raw); err != nil {
		return nil, fmt.Errorf("chain: decode transaction: %w", err)
	}
	return tx, nil
}

// DecodeTransactionJSON decodes a transaction from go-ethereum's JSON form.
func DecodeTransactionJSON(raw []byte) (*types.Transaction, error) {
	tx := new(types.Transaction)
	if err := tx.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("chain: decode transaction json: %w", err)
	}
	return tx, nil
}

// DescribeTransaction decodes what tx does: its calldata, its EIP-7702
// authorizations and the assets it spends. Legacy, access-list, dynamic-fee
// and set-code transactions are supported; blob transactions are refused.
func DescribeTransaction(tx *types.Transaction) (*Tx, error) {
	switch tx.Type() {
	case types.LegacyTxType, types.AccessListTxType, types.DynamicFeeTxType, types.SetCodeTxType:
	case types.BlobTxType:
		return nil, ErrBlobTx
	default:
		return nil, fmt.Errorf("%w: %d", errUnsupportedType, tx.Type())
	}
	out := &Tx{
		Type:      tx.Type(),
		ChainID:   tx.ChainId(),
		Nonce:     tx.Nonce(),
		To:        tx.To(),
		Value:     tx.Value(),
		Gas:       tx.Gas(),
		GasFeeCap: tx.GasFeeCap(),
		GasTipCap: tx.GasTipCap(),
		Data:      tx.Data(),
	}
	if v, _, _ := tx.RawSignatureValues(); tx.Type() == types.LegacyTxType && (v == nil || v.Sign() == 0 || !tx.Protected()) {
		// An unsigned (or pre-EIP-155) legacy transaction carries no chain
		// id; the signer supplies one (EIP-155).
		out.ChainID = nil
	}
	for _, a := range tx.SetCodeAuthorizations() {
		out.Authorizations = append(out.Authorizations, Authorization{
			ChainID:  a.ChainID.ToBig(),
			Delegate: a.Address,
			Nonce:    a.Nonce,
		})
	}
	if out.Value.Sign() > 0 {
		// Ether sent with a contract creation is spent too; its recipient
		// is left as the zero address.
		s := Spend{Kind: SpendNative, Amount: new(big.Int).Set(out.Value)}
		if out.To != nil {
			s.To = *out.To
		}
		out.Spends = append(out.Spends, s)
	}
	if len(out.Data) > 0 && out.To != nil {
		call, spends, err := DecodeCalldata(*out.To, out.Data)
		if err != nil {
			return nil, err
		}
		out.Call = call
		out.Spends = append(out.Spends, spends...)
	} else if len(out.Data) > 0 {
		// Contract creation: init code is opaque.
		out.Call = &Call{}
		copy(out.Call.Selector[:], out.Data)
	}
	return out, nil
}

// Selectors decoded by DecodeCalldata.
var (
	SelTransfer          = [4]byte{0xa9, 0x05, 0x9c, 0xbb} // transfer(address,uint256)
	SelTransferFrom      = [4]byte{0x23, 0xb8, 0x72, 0xdd} // transferFrom(address,address,uint256)
	SelApprove           = [4]byte{0x09, 0x5e, 0xa7, 0xb3} // approve(address,uint256)
	SelIncreaseAllowance = [4]byte{0x39, 0x50, 0x93, 0x51} // increaseAllowance(address,uint256)
	SelIncreaseApproval  = [4]byte{0xd7, 0x3d, 0xd6, 0x23} // increaseApproval(address,uint256), older OpenZeppelin
	// SelPermit2Approve is Permit2's on-chain approve(address token,
	// address spender, uint160 amount, uint48 expiration); it is decoded
	// only in calls to Permit2Address.
	SelPermit2Approve = [4]byte{0x87, 0x51, 0x7c, 0x45}
)

// param is one 32-byte argument word: an address, or an unsigned integer
// of at most bits bits.
type param struct {
	name string
	addr bool
	bits int
}

type method struct {
	name string
	args []param
	kind SpendKind
}

func addrArg(n string) param        { return param{name: n, addr: true} }
func uintArg(n string, b int) param { return param{name: n, bits: b} }

// methods are the ERC-20 methods decoded on any contract.
var methods = map[[4]byte]method{
	SelTransfer:          {"transfer", []param{addrArg("to"), uintArg("amount", 256)}, SpendTransfer},
	SelTransferFrom:      {"transferFrom", []param{addrArg("from"), addrArg("to"), uintArg("amount", 256)}, SpendTransferFrom},
	SelApprove:           {"approve", []param{addrArg("spender"), uintArg("amount", 256)}, SpendApprove},
	SelIncreaseAllowance: {"increaseAllowance", []param{addrArg("spender"), uintArg("addedValue", 256)}, SpendIncreaseAllowance},
	SelIncreaseApproval:  {"increaseApproval", []param{addrArg("spender"), uintArg("addedValue", 256)}, SpendIncreaseAllowance},
}

// permit2Methods are decoded only in calls to Permit2Address.
var permit2Methods = map[[4]byte]method{
	SelPermit2Approve: {"permit2Approve", []param{addrArg("token"), addrArg("spender"), uintArg("amount", 160), uintArg("expiration", 48)}, SpendPermit2},
}

// MethodSelector returns the selector of a method name this package decodes.
func MethodSelector(name string) ([4]byte, bool) {
	for _, set := range []map[[4]byte]method{methods, permit2Methods} {
		for sel, m := range set {
			if m.name == name {
				return sel, true
			}
		}
	}
	return [4]byte{}, false
}

// MaxUint256 is 2^256-1, the conventional "unlimited" ERC-20 allowance.
var MaxUint256 = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))

// MaxUint160 is 2^160-1, Permit2's "unlimited" allowance.
var MaxUint160 = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 160), big.NewInt(1))

// DecodeCalldata decodes data sent to the contract to. A known ERC-20 method
// (or Permit2's approve, in a call to Permit2) yields its arguments and
// spends; other calldata yields a Call with only a selector and no spends,
// and it is for the policy to refuse it unless a rule names the contract.
// Known selectors with malformed arguments are an error: a token would
// revert, but a request that lies about its shape is refused.
func DecodeCalldata(to common.Address, data []byte) (*Call, []Spend, error) {
	if len(data) < 4 {
		return nil, nil, fmt.Errorf("%w: %d bytes", ErrShortCalldata, len(data))
	}
	call := &Call{}
	copy(call.Selector[:], data[:4])
	m, ok := methods[call.Selector]
	if to == Permit2Address {
		m, ok = permit2Methods[call.Selector]
	}
	if !ok {
		return call, nil, nil
	}
	body := data[4:]
	if len(body) != 32*len(m.args) {
		return nil, nil, fmt.Errorf("%w: %s wants %d bytes of arguments, got %d", ErrMalformedArgs, m.name, 32*len(m.args), len(body))
	}
	call.Method = m.name
	for i, a := range m.args {
		word := body[32*i : 32*i+32]
		if a.addr {
			if !bytes.Equal(word[:12], make([]byte, 12)) {
				return nil, nil, fmt.Errorf("%w: %s argument %d is not an address: %s", ErrMalformedArgs, m.name, i, hex.EncodeToString(word))
			}
			call.Args = append(call.Args, Arg{Name: a.name, Addr: common.BytesToAddress(word[12:])})
			continue
		}
		v := new(big.Int).SetBytes(word)
		if v.BitLen() > a.bits {
			return nil, nil, fmt.Errorf("%w: %s argument %d does not fit uint%d", ErrMalformedArgs, m.name, i, a.bits)
		}
		call.Args = append(call.Args, Arg{Name: a.name, Int: v})
	}
	s := Spend{Kind: m.kind, Token: to}
	switch m.kind {
	case SpendTransfer:
		s.To, s.Amount = call.Args[0].Addr, call.Args[1].Int
	case SpendTransferFrom:
		s.From, s.To, s.Amount = call.Args[0].Addr, call.Args[1].Addr, call.Args[2].Int
	case SpendApprove, SpendIncreaseAllowance:
		s.To, s.Amount = call.Args[0].Addr, call.Args[1].Int
		s.Unlimited = s.Amount.Cmp(MaxUint256) == 0
	case SpendPermit2:
		s.Token, s.To, s.Amount = call.Args[0].Addr, call.Args[1].Addr, call.Args[2].Int
		s.Unlimited = s.Amount.Cmp(MaxUint160) >= 0
	}
	return call, []Spend{s}, nil
}

// EncodeCall builds calldata for a known method from 32-byte words, for
// tests and tools: addresses and integers are left-padded.
func EncodeCall(sel [4]byte, args ...any) []byte {
	out := append([]byte{}, sel[:]...)
	for _, a := range args {
		var w [32]byte
		switch v := a.(type) {
		case common.Address:
			copy(w[12:], v[:])
		case *big.Int:
			v.FillBytes(w[:])
		case int64:
			big.NewInt(v).FillBytes(w[:])
		default:
			panic(fmt.Sprintf("chain: EncodeCall: unsupported argument %T", a))
		}
		out = append(out, w[:]...)
	}
	return out
}
