package chain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/custos-wallet/custos/internal/strictjson"
	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Kind is the kind of payload a request asks to sign.
type Kind uint8

// Payload kinds. Their names are the ones package policy uses.
const (
	KindTransaction     Kind = iota + 1 // an unsigned Ethereum transaction
	KindTypedData                       // EIP-712 typed data (eth_signTypedData_v4)
	KindPersonalMessage                 // EIP-191 personal message (personal_sign)
)

var kindNames = map[Kind]string{
	KindTransaction:     "transaction",
	KindTypedData:       "typed_data",
	KindPersonalMessage: "personal_message",
}

// String returns the kind's name, as written in the canonical encoding.
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
	return 0, fmt.Errorf("%w: unknown kind %q", ErrMalformedPayload, s)
}

// Size limits, checked before anything is decoded. A transaction is held
// to go-ethereum's transaction pool limit; a signed message has no reason
// to be larger than a typical page of typed data.
const (
	MaxTransactionSize = 128 << 10
	MaxTypedDataSize   = 64 << 10
	MaxMessageSize     = 64 << 10
	// MaxPayloadJSONSize bounds the canonical encoding: the largest raw
	// form in hex, plus the other fields.
	MaxPayloadJSONSize = 2*MaxTransactionSize + 256
)

// Errors returned when a payload is parsed.
var (
	ErrMalformedPayload = errors.New("chain: malformed payload")
	ErrPayloadTooLarge  = errors.New("chain: payload too large")
	ErrChainID          = errors.New("chain: chain id mismatch")
	ErrSignedTx         = errors.New("chain: transaction already carries a signature")
	ErrNotCanonical     = errors.New("chain: payload encoding is not canonical")
)

// Payload is one thing a node is asked to sign, held as the exact bytes it
// received, their decoded form and the digest computed from that decoded
// form. The policy evaluates the decoded form and the node signs the
// digest of the same value, so nothing can be evaluated that is not what
// is signed (design invariant 2). A Payload is immutable; its accessors
// return copies.
//
// The raw bytes of each kind:
//   - transaction: the unsigned transaction in go-ethereum's binary form
//     (types.Transaction.MarshalBinary with V, R and S all zero: RLP for
//     legacy, type byte and RLP for typed transactions). The digest is
//     types.LatestSignerForChainID(chainID).Hash, which for legacy is the
//     EIP-155 hash under the request's chain id.
//   - typed data: eth_signTypedData_v4 JSON; the digest is EIP-712's
//     keccak256(0x19 0x01 domainSeparator hashStruct(message)).
//   - personal message: the message; the digest is EIP-191's
//     keccak256("\x19Ethereum Signed Message:\n" len message).
type Payload struct {
	kind    Kind
	chainID uint64
	raw     []byte
	digest  common.Hash

	tx     *types.Transaction // KindTransaction
	txView *Tx                // KindTransaction
	typed  *Typed             // KindTypedData
}

// checkChainID returns the request's chain id as a uint64: EIP-155 needs a
// positive one, and every chain in use fits 64 bits.
func checkChainID(chainID *big.Int) (uint64, error) {
	if chainID == nil || chainID.Sign() <= 0 || !chainID.IsUint64() {
		return 0, fmt.Errorf("%w: request chain id %v is not a positive 64-bit integer", ErrChainID, chainID)
	}
	return chainID.Uint64(), nil
}

// ParseTransaction parses raw, an unsigned transaction in go-ethereum's
// binary form (see Payload), to be signed for chain chainID. It refuses a
// blob transaction, a signed one, one for another chain, bytes that do not
// re-encode to exactly raw (trailing or non-canonical bytes), a set-code
// transaction without authorizations, and a tip above the fee cap.
// Choosing go-ethereum's own binary form with a zero signature means the
// decoder is go-ethereum's, the bytes round-trip exactly, and the same
// form serves every transaction type; the EIP-155 signing preimage of a
// legacy transaction would need a decoder of its own and does not exist
// for typed transactions.
func ParseTransaction(chainID *big.Int, raw []byte) (*Payload, error) {
	id, err := checkChainID(chainID)
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxTransactionSize {
		return nil, fmt.Errorf("%w: transaction of %d bytes, limit %d", ErrPayloadTooLarge, len(raw), MaxTransactionSize)
	}
	tx := new(types.Transaction)
	if err := tx.UnmarshalBinary(raw); err != nil {
		return nil, fmt.Errorf("%w: decode transaction: %v", ErrMalformedPayload, err)
	}
	again, err := tx.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("%w: re-encode transaction: %v", ErrMalformedPayload, err)
	}
	if !bytes.Equal(again, raw) {
		return nil, fmt.Errorf("%w: transaction bytes do not re-encode exactly", ErrMalformedPayload)
	}
	if v, r, s := tx.RawSignatureValues(); v.Sign() != 0 || r.Sign() != 0 || s.Sign() != 0 {
		return nil, ErrSignedTx
	}
	view, err := DescribeTransaction(tx)
	if err != nil {
		return nil, fmt.Errorf("parse transaction: %w", err)
	}
	want := new(big.Int).SetUint64(id)
	if tx.Type() != types.LegacyTxType && tx.ChainId().Cmp(want) != 0 {
		return nil, fmt.Errorf("%w: transaction is for chain %v, request for chain %d", ErrChainID, tx.ChainId(), id)
	}
	if tx.Type() == types.LegacyTxType {
		// The signer supplies the chain id of an unsigned legacy
		// transaction (EIP-155): it is the request's.
		view.ChainID = want
	}
	if err := checkTxFields(tx); err != nil {
		return nil, err
	}
	return &Payload{
		kind:    KindTransaction,
		chainID: id,
		raw:     bytes.Clone(raw),
		digest:  types.LatestSignerForChainID(want).Hash(tx),
		tx:      tx,
		txView:  view,
	}, nil
}

// checkTxFields refuses what no chain would include, so that nobody
// evaluates or signs it.
func checkTxFields(tx *types.Transaction) error {
	for name, v := range map[string]*big.Int{"value": tx.Value(), "gas price or fee cap": tx.GasFeeCap(), "tip cap": tx.GasTipCap()} {
		if v.BitLen() > 256 {
			return fmt.Errorf("%w: %s exceeds 256 bits", ErrMalformedPayload, name)
		}
	}
	if tx.GasTipCap().Cmp(tx.GasFeeCap()) > 0 {
		return fmt.Errorf("%w: tip cap %v above fee cap %v", ErrMalformedPayload, tx.GasTipCap(), tx.GasFeeCap())
	}
	if tx.Type() == types.SetCodeTxType && len(tx.SetCodeAuthorizations()) == 0 {
		return fmt.Errorf("%w: set-code transaction without authorizations", ErrMalformedPayload)
	}
	return nil
}

// ParseTypedData parses raw, eth_signTypedData_v4 JSON, to be signed for
// chain chainID. Unknown fields, trailing data and integers given as
// non-integral JSON numbers are refused; a domain chainId other than the
// request's is refused. Typed data whose domain has no chainId is accepted
// (its signature is valid on every chain): the policy decides on it.
func ParseTypedData(chainID *big.Int, raw []byte) (*Payload, error) {
	id, err := checkChainID(chainID)
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxTypedDataSize {
		return nil, fmt.Errorf("%w: typed data of %d bytes, limit %d", ErrPayloadTooLarge, len(raw), MaxTypedDataSize)
	}
	td, err := decodeTypedStrict(raw)
	if err != nil {
		return nil, err
	}
	view, err := DescribeTypedData(td)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedPayload, err)
	}
	if view.ChainID != nil && (!view.ChainID.IsUint64() || view.ChainID.Uint64() != id) {
		return nil, fmt.Errorf("%w: typed data domain is for chain %v, request for chain %d", ErrChainID, view.ChainID, id)
	}
	return &Payload{
		kind:    KindTypedData,
		chainID: id,
		raw:     bytes.Clone(raw),
		digest:  view.Digest,
		typed:   view,
	}, nil
}

// decodeTypedStrict decodes typed data JSON with unknown fields, trailing
// data, duplicate keys and case-folded field names refused. Numbers are read exactly and handed to the
// EIP-712 encoder as integers: a plain decode would read them as float64
// and silently round large ones.
func decodeTypedStrict(raw []byte) (apitypes.TypedData, error) {
	var td apitypes.TypedData
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&td); err != nil {
		return td, fmt.Errorf("%w: decode typed data: %v", ErrMalformedPayload, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return td, fmt.Errorf("%w: data after the typed data", ErrMalformedPayload)
	}
	if err := strictjson.CheckKeys(raw, reflect.TypeFor[apitypes.TypedData]()); err != nil {
		return td, fmt.Errorf("%w: typed data: %v", ErrMalformedPayload, err)
	}
	msg, err := exactNumbers(map[string]any(td.Message))
	if err != nil {
		return td, fmt.Errorf("%w: typed data message: %v", ErrMalformedPayload, err)
	}
	td.Message = msg.(map[string]any)
	return td, nil
}

// exactNumbers replaces every json.Number in v by a *big.Int, refusing
// numbers that are not integers.
func exactNumbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		b, ok := new(big.Int).SetString(string(x), 10)
		if !ok {
			return nil, fmt.Errorf("number %s is not an integer", x)
		}
		return b, nil
	case map[string]any:
		for k, e := range x {
			n, err := exactNumbers(e)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			x[k] = n
		}
		return x, nil
	case []any:
		for i, e := range x {
			n, err := exactNumbers(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			x[i] = n
		}
		return x, nil
	}
	return v, nil
}

// ParsePersonalMessage takes msg, a personal_sign message, asked for on
// chain chainID. An EIP-191 signature binds no chain: the chain id is kept
// for the policy's chain conditions only.
func ParsePersonalMessage(chainID *big.Int, msg []byte) (*Payload, error) {
	id, err := checkChainID(chainID)
	if err != nil {
		return nil, err
	}
	if len(msg) > MaxMessageSize {
		return nil, fmt.Errorf("%w: message of %d bytes, limit %d", ErrPayloadTooLarge, len(msg), MaxMessageSize)
	}
	return &Payload{
		kind:    KindPersonalMessage,
		chainID: id,
		raw:     bytes.Clone(msg),
		digest:  common.BytesToHash(accounts.TextHash(msg)),
	}, nil
}

// Parse parses raw as a payload of kind k.
func Parse(k Kind, chainID *big.Int, raw []byte) (*Payload, error) {
	switch k {
	case KindTransaction:
		return ParseTransaction(chainID, raw)
	case KindTypedData:
		return ParseTypedData(chainID, raw)
	case KindPersonalMessage:
		return ParsePersonalMessage(chainID, raw)
	}
	return nil, fmt.Errorf("%w: unknown kind %d", ErrMalformedPayload, k)
}

// Kind returns the payload's kind.
func (p *Payload) Kind() Kind { return p.kind }

// ChainID returns the chain id of the request the payload was parsed for.
func (p *Payload) ChainID() *big.Int { return new(big.Int).SetUint64(p.chainID) }

// Digest returns the 32 bytes to sign.
func (p *Payload) Digest() [32]byte { return p.digest }

// Bytes returns a copy of the exact bytes the payload was parsed from.
func (p *Payload) Bytes() []byte { return bytes.Clone(p.raw) }

// Transaction returns the decoded unsigned transaction, or nil for other
// kinds. go-ethereum transactions are immutable.
func (p *Payload) Transaction() *types.Transaction { return p.tx }

// Signer returns the go-ethereum signer for the payload's chain: the one
// whose Hash is the digest of a transaction payload.
func (p *Payload) Signer() types.Signer { return types.LatestSignerForChainID(p.ChainID()) }

// Tx returns a copy of the decoded description of a transaction payload,
// or nil for other kinds. Its ChainID is the request's for a legacy
// transaction too.
func (p *Payload) Tx() *Tx {
	if p.txView == nil {
		return nil
	}
	return p.txView.clone()
}

// Typed returns a copy of the decoded description of a typed-data
// payload, or nil for other kinds.
func (p *Payload) Typed() *Typed {
	if p.typed == nil {
		return nil
	}
	return p.typed.clone()
}

// TypedData returns a fresh decode of a typed-data payload (the value its
// digest was computed from), and false for other kinds.
func (p *Payload) TypedData() (apitypes.TypedData, bool) {
	if p.kind != KindTypedData {
		return apitypes.TypedData{}, false
	}
	td, err := decodeTypedStrict(p.raw)
	// The bytes decoded when the payload was parsed; decoding is
	// deterministic, so this cannot fail.
	return td, err == nil
}

// Message returns a copy of a personal message, or nil for other kinds.
func (p *Payload) Message() []byte {
	if p.kind != KindPersonalMessage {
		return nil
	}
	return bytes.Clone(p.raw)
}

var txTypeNames = map[uint8]string{
	types.LegacyTxType:     "legacy",
	types.AccessListTxType: "access-list",
	types.DynamicFeeTxType: "dynamic-fee",
	types.SetCodeTxType:    "set-code",
}

// Describe renders the payload in one line for logs and the CLI: the
// chain, and what the payload does (destination, value, method), never
// more than a short prefix of a message.
func (p *Payload) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on chain %d", p.kind, p.chainID)
	switch p.kind {
	case KindTransaction:
		t := p.txView
		fmt.Fprintf(&b, ": %s nonce %d", txTypeNames[t.Type], t.Nonce)
		if t.To != nil {
			fmt.Fprintf(&b, " to %s", t.To.Hex())
		} else {
			b.WriteString(" creating a contract")
		}
		fmt.Fprintf(&b, " value %s wei", t.Value)
		if t.Call != nil {
			b.WriteString(" " + describeCall(t.Call))
		}
		for _, a := range t.Authorizations {
			fmt.Fprintf(&b, " delegating to %s (chain %v, nonce %d)", a.Delegate.Hex(), a.ChainID, a.Nonce)
		}
		fmt.Fprintf(&b, " gas %d fee cap %s", t.Gas, t.GasFeeCap)
		if tip := t.TipCap(); tip != nil {
			fmt.Fprintf(&b, " tip %s", tip)
		}
	case KindTypedData:
		t := p.typed
		fmt.Fprintf(&b, ": %s in domain %q", t.PrimaryType, t.DomainName)
		if t.DomainVersion != "" {
			fmt.Fprintf(&b, " version %q", t.DomainVersion)
		}
		if t.VerifyingContract != (common.Address{}) {
			fmt.Fprintf(&b, " contract %s", t.VerifyingContract.Hex())
		}
		if t.ChainID == nil {
			b.WriteString(" (no chain id: valid on every chain)")
		}
		if !t.Decoded {
			b.WriteString(" (not decoded)")
		}
		for _, s := range t.Spends {
			b.WriteString("; " + s.Describe())
		}
	case KindPersonalMessage:
		fmt.Fprintf(&b, ": %d bytes %s", len(p.raw), messagePreview(p.raw))
	}
	fmt.Fprintf(&b, " digest %s", p.digest.Hex())
	return b.String()
}

func describeCall(c *Call) string {
	if !c.Known() {
		return fmt.Sprintf("calling selector 0x%x", c.Selector)
	}
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		if a.Int != nil {
			args[i] = a.Name + "=" + a.Int.String()
		} else {
			args[i] = a.Name + "=" + a.Addr.Hex()
		}
	}
	return fmt.Sprintf("calling %s(%s)", c.Method, strings.Join(args, ", "))
}

// messagePreview shows printable text quoted, anything else as hex, cut
// to a short prefix.
func messagePreview(m []byte) string {
	const limit = 64
	cut := m
	if len(cut) > limit {
		cut = cut[:limit]
	}
	printable := utf8.Valid(m)
	for _, r := range string(cut) {
		if !unicode.IsPrint(r) && r != ' ' {
			printable = false
			break
		}
	}
	var s string
	if printable {
		for len(cut) > 0 && !utf8.Valid(cut) { // don't split a rune
			cut = cut[:len(cut)-1]
		}
		s = strconv.Quote(string(cut))
	} else {
		s = "0x" + fmt.Sprintf("%x", cut)
	}
	if len(m) > limit {
		s += "..."
	}
	return s
}

// payloadJSON is the canonical encoding. The raw bytes travel as hex, so
// every node decodes exactly the bytes the agent sent.
type payloadJSON struct {
	Kind    string        `json:"kind"`
	ChainID string        `json:"chain_id"`
	Data    hexutil.Bytes `json:"data"`
}

// MarshalJSON writes the canonical encoding:
// {"kind":"transaction","chain_id":"1","data":"0x..."} with the chain id
// in decimal and the raw bytes in lower-case hex.
func (p *Payload) MarshalJSON() ([]byte, error) {
	if p == nil || p.kind == 0 {
		return nil, fmt.Errorf("%w: empty payload", ErrMalformedPayload)
	}
	return json.Marshal(payloadJSON{Kind: p.kind.String(), ChainID: strconv.FormatUint(p.chainID, 10), Data: p.raw})
}

// UnmarshalJSON parses the canonical encoding and the payload it carries,
// with every check of the Parse functions. Only the exact bytes
// MarshalJSON writes are accepted (no whitespace, other field order,
// duplicate or unknown fields, upper-case hex), so a payload has one
// encoding and an envelope signed over it means one thing.
func (p *Payload) UnmarshalJSON(b []byte) error {
	if len(b) > MaxPayloadJSONSize {
		return fmt.Errorf("%w: encoding of %d bytes, limit %d", ErrPayloadTooLarge, len(b), MaxPayloadJSONSize)
	}
	var j payloadJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedPayload, err)
	}
	k, err := parseKind(j.Kind)
	if err != nil {
		return err
	}
	id, err := strconv.ParseUint(j.ChainID, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: chain id %q", ErrMalformedPayload, j.ChainID)
	}
	parsed, err := Parse(k, new(big.Int).SetUint64(id), j.Data)
	if err != nil {
		return err
	}
	again, err := parsed.MarshalJSON()
	if err != nil {
		return err
	}
	if !bytes.Equal(again, b) {
		return ErrNotCanonical
	}
	*p = *parsed
	return nil
}

// ParsePayloadJSON parses the canonical encoding of a payload.
func ParsePayloadJSON(b []byte) (*Payload, error) {
	p := new(Payload)
	if err := p.UnmarshalJSON(b); err != nil {
		return nil, err
	}
	return p, nil
}

func cloneBig(b *big.Int) *big.Int {
	if b == nil {
		return nil
	}
	return new(big.Int).Set(b)
}

func cloneSpends(in []Spend) []Spend {
	if in == nil {
		return nil
	}
	out := make([]Spend, len(in))
	for i, s := range in {
		s.Amount = cloneBig(s.Amount)
		out[i] = s
	}
	return out
}

func (t *Tx) clone() *Tx {
	c := *t
	c.ChainID, c.Value, c.GasFeeCap, c.GasTipCap = cloneBig(t.ChainID), cloneBig(t.Value), cloneBig(t.GasFeeCap), cloneBig(t.GasTipCap)
	if t.To != nil {
		to := *t.To
		c.To = &to
	}
	c.Data = bytes.Clone(t.Data)
	if t.Call != nil {
		call := *t.Call
		call.Args = make([]Arg, len(t.Call.Args))
		for i, a := range t.Call.Args {
			a.Int = cloneBig(a.Int)
			call.Args[i] = a
		}
		if t.Call.Args == nil {
			call.Args = nil
		}
		c.Call = &call
	}
	if t.Authorizations != nil {
		c.Authorizations = make([]Authorization, len(t.Authorizations))
		for i, a := range t.Authorizations {
			a.ChainID = cloneBig(a.ChainID)
			c.Authorizations[i] = a
		}
	}
	c.Spends = cloneSpends(t.Spends)
	return &c
}

func (t *Typed) clone() *Typed {
	c := *t
	c.ChainID = cloneBig(t.ChainID)
	c.Spends = cloneSpends(t.Spends)
	return &c
}
