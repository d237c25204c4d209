package chain_test

import (
	"context"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/testfixtures"
	"github.com/custos-wallet/custos/tss"
	"github.com/custos-wallet/custos/tss/tsstest"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/holiman/uint256"
)

// thresholdKey is a 2-of-3 key made by the real engine, signing over an
// in-process network.
type thresholdKey struct {
	net    *tsstest.MemNetwork
	shares map[ids.MemberID]*tss.Share
	addr   common.Address
}

var engineConfig = tss.Config{IdleTimeout: 30 * time.Second, TickInterval: 50 * time.Millisecond}

// run calls f for every member at once and returns the first error.
func run(memberIDs []ids.MemberID, f func(i int, id ids.MemberID) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(memberIDs))
	for i, id := range memberIDs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, id)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func newThresholdKey(t *testing.T) *thresholdKey {
	t.Helper()
	c := tss.Committee{Members: []tss.Member{
		{ID: "agent-1", Role: ids.RoleAgent}, {ID: "policy-1", Role: ids.RolePolicy}, {ID: "guardian-1", Role: ids.RoleGuardian},
	}, Threshold: 1}
	k := &thresholdKey{net: tsstest.NewMemNetwork(), shares: map[ids.MemberID]*tss.Share{}}
	sid := ids.NewSessionID()
	var mu sync.Mutex
	err := run(c.IDs(), func(i int, id ids.MemberID) error {
		lp, err := testfixtures.PreParams(i)
		if err != nil {
			return err
		}
		pp, err := tss.NewPreParams(lp)
		if err != nil {
			return err
		}
		sh, err := tss.NewEngine(k.net.Endpoint(id), engineConfig).Keygen(context.Background(), tss.KeygenRequest{Session: sid, Committee: c, PreParams: pp})
		if err != nil {
			return err
		}
		mu.Lock()
		k.shares[id] = sh
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	k.addr = k.shares["agent-1"].Key().Address
	return k
}

// sign has the agent and policy members sign digest.
func (k *thresholdKey) sign(t *testing.T, digest [32]byte) tss.Signature {
	t.Helper()
	signers := []ids.MemberID{"agent-1", "policy-1"}
	sid := ids.NewSessionID()
	sigs := make([]tss.Signature, len(signers))
	err := run(signers, func(i int, id ids.MemberID) error {
		var err error
		sigs[i], err = tss.NewEngine(k.net.Endpoint(id), engineConfig).Sign(context.Background(),
			tss.SignRequest{Session: sid, Share: k.shares[id], Signers: signers, Digest: digest})
		return err
	})
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if sigs[0] != sigs[1] {
		t.Fatal("signers disagree on the signature")
	}
	return sigs[0]
}

// Transactions of every accepted type, signed by the threshold engine over
// the digest the payload computes and assembled by the payload, are
// accepted and executed by go-ethereum's simulated chain.
func TestEngineSignedTransactionsOnSimulatedChain(t *testing.T) {
	if testing.Short() {
		t.Skip("threshold keygen takes seconds of CPU")
	}
	k := newThresholdKey(t)
	recipient := common.HexToAddress("0x1111111111111111111111111111111111111111")
	funds := new(big.Int).Mul(big.NewInt(100), big.NewInt(1e18))
	sim := simulated.NewBackend(types.GenesisAlloc{k.addr: {Balance: funds}})
	defer sim.Close()
	client := sim.Client()
	ctx := context.Background()
	chainID, err := client.ChainID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	head, err := client.HeaderByNumber(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	feeCap := new(big.Int).Mul(head.BaseFee, big.NewInt(4))
	tip := big.NewInt(1e9)
	feeCap.Add(feeCap, tip)
	authKey, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	auth, err := types.SignSetCode(authKey, types.SetCodeAuthorization{ChainID: *uint256.MustFromBig(chainID), Address: recipient, Nonce: 0})
	if err != nil {
		t.Fatal(err)
	}
	value := big.NewInt(1e15)
	txs := []types.TxData{
		&types.LegacyTx{Nonce: 0, To: &recipient, Value: value, Gas: 21000, GasPrice: feeCap},
		&types.AccessListTx{ChainID: chainID, Nonce: 1, To: &recipient, Value: value, Gas: 30000, GasPrice: feeCap,
			AccessList: types.AccessList{{Address: recipient, StorageKeys: []common.Hash{{1}}}}},
		&types.DynamicFeeTx{ChainID: chainID, Nonce: 2, To: &recipient, Value: value, Gas: 21000, GasFeeCap: feeCap, GasTipCap: tip},
		&types.SetCodeTx{ChainID: uint256.MustFromBig(chainID), Nonce: 3, To: recipient, Value: uint256.MustFromBig(value), Gas: 100000,
			GasFeeCap: uint256.MustFromBig(feeCap), GasTipCap: uint256.MustFromBig(tip), AuthList: []types.SetCodeAuthorization{auth}},
	}
	var prev tss.Signature
	for i, data := range txs {
		raw, err := types.NewTx(data).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		p, err := chain.ParseTransaction(chainID, raw)
		if err != nil {
			t.Fatalf("tx %d: %v", i, err)
		}
		if i > 0 {
			// The previous transaction's signature is valid, but for
			// another digest.
			if _, err := p.SignedTransaction(prev[:], k.addr); !errors.Is(err, chain.ErrWrongSigner) {
				t.Fatalf("tx %d: assembled with another digest's signature: %v", i, err)
			}
		}
		sig := k.sign(t, p.Digest())
		prev = sig
		signed, err := p.SignedTransaction(sig[:], k.addr)
		if err != nil {
			t.Fatalf("tx %d (%s): %v", i, p.Describe(), err)
		}
		if err := client.SendTransaction(ctx, signed); err != nil {
			t.Fatalf("tx %d (%s): send: %v", i, p.Describe(), err)
		}
		sim.Commit()
		rcpt, err := client.TransactionReceipt(ctx, signed.Hash())
		if err != nil {
			t.Fatalf("tx %d: receipt: %v", i, err)
		}
		if rcpt.Status != types.ReceiptStatusSuccessful || rcpt.Type != signed.Type() {
			t.Fatalf("tx %d: receipt status %d type %d", i, rcpt.Status, rcpt.Type)
		}
		t.Logf("%s: mined in block %v", p.Describe(), rcpt.BlockNumber)
	}
	bal, err := client.BalanceAt(ctx, recipient, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := new(big.Int).Mul(value, big.NewInt(int64(len(txs)))); bal.Cmp(want) != 0 {
		t.Fatalf("recipient balance %v, want %v", bal, want)
	}
	code, err := client.CodeAt(ctx, crypto.PubkeyToAddress(authKey.PublicKey), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := types.AddressToDelegation(recipient); string(code) != string(want) {
		t.Fatalf("authority code %x, want delegation %x", code, want)
	}
	nonce, err := client.NonceAt(ctx, k.addr, nil)
	if err != nil || nonce != uint64(len(txs)) {
		t.Fatalf("sender nonce %d (%v), want %d", nonce, err, len(txs))
	}
}
