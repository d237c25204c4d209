package sidecar_test

import (
	"context"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agent/mcp"
	"github.com/custos-wallet/custos/agent/sidecar"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// mcpSession is a go-sdk client connected in memory to an MCP server over
// wl and a JSON-RPC endpoint of its own.
func mcpSession(t *testing.T, w *world, wl *sidecar.Wallet) (*sdk.ClientSession, *mcp.Server) {
	t.Helper()
	ctx := context.Background()
	ep := w.endpoint(t, wl)
	srv, err := mcp.New(ctx, mcp.Config{Wallet: wl, Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	st, ct := sdk.NewInMemoryTransports()
	ss, err := srv.MCP().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test-host", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs, srv
}

func call(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any) (*sdk.CallToolResult, map[string]any) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	var out map[string]any
	if res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		_ = json.Unmarshal(b, &out)
	}
	return res, out
}

func resultText(r *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// The go-sdk client lists every tool with its schemas, destructive
// annotations on the tools that move funds; transfer moves ether and is
// mined; explain answers allowed and denied with the rule; a denied
// transfer is an isError result naming its rule and what to do next.
func TestMCPToolsTransferExplainDenial(t *testing.T) {
	w := setup(t)
	cs, _ := mcpSession(t, w, w.wallet(t, 30*time.Second, w.hot))
	ctx := context.Background()

	list, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"explain", "get_balance", "get_wallet", "pay_x402", "request_status", "send_transaction", "sign_message", "sign_typed_data", "transfer", "wait_for_approval"}
	var names []string
	for _, tool := range list.Tools {
		names = append(names, tool.Name)
		if tool.InputSchema == nil || tool.OutputSchema == nil {
			t.Errorf("tool %s lacks a schema: in %v out %v", tool.Name, tool.InputSchema, tool.OutputSchema)
		}
		moves := slices.Contains([]string{"transfer", "send_transaction", "pay_x402", "sign_message", "sign_typed_data", "wait_for_approval"}, tool.Name)
		destructive := tool.Annotations != nil && !tool.Annotations.ReadOnlyHint && (tool.Annotations.DestructiveHint == nil || *tool.Annotations.DestructiveHint)
		if moves != destructive {
			t.Errorf("tool %s: destructive %v, want %v (annotations %+v)", tool.Name, destructive, moves, tool.Annotations)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Fatalf("tools %v, want %v", names, want)
	}
	in, _ := json.Marshal(toolByName(list.Tools, "transfer").InputSchema)
	if !strings.Contains(string(in), `"amount"`) || !strings.Contains(string(in), `"required":["to","amount"]`) {
		t.Errorf("transfer input schema %s", in)
	}

	res, out := call(t, cs, "get_wallet", nil)
	if res.IsError || out["agent"] != "bot" || !strings.Contains(resultText(res), w.hot.Address.Hex()) {
		t.Fatalf("get_wallet: %s %v", resultText(res), out)
	}

	res, out = call(t, cs, "explain", map[string]any{"to": vendor1.Hex(), "amount": "0.005"})
	if res.IsError || out["allowed"] != true || out["rule"] != "small-payments" || out["tier"] != "hot" {
		t.Fatalf("explain allowed: %s %v", resultText(res), out)
	}
	res, out = call(t, cs, "explain", map[string]any{"to": vendor1.Hex(), "amount": "0.5"})
	if res.IsError || out["allowed"] != false || !strings.Contains(resultText(res), "denied") {
		t.Fatalf("explain over the limit: %s %v", resultText(res), out)
	}

	before, _ := w.eth.BalanceAt(ctx, vendor2, nil)
	res, out = call(t, cs, "transfer", map[string]any{"to": vendor2.Hex(), "amount": "0.002"})
	if res.IsError || out["status"] != "sent" {
		t.Fatalf("transfer: %s %v", resultText(res), out)
	}
	if _, err := w.mined(ctx, []common.Hash{common.HexToHash(out["tx_hash"].(string))}); err != nil {
		t.Fatal(err)
	}
	after, _ := w.eth.BalanceAt(ctx, vendor2, nil)
	if new(big.Int).Sub(after, before).Cmp(big.NewInt(2e15)) != 0 {
		t.Fatalf("vendor balance %s -> %s", before, after)
	}

	res, out = call(t, cs, "transfer", map[string]any{"to": blocked.Hex(), "amount": "0.001"})
	if !res.IsError || out["rule"] != "blocked-destinations" || out["request_id"] == "" || !strings.Contains(resultText(res), "blocked-destinations") {
		t.Fatalf("denied transfer: isError %v %s %v", res.IsError, resultText(res), out)
	}
	res, out = call(t, cs, "request_status", map[string]any{"request_id": out["request_id"]})
	if res.IsError || out["status"] != "denied" {
		t.Fatalf("request_status: %s %v", resultText(res), out)
	}

	// Bad input is a tool error naming the field.
	for _, bad := range []map[string]any{
		{"to": "0x12", "amount": "1"},
		{"to": vendor1.Hex(), "amount": "1e3"},
		{"to": vendor1.Hex(), "amount": "0.1", "token": "DOGE"},
	} {
		res, _ := call(t, cs, "transfer", bad)
		if !res.IsError {
			t.Errorf("transfer %v accepted: %s", bad, resultText(res))
		}
	}
}

func toolByName(ts []*sdk.Tool, name string) *sdk.Tool {
	for _, t := range ts {
		if t.Name == name {
			return t
		}
	}
	return &sdk.Tool{}
}

// A guarded transfer through MCP is pending with the request id;
// wait_for_approval returns it sent once alice approved.
func TestMCPWaitForApproval(t *testing.T) {
	w := setup(t)
	wl := w.wallet(t, 2*time.Second, w.vault)
	cs, _ := mcpSession(t, w, wl)
	res, out := call(t, cs, "transfer", map[string]any{"to": bigShop.Hex(), "amount": "0.5"})
	if res.IsError || out["status"] != "pending_approval" || out["request_id"] == "" {
		t.Fatalf("guarded transfer: %s %v", resultText(res), out)
	}
	id := out["request_id"].(string)
	r, err := wl.Status(context.Background(), ids.RequestID(id))
	if err != nil {
		t.Fatal(err)
	}
	w.approve(t, r, w.vault)
	res, out = call(t, cs, "wait_for_approval", map[string]any{"request_id": id, "timeout_seconds": 120})
	if res.IsError || out["status"] != "sent" {
		t.Fatalf("wait_for_approval: %s %v", resultText(res), out)
	}
	rs, err := w.mined(context.Background(), []common.Hash{common.HexToHash(out["tx_hash"].(string))})
	if err != nil || rs[0].Status != types.ReceiptStatusSuccessful {
		t.Fatalf("approved transfer not mined: %v", err)
	}
}

// The streamable HTTP transport refuses a request without the bearer
// token, and serves the go-sdk client that has it.
func TestMCPStreamableHTTPBearer(t *testing.T) {
	w := setup(t)
	ctx := context.Background()
	wl := w.wallet(t, 30*time.Second, w.hot)
	srv, err := mcp.New(ctx, mcp.Config{Wallet: wl, Endpoint: w.endpoint(t, wl)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := srv.Handler("short"); err == nil {
		t.Fatal("a short bearer token was accepted")
	}
	const token = "0123456789abcdef0123456789abcdef"
	h, err := srv.Handler(token)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptestServer(t, h)
	resp, err := http.Post(hs+"/mcp", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: HTTP %d", resp.StatusCode)
	}
	// With the token, but from a page (Origin) or by a name that is not
	// loopback (DNS rebinding): refused.
	for name, set := range map[string]func(*http.Request){
		"origin":  func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") },
		"rebound": func(r *http.Request) { r.Host = "evil.example:8547" },
		"wrong":   func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+strings.ToUpper(token)) },
	} {
		req, _ := http.NewRequest("POST", hs+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: HTTP %d", name, resp.StatusCode)
		}
	}
	tr := &sdk.StreamableClientTransport{Endpoint: hs + "/mcp", HTTPClient: &http.Client{Transport: bearer{token}}}
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test-host", Version: "1"}, nil).Connect(ctx, tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, out := call(t, cs, "get_balance", nil)
	if res.IsError || out["asset"] != "ETH" || out["balance"] == "" {
		t.Fatalf("get_balance over HTTP: %s %v", resultText(res), out)
	}
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

// sign_message and sign_typed_data return signatures that recover to the
// wallet's address; send_transaction with calldata no rule allows is a
// denial naming the default rule.
func TestMCPSigningTools(t *testing.T) {
	w := setup(t)
	cs, _ := mcpSession(t, w, w.wallet(t, 30*time.Second, w.hot))
	msg := "Sign in to example.org as the bot"
	res, out := call(t, cs, "sign_message", map[string]any{"message": msg})
	if res.IsError || out["status"] != "signed" {
		t.Fatalf("sign_message: %s %v", resultText(res), out)
	}
	sig, _ := hexutil.Decode(out["signature"].(string))
	if got := recoverAddr(t, accounts.TextHash([]byte(msg)), sig); got != w.hot.Address {
		t.Fatalf("sign_message recovers to %s", got)
	}
	td := map[string]any{
		"types": map[string]any{
			"EIP712Domain": []map[string]string{{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}},
			"Login":        []map[string]string{{"name": "user", "type": "address"}},
		},
		"primaryType": "Login",
		"domain":      map[string]any{"name": "App", "chainId": "1337"},
		"message":     map[string]any{"user": w.hot.Address.Hex()},
	}
	res, out = call(t, cs, "sign_typed_data", map[string]any{"typed_data": td})
	if res.IsError || out["status"] != "signed" {
		t.Fatalf("sign_typed_data: %s %v", resultText(res), out)
	}
	js, _ := json.Marshal(td)
	var typed apitypes.TypedData
	if err := json.Unmarshal(js, &typed); err != nil {
		t.Fatal(err)
	}
	digest, _, err := apitypes.TypedDataAndHash(typed)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ = hexutil.Decode(out["signature"].(string))
	if got := recoverAddr(t, digest, sig); got != w.hot.Address {
		t.Fatalf("sign_typed_data recovers to %s", got)
	}
	res, out = call(t, cs, "send_transaction", map[string]any{"to": vendor1.Hex(), "data": "0xdeadbeef"})
	if !res.IsError || out["status"] != "denied" || out["rule"] != "default" {
		t.Fatalf("send_transaction with calldata: %s %v", resultText(res), out)
	}
	if res, _ := call(t, cs, "send_transaction", map[string]any{"to": vendor1.Hex(), "data": "0xzz"}); !res.IsError || !strings.Contains(resultText(res), "data") {
		t.Fatalf("send_transaction with bad hex: %s", resultText(res))
	}
}
