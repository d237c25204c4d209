package rpc

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"sync"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// testWallet stands in for the signing cluster until it exists: one real
// secp256k1 key and a small rule set of its own. A transaction whose value
// is above maxValue is denied by rule "max-value"; one to pendTo waits for a
// guardian (and the wait is over at once).
type testWallet struct {
	key      *ecdsa.PrivateKey
	addr     common.Address
	maxValue *big.Int
	pendTo   common.Address

	// If set, signing the personal message "wait" closes started, then
	// waits for its context to end and closes canceled.
	started, canceled chan struct{}

	mu       sync.Mutex
	requests []ids.RequestID // guarded by mu: ids of denied or pending requests
}

func newTestWallet(key *ecdsa.PrivateKey) *testWallet {
	return &testWallet{
		key:      key,
		addr:     crypto.PubkeyToAddress(key.PublicKey),
		maxValue: big.NewInt(1e18),
		pendTo:   common.HexToAddress("0x00000000000000000000000000000000000000aa"),
	}
}

func (w *testWallet) Accounts(context.Context) ([]common.Address, error) {
	return []common.Address{w.addr}, nil
}

func (w *testWallet) Sign(ctx context.Context, from common.Address, p *chain.Payload) ([]byte, error) {
	if from != w.addr {
		return nil, errors.New("test wallet: unknown account")
	}
	if p.Kind() == chain.KindTransaction {
		tx, err := chain.DecodeTransaction(p.Bytes())
		if err != nil {
			return nil, err
		}
		if tx.Value().Cmp(w.maxValue) > 0 {
			return nil, &Denied{Rule: "max-value", Reason: fmt.Sprintf("value %v is above the limit %v", tx.Value(), w.maxValue), RequestID: w.newRequest()}
		}
		if to := tx.To(); to != nil && *to == w.pendTo {
			return nil, &Pending{RequestID: w.newRequest()}
		}
	}
	if p.Kind() == chain.KindPersonalMessage && string(p.Message()) == "wait" && w.started != nil {
		close(w.started)
		<-ctx.Done()
		close(w.canceled)
		return nil, ctx.Err()
	}
	d := p.Digest()
	return crypto.Sign(d[:], w.key)
}

func (w *testWallet) newRequest() ids.RequestID {
	id := ids.NewRequestID()
	w.mu.Lock()
	w.requests = append(w.requests, id)
	w.mu.Unlock()
	return id
}

func (w *testWallet) lastRequest() ids.RequestID {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.requests) == 0 {
		return ""
	}
	return w.requests[len(w.requests)-1]
}
