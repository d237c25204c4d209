package node

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/testfixtures"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"
)

// The world of the node tests: three guardians (quorum 2), two agents, a
// policy with a hot and a guarded tier, and a cluster of an agent, a
// policy and a guardian node (alice's) that hold one 3-of-3 key
// (threshold 2, guardian floor 1), driven by a test coordinator that
// speaks the control protocol itself.

const chainID = 1337

var (
	vendor   = common.HexToAddress("0x1111111111111111111111111111111111111111")
	cafe     = common.HexToAddress("0xcafe00000000000000000000000000000000cafe")
	stranger = common.HexToAddress("0x5555555555555555555555555555555555555555")
	milli    = big.NewInt(1e15)
)

func millis(n int64) *big.Int { return new(big.Int).Mul(big.NewInt(n), milli) }

const policyTemplate = `version: 1
guardians: {alice: "{{alice}}", bob: "{{bob}}", carol: "{{carol}}"}
quorum: 2
agents:
  bot: "{{bot}}"
  other: "{{other}}"
tiers:
  - {name: hot, signers: [agent, policy]}
  - {name: guarded, signers: [agent, policy, guardian], approvals: 1}
lists:
  vendors: ["{{vendor}}"]
  cafes: ["{{cafe}}"]
rules:
  - id: small-payments
    when: {chain: 1337, to: $vendors, value_max: 0.01 ether, gas_max: 21000, fee_max: 100 gwei}
    budget: {window: 24h, value: 0.5 ether, count: 50}
    tier: hot
  - id: coffee
    when: {chain: 1337, to: $cafes, value_max: 0.01 ether, gas_max: 21000, fee_max: 100 gwei}
    budget: {window: 24h, count: 1}
    tier: hot
  - id: larger-payments
    when: {chain: 1337, to: $vendors, value_max: 2 ether, gas_max: 21000, fee_max: 100 gwei}
    tier: guarded
breaker:
  requests: {max: 10000, window: 1h}
  new_destinations: {max: 1000, window: 1h}
`

type world struct {
	alice, bob, carol *ecdsa.PrivateKey
	bot, other        *agentauth.Credential
	doc               api.PolicyDocument
	walletID          common.Hash
}

func newWorld() (*world, error) {
	w := &world{}
	var err error
	for _, k := range []**ecdsa.PrivateKey{&w.alice, &w.bob, &w.carol} {
		if *k, err = crypto.GenerateKey(); err != nil {
			return nil, err
		}
	}
	if w.bot, err = agentauth.NewCredential("bot"); err != nil {
		return nil, err
	}
	if w.other, err = agentauth.NewCredential("other"); err != nil {
		return nil, err
	}
	src := strings.NewReplacer(
		"{{alice}}", addr(w.alice).Hex(), "{{bob}}", addr(w.bob).Hex(), "{{carol}}", addr(w.carol).Hex(),
		"{{bot}}", agentauth.FormatPublicKey(w.bot.Public()), "{{other}}", agentauth.FormatPublicKey(w.other.Public()),
		"{{vendor}}", vendor.Hex(), "{{cafe}}", cafe.Hex(),
	).Replace(policyTemplate)
	d, err := policy.ParseDocument([]byte(src))
	if err != nil {
		return nil, err
	}
	w.walletID = d.Hash()
	w.doc = api.PolicyDocument{Source: src}
	for _, g := range []*ecdsa.PrivateKey{w.alice, w.bob} {
		sig, err := policy.SignDocument(g, w.walletID, d)
		if err != nil {
			return nil, err
		}
		w.doc.Signatures = append(w.doc.Signatures, sig)
	}
	return w, nil
}

func addr(k *ecdsa.PrivateKey) common.Address { return crypto.PubkeyToAddress(k.PublicKey) }

// testNode is one node of the cluster with what restarts it.
type testNode struct {
	*Node
	cfg  *Config
	gen  *fixtureGen
	logs *syncBuffer
	name string
}

type cluster struct {
	w     *world
	nodes []*testNode // agent, policy, guardian
	coord *p2p.Node
	dir   string

	mu        sync.Mutex
	approvals []control.ApprovalMsg // what guardian nodes sent the coordinator
}

func (c *cluster) agent() *testNode    { return c.nodes[0] }
func (c *cluster) policy() *testNode   { return c.nodes[1] }
func (c *cluster) guardian() *testNode { return c.nodes[2] }

func (c *cluster) memberIDs() []ids.MemberID {
	out := make([]ids.MemberID, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Self()
	}
	return out
}

// fixtureOrder is the pre-parameter fixtures each node draws, in order:
// the shared keygen (0, 1, 2), the floor-0 keygen (3, 4, 5) and the
// reshare (6, 0, 1). A node never draws a fixture twice (its store
// refuses a set it handed out once) and the members of one session draw
// distinct ones (a session refuses a copied range-proof setup).
var fixtureOrder = [][]int{{0, 3, 6}, {1, 4, 0}, {2, 5, 1}}

// fixtureGen hands out a node's fixtures in order, then waits.
type fixtureGen struct {
	mu   sync.Mutex
	list []int
	next int
}

func (g *fixtureGen) Generate(ctx context.Context) (*tss.PreParams, error) {
	g.mu.Lock()
	if g.next < len(g.list) {
		i := g.list[g.next]
		g.next++
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

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// newCluster starts the three nodes and the coordinator in dir and gives
// the nodes the genesis policy.
func newCluster(dir string) (*cluster, error) {
	w, err := newWorld()
	if err != nil {
		return nil, err
	}
	c := &cluster{w: w, dir: dir}
	roles := []ids.Role{ids.RoleAgent, ids.RolePolicy, ids.RoleGuardian}
	names := []string{"agent", "policy", "guardian"}
	peers := make([]peer.ID, 3)
	for i := range roles {
		key, err := p2p.LoadOrCreateIdentity(filepath.Join(dir, names[i], "identity.key"))
		if err != nil {
			return nil, err
		}
		peers[i], _ = peer.IDFromPrivateKey(key)
	}
	ckey, err := p2p.LoadOrCreateIdentity(filepath.Join(dir, "coordinator", "identity.key"))
	if err != nil {
		return nil, err
	}
	cid, _ := peer.IDFromPrivateKey(ckey)
	var members []p2p.Member
	for _, p := range peers {
		members = append(members, p2p.Member{ID: p})
	}
	c.coord, err = p2p.New(p2p.Config{Identity: ckey, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Members: members,
		Sessions: p2p.NewMemorySessionRegistry()})
	if err != nil {
		return nil, err
	}
	if err := c.coord.RegisterHandler(control.Protocol, control.MaxMessage, c.coordHandler); err != nil {
		return nil, err
	}
	for i, r := range roles {
		keyPath := filepath.Join(dir, names[i], "store.key")
		if err := os.WriteFile(keyPath, []byte(strings.Repeat(fmt.Sprintf("%02x", i+1), 32)), 0o600); err != nil {
			return nil, err
		}
		cfg := &Config{
			Role: string(r), DataDir: filepath.Join(dir, names[i], "data"), IdentityFile: filepath.Join(dir, names[i], "identity.key"),
			Listen: []string{"/ip4/127.0.0.1/tcp/0"}, StoreKey: StoreKeyConfig{File: keyPath},
			Genesis: GenesisConfig{Hash: w.walletID.Hex()}, Pool: PoolConfig{Target: 1, Concurrency: 1},
			Coordinators: []PeerConfig{{PeerID: cid.String()}},
		}
		if r == ids.RoleAgent {
			cfg.Agent = "bot"
		}
		if r == ids.RoleGuardian {
			cfg.Guardian = addr(w.alice).Hex()
		}
		for j, p := range peers {
			cfg.Members = append(cfg.Members, PeerConfig{PeerID: p.String(), Role: string(roles[j])})
		}
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		tn := &testNode{cfg: cfg, gen: &fixtureGen{list: fixtureOrder[i]}, logs: &syncBuffer{}, name: names[i]}
		c.nodes = append(c.nodes, tn)
		if err := c.start(tn); err != nil {
			return nil, err
		}
	}
	for _, n := range c.nodes {
		r := c.send(n, &control.Message{Type: control.TypePolicy, Policy: &control.PolicyUpdate{Document: &w.doc}})
		if r.Refusal != nil {
			return nil, fmt.Errorf("policy at %s: %v", n.name, r.Refusal)
		}
	}
	return c, nil
}

// start (re)starts a node and tells every peer its address.
func (c *cluster) start(tn *testNode) error {
	n, err := New(tn.cfg, Options{
		Logger:   slog.New(slog.NewTextHandler(tn.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Generate: tn.gen.Generate,
		TSS:      tss.Config{IdleTimeout: 20 * time.Second},
	})
	if err != nil {
		return err
	}
	tn.Node = n
	go n.Run(context.Background())
	if err := c.coord.SetAddrs(n.ID(), n.p2p.ListenAddrs()); err != nil {
		return err
	}
	if err := n.SetPeerAddrs(c.coord.ID(), c.coord.ListenAddrs()); err != nil {
		return err
	}
	for _, o := range c.nodes {
		if o == tn || o.Node == nil {
			continue
		}
		if err := o.SetPeerAddrs(n.ID(), n.p2p.ListenAddrs()); err != nil {
			return err
		}
		if err := n.SetPeerAddrs(o.ID(), o.p2p.ListenAddrs()); err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) close() {
	for _, n := range c.nodes {
		if n.Node != nil {
			n.Close()
		}
	}
	c.coord.Close()
}

// coordHandler takes what guardian nodes send the coordinator.
func (c *cluster) coordHandler(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
	m, err := control.Decode(req)
	if err != nil {
		return nil, err
	}
	if m.Type == control.TypeApproval {
		c.mu.Lock()
		c.approvals = append(c.approvals, *m.Approval)
		c.mu.Unlock()
	}
	return control.EncodeReply(&control.Reply{})
}

// send sends m to node n as the coordinator and returns the reply.
func (c *cluster) send(n *testNode, m *control.Message) *control.Reply {
	return sendFrom(c.coord, n, m)
}

func sendFrom(from *p2p.Node, n *testNode, m *control.Message) *control.Reply {
	b, err := control.Encode(m)
	if err != nil {
		return &control.Reply{Refusal: &control.Refusal{RuleID: "test-encode", Reason: err.Error()}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := from.Request(ctx, n.ID(), control.Protocol, b, control.MaxMessage)
	if err != nil {
		return &control.Reply{Refusal: &control.Refusal{RuleID: "test-transport", Reason: err.Error()}}
	}
	r, err := control.DecodeReply(resp)
	if err != nil {
		return &control.Reply{Refusal: &control.Refusal{RuleID: "test-decode", Reason: err.Error()}}
	}
	return r
}

var (
	sharedOnce    sync.Once
	sharedCluster *cluster
	sharedKey     tss.KeyInfo
	sharedErr     error
	sharedDir     string
)

// shared returns the cluster and its key, made once per test binary.
func shared(t *testing.T) (*cluster, tss.KeyInfo) {
	t.Helper()
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "custos-node-test-")
		if sharedErr != nil {
			return
		}
		sharedCluster, sharedErr = newCluster(sharedDir)
		if sharedErr != nil {
			return
		}
		sharedKey, sharedErr = sharedCluster.keygen()
	})
	if sharedErr != nil {
		if sharedCluster != nil {
			for _, n := range sharedCluster.nodes {
				t.Logf("%s logs:\n%s", n.name, n.logs.String())
			}
		}
		t.Fatalf("shared cluster: %v", sharedErr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range sharedCluster.nodes {
				t.Logf("%s logs (tail):\n%s", n.name, tail(n.logs.String(), 4000))
			}
		}
	})
	return sharedCluster, sharedKey
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestMain closes the shared cluster and then fails the package when a
// goroutine of a closed node is left (retried for a few seconds, since
// some closes finish their goroutines shortly after they return).
func TestMain(m *testing.M) {
	code := m.Run()
	if sharedCluster != nil {
		sharedCluster.close()
	}
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	if code == 0 {
		opts := []goleak.Option{goleak.IgnoreTopFunction("github.com/ipfs/go-log/writer.(*MirrorWriter).logRoutine")}
		deadline := time.Now().Add(5 * time.Second)
		err := goleak.Find(opts...)
		for err != nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			err = goleak.Find(opts...)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// keygen runs a 3-of-3 key generation (threshold 2) through the protocol
// and checks every member reports the same key.
func (c *cluster) keygen() (tss.KeyInfo, error) { return c.keygenThreshold(2) }

// keygenThreshold runs a key generation among the three nodes with
// threshold t.
func (c *cluster) keygenThreshold(t int) (tss.KeyInfo, error) {
	committee := tss.Committee{Threshold: t}
	for _, n := range c.nodes {
		committee.Members = append(committee.Members, tss.Member{ID: n.Self(), Role: n.Role()})
	}
	sid := ids.NewSessionID()
	msg := &control.Message{Type: control.TypeKeygen, Keygen: &control.Keygen{Session: sid, Committee: committee, Deadline: time.Now().Add(time.Minute)}}
	for _, n := range c.nodes {
		if r := c.send(n, msg); r.Refusal != nil || r.Join == nil {
			return tss.KeyInfo{}, fmt.Errorf("keygen at %s: %+v", n.name, r.Refusal)
		}
	}
	results, err := c.run(sid, c.nodes, 5*time.Minute)
	if err != nil {
		return tss.KeyInfo{}, err
	}
	var key *tss.KeyInfo
	for i, r := range results {
		if r.Key == nil {
			return tss.KeyInfo{}, fmt.Errorf("keygen at %s: no key in %+v", c.nodes[i].name, r)
		}
		if key != nil && !key.Equal(*r.Key) {
			return tss.KeyInfo{}, fmt.Errorf("members report different keys")
		}
		key = r.Key
	}
	return *key, nil
}

// run starts session sid at nodes and waits for every result.
func (c *cluster) run(sid ids.SessionID, nodes []*testNode, within time.Duration) ([]*control.Result, error) {
	for _, n := range nodes {
		if r := c.send(n, &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sid}}); r.Refusal != nil {
			return nil, fmt.Errorf("start at %s: %v", n.name, r.Refusal)
		}
	}
	out := make([]*control.Result, len(nodes))
	end := time.Now().Add(within)
	for i, n := range nodes {
		for {
			r := c.send(n, &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: sid, Wait: control.Duration(10 * time.Second)}})
			if r.Refusal != nil {
				return nil, fmt.Errorf("result at %s: %v", n.name, r.Refusal)
			}
			if r.Result.State == control.StateDone || r.Result.State == control.StateFailed {
				out[i] = r.Result
				break
			}
			if time.Now().After(end) {
				return nil, fmt.Errorf("result at %s: still %s (%s)", n.name, r.Result.State, r.Result.Progress)
			}
		}
	}
	return out, nil
}

// payment is an unsigned payment transaction as 0x-hex.
func payment(t *testing.T, nonce uint64, to common.Address, value *big.Int) string {
	t.Helper()
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(chainID), Nonce: nonce, To: &to, Value: value,
		Gas: 21000, GasFeeCap: big.NewInt(20e9), GasTipCap: big.NewInt(1e9)})
	raw, err := tx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return "0x" + common.Bytes2Hex(raw)
}

var idemCounter struct {
	sync.Mutex
	n int
}

// request is an agent-signed signing request for a payment with key.
func request(t *testing.T, cred *agentauth.Credential, key tss.KeyInfo, to common.Address, value *big.Int) (agentauth.Signed, ids.RequestID) {
	t.Helper()
	return requestWith(t, cred, key, to, value, nil)
}

// requestWith is request with a change to the body before the agent signs.
func requestWith(t *testing.T, cred *agentauth.Credential, key tss.KeyInfo, to common.Address, value *big.Int, change func(*api.SignRequest)) (agentauth.Signed, ids.RequestID) {
	t.Helper()
	idemCounter.Lock()
	idemCounter.n++
	idem := fmt.Sprintf("%s-%d-%d", t.Name(), idemCounter.n, time.Now().UnixNano())
	nonce := uint64(idemCounter.n)
	idemCounter.Unlock()
	req := api.SignRequest{
		Key: key.ID(), ChainID: chainID, Kind: "transaction",
		Payload:        json.RawMessage(fmt.Sprintf("%q", payment(t, nonce, to, value))),
		IdempotencyKey: idem, Expiry: time.Now().Add(time.Hour).UTC().Truncate(time.Second),
	}
	if change != nil {
		change(&req)
	}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	s := cred.Sign(api.SignRequestMethod, api.SignRequestPath, body, time.Now())
	return s, control.RequestID(cred.Agent(), idem)
}

// digestOf is the digest a node computes for s.
func digestOf(t *testing.T, s agentauth.Signed) common.Hash {
	t.Helper()
	p, err := api.ParseSigned(s, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return common.Hash(p.Payload.Digest())
}

// propose builds a proposal of s to quorum q in tier.
func propose(sid ids.SessionID, id ids.RequestID, s agentauth.Signed, q []ids.MemberID, tier string, approvals ...api.Approval) *control.Message {
	return &control.Message{Type: control.TypePropose, Propose: &control.Propose{
		Session: sid, RequestID: id, Request: s, Quorum: q, Tier: tier, Approvals: approvals,
		Deadline: time.Now().Add(time.Minute),
	}}
}

// approve is guardian g's approval of request id with digest.
func (c *cluster) approve(t *testing.T, g *ecdsa.PrivateKey, id ids.RequestID, digest common.Hash, key tss.KeyInfo) api.Approval {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	a := policy.Approval{RequestID: id, Digest: digest, ChainID: big.NewInt(chainID), Key: key.Address, Issued: now.Add(-time.Second), Expiry: now.Add(time.Hour)}
	sig, err := policy.SignTypedData(g, a.TypedData(c.w.walletID))
	if err != nil {
		t.Fatal(err)
	}
	return api.ApprovalFrom(policy.SignedApproval{Approval: a, Signature: sig})
}

// expectRefused checks that r is a refusal under rule.
func expectRefused(t *testing.T, who string, r *control.Reply, rule string) {
	t.Helper()
	if r.Refusal == nil {
		t.Fatalf("%s joined (%+v), want a refusal under %q", who, r.Join, rule)
	}
	if r.Refusal.RuleID != rule {
		t.Fatalf("%s refused under %q (%s), want %q", who, r.Refusal.RuleID, r.Refusal.Reason, rule)
	}
	t.Logf("%s refused (%s): %s", who, r.Refusal.RuleID, r.Refusal.Reason)
}

func expectJoined(t *testing.T, who string, r *control.Reply) *control.Join {
	t.Helper()
	if r.Refusal != nil {
		t.Fatalf("%s refused (%s): %s", who, r.Refusal.RuleID, r.Refusal.Reason)
	}
	if r.Join == nil {
		t.Fatalf("%s answered without a join: %+v", who, r)
	}
	return r.Join
}

// abortAll drops session sid wherever it was proposed.
func (c *cluster) abortAll(sid ids.SessionID, nodes ...*testNode) {
	for _, n := range nodes {
		c.send(n, &control.Message{Type: control.TypeAbort, Abort: &control.SessionRef{Session: sid}})
	}
}
