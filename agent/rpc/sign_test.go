package rpc

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"math/big"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/accounts/external"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// typedDataJSON is an EIP-712 Mail message in the form ethers and viem
// send, for chain chainID.
func typedDataJSON(chainID int64) map[string]any {
	return map[string]any{
		"types": map[string]any{
			"EIP712Domain": []map[string]string{
				{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
				{"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"},
			},
			"Person": []map[string]string{{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}},
			"Mail": []map[string]string{
				{"name": "from", "type": "Person"}, {"name": "to", "type": "Person"}, {"name": "contents", "type": "string"},
			},
		},
		"primaryType": "Mail",
		"domain": map[string]any{
			"name": "Ether Mail", "version": "1", "chainId": chainID,
			"verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
		},
		"message": map[string]any{
			"from":     map[string]any{"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
			"to":       map[string]any{"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
			"contents": "Hello, Bob!",
		},
	}
}

// recoverV27 recovers the signer of digest from a wallet signature (V = 27
// or 28).
func recoverV27(t *testing.T, digest []byte, sig hexutil.Bytes) common.Address {
	t.Helper()
	if len(sig) != 65 || (sig[64] != 27 && sig[64] != 28) {
		t.Fatalf("signature %x: want 65 bytes with V 27 or 28", sig)
	}
	s := append([]byte(nil), sig...)
	s[64] -= 27
	pub, err := crypto.SigToPub(digest, s)
	if err != nil {
		t.Fatal(err)
	}
	return crypto.PubkeyToAddress(*pub)
}

func TestPersonalSignAndEthSignRecover(t *testing.T) {
	e := newEnv(t, nil)
	addr := e.wallet.addr
	msg := []byte("hello from an agent")
	var sig hexutil.Bytes
	// personal_sign takes (data, address), eth_sign (address, data).
	if err := e.rpc.CallContext(e.ctx, &sig, "personal_sign", hexutil.Bytes(msg), addr); err != nil {
		t.Fatal(err)
	}
	if got := recoverV27(t, accounts.TextHash(msg), sig); got != addr {
		t.Fatalf("personal_sign recovers to %s, want %s", got, addr)
	}
	if err := e.rpc.CallContext(e.ctx, &sig, "personal_sign", hexutil.Bytes(msg), addr, "ignored password"); err != nil {
		t.Fatal(err)
	}
	if got := recoverV27(t, accounts.TextHash(msg), sig); got != addr {
		t.Fatalf("personal_sign with password recovers to %s, want %s", got, addr)
	}
	if err := e.rpc.CallContext(e.ctx, &sig, "eth_sign", addr, hexutil.Bytes(msg)); err != nil {
		t.Fatal(err)
	}
	if got := recoverV27(t, accounts.TextHash(msg), sig); got != addr {
		t.Fatalf("eth_sign recovers to %s, want %s", got, addr)
	}
}

// TestClientGoneCancelsSigning: a client that gives up on a request (its
// context ends, the connection closes) cancels the wallet's signing call.
func TestClientGoneCancelsSigning(t *testing.T) {
	e := newEnv(t, nil)
	e.wallet.started, e.wallet.canceled = make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithCancel(e.ctx)
	errc := make(chan error, 1)
	go func() {
		var sig hexutil.Bytes
		errc <- e.rpc.CallContext(ctx, &sig, "personal_sign", hexutil.Bytes("wait"), e.wallet.addr)
	}()
	<-e.wallet.started
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("cancelled call succeeded")
	}
	select {
	case <-e.wallet.canceled:
	case <-e.ctx.Done():
		t.Fatal("the wallet's signing call was not cancelled")
	}
}

func TestTypedDataRecovers(t *testing.T) {
	e := newEnv(t, nil)
	addr := e.wallet.addr
	td := typedDataJSON(e.chain.ChainID().Int64())
	b, _ := json.Marshal(td)
	var parsed apitypes.TypedData
	if err := json.Unmarshal(b, &parsed); err != nil {
		t.Fatal(err)
	}
	digest, _, err := apitypes.TypedDataAndHash(parsed)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method string
		args   []any
	}{
		{"eth_signTypedData_v4", []any{addr, td}},
		{"eth_signTypedData_v4", []any{addr, string(b)}}, // as a JSON string, as some clients send it
		{"eth_signTypedData", []any{addr, td}},
		{"account_signTypedData", []any{addr, td}},
		{"account_signData", []any{accounts.MimetypeTypedData, addr, td}},
	} {
		var sig hexutil.Bytes
		if err := e.rpc.CallContext(e.ctx, &sig, tc.method, tc.args...); err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		if got := recoverV27(t, digest, sig); got != addr {
			t.Fatalf("%s recovers to %s, want %s", tc.method, got, addr)
		}
	}
}

func TestSignTransactionShapes(t *testing.T) {
	args := func(e *env) map[string]any {
		return map[string]any{"from": e.wallet.addr, "to": dest, "value": "0x2a"}
	}
	check := func(t *testing.T, e *env, raw hexutil.Bytes) *types.Transaction {
		t.Helper()
		tx := new(types.Transaction)
		if err := tx.UnmarshalBinary(raw); err != nil {
			t.Fatal(err)
		}
		sender, err := types.Sender(types.LatestSignerForChainID(e.chain.ChainID()), tx)
		if err != nil || sender != e.wallet.addr || tx.Value().Int64() != 42 || tx.Gas() == 0 {
			t.Fatalf("signed tx from %s (%v), value %v gas %d", sender, err, tx.Value(), tx.Gas())
		}
		return tx
	}
	t.Run("raw", func(t *testing.T) {
		e := newEnv(t, nil)
		var raw hexutil.Bytes
		if err := e.rpc.CallContext(e.ctx, &raw, "eth_signTransaction", args(e)); err != nil {
			t.Fatal(err)
		}
		tx := check(t, e, raw)
		// Signed, not sent: the client sends it (through the endpoint, to
		// upstream) and it is mined.
		if err := e.eth.SendTransaction(e.ctx, tx); err != nil {
			t.Fatal(err)
		}
		e.mineAll([]common.Hash{tx.Hash()})
	})
	t.Run("object", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.SignTransactionObject = true })
		var res SignTransactionResult
		if err := e.rpc.CallContext(e.ctx, &res, "eth_signTransaction", args(e)); err != nil {
			t.Fatal(err)
		}
		tx := check(t, e, res.Raw)
		if res.Tx == nil || res.Tx.Hash() != tx.Hash() {
			t.Fatalf("tx %v does not match raw %x", res.Tx, res.Raw)
		}
	})
}

// TestExternalSigner drives the endpoint with go-ethereum's own
// external-signer client, the one `geth --signer` uses: it lists the
// accounts, signs a transaction and a text, and the signed transaction,
// sent with ethclient through the endpoint, is mined.
func TestExternalSigner(t *testing.T) {
	e := newEnv(t, nil)
	signer, err := external.NewExternalSigner(e.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { signer.Close() })
	accts := signer.Accounts()
	if len(accts) != 1 || accts[0].Address != e.wallet.addr {
		t.Fatalf("external signer accounts %v, want %s", accts, e.wallet.addr)
	}
	nonce, err := e.eth.PendingNonceAt(e.ctx, e.wallet.addr)
	if err != nil {
		t.Fatal(err)
	}
	head, err := e.eth.HeaderByNumber(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tip := big.NewInt(1_000_000_000)
	tx := types.NewTx(&types.DynamicFeeTx{
		ChainID: e.chain.ChainID(), Nonce: nonce, GasTipCap: tip,
		GasFeeCap: new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), tip),
		Gas:       21000, To: &dest, Value: big.NewInt(7),
	})
	signed, err := signer.SignTx(accts[0], tx, e.chain.ChainID())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.eth.SendTransaction(e.ctx, signed); err != nil {
		t.Fatalf("eth_sendRawTransaction of account_signTransaction's output: %v", err)
	}
	if r := e.mineAll([]common.Hash{signed.Hash()})[0]; r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("receipt status %d", r.Status)
	}

	legacy := types.NewTx(&types.LegacyTx{Nonce: nonce + 1, GasPrice: head.BaseFee.Mul(head.BaseFee, big.NewInt(3)), Gas: 21000, To: &dest, Value: big.NewInt(1)})
	signedLegacy, err := signer.SignTx(accts[0], legacy, e.chain.ChainID())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.eth.SendTransaction(e.ctx, signedLegacy); err != nil {
		t.Fatalf("legacy: %v", err)
	}
	e.mineAll([]common.Hash{signedLegacy.Hash()})

	text := []byte("signed for geth --signer")
	sig, err := signer.SignText(accts[0], text)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.SigToPub(accounts.TextHash(text), sig)
	if err != nil || crypto.PubkeyToAddress(*pub) != e.wallet.addr {
		t.Fatalf("SignText recovers to another address (%v)", err)
	}

	// Another chain id is refused.
	other := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), Nonce: nonce + 2, GasTipCap: tip, GasFeeCap: tip, Gas: 21000, To: &dest})
	if _, err := signer.SignTx(accts[0], other, big.NewInt(1)); err == nil || !strings.Contains(err.Error(), "chain id") {
		t.Fatalf("SignTx for chain 1: %v", err)
	}
}
