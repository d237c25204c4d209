package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

// The guardian commands run in-process against an admin server whose
// backend is the real policy engine: every signature the CLI makes is
// checked by the same code every node runs.

var (
	usdc      = common.HexToAddress("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48")
	vendor    = common.HexToAddress("0x1111111111111111111111111111111111111111")
	walletKey = common.HexToAddress("0x2222222222222222222222222222222222222222")
)

func testKey(name string) *ecdsa.PrivateKey {
	k, err := crypto.ToECDSA(crypto.Keccak256([]byte("custos-cli-test-guardian/" + name)))
	if err != nil {
		panic(err)
	}
	return k
}

func addrOf(name string) common.Address { return crypto.PubkeyToAddress(testKey(name).PublicKey) }

// testPolicy is a genesis document of alice, bob and carol with a quorum
// of two: USDC transfers need one guardian's approval.
func testPolicy(t *testing.T) *policy.Policy {
	t.Helper()
	src := fmt.Sprintf(`version: 1
guardians: {alice: %q, bob: %q, carol: %q}
quorum: 2
tiers:
  - {name: hot, signers: [agent, policy]}
  - {name: guarded, signers: [agent, policy, guardian], approvals: 1}
tokens:
  USDC: {address: %q, decimals: 6}
lists:
  vendors: [%q]
rules:
  - id: usdc-needs-a-guardian
    when: {chain: 1, token: $USDC, call: transfer, recipient: $vendors}
    tier: guarded
`, addrOf("alice").Hex(), addrOf("bob").Hex(), addrOf("carol").Hex(), usdc.Hex(), vendor.Hex())
	d, err := policy.ParseDocument([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var sigs [][]byte
	for _, n := range []string{"alice", "bob", "carol"} {
		sig, err := policy.SignDocument(testKey(n), d.Hash(), d)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, sig)
	}
	p, err := policy.VerifyDocument(policy.SignedDocument{Source: []byte(src), Signatures: sigs}, policy.Genesis{Hash: d.Hash()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// engineBackend is an admin.Backend over the real policy engine and a
// real store: what a guardian node does with its human's decisions, less
// the forwarding.
type engineBackend struct {
	pol *policy.Policy
	eng *policy.Engine
	st  *store.Store
	// brokenAudit, when set, is what VerifyAudit reports: a corrupted
	// entry cannot be made from outside the store package (its values are
	// sealed), and the store's own tests make one for real.
	brokenAudit *store.AuditError
	// keys are what Status reports the node holds.
	keys []tss.KeyInfo

	mu sync.Mutex
	// guarded by mu
	pending   map[ids.RequestID]*admin.PendingRequest
	approvals map[ids.RequestID][]policy.SignedApproval
	denials   map[ids.RequestID]policy.SignedDenial
}

func (b *engineBackend) target(p *admin.PendingRequest) policy.ApprovalTarget {
	return policy.ApprovalTarget{RequestID: p.RequestID, Digest: p.Digest, ChainID: new(big.Int).SetUint64(p.ChainID), Key: p.Key}
}

func (b *engineBackend) tier(name string) policy.TierSpec {
	for _, t := range b.pol.Tiers() {
		if t.Name == name {
			return t
		}
	}
	panic("no tier " + name)
}

func (b *engineBackend) Pending(ctx context.Context) ([]admin.PendingRequest, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []admin.PendingRequest
	for _, p := range b.pending {
		out = append(out, *p)
	}
	return out, nil
}

func (b *engineBackend) PendingRequest(ctx context.Context, id ids.RequestID) (*admin.PendingRequest, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.pending[id]
	if !ok {
		return nil, admin.ErrNotFound
	}
	cp := *p
	return &cp, nil
}

func (b *engineBackend) Approve(ctx context.Context, a api.Approval) (*admin.Delivery, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.pending[a.RequestID]
	if !ok {
		return nil, &admin.Refused{Rule: "approval", Reason: "no pending request " + string(a.RequestID), Conflict: true}
	}
	one := b.tier(p.Tier)
	one.Approvals, one.Delay = 1, 0
	who, err := b.pol.VerifyApprovals(b.target(p), []policy.SignedApproval{a.Policy()}, one, time.Now())
	if err != nil {
		return nil, admin.Refusef("approval", "%v", err)
	}
	for _, prev := range b.approvals[a.RequestID] {
		if bytes.Equal(prev.Signature, a.Signature) {
			return nil, &admin.Refused{Rule: "approval", Reason: "this approval was already used", Conflict: true}
		}
	}
	b.approvals[a.RequestID] = append(b.approvals[a.RequestID], a.Policy())
	p.ApprovedBy = append(p.ApprovedBy, who...)
	return &admin.Delivery{RequestID: a.RequestID, Guardian: who[0], Forwarded: []ids.MemberID{"coordinator-1"}}, nil
}

func (b *engineBackend) Deny(ctx context.Context, d api.Denial) (*admin.Delivery, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.pending[d.RequestID]
	if !ok {
		return nil, &admin.Refused{Rule: "denial", Reason: "no pending request", Conflict: true}
	}
	who, err := b.pol.VerifyDenial(b.target(p), d.Policy())
	if err != nil {
		return nil, admin.Refusef("denial", "%v", err)
	}
	b.denials[d.RequestID] = d.Policy()
	delete(b.pending, d.RequestID)
	return &admin.Delivery{RequestID: d.RequestID, Guardian: who, Forwarded: []ids.MemberID{"coordinator-1"}}, nil
}

func (b *engineBackend) Freeze(ctx context.Context, f api.Freeze) (*admin.FreezeResult, error) {
	pf, sig := f.Policy()
	if err := b.eng.Freeze(pf, sig, time.Now()); err != nil {
		return nil, admin.Refusef("freeze", "%v", err)
	}
	id, err := pf.ID(b.pol.WalletID())
	if err != nil {
		return nil, err
	}
	who, _ := policy.RecoverTypedData(pf.TypedData(b.pol.WalletID()), sig)
	return &admin.FreezeResult{ID: id, Target: string(f.Target), Guardians: []common.Address{who}, Applied: true, Acknowledged: []ids.MemberID{"policy-1"}}, nil
}

func (b *engineBackend) Unfreeze(ctx context.Context, u api.Unfreeze) (*admin.FreezeResult, error) {
	pu, sigs := u.Policy()
	if err := b.eng.Unfreeze(pu, sigs, time.Now()); err != nil {
		return nil, admin.Refusef("unfreeze", "%v", err)
	}
	who, _ := admin.UnfreezeSigners(b.pol.WalletID(), u)
	return &admin.FreezeResult{ID: u.Freeze, Target: string(u.Target), Guardians: who, Applied: true}, nil
}

func (b *engineBackend) Wallet(ctx context.Context) (*admin.Wallet, error) {
	w := &admin.Wallet{
		WalletID: b.pol.WalletID(), PolicyVersion: b.pol.Version(), PolicyHash: b.pol.Hash(),
		Guardians: b.pol.Guardians(), Quorum: b.pol.Quorum(), Domain: policy.Domain(b.pol.WalletID()),
	}
	for _, f := range b.eng.Freezes() {
		w.Freezes = append(w.Freezes, admin.ActiveFreeze{ID: f.ID, Target: string(f.Target), Reason: f.Reason, By: f.By, At: f.At})
	}
	return w, nil
}

func (b *engineBackend) Audit(ctx context.Context, from, to uint64) ([]store.Entry, error) {
	return b.st.AuditRange(ctx, from, to)
}

func (b *engineBackend) VerifyAudit(ctx context.Context) (int, error) {
	if b.brokenAudit != nil {
		return int(b.brokenAudit.Seq) - 1, b.brokenAudit
	}
	return b.st.VerifyAudit(ctx)
}

func (b *engineBackend) Status(ctx context.Context) (*admin.Status, error) {
	return &admin.Status{Status: control.Status{Member: "guardian-1", Role: ids.RoleGuardian, Keys: b.keys, PolicyVersion: b.pol.Version(), PolicyHash: b.pol.Hash()}}, nil
}

func (b *engineBackend) Ready(ctx context.Context) error { return nil }

// newKeyFile writes a store key file.
func newKeyFile(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "store.key")
	if err := os.WriteFile(p, []byte(strings.Repeat("5a", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func openStore(t *testing.T, dir, keyFile string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.KeyFile(keyFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// usdcTransfer is an unsigned EIP-1559 transfer of amount (base units) of
// USDC to vendor, as the agent's bytes.
func usdcTransfer(t *testing.T, amount int64) *chain.Payload {
	t.Helper()
	data := append([]byte{0xa9, 0x05, 0x9c, 0xbb}, common.LeftPadBytes(vendor.Bytes(), 32)...)
	data = append(data, common.LeftPadBytes(big.NewInt(amount).Bytes(), 32)...)
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), Nonce: 7, To: &usdc, Value: new(big.Int), Gas: 60000,
		GasFeeCap: big.NewInt(30e9), GasTipCap: big.NewInt(1e9), Data: data})
	raw, err := tx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	p, err := chain.ParseTransaction(big.NewInt(1), raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type harness struct {
	t       *testing.T
	dir     string
	addr    string
	backend *engineBackend
	pending *admin.PendingRequest
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	pol := testPolicy(t)
	st := openStore(t, filepath.Join(dir, "store"), newKeyFile(t, dir))
	t.Cleanup(func() { st.Close() })
	b := &engineBackend{pol: pol, eng: policy.NewEngine(pol, policy.NewMemLedger()), st: st,
		pending: map[ids.RequestID]*admin.PendingRequest{}, approvals: map[ids.RequestID][]policy.SignedApproval{}, denials: map[ids.RequestID]policy.SignedDenial{}}

	// A request as a guardian node queues it: the payload decoded from the
	// agent's bytes, the tier and rule from the engine's own evaluation.
	id := ids.RequestID("req:00112233445566778899aabbccddeeff")
	payload := usdcTransfer(t, 12_500_000)
	now := time.Now()
	dec := b.eng.DryRun(context.Background(), policy.NewRequest(id, "bot", walletKey, payload, nil, now))
	if dec.Tier == nil || dec.Tier.Name != "guarded" {
		t.Fatalf("the policy puts the transfer in %s", dec.Describe())
	}
	p := admin.DescribePayload(pol, payload)
	p.RequestID, p.Agent, p.Key = id, "bot", walletKey
	p.Tier, p.Approvals, p.RuleID, p.Reason = dec.Tier.Name, dec.Tier.Approvals, dec.RuleID, dec.Reason
	p.Received, p.Expiry = now, now.Add(30*time.Minute)
	b.pending[id] = &p

	for i := 0; i < 3; i++ {
		if _, err := st.AppendAudit(context.Background(), store.Entry{Kind: store.AuditRequest, RequestID: id, Time: now, Fields: map[string]string{"n": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}

	srv, err := admin.NewServer(b, admin.Config{Addr: "unix://" + filepath.Join(dir, "admin.sock")})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })

	h := &harness{t: t, dir: dir, addr: "unix://" + filepath.Join(dir, "admin.sock"), backend: b, pending: &p}
	for _, n := range []string{"alice", "bob", "carol", "mallory"} {
		pw := filepath.Join(dir, n+".pw")
		os.WriteFile(pw, []byte("password of "+n+"\n"), 0o600)
		if _, err := admin.ImportKeystore(filepath.Join(dir, n+".json"), "password of "+n, testKey(n), true); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// run runs custos with args in-process; stdin is what the human types.
func (h *harness) run(stdin string, args ...string) (int, string, string) {
	h.t.Helper()
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), Getenv: func(string) string { return "" }}
	code := Run(context.Background(), env, args)
	return code, out.String(), errb.String()
}

// as is the flags that make guardian name sign.
func (h *harness) as(name string) []string {
	return []string{"--admin", h.addr, "--keystore", filepath.Join(h.dir, name+".json"), "--password-file", filepath.Join(h.dir, name+".pw")}
}

func args(parts ...any) []string {
	var out []string
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			out = append(out, v)
		case []string:
			out = append(out, v...)
		}
	}
	return out
}

func TestGuardianPendingAndShow(t *testing.T) {
	h := newHarness(t)
	id := string(h.pending.RequestID)
	code, out, errs := h.run("", "guardian", "pending", "--admin", h.addr)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "guarded") || !strings.Contains(out, "usdc-needs-a-guardian") {
		t.Fatalf("pending: %d\n%s%s", code, out, errs)
	}
	code, out, errs = h.run("", "guardian", "show", id, "--admin", h.addr)
	for _, want := range []string{"12.5 USDC", vendor.Hex(), walletKey.Hex(), h.pending.Digest.Hex(), "transfer", "0xa9059cbb", "chain", "1 approval(s) needed"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if code != 0 {
		t.Fatalf("show: %d %s", code, errs)
	}
	code, out, _ = h.run("", "guardian", "show", "--json", "--admin", h.addr, id)
	var p admin.PendingRequest
	if code != 0 || json.Unmarshal([]byte(out), &p) != nil || p.Digest != h.pending.Digest || len(p.Tokens) != 1 || p.Tokens[0].Amount != "12.5" {
		t.Fatalf("show --json: %d %s", code, out)
	}
	code, _, errs = h.run("", "guardian", "show", "req:ffffffffffffffffffffffffffffffff", "--admin", h.addr)
	if code != 1 || !strings.Contains(errs, "no pending request") {
		t.Fatalf("show unknown: %d %s", code, errs)
	}
	code, _, errs = h.run("", "guardian", "pending")
	if code != 2 || !strings.Contains(errs, "no admin address") {
		t.Fatalf("pending without --admin: %d %s", code, errs)
	}
}

func TestGuardianApprove(t *testing.T) {
	h := newHarness(t)
	id := string(h.pending.RequestID)

	// Declined at the prompt: nothing signed, nothing sent.
	code, _, errs := h.run("n\n", args("guardian", "approve", id, h.as("alice"))...)
	if code != 1 || !strings.Contains(errs, "not confirmed") || !strings.Contains(errs, "12.5 USDC") {
		t.Fatalf("declined approve: %d %s", code, errs)
	}
	if n := len(h.backend.approvals[h.pending.RequestID]); n != 0 {
		t.Fatalf("%d approvals after a declined prompt", n)
	}

	// Asked for a day, but the request expires in 30 minutes.
	code, out, errs := h.run("y\n", args("guardian", "approve", id, "--expiry", "24h", "--json", h.as("alice"))...)
	if code != 0 {
		t.Fatalf("approve: %d %s %s", code, out, errs)
	}
	var res struct {
		Approval api.Approval   `json:"approval"`
		Delivery admin.Delivery `json:"delivery"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Delivery.Guardian != addrOf("alice") || len(res.Delivery.Forwarded) != 1 {
		t.Fatalf("delivery: %+v", res.Delivery)
	}
	if res.Approval.Expiry.After(h.pending.Expiry) {
		t.Fatalf("approval expires %s, after the request's %s", res.Approval.Expiry, h.pending.Expiry)
	}

	// What the CLI signed is what policy.VerifyApprovals accepts for the
	// request as the node decoded it, under the real tier.
	b := h.backend
	got := b.approvals[h.pending.RequestID]
	who, err := b.pol.VerifyApprovals(b.target(h.pending), got, b.tier("guarded"), time.Now())
	if err != nil || len(who) != 1 || who[0] != addrOf("alice") {
		t.Fatalf("VerifyApprovals of the CLI's approval: %v %v", who, err)
	}
	// ...and binds this digest: for another one, the same approval fails.
	other := b.target(h.pending)
	other.Digest = common.Hash{1}
	if _, err := b.pol.VerifyApprovals(other, got, b.tier("guarded"), time.Now()); !errors.Is(err, policy.ErrApproval) {
		t.Fatalf("the approval verified for another digest: %v", err)
	}

	// Someone who is not a guardian is refused by the policy, with its reason.
	code, _, errs = h.run("", args("guardian", "approve", id, "--yes", h.as("mallory"))...)
	if code != 1 || !strings.Contains(errs, "refused it (approval)") || !strings.Contains(errs, "guardian") {
		t.Fatalf("mallory's approval: %d %s", code, errs)
	}
}

func TestGuardianApprovalRefusedByThePolicy(t *testing.T) {
	h := newHarness(t)
	c, err := admin.NewClient(h.addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	g := admin.NewGuardian(testKey("bob"))
	w, err := c.Wallet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, err := g.Approve(w.WalletID, h.pending, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Approve(ctx, a); err != nil {
		t.Fatal(err)
	}
	// A replay of the same approval.
	if _, err := c.Approve(ctx, a); err == nil {
		t.Fatal("replayed approval accepted")
	} else if r, ok := admin.IsRefused(err); !ok || !r.Conflict {
		t.Fatalf("replay: %v", err)
	}
	// An approval for another digest, and one edited after signing.
	other := *h.pending
	other.Digest = common.Hash{2}
	a2, _ := g.Approve(w.WalletID, &other, time.Now(), time.Hour)
	a2.Digest = h.pending.Digest
	if _, err := c.Approve(ctx, a2); err == nil {
		t.Fatal("approval signed for another digest accepted")
	} else if r, ok := admin.IsRefused(err); !ok || r.Rule != "approval" {
		t.Fatalf("other digest: %v", err)
	}
	// Signed under another wallet's domain.
	a3, _ := g.Approve(common.Hash{9}, h.pending, time.Now(), time.Hour)
	if _, err := c.Approve(ctx, a3); err == nil {
		t.Fatal("approval for another wallet accepted")
	}
	// The request's expiry bounds the approval; an expired request cannot be approved.
	late := *h.pending
	late.Expiry = time.Now().Add(-time.Second)
	if _, err := g.Approve(w.WalletID, &late, time.Now(), time.Hour); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("approve an expired request: %v", err)
	}
}

func TestGuardianDeny(t *testing.T) {
	h := newHarness(t)
	id := string(h.pending.RequestID)
	code, _, errs := h.run("", args("guardian", "deny", id, "--yes", h.as("carol"))...)
	if code != 2 || !strings.Contains(errs, "--reason") {
		t.Fatalf("deny without reason: %d %s", code, errs)
	}
	code, out, errs := h.run("yes\n", args("guardian", "deny", id, "--reason", "not a vendor we use", h.as("carol"))...)
	if code != 0 || !strings.Contains(out, "Denied") || !strings.Contains(out, "coordinator-1") {
		t.Fatalf("deny: %d %s %s", code, out, errs)
	}
	d, ok := h.backend.denials[h.pending.RequestID]
	if !ok || d.Denial.Reason != "not a vendor we use" {
		t.Fatalf("denial recorded: %+v", d)
	}
	if who, err := h.backend.pol.VerifyDenial(h.backend.target(h.pending), d); err != nil || who != addrOf("carol") {
		t.Fatalf("VerifyDenial: %v %v", who, err)
	}
}

func TestGuardianFreezeAndUnfreeze(t *testing.T) {
	h := newHarness(t)
	eng := h.backend.eng
	target := "key:" + walletKey.Hex()

	code, out, errs := h.run("", args("guardian", "freeze", "--target", walletKey.Hex(), "--reason", "odd requests", "--yes", h.as("alice"))...)
	if code != 0 || !strings.Contains(out, "Froze "+target) || !strings.Contains(out, "policy-1") {
		t.Fatalf("freeze: %d %s %s", code, out, errs)
	}
	fr := eng.Freezes()
	if len(fr) != 1 || string(fr[0].Target) != target || fr[0].By != addrOf("alice") {
		t.Fatalf("engine freezes: %+v", fr)
	}
	// The real engine now denies the transfer for that key.
	dec := eng.DryRun(context.Background(), policy.NewRequest("req:x1", "bot", walletKey, usdcTransfer(t, 1), nil, time.Now()))
	if dec.Allowed() || dec.RuleID != policy.RuleFreeze {
		t.Fatalf("frozen key: %s", dec.Describe())
	}

	// One guardian's unfreeze is refused by the engine, and the CLI says why.
	code, _, errs = h.run("", args("guardian", "unfreeze", "--target", target, "--yes", h.as("alice"))...)
	if code != 1 || !strings.Contains(errs, "refused it (unfreeze)") || !strings.Contains(errs, "needs 2 guardians' signatures and this one has 1") {
		t.Fatalf("one-signature unfreeze: %d %s", code, errs)
	}
	if len(eng.Freezes()) != 1 {
		t.Fatal("one guardian lifted the freeze")
	}

	// Bob signs only; passing his own signature back to himself adds nothing.
	code, bobJSON, errs := h.run("", args("guardian", "unfreeze", "--target", target, "--sign-only", "--yes", h.as("bob"))...)
	if code != 0 || !strings.Contains(errs, "1 of the 2") {
		t.Fatalf("sign-only: %d %s", code, errs)
	}
	code, _, errs = h.run("", args("guardian", "unfreeze", "--add-signature", bobJSON, "--yes", h.as("bob"))...)
	if code != 1 || !strings.Contains(errs, "already") {
		t.Fatalf("bob twice: %d %s", code, errs)
	}
	if len(eng.Freezes()) != 1 {
		t.Fatal("bob alone lifted the freeze")
	}

	// Alice adds hers to Bob's (from a file) and submits: the quorum lifts it.
	f := filepath.Join(h.dir, "bob-unfreeze.json")
	os.WriteFile(f, []byte(bobJSON), 0o600)
	code, out, errs = h.run("", args("guardian", "unfreeze", "--add-signature", f, "--yes", h.as("alice"))...)
	if code != 0 || !strings.Contains(out, "Unfroze "+target) || !strings.Contains(out, "2 guardians") {
		t.Fatalf("quorum unfreeze: %d %s %s", code, out, errs)
	}
	if n := len(eng.Freezes()); n != 0 {
		t.Fatalf("%d freezes left", n)
	}
	// The same unfreeze again is refused.
	code, _, errs = h.run("", args("guardian", "unfreeze", "--add-signature", f, "--yes", h.as("carol"))...)
	if code != 1 || !strings.Contains(errs, "refused it (unfreeze)") {
		t.Fatalf("unfreeze replay: %d %s", code, errs)
	}
}

func TestGuardianUsageErrors(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{args("guardian"), 2, "needs a subcommand"},
		{args("guardian", "bless"), 2, "unknown guardian subcommand"},
		{args("guardian", "approve", "--admin", h.addr), 2, "exactly one request id"},
		{args("guardian", "approve", string(h.pending.RequestID), "--admin", h.addr), 2, "--keystore"},
		{args("guardian", "approve", string(h.pending.RequestID), "--expiry", "-1h", h.as("alice")), 2, "positive"},
		{args("guardian", "freeze", "--target", "everything", "--reason", "x", h.as("alice")), 2, "want all"},
		{args("guardian", "freeze", "--target", "all", h.as("alice")), 2, "--reason"},
		{args("guardian", "unfreeze", h.as("alice")), 2, "--target"},
		{args("guardian", "unfreeze", "--target", "all", "--freeze", "0x12", h.as("alice")), 2, "64 hex"},
		{args("guardian", "unfreeze", "--target", "all", h.as("alice")), 1, "not frozen"},
		{args("guardian", "unfreeze", "--add-signature", `{"target":"all","bogus":1}`, h.as("alice")), 1, "bogus"},
	} {
		code, _, errs := h.run("", c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: %d %s, want %d and %q", c.args, code, errs, c.code, c.want)
		}
	}
	// A wrong keystore password is named as such.
	bad := filepath.Join(h.dir, "bad.pw")
	os.WriteFile(bad, []byte("nope\n"), 0o600)
	code, _, errs := h.run("", "guardian", "approve", string(h.pending.RequestID), "--admin", h.addr, "--keystore", filepath.Join(h.dir, "alice.json"), "--password-file", bad)
	if code != 1 || !strings.Contains(errs, "wrong password") {
		t.Fatalf("wrong password: %d %s", code, errs)
	}
}

func TestGuardianKeystore(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("correct horse\n"), 0o600)
	ks := filepath.Join(dir, "g.json")
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
	if code := Run(context.Background(), env, []string{"guardian", "keystore", "new", "--keystore", ks, "--password-file", pw, "--light", "--json"}); code != 0 {
		t.Fatalf("keystore new: %s", errb.String())
	}
	var got map[string]string
	json.Unmarshal(out.Bytes(), &got)
	fi, err := os.Stat(ks)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keystore file: %v %v", fi, err)
	}
	g, err := admin.OpenKeystore(ks, "correct horse")
	if err != nil || g.Address().Hex() != got["address"] {
		t.Fatalf("reopen: %v %v", g, err)
	}
	out.Reset()
	if code := Run(context.Background(), env, []string{"guardian", "keystore", "show", "--keystore", ks, "--password-file", pw}); code != 0 || !strings.Contains(out.String(), got["address"]) {
		t.Fatalf("keystore show: %s %s", out.String(), errb.String())
	}
	errb.Reset()
	if code := Run(context.Background(), env, []string{"guardian", "keystore", "new", "--keystore", ks, "--password-file", pw, "--light"}); code != 1 || !strings.Contains(errb.String(), "not replacing") {
		t.Fatalf("keystore new over an existing file: %s", errb.String())
	}
	if strings.Contains(g.String(), fmt.Sprintf("%x", crypto.FromECDSA(testKey("alice")))) {
		t.Fatal("unreachable")
	}
}

func TestGuardianWallet(t *testing.T) {
	h := newHarness(t)
	h.run("", args("guardian", "freeze", "--target", "agent:bot", "--reason", "looping", "--yes", h.as("carol"))...)
	code, out, errs := h.run("", "guardian", "wallet", "--admin", h.addr)
	w := h.backend.pol.WalletID().Hex()
	if code != 0 || !strings.Contains(out, w) || !strings.Contains(out, addrOf("bob").Hex()) || !strings.Contains(out, "agent:bot") || !strings.Contains(out, "looping") {
		t.Fatalf("wallet: %d %s %s", code, out, errs)
	}
	code, out, _ = h.run("", "guardian", "wallet", "--admin", h.addr, "--json")
	var got admin.Wallet
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.WalletID != h.backend.pol.WalletID() || got.Quorum != 2 || len(got.Freezes) != 1 {
		t.Fatalf("wallet --json: %d %s", code, out)
	}
	// The freeze's id in the wallet is the one an unfreeze must name.
	code, _, errs = h.run("", args("guardian", "unfreeze", "--target", "agent:bot", "--freeze", got.Freezes[0].ID.Hex(), "--sign-only", "--yes", h.as("alice"))...)
	if code != 0 {
		t.Fatalf("sign-only with --freeze: %s", errs)
	}
}

func TestGuardianNonGuardianWarned(t *testing.T) {
	h := newHarness(t)
	code, _, errs := h.run("", args("guardian", "approve", string(h.pending.RequestID), "--yes", h.as("mallory"))...)
	if code != 1 || !strings.Contains(errs, "Warning: "+addrOf("mallory").Hex()+" is not a guardian") {
		t.Fatalf("mallory: %d %s", code, errs)
	}
	code, _, errs = h.run("", args("guardian", "approve", string(h.pending.RequestID), "--yes", h.as("alice"))...)
	if code != 0 || strings.Contains(errs, "Warning") {
		t.Fatalf("alice: %d %s", code, errs)
	}
}

func TestApprovalOutlivesTheTierDelay(t *testing.T) {
	g := admin.NewGuardian(testKey("alice"))
	now := time.Now()
	p := &admin.PendingRequest{RequestID: "req:1", Digest: common.Hash{1}, ChainID: 1, Key: walletKey, Tier: "vault",
		Delay: control.Duration(time.Hour), Expiry: now.Add(3 * time.Hour)}
	if _, err := g.Approve(common.Hash{7}, p, now, time.Hour); err == nil || !strings.Contains(err.Error(), "waits 1h0m0s") {
		t.Fatalf("an approval that expires with the delay: %v", err)
	}
	a, err := g.Approve(common.Hash{7}, p, now, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if a.Expiry.Sub(a.Issued) != 2*time.Hour || a.Issued.Nanosecond() != 0 {
		t.Fatalf("approval times %s to %s", a.Issued, a.Expiry)
	}
	// The request expires before the delay has run: no approval can help.
	p.Expiry = now.Add(30 * time.Minute)
	if _, err := g.Approve(common.Hash{7}, p, now, 2*time.Hour); err == nil {
		t.Fatal("approved a request that expires within the tier's delay")
	}
}

func TestGuardianUnfreezeSignaturesMustAgree(t *testing.T) {
	h := newHarness(t)
	target := "key:" + walletKey.Hex()
	if code, _, errs := h.run("", args("guardian", "freeze", "--target", target, "--reason", "odd", "--yes", h.as("alice"))...); code != 0 {
		t.Fatal(errs)
	}
	_, bob, _ := h.run("", args("guardian", "unfreeze", "--target", target, "--sign-only", "--yes", h.as("bob"))...)
	// Carol's unfreeze of the same freeze, signed at another second, is
	// another message: the two cannot be combined.
	var cu api.Unfreeze
	json.Unmarshal([]byte(bob), &cu)
	cu.Issued = cu.Issued.Add(-time.Second)
	cu.Signatures = nil
	cu, err := admin.NewGuardian(testKey("carol")).SignUnfreeze(h.backend.pol.WalletID(), cu)
	if err != nil {
		t.Fatal(err)
	}
	carol, _ := json.Marshal(cu)
	for _, c := range []struct {
		args []string
		want string
	}{
		{args("guardian", "unfreeze", "--add-signature", bob, "--add-signature", string(carol), "--yes", h.as("alice")), "is for another unfreeze"},
		{args("guardian", "unfreeze", "--add-signature", bob, "--target", "all", "--yes", h.as("alice")), "but the added signatures unfreeze"},
		{args("guardian", "unfreeze", "--add-signature", bob, "--freeze", "0x"+strings.Repeat("00", 31)+"01", "--yes", h.as("alice")), "but the added signatures lift"},
		{args("guardian", "unfreeze", "--add-signature", filepath.Join(h.dir, "no-such-file"), "--yes", h.as("alice")), "no-such-file"},
	} {
		code, _, errs := h.run("", c.args...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("%d %s, want %q", code, errs, c.want)
		}
	}
	if len(h.backend.eng.Freezes()) != 1 {
		t.Fatal("the freeze was lifted")
	}
	// Carol's own signature combined with Alice's (same message) lifts it.
	if code, _, errs := h.run("", args("guardian", "unfreeze", "--add-signature", string(carol), "--yes", h.as("alice"))...); code != 0 {
		t.Fatalf("carol and alice: %s", errs)
	}
	if len(h.backend.eng.Freezes()) != 0 {
		t.Fatal("the freeze is still there")
	}
}

func TestGuardianApproveChecksTheNodesDescription(t *testing.T) {
	h := newHarness(t)
	// The node shows another recipient than the bytes pay.
	h.backend.mu.Lock()
	other := common.HexToAddress("0x9999999999999999999999999999999999999999")
	h.backend.pending[h.pending.RequestID].Tokens[0].Recipient = &other
	h.backend.mu.Unlock()
	code, _, errs := h.run("", args("guardian", "approve", string(h.pending.RequestID), "--yes", h.as("alice"))...)
	if code != 1 || !strings.Contains(errs, "not signing: the request's description does not match its payload bytes") {
		t.Fatalf("approve a misdescribed request: %d %s", code, errs)
	}
	if n := len(h.backend.approvals[h.pending.RequestID]); n != 0 {
		t.Fatalf("%d approvals of a misdescribed request", n)
	}
	// A node that sends no bytes: the human is warned and may go on.
	h.backend.mu.Lock()
	h.backend.pending[h.pending.RequestID].Tokens[0].Recipient = &vendor
	h.backend.pending[h.pending.RequestID].Payload = nil
	h.backend.mu.Unlock()
	code, _, errs = h.run("", args("guardian", "approve", string(h.pending.RequestID), "--yes", h.as("alice"))...)
	if code != 0 || !strings.Contains(errs, "the node's word") {
		t.Fatalf("approve without bytes: %d %s", code, errs)
	}
}

func TestGuardianOverTCPWithToken(t *testing.T) {
	h := newHarness(t)
	tokenFile := filepath.Join(h.dir, "admin.token")
	if _, err := admin.WriteTokenFile(tokenFile); err != nil {
		t.Fatal(err)
	}
	srv, err := admin.NewServer(h.backend, admin.Config{Addr: "http://127.0.0.1:0", TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	addr := "http://" + ln.Addr().String()

	code, _, errs := h.run("", "guardian", "pending", "--admin", addr)
	if code != 1 || !strings.Contains(errs, "--token-file") {
		t.Fatalf("without the token: %d %s", code, errs)
	}
	code, out, errs := h.run("", "guardian", "pending", "--admin", addr, "--token-file", tokenFile)
	if code != 0 || !strings.Contains(out, string(h.pending.RequestID)) {
		t.Fatalf("with the token: %d %s %s", code, out, errs)
	}
	code, _, errs = h.run("", "guardian", "approve", string(h.pending.RequestID), "--admin", addr, "--token-file", tokenFile, "--yes",
		"--keystore", filepath.Join(h.dir, "alice.json"), "--password-file", filepath.Join(h.dir, "alice.pw"))
	if code != 0 {
		t.Fatalf("approve over TCP: %s", errs)
	}
	code, _, _ = h.run("", "guardian", "approve", "-h")
	if code != 0 {
		t.Fatalf("approve -h: %d", code)
	}
}

// genesisSource is the YAML of a new wallet's first document, with a
// comment (so the source and its canonical form differ).
func genesisSource() string {
	return fmt.Sprintf(`# the operations team's wallet
version: 1
guardians: {alice: %q, bob: %q, carol: %q}
agents: {bot: "0x%s"}
quorum: 2
tiers:
  - {name: hot, signers: [agent, policy]}
  - {name: guarded, signers: [agent, policy, guardian], approvals: 1, delay: 1h}
rules:
  - id: small-payments
    when: {chain: 1, value_max: 1000000000000000}
    allow: true
  - id: the-rest
    when: {chain: 1, calldata: any}
    tier: guarded
`, addrOf("alice").Hex(), addrOf("bob").Hex(), addrOf("carol").Hex(), strings.Repeat("ab", 32))
}

// squash is s with every run of white space made one space, so that a
// test does not depend on a table's column widths.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

func readPolicyDocument(t *testing.T, file string) api.PolicyDocument {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var pd api.PolicyDocument
	if err := json.Unmarshal(b, &pd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return pd
}

func TestGuardianSignGenesisPolicy(t *testing.T) {
	h := newHarness(t)
	src := genesisSource()
	file := filepath.Join(h.dir, "genesis.yaml")
	os.WriteFile(file, []byte(src), 0o600)
	doc, err := policy.ParseDocument([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	aliceOut, bothOut := filepath.Join(h.dir, "alice.doc.json"), filepath.Join(h.dir, "both.doc.json")

	// A document that replaces nothing founds a wallet: only with --genesis.
	code, _, errs := h.run("y\n", args("guardian", "sign-policy", file, "--out", aliceOut, h.as("alice"))...)
	if code != 2 || !strings.Contains(errs, "--genesis") {
		t.Fatalf("genesis without --genesis: %d %s", code, errs)
	}
	// Declined: the summary was shown, nothing written.
	code, _, errs = h.run("n\n", args("guardian", "sign-policy", file, "--genesis", "--out", aliceOut, h.as("alice"))...)
	if code != 1 || !strings.Contains(errs, "not confirmed") {
		t.Fatalf("declined: %d %s", code, errs)
	}
	for _, want := range []string{"version 1 hash " + doc.Hash().Hex(), "genesis document of a new wallet", "alice " + addrOf("alice").Hex(), "2 of 3",
		"hot: agent+policy sign", "guarded: agent+policy+guardian sign, 1 guardian approval(s), delay 1h0m0s", "agents", "bot", "rules", "2 (in order: small-payments → allow, the-rest → tier guarded)"} {
		if !strings.Contains(squash(errs), want) {
			t.Errorf("summary lacks %q:\n%s", want, errs)
		}
	}
	if _, err := os.Stat(aliceOut); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("declined signing wrote %s: %v", aliceOut, err)
	}
	// Mallory is no guardian of it: the nodes would refuse the whole set.
	code, _, errs = h.run("", args("guardian", "sign-policy", file, "--genesis", "--yes", "--out", aliceOut, h.as("mallory"))...)
	if code != 1 || !strings.Contains(errs, "not a guardian of this genesis document") {
		t.Fatalf("mallory: %d %s", code, errs)
	}

	code, out, errs := h.run("", args("guardian", "sign-policy", file, "--genesis", "--yes", "--out", aliceOut, h.as("alice"))...)
	if code != 0 || !strings.Contains(out, "signed by 1 guardian") || !strings.Contains(errs, "1 of the 2") {
		t.Fatalf("alice: %d %s %s", code, out, errs)
	}
	code, out, errs = h.run("", args("guardian", "sign-policy", file, "--genesis", "--add-signature", aliceOut, "--yes", "--out", bothOut, "--json", h.as("bob"))...)
	if code != 0 || !strings.Contains(squash(errs), "signed by alice") {
		t.Fatalf("bob: %d %s %s", code, out, errs)
	}
	var rep signedDocument
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Hash != doc.Hash() || rep.WalletID != doc.Hash() || !rep.Genesis ||
		len(rep.Signers) != 2 || rep.Signers[0] != addrOf("alice") || rep.Signers[1] != addrOf("bob") {
		t.Fatalf("bob --json: %v %s", err, out)
	}

	// Two guardians' signatures verify against the pinned hash; the source
	// is byte for byte the file's, comment included.
	both := readPolicyDocument(t, bothOut)
	if both.Source != src || len(both.Signatures) != 2 {
		t.Fatalf("document: %d signatures, source %q", len(both.Signatures), both.Source)
	}
	p, err := policy.VerifyDocument(both.Policy(), policy.Genesis{Hash: doc.Hash()})
	if err != nil {
		t.Fatalf("VerifyDocument of the two guardians' document: %v", err)
	}
	if p.WalletID() != doc.Hash() || p.Version() != 1 {
		t.Fatalf("wallet %s version %d", p.WalletID().Hex(), p.Version())
	}
	if _, err := policy.VerifyDocument(both.Policy(), policy.Genesis{Hash: common.Hash{1}}); !errors.Is(err, policy.ErrGenesis) {
		t.Fatalf("another pin: %v", err)
	}
	// Alice's alone is short of the quorum of 2.
	if _, err := policy.VerifyDocument(readPolicyDocument(t, aliceOut).Policy(), policy.Genesis{Hash: doc.Hash()}); !errors.Is(err, policy.ErrQuorum) {
		t.Fatalf("VerifyDocument with one signature: %v", err)
	}
	// The JSON is what POST /v1/policy decodes (strictly).
	raw, _ := os.ReadFile(bothOut)
	var strict api.PolicyDocument
	if err := httpapi.DecodeBytes(raw, &strict); err != nil {
		t.Fatal(err)
	}

	// Without --out the document is printed; a --wallet other than the
	// document's own hash is refused.
	code, out, errs = h.run("", args("guardian", "sign-policy", file, "--genesis", "--yes", h.as("carol"))...)
	var printed api.PolicyDocument
	if code != 0 || json.Unmarshal([]byte(out), &printed) != nil || printed.Source != src || len(printed.Signatures) != 1 {
		t.Fatalf("carol to stdout: %d %s %s", code, out, errs)
	}
	code, _, errs = h.run("", args("guardian", "sign-policy", file, "--genesis", "--wallet", h.backend.pol.WalletID().Hex(), "--yes", h.as("carol"))...)
	if code != 2 || !strings.Contains(errs, "its own hash") {
		t.Fatalf("genesis with another --wallet: %d %s", code, errs)
	}
}

func TestGuardianSignPolicyMergeRefusals(t *testing.T) {
	h := newHarness(t)
	src := genesisSource()
	file := filepath.Join(h.dir, "genesis.yaml")
	os.WriteFile(file, []byte(src), 0o600)
	aliceOut := filepath.Join(h.dir, "alice.doc.json")
	if code, _, errs := h.run("", args("guardian", "sign-policy", file, "--genesis", "--yes", "--out", aliceOut, h.as("alice"))...); code != 0 {
		t.Fatal(errs)
	}
	// The same document with another comment has the same hash, and
	// Alice's signature would verify over it: but the source is what the
	// nodes store and show, so it is refused all the same.
	other := filepath.Join(h.dir, "other.yaml")
	os.WriteFile(other, []byte(strings.Replace(src, "operations team", "operations tean", 1)), 0o600)
	d1, _ := policy.ParseDocument([]byte(src))
	d2, _ := policy.ParseDocument([]byte(strings.Replace(src, "operations team", "operations tean", 1)))
	if d1.Hash() != d2.Hash() {
		t.Fatal("a comment changed the hash")
	}
	// A signature by Bob for another wallet id recovers to no guardian.
	d, _ := policy.ParseDocument([]byte(src))
	sig, err := policy.SignDocument(testKey("bob"), common.Hash{9}, d)
	if err != nil {
		t.Fatal(err)
	}
	wrongWallet, _ := json.Marshal(api.PolicyDocumentFrom(policy.SignedDocument{Source: []byte(src), Signatures: [][]byte{sig}}))
	for i, c := range []struct {
		args []string
		want string
	}{
		{args("guardian", "sign-policy", other, "--genesis", "--add-signature", aliceOut, "--yes", h.as("bob")), "signs another source than " + other + " (they differ from byte 20 on)"},
		{args("guardian", "sign-policy", file, "--genesis", "--add-signature", aliceOut, "--add-signature", aliceOut, "--yes", h.as("bob")), "guardian " + addrOf("alice").Hex() + " signed twice"},
		{args("guardian", "sign-policy", file, "--genesis", "--add-signature", aliceOut, "--yes", h.as("alice")), "has signed this document already"},
		{args("guardian", "sign-policy", file, "--genesis", "--add-signature", string(wrongWallet), "--yes", h.as("alice")), "not a guardian of this document"},
		{args("guardian", "sign-policy", file, "--genesis", "--add-signature", `{"source": "x"}`, "--yes", h.as("bob")), "signs another source"},
		{args("guardian", "sign-policy", file, "--genesis", "--add-signature", `{"source": "x", "extra": 1}`, "--yes", h.as("bob")), "not the JSON of guardian sign-policy"},
		{args("guardian", "sign-policy", filepath.Join(h.dir, "missing.yaml"), "--genesis", "--yes", h.as("bob")), "missing.yaml"},
	} {
		out := filepath.Join(h.dir, fmt.Sprintf("merged-%d.json", i))
		code, _, errs := h.run("", append(c.args, "--out", out)...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: %d %s, want %q", c.args[2:5], code, errs, c.want)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v: a refused merge wrote %s", c.args[2:5], out)
		}
	}
}

// replacementSource is version 2 of the harness's policy: it drops the
// USDC rule's guardian tier for an outright allow, which loosens it.
func replacementSource(replaces common.Hash) string {
	return fmt.Sprintf(`version: 2
replaces: %q
guardians: {alice: %q, bob: %q, carol: %q}
quorum: 2
tiers:
  - {name: hot, signers: [agent, policy]}
  - {name: guarded, signers: [agent, policy, guardian], approvals: 1}
tokens:
  USDC: {address: %q, decimals: 6}
lists:
  vendors: [%q]
rules:
  - id: usdc-to-vendors
    when: {chain: 1, token: $USDC, call: transfer, recipient: $vendors}
    allow: true
`, replaces.Hex(), addrOf("alice").Hex(), addrOf("bob").Hex(), addrOf("carol").Hex(), usdc.Hex(), vendor.Hex())
}

func TestGuardianSignReplacementPolicy(t *testing.T) {
	h := newHarness(t)
	cur := h.backend.pol
	file := filepath.Join(h.dir, "v2.yaml")
	os.WriteFile(file, []byte(replacementSource(cur.Hash())), 0o600)
	aliceOut, bothOut := filepath.Join(h.dir, "alice.v2.json"), filepath.Join(h.dir, "both.v2.json")

	// A replacement needs the wallet id: from --admin, or --wallet.
	code, _, errs := h.run("", "guardian", "sign-policy", file, "--yes", "--keystore", filepath.Join(h.dir, "alice.json"), "--password-file", filepath.Join(h.dir, "alice.pw"))
	if code != 2 || !strings.Contains(errs, "--wallet") {
		t.Fatalf("replacement without a wallet id: %d %s", code, errs)
	}
	code, _, errs = h.run("", args("guardian", "sign-policy", file, "--genesis", "--yes", h.as("alice"))...)
	if code != 2 || !strings.Contains(errs, "--genesis, but") {
		t.Fatalf("replacement with --genesis: %d %s", code, errs)
	}
	// Alice asks her node for the wallet id; the summary says it replaces
	// the node's current policy.
	code, _, errs = h.run("", args("guardian", "sign-policy", file, "--yes", "--out", aliceOut, h.as("alice"))...)
	if code != 0 || !strings.Contains(errs, "the node's current policy v1") || !strings.Contains(errs, cur.WalletID().Hex()) {
		t.Fatalf("alice: %d %s", code, errs)
	}
	// Bob gives it himself.
	code, _, errs = h.run("", args("guardian", "sign-policy", file, "--wallet", cur.WalletID().Hex(), "--add-signature", aliceOut, "--yes", "--out", bothOut, h.as("bob"))...)
	if code != 0 {
		t.Fatalf("bob: %d %s", code, errs)
	}

	// Alice's alone loosens with one signature: refused by the engine.
	solo := policy.NewEngine(cur, policy.NewMemLedger())
	if err := solo.ApplyDocument(readPolicyDocument(t, aliceOut).Policy()); !errors.Is(err, policy.ErrNotTightening) {
		t.Fatalf("ApplyDocument with one signature: %v", err)
	}
	// Both: the engine applies it.
	if err := h.backend.eng.ApplyDocument(readPolicyDocument(t, bothOut).Policy()); err != nil {
		t.Fatalf("ApplyDocument of the two guardians' replacement: %v", err)
	}
	if v := h.backend.eng.Policy().Version(); v != 2 {
		t.Fatalf("version %d after the replacement", v)
	}

	// A document that does not follow the node's current policy is not
	// signed through --admin.
	stale := filepath.Join(h.dir, "stale.yaml")
	os.WriteFile(stale, []byte(replacementSource(common.Hash{7})), 0o600)
	code, _, errs = h.run("", args("guardian", "sign-policy", stale, "--yes", h.as("carol"))...)
	if code != 1 || !strings.Contains(errs, "not signing") || !strings.Contains(errs, cur.Hash().Hex()) {
		t.Fatalf("stale replacement: %d %s", code, errs)
	}
	// Mallory is no guardian of the current policy.
	code, _, errs = h.run("", args("guardian", "sign-policy", file, "--yes", h.as("mallory"))...)
	if code != 1 || !strings.Contains(errs, "not a guardian of the current policy") {
		t.Fatalf("mallory: %d %s", code, errs)
	}
}

// nodeEntries builds a committee's entries as node/keygen.go does before
// it compares (policy.CommitteeEntry, sorted as strings), written out
// here so that the test does not lean on the command's own helper.
func nodeEntries(c tss.Committee) []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, policy.CommitteeEntry(string(m.ID), m.Role))
	}
	slices.Sort(out)
	return out
}

// A 2-of-3 key whose members' ids sort differently from their entries:
// "guardian-2:guardian" comes before "guardian:guardian" as text.
var (
	oldCommittee = tss.Committee{Threshold: 1, Members: []tss.Member{
		{ID: "policy-1", Role: ids.RolePolicy}, {ID: "agent-1", Role: ids.RoleAgent}, {ID: "guardian", Role: ids.RoleGuardian}}}
	newCommittee = tss.Committee{Threshold: 2, Members: []tss.Member{
		{ID: "guardian-2", Role: ids.RoleGuardian}, {ID: "agent-1", Role: ids.RoleAgent}, {ID: "guardian", Role: ids.RoleGuardian}, {ID: "policy-2", Role: ids.RolePolicy}}}
)

func readReshare(t *testing.T, file string) api.Reshare {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// Strictly, as custos keys reshare --authorization reads it.
	var r api.Reshare
	if err := httpapi.DecodeBytes(b, &r); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return r
}

func TestGuardianAuthorizeReshare(t *testing.T) {
	h := newHarness(t)
	h.backend.keys = []tss.KeyInfo{{Address: walletKey, Committee: oldCommittee, Generation: 3, GuardianFloor: oldCommittee.GuardianFloor()}}
	newFlags := []string{"--new", "guardian-2:guardian,agent-1:agent", "--new", "guardian:guardian,policy-2:policy", "--new-threshold", "2"}
	aliceOut, bothOut := filepath.Join(h.dir, "alice.reshare.json"), filepath.Join(h.dir, "both.reshare.json")

	// Declined at the prompt: the summary was shown, nothing written.
	code, _, errs := h.run("n\n", args("guardian", "authorize-reshare", "--from-node", newFlags, "--out", aliceOut, h.as("alice"))...)
	if code != 1 || !strings.Contains(errs, "not confirmed") || !strings.Contains(errs, "(the reshare makes 4)") {
		t.Fatalf("declined: %d %s", code, errs)
	}
	if _, err := os.Stat(aliceOut); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a declined authorisation wrote %s", aliceOut)
	}
	// --from-node needs the node.
	code, _, errs = h.run("y\n", args("guardian", "authorize-reshare", "--from-node", newFlags, "--keystore", filepath.Join(h.dir, "alice.json"), "--password-file", filepath.Join(h.dir, "alice.pw"))...)
	if code != 2 || !strings.Contains(errs, "--from-node needs the node's admin address") {
		t.Fatalf("--from-node without --admin: %d %s", code, errs)
	}

	// Alice takes the key's committee from her node.
	code, out, errs := h.run("y\n", args("guardian", "authorize-reshare", "--from-node", newFlags, "--expiry", "2h", "--out", aliceOut, h.as("alice"))...)
	if code != 0 {
		t.Fatalf("alice: %d %s %s", code, out, errs)
	}
	for _, want := range []string{walletKey.Hex(), "3 (the reshare makes 4)", "2-of-3: agent-1:agent, guardian:guardian, policy-1:policy", "3-of-4", "leaves policy-1:policy", "joins guardian-2:guardian", "joins policy-2:policy", "custos keys reshare key:" + walletKey.Hex() + " --member agent-1:agent --member guardian:guardian --member guardian-2:guardian --member policy-2:policy --threshold 2 --authorization " + aliceOut} {
		if !strings.Contains(squash(errs), want) {
			t.Errorf("alice's summary lacks %q:\n%s", want, errs)
		}
	}
	// Bob gives everything by hand, as custos keys show prints it, and
	// adds Alice's.
	code, out, errs = h.run("", args("guardian", "authorize-reshare", "--key", "key:"+walletKey.Hex(), "--generation", "3", "--old", "agent-1:agent,guardian:guardian,policy-1:policy", "--old-threshold", "1",
		newFlags, "--add-signature", aliceOut, "--wallet", h.backend.pol.WalletID().Hex(), "--yes", "--out", bothOut, h.as("bob"))...)
	if code != 0 {
		t.Fatalf("bob: %d %s %s", code, out, errs)
	}

	// What an old member builds from its share and the new committee, and
	// checks: the command's authorisation passes it with two guardians.
	got := readReshare(t, bothOut)
	want := policy.ReshareAuthorization{
		Key: walletKey, Generation: 3,
		OldMembers: nodeEntries(oldCommittee), OldThreshold: oldCommittee.Threshold,
		NewMembers: nodeEntries(newCommittee.Canonical()), NewThreshold: newCommittee.Threshold,
		Expiry: got.Expiry,
	}
	if want.NewMembers[0] != "agent-1:agent" || want.NewMembers[1] != "guardian-2:guardian" {
		t.Fatalf("entries %v: the committee no longer tests the sort", want.NewMembers)
	}
	now := time.Now()
	if err := h.backend.pol.VerifyReshare(want, got.Policy(), now); err != nil {
		t.Fatalf("VerifyReshare of the two guardians' authorisation: %v", err)
	}
	if d := got.Expiry.Sub(now); d > 2*time.Hour || d < time.Hour {
		t.Fatalf("expiry %s from now", d)
	}
	// One guardian is short of the quorum; the next generation or another
	// committee is not what they signed; past the expiry it is dead.
	if err := h.backend.pol.VerifyReshare(want, readReshare(t, aliceOut).Policy(), now); !errors.Is(err, policy.ErrQuorum) {
		t.Fatalf("one signature: %v", err)
	}
	next := want
	next.Generation++
	if err := h.backend.pol.VerifyReshare(next, got.Policy(), now); !errors.Is(err, policy.ErrAuthorization) {
		t.Fatalf("next generation: %v", err)
	}
	other := want
	other.NewThreshold = 1
	if err := h.backend.pol.VerifyReshare(other, got.Policy(), now); !errors.Is(err, policy.ErrAuthorization) {
		t.Fatalf("another threshold: %v", err)
	}
	if err := h.backend.pol.VerifyReshare(want, got.Policy(), got.Expiry); !errors.Is(err, policy.ErrAuthorization) {
		t.Fatalf("at its expiry: %v", err)
	}
}

func TestGuardianAuthorizeReshareRefusals(t *testing.T) {
	h := newHarness(t)
	h.backend.keys = []tss.KeyInfo{{Address: walletKey, Committee: oldCommittee, Generation: 3, GuardianFloor: oldCommittee.GuardianFloor()}}
	newFlags := []string{"--new", "agent-1:agent,guardian:guardian,guardian-2:guardian,policy-2:policy", "--new-threshold", "2"}
	aliceOut := filepath.Join(h.dir, "alice.reshare.json")
	if code, _, errs := h.run("", args("guardian", "authorize-reshare", "--from-node", newFlags, "--yes", "--out", aliceOut, h.as("alice"))...); code != 0 {
		t.Fatal(errs)
	}
	alice := readReshare(t, aliceOut)
	edited := func(f func(*api.Reshare)) string {
		r := alice
		r.OldMembers = slices.Clone(r.OldMembers)
		r.NewMembers = slices.Clone(r.NewMembers)
		f(&r)
		b, _ := json.Marshal(r)
		return string(b)
	}
	// Carol's signature of another new committee cannot join Alice's.
	carolOther, err := admin.NewGuardian(testKey("carol")).SignReshare(h.backend.pol.WalletID(), func() api.Reshare {
		var r api.Reshare
		json.Unmarshal([]byte(edited(func(r *api.Reshare) { r.NewThreshold = 1; r.Signatures = nil })), &r)
		return r
	}())
	if err != nil {
		t.Fatal(err)
	}
	carolJSON, _ := json.Marshal(carolOther)
	unsorted := edited(func(r *api.Reshare) { r.NewMembers[1], r.NewMembers[2] = r.NewMembers[2], r.NewMembers[1] })
	for i, c := range []struct {
		args []string
		want string
	}{
		{args("--add-signature", aliceOut, "--add-signature", aliceOut), "guardian " + addrOf("alice").Hex() + " signed twice"},
		{args("--add-signature", aliceOut, "--add-signature", string(carolJSON)), "authorises another reshare than the first: new committee"},
		{args("--add-signature", aliceOut, "--from-node", "--new", "agent-1:agent,guardian:guardian,policy-2:policy", "--new-threshold", "1"), "but the added signatures authorise"},
		{args("--add-signature", aliceOut, "--expiry", "1h"), "the expiry is the one the first guardian signed"},
		{args("--add-signature", unsorted), "not sorted"},
		{args("--add-signature", edited(func(r *api.Reshare) { r.Generation = 2 }), "--from-node"), "authorise generation 2, but the key is at generation 3"},
		{args("--add-signature", edited(func(r *api.Reshare) { r.Expiry = time.Now().Add(-time.Minute) })), "expired"},
		{args("--from-node", "--old", "agent-1:agent,guardian:guardian,policy-2:policy", "--old-threshold", "1", newFlags), "but the node's key"},
		{args("--from-node", "--generation", "4", newFlags), "is at generation 3"},
		{args("--from-node", "--key", vendor.Hex(), newFlags), "holds no share of key"},
		{args("--from-node", "--new", "agent-1:agent,guardian:guardian", "--new-threshold", "2"), "--new: tss: invalid committee"},
		{args("--from-node", "--new", "agent-1:agent,guardian:guardian,guardian:guardian", "--new-threshold", "1"), "--new: tss: invalid committee"},
		{args("--from-node", "--new", "agent-1:agent,guardian", "--new-threshold", "1"), "want member:role"},
		{args("--from-node", "--new", "agent-1:boss,guardian:guardian", "--new-threshold", "1"), "unknown role"},
		{args("--key", walletKey.Hex(), "--generation", "3", "--old", "agent-1:agent,guardian:guardian,policy-1:policy", "--old-threshold", "1", newFlags), "--wallet"},
	} {
		out := filepath.Join(h.dir, fmt.Sprintf("merged-%d.json", i))
		full := args("guardian", "authorize-reshare", c.args, "--yes", "--out", out, h.as("bob"))
		if c.want == "--wallet" {
			// no admin address: the wallet id must come from --wallet
			full = args("guardian", "authorize-reshare", c.args, "--yes", "--out", out, "--keystore", filepath.Join(h.dir, "bob.json"), "--password-file", filepath.Join(h.dir, "bob.pw"))
		}
		code, _, errs := h.run("", full...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: %d %s, want %q", c.args, code, errs, c.want)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v: a refused authorisation wrote %s", c.args, out)
		}
	}
	// Alice on her own output, and Mallory, are refused.
	if code, _, errs := h.run("", args("guardian", "authorize-reshare", "--add-signature", aliceOut, "--yes", h.as("alice"))...); code != 1 || !strings.Contains(errs, "has signed this authorisation already") {
		t.Errorf("alice twice: %d %s", code, errs)
	}
	if code, _, errs := h.run("", args("guardian", "authorize-reshare", "--add-signature", aliceOut, "--yes", h.as("mallory"))...); code != 1 || !strings.Contains(errs, "not a guardian of the current policy") {
		t.Errorf("mallory: %d %s", code, errs)
	}
	// Carol merges through stdout and --json-free output.
	code, out, errs := h.run("y\n", args("guardian", "authorize-reshare", "--add-signature", aliceOut, h.as("carol"))...)
	var r api.Reshare
	if code != 0 || httpapi.DecodeBytes([]byte(out), &r) != nil || len(r.Signatures) != 2 {
		t.Fatalf("carol: %d %s %s", code, out, errs)
	}
}
