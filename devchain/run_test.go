package devchain

import (
	"context"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
)

// urlHandler hands the url of the "dev chain started" record to a channel:
// Run reports where it listens only in its log.
type urlHandler struct {
	slog.Handler
	urls chan string
}

func (h urlHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "dev chain started" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "url" {
				h.urls <- a.Value.String()
			}
			return true
		})
	}
	return nil
}

func (h urlHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h urlHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h urlHandler) WithGroup(string) slog.Handler            { return h }

func TestRunStopsWhenContextIsDone(t *testing.T) {
	urls := make(chan string, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Listen: "127.0.0.1:0", Logger: slog.New(urlHandler{slog.DiscardHandler, urls})})
	}()
	var url string
	select {
	case url = <-urls:
	case err := <-done:
		t.Fatalf("Run returned before serving: %v", err)
	}
	client, err := ethclient.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.BlockNumber(waitContext(t)); err != nil {
		t.Fatalf("eth_blockNumber while running: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	addr := strings.TrimPrefix(url, "http://")
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Run returned", addr)
	}
}

func TestDataDirPersists(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Listen: "127.0.0.1:0", DataDir: dir}
	c, client := startChain(t, cfg)
	ctx := waitContext(t)
	newHeads := heads(t, c)
	from, to := c.Accounts()[0], c.Accounts()[1]
	tx := dynamicFeeTx(ctx, t, client, from, 0, &to.Address, ether(1), nil)
	if err := client.SendTransaction(ctx, tx); err != nil {
		t.Fatal(err)
	}
	r := waitReceipt(ctx, t, client, newHeads, tx.Hash())
	head, err := client.BlockNumber(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, client = startChain(t, cfg)
	ctx = waitContext(t)
	if got, err := client.BlockNumber(ctx); err != nil || got != head {
		t.Fatalf("reopened at block %d, %v; closed at %d", got, err, head)
	}
	if got, err := client.BalanceAt(ctx, to.Address, nil); err != nil || got.Cmp(new(big.Int).Add(ether(10_000), ether(1))) != 0 {
		t.Fatalf("recipient after restart %v, %v", got, err)
	}
	if got, err := client.TransactionReceipt(ctx, tx.Hash()); err != nil || got.BlockHash != r.BlockHash {
		t.Fatalf("receipt after restart %v, %v", got, err)
	}
	// It still mines: the nonce carries on from the stored chain.
	newHeads = heads(t, c)
	tx = dynamicFeeTx(ctx, t, client, from, 1, &to.Address, ether(1), nil)
	if err := client.SendTransaction(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if r := waitReceipt(ctx, t, client, newHeads, tx.Hash()); r.Status != types.ReceiptStatusSuccessful || r.BlockNumber.Uint64() <= head {
		t.Fatalf("after restart: status %d in block %s", r.Status, r.BlockNumber)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// The directory belongs to its genesis and chain id.
	for _, other := range []Config{{ChainID: 5}, {Accounts: 3}, {Balance: big.NewInt(1)}} {
		other.Listen, other.DataDir = "127.0.0.1:0", dir
		c, err := Start(other)
		if !errors.Is(err, ErrOtherChain) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("reopened with %+v: %v, want %v", other, err, ErrOtherChain)
		}
	}
	// One process at a time.
	c, _ = startChain(t, cfg)
	if c2, err := Start(cfg); err == nil {
		c2.Close()
		t.Fatal("a data directory opened twice")
	}
	c.Close()
}

func TestMineConcurrentWithTransactions(t *testing.T) {
	c, client := startChain(t, Config{})
	ctx := waitContext(t)
	newHeads := heads(t, c)
	from, to := c.Accounts()[5], c.Accounts()[6]
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() {
			if _, err := c.Mine(ctx); err != nil {
				errs <- err
			}
		})
	}
	txs := make([]*types.Transaction, 5)
	for i := range txs {
		txs[i] = dynamicFeeTx(ctx, t, client, from, uint64(i), &to.Address, big.NewInt(1), nil)
		if err := client.SendTransaction(ctx, txs[i]); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Mine: %v", err)
	}
	for _, tx := range txs {
		if r := waitReceipt(ctx, t, client, newHeads, tx.Hash()); r.Status != types.ReceiptStatusSuccessful {
			t.Fatalf("status %d", r.Status)
		}
	}
}

func TestMineHonoursContext(t *testing.T) {
	c, _ := startChain(t, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	// The loop may take the request before it sees the cancellation; either
	// way a cancelled caller gets an answer rather than a hang.
	if _, err := c.Mine(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Mine with a cancelled context: %v", err)
	}
}

func TestDevAccountDerivation(t *testing.T) {
	// The derivation is public and fixed: docs name these accounts.
	want := map[int]string{
		0: "0xA573be35FB3580f99c1142882B4dd31b1f7da7BA",
		1: "0x96D6a9C00A394b6874de618f07899981aF80d067",
	}
	for i, addr := range want {
		a, err := DevAccount(i)
		if err != nil {
			t.Fatal(err)
		}
		if a.Address != common.HexToAddress(addr) {
			t.Errorf("dev account %d is %s, want %s", i, a.Address, addr)
		}
		key := crypto.Keccak256([]byte("custos-dev-account-" + strconv.Itoa(i)))
		if a.KeyHex() != "0x"+common.Bytes2Hex(key) {
			t.Errorf("dev account %d key %s, want keccak256 of its seed", i, a.KeyHex())
		}
		if strings.Contains(a.String(), a.KeyHex()[2:]) {
			t.Errorf("String shows the key: %s", a)
		}
	}
	if _, err := DevAccount(-1); err == nil {
		t.Error("negative index accepted")
	}
}
