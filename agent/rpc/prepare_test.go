package rpc

import (
	"errors"
	"math/big"
	"testing"

	"github.com/custos-wallet/custos/chain"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// Prepare fills a transaction as a send would (the pending nonce, gas,
// fees, the upstream chain) without signing it or taking the nonce, and
// refuses what a send refuses.
func TestPrepare(t *testing.T) {
	e := newEnv(t, nil)
	from := e.wallet.addr
	nonce, err := e.up.PendingNonceAt(e.ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	v := (*hexutil.Big)(big.NewInt(7))
	p, err := e.srv.Prepare(e.ctx, TransactionArgs{From: &from, To: &dest, Value: v})
	if err != nil {
		t.Fatal(err)
	}
	tx := p.Transaction()
	if p.Kind() != chain.KindTransaction || tx.Nonce() != nonce || tx.Gas() == 0 || tx.GasFeeCap().Sign() <= 0 ||
		tx.ChainId().Cmp(e.srv.ChainID()) != 0 || *tx.To() != dest || tx.Value().Int64() != 7 {
		t.Fatalf("prepared %+v", tx)
	}
	// Nothing was taken: the next send still uses that nonce.
	h, err := e.send(map[string]any{"from": from, "to": dest, "value": "0x7"})
	if err != nil {
		t.Fatal(err)
	}
	sent, _, err := e.eth.TransactionByHash(e.ctx, h)
	if err != nil || sent.Nonce() != nonce {
		t.Fatalf("send after Prepare has nonce %v (%v), want %d", sent.Nonce(), err, nonce)
	}
	other := common.HexToAddress("0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a")
	if _, err := e.srv.Prepare(e.ctx, TransactionArgs{From: &other, To: &dest}); !errors.Is(err, ErrInvalidParams) {
		t.Fatalf("unknown account: %v", err)
	}
	if _, err := e.srv.Prepare(e.ctx, TransactionArgs{From: &from, To: &dest, ChainID: (*hexutil.Big)(big.NewInt(5))}); !errors.Is(err, ErrInvalidParams) {
		t.Fatalf("another chain: %v", err)
	}
}
