package sidecar_test

// The cluster these tests run against, in one process: a coordinator and
// three real nodes (agent, policy, guardian) on loopback libp2p, each
// with its badger store in a temporary directory, pre-parameters from the
// committed test fixtures, and a go-ethereum dev chain (dev mode, blocks
// on demand) as the chain the JSON-RPC endpoint sends to. Keys are made
// once per test binary: each key generation costs tens of seconds here.
//
//	hot:   agent, policy, guardian; threshold 1 (any 2 sign); guardian
//	       floor 0: routine payments signed by agent and policy alone.
//	vault: agent, policy, guardian; threshold 2 (all 3 sign); guardian
//	       floor 1: serves the guarded tier, after alice approves.

import (
	"context"
	"crypto/ecdsa"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agent/rpc"
	"github.com/custos-wallet/custos/agent/sidecar"
	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/coordinator"
	"github.com/custos-wallet/custos/devchain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/testfixtures"
	"github.com/custos-wallet/custos/node"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/goccy/go-yaml"
)

const chainID = 1337

// Addresses the policy names.
var (
	vendor1 = common.HexToAddress("0x1111111111111111111111111111111111111111")
	vendor2 = common.HexToAddress("0x2222222222222222222222222222222222222222")
	blocked = common.HexToAddress("0xbadbadbadbadbadbadbadbadbadbadbadbadbad0")
	bigShop = common.HexToAddress("0x3333333333333333333333333333333333333333")
	payee1  = common.HexToAddress("0x4444444444444444444444444444444444444444")
	payee2  = common.HexToAddress("0x4545454545454545454545454545454545454545")
	// stranger is named by no rule.
	stranger = common.HexToAddress("0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a")
	// usdc is the token x402 payments are made in. Nothing is deployed
	// there: an EIP-3009 authorization is a signature, which the test
	// facilitator verifies.
	usdc = common.HexToAddress("0x036CbD53842c5426634e7929541eC2318f3dCF7e")
)

const policyTemplate = `# Test wallet of the sidecar tests.
version: 1
guardians: {alice: "{{alice}}"}
quorum: 1
agents: {bot: "{{bot}}"}
tiers:
  - {name: hot, signers: [agent, policy]}
  - {name: guarded, signers: [agent, policy, guardian], approvals: 1}
tokens:
  USDC: {address: "{{usdc}}", decimals: 6}
lists:
  vendors: ["{{vendor1}}", "{{vendor2}}"]
  blocked: ["{{blocked}}"]
  big: ["{{big}}"]
  payees: ["{{payee1}}", "{{payee2}}"]
rules:
  - id: blocked-destinations
    when: {to: $blocked}
    deny: true
  - id: small-payments
    description: routine payments to known vendors
    when: {chain: 1337, to: $vendors, value_max: 0.01 ether, gas_max: 21000, fee_max: 100 gwei}
    budget: {window: 24h, value: 20 ether, count: 1000}
    tier: hot
  - id: large-payments
    when: {chain: 1337, to: $big, value_max: 5 ether, gas_max: 21000, fee_max: 100 gwei}
    tier: guarded
  - id: x402-payments
    description: pay-per-call APIs in USDC
    when: {chain: 1337, domain: {name: USD Coin, chain: 1337, contract: $USDC}, token: $USDC, recipient: $payees, amount_max: 0.01 USDC}
    budget: {window: 24h, amount: 0.025 USDC}
    tier: hot
  - id: app-logins
    when: {chain: 1337, domain: {name: App, chain: 1337}, primary_type: Login}
    tier: hot
  - id: sign-in
    when: {chain: 1337, message_prefix: "Sign in to "}
    tier: hot
  - id: sessions
    description: what a guardian-signed session grant allows
    when: {chain: 1337, grant: true, gas_max: 21000, fee_max: 100 gwei}
    tier: hot
`

// world is the cluster of one test binary.
type world struct {
	root     string
	alice    *ecdsa.PrivateKey
	bot      *agentauth.Credential
	walletID common.Hash
	chain    *devchain.Chain
	eth      *ethclient.Client // to the chain directly
	coordURL string
	opToken  string
	hot      api.Key
	vault    api.Key

	stops []func()
}

var (
	setupOnce sync.Once
	setupErr  error
	shared    *world
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if shared != nil {
		shared.close()
	}
	os.Exit(code)
}

// setup returns the shared cluster, made on first use.
func setup(t *testing.T) *world {
	t.Helper()
	if testing.Short() {
		t.Skip("the sidecar tests run key generations: minutes of CPU")
	}
	setupOnce.Do(func() {
		shared, setupErr = build()
	})
	if setupErr != nil {
		t.Fatalf("cluster setup: %v", setupErr)
	}
	return shared
}

func (w *world) close() {
	for i := len(w.stops) - 1; i >= 0; i-- {
		w.stops[i]()
	}
	os.RemoveAll(w.root)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

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

func build() (w *world, err error) {
	w = &world{opToken: "op-test-token-0123456789abcdef"}
	defer func() {
		if err != nil {
			w.close()
			w = nil
		}
	}()
	if w.root, err = os.MkdirTemp("", "custos-sidecar-"); err != nil {
		return w, err
	}
	if w.alice, err = crypto.GenerateKey(); err != nil {
		return w, err
	}
	if w.bot, err = agentauth.NewCredential("bot"); err != nil {
		return w, err
	}
	src := strings.NewReplacer(
		"{{alice}}", crypto.PubkeyToAddress(w.alice.PublicKey).Hex(),
		"{{bot}}", agentauth.FormatPublicKey(w.bot.Public()),
		"{{usdc}}", usdc.Hex(), "{{vendor1}}", vendor1.Hex(), "{{vendor2}}", vendor2.Hex(),
		"{{blocked}}", blocked.Hex(), "{{big}}", bigShop.Hex(), "{{payee1}}", payee1.Hex(), "{{payee2}}", payee2.Hex(),
	).Replace(policyTemplate)
	doc, err := policy.ParseDocument([]byte(src))
	if err != nil {
		return w, fmt.Errorf("policy: %w", err)
	}
	w.walletID = doc.Hash()
	sig, err := policy.SignDocument(w.alice, w.walletID, doc)
	if err != nil {
		return w, err
	}
	signedDoc := api.PolicyDocument{Source: src, Signatures: []hexutil.Bytes{sig}}

	if w.chain, err = devchain.Start(devchain.Config{Listen: "127.0.0.1:0", ChainID: chainID, Accounts: 1}); err != nil {
		return w, err
	}
	w.stops = append(w.stops, func() { w.chain.Close() })
	if w.eth, err = ethclient.Dial(w.chain.URL()); err != nil {
		return w, err
	}
	w.stops = append(w.stops, w.eth.Close)

	type proc struct {
		role ids.Role
		dir  string
		port int
		id   string
		cfg  string
	}
	var procs []*proc
	for _, r := range []ids.Role{ids.RoleAgent, ids.RolePolicy, ids.RoleGuardian} {
		p := &proc{role: r, dir: filepath.Join(w.root, string(r))}
		if p.port, err = freePort(); err != nil {
			return w, err
		}
		opts := node.InitOptions{Role: r, GenesisHash: w.walletID}
		switch r {
		case ids.RoleAgent:
			opts.Agent = "bot"
		case ids.RoleGuardian:
			opts.Guardian = crypto.PubkeyToAddress(w.alice.PublicKey)
		}
		cfg, path, err := node.Init(p.dir, opts)
		if err != nil {
			return w, err
		}
		p.id, p.cfg = cfg.Members[0].PeerID, path
		procs = append(procs, p)
	}
	coordDir := filepath.Join(w.root, "coordinator")
	coordPort, err := freePort()
	if err != nil {
		return w, err
	}
	if err := os.MkdirAll(coordDir, 0o700); err != nil {
		return w, err
	}
	if err := os.WriteFile(filepath.Join(coordDir, "store.key"), []byte(strings.Repeat("cd", 32)), 0o600); err != nil {
		return w, err
	}
	var y strings.Builder
	fmt.Fprintf(&y, "data_dir: data\nstore_key: {file: store.key}\nlisten: [/ip4/127.0.0.1/tcp/%d]\nhttp: {listen: \"127.0.0.1:0\"}\nmembers:\n", coordPort)
	var members []node.PeerConfig
	for _, p := range procs {
		members = append(members, node.PeerConfig{PeerID: p.id, Role: string(p.role), Addrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p.port)}})
		fmt.Fprintf(&y, "  - {id: %s, role: %s, addrs: [/ip4/127.0.0.1/tcp/%d]}\n", p.id, p.role, p.port)
	}
	fmt.Fprintf(&y, "operators: [{name: ops, token: %s}]\npolicy: {genesis_hash: %q}\n", w.opToken, w.walletID.Hex())
	fmt.Fprintf(&y, "rate_limits: {agent: {per_second: 100, burst: 400}, operator: {per_second: 100, burst: 400}, anonymous: {per_second: 100, burst: 400}}\n")
	fmt.Fprintf(&y, "chain: {chain_id: %d}\ntimeouts: {propose: 20s, session: 2m, keygen: 5m}\n", chainID)
	cfgPath := filepath.Join(coordDir, "coordinator.yaml")
	if err := os.WriteFile(cfgPath, []byte(y.String()), 0o600); err != nil {
		return w, err
	}
	ccfg, err := coordinator.LoadConfig(cfgPath, nil)
	if err != nil {
		return w, err
	}
	co, err := coordinator.New(ccfg, coordinator.Options{})
	if err != nil {
		return w, err
	}
	cctx, ccancel := context.WithCancel(context.Background())
	cdone := make(chan error, 1)
	go func() { cdone <- co.Run(cctx) }()
	w.stops = append(w.stops, func() { ccancel(); <-cdone })
	w.coordURL = co.URL()

	for i, p := range procs {
		b, err := os.ReadFile(p.cfg)
		if err != nil {
			return w, err
		}
		var cfg node.Config
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			return w, err
		}
		cfg.Listen = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p.port)}
		cfg.Members = members
		cfg.Coordinators = []node.PeerConfig{{PeerID: co.ID().String(), Addrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", coordPort)}}}
		cfg.Admin = node.AdminConfig{}
		cfg.Pool = node.PoolConfig{Target: 1, Concurrency: 1}
		out, err := yaml.Marshal(&cfg)
		if err != nil {
			return w, err
		}
		if err := os.WriteFile(p.cfg, out, 0o600); err != nil {
			return w, err
		}
		ncfg, err := node.LoadConfig(p.cfg, nil)
		if err != nil {
			return w, err
		}
		n, err := node.New(ncfg, node.Options{Generate: (&fixtureGen{list: []int{i, i + 3}}).Generate})
		if err != nil {
			return w, err
		}
		nctx, ncancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(nctx) }()
		w.stops = append(w.stops, func() { ncancel(); <-done })
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	op, err := client.New(w.coordURL, client.Options{Token: w.opToken})
	if err != nil {
		return w, err
	}
	pushed, err := op.ProposePolicy(ctx, signedDoc)
	if err != nil {
		return w, fmt.Errorf("push policy: %w", err)
	}
	for _, a := range pushed.Members {
		if !a.Accepted {
			return w, fmt.Errorf("policy refused by %s: %s %s", a.Member, a.RuleID, a.Reason)
		}
	}
	var committee []api.CommitteeMember
	for _, p := range procs {
		committee = append(committee, api.CommitteeMember{ID: ids.MemberID(p.id), Role: p.role})
	}
	for i, k := range []*api.Key{&w.hot, &w.vault} {
		started, err := op.CreateKey(ctx, api.CreateKey{Committee: committee, Threshold: i + 1})
		if err != nil {
			return w, err
		}
		done, err := op.WaitOperation(ctx, started.ID, 500*time.Millisecond, nil)
		if err != nil {
			return w, err
		}
		if done.State != api.OpDone || done.Key == nil {
			return w, fmt.Errorf("keygen: %+v", done)
		}
		*k = *done.Key
	}
	// Fund both keys from the dev account.
	dev := w.chain.Accounts()[0]
	nonce, err := w.eth.PendingNonceAt(ctx, dev.Address)
	if err != nil {
		return w, err
	}
	var hashes []common.Hash
	for i, to := range []common.Address{w.hot.Address, w.vault.Address} {
		tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(chainID), Nonce: nonce + uint64(i), To: &to,
			Value: new(big.Int).Mul(big.NewInt(100), big.NewInt(1e18)), Gas: 21000, GasFeeCap: big.NewInt(100e9), GasTipCap: big.NewInt(1e9)})
		signed, err := types.SignTx(tx, types.LatestSignerForChainID(big.NewInt(chainID)), dev.Key)
		if err != nil {
			return w, err
		}
		if err := w.eth.SendTransaction(ctx, signed); err != nil {
			return w, err
		}
		hashes = append(hashes, signed.Hash())
	}
	if _, err := w.mined(ctx, hashes); err != nil {
		return w, err
	}
	return w, nil
}

// mined seals blocks until every transaction has a receipt. The dev
// chain mines on its own as transactions arrive; sealing makes the wait a
// step rather than a poll.
func (w *world) mined(ctx context.Context, hashes []common.Hash) ([]*types.Receipt, error) {
	for range 20 {
		var rs []*types.Receipt
		for _, h := range hashes {
			r, err := w.eth.TransactionReceipt(ctx, h)
			if err != nil {
				break
			}
			rs = append(rs, r)
		}
		if len(rs) == len(hashes) {
			return rs, nil
		}
		if _, err := w.chain.Mine(ctx); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("transactions not mined after 20 blocks")
}

// wallet is a sidecar Wallet of the bot over the coordinator, signing
// with the keys named (all when none).
func (w *world) wallet(t *testing.T, wait time.Duration, keys ...api.Key) *sidecar.Wallet {
	t.Helper()
	cl, err := client.New(w.coordURL, client.Options{Agent: w.bot})
	if err != nil {
		t.Fatal(err)
	}
	var ks []ids.KeyID
	for _, k := range keys {
		ks = append(ks, k.ID)
	}
	wl, err := sidecar.New(sidecar.Config{Client: cl, Credential: w.bot, Keys: ks, Wait: wait})
	if err != nil {
		t.Fatal(err)
	}
	return wl
}

// endpoint is a JSON-RPC endpoint over the wallet, upstream the dev chain.
func (w *world) endpoint(t *testing.T, wl rpc.Wallet) *rpc.Server {
	t.Helper()
	srv, err := rpc.Start(context.Background(), rpc.Config{Upstream: w.chain.URL(), Wallet: wl, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// approve signs alice's approval of request r on key k and posts it.
func (w *world) approve(t *testing.T, r *api.Request, k api.Key) {
	t.Helper()
	a := policy.Approval{RequestID: r.ID, Digest: r.Digest, ChainID: big.NewInt(chainID), Key: k.Address,
		Issued: time.Now().Add(-time.Second).UTC(), Expiry: time.Now().Add(time.Hour).UTC()}
	sig, err := policy.SignTypedData(w.alice, a.TypedData(w.walletID))
	if err != nil {
		t.Fatal(err)
	}
	anon, err := client.New(w.coordURL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Approve(context.Background(), api.ApprovalFrom(policy.SignedApproval{Approval: a, Signature: sig})); err != nil {
		t.Fatalf("approve %s: %v", r.ID, err)
	}
}
