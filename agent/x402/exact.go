package x402

import (
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	"strconv"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// PrimaryType is the EIP-3009 struct the `exact` EVM scheme signs.
const PrimaryType = "TransferWithAuthorization"

// transferTypes are the EIP-712 types of EIP-3009 transferWithAuthorization
// under a token domain with name, version, chainId and verifyingContract
// (specs/schemes/exact/scheme_exact_evm.md, specs/x402-specification-v2.md
// 6.1.1).
var transferTypes = apitypes.Types{
	"EIP712Domain": {
		{Name: "name", Type: "string"},
		{Name: "version", Type: "string"},
		{Name: "chainId", Type: "uint256"},
		{Name: "verifyingContract", Type: "address"},
	},
	PrimaryType: {
		{Name: "from", Type: "address"},
		{Name: "to", Type: "address"},
		{Name: "value", Type: "uint256"},
		{Name: "validAfter", Type: "uint256"},
		{Name: "validBefore", Type: "uint256"},
		{Name: "nonce", Type: "bytes32"},
	},
}

// Transfer is an EIP-3009 authorization to move Value of a token from From
// to To, valid strictly after ValidAfter and strictly before ValidBefore
// (unix seconds), once per Nonce.
type Transfer struct {
	From        common.Address
	To          common.Address
	Value       *big.Int
	ValidAfter  uint64
	ValidBefore uint64
	Nonce       common.Hash
}

// NewNonce returns a fresh random 32-byte EIP-3009 nonce.
func NewNonce() (common.Hash, error) {
	var n common.Hash
	if _, err := io.ReadFull(rand.Reader, n[:]); err != nil {
		return n, fmt.Errorf("x402: read random nonce: %w", err)
	}
	return n, nil
}

// Authorization returns t in its wire form.
func (t Transfer) Authorization() Authorization {
	return Authorization{
		From:        t.From.Hex(),
		To:          t.To.Hex(),
		Value:       t.Value.String(),
		ValidAfter:  strconv.FormatUint(t.ValidAfter, 10),
		ValidBefore: strconv.FormatUint(t.ValidBefore, 10),
		Nonce:       t.Nonce.Hex(),
	}
}

// TypedData returns the EIP-712 typed data of t under the token domain of
// r: name and version from r's extra, chainId from r's network,
// verifyingContract the asset.
func (t Transfer) TypedData(r Requirement) apitypes.TypedData {
	return apitypes.TypedData{
		Types:       transferTypes,
		PrimaryType: PrimaryType,
		Domain: apitypes.TypedDataDomain{
			Name:              r.TokenName,
			Version:           r.TokenVersion,
			ChainId:           (*math.HexOrDecimal256)(new(big.Int).Set(r.ChainID)),
			VerifyingContract: r.Asset.Hex(),
		},
		Message: apitypes.TypedDataMessage{
			"from":        t.From.Hex(),
			"to":          t.To.Hex(),
			"value":       t.Value.String(),
			"validAfter":  strconv.FormatUint(t.ValidAfter, 10),
			"validBefore": strconv.FormatUint(t.ValidBefore, 10),
			"nonce":       hexutil.Encode(t.Nonce[:]),
		},
	}
}
