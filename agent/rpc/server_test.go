package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/devchain"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	gethrpc "github.com/ethereum/go-ethereum/rpc"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// env is a dev chain, the endpoint in front of it with a test wallet holding
// dev account 0, and clients of both over real HTTP.
type env struct {
	t      *testing.T
	ctx    context.Context
	chain  *devchain.Chain
	wallet *testWallet
	srv    *Server
	rpc    *gethrpc.Client   // to the endpoint
	eth    *ethclient.Client // to the endpoint
	up     *ethclient.Client // to the dev chain directly
}

func newEnv(t *testing.T, configure func(*Config)) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	c, err := devchain.Start(devchain.Config{Listen: "127.0.0.1:0", Accounts: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := newTestWallet(c.Accounts()[0].Key)
	cfg := Config{Upstream: c.URL(), Wallet: w, Listen: "127.0.0.1:0"}
	if configure != nil {
		configure(&cfg)
	}
	srv, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cl, err := gethrpc.DialContext(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	up, err := ethclient.DialContext(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	return &env{t: t, ctx: ctx, chain: c, wallet: w, srv: srv, rpc: cl, eth: ethclient.NewClient(cl), up: up}
}

// mineAll seals blocks until every transaction has a receipt, and returns
// the receipts. The dev chain mines on its own as transactions arrive;
// sealing here makes the wait a deterministic step rather than a poll.
func (e *env) mineAll(hashes []common.Hash) []*types.Receipt {
	e.t.Helper()
	for range 5 {
		if _, err := e.chain.Mine(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		var rs []*types.Receipt
		for _, h := range hashes {
			r, err := e.up.TransactionReceipt(e.ctx, h)
			if err != nil {
				break
			}
			rs = append(rs, r)
		}
		if len(rs) == len(hashes) {
			return rs
		}
	}
	e.t.Fatalf("transactions not mined after 5 blocks")
	return nil
}

func (e *env) send(args map[string]any) (common.Hash, error) {
	var h common.Hash
	err := e.rpc.CallContext(e.ctx, &h, "eth_sendTransaction", args)
	return h, err
}

var dest = common.HexToAddress("0x1111111111111111111111111111111111111111")

func TestSendTransactionMined(t *testing.T) {
	e := newEnv(t, nil)
	from := e.wallet.addr
	value := big.NewInt(123_456_789)
	h, err := e.send(map[string]any{"from": from, "to": dest, "value": (*hexutil.Big)(value)})
	if err != nil {
		t.Fatal(err)
	}
	r := e.mineAll([]common.Hash{h})[0]
	if r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("receipt status %d", r.Status)
	}
	// Read back through the endpoint: these methods go upstream.
	bal, err := e.eth.BalanceAt(e.ctx, dest, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bal.Cmp(value) != 0 {
		t.Fatalf("balance of %s is %v, want %v", dest, bal, value)
	}
	tx, _, err := e.eth.TransactionByHash(e.ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if tx.Type() != types.DynamicFeeTxType || tx.Nonce() != 0 || tx.ChainId().Cmp(e.chain.ChainID()) != 0 {
		t.Fatalf("mined tx: type %d, nonce %d, chain %v; want dynamic-fee, 0, %v", tx.Type(), tx.Nonce(), tx.ChainId(), e.chain.ChainID())
	}
	sender, err := types.Sender(types.LatestSignerForChainID(tx.ChainId()), tx)
	if err != nil || sender != from {
		t.Fatalf("sender %s (%v), want %s", sender, err, from)
	}
	// A caller's own nonce, the next one, is kept.
	h, err = e.send(map[string]any{"from": from, "to": dest, "nonce": "0x1", "gas": "0x5208"})
	if err != nil {
		t.Fatal(err)
	}
	e.mineAll([]common.Hash{h})
	if tx, _, err = e.up.TransactionByHash(e.ctx, h); err != nil {
		t.Fatal(err)
	}
	if tx.Nonce() != 1 || tx.Gas() != 21000 {
		t.Fatalf("second send: nonce %d gas %d; want nonce 1 gas 21000", tx.Nonce(), tx.Gas())
	}
}

// TestWalletSendTransactionLegacyGasPrice sends through wallet_sendTransaction
// with the caller's gasPrice: the transaction stays legacy at that price.
func TestWalletSendTransactionLegacyGasPrice(t *testing.T) {
	e := newEnv(t, nil)
	price := big.NewInt(3_000_000_000)
	var h common.Hash
	err := e.rpc.CallContext(e.ctx, &h, "wallet_sendTransaction", map[string]any{
		"from": e.wallet.addr, "to": dest, "value": "0x1", "gasPrice": (*hexutil.Big)(price)})
	if err != nil {
		t.Fatal(err)
	}
	e.mineAll([]common.Hash{h})
	tx, _, err := e.up.TransactionByHash(e.ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if tx.Type() != types.LegacyTxType || tx.GasPrice().Cmp(price) != 0 {
		t.Fatalf("tx type %d gas price %v, want legacy at %v", tx.Type(), tx.GasPrice(), price)
	}
	if !tx.Protected() {
		t.Fatal("legacy transaction is not EIP-155 protected")
	}
}

// postRaw sends body to the endpoint as JSON and returns the status and body.
func postRaw(t *testing.T, url, body string, header map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

type rawAnswer struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	} `json:"error"`
}

func TestBatchMixesLocalAndUpstream(t *testing.T) {
	e := newEnv(t, nil)
	body := `[
		{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},
		{"jsonrpc":"2.0","id":"two","method":"eth_blockNumber"},
		{"jsonrpc":"2.0","id":3,"method":"eth_accounts","params":[]},
		{"jsonrpc":"2.0","method":"eth_chainId"},
		{"jsonrpc":"2.0","id":{"x":1},"method":"net_version"},
		{"jsonrpc":"2.0","id":5,"method":"web3_clientVersion"},
		{"jsonrpc":"2.0","id":6,"method":"nope_nothing"},
		{"jsonrpc":"2.0","id":7,"method":"eth_getBalance","params":["` + e.wallet.addr.Hex() + `","latest"]},
		{"jsonrpc":"2.0","id":8,"method":"personal_sign","params":["0xzz","` + e.wallet.addr.Hex() + `"]}
	]`
	code, b := postRaw(t, e.srv.URL(), body, nil)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, b)
	}
	var got []rawAnswer
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	// The notification (no id) gets no answer; the rest keep their order.
	wantIDs := []string{`1`, `"two"`, `3`, `{"x":1}`, `5`, `6`, `7`, `8`}
	if len(got) != len(wantIDs) {
		t.Fatalf("%d answers, want %d: %s", len(got), len(wantIDs), b)
	}
	for i, want := range wantIDs {
		if string(got[i].ID) != want {
			t.Errorf("answer %d has id %s, want %s", i, got[i].ID, want)
		}
	}
	chainHex := `"` + hexutil.EncodeBig(e.chain.ChainID()) + `"`
	if string(got[0].Result) != chainHex {
		t.Errorf("eth_chainId = %s, want %s", got[0].Result, chainHex)
	}
	if got[1].Error != nil || !strings.HasPrefix(string(got[1].Result), `"0x`) {
		t.Errorf("eth_blockNumber = %s %+v", got[1].Result, got[1].Error)
	}
	if !strings.Contains(strings.ToLower(string(got[2].Result)), strings.ToLower(e.wallet.addr.Hex())) {
		t.Errorf("eth_accounts = %s", got[2].Result)
	}
	if string(got[3].Result) != `"`+e.chain.ChainID().String()+`"` {
		t.Errorf("net_version = %s", got[3].Result)
	}
	if string(got[4].Result) != `"`+DefaultClientVersion+`"` {
		t.Errorf("web3_clientVersion = %s", got[4].Result)
	}
	if got[5].Error == nil || got[5].Error.Code != -32601 || !strings.Contains(got[5].Error.Message, "nope_nothing") {
		t.Errorf("unknown method: %s", b)
	}
	if got[6].Error != nil || !strings.HasPrefix(string(got[6].Result), `"0x`) {
		t.Errorf("eth_getBalance = %s %+v", got[6].Result, got[6].Error)
	}
	if got[7].Error == nil || got[7].Error.Code != CodeInvalidParams {
		t.Errorf("personal_sign with bad hex: %s", b)
	}
	m := e.srv.metrics
	if l, u := counterValue(t, m.calls.WithLabelValues(routeLocal)), counterValue(t, m.calls.WithLabelValues(routeUpstream)); l != 5 || u != 4 {
		t.Errorf("calls counted: %v local, %v upstream; want 5, 4", l, u)
	}
}

// TestConcurrentSendsGapFree sends 20 transactions from one address at once,
// with a denied, a pending and a failing one among them: the 20 that pass
// are all mined, with distinct nonces 0 to 19.
func TestConcurrentSendsGapFree(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		name := "all-pass"
		if refuse {
			name = "refused-in-the-middle"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			const n = 20
			var wg sync.WaitGroup
			var mu sync.Mutex
			var hashes []common.Hash
			var refused []error
			for i := range n + 3 {
				args := map[string]any{"from": e.wallet.addr, "to": dest, "value": hexutil.EncodeUint64(uint64(i + 1))}
				switch {
				case i == n:
					args["value"] = "0xde0b6b3a7640001" // 1 ether + 1 wei: denied
				case i == n+1:
					args["to"] = e.wallet.pendTo // waits for a guardian
				case i == n+2:
					args["gas"] = "0x5000" // below the intrinsic 21000: upstream refuses it
				}
				if !refuse && i >= n {
					continue
				}
				wg.Go(func() {
					h, err := e.send(args)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						refused = append(refused, err)
						return
					}
					hashes = append(hashes, h)
				})
			}
			wg.Wait()
			if len(hashes) != n {
				t.Fatalf("%d sends went through, want %d; errors: %v", len(hashes), n, refused)
			}
			if refuse && len(refused) != 3 {
				t.Fatalf("%d sends refused, want 3: %v", len(refused), refused)
			}
			e.mineAll(hashes)
			var got []uint64
			for _, h := range hashes {
				tx, _, err := e.up.TransactionByHash(e.ctx, h)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, tx.Nonce())
			}
			slices.Sort(got)
			for i, nonce := range got {
				if nonce != uint64(i) {
					t.Fatalf("nonces %v: not 0..%d", got, n-1)
				}
			}
			next, err := e.up.PendingNonceAt(e.ctx, e.wallet.addr)
			if err != nil || next != n {
				t.Fatalf("upstream pending nonce %d (%v), want %d", next, err, n)
			}
			// The next send takes the next nonce: nothing was skipped.
			h, err := e.send(map[string]any{"from": e.wallet.addr, "to": dest})
			if err != nil {
				t.Fatal(err)
			}
			e.mineAll([]common.Hash{h})
			tx, _, err := e.up.TransactionByHash(e.ctx, h)
			if err != nil {
				t.Fatal(err)
			}
			if tx.Nonce() != n {
				t.Fatalf("next send: nonce %d, want %d", tx.Nonce(), n)
			}
		})
	}
}

func errCodeData(t *testing.T, err error) (int, map[string]any) {
	t.Helper()
	var re gethrpc.Error
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a JSON-RPC error", err, err)
	}
	var data map[string]any
	var de gethrpc.DataError
	if errors.As(err, &de) {
		b, _ := json.Marshal(de.ErrorData())
		json.Unmarshal(b, &data)
	}
	return re.ErrorCode(), data
}

func TestDenialNamesRule(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *Config) { c.Registerer = reg })
	_, err := e.send(map[string]any{"from": e.wallet.addr, "to": dest, "value": "0x1bc16d674ec80000"}) // 2 ether
	if err == nil {
		t.Fatal("send above the limit went through")
	}
	code, data := errCodeData(t, err)
	if code != CodeDenied {
		t.Fatalf("code %d, want %d: %v", code, CodeDenied, err)
	}
	if data["rule"] != "max-value" || !strings.Contains(data["reason"].(string), "above the limit") || data["requestId"] != string(e.wallet.lastRequest()) {
		t.Fatalf("error data %v, want rule max-value, its reason and request %s", data, e.wallet.lastRequest())
	}
	if !strings.Contains(err.Error(), `"max-value"`) {
		t.Fatalf("message %q does not name the rule", err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var series int
	for _, f := range fams {
		if f.GetName() == "custos_agent_rpc_wallet_results_total" {
			series = len(f.GetMetric())
		}
	}
	if series != 1 {
		t.Fatalf("%d wallet result series registered, want 1", series)
	}
	if got := counterValue(t, e.srv.metrics.results.WithLabelValues("eth_sendTransaction", outcomeDenied)); got != 1 {
		t.Fatalf("denials counted: %v, want 1", got)
	}
}

func TestPendingCarriesRequestID(t *testing.T) {
	e := newEnv(t, nil)
	_, err := e.send(map[string]any{"from": e.wallet.addr, "to": e.wallet.pendTo, "value": "0x1"})
	if err == nil {
		t.Fatal("send needing a guardian went through")
	}
	code, data := errCodeData(t, err)
	id := e.wallet.lastRequest()
	if code != CodePending || data["requestId"] != string(id) || data["status"] != "pending" || id == "" {
		t.Fatalf("code %d data %v, want %d with request %s", code, data, CodePending, id)
	}
	if !strings.Contains(err.Error(), string(id)) {
		t.Fatalf("message %q does not carry the request id", err)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBatchItems = 3; c.MaxBodyBytes = 4 << 10 })
	addr := e.wallet.addr
	other := common.HexToAddress("0x2222222222222222222222222222222222222222")
	for _, tc := range []struct {
		name   string
		method string
		args   []any
		code   int
		msg    string
	}{
		{"invalid hex", "personal_sign", []any{"0xzz", addr}, -32602, "invalid argument 0"},
		{"odd hex", "eth_sign", []any{addr, "0xabc"}, -32602, "invalid argument 1"},
		{"wrong chain id", "eth_sendTransaction", []any{map[string]any{"from": addr, "to": dest, "chainId": "0x1"}}, CodeInvalidParams, "chain id 1 is not the upstream chain's 1337"},
		{"wrong chain id to sign", "eth_signTransaction", []any{map[string]any{"from": addr, "to": dest, "chainId": "0x2"}}, CodeInvalidParams, "chain id 2"},
		{"unknown from", "eth_sendTransaction", []any{map[string]any{"from": other, "to": dest}}, CodeInvalidParams, "unknown account " + other.Hex()},
		{"missing from", "eth_sendTransaction", []any{map[string]any{"to": dest}}, CodeInvalidParams, `missing "from"`},
		{"unknown signer", "personal_sign", []any{"0x01", other}, CodeInvalidParams, "unknown account"},
		{"data and input differ", "eth_sendTransaction", []any{map[string]any{"from": addr, "to": dest, "data": "0x01", "input": "0x02"}}, CodeInvalidParams, "differ"},
		{"gasPrice and maxFee", "eth_sendTransaction", []any{map[string]any{"from": addr, "to": dest, "gasPrice": "0x1", "maxFeePerGas": "0x1"}}, CodeInvalidParams, "both gasPrice"},
		{"blob", "eth_sendTransaction", []any{map[string]any{"from": addr, "to": dest, "blobVersionedHashes": []string{common.Hash{1}.Hex()}}}, CodeInvalidParams, "blob"},
		{"typed data other chain", "eth_signTypedData_v4", []any{addr, typedDataJSON(5)}, CodeInvalidParams, "chain id mismatch"},
		{"typed data not an object", "eth_signTypedData_v4", []any{addr, []int{1}}, CodeInvalidParams, "not a JSON object"},
		{"unsupported content type", "account_signData", []any{"application/x-clique-header", addr, "0x01"}, CodeInvalidParams, "content type"},
		{"nonce ahead", "eth_sendTransaction", []any{map[string]any{"from": addr, "to": dest, "nonce": "0x5"}}, CodeInvalidParams, "would leave a gap"},
		{"unknown method", "eth_notAMethod", nil, -32601, "eth_notAMethod"},
		{"wallet method not served", "eth_signTypedData_v3", []any{addr, typedDataJSON(1337)}, -32601, "not served by this wallet"},
		{"wallet namespace not served", "wallet_switchEthereumChain", []any{map[string]any{"chainId": "0x1"}}, -32601, "not served by this wallet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res json.RawMessage
			err := e.rpc.CallContext(e.ctx, &res, tc.method, tc.args...)
			if err == nil {
				t.Fatalf("%s succeeded: %s", tc.method, res)
			}
			code, _ := errCodeData(t, err)
			if code != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %d %q, want %d containing %q", code, err, tc.code, tc.msg)
			}
		})
	}

	t.Run("oversize batch", func(t *testing.T) {
		batch := make([]gethrpc.BatchElem, 4)
		for i := range batch {
			batch[i] = gethrpc.BatchElem{Method: "eth_chainId", Result: new(string)}
		}
		code, b := postRaw(t, e.srv.URL(), `[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","id":2,"method":"eth_chainId"},{"jsonrpc":"2.0","id":3,"method":"eth_chainId"},{"jsonrpc":"2.0","id":4,"method":"eth_chainId"}]`, nil)
		var got []rawAnswer
		if err := json.Unmarshal(b, &got); err != nil || code != http.StatusOK {
			t.Fatalf("status %d %v: %s", code, err, b)
		}
		if len(got) != 1 || got[0].Error == nil || got[0].Error.Code != -32600 || got[0].Error.Message != "batch too large" || string(got[0].ID) != "1" {
			t.Fatalf("oversize batch answered %s", b)
		}
		// go-ethereum's own client sees the same.
		err := e.rpc.BatchCallContext(e.ctx, batch)
		if err == nil || !strings.Contains(err.Error(), "batch too large") {
			if err == nil {
				err = batch[0].Error
			}
			if err == nil || !strings.Contains(err.Error(), "batch too large") {
				t.Fatalf("client batch: %v", err)
			}
		}
	})
	t.Run("body too large", func(t *testing.T) {
		code, b := postRaw(t, e.srv.URL(), `{"jsonrpc":"2.0","id":1,"method":"personal_sign","params":["0x`+strings.Repeat("00", 4<<10)+`"]}`, nil)
		if code != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d: %s", code, b)
		}
	})
	t.Run("parse error", func(t *testing.T) {
		_, b := postRaw(t, e.srv.URL(), `{"jsonrpc":"2.0","id":1,`, nil)
		var got rawAnswer
		if err := json.Unmarshal(b, &got); err != nil || got.Error == nil || got.Error.Code != -32700 {
			t.Fatalf("answer %s (%v)", b, err)
		}
	})
	t.Run("params not an array", func(t *testing.T) {
		_, b := postRaw(t, e.srv.URL(), `{"jsonrpc":"2.0","id":9,"method":"eth_sign","params":{"a":1}}`, nil)
		var got rawAnswer
		if err := json.Unmarshal(b, &got); err != nil || got.Error == nil || got.Error.Code != -32602 || string(got.ID) != "9" {
			t.Fatalf("answer %s (%v)", b, err)
		}
	})
	t.Run("foreign host", func(t *testing.T) {
		code, _ := postRaw(t, e.srv.URL(), `{"jsonrpc":"2.0","id":1,"method":"eth_accounts"}`, map[string]string{"Host": "evil.example:8546"})
		if code != http.StatusForbidden {
			t.Fatalf("status %d for a foreign Host", code)
		}
	})
	t.Run("browser origin", func(t *testing.T) {
		code, _ := postRaw(t, e.srv.URL(), `{"jsonrpc":"2.0","id":1,"method":"eth_accounts"}`, map[string]string{"Origin": "https://evil.example"})
		if code != http.StatusForbidden {
			t.Fatalf("status %d for a browser origin", code)
		}
	})
	t.Run("form content type", func(t *testing.T) {
		code, _ := postRaw(t, e.srv.URL(), `{"jsonrpc":"2.0","id":1,"method":"eth_accounts"}`, map[string]string{"Content-Type": "text/plain"})
		if code != http.StatusUnsupportedMediaType {
			t.Fatalf("status %d for text/plain", code)
		}
	})
}

func TestStartRefusesRemoteListen(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:8546", ":8546", "example.com:8546"} {
		_, err := Start(context.Background(), Config{Upstream: "http://127.0.0.1:1", Wallet: newTestWallet(mustKey(t)), Listen: addr})
		if !errors.Is(err, ErrRemoteListen) {
			t.Errorf("Start on %q: %v, want ErrRemoteListen", addr, err)
		}
	}
}

// TestLocalMethodsServed keeps localMethods in step with the registered
// APIs: each is answered by the local server, not "method not found".
func TestLocalMethodsServed(t *testing.T) {
	e := newEnv(t, nil)
	for m := range localMethods {
		var res json.RawMessage
		err := e.rpc.CallContext(e.ctx, &res, m)
		if err != nil {
			if code, _ := errCodeData(t, err); code == -32601 {
				t.Errorf("%s is listed as local but not served: %v", m, err)
			}
		}
	}
	var mods map[string]string
	if err := e.rpc.CallContext(e.ctx, &mods, "rpc_modules"); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"eth", "personal", "wallet", "account", "web3", "rpc", "txpool", "net"} {
		if mods[ns] == "" {
			t.Errorf("rpc_modules %v lacks %s", mods, ns)
		}
	}
}

func TestClose(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := http.Post(e.srv.URL(), "application/json", bytes.NewReader([]byte(`{}`)))
	if err == nil {
		t.Fatal("closed endpoint still answers")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestUpstreamDown: with the node gone, forwarded calls fail with a clear
// error and the wallet's own answers still come back, in order.
func TestUpstreamDown(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.chain.Close(); err != nil {
		t.Fatal(err)
	}
	_, b := postRaw(t, e.srv.URL(), `[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":2,"method":"eth_chainId"}]`, nil)
	var got []rawAnswer
	if err := json.Unmarshal(b, &got); err != nil || len(got) != 2 {
		t.Fatalf("answer %s (%v)", b, err)
	}
	if string(got[0].ID) != "1" || got[0].Error == nil || !strings.HasPrefix(got[0].Error.Message, "upstream: ") {
		t.Errorf("forwarded call with the node down: %s", b)
	}
	if string(got[1].ID) != "2" || got[1].Error != nil || string(got[1].Result) != `"`+hexutil.EncodeBig(e.srv.ChainID())+`"` {
		t.Errorf("local call with the node down: %s", b)
	}
}
