package x402

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/custos-wallet/custos/agent/x402/x402test"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

var (
	usdc     = common.HexToAddress("0x036CbD53842c5426634e7929541eC2318f3dCF7e")
	otherTok = common.HexToAddress("0x4200000000000000000000000000000000000006")
	vendor   = common.HexToAddress("0x209693Bc6afc0C5328bA36FaF03C514EF312287C")
	stranger = common.HexToAddress("0x9a9A9a9A9a9a9A9a9a9a9A9A9a9A9a9A9a9A9a9A")
)

const baseSepolia = "eip155:84532"

func offerV2(amount string, payTo common.Address, timeout int) map[string]any {
	return map[string]any{
		"scheme": "exact", "network": baseSepolia, "amount": amount, "asset": usdc.Hex(),
		"payTo": payTo.Hex(), "maxTimeoutSeconds": timeout, "extra": map[string]any{"name": "USDC", "version": "2"},
	}
}

func offerV1(amount string, payTo common.Address, timeout int) map[string]any {
	return map[string]any{
		"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": amount, "asset": usdc.Hex(),
		"payTo": payTo.Hex(), "resource": "http://example.test/paid", "description": "a paid test resource",
		"mimeType": "text/plain", "maxTimeoutSeconds": timeout, "extra": map[string]any{"name": "USDC", "version": "2"},
	}
}

func limits() Limits {
	return Limits{Max: big.NewInt(1000), Payees: []common.Address{vendor}, Assets: []common.Address{usdc}, Networks: []string{baseSepolia}}
}

type env struct {
	clock  *clock
	signer *keySigner
	fac    *x402test.Facilitator
	rs     *x402test.ResourceServer
	client *Client
}

// setup starts a facilitator and a resource server offering accepts, and a
// client choosing with choose.
func setup(t *testing.T, version int, choose Chooser, accepts ...map[string]any) *env {
	t.Helper()
	e := &env{clock: newClock(), signer: newKeySigner(t)}
	e.fac = x402test.NewFacilitator(t, e.clock.Now)
	e.rs = x402test.NewResourceServer(t, e.fac, version, accepts...)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	var err error
	e.client, err = New(Config{Signer: e.signer, Choose: choose, HTTPClient: &http.Client{Transport: tr}, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) get(t *testing.T) (*http.Response, *Receipt, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.rs.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e.client.Do(context.Background(), req)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func msgUint(t *testing.T, td apitypes.TypedData, field string) uint64 {
	t.Helper()
	s, ok := td.Message[field].(string)
	if !ok {
		t.Fatalf("message.%s is %T", field, td.Message[field])
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestPaysOnceAndGetsResource(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int
		offer   map[string]any
	}{
		{"v2", 2, offerV2("1000", vendor, 60)},
		{"v1", 1, offerV1("1000", vendor, 60)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, tc.version, Cap(limits()), tc.offer)
			resp, rec, err := e.get(t)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || readBody(t, resp) != "the resource" {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if n := e.signer.calls.Load(); n != 1 {
				t.Fatalf("signer called %d times, want 1", n)
			}
			if n := e.rs.Payments.Load(); n != 1 {
				t.Fatalf("server saw %d payments, want 1", n)
			}
			got := e.fac.Settled()
			if len(got) != 1 {
				t.Fatalf("facilitator settled %d transfers, want 1", len(got))
			}
			s := got[0]
			if s.From != e.signer.Address() || s.To != vendor || s.Asset != usdc || s.Value.Cmp(big.NewInt(1000)) != 0 {
				t.Fatalf("settled %+v", s)
			}
			now := uint64(e.clock.Now().Unix())
			if s.ValidBefore != now+60 || s.ValidAfter != now-uint64(DefaultValidAfterSkew/time.Second) {
				t.Fatalf("window (%d, %d), now %d", s.ValidAfter, s.ValidBefore, now)
			}
			if rec == nil || rec.Settlement == nil || !rec.Settlement.Success || rec.Settlement.Transaction == "" || rec.SettlementErr != nil {
				t.Fatalf("receipt %+v", rec)
			}
			if rec.Requirement.Version != tc.version || rec.Transfer.Nonce != s.Nonce || rec.Requirement.Network != baseSepolia {
				t.Fatalf("receipt %+v, settled %+v", rec, s)
			}
		})
	}
}

func TestFreeResourceIsNotPaid(t *testing.T) {
	e := setup(t, 2, Cap(limits()), offerV2("1000", vendor, 60))
	free := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("free")) }))
	defer free.Close()
	req, _ := http.NewRequest(http.MethodGet, free.URL, nil)
	resp, rec, err := e.client.Do(context.Background(), req)
	if err != nil || rec != nil || readBody(t, resp) != "free" || e.signer.calls.Load() != 0 {
		t.Fatalf("err %v, receipt %v, signer calls %d", err, rec, e.signer.calls.Load())
	}
}

// Each refusal happens before the Signer is called and before anything is
// sent to the server.
func TestRefusedWithoutSigning(t *testing.T) {
	other := limits()
	other.Assets = []common.Address{otherTok}
	otherNet := limits()
	otherNet.Networks = []string{"eip155:8453"}
	noCap := limits()
	noCap.Max = nil
	for _, tc := range []struct {
		name   string
		choose Chooser
		offer  map[string]any
		want   error
		msg    string
	}{
		{"over cap", Cap(limits()), offerV2("1001", vendor, 60), ErrRefused, "amount 1001 is over the cap 1000"},
		{"payee not allowed", Cap(limits()), offerV2("10", stranger, 60), ErrRefused, "payee " + stranger.Hex() + " is not allowed"},
		{"asset not allowed", Cap(other), offerV2("10", vendor, 60), ErrRefused, "asset " + usdc.Hex() + " is not allowed"},
		{"network not allowed", Cap(otherNet), offerV2("10", vendor, 60), ErrRefused, "network eip155:84532 is not allowed"},
		{"no cap", Cap(noCap), offerV2("10", vendor, 60), ErrRefused, "no cap set"},
		{"no chooser", nil, offerV2("10", vendor, 60), ErrRefused, "no chooser configured"},
		{"expired window", Cap(limits()), offerV2("10", vendor, 0), ErrWindow, "maxTimeoutSeconds allows 0s"},
		{"too short window", Cap(limits()), offerV2("10", vendor, 9), ErrWindow, "maxTimeoutSeconds allows 9s"},
		{"chooser error", func([]Requirement) (Requirement, error) { return Requirement{}, errors.New("budget spent") }, offerV2("10", vendor, 60), ErrRefused, "budget spent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, 2, tc.choose, tc.offer)
			resp, rec, err := e.get(t)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %v, want %v naming %q", err, tc.want, tc.msg)
			}
			if resp != nil || rec != nil {
				t.Fatalf("resp %v, receipt %v", resp, rec)
			}
			if n := e.signer.calls.Load(); n != 0 {
				t.Fatalf("signer called %d times", n)
			}
			if n := e.rs.Payments.Load(); n != 0 {
				t.Fatalf("server saw %d payments", n)
			}
		})
	}
}

func TestCheapestAllowedIsChosen(t *testing.T) {
	e := setup(t, 2, Cap(limits()),
		offerV2("5000", vendor, 60),   // over the cap
		offerV2("900", vendor, 60),    // allowed
		offerV2("100", stranger, 60),  // cheapest, payee not allowed
		offerV2("800", vendor, 60),    // cheapest allowed
		offerV2("800", vendor, 120),   // as cheap, offered later
		offerV2("99999", vendor, 600)) // over the cap
	resp, rec, err := e.get(t)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if rec.Requirement.Index != 3 {
		t.Fatalf("chose %s, want accepts[3]", rec.Requirement)
	}
	if v := e.signer.lastSigned(t).Message["value"]; v != "800" {
		t.Fatalf("signed value %v, want 800", v)
	}
	if got := e.fac.Settled(); len(got) != 1 || got[0].Value.Cmp(big.NewInt(800)) != 0 {
		t.Fatalf("settled %+v", got)
	}
}

// validBefore is now + min(maxTimeoutSeconds, MaxWindow), visible in the
// typed data the Signer saw.
func TestValidBeforeClamped(t *testing.T) {
	for _, tc := range []struct {
		timeout int
		want    time.Duration
	}{
		{60, time.Minute},
		{11, 11 * time.Second},
		{3600, DefaultMaxWindow},
	} {
		t.Run(strconv.Itoa(tc.timeout), func(t *testing.T) {
			e := setup(t, 2, Cap(limits()), offerV2("10", vendor, tc.timeout))
			resp, _, err := e.get(t)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			td := e.signer.lastSigned(t)
			now := e.clock.Now()
			if got := msgUint(t, td, "validBefore"); got != uint64(now.Add(tc.want).Unix()) {
				t.Fatalf("validBefore now+%ds, want now+%s", int64(got)-now.Unix(), tc.want)
			}
			if got := msgUint(t, td, "validAfter"); got != uint64(now.Add(-DefaultValidAfterSkew).Unix()) {
				t.Fatalf("validAfter now%+ds", int64(got)-now.Unix())
			}
		})
	}
}

// A server that answers 402 to the paid retry is not paid again.
func TestSecond402IsNotPaidAgain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int
		offer   map[string]any
	}{
		{"v2", 2, offerV2("10", vendor, 60)},
		{"v1", 1, offerV1("10", vendor, 60)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, tc.version, Cap(limits()), tc.offer)
			e.rs.Always402 = true
			resp, rec, err := e.get(t)
			if !errors.Is(err, ErrPaidButRefused) || resp != nil {
				t.Fatalf("err %v, resp %v", err, resp)
			}
			if !strings.Contains(err.Error(), e.rs.URL()) || !strings.Contains(err.Error(), `"pay again"`) {
				t.Fatalf("error does not name the resource and the server's reason: %v", err)
			}
			if rec == nil || rec.Signature == nil {
				t.Fatal("no receipt for the authorization the server holds")
			}
			if s, p := e.signer.calls.Load(), e.rs.Payments.Load(); s != 1 || p != 1 {
				t.Fatalf("signed %d, sent %d payments; want 1 and 1", s, p)
			}
		})
	}
}

// A payment the facilitator refuses comes back as a 402 with a settlement
// failure; the client names the reason and does not pay again.
func TestRefusedPaymentNamesReason(t *testing.T) {
	e := setup(t, 2, Cap(limits()), offerV2("10", vendor, 60))
	// The facilitator's clock is past the authorization's window.
	e.client.cfg.Now = func() time.Time { return e.clock.Now().Add(-time.Hour) }
	_, rec, err := e.get(t)
	if !errors.Is(err, ErrPaidButRefused) || !strings.Contains(err.Error(), "invalid_exact_evm_payload_authorization_valid_before") {
		t.Fatalf("err %v", err)
	}
	if rec.Settlement == nil || rec.Settlement.Success {
		t.Fatalf("settlement %+v", rec.Settlement)
	}
	if s := e.signer.calls.Load(); s != 1 {
		t.Fatalf("signed %d times", s)
	}
}

// A later call that meets a new 402 pays again, with a fresh nonce; the
// facilitator refuses a replayed authorization.
func TestLaterCallPaysAgainWithFreshNonce(t *testing.T) {
	e := setup(t, 2, Cap(limits()), offerV2("10", vendor, 60))
	seen := map[common.Hash]bool{}
	var last *Receipt
	for i := range 3 {
		resp, rec, err := e.get(t)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		resp.Body.Close()
		if seen[rec.Transfer.Nonce] {
			t.Fatalf("call %d reused nonce %s", i, rec.Transfer.Nonce)
		}
		seen[rec.Transfer.Nonce] = true
		last = rec
	}
	if got := e.fac.Settled(); len(got) != 3 {
		t.Fatalf("settled %d, want 3", len(got))
	}
	// Replay the last payment header by hand.
	o := &offer{v2: &PaymentRequired{X402Version: 2, Resource: &ResourceInfo{URL: e.rs.URL()}}}
	js := mustJSON(t, offerV2("10", vendor, 60))
	var pr PaymentRequirements
	if err := decodeJSON(js, &pr); err != nil {
		t.Fatal(err)
	}
	o.v2.Accepts = []PaymentRequirements{pr}
	h, err := o.encodePayment(Requirement{Index: 0}, ExactEVMPayload{Signature: hexutil.Encode(last.Signature), Authorization: last.Authorization})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.rs.URL(), nil)
	req.Header.Set(HeaderPaymentSignature, h)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s, err := ParseSettlementResponse(HeaderPaymentResponse, resp.Header.Get(HeaderPaymentResponse))
	if resp.StatusCode != http.StatusPaymentRequired || err != nil || s.ErrorReason != "nonce_already_used" {
		t.Fatalf("replay: status %d, settlement %+v, %v", resp.StatusCode, s, err)
	}
}

func TestRequestBodyIsReplayed(t *testing.T) {
	e := setup(t, 2, Cap(limits()), offerV2("10", vendor, 60))
	const body = `{"query":"latest market data"}`
	// A plain reader has no GetBody: the client buffers it.
	req, _ := http.NewRequest(http.MethodPost, e.rs.URL(), io.NopCloser(strings.NewReader(body)))
	req.GetBody = nil
	resp, _, err := e.client.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// strings.Reader gets a GetBody from NewRequest.
	req, _ = http.NewRequest(http.MethodPost, e.rs.URL(), strings.NewReader(body))
	resp, _, err = e.client.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := e.rs.Bodies()
	if len(got) != 4 {
		t.Fatalf("server saw %d requests, want 4", len(got))
	}
	for i, b := range got {
		if b != body {
			t.Fatalf("request %d body %q", i, b)
		}
	}
}

func TestRequestBodyOverLimit(t *testing.T) {
	e := setup(t, 2, Cap(limits()), offerV2("10", vendor, 60))
	e.client.cfg.MaxRequestBody = 8
	req, _ := http.NewRequest(http.MethodPost, e.rs.URL(), io.NopCloser(strings.NewReader("123456789")))
	req.GetBody = nil
	if _, _, err := e.client.Do(context.Background(), req); !errors.Is(err, ErrRequestBodyTooLarge) {
		t.Fatalf("err %v", err)
	}
	if n := len(e.rs.Bodies()); n != 0 {
		t.Fatalf("server saw %d requests", n)
	}
}

// A chooser that returns something other than an offered requirement (a
// lower amount, say) is refused.
func TestChooserMustReturnOffered(t *testing.T) {
	for name, choose := range map[string]Chooser{
		"changed copy": func(reqs []Requirement) (Requirement, error) {
			r := reqs[0]
			r.Amount = big.NewInt(1)
			return r, nil
		},
		"changed in place": func(reqs []Requirement) (Requirement, error) {
			reqs[0].Amount.SetInt64(1)
			return reqs[0], nil
		},
		"made up": func(reqs []Requirement) (Requirement, error) {
			return Requirement{Index: 7, Amount: big.NewInt(1)}, nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := setup(t, 2, choose, offerV2("10", vendor, 60))
			_, _, err := e.get(t)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not offered") {
				t.Fatalf("err %v", err)
			}
			if e.signer.calls.Load() != 0 {
				t.Fatal("signed")
			}
		})
	}
}

// wrongSigner claims one address and signs with another key.
type wrongSigner struct{ *keySigner }

func (w wrongSigner) Address() common.Address { return stranger }

func TestSignatureMustRecoverToPayer(t *testing.T) {
	e := setup(t, 2, Cap(limits()), offerV2("10", vendor, 60))
	e.client.cfg.Signer = wrongSigner{e.signer}
	_, rec, err := e.get(t)
	if !errors.Is(err, ErrBadSignature) || rec != nil {
		t.Fatalf("err %v", err)
	}
	if e.rs.Payments.Load() != 0 {
		t.Fatal("a bad signature was sent")
	}
}

// Signing that outlasts the window (a guardian slow to approve) leaves an
// authorization that is not sent.
func TestWindowRunsOutWhileSigning(t *testing.T) {
	e := setup(t, 2, Cap(limits()), offerV2("10", vendor, 60))
	e.signer.before = func() { e.clock.Advance(55 * time.Second) }
	_, _, err := e.get(t)
	if !errors.Is(err, ErrWindow) || !strings.Contains(err.Error(), "after signing") {
		t.Fatalf("err %v", err)
	}
	if e.rs.Payments.Load() != 0 {
		t.Fatal("an expiring authorization was sent")
	}
}

// The paid retry does not follow a redirect: the payment goes to the
// server that asked for it only.
func TestPaidRetryFollowsNoRedirect(t *testing.T) {
	var leaked bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked = r.Header.Get(HeaderPaymentSignature) != ""
	}))
	defer elsewhere.Close()
	e := setup(t, 2, Cap(limits()), offerV2("10", vendor, 60))
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderPaymentSignature) != "" {
			http.Redirect(w, r, elsewhere.URL, http.StatusTemporaryRedirect)
			return
		}
		e.rs.ServeHTTP(w, r)
	}))
	defer redirecting.Close()
	req, _ := http.NewRequest(http.MethodGet, redirecting.URL, nil)
	resp, rec, err := e.client.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || rec == nil || leaked {
		t.Fatalf("status %d, receipt %v, leaked %v", resp.StatusCode, rec, leaked)
	}
}

func TestPaymentHeaderAlreadySet(t *testing.T) {
	e := setup(t, 2, Cap(limits()), offerV2("10", vendor, 60))
	req, _ := http.NewRequest(http.MethodGet, e.rs.URL(), nil)
	req.Header.Set(HeaderPaymentV1, "x")
	if _, _, err := e.client.Do(context.Background(), req); err == nil || !strings.Contains(err.Error(), "already carries") {
		t.Fatalf("err %v", err)
	}
}

func TestNewNeedsSigner(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("no error without a signer")
	}
	if _, err := New(Config{Signer: newKeySigner(t), MinWindow: time.Hour}); err == nil {
		t.Fatal("MinWindow over MaxWindow accepted")
	}
}
