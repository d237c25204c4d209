package coordinator

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/testfixtures"
	"github.com/custos-wallet/custos/node"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/goccy/go-yaml"
)

const simChainID = 1337

// fixtureGen hands out its fixtures in order, then waits like a slow pool.
type fixtureGen struct {
	mu   sync.Mutex
	list []int
}

func (g *fixtureGen) Generate(ctx context.Context) (*tss.PreParams, error) {
	g.mu.Lock()
	if len(g.list) > 0 {
		i := g.list[0]
		g.list = g.list[1:]
		g.mu.Unlock()
		lp, err := testfixtures.PreParams(i)
		if err != nil {
			return nil, err
		}
		return tss.NewPreParams(lp)
	}
	g.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

// portsGiven are the ports freePort handed out, never handed out twice:
// a port closed again may come back from the next Listen, and a node
// given the coordinator's port dials itself.
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsGiven[p] {
			portsGiven[p] = true
			return p
		}
	}
}

// TestWithNodes runs a coordinator with three real nodes (agent, policy,
// guardian) on loopback: a key created through the REST API, counted only
// when every member reports it; a hot-tier transfer signed by a quorum of
// the agent and policy nodes, broadcast to go-ethereum's simulated chain
// and mined; the same idempotency key returning the first result; a
// request a rule denies, ending denied with the rule's id; and a request
// whose tier needs a guardian the key cannot force (guardian floor 0),
// denied naming the tier.
// nodeCluster is a coordinator and three real nodes (agent "bot", policy,
// guardian alice) on loopback, with the simulated chain.
type nodeCluster struct {
	ctx                   context.Context
	alice, funder         *ecdsa.PrivateKey
	bot                   *agentauth.Credential
	vendor, blocked, big1 common.Address
	wallet                common.Hash
	signedDoc             api.PolicyDocument
	sim                   *simulated.Backend
	ids                   []ids.MemberID // agent, policy, guardian
	roles                 []ids.Role
	coordDir              string
	co                    *Coordinator
	start                 func() *Coordinator
	stopFn                func()
}

func (nc *nodeCluster) stop() { nc.stopFn() }

// startNodes starts the cluster; node i draws the pre-parameter fixtures
// fixtures[i], in order. Each tune, if any, may change node i's options.
func startNodes(t *testing.T, fixtures [3][]int, tune ...func(i int, o *node.Options)) *nodeCluster {
	nc := &nodeCluster{stopFn: func() {}}
	ctx := context.Background()
	root := t.TempDir()
	alice, _ := crypto.GenerateKey()
	funder, _ := crypto.GenerateKey()
	bot, err := agentauth.NewCredential("bot")
	if err != nil {
		t.Fatal(err)
	}
	vendor := common.HexToAddress("0x1111111111111111111111111111111111111111")
	blocked := common.HexToAddress("0x2222222222222222222222222222222222222222")
	big1 := common.HexToAddress("0x3333333333333333333333333333333333333333")
	src := fmt.Sprintf(`version: 1
guardians: {alice: "%s"}
quorum: 1
agents: {bot: "%s"}
tiers:
  - {name: hot, signers: [agent, policy]}
  - {name: guarded, signers: [agent, policy, guardian], approvals: 1}
lists:
  vendors: ["%s"]
  blocked: ["%s"]
  big: ["%s"]
rules:
  - id: blocked-destinations
    when: {to: $blocked}
    deny: true
  - id: small-payments
    when: {chain: %d, to: $vendors, value_max: 0.01 ether}
    budget: {window: 24h, value: 0.5 ether, count: 50}
    tier: hot
  - id: large-payments
    when: {chain: %d, to: $big}
    tier: guarded
`, crypto.PubkeyToAddress(alice.PublicKey).Hex(), agentauth.FormatPublicKey(bot.Public()), vendor.Hex(), blocked.Hex(), big1.Hex(), simChainID, simChainID)
	doc, err := policy.ParseDocument([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	wallet := doc.Hash()
	sig, err := policy.SignDocument(alice, wallet, doc)
	if err != nil {
		t.Fatal(err)
	}
	signedDoc := api.PolicyDocument{Source: src, Signatures: []hexutil.Bytes{sig}}

	sim := simulated.NewBackend(types.GenesisAlloc{crypto.PubkeyToAddress(funder.PublicKey): {Balance: new(big.Int).Mul(big.NewInt(1000), big.NewInt(1e18))}})
	t.Cleanup(func() { sim.Close() })

	type nodeProc struct {
		role ids.Role
		dir  string
		port int
		id   string
		cfg  string
	}
	names := []ids.Role{ids.RoleAgent, ids.RolePolicy, ids.RoleGuardian}
	var procs []*nodeProc
	for _, r := range names {
		p := &nodeProc{role: r, dir: filepath.Join(root, string(r)), port: freePort(t)}
		opts := node.InitOptions{Role: r, GenesisHash: wallet}
		switch r {
		case ids.RoleAgent:
			opts.Agent = "bot"
		case ids.RoleGuardian:
			opts.Guardian = crypto.PubkeyToAddress(alice.PublicKey)
		}
		cfg, path, err := node.Init(p.dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		p.id, p.cfg = cfg.Members[0].PeerID, path
		procs = append(procs, p)
	}
	coordDir := filepath.Join(root, "coordinator")
	coordPort := freePort(t)
	if err := os.MkdirAll(coordDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(coordDir, "store.key"), []byte(strings.Repeat("cd", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	var coordYAML strings.Builder
	fmt.Fprintf(&coordYAML, "data_dir: data\nstore_key: {file: store.key}\nlisten: [/ip4/127.0.0.1/tcp/%d]\nhttp: {listen: \"127.0.0.1:0\"}\nmembers:\n", coordPort)
	var members []node.PeerConfig
	for _, p := range procs {
		members = append(members, node.PeerConfig{PeerID: p.id, Role: string(p.role), Addrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p.port)}})
		fmt.Fprintf(&coordYAML, "  - {id: %s, role: %s, addrs: [/ip4/127.0.0.1/tcp/%d]}\n", p.id, p.role, p.port)
	}
	fmt.Fprintf(&coordYAML, "operators: [{name: ops, token: %s}]\npolicy: {genesis_hash: %q}\ntimeouts: {propose: 10s, session: 1m, keygen: 5m}\n", testToken, wallet.Hex())
	cfgPath := filepath.Join(coordDir, "coordinator.yaml")
	if err := os.WriteFile(cfgPath, []byte(coordYAML.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	nc.start = func() *Coordinator {
		ccfg, err := LoadConfig(cfgPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		co, err := New(ccfg, Options{Chain: sim.Client()})
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- co.Run(cctx) }()
		nc.stopFn = func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			nc.stopFn = func() {}
		}
		return co
	}
	co := nc.start()
	t.Cleanup(func() { nc.stop() })

	for i, p := range procs {
		b, err := os.ReadFile(p.cfg)
		if err != nil {
			t.Fatal(err)
		}
		var cfg node.Config
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		cfg.Listen = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p.port)}
		cfg.Members = members
		cfg.Coordinators = []node.PeerConfig{{PeerID: co.ID().String(), Addrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", coordPort)}}}
		cfg.Admin = node.AdminConfig{}
		cfg.Pool = node.PoolConfig{Target: 1, Concurrency: 1}
		out, err := yaml.Marshal(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p.cfg, out, 0o600); err != nil {
			t.Fatal(err)
		}
		ncfg, err := node.LoadConfig(p.cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		nopts := node.Options{Generate: (&fixtureGen{list: fixtures[i]}).Generate}
		for _, f := range tune {
			f(i, &nopts)
		}
		n, err := node.New(ncfg, nopts)
		if err != nil {
			t.Fatal(err)
		}
		nctx, ncancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- n.Run(nctx) }()
		t.Cleanup(func() { ncancel(); <-done })
	}

	nc.ctx, nc.alice, nc.funder, nc.bot = ctx, alice, funder, bot
	nc.vendor, nc.blocked, nc.big1, nc.wallet, nc.signedDoc, nc.sim = vendor, blocked, big1, wallet, signedDoc, sim
	for _, p := range procs {
		nc.ids = append(nc.ids, ids.MemberID(p.id))
		nc.roles = append(nc.roles, p.role)
	}
	nc.coordDir, nc.co = coordDir, co
	return nc
}

func TestWithNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("keygen takes tens of seconds")
	}
	nc := startNodes(t, [3][]int{{0, 3}, {1, 4}, {2, 5}})
	ctx, alice, funder, bot, co := nc.ctx, nc.alice, nc.funder, nc.bot, nc.co
	vendor, blocked, big1, wallet, signedDoc, sim := nc.vendor, nc.blocked, nc.big1, nc.wallet, nc.signedDoc, nc.sim
	coordDir := nc.coordDir
	op, err := client.New(co.URL(), client.Options{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := op.ProposePolicy(ctx, signedDoc)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range pushed.Members {
		if !a.Accepted {
			t.Fatalf("policy not accepted: %+v", a)
		}
	}
	var committee []api.CommitteeMember
	for i, id := range nc.ids {
		committee = append(committee, api.CommitteeMember{ID: id, Role: nc.roles[i]})
	}
	started, err := op.CreateKey(ctx, api.CreateKey{Committee: committee, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer wcancel()
	done, err := op.WaitOperation(wctx, started.ID, 500*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != api.OpDone || done.Key == nil {
		t.Fatalf("keygen: %+v", done)
	}
	key := *done.Key
	if key.GuardianFloor != 0 || key.Threshold != 1 || len(key.PublicKey) != 65 {
		t.Fatalf("key %+v", key)
	}
	if k, err := op.Key(ctx, key.ID); err != nil || k.Address != key.Address {
		t.Fatalf("show key: %v %+v", err, k)
	}

	// Fund the key, then pay a vendor from it.
	fund := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(simChainID), Nonce: 0, To: &key.Address, Value: big.NewInt(1e17),
		Gas: 21000, GasFeeCap: big.NewInt(10e9), GasTipCap: big.NewInt(1e9)})
	fund, err = types.SignTx(fund, types.LatestSignerForChainID(big.NewInt(simChainID)), funder)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Client().SendTransaction(ctx, fund); err != nil {
		t.Fatal(err)
	}
	sim.Commit()

	agent, err := client.New(co.URL(), client.Options{Agent: bot})
	if err != nil {
		t.Fatal(err)
	}
	pay := func(idem string, to common.Address, value int64) *api.Request {
		tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(simChainID), Nonce: 0, To: &to, Value: big.NewInt(value),
			Gas: 21000, GasFeeCap: big.NewInt(10e9), GasTipCap: big.NewInt(1e9)})
		raw, err := tx.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		r, err := agent.Submit(ctx, bot, api.SignRequest{Key: key.ID, ChainID: simChainID, Kind: "transaction",
			Payload: []byte(fmt.Sprintf("%q", hexutil.Encode(raw))), IdempotencyKey: idem, Expiry: time.Now().Add(time.Hour).UTC().Truncate(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		r, err = agent.WaitFinal(wctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := pay("pay-1", vendor, 1e15)
	if r.State != api.StateSigned || len(r.RawTransaction) == 0 || r.Tier != "hot" {
		t.Fatalf("payment: %+v", r)
	}
	if len(r.Attempts) != 1 || len(r.Attempts[0].Quorum) != 2 {
		t.Fatalf("attempts %+v", r.Attempts)
	}
	// The attempt's times, in order: proposed, running, signature
	// collected, recorded; its running state, recorded beside the
	// session, never overwrites its end.
	if a := r.Attempts[0]; a.Started.IsZero() || a.Running.IsZero() || a.Running.Before(a.Started) || a.Collected.Before(a.Running) || a.Ended.Before(a.Collected) || a.State != attDone {
		t.Fatalf("attempt %s, times started %v running %v collected %v ended %v", a.State, a.Started, a.Running, a.Collected, a.Ended)
	}
	for _, m := range r.Attempts[0].Quorum {
		if m == nc.ids[2] {
			t.Fatalf("the guardian was asked for a hot-tier signature: %v", r.Attempts[0].Quorum)
		}
	}
	b, err := agent.Broadcast(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	sim.Commit()
	rcpt, err := sim.Client().TransactionReceipt(ctx, *b.TxHash)
	if err != nil || rcpt.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("receipt: %v %+v", err, rcpt)
	}
	if bal, _ := sim.Client().BalanceAt(ctx, vendor, nil); bal.Cmp(big.NewInt(1e15)) != 0 {
		t.Fatalf("vendor balance %s", bal)
	}
	again := pay("pay-1", vendor, 1e15)
	if again.ID != r.ID || hexutil.Encode(again.Signature) != hexutil.Encode(r.Signature) || len(again.Attempts) != 1 {
		t.Fatalf("the same idempotency key signed again: %+v", again)
	}

	denied := pay("pay-2", blocked, 1)
	if denied.State != api.StateDenied || denied.RuleID != "blocked-destinations" {
		t.Fatalf("blocked destination: %+v", denied)
	}
	guarded := pay("pay-3", big1, 1)
	if guarded.State != api.StateDenied || guarded.RuleID != ruleTier || !strings.Contains(guarded.Reason, "guarded") {
		t.Fatalf("guarded tier on a floor-0 key: %+v", guarded)
	}

	// A key every signature of which needs the guardian (2-of-3 with
	// threshold 2: guardian floor 1) serves the guarded tier: the request
	// waits for alice's approval, then the quorum includes her node.
	started, err = op.CreateKey(ctx, api.CreateKey{Committee: committee, Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	if done, err = op.WaitOperation(wctx, started.ID, 500*time.Millisecond, nil); err != nil || done.State != api.OpDone {
		t.Fatalf("vault keygen: %v %+v", err, done)
	}
	vault := *done.Key
	if vault.GuardianFloor != 1 {
		t.Fatalf("vault key %+v", vault)
	}
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(simChainID), Nonce: 0, To: &big1, Value: big.NewInt(1),
		Gas: 21000, GasFeeCap: big.NewInt(10e9), GasTipCap: big.NewInt(1e9)})
	raw, _ := tx.MarshalBinary()
	pending, err := agent.Submit(ctx, bot, api.SignRequest{Key: vault.ID, ChainID: simChainID, Kind: "transaction",
		Payload: []byte(fmt.Sprintf("%q", hexutil.Encode(raw))), IdempotencyKey: "vault-1", Expiry: time.Now().Add(time.Hour).UTC().Truncate(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	for pending.State == api.StateReceived {
		if pending, err = agent.Wait(wctx, pending.ID, 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if pending.State != api.StatePendingApproval || pending.Tier != "guarded" || pending.Needed != 1 {
		t.Fatalf("guarded request: %+v", pending)
	}
	list, err := op.Approvals(ctx)
	if err != nil || len(list) != 1 || list[0].ID != pending.ID {
		t.Fatalf("pending approvals: %v %+v", err, list)
	}
	a := policy.Approval{RequestID: pending.ID, Digest: pending.Digest, ChainID: big.NewInt(simChainID), Key: vault.Address,
		Issued: time.Now().Add(-time.Second).UTC(), Expiry: time.Now().Add(time.Hour).UTC()}
	asig, err := policy.SignTypedData(alice, a.TypedData(wallet))
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := client.New(co.URL(), client.Options{})
	if _, err := anon.Approve(ctx, api.ApprovalFrom(policy.SignedApproval{Approval: a, Signature: asig})); err != nil {
		t.Fatal(err)
	}
	signed, err := agent.WaitFinal(wctx, pending.ID)
	if err != nil {
		t.Fatal(err)
	}
	if signed.State != api.StateSigned || len(signed.Attempts) != 1 || len(signed.Attempts[0].Quorum) != 3 {
		t.Fatalf("approved request: %+v", signed)
	}

	// A coordinator that crashed after the session started and before it
	// recorded the outcome: on restart it asks the session's members for
	// their result first and takes the signature from it, with no second
	// session.
	nc.stop()
	st, err := store.Open(filepath.Join(coordDir, "data"), store.KeyFile(filepath.Join(coordDir, "store.key")), store.Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateRequest(ctx, r.ID, func(rec *store.RequestRecord) error {
		var b reqBody
		if err := json.Unmarshal(rec.Body, &b); err != nil {
			return err
		}
		b.View.State, b.View.Signature, b.View.RawTransaction, b.View.TxHash, b.View.Broadcast = api.StateSigning, nil, nil, nil, false
		b.View.Attempts[0].State, b.View.Attempts[0].Ended = attRunning, time.Time{}
		rec.State = b.View.State
		rec.Body, err = json.Marshal(b)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	co = nc.start()
	op, _ = client.New(co.URL(), client.Options{Token: testToken})
	resumed, err := op.WaitFinal(wctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if resumed.State != api.StateSigned || hexutil.Encode(resumed.Signature) != hexutil.Encode(r.Signature) ||
		len(resumed.Attempts) != 1 || resumed.Attempts[0].State != attDone || hexutil.Encode(resumed.RawTransaction) != hexutil.Encode(r.RawTransaction) {
		t.Fatalf("resumed after a crash: %+v", resumed)
	}

	h, err := op.Health(ctx)
	if err != nil || h.Status != "ok" {
		t.Fatalf("health %v %+v", err, h)
	}
	if _, err := co.Store().VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestReshareWithNodes reshares a key through the REST API with the
// guardian's authorisation: the address stays, the generation moves on,
// every new member confirms, and the key signs afterwards. An
// authorisation signed by someone who is not a guardian reaches the old
// members, and every one of them refuses it.
func TestReshareWithNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("keygen and reshare take tens of seconds")
	}
	nc := startNodes(t, [3][]int{{0, 3}, {1, 4}, {2, 5}})
	ctx := nc.ctx
	op, _ := client.New(nc.co.URL(), client.Options{Token: testToken})
	if _, err := op.ProposePolicy(ctx, nc.signedDoc); err != nil {
		t.Fatal(err)
	}
	var committee []api.CommitteeMember
	var entries []string
	for i, id := range nc.ids {
		committee = append(committee, api.CommitteeMember{ID: id, Role: nc.roles[i]})
		entries = append(entries, policy.CommitteeEntry(string(id), nc.roles[i]))
	}
	slices.Sort(entries)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	started, err := op.CreateKey(ctx, api.CreateKey{Committee: committee, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	done, err := op.WaitOperation(wctx, started.ID, 500*time.Millisecond, nil)
	if err != nil || done.State != api.OpDone {
		t.Fatalf("keygen: %v %+v", err, done)
	}
	key := *done.Key
	authorize := func(gen uint32, by *ecdsa.PrivateKey) api.Reshare {
		a := policy.ReshareAuthorization{Key: key.Address, Generation: gen, OldMembers: entries, OldThreshold: 1,
			NewMembers: entries, NewThreshold: 1, Expiry: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}
		sig, err := policy.SignTypedData(by, a.TypedData(nc.wallet))
		if err != nil {
			t.Fatal(err)
		}
		return api.ReshareFrom(policy.SignedReshare{Authorization: a, Signatures: [][]byte{sig}})
	}
	started, err = op.Reshare(ctx, key.ID, api.ReshareKey{Committee: committee, Threshold: 1, Authorization: authorize(key.Generation, nc.alice)})
	if err != nil {
		t.Fatal(err)
	}
	done, err = op.WaitOperation(wctx, started.ID, 500*time.Millisecond, nil)
	if err != nil || done.State != api.OpDone || done.Key == nil {
		t.Fatalf("reshare: %v %+v", err, done)
	}
	if done.Key.Address != key.Address || done.Key.Generation != key.Generation+1 || len(done.Confirmed) != 3 || len(done.Unconfirmed) != 0 {
		t.Fatalf("reshared key %+v confirmed %v unconfirmed %v", done.Key, done.Confirmed, done.Unconfirmed)
	}
	shown, err := op.Key(ctx, key.ID)
	if err != nil || shown.Generation != key.Generation+1 {
		t.Fatalf("key after the reshare: %v %+v", err, shown)
	}

	outsider, _ := crypto.GenerateKey()
	started, err = op.Reshare(ctx, key.ID, api.ReshareKey{Committee: committee, Threshold: 1, Authorization: authorize(shown.Generation, outsider)})
	if err != nil {
		t.Fatal(err)
	}
	done, err = op.WaitOperation(wctx, started.ID, 500*time.Millisecond, nil)
	if err != nil || done.State != api.OpFailed {
		t.Fatalf("reshare without the guardians: %v %+v", err, done)
	}
	for _, id := range nc.ids {
		if !strings.Contains(done.Error, string(id)+" refused") {
			t.Errorf("old member %s did not refuse: %s", id, done.Error)
		}
	}
	if k, _ := op.Key(ctx, key.ID); k.Generation != shown.Generation {
		t.Fatalf("a refused reshare changed the key: %+v", k)
	}

	// The reshared key signs.
	agent, _ := client.New(nc.co.URL(), client.Options{Agent: nc.bot})
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(simChainID), Nonce: 0, To: &nc.vendor, Value: big.NewInt(1),
		Gas: 21000, GasFeeCap: big.NewInt(10e9), GasTipCap: big.NewInt(1e9)})
	raw, _ := tx.MarshalBinary()
	r, err := agent.Submit(ctx, nc.bot, api.SignRequest{Key: key.ID, ChainID: simChainID, Kind: "transaction",
		Payload: []byte(fmt.Sprintf("%q", hexutil.Encode(raw))), IdempotencyKey: "after-reshare", Expiry: time.Now().Add(time.Hour).UTC().Truncate(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if r, err = agent.WaitFinal(wctx, r.ID); err != nil || r.State != api.StateSigned {
		t.Fatalf("payment after the reshare: %v %+v", err, r)
	}
}
