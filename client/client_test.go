package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/coordinator"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/p2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

const token = "client-test-token-0123456789"

// coordinatorURL runs a coordinator whose one member is configured but not
// running, and returns its base URL.
func coordinatorURL(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	k, err := p2p.LoadOrCreateIdentity(filepath.Join(dir, "member.key"))
	if err != nil {
		t.Fatal(err)
	}
	member, _ := peer.IDFromPrivateKey(k)
	if err := os.WriteFile(filepath.Join(dir, "store.key"), []byte(strings.Repeat("ef", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`data_dir: data
store_key: {file: store.key}
listen: [/ip4/127.0.0.1/tcp/0]
http: {listen: "127.0.0.1:0"}
members: [{id: %s, role: policy, addrs: [/ip4/127.0.0.1/tcp/9]}]
operators: [{name: ops, token: %s}]
policy: {genesis_hash: "0x1111111111111111111111111111111111111111111111111111111111111111"}
timeouts: {probe: 500ms}
%s`, member, token, extra)
	path := filepath.Join(dir, "coordinator.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := coordinator.LoadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	co, err := coordinator.New(c, coordinator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- co.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return co.URL()
}

// TestErrors: every error response arrives as an *Error with the API's
// status, code and message; a 429 carries its Retry-After.
func TestErrors(t *testing.T) {
	url := coordinatorURL(t, "rate_limits: {operator: {per_second: 0.01, burst: 2}}\n")
	ctx := context.Background()
	if _, err := client.New("ftp://x", client.Options{}); err == nil {
		t.Fatal("a non-HTTP base URL accepted")
	}
	anon, _ := client.New(url, client.Options{})
	h, err := anon.Health(ctx)
	if err != nil || h.Status != "degraded" || len(h.Members) != 1 || h.Members[0].Reachable {
		t.Fatalf("health: %v %+v", err, h)
	}
	_, err = anon.Keys(ctx)
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 401 || e.Code != httpapi.CodeUnauthorized || e.Message == "" {
		t.Fatalf("keys without a credential: %#v", err)
	}
	if _, err := anon.CreateKey(ctx, api.CreateKey{}); err == nil || !strings.Contains(err.Error(), "needs an operator token") {
		t.Fatalf("operator call without a token: %v", err)
	}
	if _, err := anon.Submit(ctx, nil, api.SignRequest{}); err == nil {
		t.Fatal("submit without a credential")
	}
	op, _ := client.New(url, client.Options{Token: token})
	if _, err := op.Policy(ctx); !client.IsCode(err, httpapi.CodeNotFound) {
		t.Fatalf("policy before any: %v", err)
	}
	unknown, _ := ids.ParseKeyID("key:0x2222222222222222222222222222222222222222")
	if _, err := op.Key(ctx, unknown); !client.IsCode(err, httpapi.CodeNotFound) || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := op.Keys(ctx); !client.IsCode(err, httpapi.CodeRateLimited) {
		t.Fatalf("third operator call within the burst of 2: %v", err)
	}
	_, err = op.Keys(ctx)
	if !errors.As(err, &e) || e.Status != 429 || e.RetryAfter <= 0 {
		t.Fatalf("rate limited: %#v", err)
	}

	// An agent the policy does not know: the signature is checked.
	cred, _ := agentauth.NewCredential("bot")
	ag, _ := client.New(url, client.Options{Agent: cred, Now: func() time.Time { return time.Now() }})
	_, err = ag.Submit(ctx, cred, api.SignRequest{Key: unknown})
	if !errors.As(err, &e) || e.Code != httpapi.CodeUnauthorized || !strings.Contains(e.Message, "unknown agent") {
		t.Fatalf("unknown agent: %#v", err)
	}
}

// TestWaitsOutRateLimit: the long polls and the operation poll wait a 429
// out for its Retry-After and ask again, so they end with the answer (here
// a 404 for ids never issued), not with the rate limit; a poll with too
// little time left for the pause returns the 429.
func TestWaitsOutRateLimit(t *testing.T) {
	url := coordinatorURL(t, "rate_limits: {operator: {per_second: 1, burst: 1}}\n")
	ctx := context.Background()
	op, _ := client.New(url, client.Options{Token: token})
	drain := func() {
		t.Helper()
		for i := 0; ; i++ {
			_, err := op.Keys(ctx)
			if client.IsCode(err, httpapi.CodeRateLimited) {
				return
			}
			if i > 5 {
				t.Fatalf("no 429 after %d operator calls: %v", i, err)
			}
		}
	}
	unknown := ids.RequestID("req:never-issued")

	// The first call, within the burst.
	if _, err := op.Poll(ctx, unknown, -time.Second, time.Second); !client.IsCode(err, httpapi.CodeNotFound) {
		t.Fatalf("poll with its time already spent: %v, want the 404 of an immediate answer, not a bad timeout", err)
	}
	drain()
	if _, err := op.Poll(ctx, unknown, 200*time.Millisecond, time.Second); !client.IsCode(err, httpapi.CodeRateLimited) {
		t.Fatalf("poll with no time for the pause: %v, want the 429", err)
	}
	drain()
	if _, err := op.Poll(ctx, unknown, 10*time.Second, time.Second); !client.IsCode(err, httpapi.CodeNotFound) {
		t.Fatalf("poll: %v, want the 404 after waiting out the 429", err)
	}
	drain()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := op.WaitFinal(wctx, unknown); !client.IsCode(err, httpapi.CodeNotFound) {
		t.Fatalf("wait final: %v, want the 404 after waiting out the 429", err)
	}
	drain()
	if _, err := op.WaitOperation(wctx, "op:never-issued", 10*time.Millisecond, nil); !client.IsCode(err, httpapi.CodeNotFound) {
		t.Fatalf("wait operation: %v, want the 404 after waiting out the 429", err)
	}
}
