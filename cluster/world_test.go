package cluster

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/testfixtures"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
)

// The world around the cluster: who the people are, what the policy says,
// and the chain. Nothing here depends on the node or the coordinator.

// Agent ids. The agent node serves agentBot; agentOther is registered in
// the policy too, so the coordinator admits its requests, but no agent
// node of the keys serves it.
const (
	agentBot   ids.AgentID = "bot"
	agentOther ids.AgentID = "other"
)

// The member names of the harness (a node's member id is its libp2p peer
// id, known only once its identity exists).
const (
	nameAgent     = "agent-1"
	namePolicy    = "policy-1"
	nameGuardian1 = "guardian-1"
	nameGuardian2 = "guardian-2"
)

var memberNames = []string{nameAgent, namePolicy, nameGuardian1, nameGuardian2}

var memberRoles = map[string]ids.Role{
	nameAgent: ids.RoleAgent, namePolicy: ids.RolePolicy,
	nameGuardian1: ids.RoleGuardian, nameGuardian2: ids.RoleGuardian,
}

// Destinations the policy names.
var (
	vendor1 = common.HexToAddress("0x1111111111111111111111111111111111111111")
	vendor2 = common.HexToAddress("0x2222222222222222222222222222222222222222")
	cafe    = common.HexToAddress("0xcafe00000000000000000000000000000000cafe")
	blocked = common.HexToAddress("0xbadbadbadbadbadbadbadbadbadbadbadbadbad0")
	// stranger is named by no rule: default deny.
	stranger = common.HexToAddress("0x5555555555555555555555555555555555555555")
)

// simChainID is the chain id of go-ethereum's simulated backend.
const simChainID = 1337

// Amounts.
var (
	milliEther = big.NewInt(1e15)
	ether      = big.NewInt(1e18)
	feeCap     = big.NewInt(20e9) // 20 gwei: above the simulated chain's base fee
	tipCap     = big.NewInt(1e9)
)

func eth(millis int64) *big.Int { return new(big.Int).Mul(big.NewInt(millis), milliEther) }

// The policy: small payments to vendors are hot with a budget, coffee is
// hot with a budget of one payment a day and nothing above it (so a second
// coffee is over budget and denied), larger payments to vendors are
// guarded (one guardian approval), very large ones vault (two), blocked
// destinations are denied by an explicit rule, everything else by default.
const policyTemplate = `# Test wallet of the cluster tests.
version: 1
guardians: {alice: "{{alice}}", bob: "{{bob}}"}
quorum: 2
agents:
  bot: "{{bot}}"
  other: "{{other}}"
tiers:
  - {name: hot, signers: [agent, policy]}
  - {name: guarded, signers: [agent, policy, guardian], approvals: 1}
  - {name: vault, signers: [agent, policy, guardian], approvals: 2}
lists:
  vendors: ["{{vendor1}}", "{{vendor2}}"]
  cafes: ["{{cafe}}"]
  blocked: ["{{blocked}}"]
rules:
  - id: blocked-destinations
    when: {to: $blocked}
    deny: true
  - id: small-payments
    description: routine payments to known vendors
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
  - id: very-large-payments
    when: {chain: 1337, to: $vendors, value_max: 50 ether, gas_max: 21000, fee_max: 100 gwei}
    tier: vault
`

// world is the people, credentials, policy and chain of one test binary.
type world struct {
	alice, bob *ecdsa.PrivateKey // guardian identity accounts
	bot, other *agentauth.Credential
	funder     *ecdsa.PrivateKey // a genesis account of the chain

	docSource []byte
	doc       *policy.Document
	walletID  common.Hash // the genesis document's hash
	signedDoc api.PolicyDocument

	sim *simulated.Backend
}

func newWorld() (*world, error) {
	w := &world{}
	var err error
	for _, k := range []**ecdsa.PrivateKey{&w.alice, &w.bob, &w.funder} {
		if *k, err = crypto.GenerateKey(); err != nil {
			return nil, err
		}
	}
	if w.bot, err = agentauth.NewCredential(agentBot); err != nil {
		return nil, err
	}
	if w.other, err = agentauth.NewCredential(agentOther); err != nil {
		return nil, err
	}
	src := strings.NewReplacer(
		"{{alice}}", crypto.PubkeyToAddress(w.alice.PublicKey).Hex(),
		"{{bob}}", crypto.PubkeyToAddress(w.bob.PublicKey).Hex(),
		"{{bot}}", agentauth.FormatPublicKey(w.bot.Public()),
		"{{other}}", agentauth.FormatPublicKey(w.other.Public()),
		"{{vendor1}}", vendor1.Hex(), "{{vendor2}}", vendor2.Hex(),
		"{{cafe}}", cafe.Hex(), "{{blocked}}", blocked.Hex(),
	).Replace(policyTemplate)
	w.docSource = []byte(src)
	if w.doc, err = policy.ParseDocument(w.docSource); err != nil {
		return nil, fmt.Errorf("policy document: %w", err)
	}
	w.walletID = w.doc.Hash()
	w.signedDoc = api.PolicyDocument{Source: src}
	for _, g := range []*ecdsa.PrivateKey{w.alice, w.bob} {
		sig, err := policy.SignDocument(g, w.walletID, w.doc)
		if err != nil {
			return nil, err
		}
		w.signedDoc.Signatures = append(w.signedDoc.Signatures, sig)
	}
	if _, err := policy.VerifyDocument(w.signedDoc.Policy(), w.genesis()); err != nil {
		return nil, fmt.Errorf("genesis document does not verify: %w", err)
	}
	funds := new(big.Int).Mul(big.NewInt(1000), ether)
	w.sim = simulated.NewBackend(types.GenesisAlloc{crypto.PubkeyToAddress(w.funder.PublicKey): {Balance: funds}})
	return w, nil
}

// genesis is the pin every node and the coordinator are configured with.
func (w *world) genesis() policy.Genesis { return policy.Genesis{Hash: w.walletID} }

func (w *world) guardianAddr(k *ecdsa.PrivateKey) common.Address {
	return crypto.PubkeyToAddress(k.PublicKey)
}

func (w *world) close() {
	if w.sim != nil {
		w.sim.Close()
	}
}

// fund sends amount from the genesis account to addr and mines it.
func (w *world) fund(ctx context.Context, addr common.Address, amount *big.Int) error {
	c := w.sim.Client()
	from := crypto.PubkeyToAddress(w.funder.PublicKey)
	nonce, err := c.PendingNonceAt(ctx, from)
	if err != nil {
		return err
	}
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(simChainID), Nonce: nonce, To: &addr, Value: amount,
		Gas: 21000, GasFeeCap: feeCap, GasTipCap: tipCap})
	signed, err := types.SignTx(tx, types.LatestSignerForChainID(big.NewInt(simChainID)), w.funder)
	if err != nil {
		return err
	}
	if err := c.SendTransaction(ctx, signed); err != nil {
		return fmt.Errorf("fund %s: %w", addr, err)
	}
	w.sim.Commit()
	rcpt, err := c.TransactionReceipt(ctx, signed.Hash())
	if err != nil {
		return fmt.Errorf("fund %s: receipt: %w", addr, err)
	}
	if rcpt.Status != types.ReceiptStatusSuccessful {
		return fmt.Errorf("fund %s: transaction failed", addr)
	}
	return nil
}

func (w *world) balance(t *testing.T, addr common.Address) *big.Int {
	t.Helper()
	b, err := w.sim.Client().BalanceAt(context.Background(), addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unsignedTx is a payment from a key, at the key's next nonce on the
// chain, as the 0x-hex binary the agent signs into its request.
func (w *world) unsignedTx(t *testing.T, from common.Address, to common.Address, value *big.Int) string {
	t.Helper()
	nonce, err := w.sim.Client().PendingNonceAt(context.Background(), from)
	if err != nil {
		t.Fatal(err)
	}
	return txHex(t, nonce, to, value)
}

func txHex(t *testing.T, nonce uint64, to common.Address, value *big.Int) string {
	t.Helper()
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(simChainID), Nonce: nonce, To: &to, Value: value,
		Gas: 21000, GasFeeCap: feeCap, GasTipCap: tipCap})
	raw, err := tx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return "0x" + common.Bytes2Hex(raw)
}

// fixtureOrder gives each node the committed pre-parameter fixtures it
// draws, in order. A node's store refuses a set it handed out once, so no
// node sees a fixture twice; and the sets drawn for one session (the hot
// keygen: the first set of agent, policy and guardian-1; the vault keygen:
// the next of all four; the reshare: the next of its new committee, agent,
// policy and guardian-2, possibly after an aborted attempt took one) are
// distinct, since a session refuses two members with one range-proof setup.
var fixtureOrder = map[string][]int{
	nameAgent:     {0, 3, 6, 2},
	namePolicy:    {1, 4, 0, 3},
	nameGuardian1: {2, 5, 1},
	nameGuardian2: {6, 2, 4},
}

// fixtureGenerator hands out one node's fixtures in order, then waits
// (like a pool whose generation is slow) until ctx ends. It survives a
// restart of the node: the harness keeps one per node.
type fixtureGenerator struct {
	mu   sync.Mutex
	list []int
	next int // guarded by mu
	name string
}

func (g *fixtureGenerator) Generate(ctx context.Context) (*tss.PreParams, error) {
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
	return nil, fmt.Errorf("%s: no test fixture left: %w", g.name, ctx.Err())
}

// expiry is a request expiry comfortably ahead.
func expiry() time.Time { return time.Now().Add(time.Hour).UTC().Truncate(time.Second) }

// nowSigned is now at the second granularity of signed times.
func nowSigned() time.Time { return time.Now().UTC().Truncate(time.Second) }
