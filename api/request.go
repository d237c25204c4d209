// Package api holds the JSON types of the coordinator's REST API (/v1) that
// agents, operators, the CLI and the Go client share, with the strict
// parsing that every party applies to them. The body of a signing request
// is special: the agent signs its exact bytes, the coordinator stores them,
// and every node of the quorum parses them itself (ParseSignRequest) to
// compute, from the payload it decoded, the digest it signs.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// ErrBadRequest is wrapped by every error of ParseSignRequest.
var ErrBadRequest = errors.New("api: invalid signing request")

// Limits on a signing request.
const (
	// MaxSignRequestBody bounds the body an agent signs.
	MaxSignRequestBody = 2*chain.MaxTransactionSize + 8<<10
	// MaxExpiry is the longest a request may wait (for guardians, say).
	MaxExpiry = 7 * 24 * time.Hour
	// MaxPathDepth bounds a child key's derivation path.
	MaxPathDepth      = 8
	maxIdempotencyKey = 128
)

// The endpoint an agent signs a signing request for. A node accepts a
// signed request only if the agent signed it for this method and path: the
// same body signed for any other endpoint (a dry run, say) was never a
// request to sign.
const (
	SignRequestMethod = "POST"
	SignRequestPath   = "/v1/requests"
)

// SignRequest is the body of POST /v1/requests, signed by the agent.
//
//	{"key": "key:0x…", "chain_id": 1, "kind": "transaction",
//	 "payload": "0x02f8…", "idempotency_key": "pay-42",
//	 "expiry": "2026-12-01T21:00:00Z"}
//
// The payload of a transaction is the unsigned transaction in go-ethereum's
// binary form as a 0x-hex string; of typed data, the eth_signTypedData_v4
// JSON object itself; of a personal message, the message as 0x-hex.
type SignRequest struct {
	// Key is the root key that signs.
	Key ids.KeyID `json:"key"`
	// Path is the non-hardened derivation path of a child address of the
	// key; empty for the key's own address.
	Path []uint32 `json:"path,omitempty"`
	// From, if set, is the address the agent expects to sign as; nodes
	// check that Key and Path derive it.
	From    *common.Address `json:"from,omitempty"`
	ChainID uint64          `json:"chain_id"`
	Kind    string          `json:"kind"`
	Payload json.RawMessage `json:"payload"`
	// IdempotencyKey makes a retried submission return the first result.
	IdempotencyKey string    `json:"idempotency_key"`
	Expiry         time.Time `json:"expiry"`
	// Grant is an optional guardian-signed session grant, in the policy's
	// JSON form.
	Grant json.RawMessage `json:"grant,omitempty"`
}

// ParsedRequest is a signing request after every check that needs no
// state: the payload decoded and its digest computed.
type ParsedRequest struct {
	SignRequest
	Payload *chain.Payload
}

// ParseSignRequest decodes body strictly (unknown fields, trailing data,
// bad hex all refused) and checks it: a known kind, a positive chain id,
// a payload that decodes for that chain, an idempotency key, an expiry in
// the future and no more than MaxExpiry ahead of now, a path of at most
// MaxPathDepth non-hardened indices, and a grant, if any, that is a JSON
// object (the node checks the grant itself against its policy).
func ParseSignRequest(body []byte, now time.Time) (*ParsedRequest, error) {
	if len(body) > MaxSignRequestBody {
		return nil, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrBadRequest, len(body), MaxSignRequestBody)
	}
	var r SignRequest
	if err := httpapi.DecodeBytes(body, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, errMessage(err))
	}
	if r.Key.IsZero() {
		return nil, fmt.Errorf("%w: key is missing", ErrBadRequest)
	}
	if len(r.Path) > MaxPathDepth {
		return nil, fmt.Errorf("%w: path has %d levels, at most %d", ErrBadRequest, len(r.Path), MaxPathDepth)
	}
	for i, p := range r.Path {
		if p >= 1<<31 {
			return nil, fmt.Errorf("%w: path index %d (%d) is hardened; only non-hardened child keys exist", ErrBadRequest, i, p)
		}
	}
	if r.ChainID == 0 {
		return nil, fmt.Errorf("%w: chain_id is missing or zero", ErrBadRequest)
	}
	if r.IdempotencyKey == "" || len(r.IdempotencyKey) > maxIdempotencyKey || strings.ContainsFunc(r.IdempotencyKey, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return nil, fmt.Errorf("%w: idempotency_key must be 1 to %d printable characters", ErrBadRequest, maxIdempotencyKey)
	}
	switch {
	case r.Expiry.IsZero():
		return nil, fmt.Errorf("%w: expiry is missing", ErrBadRequest)
	case !r.Expiry.After(now):
		return nil, fmt.Errorf("%w: expiry %s has passed", ErrBadRequest, r.Expiry.UTC().Format(time.RFC3339))
	case r.Expiry.Sub(now) > MaxExpiry:
		return nil, fmt.Errorf("%w: expiry %s is more than %s ahead", ErrBadRequest, r.Expiry.UTC().Format(time.RFC3339), MaxExpiry)
	}
	if len(r.Grant) > 0 && r.Grant[0] != '{' {
		// null included: a grant is either absent or an object, so a node
		// never mistakes "grant":null for a grant to check.
		return nil, fmt.Errorf("%w: grant must be a JSON object (a guardian-signed session grant) or absent", ErrBadRequest)
	}
	raw, kind, err := payloadBytes(r.Kind, r.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	p, err := chain.Parse(kind, new(big.Int).SetUint64(r.ChainID), raw)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrBadRequest, err)
	}
	return &ParsedRequest{SignRequest: r, Payload: p}, nil
}

// ParseSigned checks that s was signed for the signing endpoint
// (SignRequestMethod and SignRequestPath, exactly) and parses its body with
// ParseSignRequest. It does not verify the signature: the node does that
// with the agent key of its own policy. The agent id is s.Agent, covered by
// the signature.
func ParseSigned(s agentauth.Signed, now time.Time) (*ParsedRequest, error) {
	if s.Method != SignRequestMethod || s.Path != SignRequestPath {
		return nil, fmt.Errorf("%w: agent %s signed %q %q, not %s %s", ErrBadRequest, s.Agent, s.Method, s.Path, SignRequestMethod, SignRequestPath)
	}
	return ParseSignRequest(s.Body, now)
}

func payloadBytes(kind string, payload json.RawMessage) ([]byte, chain.Kind, error) {
	if len(payload) == 0 {
		return nil, 0, errors.New("payload is missing")
	}
	switch kind {
	case "transaction", "personal_message":
		var s string
		if err := json.Unmarshal(payload, &s); err != nil {
			return nil, 0, fmt.Errorf("payload of a %s must be a 0x-hex string", kind)
		}
		b, err := hexutil.Decode(s)
		if err != nil {
			return nil, 0, fmt.Errorf("payload is not 0x-hex: %v", err)
		}
		if kind == "transaction" {
			return b, chain.KindTransaction, nil
		}
		return b, chain.KindPersonalMessage, nil
	case "typed_data":
		if payload[0] != '{' {
			return nil, 0, errors.New("payload of typed_data must be the eth_signTypedData_v4 JSON object")
		}
		return payload, chain.KindTypedData, nil
	case "":
		return nil, 0, errors.New("kind is missing (transaction, typed_data or personal_message)")
	}
	return nil, 0, fmt.Errorf("unknown kind %q (want transaction, typed_data or personal_message)", kind)
}

func errMessage(err error) string {
	var ae *httpapi.Error
	if errors.As(err, &ae) {
		return ae.Message
	}
	return err.Error()
}
