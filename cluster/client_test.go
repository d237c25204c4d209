package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/cli"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/node/admin"
)

// The Go client and the operator and agent commands of the CLI against
// the whole cluster.

// restClient is a client of the running coordinator; with an agent
// credential when cred is set, with the operator token otherwise.
func (c *cluster) restClient(t *testing.T, agent bool) *client.Client {
	t.Helper()
	opts := client.Options{Token: c.opToken}
	if agent {
		opts = client.Options{Agent: c.w.bot}
	}
	cl, err := client.New(c.url(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// runCLI runs `custos <args>` in-process.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
	code := cli.Run(context.Background(), env, args)
	return code, out.String(), errb.String()
}

// `custos sign --broadcast` with the agent's credential file: the request
// is signed by the agent and policy nodes and the coordinator broadcasts
// it to the chain, which mines it. `custos requests show` and `custos keys
// show` report it and the key.
func TestSignAndBroadcastThroughCLI(t *testing.T) {
	c := setup(t)
	credFile := filepath.Join(t.TempDir(), "bot.json")
	if err := cli.WriteCredential(credFile, c.w.bot); err != nil {
		t.Fatal(err)
	}
	value := eth(6)
	before := c.w.balance(t, vendor2)
	code, out, errOut := runCLI(t, "sign", "--url", c.url(), "--credential", credFile, "--key", hotKey.ID.String(),
		"--chain-id", "1337", "--tx", c.w.unsignedTx(t, hotKey.Address, vendor2, value), "--broadcast", "--json")
	if code != 0 {
		t.Fatalf("custos sign: exit %d\n%s%s", code, out, errOut)
	}
	var r api.Request
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("custos sign --json: %v\n%s", err, out)
	}
	tx := signedTx(t, &r, hotKey, vendor2, value)
	if !r.Broadcast || r.BroadcastError != "" {
		t.Fatalf("not broadcast: %s (%s)", describeRequest(&r), r.BroadcastError)
	}
	// The coordinator sent it: it waits in the chain's pool.
	if _, pending, err := c.w.sim.Client().TransactionByHash(context.Background(), tx.Hash()); err != nil || !pending {
		t.Fatalf("broadcast transaction %s not pending on the chain: %v", tx.Hash(), err)
	}
	c.mine(t, tx)
	if got := new(big.Int).Sub(c.w.balance(t, vendor2), before); got.Cmp(value) != 0 {
		t.Fatalf("vendor balance moved by %v, want %v", got, value)
	}
	code, out, errOut = runCLI(t, "requests", "show", "--url", c.url(), "--token", c.opToken, "--json", string(r.ID))
	if code != 0 || !strings.Contains(out, string(r.ID)) || !strings.Contains(out, api.StateSigned) {
		t.Errorf("custos requests show: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "keys", "show", "--url", c.url(), "--token", c.opToken, hotKey.ID.String())
	if code != 0 || !strings.Contains(out, hotKey.Address.Hex()) {
		t.Errorf("custos keys show: exit %d\n%s%s", code, out, errOut)
	}
}

// A very large payment is vault tier: two guardians must approve. One
// approval (guardian-1's human, through the CLI) is not enough; the
// second, from the other guardian's wallet straight to the coordinator
// with the Go client, completes it, and a quorum with a guardian signs.
func TestVaultTierNeedsTwoApprovals(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	value := eth(5_000) // 5 ether
	agentCl := c.restClient(t, true)
	payload := c.w.unsignedTx(t, vaultKey.Address, vendor1, value)
	r, err := agentCl.Submit(ctx, c.w.bot, api.SignRequest{Key: vaultKey.ID, ChainID: simChainID, Kind: "transaction",
		Payload: json.RawMessage(`"` + payload + `"`), IdempotencyKey: idem("vault"), Expiry: expiry()})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	r = c.waitState(t, r.ID, api.StatePendingApproval)
	if r.State != api.StatePendingApproval || r.Tier != "vault" || r.Needed != 2 {
		t.Fatalf("%s (needs %d), want pending_approval in tier vault needing 2", describeRequest(r), r.Needed)
	}
	c.waitQueued(t, nameGuardian1, r.ID)
	if code, out, errOut := c.guardianCLI(t, nameGuardian1, "approve", string(r.ID)); code != 0 {
		t.Fatalf("guardian approve: exit %d\n%s%s", code, out, errOut)
	}
	// One of two: still waiting, no signature.
	ctxWait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := waitFor(ctxWait, 100*time.Millisecond, func() (bool, error) {
		got := c.request(t, r.ID)
		return len(got.Approvers) == 1 || len(got.Approvals) == 1, nil
	}); err != nil {
		t.Fatalf("the first approval never showed: %s", describeRequest(c.request(t, r.ID)))
	}
	if got := c.request(t, r.ID); got.State != api.StatePendingApproval || len(got.Signature) != 0 {
		t.Fatalf("after one approval of two: %s", describeRequest(got))
	}
	// Bob approves from his own wallet, over REST.
	p := c.waitQueued(t, nameGuardian2, r.ID)
	a, err := admin.NewGuardian(c.w.bob).Approve(c.w.walletID, p, time.Now(), 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.restClient(t, false).Approve(ctx, a); err != nil {
		t.Fatalf("second approval: %v", err)
	}
	r = c.waitState(t, r.ID)
	tx := signedTx(t, r, vaultKey, vendor1, value)
	q := c.quorumOf(r)
	if !strings.Contains(strings.Join(q, ","), "guardian") {
		t.Errorf("vault payment signed by %v, without a guardian", q)
	}
	c.mine(t, tx)
}

// Health and metrics: the coordinator's health names every member
// reachable, its /metrics and each node's admin /metrics serve Prometheus
// text, and each node's running audit chain verifies.
func TestHealthAndMetrics(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	h, err := c.restClient(t, false).Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Status != "ok" || len(h.Members) != len(memberNames) {
		t.Errorf("health %+v", h)
	}
	for _, m := range h.Members {
		if !m.Reachable || m.PolicyVersion != 1 {
			t.Errorf("member %s: %+v", c.nameOf(m.ID), m)
		}
	}
	resp, err := http.Get(c.url() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "# TYPE") {
		t.Errorf("coordinator /metrics: HTTP %d\n%.300s", resp.StatusCode, body)
	}
	for _, n := range memberNames {
		ac := c.adminClient(t, n)
		if err := ac.Health(ctx); err != nil {
			t.Errorf("%s health: %v", n, err)
		}
		chk, err := ac.VerifyAudit(ctx)
		if err != nil || !chk.Valid || chk.Entries == 0 {
			t.Errorf("%s audit verify: %+v %v", n, chk, err)
		}
		hc := &http.Client{Transport: &http.Transport{DialContext: unixDialer(c.adminSocket(n))}}
		resp, err := hc.Get("http://admin/metrics")
		if err != nil {
			t.Fatalf("%s /metrics: %v", n, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "# TYPE") {
			t.Errorf("%s /metrics: HTTP %d\n%.300s", n, resp.StatusCode, body)
		}
	}
}

// A dry run of a request the agent signed returns the rule trace from a
// policy member without signing or reserving anything; GET /v1/approvals
// lists a request waiting for guardians until a guardian's denial, from
// the guardian's own wallet over REST, ends it; GET /v1/audit has the
// coordinator's record of both.
func TestDryRunApprovalsListAndAudit(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	op := c.restClient(t, false)
	body := signBody(t, hotKey.ID, idem("dry"), c.w.unsignedTx(t, hotKey.Address, vendor1, eth(2)))
	dr, err := c.restClient(t, true).DryRun(ctx, c.w.bot.Sign("POST", api.SignRequestPath, body, time.Now()))
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if dr.Decision.RuleID != "small-payments" || dr.Decision.Tier != "hot" || len(dr.Trace) == 0 {
		t.Errorf("dry run %+v", dr)
	}
	matched := false
	for _, s := range dr.Trace {
		matched = matched || (s.Rule == "small-payments" && s.Matched)
	}
	if !matched {
		t.Errorf("trace %+v does not show small-payments matching", dr.Trace)
	}
	// Nothing reserved, nothing stored under the body's request id.
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	id := control.RequestID(agentBot, m["idempotency_key"].(string))
	if recs := c.ledgerRecords(t, namePolicy, id); len(recs) != 0 {
		t.Errorf("a dry run reserved budget: %+v", recs)
	}
	if _, err := op.Request(ctx, id); !client.IsCode(err, "not_found") {
		t.Errorf("a dry run stored request %s: %v", id, err)
	}

	r := c.submit(t, c.w.bot, vaultKey.ID, idem("listed"), c.w.unsignedTx(t, vaultKey.Address, vendor2, eth(800)))
	if r = c.waitState(t, r.ID, api.StatePendingApproval); r.State != api.StatePendingApproval {
		t.Fatalf("guarded request: %s", describeRequest(r))
	}
	listed := func() bool {
		list, err := op.Approvals(ctx)
		if err != nil {
			t.Fatalf("GET /v1/approvals: %v", err)
		}
		for _, p := range list {
			if p.ID == r.ID {
				return true
			}
		}
		return false
	}
	if !listed() {
		t.Fatalf("GET /v1/approvals does not list %s", r.ID)
	}
	p := c.waitQueued(t, nameGuardian2, r.ID)
	d, err := admin.NewGuardian(c.w.bob).Deny(c.w.walletID, p, "too much at once", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Deny(ctx, d); err != nil {
		t.Fatalf("POST denial: %v", err)
	}
	r = c.waitState(t, r.ID)
	if r.State != api.StateDenied || !strings.Contains(r.Reason, "too much at once") {
		t.Fatalf("after bob's denial: %s", describeRequest(r))
	}
	if listed() {
		t.Errorf("GET /v1/approvals still lists the denied %s", r.ID)
	}
	entries, err := op.Audit(ctx, client.AuditQuery{Request: string(r.ID)})
	if err != nil {
		t.Fatalf("GET /v1/audit: %v", err)
	}
	if len(entries) == 0 {
		t.Errorf("the coordinator's audit has nothing on %s", r.ID)
	}
	for _, e := range entries {
		if e.RequestID != "" && e.RequestID != r.ID {
			t.Errorf("audit query for %s returned an entry of %s", r.ID, e.RequestID)
		}
	}
}
