package compose

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	dev.NameAgent:     {"00", "01"},       // hot, vault
	dev.NamePolicy:    {"02", "03", "04"}, // hot, vault, the reshare of hot
	dev.NameGuardian1: {"05", "06", "07"}, // hot, vault, the reshare of hot
	dev.NameGuardian2: {"08"},             // vault
}

// spareFixtures are agent-2's, imported when it is brought in.
var spareFixtures = []string{"09"}

// world is the running compose cluster as the test sees it.
type world struct {
	t       *testing.T
	repo    string
	project string
	compose []string // the compose command: docker compose, or docker-compose
	env     []string
	out     string // the operator's directory init writes
	bin     string // the custos binary the image holds, on the host
	setup   string // what compose setup printed

	cluster dev.ComposeCluster
	keys    dev.ComposeKeys
	cred    *agentauth.Credential
	agent   *client.Client // signs as the agent
	rest    *client.Client // the operator
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
	ok = ok && t.Run("e_policy_stopped", w.phasePolicyDown)
	ok = ok && t.Run("f_policy_killed_during_signing", w.phasePolicyKilled)
	// h before g: the vault key's committee holds the agent node that g
	// destroys.
	ok = ok && t.Run("h_guardian_partitioned_during_approval", w.phasePartition)
	ok = ok && t.Run("g_agent_node_replaced_by_reshare", w.phaseReshare)
	_ = ok && t.Run("i_down", w.phaseDown)
}

// phaseDown brings the cluster down with its volumes (t.Cleanup does the
// same on any failure) and checks that nothing of the project is left.
func (w *world) phaseDown(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("phase i took %s", time.Since(start).Round(100*time.Millisecond)) }()
	w.composeRun(t, "--profile", "spare", "--profile", "init", "--profile", "setup", "down", "-v", "--remove-orphans", "-t", "10")
	label := "label=com.docker.compose.project=" + w.project
	if left := strings.TrimSpace(w.run(t, "docker", "ps", "-aq", "--filter", label)); left != "" {
		t.Fatalf("containers left: %s", left)
	}
	if left := strings.TrimSpace(w.run(t, "docker", "volume", "ls", "-q", "--filter", label)); left != "" {
		t.Fatalf("volumes left: %s", left)
	}
}

func (w *world) phaseUp(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("phase a took %s", time.Since(start).Round(100*time.Millisecond)) }()
	bin := w.t.TempDir() // the whole test's: phase b runs the binary
	w.bin = filepath.Join(bin, "custos")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", w.bin, "./cmd/custos")
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
		w.importPreParams(t, name, sets)
	}
	w.composeRun(t, "up", "-d")
	for _, s := range []string{"devchain", "coordinator"} {
		w.waitHealthy(t, s)
	}
	w.setup = w.composeRun(t, "run", "--rm", "setup")

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
	// The operator token, out of the coordinator's volume (the image has
	// no shell to cat it with).
	id := strings.TrimSpace(w.composeRun(t, "ps", "-q", "coordinator"))
	tok := w.run(t, "docker", "cp", id+":/data/operator.token", "-")
	token := tarFile(t, tok)
	if w.rest, err = client.New(url, client.Options{Token: strings.TrimSpace(token)}); err != nil {
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
	// The hot payment compose setup printed, run from the host as printed
	// (the published port and the operator directory are this test's).
	var line string
	for _, l := range strings.Split(w.setup, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, dev.ComposeHostProgram+" sign ") {
			line = l
			break
		}
	}
	if line == "" || strings.ContainsAny(line, `'"`) {
		t.Fatalf("compose setup printed no plain hot payment command:\n%s", w.setup)
	}
	args := strings.Fields(strings.NewReplacer(
		dev.ComposeHostURL, "http://"+w.port(t, "coordinator", 8080),
		dev.ComposeHostCredential, filepath.Join(w.out, "agent.json")).Replace(line))
	out := w.run(t, w.bin, args[1:]...)
	t.Logf("$ %s\n%s", line, out)
	id := regexp.MustCompile(`req:[0-9a-f]{32}`).FindString(out)
	if id == "" || !strings.Contains(out, "(broadcast)") {
		t.Fatalf("the printed hot payment did not sign and broadcast:\n%s", out)
	}
	r, err := w.agent.Request(context.Background(), ids.RequestID(id))
	if err != nil {
		t.Fatal(err)
	}
	if r.State != "signed" || r.Key != w.keys.Hot.ID {
		t.Fatalf("hot payment: %s from %s (%s: %s)", r.State, r.Key, r.RuleID, r.Reason)
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

// phaseKill: the policy node is killed (SIGKILL) while a hot payment is
// being signed, and restarted. The request ends signed or failed, and the
// policy node's ledger holds at most one reservation for it: exactly one
// if it was signed.
func (w *world) phasePolicyKilled(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("phase f took %s", time.Since(start).Round(100*time.Millisecond)) }()
	before := w.countUsed(t)
	r := w.submit(t, w.keys.Hot, dev.Vendors[0], dev.HotPayment)
	// Kill once the coordinator is signing (the tier is known and the
	// session proposed), or as soon as it is over if it was quicker.
	for {
		cur, err := w.agent.Request(context.Background(), r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.State == "signing" || api.Final(cur.State) {
			t.Logf("killing the policy node with request %s %s", r.ID, cur.State)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.run(t, "docker", "kill", "-s", "KILL", strings.TrimSpace(w.composeRun(t, "ps", "-q", dev.NamePolicy)))
	w.composeRun(t, "start", dev.NamePolicy)
	w.waitHealthy(t, dev.NamePolicy)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := w.agent.WaitFinal(ctx, r.ID)
	if err != nil {
		t.Fatalf("request %s after the kill: %v", r.ID, err)
	}
	after := w.countUsed(t)
	t.Logf("request %s ended %s (%s: %s); policy ledger count %d -> %d", r.ID, r.State, r.RuleID, r.Reason, before, after)
	switch r.State {
	case "signed":
		if after-before != 1 {
			t.Fatalf("signed once, but the ledger counts %d reservations for it", after-before)
		}
		if r, err = w.agent.Broadcast(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		w.mined(t, r)
	case "failed", "denied":
		if after-before > 1 {
			t.Fatalf("failed, but the ledger counts %d reservations for it", after-before)
		}
	default:
		t.Fatalf("request ended %s", r.State)
	}
}

// countUsed is the hot rule's count of payments used, from the policy
// node's ledger (a dry run reports it).
func (w *world) countUsed(t *testing.T) uint64 {
	t.Helper()
	body := w.requestBody(t, w.keys.Hot, dev.Vendors[0], dev.HotPayment, time.Hour)
	d, err := w.agent.DryRun(context.Background(), w.cred.Sign(api.SignRequestMethod, api.SignRequestPath, body, time.Now()))
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if string(d.Decision.Member) != string(w.cluster.Nodes[dev.NamePolicy].ID) {
		t.Fatalf("dry run answered by %s, not the policy node", d.Decision.Member)
	}
	for _, b := range d.Budgets {
		if b.CountLimit > 0 {
			return b.CountUsed
		}
	}
	t.Fatalf("dry run reports no count budget: %+v", d.Budgets)
	return 0
}

// phasePartition: guardian-1 is cut off the network while a guarded
// payment waits for it; it approves in its container, the network heals,
// and the request ends signed (then mined) or expired, nothing else.
func (w *world) phasePartition(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("phase h took %s", time.Since(start).Round(100*time.Millisecond)) }()
	body := w.requestBody(t, w.keys.Vault, dev.Vendors[1], dev.GuardedPayment, 3*time.Minute)
	r, err := w.agent.SubmitBody(context.Background(), w.cred, body)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// Wait until guardian-1's node has the request: then cut it off.
	for {
		out, err := w.composeOut("exec", "-T", dev.NameGuardian1, "/custos", "guardian", "show", string(r.ID))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("guardian-1 never got %s: %s", r.ID, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	network := w.project + "_default"
	g1 := strings.TrimSpace(w.composeRun(t, "ps", "-q", dev.NameGuardian1))
	w.run(t, "docker", "network", "disconnect", network, g1)
	out, err := w.composeOut("exec", "-T", dev.NameGuardian1, "/custos", "guardian", "approve", string(r.ID), "--yes")
	t.Logf("approve while partitioned: err %v: %s", err, lastLines(out, 3))
	w.run(t, "docker", "network", "connect", "--alias", dev.NameGuardian1, network, g1)
	if cur, err := w.agent.Request(ctx, r.ID); err == nil && cur.State == "pending_approval" {
		w.approve(t, ctx, dev.NameGuardian1, r.ID)
	}
	r, err = w.agent.WaitFinal(ctx, r.ID)
	if err != nil {
		t.Fatalf("request %s after the partition: %v", r.ID, err)
	}
	t.Logf("request %s ended %s (%s: %s)", r.ID, r.State, r.RuleID, r.Reason)
	switch r.State {
	case "signed":
		if r, err = w.agent.Broadcast(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		w.mined(t, r)
	case "expired":
	default:
		t.Fatalf("request ended %s: %s", r.State, r.Reason)
	}
	w.waitHealthy(t, dev.NameGuardian1)
}

// phaseReshare: the agent node's container and volume are destroyed; the
// spare agent-2 is brought in by a reshare of the hot key that both
// guardians authorise, and the same address signs again.
func (w *world) phaseReshare(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("phase g took %s", time.Since(start).Round(100*time.Millisecond)) }()
	w.composeRun(t, "rm", "-s", "-f", dev.NameAgent)
	w.run(t, "docker", "volume", "rm", w.project+"_"+dev.NameAgent)

	w.importPreParams(t, dev.ServiceAgent2, spareFixtures)
	w.composeRun(t, "--profile", "spare", "up", "-d", "--no-recreate", dev.ServiceAgent2)
	doc, err := os.ReadFile(filepath.Join(w.out, "policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pd api.PolicyDocument
	if err := json.Unmarshal(doc, &pd); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	agent2 := w.cluster.Nodes[dev.ServiceAgent2].ID
	for {
		p, err := w.rest.ProposePolicy(ctx, pd)
		took := false
		if err == nil {
			for _, m := range p.Members {
				took = took || (m.Member == agent2 && m.Accepted)
			}
		}
		if took {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("agent-2 never took the policy: %v %+v", err, p)
		}
		time.Sleep(time.Second)
	}
	w.waitHealthy(t, dev.ServiceAgent2)

	hot := w.keys.Hot
	newCommittee := []api.CommitteeMember{
		{ID: agent2, Role: ids.RoleAgent},
		{ID: w.cluster.Nodes[dev.NamePolicy].ID, Role: ids.RolePolicy},
		{ID: w.cluster.Nodes[dev.NameGuardian1].ID, Role: ids.RoleGuardian},
	}
	var spec []string
	for _, m := range newCommittee {
		spec = append(spec, string(m.ID)+":"+string(m.Role))
	}
	first := w.composeRun(t, "exec", "-T", dev.NameGuardian1, "/custos", "guardian", "authorize-reshare", "--from-node",
		"--key", hot.ID.String(), "--new", strings.Join(spec, ","), "--new-threshold", "1", "--expiry", "1h", "--yes")
	both := w.composeRun(t, "exec", "-T", dev.NameGuardian2, "/custos", "guardian", "authorize-reshare",
		"--add-signature", strings.TrimSpace(jsonPart(first)), "--yes")
	var auth api.Reshare
	if err := json.Unmarshal([]byte(jsonPart(both)), &auth); err != nil {
		t.Fatalf("authorisation: %v\n%s", err, both)
	}
	if len(auth.Signatures) != 2 {
		t.Fatalf("authorisation carries %d signatures", len(auth.Signatures))
	}
	op, err := w.rest.Reshare(ctx, hot.ID, api.ReshareKey{Committee: newCommittee, Threshold: 1, Authorization: auth})
	if err != nil {
		t.Fatalf("reshare: %v", err)
	}
	if op, err = w.rest.WaitOperation(ctx, op.ID, 500*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	if op.State != api.OpDone || op.Key == nil || op.Key.Address != hot.Address {
		t.Fatalf("reshare ended %s: %s (%+v)", op.State, op.Error, op.Key)
	}
	t.Logf("reshare took %s; key %s generation %d", time.Since(start).Round(100*time.Millisecond), op.Key.Address.Hex(), op.Key.Generation)
	w.keys.Hot = *op.Key
	r := w.pay(t, w.keys.Hot, dev.Vendors[0], dev.HotPayment, "")
	if r.State != "signed" {
		t.Fatalf("hot payment after the reshare: %s (%s: %s)", r.State, r.RuleID, r.Reason)
	}
	w.mined(t, r)
}

func (w *world) importPreParams(t *testing.T, service string, sets []string) {
	t.Helper()
	args := []string{"--profile", "spare", "run", "--rm", "--no-deps", "-v", filepath.Join(w.repo, "internal/testfixtures/preparams") + ":/fx:ro",
		service, "node", "import-preparams", "--config", "/data/node.yaml"}
	for _, s := range sets {
		args = append(args, "/fx/"+s+".json")
	}
	w.composeRun(t, args...)
}

// jsonPart is the JSON object a command printed, without what came
// before it.
func jsonPart(s string) string {
	i := strings.Index(s, "{")
	if i < 0 {
		return s
	}
	var v json.RawMessage
	if err := json.NewDecoder(strings.NewReader(s[i:])).Decode(&v); err != nil {
		return s[i:]
	}
	return string(v)
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

// tarFile is the content of the one file in a tar stream (docker cp's
// output).
func tarFile(t *testing.T, s string) string {
	t.Helper()
	tr := tar.NewReader(strings.NewReader(s))
	if _, err := tr.Next(); err != nil {
		t.Fatalf("docker cp: %v", err)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
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
	r, err := w.agent.SubmitBody(context.Background(), w.cred, w.requestBody(t, k, to, value, 30*time.Minute))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return r
}

// requestBody is a signing request for a payment from k at its next
// nonce.
func (w *world) requestBody(t *testing.T, k api.Key, to common.Address, value *big.Int, expiry time.Duration) []byte {
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
		IdempotencyKey: fmt.Sprintf("e2e-%d", time.Now().UnixNano()), Expiry: time.Now().Add(expiry).UTC().Truncate(time.Second)}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
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
