package x402

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// HTTP header names, as specs/transports-v2/http.md and
// specs/transports-v1/http.md spell them.
const (
	HeaderPaymentRequired   = "PAYMENT-REQUIRED"   // v2: server to client, base64 PaymentRequired
	HeaderPaymentSignature  = "PAYMENT-SIGNATURE"  // v2: client to server, base64 PaymentPayload
	HeaderPaymentResponse   = "PAYMENT-RESPONSE"   // v2: server to client, base64 SettlementResponse
	HeaderPaymentV1         = "X-PAYMENT"          // v1: client to server, base64 PaymentPayloadV1
	HeaderPaymentResponseV1 = "X-PAYMENT-RESPONSE" // v1: server to client, base64 SettlementResponse
)

// Limits on what the client reads from a server, checked before decoding.
const (
	// MaxHeaderBytes bounds one x402 header value (base64 text).
	MaxHeaderBytes = 16 << 10
	// MaxBodyBytes bounds the JSON body of a v1 402 response.
	MaxBodyBytes = 64 << 10
	// MaxAccepts bounds the number of offered payment requirements.
	MaxAccepts = 32
)

// Errors of this package. Each returned error wraps one of them and names
// what was wrong.
var (
	// ErrMalformed: a message from the server is not valid x402.
	ErrMalformed = errors.New("x402: malformed message")
	// ErrTooLarge: a header, body or list is over its limit.
	ErrTooLarge = errors.New("x402: message too large")
)

// ResourceInfo describes the protected resource (v2).
type ResourceInfo struct {
	URL         string `json:"url"`
	Description string `json:"description,omitempty"`
	MimeType    string `json:"mimeType,omitempty"`
}

// PaymentRequirements is one accepted way to pay (v2, an element of
// PaymentRequired.accepts, echoed as PaymentPayload.accepted).
type PaymentRequirements struct {
	Scheme            string          `json:"scheme"`
	Network           string          `json:"network"`
	Amount            string          `json:"amount"`
	Asset             string          `json:"asset"`
	PayTo             string          `json:"payTo"`
	MaxTimeoutSeconds int64           `json:"maxTimeoutSeconds"`
	Extra             json.RawMessage `json:"extra,omitempty"`
}

// PaymentRequired is the v2 PAYMENT-REQUIRED header's content.
type PaymentRequired struct {
	X402Version int                   `json:"x402Version"`
	Error       string                `json:"error,omitempty"`
	Resource    *ResourceInfo         `json:"resource"`
	Accepts     []PaymentRequirements `json:"accepts"`
	Extensions  json.RawMessage       `json:"extensions,omitempty"`
}

// PaymentRequirementsV1 is one accepted way to pay in v1.
type PaymentRequirementsV1 struct {
	Scheme            string          `json:"scheme"`
	Network           string          `json:"network"`
	MaxAmountRequired string          `json:"maxAmountRequired"`
	Asset             string          `json:"asset"`
	PayTo             string          `json:"payTo"`
	Resource          string          `json:"resource"`
	Description       string          `json:"description"`
	MimeType          string          `json:"mimeType,omitempty"`
	OutputSchema      json.RawMessage `json:"outputSchema,omitempty"`
	MaxTimeoutSeconds int64           `json:"maxTimeoutSeconds"`
	Extra             json.RawMessage `json:"extra,omitempty"`
}

// PaymentRequiredV1 is the JSON body of a v1 402 response (the spec's
// PaymentRequirementsResponse).
type PaymentRequiredV1 struct {
	X402Version int                     `json:"x402Version"`
	Error       string                  `json:"error"`
	Accepts     []PaymentRequirementsV1 `json:"accepts"`
}

// Authorization holds the EIP-3009 transferWithAuthorization parameters in
// their wire form: addresses in hex, integers in decimal, nonce as 0x and 64
// hex digits.
type Authorization struct {
	From        string `json:"from"`
	To          string `json:"to"`
	Value       string `json:"value"`
	ValidAfter  string `json:"validAfter"`
	ValidBefore string `json:"validBefore"`
	Nonce       string `json:"nonce"`
}

// ExactEVMPayload is the scheme payload of `exact` on EVM with the eip3009
// transfer method: the 65-byte signature in hex and what it signs.
type ExactEVMPayload struct {
	Signature     string        `json:"signature"`
	Authorization Authorization `json:"authorization"`
}

// PaymentPayload is the v2 PAYMENT-SIGNATURE header's content.
type PaymentPayload struct {
	X402Version int                 `json:"x402Version"`
	Resource    *ResourceInfo       `json:"resource,omitempty"`
	Accepted    PaymentRequirements `json:"accepted"`
	Payload     ExactEVMPayload     `json:"payload"`
	Extensions  json.RawMessage     `json:"extensions,omitempty"`
}

// PaymentPayloadV1 is the v1 X-PAYMENT header's content.
type PaymentPayloadV1 struct {
	X402Version int             `json:"x402Version"`
	Scheme      string          `json:"scheme"`
	Network     string          `json:"network"`
	Payload     ExactEVMPayload `json:"payload"`
}

// SettlementResponse is the PAYMENT-RESPONSE (v1: X-PAYMENT-RESPONSE)
// header's content.
type SettlementResponse struct {
	Success     bool            `json:"success"`
	ErrorReason string          `json:"errorReason,omitempty"`
	Payer       string          `json:"payer,omitempty"`
	Transaction string          `json:"transaction"`
	Network     string          `json:"network"`
	Amount      string          `json:"amount,omitempty"`
	Extensions  json.RawMessage `json:"extensions,omitempty"`
}

// EncodeHeader returns v as the base64 JSON text of an x402 header.
func EncodeHeader(v any) (string, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("x402: encode header: %w", err)
	}
	return base64.StdEncoding.EncodeToString(js), nil
}

// decodeHeader decodes the base64 JSON value of the header called name into v.
func decodeHeader(name, value string, v any) error {
	if len(value) > MaxHeaderBytes {
		return fmt.Errorf("%w: %s header is %d bytes, limit %d", ErrTooLarge, name, len(value), MaxHeaderBytes)
	}
	if value == "" {
		return fmt.Errorf("%w: %s header is empty", ErrMalformed, name)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(value)
	if err != nil {
		return fmt.Errorf("%w: %s header: base64: %v", ErrMalformed, name, err)
	}
	if err := decodeJSON(raw, v); err != nil {
		return fmt.Errorf("%w: %s header: json: %v", ErrMalformed, name, err)
	}
	return nil
}

// decodeJSON decodes exactly one JSON object into v; trailing data is an
// error. Unknown fields are allowed: the spec adds optional fields and
// extensions over time.
func decodeJSON(raw []byte, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// ParsePaymentRequired parses the value of a v2 PAYMENT-REQUIRED header and
// checks the fields the specification requires.
func ParsePaymentRequired(header string) (*PaymentRequired, error) {
	var pr PaymentRequired
	if err := decodeHeader(HeaderPaymentRequired, header, &pr); err != nil {
		return nil, err
	}
	if err := pr.check(); err != nil {
		return nil, fmt.Errorf("%s header: %w", HeaderPaymentRequired, err)
	}
	return &pr, nil
}

func (pr *PaymentRequired) check() error {
	if pr.X402Version != 2 {
		return fmt.Errorf("%w: x402Version is %d, want 2", ErrMalformed, pr.X402Version)
	}
	if pr.Resource == nil || pr.Resource.URL == "" {
		return fmt.Errorf("%w: resource.url is missing", ErrMalformed)
	}
	if err := checkAcceptsLen(len(pr.Accepts)); err != nil {
		return err
	}
	for i, r := range pr.Accepts {
		if err := requireFields(i, "amount", r.Scheme, r.Network, r.Amount, r.Asset, r.PayTo); err != nil {
			return err
		}
	}
	return nil
}

// ParsePaymentRequiredV1 parses the JSON body of a v1 402 response.
func ParsePaymentRequiredV1(body []byte) (*PaymentRequiredV1, error) {
	if len(body) > MaxBodyBytes {
		return nil, fmt.Errorf("%w: 402 body is %d bytes, limit %d", ErrTooLarge, len(body), MaxBodyBytes)
	}
	var pr PaymentRequiredV1
	if err := decodeJSON(body, &pr); err != nil {
		return nil, fmt.Errorf("%w: 402 body: json: %v", ErrMalformed, err)
	}
	if err := pr.check(); err != nil {
		return nil, fmt.Errorf("402 body: %w", err)
	}
	return &pr, nil
}

func (pr *PaymentRequiredV1) check() error {
	if pr.X402Version != 1 {
		return fmt.Errorf("%w: x402Version is %d, want 1", ErrMalformed, pr.X402Version)
	}
	if err := checkAcceptsLen(len(pr.Accepts)); err != nil {
		return err
	}
	for i, r := range pr.Accepts {
		if err := requireFields(i, "maxAmountRequired", r.Scheme, r.Network, r.MaxAmountRequired, r.Asset, r.PayTo); err != nil {
			return err
		}
		if r.Resource == "" {
			return fmt.Errorf("%w: accepts[%d].resource is missing", ErrMalformed, i)
		}
	}
	return nil
}

func checkAcceptsLen(n int) error {
	if n == 0 {
		return fmt.Errorf("%w: accepts is empty", ErrMalformed)
	}
	if n > MaxAccepts {
		return fmt.Errorf("%w: accepts has %d entries, limit %d", ErrTooLarge, n, MaxAccepts)
	}
	return nil
}

// requireFields checks that the required string fields of accepts[i] are
// present; amountName is the version's name of the amount field.
func requireFields(i int, amountName, scheme, network, amount, asset, payTo string) error {
	for _, f := range []struct{ name, v string }{
		{"scheme", scheme}, {"network", network}, {amountName, amount}, {"asset", asset}, {"payTo", payTo},
	} {
		if f.v == "" {
			return fmt.Errorf("%w: accepts[%d].%s is missing", ErrMalformed, i, f.name)
		}
	}
	return nil
}

// ParsePaymentPayload parses the value of a v2 PAYMENT-SIGNATURE header
// (what a resource server receives).
func ParsePaymentPayload(header string) (*PaymentPayload, error) {
	var p PaymentPayload
	if err := decodeHeader(HeaderPaymentSignature, header, &p); err != nil {
		return nil, err
	}
	if p.X402Version != 2 {
		return nil, fmt.Errorf("%w: %s header: x402Version is %d, want 2", ErrMalformed, HeaderPaymentSignature, p.X402Version)
	}
	return &p, nil
}

// ParsePaymentPayloadV1 parses the value of a v1 X-PAYMENT header.
func ParsePaymentPayloadV1(header string) (*PaymentPayloadV1, error) {
	var p PaymentPayloadV1
	if err := decodeHeader(HeaderPaymentV1, header, &p); err != nil {
		return nil, err
	}
	if p.X402Version != 1 {
		return nil, fmt.Errorf("%w: %s header: x402Version is %d, want 1", ErrMalformed, HeaderPaymentV1, p.X402Version)
	}
	return &p, nil
}

// ParseSettlementResponse parses the value of a PAYMENT-RESPONSE or
// X-PAYMENT-RESPONSE header; name is the header it came from.
func ParseSettlementResponse(name, header string) (*SettlementResponse, error) {
	var s SettlementResponse
	if err := decodeHeader(name, header, &s); err != nil {
		return nil, err
	}
	if s.Network == "" {
		return nil, fmt.Errorf("%w: %s header: network is missing", ErrMalformed, name)
	}
	if s.Success && s.Transaction == "" {
		return nil, fmt.Errorf("%w: %s header: success without a transaction", ErrMalformed, name)
	}
	return &s, nil
}
