package sidecar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agent/rpc"
	"github.com/custos-wallet/custos/agent/sidecar"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	gethrpc "github.com/ethereum/go-ethereum/rpc"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

var milli = big.NewInt(1e15) // 0.001 ether

func dial(t *testing.T, url string) (*gethrpc.Client, *ethclient.Client) {
	t.Helper()
	c, err := gethrpc.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, ethclient.NewClient(c)
}

// errorData returns the JSON-RPC code and data of err.
func errorData(t *testing.T, err error) (int, map[string]any) {
	t.Helper()
	var ce gethrpc.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) carries no JSON-RPC code", err, err)
	}
	var data map[string]any
	var de gethrpc.DataError
	if errors.As(err, &de) {
		b, _ := json.Marshal(de.ErrorData())
		_ = json.Unmarshal(b, &data)
	}
	return ce.ErrorCode(), data
}

// ethclient.SendTransaction through the endpoint: go-ethereum's own
// client sends a raw transaction, which the endpoint passes upstream; a
// transaction the endpoint fills, signs through the cluster and sends
// (eth_sendTransaction) is mined and moves the balance.
func TestSendTransactionThroughEndpointMined(t *testing.T) {
	w := setup(t)
	wl := w.wallet(t, 30*time.Second, w.hot)
	srv := w.endpoint(t, wl)
	rc, ec := dial(t, srv.URL())
	ctx := context.Background()

	accs, err := wl.Accounts(ctx)
	if err != nil || !slices.Equal(accs, []common.Address{w.hot.Address}) {
		t.Fatalf("accounts %v %v, want the hot key %s", accs, err, w.hot.Address)
	}
	var listed []common.Address
	if err := rc.CallContext(ctx, &listed, "eth_accounts"); err != nil || !slices.Equal(listed, accs) {
		t.Fatalf("eth_accounts %v %v", listed, err)
	}
	id, err := ec.ChainID(ctx)
	if err != nil || id.Int64() != chainID {
		t.Fatalf("chain id %v %v", id, err)
	}

	before, err := w.eth.BalanceAt(ctx, vendor1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var h common.Hash
	if err := rc.CallContext(ctx, &h, "eth_sendTransaction", map[string]any{
		"from": w.hot.Address, "to": vendor1, "value": (*hexutil.Big)(milli)}); err != nil {
		t.Fatalf("eth_sendTransaction: %v", err)
	}
	rs, err := w.mined(ctx, []common.Hash{h})
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Status != types.ReceiptStatusSuccessful {
		t.Fatalf("receipt %+v", rs[0])
	}
	after, _ := w.eth.BalanceAt(ctx, vendor1, nil)
	if new(big.Int).Sub(after, before).Cmp(milli) != 0 {
		t.Fatalf("vendor balance moved %s -> %s, want +%s", before, after, milli)
	}
	tx, _, err := ec.TransactionByHash(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if from, err := types.Sender(types.LatestSignerForChainID(big.NewInt(chainID)), tx); err != nil || from != w.hot.Address {
		t.Fatalf("sender %s %v, want %s", from, err, w.hot.Address)
	}

	// ethclient.SendTransaction with a transaction the cluster signed
	// without sending (eth_signTransaction): the endpoint forwards
	// eth_sendRawTransaction upstream.
	nonce, err := ec.PendingNonceAt(ctx, w.hot.Address)
	if err != nil {
		t.Fatal(err)
	}
	var raw hexutil.Bytes
	if err := rc.CallContext(ctx, &raw, "eth_signTransaction", map[string]any{
		"from": w.hot.Address, "to": vendor2, "value": (*hexutil.Big)(milli), "nonce": hexutil.Uint64(nonce),
		"gas": hexutil.Uint64(21000), "maxFeePerGas": (*hexutil.Big)(big.NewInt(50e9)), "maxPriorityFeePerGas": (*hexutil.Big)(big.NewInt(1e9))}); err != nil {
		t.Fatalf("eth_signTransaction: %v", err)
	}
	signed := new(types.Transaction)
	if err := signed.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	if err := ec.SendTransaction(ctx, signed); err != nil {
		t.Fatalf("ethclient.SendTransaction: %v", err)
	}
	if rs, err := w.mined(ctx, []common.Hash{signed.Hash()}); err != nil || rs[0].Status != types.ReceiptStatusSuccessful {
		t.Fatalf("raw transaction not mined: %v", err)
	}
}

// A batch mixes wallet methods (answered by the endpoint) with upstream
// ones, answered in order with their ids.
func TestBatch(t *testing.T) {
	w := setup(t)
	srv := w.endpoint(t, w.wallet(t, 30*time.Second, w.hot))
	rc, _ := dial(t, srv.URL())
	var accs []common.Address
	var cid hexutil.Big
	var bal hexutil.Big
	var h common.Hash
	batch := []gethrpc.BatchElem{
		{Method: "eth_accounts", Result: &accs},
		{Method: "eth_chainId", Result: &cid},
		{Method: "eth_getBalance", Args: []any{w.hot.Address, "latest"}, Result: &bal},
		{Method: "eth_sendTransaction", Args: []any{map[string]any{"from": w.hot.Address, "to": vendor2, "value": (*hexutil.Big)(milli)}}, Result: &h},
		{Method: "no_suchMethod", Result: new(json.RawMessage)},
	}
	if err := rc.BatchCallContext(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	for i, b := range batch[:4] {
		if b.Error != nil {
			t.Fatalf("batch element %d (%s): %v", i, b.Method, b.Error)
		}
	}
	if batch[4].Error == nil {
		t.Fatal("unknown method answered without an error")
	}
	if len(accs) != 1 || accs[0] != w.hot.Address || cid.ToInt().Int64() != chainID || bal.ToInt().Sign() <= 0 {
		t.Fatalf("batch answers: accounts %v chain %v balance %v", accs, cid.ToInt(), bal.ToInt())
	}
	if rs, err := w.mined(context.Background(), []common.Hash{h}); err != nil || rs[0].Status != types.ReceiptStatusSuccessful {
		t.Fatalf("batched send not mined: %v", err)
	}
}

// Twenty concurrent eth_sendTransaction calls from one address are all
// signed by the cluster and mined, with distinct nonces that leave no gap.
func TestConcurrentSendsGapFreeNonces(t *testing.T) {
	w := setup(t)
	srv := w.endpoint(t, w.wallet(t, 60*time.Second, w.hot))
	rc, ec := dial(t, srv.URL())
	ctx := context.Background()
	start, err := ec.PendingNonceAt(ctx, w.hot.Address)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	hashes := make([]common.Hash, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = rc.CallContext(ctx, &hashes[i], "eth_sendTransaction", map[string]any{
				"from": w.hot.Address, "to": vendor1, "value": (*hexutil.Big)(big.NewInt(int64(1000 + i)))})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	rs, err := w.mined(ctx, hashes)
	if err != nil {
		t.Fatal(err)
	}
	var nonces []uint64
	for i, r := range rs {
		if r.Status != types.ReceiptStatusSuccessful {
			t.Fatalf("send %d failed on chain", i)
		}
		tx, _, err := ec.TransactionByHash(ctx, hashes[i])
		if err != nil {
			t.Fatal(err)
		}
		nonces = append(nonces, tx.Nonce())
	}
	slices.Sort(nonces)
	for i, got := range nonces {
		if got != start+uint64(i) {
			t.Fatalf("nonces %v, want %d..%d without gaps", nonces, start, start+n-1)
		}
	}
}

// A denial is error 4001 whose data names the rule, the reason and the
// request id; the next send uses the nonce the denied one did not spend.
func TestDenialNamesRule(t *testing.T) {
	w := setup(t)
	wl := w.wallet(t, 30*time.Second, w.hot)
	srv := w.endpoint(t, wl)
	rc, ec := dial(t, srv.URL())
	ctx := context.Background()
	nonce, _ := ec.PendingNonceAt(ctx, w.hot.Address)
	var h common.Hash
	err := rc.CallContext(ctx, &h, "eth_sendTransaction", map[string]any{"from": w.hot.Address, "to": blocked, "value": "0x1"})
	if err == nil {
		t.Fatal("a payment to a blocked destination was sent")
	}
	code, data := errorData(t, err)
	if code != rpc.CodeDenied || data["rule"] != "blocked-destinations" || data["requestId"] == "" || data["reason"] == "" {
		t.Fatalf("denial: code %d data %v (%v)", code, data, err)
	}
	r, err := wl.Status(ctx, ids.RequestID(data["requestId"].(string)))
	if err != nil || r.State != api.StateDenied {
		t.Fatalf("denied request %v: %+v", err, r)
	}
	// Default deny names its rule too.
	err = rc.CallContext(ctx, &h, "eth_sendTransaction", map[string]any{"from": w.hot.Address, "to": stranger, "value": "0x1"})
	if code, data := errorData(t, err); code != rpc.CodeDenied || data["rule"] != "default" {
		t.Fatalf("default deny: code %d data %v", code, data)
	}
	if err := rc.CallContext(ctx, &h, "eth_sendTransaction", map[string]any{"from": w.hot.Address, "to": vendor1, "value": "0x1"}); err != nil {
		t.Fatal(err)
	}
	tx, _, err := ec.TransactionByHash(ctx, h)
	if err != nil || tx.Nonce() != nonce {
		t.Fatalf("after denials the next send has nonce %v (%v), want %d", tx.Nonce(), err, nonce)
	}
	if _, err := w.mined(ctx, []common.Hash{h}); err != nil {
		t.Fatal(err)
	}
}

// A guarded-tier send waits the configured time, then fails with code
// -32002 and the request id; once alice approves, the request is signed
// and its transaction can be sent.
func TestGuardedSendPendingThenApproved(t *testing.T) {
	w := setup(t)
	wl := w.wallet(t, 2*time.Second, w.vault)
	srv := w.endpoint(t, wl)
	rc, ec := dial(t, srv.URL())
	ctx := context.Background()
	before, _ := w.eth.BalanceAt(ctx, bigShop, nil)
	var h common.Hash
	err := rc.CallContext(ctx, &h, "eth_sendTransaction", map[string]any{"from": w.vault.Address, "to": bigShop, "value": (*hexutil.Big)(big.NewInt(1e18))})
	if err == nil {
		t.Fatal("a guarded send went through without approval")
	}
	code, data := errorData(t, err)
	if code != rpc.CodePending || data["requestId"] == nil {
		t.Fatalf("pending: code %d data %v (%v)", code, data, err)
	}
	id := ids.RequestID(data["requestId"].(string))
	r, err := wl.Status(ctx, id)
	if err != nil || r.State != api.StatePendingApproval || r.Tier != "guarded" || r.RuleID != "large-payments" {
		t.Fatalf("pending request %v: %+v", err, r)
	}
	w.approve(t, r, w.vault)
	final, err := wl.WaitFor(ctx, id, 3*time.Minute)
	if err != nil || final.State != api.StateSigned || len(final.RawTransaction) == 0 {
		t.Fatalf("approved request %v: %+v", err, final)
	}
	signed := new(types.Transaction)
	if err := signed.UnmarshalBinary(final.RawTransaction); err != nil {
		t.Fatal(err)
	}
	if err := ec.SendTransaction(ctx, signed); err != nil {
		t.Fatalf("send the approved transaction: %v", err)
	}
	if rs, err := w.mined(ctx, []common.Hash{signed.Hash()}); err != nil || rs[0].Status != types.ReceiptStatusSuccessful {
		t.Fatalf("approved transaction not mined: %v", err)
	}
	after, _ := w.eth.BalanceAt(ctx, bigShop, nil)
	if new(big.Int).Sub(after, before).Cmp(big.NewInt(1e18)) != 0 {
		t.Fatalf("balance %s -> %s", before, after)
	}
}

// personal_sign and eth_signTypedData_v4 signatures made by the cluster
// recover to the key's address.
func TestMessageAndTypedDataRecover(t *testing.T) {
	w := setup(t)
	srv := w.endpoint(t, w.wallet(t, 30*time.Second, w.hot))
	rc, _ := dial(t, srv.URL())
	ctx := context.Background()
	msg := []byte("Sign in to example.org, nonce 42")
	var sig hexutil.Bytes
	if err := rc.CallContext(ctx, &sig, "personal_sign", hexutil.Bytes(msg), w.hot.Address); err != nil {
		t.Fatalf("personal_sign: %v", err)
	}
	if got := recoverAddr(t, accounts.TextHash(msg), sig); got != w.hot.Address {
		t.Fatalf("personal_sign recovers to %s, want %s", got, w.hot.Address)
	}
	// A message the policy does not name is denied.
	if err := rc.CallContext(ctx, &sig, "personal_sign", hexutil.Bytes("transfer everything"), w.hot.Address); err == nil {
		t.Fatal("an unnamed personal message was signed")
	} else if code, data := errorData(t, err); code != rpc.CodeDenied || data["rule"] != "default" {
		t.Fatalf("unnamed message: %d %v", code, data)
	}

	td := apitypes.TypedData{
		Types: apitypes.Types{
			"EIP712Domain": {{Name: "name", Type: "string"}, {Name: "version", Type: "string"}, {Name: "chainId", Type: "uint256"}},
			"Login":        {{Name: "user", Type: "address"}, {Name: "nonce", Type: "uint256"}},
		},
		PrimaryType: "Login",
		Domain:      apitypes.TypedDataDomain{Name: "App", Version: "1", ChainId: math.NewHexOrDecimal256(chainID)},
		Message:     apitypes.TypedDataMessage{"user": w.hot.Address.Hex(), "nonce": "7"},
	}
	js, _ := json.Marshal(td)
	if err := rc.CallContext(ctx, &sig, "eth_signTypedData_v4", w.hot.Address, string(js)); err != nil {
		t.Fatalf("eth_signTypedData_v4: %v", err)
	}
	digest, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		t.Fatal(err)
	}
	if got := recoverAddr(t, digest, sig); got != w.hot.Address {
		t.Fatalf("typed data recovers to %s, want %s", got, w.hot.Address)
	}
}

func recoverAddr(t *testing.T, digest []byte, sig []byte) common.Address {
	t.Helper()
	if len(sig) != 65 {
		t.Fatalf("signature of %d bytes", len(sig))
	}
	s := append([]byte(nil), sig...)
	if s[64] >= 27 {
		s[64] -= 27
	}
	pub, err := crypto.SigToPub(digest, s)
	if err != nil {
		t.Fatal(err)
	}
	return crypto.PubkeyToAddress(*pub)
}

// Bad input gets a clear error each: invalid hex, another chain id, an
// unknown method, an oversize batch, an address the wallet does not hold.
func TestBadInput(t *testing.T) {
	w := setup(t)
	srv := w.endpoint(t, w.wallet(t, 30*time.Second, w.hot))
	rc, _ := dial(t, srv.URL())
	ctx := context.Background()
	var out json.RawMessage
	cases := []struct {
		name   string
		method string
		args   []any
		code   int
		text   string
	}{
		{"invalid hex", "eth_sendTransaction", []any{map[string]any{"from": w.hot.Address, "to": vendor1, "value": "0xzz"}}, -32602, "invalid"},
		{"wrong chain id", "eth_sendTransaction", []any{map[string]any{"from": w.hot.Address, "to": vendor1, "value": "0x1", "chainId": "0x1"}}, rpc.CodeInvalidParams, "chain"},
		{"unknown account", "eth_sendTransaction", []any{map[string]any{"from": stranger, "to": vendor1, "value": "0x1"}}, rpc.CodeInvalidParams, ""},
		{"unknown method", "eth_noSuchMethod", nil, -32601, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := rc.CallContext(ctx, &out, c.method, c.args...)
			if err == nil {
				t.Fatalf("%s accepted", c.name)
			}
			code, _ := errorData(t, err)
			if code != c.code || !strings.Contains(strings.ToLower(err.Error()), c.text) {
				t.Fatalf("%s: code %d %q, want code %d mentioning %q", c.name, code, err, c.code, c.text)
			}
		})
	}
	t.Run("oversize batch", func(t *testing.T) {
		var b bytes.Buffer
		b.WriteString("[")
		for i := range rpc.DefaultMaxBatchItems + 1 {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"eth_chainId"}`, i)
		}
		b.WriteString("]")
		resp, err := http.Post(srv.URL(), "application/json", &b)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), "batch too large") {
			t.Fatalf("oversize batch answered %s", body)
		}
	})
}

// A rate-limited poll is not the outcome of the request waited for: with
// the agent's budget spent, WaitFor waits out the 429's Retry-After and
// polls again, so it returns what the coordinator says of the request
// (here: no such request), not "rate limit exceeded".
func TestWaitOutlastsRateLimit(t *testing.T) {
	w := setup(t)
	wl := w.wallet(t, 2*time.Second, w.hot)
	ctx := context.Background()
	missing := ids.RequestID("req:" + strings.Repeat("0", 32))
	spendRateLimit(t, wl, missing)
	_, err := wl.WaitFor(ctx, missing, 10*time.Second)
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusNotFound {
		t.Fatalf("WaitFor with the budget spent: %v, want the request's own 404", err)
	}
	// Give the budget back to the tests after this one (this cluster's
	// agent limit: 100 per second, burst 400).
	time.Sleep(4 * time.Second)
}

// A rate-limited submit is made again after the 429's Retry-After, with
// the same body (its idempotency key too), so a burst of the agent's
// transactions is slowed by its rate limit, not failed; so is the
// wallet's reading of its keys. The agent's limit is kept spent while
// each call starts, so its first try meets the 429; the wallet's log
// shows the wait.
func TestSubmitOutlastsRateLimit(t *testing.T) {
	w := setup(t)
	var logs syncBuffer
	cl, err := client.New(w.coordURL, client.Options{Agent: w.bot})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := sidecar.New(sidecar.Config{Client: cl, Credential: w.bot, Keys: []ids.KeyID{w.hot.ID}, Wait: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The wallet knows its keys, as a running sidecar does.
	if _, err := wl.Accounts(ctx); err != nil {
		t.Fatal(err)
	}
	missing := ids.RequestID("req:" + strings.Repeat("0", 32))
	spendRateLimit(t, wl, missing)
	hammer := w.wallet(t, time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
			hammer.Status(ctx, missing)
		}
	}()
	msg, err := chain.ParsePersonalMessage(big.NewInt(chainID), []byte("submitted with the rate limit spent"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := wl.Submit(ctx, w.hot.Address, msg, "")
	<-done
	if err != nil {
		t.Fatalf("submit with the budget spent: %v, want the request stored once the limit allows", err)
	}
	if r.ID == "" || r.Digest != common.Hash(msg.Digest()) {
		t.Fatalf("submit answered %+v", r)
	}
	if !strings.Contains(logs.String(), "call=submit") {
		t.Fatalf("the submit never met the rate limit; the wallet logged:\n%s", logs.String())
	}
	// The same for the wallet's reading of its keys (every KeysTTL).
	spendRateLimit(t, wl, missing)
	done = make(chan struct{})
	go func() {
		defer close(done)
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
			hammer.Status(ctx, missing)
		}
	}()
	ks, err := wl.Keys(ctx)
	<-done
	if err != nil || len(ks) != 1 || ks[0].ID != w.hot.ID {
		t.Fatalf("keys with the budget spent: %v, %v; want the hot key once the limit allows", ks, err)
	}
	if !strings.Contains(logs.String(), "call=keys") {
		t.Fatalf("the key lookup never met the rate limit; the wallet logged:\n%s", logs.String())
	}
	// Give the budget back to the tests after this one.
	time.Sleep(4 * time.Second)
}

// spendRateLimit asks for request id until the coordinator answers 429.
func spendRateLimit(t *testing.T, wl *sidecar.Wallet, id ids.RequestID) {
	t.Helper()
	for i := 0; i < 5000; i++ {
		_, err := wl.Status(context.Background(), id)
		var e *client.Error
		if errors.As(err, &e) && e.Status == http.StatusTooManyRequests {
			return
		}
	}
	t.Fatal("5000 calls in a row never met the agent's rate limit")
}
