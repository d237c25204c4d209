package sidecar_test

// The Wallet against a coordinator that lies or fails: a fault the real
// coordinator cannot be made to show, so a small HTTP server plays it. It
// checks every request as a node would (agent signature, the exact
// endpoint, a body that parses), so the tests also show what the sidecar
// sends.

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agent/rpc"
	"github.com/custos-wallet/custos/agent/sidecar"
	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

type fakeCoordinator struct {
	t      *testing.T
	cred   *agentauth.Credential
	key    *ecdsa.PrivateKey // what "the cluster" signs with
	addr   common.Address
	answer func(p *api.ParsedRequest, r *api.Request) // shapes the answer

	mu     sync.Mutex
	bodies [][]byte
	drop   int // connections to drop before answering
}

func newFake(t *testing.T) (*fakeCoordinator, *sidecar.Wallet) {
	t.Helper()
	cred, err := agentauth.NewCredential("bot")
	if err != nil {
		t.Fatal(err)
	}
	k, _ := crypto.GenerateKey()
	f := &fakeCoordinator{t: t, cred: cred, key: k, addr: crypto.PubkeyToAddress(k.PublicKey)}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cl, err := client.New(srv.URL, client.Options{Agent: cred})
	if err != nil {
		t.Fatal(err)
	}
	w, err := sidecar.New(sidecar.Config{Client: cl, Credential: cred, Wait: 200 * time.Millisecond, SigningGrace: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return f, w
}

func (f *fakeCoordinator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	switch {
	case r.Method == "GET" && r.URL.Path == "/v1/keys":
		json.NewEncoder(w).Encode(api.Keys{Keys: []api.Key{{ID: ids.KeyID(f.addr), Address: f.addr, Threshold: 1}}})
	case r.Method == "POST" && r.URL.Path == "/v1/requests":
		f.mu.Lock()
		f.bodies = append(f.bodies, body)
		drop := f.drop > 0
		if drop {
			f.drop--
		}
		f.mu.Unlock()
		if drop {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
			return
		}
		s, err := agentauth.FromHTTP(r, body)
		if err != nil || s.Verify(f.cred.Public()) != nil {
			http.Error(w, `{"error":{"code":"unauthorized","message":"bad agent signature"}}`, http.StatusUnauthorized)
			return
		}
		p, err := api.ParseSigned(s, time.Now())
		if err != nil {
			f.t.Errorf("the sidecar sent a request a node refuses: %v", err)
			http.Error(w, `{"error":{"code":"bad_request","message":"bad"}}`, http.StatusBadRequest)
			return
		}
		d := p.Payload.Digest()
		sig, _ := crypto.Sign(d[:], f.key)
		sig[64] += 27
		resp := &api.Request{ID: "req:1", Agent: "bot", From: f.addr, Digest: d, State: api.StateSigned, Signature: sig}
		if f.answer != nil {
			f.answer(p, resp)
		}
		json.NewEncoder(w).Encode(resp)
	case r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/wait"):
		json.NewEncoder(w).Encode(api.Request{ID: "req:1", State: api.StatePendingApproval, Tier: "guarded"})
	default:
		http.Error(w, `{"error":{"code":"not_found","message":"no"}}`, http.StatusNotFound)
	}
}

func payloads(t *testing.T, from common.Address) map[string]*chain.Payload {
	t.Helper()
	to := common.HexToAddress("0x1111111111111111111111111111111111111111")
	raw, _ := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), Nonce: 3, To: &to, Value: big.NewInt(5), Gas: 21000,
		GasFeeCap: big.NewInt(2e9), GasTipCap: big.NewInt(1e9)}).MarshalBinary()
	tx, err := chain.ParseTransaction(big.NewInt(1), raw)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := chain.ParsePersonalMessage(big.NewInt(1), []byte("Sign in to example.org"))
	if err != nil {
		t.Fatal(err)
	}
	td, err := chain.ParseTypedData(big.NewInt(1), []byte(`{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"chainId","type":"uint256"}],
	"Login":[{"name":"user","type":"address"}]},"primaryType":"Login","domain":{"name":"App","chainId":"1"},"message":{"user":"`+from.Hex()+`"}}`))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*chain.Payload{"transaction": tx, "personal_message": msg, "typed_data": td}
}

// An honest answer: each kind of payload is sent as a request a node
// accepts, and the signature comes back with V = 0 or 1, recovering to
// the address.
func TestWalletHonestCoordinator(t *testing.T) {
	f, w := newFake(t)
	for kind, p := range payloads(t, f.addr) {
		sig, err := w.Sign(context.Background(), f.addr, p)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if sig[64] > 1 || p.Verify(sig, f.addr) != nil {
			t.Fatalf("%s: signature %x does not recover to %s", kind, sig, f.addr)
		}
	}
}

// The coordinator is trusted for nothing the sidecar can check.
func TestWalletRefusesLyingCoordinator(t *testing.T) {
	other, _ := crypto.GenerateKey()
	cases := map[string]func(p *api.ParsedRequest, r *api.Request){
		"another digest": func(_ *api.ParsedRequest, r *api.Request) { r.Digest = common.HexToHash("0x1234") },
		"another signer": func(p *api.ParsedRequest, r *api.Request) {
			d := p.Payload.Digest()
			r.Signature, _ = crypto.Sign(d[:], other)
		},
		"short signature": func(_ *api.ParsedRequest, r *api.Request) { r.Signature = r.Signature[:64] },
		"another from":    func(_ *api.ParsedRequest, r *api.Request) { r.From = crypto.PubkeyToAddress(other.PublicKey) },
	}
	for name, lie := range cases {
		t.Run(name, func(t *testing.T) {
			f, w := newFake(t)
			f.answer = lie
			_, err := w.Sign(context.Background(), f.addr, payloads(t, f.addr)["transaction"])
			if !errors.Is(err, sidecar.ErrUntrusted) {
				t.Fatalf("err %v, want ErrUntrusted", err)
			}
		})
	}
}

// A denial is *rpc.Denied with rule, reason and request id; a request
// still waiting for a guardian after the wait is *rpc.Pending; a failed
// one is ErrFailed; an address the agent has no key for is refused
// before anything is sent.
func TestWalletOutcomes(t *testing.T) {
	f, w := newFake(t)
	p := payloads(t, f.addr)["transaction"]
	f.answer = func(_ *api.ParsedRequest, r *api.Request) {
		r.State, r.RuleID, r.Reason, r.Signature = api.StateDenied, "blocked", "destination is blocked", nil
	}
	_, err := w.Sign(context.Background(), f.addr, p)
	var d *rpc.Denied
	if !errors.As(err, &d) || d.Rule != "blocked" || d.Reason != "destination is blocked" || d.RequestID != "req:1" {
		t.Fatalf("denial: %v", err)
	}
	f.answer = func(_ *api.ParsedRequest, r *api.Request) { r.State, r.Signature = api.StatePendingApproval, nil }
	_, err = w.Sign(context.Background(), f.addr, p)
	var pe *rpc.Pending
	if !errors.As(err, &pe) || pe.RequestID != "req:1" {
		t.Fatalf("pending: %v", err)
	}
	f.answer = func(_ *api.ParsedRequest, r *api.Request) {
		r.State, r.Reason, r.Signature = api.StateFailed, "no quorum", nil
	}
	if _, err = w.Sign(context.Background(), f.addr, p); !errors.Is(err, sidecar.ErrFailed) || !strings.Contains(err.Error(), "no quorum") {
		t.Fatalf("failed: %v", err)
	}
	n := len(f.bodies)
	stranger := common.HexToAddress("0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a")
	if _, err = w.Sign(context.Background(), stranger, p); !errors.Is(err, sidecar.ErrUnknownAccount) || len(f.bodies) != n {
		t.Fatalf("unknown account: %v (%d requests sent)", err, len(f.bodies)-n)
	}
}

// A connection lost before the answer is retried with the very same body,
// idempotency key included, so the coordinator answers with the request
// it stored rather than signing twice.
func TestWalletRetriesWithSameIdempotencyKey(t *testing.T) {
	f, w := newFake(t)
	f.drop = 1
	if _, err := w.Sign(context.Background(), f.addr, payloads(t, f.addr)["transaction"]); err != nil {
		t.Fatal(err)
	}
	if len(f.bodies) != 2 || string(f.bodies[0]) != string(f.bodies[1]) {
		t.Fatalf("%d submissions, bodies %q", len(f.bodies), f.bodies)
	}
	var r api.SignRequest
	if err := json.Unmarshal(f.bodies[0], &r); err != nil || !strings.HasPrefix(r.IdempotencyKey, "agent-") {
		t.Fatalf("idempotency key %q: %v", r.IdempotencyKey, err)
	}
}
