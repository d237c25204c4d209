package devchain

import (
	"context"
	"errors"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/rpc"
)

// hangGuard bounds a wait that should end in well under a second, so that a
// bug fails the test with a message instead of a timeout dump; no assertion
// depends on it. It is generous: -race on two busy cores is slow.
const hangGuard = 5 * time.Minute

func waitContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	t.Cleanup(cancel)
	return ctx
}

// startChain starts a dev chain on a free loopback port and dials it.
func startChain(t *testing.T, cfg Config) (*Chain, *ethclient.Client) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	c, err := Start(cfg)
	if err != nil {
		t.Fatalf("start dev chain: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close dev chain: %v", err)
		}
	})
	client, err := ethclient.Dial(c.URL())
	if err != nil {
		t.Fatalf("dial %s: %v", c.URL(), err)
	}
	t.Cleanup(client.Close)
	return c, client
}

// heads subscribes to the chain's new heads inside the process: the test
// waits for blocks on a channel rather than polling on a clock.
func heads(t *testing.T, c *Chain) <-chan core.ChainHeadEvent {
	t.Helper()
	ch := make(chan core.ChainHeadEvent, 64)
	sub := c.eth.BlockChain().SubscribeChainHeadEvent(ch)
	t.Cleanup(sub.Unsubscribe)
	return ch
}

// waitReceipt returns the receipt of hash, waiting for new heads until there
// is one. The head subscription must predate sending the transaction.
func waitReceipt(ctx context.Context, t *testing.T, client *ethclient.Client, newHeads <-chan core.ChainHeadEvent, hash common.Hash) *types.Receipt {
	t.Helper()
	for {
		r, err := client.TransactionReceipt(ctx, hash)
		if err == nil {
			return r
		}
		if !errors.Is(err, ethereum.NotFound) {
			t.Fatalf("receipt of %s: %v", hash, err)
		}
		select {
		case <-newHeads:
		case <-ctx.Done():
			t.Fatalf("receipt of %s: no block includes it: %v", hash, ctx.Err())
		}
	}
}

// dynamicFeeTx signs an EIP-1559 transaction from a with fees from the node's
// own suggestions.
func dynamicFeeTx(ctx context.Context, t *testing.T, client *ethclient.Client, a Account, nonce uint64, to *common.Address, value *big.Int, data []byte) *types.Transaction {
	t.Helper()
	chainID, err := client.ChainID(ctx)
	if err != nil {
		t.Fatalf("eth_chainId: %v", err)
	}
	tip, err := client.SuggestGasTipCap(ctx)
	if err != nil {
		t.Fatalf("eth_maxPriorityFeePerGas: %v", err)
	}
	head, err := client.HeaderByNumber(ctx, nil)
	if err != nil {
		t.Fatalf("latest header: %v", err)
	}
	gas, err := client.EstimateGas(ctx, ethereum.CallMsg{From: a.Address, To: to, Value: value, Data: data})
	if err != nil {
		t.Fatalf("eth_estimateGas: %v", err)
	}
	feeCap := new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), tip)
	tx := types.NewTx(&types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, GasTipCap: tip, GasFeeCap: feeCap, Gas: gas, To: to, Value: value, Data: data,
	})
	signed, err := types.SignTx(tx, types.LatestSignerForChainID(chainID), a.Key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return signed
}

func ether(n int64) *big.Int { return new(big.Int).Mul(big.NewInt(n), big.NewInt(params.Ether)) }

func TestChainIDAndDefaults(t *testing.T) {
	c, client := startChain(t, Config{ChainID: 31337})
	ctx := waitContext(t)
	id, err := client.ChainID(ctx)
	if err != nil {
		t.Fatalf("eth_chainId: %v", err)
	}
	if id.Uint64() != 31337 || c.ChainID().Uint64() != 31337 {
		t.Fatalf("chain id %s (Chain says %s), want 31337", id, c.ChainID())
	}
	if n, err := client.NetworkID(ctx); err != nil || n.Uint64() != 31337 {
		t.Fatalf("net_version %v, %v; want 31337", n, err)
	}
	if !strings.HasPrefix(c.URL(), "http://127.0.0.1:") || strings.HasSuffix(c.URL(), ":0") {
		t.Fatalf("URL %q does not name the bound port", c.URL())
	}

	_, client = startChain(t, Config{})
	if id, err := client.ChainID(ctx); err != nil || id.Uint64() != DefaultChainID {
		t.Fatalf("default chain id %v, %v; want %d", id, err, DefaultChainID)
	}
}

func TestPrefundedAccounts(t *testing.T) {
	c, client := startChain(t, Config{})
	ctx := waitContext(t)
	accounts := c.Accounts()
	if len(accounts) != DefaultAccounts {
		t.Fatalf("%d accounts, want %d", len(accounts), DefaultAccounts)
	}
	for _, a := range accounts {
		bal, err := client.BalanceAt(ctx, a.Address, nil)
		if err != nil {
			t.Fatalf("balance of %s: %v", a, err)
		}
		if bal.Cmp(ether(10_000)) != 0 {
			t.Errorf("balance of %s is %s, want 10000 ether", a, bal)
		}
	}

	var listed []DevAccountJSON
	if err := client.Client().CallContext(ctx, &listed, "dev_accounts"); err != nil {
		t.Fatalf("dev_accounts: %v", err)
	}
	if len(listed) != len(accounts) {
		t.Fatalf("dev_accounts lists %d, want %d", len(listed), len(accounts))
	}
	for i, l := range listed {
		if l.Index != i || l.Address != accounts[i].Address || l.PrivateKey != accounts[i].KeyHex() {
			t.Errorf("dev_accounts[%d] = %+v, want %s", i, l, accounts[i])
		}
	}

	// Another count and balance.
	c, client = startChain(t, Config{Accounts: 3, Balance: big.NewInt(12345)})
	if len(c.Accounts()) != 3 {
		t.Fatalf("%d accounts, want 3", len(c.Accounts()))
	}
	for _, a := range c.Accounts() {
		if bal, err := client.BalanceAt(ctx, a.Address, nil); err != nil || bal.Cmp(big.NewInt(12345)) != 0 {
			t.Errorf("balance of %s is %v, %v; want 12345 wei", a, bal, err)
		}
	}
	a3, err := DevAccount(3)
	if err != nil {
		t.Fatal(err)
	}
	if bal, err := client.BalanceAt(ctx, a3.Address, nil); err != nil || bal.Sign() != 0 {
		t.Errorf("unfunded %s has %v, %v", a3, bal, err)
	}
}

func TestTransferMinedWithoutMining(t *testing.T) {
	c, client := startChain(t, Config{})
	ctx := waitContext(t)
	newHeads := heads(t, c)
	from, to := c.Accounts()[0], c.Accounts()[1]
	value := ether(3)

	nonce, err := client.PendingNonceAt(ctx, from.Address)
	if err != nil {
		t.Fatalf("pending nonce: %v", err)
	}
	tx := dynamicFeeTx(ctx, t, client, from, nonce, &to.Address, value, nil)
	if err := client.SendTransaction(ctx, tx); err != nil {
		t.Fatalf("eth_sendRawTransaction: %v", err)
	}
	r := waitReceipt(ctx, t, client, newHeads, tx.Hash())
	if r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("receipt status %d, want 1", r.Status)
	}

	fromBal, err := client.BalanceAt(ctx, from.Address, nil)
	if err != nil {
		t.Fatal(err)
	}
	toBal, err := client.BalanceAt(ctx, to.Address, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := new(big.Int).Add(ether(10_000), value); toBal.Cmp(want) != 0 {
		t.Errorf("recipient has %s, want %s", toBal, want)
	}
	fee := new(big.Int).Mul(new(big.Int).SetUint64(r.GasUsed), r.EffectiveGasPrice)
	if want := new(big.Int).Sub(new(big.Int).Sub(ether(10_000), value), fee); fromBal.Cmp(want) != 0 {
		t.Errorf("sender has %s, want %s (fee %s)", fromBal, want, fee)
	}
	if n, err := client.NonceAt(ctx, from.Address, nil); err != nil || n != nonce+1 {
		t.Errorf("nonce %d, %v; want %d", n, err, nonce+1)
	}
}

func TestMineAddsBlock(t *testing.T) {
	c, client := startChain(t, Config{})
	ctx := waitContext(t)
	before, err := client.BlockNumber(ctx)
	if err != nil {
		t.Fatalf("eth_blockNumber: %v", err)
	}
	var m MinedBlock
	if err := client.Client().CallContext(ctx, &m, "dev_mine"); err != nil {
		t.Fatalf("dev_mine: %v", err)
	}
	if uint64(m.Number) != before+1 {
		t.Fatalf("dev_mine sealed %d, want %d", m.Number, before+1)
	}
	head, err := client.HeaderByNumber(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if head.Hash() != m.Hash {
		t.Fatalf("head %s, dev_mine said %s", head.Hash(), m.Hash)
	}
	var res string
	if err := client.Client().CallContext(ctx, &res, "evm_mine"); err != nil || res != "0x0" {
		t.Fatalf("evm_mine: %q, %v", res, err)
	}
	if h, err := c.Mine(ctx); err != nil || h.Number.Uint64() != before+3 {
		t.Fatalf("Mine: %v, %v; want block %d", h, err, before+3)
	}
	if after, err := client.BlockNumber(ctx); err != nil || after != before+3 {
		t.Fatalf("eth_blockNumber %d, %v; want %d", after, err, before+3)
	}
}

func TestBurstOfTransactions(t *testing.T) {
	c, client := startChain(t, Config{})
	ctx := waitContext(t)
	newHeads := heads(t, c)
	from, to := c.Accounts()[2], c.Accounts()[3]
	start, err := client.PendingNonceAt(ctx, from.Address)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	txs := make([]*types.Transaction, n)
	for i := range n {
		// The fee fields come from the chain as it is while the burst is mined.
		txs[i] = dynamicFeeTx(ctx, t, client, from, start+uint64(i), &to.Address, big.NewInt(int64(1000+i)), nil)
		if err := client.SendTransaction(ctx, txs[i]); err != nil {
			t.Fatalf("send nonce %d: %v", start+uint64(i), err)
		}
		// No pending-nonce check here: geth's pool promotes a new
		// transaction on its own goroutine after eth_sendRawTransaction
		// returns, so "pending" may lag a send by a moment.
	}
	for i, tx := range txs {
		r := waitReceipt(ctx, t, client, newHeads, tx.Hash())
		if r.Status != types.ReceiptStatusSuccessful {
			t.Fatalf("tx %d: status %d", i, r.Status)
		}
		mined, _, err := client.TransactionByHash(ctx, tx.Hash())
		if err != nil || mined.Nonce() != start+uint64(i) {
			t.Fatalf("tx %d: nonce %v, %v", i, mined, err)
		}
	}
	if got, err := client.NonceAt(ctx, from.Address, nil); err != nil || got != start+n {
		t.Fatalf("nonce after burst %d, %v; want %d", got, err, start+n)
	}
	if got, err := client.PendingNonceAt(ctx, from.Address); err != nil || got != start+n {
		t.Fatalf("pending nonce after burst %d, %v; want %d", got, err, start+n)
	}
	if pending, err := client.PendingTransactionCount(ctx); err != nil || pending != 0 {
		t.Fatalf("%d transactions left pending, %v", pending, err)
	}
}

// answer42 is init code that deploys a contract whose every call returns the
// 32-byte word 42: runtime PUSH1 42 PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN,
// copied into memory and returned by CODECOPY and RETURN.
var answer42 = common.FromHex("600a600c600039600a6000f3" + "602a60005260206000f3")

func TestContractDeployment(t *testing.T) {
	c, client := startChain(t, Config{})
	ctx := waitContext(t)
	newHeads := heads(t, c)
	from := c.Accounts()[4]
	nonce, err := client.PendingNonceAt(ctx, from.Address)
	if err != nil {
		t.Fatal(err)
	}
	tx := dynamicFeeTx(ctx, t, client, from, nonce, nil, new(big.Int), answer42)
	if err := client.SendTransaction(ctx, tx); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	r := waitReceipt(ctx, t, client, newHeads, tx.Hash())
	if r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("deploy status %d", r.Status)
	}
	if r.ContractAddress == (common.Address{}) {
		t.Fatal("receipt names no contract address")
	}
	code, err := client.CodeAt(ctx, r.ContractAddress, nil)
	if err != nil || len(code) != 10 {
		t.Fatalf("code at %s: %x, %v", r.ContractAddress, code, err)
	}
	out, err := client.CallContract(ctx, ethereum.CallMsg{From: from.Address, To: &r.ContractAddress}, nil)
	if err != nil {
		t.Fatalf("eth_call: %v", err)
	}
	if new(big.Int).SetBytes(out).Int64() != 42 || len(out) != 32 {
		t.Fatalf("eth_call returned %x, want 42", out)
	}
}

func TestFeeMethods(t *testing.T) {
	c, client := startChain(t, Config{})
	ctx := waitContext(t)
	if _, err := c.Mine(ctx); err != nil {
		t.Fatal(err)
	}
	price, err := client.SuggestGasPrice(ctx)
	if err != nil || price.Sign() <= 0 {
		t.Fatalf("eth_gasPrice %v, %v", price, err)
	}
	tip, err := client.SuggestGasTipCap(ctx)
	if err != nil || tip.Sign() <= 0 {
		t.Fatalf("eth_maxPriorityFeePerGas %v, %v", tip, err)
	}
	fh, err := client.FeeHistory(ctx, 2, nil, []float64{50})
	if err != nil {
		t.Fatalf("eth_feeHistory: %v", err)
	}
	if len(fh.BaseFee) != 3 || fh.BaseFee[0].Sign() <= 0 {
		t.Fatalf("eth_feeHistory base fees %v, want 3 positive", fh.BaseFee)
	}
	var raw hexutil.Big
	if err := client.Client().CallContext(ctx, &raw, "eth_getBalance", c.Accounts()[0].Address, "pending"); err != nil {
		t.Fatalf("eth_getBalance pending: %v", err)
	}
}

func TestBlockPeriod(t *testing.T) {
	c, client := startChain(t, Config{BlockPeriod: time.Second})
	ctx := waitContext(t)
	newHeads := heads(t, c)
	from, to := c.Accounts()[0], c.Accounts()[1]
	tx := dynamicFeeTx(ctx, t, client, from, 0, &to.Address, big.NewInt(1), nil)
	if err := client.SendTransaction(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if r := waitReceipt(ctx, t, client, newHeads, tx.Hash()); r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("status %d", r.Status)
	}
	// The period seals empty blocks too.
	n, err := client.BlockNumber(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for ev := range newHeads {
		if ev.Header.Number.Uint64() > n {
			break
		}
	}
	if _, err := Start(Config{Listen: "127.0.0.1:0", BlockPeriod: 1500 * time.Millisecond}); err == nil {
		t.Fatal("a period of 1.5 s was accepted")
	}
}

func TestNonLoopbackRefused(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "192.0.2.1:8545", "[::]:0", "devchain:8545"} {
		c, err := Start(Config{Listen: listen})
		if !errors.Is(err, ErrRemoteListen) {
			if c != nil {
				c.Close()
			}
			t.Errorf("listen %q: %v, want %v", listen, err, ErrRemoteListen)
		}
	}
	for _, listen := range []string{"127.0.0.1:0", "localhost:0", "[::1]:0"} {
		if _, _, err := listenAddr(listen, false); err != nil {
			t.Errorf("loopback %q refused: %v", listen, err)
		}
	}
}

func TestAllowRemote(t *testing.T) {
	c, _ := startChain(t, Config{Listen: "0.0.0.0:0", AllowRemote: true})
	_, port, err := net.SplitHostPort(strings.TrimPrefix(c.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	// A client in another container names the service, not an IP address.
	req, err := http.NewRequestWithContext(waitContext(t), http.MethodPost, "http://127.0.0.1:"+port,
		strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "devchain:" + port
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("host devchain: status %d", resp.StatusCode)
	}
}

func TestCloseStopsServer(t *testing.T) {
	c, err := Start(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	client, err := rpc.Dial(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var n hexutil.Uint64
	if err := client.Call(&n, "eth_blockNumber"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	addr := strings.TrimPrefix(c.URL(), "http://")
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Close", addr)
	}
	if _, err := c.Mine(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Mine after Close: %v, want %v", err, ErrClosed)
	}
}

func TestUnknownReceiptIsNull(t *testing.T) {
	// Clients wait for a receipt by asking until it is not null; an error
	// such as geth's "transaction indexing is in progress" makes them give up.
	_, client := startChain(t, Config{})
	_, err := client.TransactionReceipt(waitContext(t), common.HexToHash("0x1234"))
	if !errors.Is(err, ethereum.NotFound) {
		t.Fatalf("receipt of an unknown transaction right after Start: %v, want null", err)
	}
}

func TestPortInUse(t *testing.T) {
	c, _ := startChain(t, Config{})
	second, err := Start(Config{Listen: strings.TrimPrefix(c.URL(), "http://")})
	if err == nil {
		second.Close()
		t.Fatalf("a second chain started on %s", c.URL())
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("second chain on the same port: %v", err)
	}
}
