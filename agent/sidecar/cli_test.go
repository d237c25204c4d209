package sidecar_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"github.com/custos-wallet/custos/agent/x402/x402test"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agent/rpc"
	"github.com/custos-wallet/custos/agent/sidecar"
	"github.com/custos-wallet/custos/cli"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

var (
	credOnce sync.Once
	credPath string
)

// credentialFile writes the bot's credential file once.
func (w *world) credentialFile(t *testing.T) string {
	t.Helper()
	credOnce.Do(func() {
		credPath = filepath.Join(w.root, "bot.json")
		if err := cli.WriteCredential(credPath, w.bot); err != nil {
			t.Fatal(err)
		}
	})
	return credPath
}

func (w *world) cliEnv(t *testing.T) map[string]string {
	return map[string]string{
		cli.EnvURL:             w.coordURL,
		cli.EnvAgentCredential: w.credentialFile(t),
		cli.EnvChainRPC:        w.chain.URL(),
	}
}

// runCLI runs custos in-process with the cluster's environment.
func (w *world) runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	vars := w.cliEnv(t)
	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(k string) string { return vars[k] }}
	code := cli.Run(context.Background(), env, args)
	return code, out.String(), errb.String()
}

// custos policy dry-run evaluates a request for the agent without
// signing: allowed by small-payments, denied by blocked-destinations,
// each printed with its rule; custos policy show prints the rules.
func TestCLIPolicyShowAndDryRun(t *testing.T) {
	w := setup(t)
	code, out, errs := w.runCLI(t, "policy", "show", "--credential", w.credentialFile(t))
	if code != 0 || !strings.Contains(out, "small-payments") || !strings.Contains(out, "x402-payments") {
		t.Fatalf("policy show: exit %d\n%s%s", code, out, errs)
	}
	tx := func(to string) string {
		toAddr := vendor1
		if to == "blocked" {
			toAddr = blocked
		}
		raw, err := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(chainID), To: &toAddr, Value: big.NewInt(1e15), Gas: 21000,
			GasFeeCap: big.NewInt(10e9), GasTipCap: big.NewInt(1e9)}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return "0x" + hex.EncodeToString(raw)
	}
	code, out, errs = w.runCLI(t, "policy", "dry-run", "--credential", w.credentialFile(t), "--key", w.hot.ID.String(), "--chain-id", "1337", "--tx", tx("vendor"))
	if code != 0 || !strings.Contains(out, `allowed: tier hot by rule "small-payments"`) {
		t.Fatalf("dry-run allowed: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = w.runCLI(t, "policy", "dry-run", "--credential", w.credentialFile(t), "--key", w.hot.ID.String(), "--chain-id", "1337", "--tx", tx("blocked"), "--json")
	var d struct {
		Decision struct {
			Verdict string `json:"verdict"`
			RuleID  string `json:"rule_id"`
		} `json:"decision"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil || d.Decision.Verdict != "deny" || d.Decision.RuleID != "blocked-destinations" {
		t.Fatalf("dry-run denied: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := w.runCLI(t, "policy", "dry-run", "--credential", w.credentialFile(t), "--key", w.hot.ID.String(), "--chain-id", "1337", "--tx", "0xzz"); code == 0 || !strings.Contains(errs, "--tx") {
		t.Fatalf("dry-run of bad hex: exit %d %s", code, errs)
	}
}

// custos agent pay fetches an x402 resource, paying under the policy;
// a payee outside the policy is refused with nothing paid.
func TestCLIAgentPay(t *testing.T) {
	w := setup(t)
	f := x402test.NewFacilitator(t, clock{}.Now)
	bad := x402test.NewResourceServer(t, f, 2, offer("1000", stranger, 60))
	code, out, errs := w.runCLI(t, "agent", "pay", bad.URL(), "--keys", w.hot.ID.String())
	if code == 0 || bad.Payments.Load() != 0 || !strings.Contains(errs, "policy allows none") {
		t.Fatalf("agent pay to a stranger: exit %d payments %d\n%s%s", code, bad.Payments.Load(), out, errs)
	}
}

// The built binary serves MCP over stdio (custos agent mcp, as an agent
// host spawns it): the go-sdk client lists the tools and calls explain,
// and a denied transfer comes back as isError naming its rule.
func TestMCPStdioBinary(t *testing.T) {
	w := setup(t)
	bin := filepath.Join(t.TempDir(), "custos")
	build := exec.Command("go", "build", "-o", bin, "github.com/custos-wallet/custos/cmd/custos")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "agent", "mcp", "--keys", w.hot.ID.String(), "--log-level", "warn")
	cmd.Env = os.Environ()
	for k, v := range w.cliEnv(t) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test-host", Version: "1"}, nil).Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect to custos agent mcp: %v\n%s", err, stderr.String())
	}
	defer cs.Close()
	list, err := cs.ListTools(ctx, nil)
	if err != nil || len(list.Tools) != 10 {
		t.Fatalf("tools over stdio: %v %d", err, len(list.Tools))
	}
	res, out := call(t, cs, "explain", map[string]any{"to": vendor1.Hex(), "amount": "0.001"})
	if res.IsError || out["allowed"] != true || out["rule"] != "small-payments" {
		t.Fatalf("explain over stdio: %s %v", resultText(res), out)
	}
	res, out = call(t, cs, "transfer", map[string]any{"to": blocked.Hex(), "amount": "0.001"})
	if !res.IsError || out["rule"] != "blocked-destinations" {
		t.Fatalf("denied transfer over stdio: %s %v\n%s", resultText(res), out, stderr.String())
	}
}

// A session grant end to end: the agent asks for one (custos session
// request), alice signs and pushes it (custos session grant), and a
// payment to a destination no rule names, default-denied without the
// grant, is signed and mined with it; a second one over the grant's
// total is denied.
func TestCLISessionGrant(t *testing.T) {
	w := setup(t)
	dir := t.TempDir()
	ks, pw := filepath.Join(dir, "alice.json"), filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("correct horse alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	password, err := admin.ReadPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ImportKeystore(ks, password, w.alice, true); err != nil {
		t.Fatal(err)
	}
	grantFile := filepath.Join(dir, "grant.json")
	code, out, errs := w.runCLI(t, "session", "request", "--key", w.hot.ID.String(), "--for", "1h", "--to", stranger.Hex(),
		"--value-per-tx", "0.002ether", "--value-total", "0.0025ether", "--max-count", "5", "--chain-id", "1337", "--out", grantFile)
	if code != 0 || !strings.Contains(out, "EIP-712 digest") {
		t.Fatalf("session request: exit %d\n%s%s", code, out, errs)
	}
	if code, out, _ := w.runCLI(t, "session", "list", dir); code != 0 || !strings.Contains(out, "unsigned") {
		t.Fatalf("session list before signing: exit %d\n%s", code, out)
	}
	code, out, errs = w.runCLI(t, "session", "grant", grantFile, "--wallet-id", w.walletID.Hex(), "--keystore", ks, "--password-file", pw)
	if code != 0 || strings.Contains(out, "refused") {
		t.Fatalf("session grant: exit %d\n%s%s", code, out, errs)
	}
	if code, out, _ := w.runCLI(t, "session", "list", grantFile); code != 0 || !strings.Contains(out, "active") {
		t.Fatalf("session list after signing: exit %d\n%s", code, out)
	}
	raw, err := os.ReadFile(grantFile)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(w.coordURL, client.Options{Agent: w.bot})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := sidecar.New(sidecar.Config{Client: cl, Credential: w.bot, Keys: []ids.KeyID{w.hot.ID}, Grant: raw})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := dial(t, w.endpoint(t, wl).URL())
	ctx := context.Background()
	var h common.Hash
	if err := rc.CallContext(ctx, &h, "eth_sendTransaction", map[string]any{"from": w.hot.Address, "to": stranger, "value": (*hexutil.Big)(big.NewInt(1e15))}); err != nil {
		t.Fatalf("send under the grant: %v", err)
	}
	if rs, err := w.mined(ctx, []common.Hash{h}); err != nil || rs[0].Status != types.ReceiptStatusSuccessful {
		t.Fatalf("grant payment not mined: %v", err)
	}
	err = rc.CallContext(ctx, &h, "eth_sendTransaction", map[string]any{"from": w.hot.Address, "to": stranger, "value": (*hexutil.Big)(big.NewInt(15e14))})
	if code, data := errorData(t, err); code != rpc.CodeDenied {
		t.Fatalf("over the grant's total: code %d data %v (%v)", code, data, err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// custos agent runs the sidecar: the JSON-RPC endpoint and MCP over HTTP
// with the bearer token from its token file (created on first run), both
// on the loopback ports it prints; it stops cleanly when its context ends.
func TestCLIAgentDaemon(t *testing.T) {
	w := setup(t)
	tokenFile := filepath.Join(t.TempDir(), "mcp.token")
	vars := w.cliEnv(t)
	var out, errb syncBuffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(k string) string { return vars[k] }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, env, []string{"agent", "--listen", "127.0.0.1:0", "--mcp-listen", "127.0.0.1:0", "--mcp-token-file", tokenFile, "--keys", w.hot.ID.String(), "--log-level", "warn"})
	}()
	var rpcURL, mcpURL string
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	for rpcURL == "" || mcpURL == "" {
		select {
		case code := <-done:
			t.Fatalf("custos agent exited %d\n%s%s", code, out.String(), errb.String())
		case <-wctx.Done():
			t.Fatalf("custos agent printed no addresses:\n%s%s", out.String(), errb.String())
		case <-time.After(50 * time.Millisecond):
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if u, ok := strings.CutPrefix(line, "JSON-RPC wallet endpoint: "); ok {
				rpcURL, _, _ = strings.Cut(u, " ")
			}
			if u, ok := strings.CutPrefix(line, "MCP (streamable HTTP): "); ok {
				mcpURL, _, _ = strings.Cut(u, " ")
			}
		}
	}
	rc, _ := dial(t, rpcURL)
	var accts []common.Address
	if err := rc.CallContext(ctx, &accts, "eth_accounts"); err != nil || len(accts) != 1 || accts[0] != w.hot.Address {
		t.Fatalf("eth_accounts from the daemon: %v %v", accts, err)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	tr := &sdk.StreamableClientTransport{Endpoint: mcpURL, HTTPClient: &http.Client{Transport: bearer{strings.TrimSpace(string(tok))}}}
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test-host", Version: "1"}, nil).Connect(ctx, tr, nil)
	if err != nil {
		t.Fatalf("MCP over HTTP to the daemon: %v", err)
	}
	res, o := call(t, cs, "get_wallet", nil)
	cs.Close()
	if res.IsError || o["agent"] != "bot" {
		t.Fatalf("get_wallet from the daemon: %s %v", resultText(res), o)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("custos agent exited %d after cancel\n%s", code, errb.String())
	}
}
