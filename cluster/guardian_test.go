package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/cli"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common"
)

// The guardians' side, through the code path of `custos guardian`: the
// CLI run in-process against a guardian node's admin socket, signing with
// a go-ethereum keystore file.

var keystoreOnce sync.Map // guardian name → keystore path

// keystore writes (once) a keystore file holding the guardian's identity
// key and a password file, and returns both paths.
func (c *cluster) keystore(t *testing.T, name string) (string, string) {
	t.Helper()
	key := map[string]*ecdsa.PrivateKey{nameGuardian1: c.w.alice, nameGuardian2: c.w.bob}[name]
	dir := filepath.Join(c.root, "keystores", name)
	ks, pw := filepath.Join(dir, "identity.json"), filepath.Join(dir, "password")
	if _, done := keystoreOnce.Load(name); done {
		return ks, pw
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte("correct horse "+name+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	password, err := admin.ReadPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ImportKeystore(ks, password, key, true); err != nil {
		t.Fatalf("keystore for %s: %v", name, err)
	}
	keystoreOnce.Store(name, true)
	return ks, pw
}

// guardianCLI runs `custos guardian <args> --admin <socket of name>
// --keystore ... --password-file ... --yes` in-process and returns its exit
// code, stdout and stderr.
func (c *cluster) guardianCLI(t *testing.T, name string, args ...string) (int, string, string) {
	t.Helper()
	ks, pw := c.keystore(t, name)
	full := append([]string{"guardian"}, args...)
	full = append(full, "--admin", "unix://"+c.adminSocket(name))
	if args[0] != "pending" && args[0] != "show" {
		full = append(full, "--keystore", ks, "--password-file", pw, "--yes")
	}
	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
	code := cli.Run(context.Background(), env, full)
	return code, out.String(), errb.String()
}

// waitQueued waits until the guardian node has the request in its queue.
func (c *cluster) waitQueued(t *testing.T, name string, id ids.RequestID) *admin.PendingRequest {
	t.Helper()
	ac := c.adminClient(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var p *admin.PendingRequest
	err := waitFor(ctx, 100*time.Millisecond, func() (bool, error) {
		var err error
		p, err = ac.PendingRequest(ctx, id)
		if errors.Is(err, admin.ErrNotFound) || err != nil && strings.Contains(err.Error(), "not found") {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("%s never queued %s: %v", name, id, err)
	}
	return p
}

// A larger payment from the vault key is guarded: the request waits in
// pending_approval, the guardian node shows its human the details it
// decoded itself, and once the guardian approves through the CLI the
// agent, policy and that guardian's nodes sign; the chain accepts it.
func TestGuardedTransferApprovedThroughCLI(t *testing.T) {
	c := setup(t)
	value := eth(500) // 0.5 ether
	before := c.w.balance(t, vendor2)
	r := c.submit(t, c.w.bot, vaultKey.ID, idem("guarded"), c.w.unsignedTx(t, vaultKey.Address, vendor2, value))
	r = c.waitState(t, r.ID, api.StatePendingApproval)
	if r.State != api.StatePendingApproval || r.Tier != "guarded" || r.RuleID != "larger-payments" {
		t.Fatalf("request %s, want pending_approval in tier guarded by rule larger-payments", describeRequest(r))
	}
	if len(r.Signature) != 0 {
		t.Fatalf("request %s carries a signature before any approval", r.ID)
	}
	p := c.waitQueued(t, nameGuardian1, r.ID)
	if p.To == nil || *p.To != vendor2 || p.ValueEther != "0.5" || p.Tier != "guarded" || p.RuleID != "larger-payments" ||
		p.Key != vaultKey.Address || p.ChainID != simChainID || p.Digest != r.Digest || p.Approvals != 1 {
		t.Errorf("guardian queue shows %+v", p)
	}
	// What the human reads.
	code, out, errOut := c.guardianCLI(t, nameGuardian1, "show", string(r.ID))
	if code != 0 || !strings.Contains(out+errOut, vendor2.Hex()) || !strings.Contains(out+errOut, "larger-payments") {
		t.Errorf("guardian show: exit %d\n%s%s", code, out, errOut)
	}
	// Still waiting: nothing signs without the approval.
	if r = c.request(t, r.ID); r.State != api.StatePendingApproval {
		t.Fatalf("before approval: %s", describeRequest(r))
	}
	code, out, errOut = c.guardianCLI(t, nameGuardian1, "approve", string(r.ID), "--json")
	if code != 0 {
		t.Fatalf("guardian approve: exit %d\n%s%s", code, out, errOut)
	}
	var approved struct {
		Approval api.Approval    `json:"approval"`
		Delivery *admin.Delivery `json:"delivery"`
	}
	if err := json.Unmarshal([]byte(out), &approved); err != nil {
		t.Fatalf("guardian approve --json: %v\n%s", err, out)
	}
	if len(approved.Delivery.Forwarded) == 0 {
		t.Errorf("approval forwarded to no coordinator: %+v", approved.Delivery)
	}
	r = c.waitState(t, r.ID)
	tx := signedTx(t, r, vaultKey, vendor2, value)
	if q := c.quorumOf(r); !slices.Contains(q, nameGuardian1) || !slices.Contains(q, nameAgent) || !slices.Contains(q, namePolicy) {
		t.Errorf("signed by %v, want agent, policy and the approving guardian-1", q)
	}
	c.mine(t, tx)
	if got := new(big.Int).Sub(c.w.balance(t, vendor2), before); got.Cmp(value) != 0 {
		t.Fatalf("vendor balance moved by %v, want %v", got, value)
	}

	// The same approval, replayed for another request, is refused; so is
	// an approval naming the other request but the first one's digest.
	r2 := c.submit(t, c.w.bot, vaultKey.ID, idem("guarded-2"), c.w.unsignedTx(t, vaultKey.Address, vendor2, eth(600)))
	r2 = c.waitState(t, r2.ID, api.StatePendingApproval)
	if r2.State != api.StatePendingApproval {
		t.Fatalf("second request: %s", describeRequest(r2))
	}
	ctx := context.Background()
	replay := approved.Approval
	err := c.call(ctx, "POST", "/v1/requests/"+string(r2.ID)+"/approvals", replay, "", nil)
	if err == nil {
		t.Errorf("an approval of %s was taken for %s", r.ID, r2.ID)
	} else {
		t.Logf("replayed approval refused: %v", err)
	}
	other := policy.Approval{RequestID: r2.ID, Digest: r.Digest, ChainID: big.NewInt(simChainID), Key: vaultKey.Address,
		Issued: time.Now().UTC().Truncate(time.Second), Expiry: time.Now().Add(30 * time.Minute).UTC().Truncate(time.Second)}
	sig, err := policy.SignTypedData(c.w.alice, other.TypedData(c.w.walletID))
	if err != nil {
		t.Fatal(err)
	}
	wrongDigest := api.ApprovalFrom(policy.SignedApproval{Approval: other, Signature: sig})
	if err := c.call(ctx, "POST", "/v1/requests/"+string(r2.ID)+"/approvals", wrongDigest, "", nil); err == nil {
		t.Errorf("an approval for another digest was taken for %s", r2.ID)
	} else {
		t.Logf("approval for another digest refused: %v", err)
	}
	// The guardian node refuses both too, itself.
	ac := c.adminClient(t, nameGuardian1)
	if _, err := ac.Approve(ctx, replay); err == nil {
		t.Errorf("guardian-1 forwarded a replayed approval")
	}
	if _, err := ac.Approve(ctx, wrongDigest); err == nil {
		t.Errorf("guardian-1 forwarded an approval for another digest")
	}
	if r2 = c.request(t, r2.ID); r2.State != api.StatePendingApproval {
		t.Fatalf("after refused approvals, the second request is %s", describeRequest(r2))
	}

	// A guardian's denial ends it, with the guardian's reason.
	code, out, errOut = c.guardianCLI(t, nameGuardian1, "deny", string(r2.ID), "--reason", "not this week")
	if code != 0 {
		t.Fatalf("guardian deny: exit %d\n%s%s", code, out, errOut)
	}
	r2 = c.waitState(t, r2.ID)
	if r2.State != api.StateDenied || !strings.Contains(r2.Reason, "not this week") || len(r2.Signature) != 0 {
		t.Fatalf("denied request: %s", describeRequest(r2))
	}
	_ = common.Address{}
}

// Policy denials name their rule: an explicit deny rule, the default
// deny, and a tier the key cannot grant.
func TestDenialsNameTheirRule(t *testing.T) {
	c := setup(t)
	cases := []struct {
		name   string
		key    api.Key
		to     common.Address
		value  *big.Int
		rule   string
		reason string
	}{
		{"explicit deny", hotKey, blocked, eth(1), "blocked-destinations", ""},
		{"default deny", hotKey, stranger, eth(1), "default", ""},
		{"tier beyond the key", hotKey, vendor1, eth(500), "", "guarded"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.submit(t, c.w.bot, tc.key.ID, idem("deny"), c.w.unsignedTx(t, tc.key.Address, tc.to, tc.value))
			r = c.waitState(t, r.ID)
			if r.State == api.StateSigned || len(r.Signature) != 0 {
				t.Fatalf("signed: %s", describeRequest(r))
			}
			if tc.rule != "" && (r.State != api.StateDenied || r.RuleID != tc.rule) {
				t.Fatalf("%s, want denied by rule %s", describeRequest(r), tc.rule)
			}
			if !strings.Contains(r.Reason, tc.reason) || r.Reason == "" {
				t.Fatalf("%s: reason does not say %q", describeRequest(r), tc.reason)
			}
			t.Logf("%s: %s (%s): %s", tc.name, r.State, r.RuleID, r.Reason)
		})
	}
}

// auditHas reports whether a node's audit log holds an entry about the
// request with the rule id.
func (c *cluster) auditHas(t *testing.T, name string, id ids.RequestID, rule string) bool {
	t.Helper()
	entries, err := c.node(name).Store().AuditByRequest(context.Background(), id)
	if err != nil {
		t.Fatalf("%s audit: %v", name, err)
	}
	for _, e := range entries {
		if e.RuleID == rule {
			return true
		}
	}
	for _, e := range entries {
		t.Logf("%s audit: %s", name, e.Describe())
	}
	return false
}

// A request signed by another agent (one the policy registers, so the
// coordinator admits it) is refused by the agent node, which serves only
// its own agent: rule "agent". No signature exists.
func TestAgentNodeRefusesAnotherAgent(t *testing.T) {
	c := setup(t)
	r := c.submit(t, c.w.other, hotKey.ID, idem("other"), c.w.unsignedTx(t, hotKey.Address, vendor1, eth(1)))
	r = c.waitState(t, r.ID)
	if r.State == api.StateSigned || len(r.Signature) != 0 {
		t.Fatalf("signed: %s", describeRequest(r))
	}
	if r.RuleID != "agent" {
		t.Errorf("%s, want rule agent", describeRequest(r))
	}
	if r.Member != "" && r.Member != c.memberID(nameAgent) {
		t.Errorf("refused by %s, want the agent node", c.nameOf(r.Member))
	}
	if !c.auditHas(t, nameAgent, r.ID, "agent") {
		t.Errorf("the agent node's audit log has no refusal of %s under rule agent", r.ID)
	}
}

// The coffee rule allows one payment a day; the second is over budget and
// the policy node refuses it, naming the rule. Only the first is in its
// ledger.
func TestPolicyNodeRefusesOverBudget(t *testing.T) {
	c := setup(t)
	first := c.submit(t, c.w.bot, hotKey.ID, idem("coffee"), c.w.unsignedTx(t, hotKey.Address, cafe, eth(3)))
	first = c.waitState(t, first.ID)
	tx := signedTx(t, first, hotKey, cafe, eth(3))
	c.mine(t, tx)
	second := c.submit(t, c.w.bot, hotKey.ID, idem("coffee"), c.w.unsignedTx(t, hotKey.Address, cafe, eth(3)))
	second = c.waitState(t, second.ID)
	if second.State != api.StateDenied || len(second.Signature) != 0 {
		t.Fatalf("second coffee: %s", describeRequest(second))
	}
	if second.RuleID != "coffee" || !strings.Contains(second.Reason, "budget") {
		t.Errorf("second coffee %s: want rule coffee and a reason naming its budget", describeRequest(second))
	}
	if second.Member != "" && second.Member != c.memberID(namePolicy) {
		t.Errorf("refused by %s, want the policy node", c.nameOf(second.Member))
	}
	c.checkCommittedOnce(t, namePolicy, first.ID)
	if recs := c.ledgerRecords(t, namePolicy, second.ID); len(recs) != 0 {
		t.Errorf("the refused request holds ledger records: %+v", recs)
	}
	t.Logf("over budget: %s (%s): %s", second.State, second.RuleID, second.Reason)
}
