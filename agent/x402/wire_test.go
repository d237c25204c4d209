package x402

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/custos-wallet/custos/chain"
)

// specVectors reads testdata/spec-vectors.txt: header values copied from
// the specification's examples.
func specVectors(t testing.TB) map[string]string {
	t.Helper()
	f, err := os.Open("testdata/spec-vectors.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("bad vector line %q", line)
		}
		out[name] = value
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The specification's examples parse, and the example signature recovers
// to the example payer under the typed data this package builds: a
// known-answer test of the EIP-712 domain and struct.
func TestSpecVectors(t *testing.T) {
	v := specVectors(t)
	pr, err := ParsePaymentRequired(v["v2-payment-required"])
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := pr.Requirements()
	if err != nil {
		t.Fatal(err)
	}
	r := reqs[0]
	if r.Network != baseSepolia || r.ChainID.Int64() != 84532 || r.Amount.Int64() != 10000 || r.Asset != usdc || r.PayTo != vendor ||
		r.MaxTimeout != time.Minute || r.TokenName != "USDC" || r.TokenVersion != "2" || r.Resource != "https://api.example.com/premium-data" || r.Description != "Access to premium market data" {
		t.Fatalf("requirement %+v", r)
	}
	p, err := ParsePaymentPayload(v["v2-payment-signature"])
	if err != nil {
		t.Fatal(err)
	}
	if p.Accepted.Amount != "10000" || p.Resource == nil || p.Resource.URL != r.Resource {
		t.Fatalf("payload %+v", p)
	}
	a := p.Payload.Authorization
	tr := Transfer{
		From: common.HexToAddress(a.From), To: common.HexToAddress(a.To), Value: big.NewInt(10000),
		ValidAfter: 1740672089, ValidBefore: 1740672154, Nonce: common.HexToHash(a.Nonce),
	}
	if tr.Authorization() != a {
		t.Fatalf("wire form %+v, spec %+v", tr.Authorization(), a)
	}
	sig := hexutil.MustDecode(p.Payload.Signature)
	if _, err := checkSignature(tr.TypedData(r), sig, tr.From); err != nil {
		t.Fatalf("spec signature: %v", err)
	}
	p1, err := ParsePaymentPayloadV1(v["v1-x-payment"])
	if err != nil || p1.Network != "base-sepolia" || p1.Payload.Signature != p.Payload.Signature {
		t.Fatalf("v1 payload %+v: %v", p1, err)
	}
	for name, header := range map[string]string{"v2-payment-response-success": HeaderPaymentResponse, "v1-x-payment-response": HeaderPaymentResponseV1} {
		s, err := ParseSettlementResponse(header, v[name])
		if err != nil || !s.Success || s.Payer != a.From {
			t.Fatalf("%s: %+v, %v", name, s, err)
		}
	}
	s, err := ParseSettlementResponse(HeaderPaymentResponse, v["v2-payment-response-failure"])
	if err != nil || s.Success || s.ErrorReason != "insufficient_funds" {
		t.Fatalf("failure: %+v, %v", s, err)
	}
	body, err := os.ReadFile("testdata/spec-v1-402.json") // specs/transports-v1/http.md example
	if err != nil {
		t.Fatal(err)
	}
	pr1, err := ParsePaymentRequiredV1(body)
	if err != nil {
		t.Fatal(err)
	}
	reqs1, err := pr1.Requirements()
	if err != nil || reqs1[0].Network != baseSepolia || reqs1[0].Amount.Int64() != 10000 || reqs1[0].Version != 1 {
		t.Fatalf("v1 requirements %+v: %v", reqs1, err)
	}
}

// The payment this client builds has the spec's field names.
func TestPaymentPayloadFieldNames(t *testing.T) {
	v := specVectors(t)
	pr, err := ParsePaymentRequired(v["v2-payment-required"])
	if err != nil {
		t.Fatal(err)
	}
	reqs, _ := pr.Requirements()
	o := &offer{v2: pr, reqs: reqs}
	h, err := o.encodePayment(reqs[0], ExactEVMPayload{Signature: "0x00", Authorization: Authorization{From: "a", To: "b", Value: "1", ValidAfter: "2", ValidBefore: "3", Nonce: "0x04"}})
	if err != nil {
		t.Fatal(err)
	}
	ours := keysOf(t, h)
	spec := keysOf(t, v["v2-payment-signature"])
	if strings.Join(ours, ",") != strings.Join(spec, ",") {
		t.Fatalf("field names\n ours %v\n spec %v", ours, spec)
	}
}

// keysOf lists the JSON key paths of a base64 JSON header.
func keysOf(t *testing.T, header string) []string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for k, x := range m {
			out = append(out, prefix+k)
			walk(prefix+k+".", x)
		}
	}
	walk("", v)
	slices.Sort(out)
	return out
}

// The typed data is what package chain decodes as an EIP-3009 spend, so the
// cluster's policy counts an x402 payment as spending.
func TestTypedDataIsAnEIP3009Spend(t *testing.T) {
	r := Requirement{Index: 0, Scheme: SchemeExact, Network: baseSepolia, ChainID: big.NewInt(84532), Amount: big.NewInt(777),
		Asset: usdc, PayTo: vendor, MaxTimeout: time.Minute, TokenName: "USDC", TokenVersion: "2"}
	nonce, err := NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	from := crypto.PubkeyToAddress(newKeySigner(t).key.PublicKey)
	td := Transfer{From: from, To: vendor, Value: r.Amount, ValidAfter: 1, ValidBefore: 2, Nonce: nonce}.TypedData(r)
	// Through JSON, as the sidecar sends it to the cluster.
	js, err := json.Marshal(td)
	if err != nil {
		t.Fatal(err)
	}
	back, err := chain.DecodeTypedDataJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	d, err := chain.DescribeTypedData(back)
	if err != nil {
		t.Fatal(err)
	}
	want := chain.Spend{Kind: chain.SpendTransferWithAuthorization, Token: usdc, From: from, To: vendor, Amount: big.NewInt(777)}
	if !d.Decoded || len(d.Spends) != 1 || d.ChainID.Int64() != 84532 || d.VerifyingContract != usdc {
		t.Fatalf("described %+v", d)
	}
	s := d.Spends[0]
	if s.Kind != want.Kind || s.Token != want.Token || s.From != want.From || s.To != want.To || s.Amount.Cmp(want.Amount) != 0 || s.Unlimited {
		t.Fatalf("spend %+v, want %+v", s, want)
	}
	h1, _, _ := apitypes.TypedDataAndHash(td)
	if common.BytesToHash(h1) != d.Digest {
		t.Fatal("digest differs after the JSON round trip")
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// v2 builds a PAYMENT-REQUIRED value with accepts replaced by acc.
func v2(acc string) string {
	return b64(`{"x402Version":2,"resource":{"url":"http://x.test/"},"accepts":[` + acc + `]}`)
}

const goodAcc = `{"scheme":"exact","network":"eip155:84532","amount":"10","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e","payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}}`

func acc(replace ...string) string {
	return strings.NewReplacer(replace...).Replace(goodAcc)
}

// Malformed or unusable offers are clear errors, each naming what was
// wrong, and nothing is signed.
func TestMalformedOffers(t *testing.T) {
	many := strings.Repeat(goodAcc+",", MaxAccepts) + goodAcc
	for _, tc := range []struct {
		name   string
		header []string // PAYMENT-REQUIRED values
		body   string
		want   error
		msg    string
	}{
		{"bad base64", []string{"eyJ4!!!"}, "", ErrMalformed, "PAYMENT-REQUIRED header: base64: illegal base64 data at input byte 4"},
		{"base64 with newline", []string{v2(goodAcc)[:8] + "\n" + v2(goodAcc)[8:]}, "", ErrMalformed, "base64"},
		{"bad json", []string{b64(`{"x402Version":2,`)}, "", ErrMalformed, "PAYMENT-REQUIRED header: json: unexpected EOF"},
		{"not an object", []string{b64(`[1]`)}, "", ErrMalformed, "not a JSON object"},
		{"trailing data", []string{b64(`{"x402Version":2} {}`)}, "", ErrMalformed, "trailing data"},
		{"wrong type", []string{b64(`{"x402Version":"2"}`)}, "", ErrMalformed, "x402Version"},
		{"empty header", []string{""}, "", ErrMalformed, "PAYMENT-REQUIRED header is empty"},
		{"two headers", []string{v2(goodAcc), v2(goodAcc)}, "", ErrMalformed, "2 PAYMENT-REQUIRED headers"},
		{"oversize header", []string{strings.Repeat("A", MaxHeaderBytes+4)}, "", ErrTooLarge, "PAYMENT-REQUIRED header is 16388 bytes, limit 16384"},
		{"version 1 in header", []string{b64(`{"x402Version":1,"resource":{"url":"u"},"accepts":[` + goodAcc + `]}`)}, "", ErrMalformed, "x402Version is 1, want 2"},
		{"no resource", []string{b64(`{"x402Version":2,"accepts":[` + goodAcc + `]}`)}, "", ErrMalformed, "resource.url is missing"},
		{"no accepts", []string{b64(`{"x402Version":2,"resource":{"url":"u"},"accepts":[]}`)}, "", ErrMalformed, "accepts is empty"},
		{"too many accepts", []string{v2(many)}, "", ErrTooLarge, "accepts has 33 entries, limit 32"},
		{"missing payTo", []string{v2(acc(`"payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C",`, ""))}, "", ErrMalformed, "accepts[0].payTo is missing"},
		{"unknown scheme", []string{v2(acc(`"exact"`, `"upto"`))}, "", ErrUnsupported, `accepts[0]: unknown scheme "upto"`},
		{"non-EVM network", []string{v2(acc(`eip155:84532`, `solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp`))}, "", ErrUnsupported, "is not an EVM (eip155) network"},
		{"v1 name in v2", []string{v2(acc(`eip155:84532`, `base-sepolia`))}, "", ErrUnsupported, `network "base-sepolia" is not an EVM (eip155) network`},
		{"chain id leading zero", []string{v2(acc(`eip155:84532`, `eip155:084532`))}, "", ErrUnsupported, "chain id is not a positive decimal"},
		{"chain id too big", []string{v2(acc(`eip155:84532`, `eip155:184467440737095516160`))}, "", ErrUnsupported, "chain id out of range"},
		{"amount leading zero", []string{v2(acc(`"10"`, `"010"`))}, "", ErrUnsupported, `amount "010": leading zero`},
		{"amount negative", []string{v2(acc(`"10"`, `"-10"`))}, "", ErrUnsupported, `amount "-10": not a decimal integer`},
		{"amount zero", []string{v2(acc(`"10"`, `"0"`))}, "", ErrUnsupported, `amount "0": zero`},
		{"amount hex", []string{v2(acc(`"10"`, `"0x10"`))}, "", ErrUnsupported, "not a decimal integer"},
		{"amount over uint256", []string{v2(acc(`"10"`, `"`+new(big.Int).Lsh(big.NewInt(1), 256).String()+`"`))}, "", ErrUnsupported, "over 2^256-1"},
		{"bad checksum", []string{v2(acc(`0x209693Bc6afc0C5328bA36FaF03C514EF312287C`, `0x209693bC6afc0C5328bA36FaF03C514EF312287C`))}, "", ErrUnsupported, "payTo \"0x209693bC6afc0C5328bA36FaF03C514EF312287C\": bad EIP-55 checksum"},
		{"short asset", []string{v2(acc(`0x036CbD53842c5426634e7929541eC2318f3dCF7e`, `0x036CbD`))}, "", ErrUnsupported, "asset \"0x036CbD\": not a 0x-prefixed 20-byte hex address"},
		{"zero payee", []string{v2(acc(`0x209693Bc6afc0C5328bA36FaF03C514EF312287C`, `0x0000000000000000000000000000000000000000`))}, "", ErrUnsupported, "zero address"},
		{"negative timeout", []string{v2(acc(`:60`, `:-1`))}, "", ErrUnsupported, "maxTimeoutSeconds -1 is out of range"},
		{"fractional timeout", []string{v2(acc(`:60`, `:1.5`))}, "", ErrMalformed, "maxTimeoutSeconds"},
		{"no extra", []string{v2(acc(`,"extra":{"name":"USDC","version":"2"}`, ``))}, "", ErrUnsupported, "extra is missing"},
		{"no extra.name", []string{v2(acc(`"name":"USDC",`, ``))}, "", ErrUnsupported, "extra.name is missing"},
		{"no extra.version", []string{v2(acc(`,"version":"2"`, ``))}, "", ErrUnsupported, "extra.version is missing"},
		{"permit2", []string{v2(acc(`"extra":{`, `"extra":{"assetTransferMethod":"permit2",`))}, "", ErrUnsupported, `extra.assetTransferMethod "permit2" is not supported`},
		{"all unusable, each named", []string{v2(acc(`"exact"`, `"upto"`) + "," + acc(`"10"`, `"0"`))}, "", ErrUnsupported, `accepts[0]: unknown scheme "upto"; accepts[1]: amount "0": zero`},
		{"v1 body not json", nil, "payment required", ErrMalformed, "no PAYMENT-REQUIRED header, so v1: x402: malformed message: 402 body: json: not a JSON object"},
		{"v1 body oversize", nil, `{"x402Version":1,"error":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, ErrTooLarge, "no PAYMENT-REQUIRED header, and the 402 body is over 65536 bytes"},
		{"v1 unknown network", nil, `{"x402Version":1,"accepts":[{"scheme":"exact","network":"moonchain","maxAmountRequired":"10","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e","payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","resource":"r","maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}}]}`, ErrUnsupported, `unknown v1 network "moonchain"`},
		{"v1 version 2 body", nil, `{"x402Version":2,"accepts":[]}`, ErrMalformed, "x402Version is 2, want 1"},
		{"v1 missing resource", nil, `{"x402Version":1,"accepts":[{"scheme":"exact","network":"base","maxAmountRequired":"10","asset":"a","payTo":"p","maxTimeoutSeconds":60}]}`, ErrMalformed, "accepts[0].resource is missing"},
		{"v1 missing amount", nil, `{"x402Version":1,"accepts":[{"scheme":"exact","network":"base","asset":"a","payTo":"p","resource":"r"}]}`, ErrMalformed, "accepts[0].maxAmountRequired is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for _, h := range tc.header {
					w.Header().Add(HeaderPaymentRequired, h)
				}
				w.WriteHeader(http.StatusPaymentRequired)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			signer := newKeySigner(t)
			c, err := New(Config{Signer: signer, Choose: func(reqs []Requirement) (Requirement, error) { return reqs[0], nil }})
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			resp, rec, err := c.Do(context.Background(), req)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %v\nwant %v naming %q", err, tc.want, tc.msg)
			}
			if !strings.Contains(err.Error(), "402 from "+srv.URL) {
				t.Fatalf("error does not name the server: %v", err)
			}
			if resp != nil || rec != nil || signer.calls.Load() != 0 {
				t.Fatalf("resp %v, receipt %v, signer calls %d", resp, rec, signer.calls.Load())
			}
		})
	}
}

// Usable requirements are offered to the chooser next to unusable ones,
// which are left out.
func TestUnusableRequirementsAreSkipped(t *testing.T) {
	pr, err := ParsePaymentRequired(v2(acc(`"exact"`, `"upto"`) + "," + goodAcc))
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := pr.Requirements()
	if err != nil || len(reqs) != 1 || reqs[0].Index != 1 {
		t.Fatalf("requirements %v: %v", reqs, err)
	}
}

func TestSettlementResponseChecks(t *testing.T) {
	for _, tc := range []struct{ value, msg string }{
		{b64(`{"success":true,"transaction":"0x1"}`), "network is missing"},
		{b64(`{"success":true,"transaction":"","network":"eip155:1"}`), "success without a transaction"},
		{"%%%", "base64"},
	} {
		if _, err := ParseSettlementResponse(HeaderPaymentResponse, tc.value); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err %v, want %q", tc.value, err, tc.msg)
		}
	}
}

// A malformed settlement header on a served resource is reported in the
// Receipt; the resource is still returned.
func TestMalformedSettlementOnSuccess(t *testing.T) {
	signer := newKeySigner(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderPaymentSignature) == "" {
			w.Header().Set(HeaderPaymentRequired, v2(goodAcc))
			w.WriteHeader(http.StatusPaymentRequired)
			return
		}
		w.Header().Set(HeaderPaymentResponse, "not base64!")
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	c, err := New(Config{Signer: signer, Choose: Cap(limits())})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, rec, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if rec.Settlement != nil || !errors.Is(rec.SettlementErr, ErrMalformed) {
		t.Fatalf("receipt %+v", rec)
	}
}

func FuzzParsePaymentRequired(f *testing.F) {
	v := specVectors(f)
	f.Add(v["v2-payment-required"])
	f.Add(v2(goodAcc))
	f.Add(v2(acc(`"exact"`, `"upto"`) + "," + goodAcc))
	f.Add(b64(`{"x402Version":2,"resource":{"url":"u"},"accepts":[{}]}`))
	f.Add("")
	f.Fuzz(func(t *testing.T, header string) {
		pr, err := ParsePaymentRequired(header)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		reqs, err := pr.Requirements()
		if err != nil {
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		for _, r := range reqs {
			if r.Amount.Sign() <= 0 || r.Amount.Cmp(maxUint256) > 0 || r.ChainID.Sign() <= 0 || r.PayTo == (common.Address{}) || r.TokenName == "" {
				t.Fatalf("accepted a bad requirement %+v", r)
			}
			if _, _, err := apitypes.TypedDataAndHash(Transfer{From: vendor, To: r.PayTo, Value: r.Amount, Nonce: common.Hash{1}}.TypedData(r)); err != nil {
				t.Fatalf("typed data of %s: %v", r, err)
			}
		}
		// What parses, re-encoded, parses to the same requirements.
		again, err := EncodeHeader(pr)
		if err != nil {
			t.Fatal(err)
		}
		pr2, err := ParsePaymentRequired(again)
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				return // re-encoding may grow escaped text
			}
			t.Fatalf("re-encoded header: %v", err)
		}
		reqs2, err := pr2.Requirements()
		if err != nil || len(reqs2) != len(reqs) {
			t.Fatalf("re-encoded requirements %v: %v", reqs2, err)
		}
		for i := range reqs {
			if !reqs[i].same(reqs2[i]) {
				t.Fatalf("requirement %d changed: %s, then %s", i, reqs[i], reqs2[i])
			}
		}
	})
}

func FuzzParsePaymentRequiredV1(f *testing.F) {
	body, err := os.ReadFile("testdata/spec-v1-402.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body)
	f.Add([]byte(`{"x402Version":1,"accepts":[{}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		pr, err := ParsePaymentRequiredV1(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if _, err := pr.Requirements(); err != nil && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("unclassified error %v", err)
		}
	})
}

func FuzzParseSettlementResponse(f *testing.F) {
	v := specVectors(f)
	f.Add(v["v2-payment-response-success"])
	f.Add(v["v2-payment-response-failure"])
	f.Fuzz(func(t *testing.T, header string) {
		if _, err := ParseSettlementResponse(HeaderPaymentResponse, header); err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unclassified error %v", err)
		}
	})
}

func TestParseLimits(t *testing.T) {
	body := []byte(`{"x402Version":1,"error":"` + strings.Repeat("x", MaxBodyBytes) + `"}`)
	if _, err := ParsePaymentRequiredV1(body); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "402 body is 65564 bytes, limit 65536") {
		t.Fatalf("err %v", err)
	}
	for name, parse := range map[string]func(string) error{
		HeaderPaymentSignature: func(s string) error { _, err := ParsePaymentPayload(s); return err },
		HeaderPaymentV1:        func(s string) error { _, err := ParsePaymentPayloadV1(s); return err },
		HeaderPaymentResponse:  func(s string) error { _, err := ParseSettlementResponse(HeaderPaymentResponse, s); return err },
	} {
		if err := parse(strings.Repeat("A", MaxHeaderBytes+1)); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), name+" header is 16385 bytes") {
			t.Errorf("%s: err %v", name, err)
		}
	}
}
