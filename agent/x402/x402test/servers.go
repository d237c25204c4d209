// Package x402test serves a facilitator and a resource server written from
// the x402 specification (specs/x402-specification-v2.md section 7,
// specs/transports-v2/http.md, specs/transports-v1/http.md,
// specs/schemes/exact/scheme_exact_evm.md), for tests of payers. They use
// their own wire structs and build the EIP-712 typed data from JSON text,
// so that they share no code with the client in agent/x402 and a mistake
// in it shows up as a refused payment. Test support only.
package x402test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Wire structs of the test servers, with the spec's field names.
type fPayload struct {
	X402Version int             `json:"x402Version"`
	Scheme      string          `json:"scheme"`   // v1
	Network     string          `json:"network"`  // v1
	Accepted    json.RawMessage `json:"accepted"` // v2
	Payload     struct {
		Signature     string `json:"signature"`
		Authorization struct {
			From        string `json:"from"`
			To          string `json:"to"`
			Value       string `json:"value"`
			ValidAfter  string `json:"validAfter"`
			ValidBefore string `json:"validBefore"`
			Nonce       string `json:"nonce"`
		} `json:"authorization"`
	} `json:"payload"`
}

type fRequirements struct {
	Scheme            string `json:"scheme"`
	Network           string `json:"network"`
	Amount            string `json:"amount"`            // v2
	MaxAmountRequired string `json:"maxAmountRequired"` // v1
	Asset             string `json:"asset"`
	PayTo             string `json:"payTo"`
	MaxTimeoutSeconds int64  `json:"maxTimeoutSeconds"`
	Extra             struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"extra"`
}

type fRequest struct {
	X402Version         int             `json:"x402Version"`
	PaymentPayload      json.RawMessage `json:"paymentPayload"`
	PaymentRequirements json.RawMessage `json:"paymentRequirements"`
}

// Settled is one transfer the facilitator settled.
type Settled struct {
	From, To, Asset common.Address
	Value           *big.Int
	ValidAfter      uint64
	ValidBefore     uint64
	Nonce           common.Hash
}

// Facilitator verifies and settles exact EVM payments (/verify, /settle).
type Facilitator struct {
	now func() time.Time
	srv *httptest.Server

	mu      sync.Mutex
	used    map[string]bool // authorizer, token and nonce: EIP-3009 authorizationState
	settled []Settled
}

// NewFacilitator serves a facilitator until t ends; now is its clock.
func NewFacilitator(t testing.TB, now func() time.Time) *Facilitator {
	f := &Facilitator{now: now, used: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /verify", func(w http.ResponseWriter, r *http.Request) {
		payer, reason := f.handle(r, false)
		writeJSON(w, map[string]any{"isValid": reason == "", "invalidReason": reason, "payer": payer})
	})
	mux.HandleFunc("POST /settle", func(w http.ResponseWriter, r *http.Request) {
		payer, reason := f.handle(r, true)
		tx := ""
		if reason == "" {
			tx = crypto.Keccak256Hash([]byte(payer), []byte(strconv.Itoa(len(f.Settled())))).Hex()
		}
		writeJSON(w, map[string]any{"success": reason == "", "errorReason": reason, "payer": payer, "transaction": tx, "network": "from-requirements"})
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// URL is the facilitator's base URL.
func (f *Facilitator) URL() string { return f.srv.URL }

// Settled returns the transfers settled so far, in order.
func (f *Facilitator) Settled() []Settled {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Settled(nil), f.settled...)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// specChainID maps a requirement's network to its chain id.
func specChainID(version int, network string) (int64, bool) {
	if version == 1 {
		id, ok := map[string]int64{"base-sepolia": 84532, "base": 8453}[network]
		return id, ok
	}
	ref, ok := strings.CutPrefix(network, "eip155:")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(ref, 10, 64)
	return id, err == nil
}

// handle verifies (and with settle, settles) one request; reason is empty
// when the payment is valid.
func (f *Facilitator) handle(r *http.Request, settle bool) (payer, reason string) {
	var req fRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return "", "invalid_payload"
	}
	var p fPayload
	var reqs fRequirements
	if json.Unmarshal(req.PaymentPayload, &p) != nil || json.Unmarshal(req.PaymentRequirements, &reqs) != nil {
		return "", "invalid_payload"
	}
	a := p.Payload.Authorization
	payer = a.From
	amount := reqs.Amount
	network := reqs.Network
	if req.X402Version == 1 {
		amount = reqs.MaxAmountRequired
		if p.Network != reqs.Network || p.Scheme != reqs.Scheme {
			return payer, "invalid_network"
		}
	}
	if reqs.Scheme != "exact" {
		return payer, "unsupported_scheme"
	}
	chain, ok := specChainID(req.X402Version, network)
	if !ok {
		return payer, "invalid_network"
	}
	// The facilitator's own EIP-712 typed data, as eth_signTypedData_v4
	// JSON: the domain comes from the requirements, the message from the
	// authorization.
	tdJSON := fmt.Sprintf(`{
	  "types": {
	    "EIP712Domain": [{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
	    "TransferWithAuthorization": [{"name":"from","type":"address"},{"name":"to","type":"address"},{"name":"value","type":"uint256"},{"name":"validAfter","type":"uint256"},{"name":"validBefore","type":"uint256"},{"name":"nonce","type":"bytes32"}]
	  },
	  "primaryType": "TransferWithAuthorization",
	  "domain": {"name": %q, "version": %q, "chainId": %d, "verifyingContract": %q},
	  "message": {"from": %q, "to": %q, "value": %q, "validAfter": %q, "validBefore": %q, "nonce": %q}
	}`, reqs.Extra.Name, reqs.Extra.Version, chain, reqs.Asset, a.From, a.To, a.Value, a.ValidAfter, a.ValidBefore, a.Nonce)
	var td apitypes.TypedData
	if err := json.Unmarshal([]byte(tdJSON), &td); err != nil {
		return payer, "invalid_payload"
	}
	digest, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		return payer, "invalid_payload"
	}
	sig, err := hexutil.Decode(p.Payload.Signature)
	if err != nil || len(sig) != 65 || (sig[64] != 27 && sig[64] != 28) {
		return payer, "invalid_exact_evm_payload_signature"
	}
	sig[64] -= 27
	pub, err := crypto.SigToPub(digest, sig)
	if err != nil || !common.IsHexAddress(a.From) || crypto.PubkeyToAddress(*pub) != common.HexToAddress(a.From) {
		return payer, "invalid_exact_evm_payload_signature"
	}
	if !common.IsHexAddress(a.To) || common.HexToAddress(a.To) != common.HexToAddress(reqs.PayTo) {
		return payer, "invalid_exact_evm_payload_recipient_mismatch"
	}
	if a.Value != amount {
		return payer, "invalid_exact_evm_payload_authorization_value_mismatch"
	}
	after, err1 := strconv.ParseUint(a.ValidAfter, 10, 64)
	before, err2 := strconv.ParseUint(a.ValidBefore, 10, 64)
	now := uint64(f.now().Unix())
	if err1 != nil || err2 != nil {
		return payer, "invalid_payload"
	}
	if now <= after {
		return payer, "invalid_exact_evm_payload_authorization_valid_after"
	}
	if now >= before || before > now+uint64(reqs.MaxTimeoutSeconds) {
		return payer, "invalid_exact_evm_payload_authorization_valid_before"
	}
	key := strings.ToLower(a.From + reqs.Asset + a.Nonce)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used[key] {
		return payer, "nonce_already_used"
	}
	if settle {
		f.used[key] = true
		v, _ := new(big.Int).SetString(a.Value, 10)
		f.settled = append(f.settled, Settled{
			From: common.HexToAddress(a.From), To: common.HexToAddress(a.To), Asset: common.HexToAddress(reqs.Asset),
			Value: v, ValidAfter: after, ValidBefore: before, Nonce: common.HexToHash(a.Nonce),
		})
	}
	return payer, ""
}

// ResourceServer serves one paid resource at /paid.
type ResourceServer struct {
	version     int
	accepts     []map[string]any // the offered requirements, as JSON objects
	facilitator *Facilitator
	// Always402 answers 402 even to a valid payment (after settling it).
	Always402 bool
	srv       *httptest.Server

	Payments atomic.Int32 // requests that carried a payment header
	mu       sync.Mutex
	bodies   []string // request bodies, in order
}

// NewResourceServer serves, until t ends, a resource that costs one of
// accepts (x402 version 1 or 2), settled through f.
func NewResourceServer(t testing.TB, f *Facilitator, version int, accepts ...map[string]any) *ResourceServer {
	rs := &ResourceServer{version: version, accepts: accepts, facilitator: f}
	rs.srv = httptest.NewServer(rs)
	t.Cleanup(rs.srv.Close)
	return rs
}

// URL is the paid resource.
func (rs *ResourceServer) URL() string { return rs.srv.URL + "/paid" }

// Bodies returns the request bodies the resource saw, in order.
func (rs *ResourceServer) Bodies() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]string(nil), rs.bodies...)
}

func (rs *ResourceServer) paymentRequired(w http.ResponseWriter, why string) {
	if rs.version == 1 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusPaymentRequired)
		_ = json.NewEncoder(w).Encode(map[string]any{"x402Version": 1, "error": why, "accepts": rs.accepts})
		return
	}
	js, _ := json.Marshal(map[string]any{
		"x402Version": 2, "error": why,
		"resource": map[string]any{"url": rs.URL(), "description": "a paid test resource", "mimeType": "text/plain"},
		"accepts":  rs.accepts,
	})
	w.Header().Set("PAYMENT-REQUIRED", base64.StdEncoding.EncodeToString(js))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusPaymentRequired)
	_, _ = w.Write([]byte("{}"))
}

// ServeHTTP serves the paid resource (any path).
func (rs *ResourceServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rs.mu.Lock()
	rs.bodies = append(rs.bodies, string(body))
	rs.mu.Unlock()
	payHeader, respHeader := "PAYMENT-SIGNATURE", "PAYMENT-RESPONSE"
	if rs.version == 1 {
		payHeader, respHeader = "X-PAYMENT", "X-PAYMENT-RESPONSE"
	}
	h := r.Header.Get(payHeader)
	if h == "" {
		rs.paymentRequired(w, payHeader+" header is required")
		return
	}
	rs.Payments.Add(1)
	raw, err := base64.StdEncoding.DecodeString(h)
	var p fPayload
	if err != nil || json.Unmarshal(raw, &p) != nil || p.X402Version != rs.version {
		http.Error(w, "invalid payment", http.StatusBadRequest)
		return
	}
	// Find the offered requirement the payment is for.
	var chosen map[string]any
	for _, a := range rs.accepts {
		if rs.version == 2 {
			var acc map[string]any
			if json.Unmarshal(p.Accepted, &acc) == nil && reflect.DeepEqual(roundTripJSON(a), acc) {
				chosen = a
				break
			}
		} else if a["scheme"] == p.Scheme && a["network"] == p.Network {
			chosen = a
			break
		}
	}
	if chosen == nil {
		rs.paymentRequired(w, "payment matches no offered requirement")
		return
	}
	reqJSON, _ := json.Marshal(chosen)
	fr, _ := json.Marshal(fRequest{X402Version: rs.version, PaymentPayload: raw, PaymentRequirements: reqJSON})
	var verify struct {
		IsValid       bool   `json:"isValid"`
		InvalidReason string `json:"invalidReason"`
	}
	if err := postJSON(rs.facilitator.srv.URL+"/verify", fr, &verify); err != nil || !verify.IsValid {
		settle, _ := json.Marshal(map[string]any{"success": false, "errorReason": verify.InvalidReason, "transaction": "", "network": chosen["network"]})
		w.Header().Set(respHeader, base64.StdEncoding.EncodeToString(settle))
		rs.paymentRequired(w, "payment invalid: "+verify.InvalidReason)
		return
	}
	var settle map[string]any
	if err := postJSON(rs.facilitator.srv.URL+"/settle", fr, &settle); err != nil || settle["success"] != true {
		http.Error(w, "settlement failed", http.StatusPaymentRequired)
		return
	}
	settle["network"] = chosen["network"]
	js, _ := json.Marshal(settle)
	w.Header().Set(respHeader, base64.StdEncoding.EncodeToString(js))
	if rs.Always402 {
		rs.paymentRequired(w, "pay again")
		return
	}
	_, _ = w.Write([]byte("the resource"))
}

func roundTripJSON(v any) any {
	js, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(js, &out)
	return out
}

func postJSON(url string, body []byte, out any) error {
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}
