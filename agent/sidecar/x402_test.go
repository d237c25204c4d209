package sidecar_test

import (
	"context"
	"errors"
	"github.com/custos-wallet/custos/agent/x402/x402test"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agent/sidecar"
	"github.com/custos-wallet/custos/agent/x402"
	"github.com/ethereum/go-ethereum/common"
)

// offer is one x402 v2 requirement of the test token.
func offer(amount string, payTo common.Address, timeout int) map[string]any {
	return map[string]any{
		"scheme": "exact", "network": "eip155:1337", "amount": amount, "asset": usdc.Hex(), "payTo": payTo.Hex(),
		"maxTimeoutSeconds": timeout, "extra": map[string]any{"name": "USD Coin", "version": "2"},
	}
}

func fetch(t *testing.T, p *x402.Client, url string) (string, *x402.Receipt, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, rc, err := p.Do(context.Background(), req)
	if err != nil {
		return "", rc, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d %s", url, resp.StatusCode, b)
	}
	return string(b), rc, nil
}

// x402 against a resource server and a facilitator written from the
// specification: the agent pays once, through the cluster, and gets the
// resource; a price over the policy's cap, a payee outside its list and a
// window too short are each refused without a signature; among several
// offers the one the policy allows is paid; a second 402 for the same
// resource pays again only while the budget lasts. The MCP tool pays too.
// The steps share the policy's budget of 0.025 USDC a day, in order.
func TestX402PaysUnderPolicy(t *testing.T) {
	w := setup(t)
	wl := w.wallet(t, 30*time.Second, w.hot)
	payer, err := wl.Payer(sidecar.PayConfig{From: w.hot.Address})
	if err != nil {
		t.Fatal(err)
	}
	f := x402test.NewFacilitator(t, clock{}.Now)

	// 0.01 USDC to payee1: paid once, resource served (budget used: 0.01).
	rs := x402test.NewResourceServer(t, f, 2, offer("10000", payee1, 60))
	body, rc, err := fetch(t, payer, rs.URL())
	if err != nil || body != "the resource" || rc == nil {
		t.Fatalf("paid fetch: %q %v %+v", body, err, rc)
	}
	st := f.Settled()
	if len(st) != 1 || st[0].From != w.hot.Address || st[0].To != payee1 || st[0].Value.Int64() != 10000 || rs.Payments.Load() != 1 {
		t.Fatalf("settled %+v, payments %d", st, rs.Payments.Load())
	}
	if rc.Settlement == nil || !rc.Settlement.Success {
		t.Fatalf("receipt settlement %+v", rc.Settlement)
	}

	refused := func(name string, want error, text string, accepts ...map[string]any) {
		t.Helper()
		rs := x402test.NewResourceServer(t, f, 2, accepts...)
		before := len(f.Settled())
		_, rc, err := fetch(t, payer, rs.URL())
		if !errors.Is(err, want) || !strings.Contains(err.Error(), text) || rc != nil || rs.Payments.Load() != 0 || len(f.Settled()) != before {
			t.Fatalf("%s: err %v (want %v mentioning %q) receipt %+v payments %d", name, err, want, text, rc, rs.Payments.Load())
		}
	}
	refused("over the cap", x402.ErrRefused, "exceeds amount_max", offer("10001", payee1, 60))
	refused("payee not allowed", x402.ErrRefused, "not in list payees", offer("1000", stranger, 60))
	refused("window too short", x402.ErrWindow, "", offer("1000", payee1, 1))

	// Several offers: the cheapest is to a stranger and one is over the
	// cap; the one the policy allows is paid (budget used: 0.015).
	multi := x402test.NewResourceServer(t, f, 2, offer("1000", stranger, 60), offer("20000", payee2, 60), offer("5000", payee2, 60))
	if _, rc, err := fetch(t, payer, multi.URL()); err != nil || rc.Requirement.Index != 2 || rc.Requirement.PayTo != payee2 {
		t.Fatalf("multi-offer: %v %+v", err, rc)
	}

	// The MCP tool pays a 0.005 USDC resource (budget used: 0.02).
	cs, _ := mcpSession(t, w, wl)
	again := x402test.NewResourceServer(t, f, 2, offer("5000", payee1, 60))
	res, out := call(t, cs, "pay_x402", map[string]any{"url": again.URL()})
	if res.IsError || out["paid"] != true || out["body"] != "the resource" || out["amount"] != "5000" {
		t.Fatalf("pay_x402: %s %v", resultText(res), out)
	}
	// A second 402 for the same resource is paid again, within budget
	// (0.025)...
	if _, rc, err := fetch(t, payer, again.URL()); err != nil || rc == nil {
		t.Fatalf("second payment within budget: %v", err)
	}
	if again.Payments.Load() != 2 {
		t.Fatalf("payments %d, want 2", again.Payments.Load())
	}
	// ...and a third is refused by the budget, with nothing signed.
	_, rc, err = fetch(t, payer, again.URL())
	if !errors.Is(err, x402.ErrRefused) || rc != nil || again.Payments.Load() != 2 || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("over budget: %v %+v payments %d", err, rc, again.Payments.Load())
	}
	res, out = call(t, cs, "pay_x402", map[string]any{"url": again.URL()})
	if !res.IsError || out["paid"] != false || !strings.Contains(resultText(res), "budget") {
		t.Fatalf("pay_x402 over budget: isError %v %s %v", res.IsError, resultText(res), out)
	}
	if n := len(f.Settled()); n != 4 {
		t.Fatalf("%d transfers settled, want 4", n)
	}
}
