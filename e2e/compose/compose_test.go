package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/cli"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/dev"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/params"
)

// fixtures says which committed test-only pre-parameter sets each node
// imports: distinct sets for distinct nodes, one per key generation or
// reshare it takes part in.
var fixtures = map[string][]string{
	dev.NameAgent:     {"00", "01"},
	dev.NamePolicy:    {"02", "03"},
	dev.NameGuardian1: {"04", "05"},
	dev.NameGuardian2: {"06"},
}

// world is the running compose cluster as the test sees it.
type world struct {
	t       *testing.T
	repo    string
	project string
	compose []string // the compose command: docker compose, or docker-compose
	env     []string
	out     string // the operator's directory init writes

	cluster dev.ComposeCluster
	keys    dev.ComposeKeys
	cred    *agentauth.Credential
	agent   *client.Client // signs as the agent
	eth     *ethclient.Client
	chainID *big.Int
}

func TestCompose(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker is not installed: the compose end-to-end test needs it")
	}
	if testing.Short() {
		t.Skip("the compose end-to-end test builds an image and runs a cluster: not in -short")
	}
	w := &world{t: t, project: os.Getenv("CUSTOS_E2E_PROJECT")}
	if w.project == "" {
		w.project = fmt.Sprintf("custos-e2e-%d", os.Getpid())
	}
	switch {
	case exec.Command("docker", "compose", "version").Run() == nil:
		w.compose = []string{"docker", "compose"}
	default:
		p, err := exec.LookPath("docker-compose")
		if err != nil {
			t.Fatalf("docker is here but neither docker compose nor docker-compose is")
		}
		w.compose = []string{p}
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	w.repo = repo
	w.out = t.TempDir()

	ok := t.Run("a_up_keys_funded", w.phaseUp)
	ok = ok && t.Run("b_hot_payment", w.phaseHot)
	ok = ok && t.Run("c_guarded_payment_approved_in_container", w.phaseGuarded)
	ok = ok && t.Run("d_guardian_1_stopped", w.phaseGuardianDown)
	_ = ok && t.Run("e_policy_stopped", w.phasePolicyDown)
}

func (w *world) phaseUp(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("phase a took %s", time.Since(start).Round(100*time.Millisecond)) }()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(bin, "custos"), "./cmd/custos")
	build.Dir = w.repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the static binary: %v\n%s", err, out)
	}
	df, err := os.ReadFile(filepath.Join(w.repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	image := w.project + ":test"
	w.run(t, "docker", "build", "-q", "-t", image, bin)
	if out, err := exec.Command("docker", "image", "inspect", "-f", "{{.Size}}", image).Output(); err == nil {
		t.Logf("image %s: %s bytes", image, strings.TrimSpace(string(out)))
	}
	w.env = append(os.Environ(),
		"COMPOSE_PROJECT_NAME="+w.project,
		"CUSTOS_IMAGE="+image,
		"CUSTOS_POOL_GENERATE=false",
		"CUSTOS_COMPOSE_OUT="+w.out,
		"CUSTOS_HTTP_PORT=127.0.0.1:",
		"CUSTOS_CHAIN_PORT=127.0.0.1:",
	)
	w.t.Cleanup(func() {
		if w.t.Failed() {
			out, _ := w.composeOut("logs", "--no-color", "--tail", "40")
			w.t.Logf("compose logs:\n%s", out)
		}
		// Down with every profile, so the spare and the one-shot services
		// go too; then the image.
		w.composeOut("--profile", "spare", "--profile", "init", "--profile", "setup", "down", "-v", "--remove-orphans", "-t", "5")
		exec.Command("docker", "image", "rm", "-f", image).Run()
	})

	w.composeRun(t, "run", "--rm", "init")
	for name, sets := range fixtures {
		args := []string{"run", "--rm", "--no-deps", "-v", filepath.Join(w.repo, "internal/testfixtures/preparams") + ":/fx:ro",
			name, "node", "import-preparams", "--config", "/data/node.yaml"}
		for _, s := range sets {
			args = append(args, "/fx/"+s+".json")
		}
		w.composeRun(t, args...)
	}
	w.composeRun(t, "up", "-d")
	for _, s := range []string{"devchain", "coordinator"} {
		w.waitHealthy(t, s)
	}
	w.composeRun(t, "run", "--rm", "setup")

	b, err := os.ReadFile(filepath.Join(w.out, dev.ComposeClusterFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &w.cluster); err != nil {
		t.Fatal(err)
	}
	if w.cred, err = cli.LoadCredential(filepath.Join(w.out, "agent.json")); err != nil {
		t.Fatal(err)
	}
	url := "http://" + w.port(t, "coordinator", 8080)
	if w.agent, err = client.New(url, client.Options{Agent: w.cred}); err != nil {
		t.Fatal(err)
	}
	if w.eth, err = ethclient.Dial("http://" + w.port(t, "devchain", 8545)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if w.chainID, err = w.eth.ChainID(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := w.agent.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		switch k.GuardianFloor {
		case 0:
			w.keys.Hot = k
		default:
			w.keys.Vault = k
		}
	}
	if w.keys.Hot.Address == (common.Address{}) || w.keys.Vault.Address == (common.Address{}) || w.keys.Vault.GuardianFloor != 1 {
		t.Fatalf("keys after setup: %+v", keys)
	}
	for _, k := range []api.Key{w.keys.Hot, w.keys.Vault} {
		bal, err := w.eth.BalanceAt(ctx, k.Address, nil)
		if err != nil || bal.Sign() <= 0 {
			t.Fatalf("key %s not funded: %v %v", k.Address.Hex(), bal, err)
		}
	}
	for _, s := range []string{dev.NameAgent, dev.NamePolicy, dev.NameGuardian1, dev.NameGuardian2} {
		w.waitHealthy(t, s)
	}
}

func (w *world) phaseHot(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("phase b took %s", time.Since(start).Round(100*time.Millisecond)) }()
	r := w.pay(t, w.keys.Hot, dev.Vendors[0], dev.HotPayment, "")
	if r.State != "signed" {
		t.Fatalf("hot payment: %s (%s: %s)", r.State, r.RuleID, r.Reason)
	}
	w.mined(t, r)
}

func (w *world) phaseGuarded(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("phase c took %s", time.Since(start).Round(100*time.Millisecond)) }()
	r := w.pay(t, w.keys.Vault, dev.Vendors[1], dev.GuardedPayment, dev.NameGuardian1)
	if r.State != "signed" {
		t.Fatalf("guarded payment: %s (%s: %s)", r.State, r.RuleID, r.Reason)
	}
	w.mined(t, r)
}

func (w *world) phaseGuardianDown(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("phase d took %s", time.Since(start).Round(100*time.Millisecond)) }()
	w.composeRun(t, "stop", "-t", "10", dev.NameGuardian1)
	r := w.pay(t, w.keys.Vault, dev.Vendors[1], dev.GuardedPayment, dev.NameGuardian2)
	if r.State != "signed" {
		t.Fatalf("guarded payment with guardian-1 down: %s (%s: %s)", r.State, r.RuleID, r.Reason)
	}
	w.mined(t, r)
	w.composeRun(t, "start", dev.NameGuardian1)
	w.waitHealthy(t, dev.NameGuardian1)
}

func (w *world) phasePolicyDown(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("phase e took %s", time.Since(start).Round(100*time.Millisecond)) }()
	w.composeRun(t, "stop", "-t", "10", dev.NamePolicy)
	asked := time.Now()
	r := w.submit(t, w.keys.Hot, dev.Vendors[0], dev.HotPayment)
	// Bounded, not timed: a hang fails here instead of at the test's end.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := w.agent.WaitFinal(ctx, r.ID)
	if err != nil {
		t.Fatalf("hot payment with the policy node down did not end: %v", err)
	}
	t.Logf("refused after %s: %s (%s: %s, member %s)", time.Since(asked).Round(10*time.Millisecond), r.State, r.RuleID, r.Reason, r.Member)
	if r.State == "signed" {
		t.Fatalf("signed without the policy node")
	}
	policyID := string(w.cluster.Nodes[dev.NamePolicy].ID)
	if !strings.Contains(r.Reason, policyID) && string(r.Member) != policyID && !strings.Contains(r.Reason, "policy") {
		t.Fatalf("refusal %q (member %q) does not name the policy node %s", r.Reason, r.Member, policyID)
	}
	w.composeRun(t, "start", dev.NamePolicy)
	w.waitHealthy(t, dev.NamePolicy)
}

// pay asks for a payment, has guardian approve it through its CLI in its
// container when one is named, and waits for the request's end; a signed
// one is broadcast.
func (w *world) pay(t *testing.T, k api.Key, to common.Address, value *big.Int, guardian string) *api.Request {
	t.Helper()
	r := w.submit(t, k, to, value)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if guardian != "" {
		w.approve(t, ctx, guardian, r.ID)
	}
	r, err := w.agent.WaitFinal(ctx, r.ID)
	if err != nil {
		t.Fatalf("request %s: %v", r.ID, err)
	}
	if r.State == "signed" {
		if r, err = w.agent.Broadcast(ctx, r.ID); err != nil {
			t.Fatalf("broadcast %s: %v", r.ID, err)
		}
	}
	return r
}

func (w *world) submit(t *testing.T, k api.Key, to common.Address, value *big.Int) *api.Request {
	t.Helper()
	ctx := context.Background()
	nonce, err := w.eth.PendingNonceAt(ctx, k.Address)
	if err != nil {
		t.Fatal(err)
	}
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: w.chainID, Nonce: nonce, To: &to, Value: value,
		Gas: 21000, GasFeeCap: big.NewInt(20 * params.GWei), GasTipCap: big.NewInt(params.GWei)})
	raw, err := tx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	req := api.SignRequest{Key: k.ID, ChainID: w.chainID.Uint64(), Kind: "transaction",
		Payload:        []byte(fmt.Sprintf("%q", hexutil.Encode(raw))),
		IdempotencyKey: fmt.Sprintf("e2e-%d", time.Now().UnixNano()), Expiry: time.Now().Add(30 * time.Minute).UTC().Truncate(time.Second)}
	r, err := w.agent.Submit(ctx, w.cred, req)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return r
}

// approve runs custos guardian approve inside the guardian's container
// until its node has the request in its queue and the approval is taken.
func (w *world) approve(t *testing.T, ctx context.Context, guardian string, id ids.RequestID) {
	t.Helper()
	var last string
	for ctx.Err() == nil {
		out, err := w.composeOut("exec", "-T", guardian, "/custos", "guardian", "approve", string(id), "--yes")
		if err == nil {
			t.Logf("%s approved %s in its container: %s", guardian, id, strings.TrimSpace(out))
			return
		}
		last = out
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	t.Fatalf("%s could not approve %s: %s", guardian, id, last)
}

func (w *world) mined(t *testing.T, r *api.Request) {
	t.Helper()
	if r.TxHash == nil || !r.Broadcast {
		t.Fatalf("request %s: not broadcast (%s)", r.ID, r.BroadcastError)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		rc, err := w.eth.TransactionReceipt(ctx, *r.TxHash)
		if err == nil {
			if rc.Status != types.ReceiptStatusSuccessful {
				t.Fatalf("transaction %s reverted", r.TxHash.Hex())
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("transaction %s not mined: %v", r.TxHash.Hex(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitHealthy waits until the service's container health check passes.
func (w *world) waitHealthy(t *testing.T, service string) {
	t.Helper()
	id := strings.TrimSpace(w.composeRun(t, "ps", "-q", service))
	deadline := time.Now().Add(3 * time.Minute)
	status := ""
	for time.Now().Before(deadline) {
		out, err := exec.Command("docker", "inspect", "-f", "{{.State.Health.Status}}", id).Output()
		if err == nil {
			if status = strings.TrimSpace(string(out)); status == "healthy" {
				return
			}
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("%s not healthy: %s", service, status)
}

// port is the host address a service's container port is published on.
func (w *world) port(t *testing.T, service string, port int) string {
	t.Helper()
	out := strings.TrimSpace(w.composeRun(t, "port", service, fmt.Sprint(port)))
	if out == "" {
		t.Fatalf("%s publishes no port %d", service, port)
	}
	return strings.Replace(out, "0.0.0.0", "127.0.0.1", 1)
}

func (w *world) composeArgs(args ...string) *exec.Cmd {
	all := append(append([]string(nil), w.compose[1:]...), "-p", w.project, "-f", filepath.Join(w.repo, "docker-compose.yml"))
	cmd := exec.Command(w.compose[0], append(all, args...)...)
	cmd.Env = w.env
	cmd.Dir = w.repo
	return cmd
}

func (w *world) composeOut(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := w.composeArgs(args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (w *world) composeRun(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := w.composeArgs(args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("compose %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func (w *world) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
