package coordinator

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	testToken   = "operator-token-0123456789"
	testChainID = 31337
)

// clock is a test clock the coordinator reads; tests move it explicitly.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one coordinator with members that are configured but not
// running (their addresses refuse connections): what needs no node.
type env struct {
	t         *testing.T
	dir       string
	clock     *clock
	c         *Coordinator
	cfgText   string
	op        *client.Client
	bot       *agentauth.Credential
	helper    *agentauth.Credential
	guardian  *ecdsa.PrivateKey // alice, the guardian member's human
	bob       *ecdsa.PrivateKey // the second guardian's human, with two
	names     []string
	roles     []ids.Role
	outsider  *ecdsa.PrivateKey
	members   []ids.MemberID
	key       tss.KeyInfo
	keyPriv   *ecdsa.PrivateKey // the key's secret: only a test has one
	wallet    common.Hash
	cancelRun context.CancelFunc
	runDone   chan error
}

func memberID(t *testing.T, dir, name string) ids.MemberID {
	k, err := p2p.LoadOrCreateIdentity(filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return ids.MemberID(id.String())
}

func genesisSource(guardian common.Address, bob *common.Address, bot, helper *agentauth.Credential) string {
	guardians := fmt.Sprintf("alice: %q", guardian.Hex())
	if bob != nil {
		guardians += fmt.Sprintf(", bob: %q", bob.Hex())
	}
	return fmt.Sprintf(`version: 1
guardians: {%s}
quorum: 1
agents: {bot: "%s", helper: "%s"}
tiers: [{name: hot, signers: [agent, policy]}]
rules: []
`, guardians, agentauth.FormatPublicKey(bot.Public()), agentauth.FormatPublicKey(helper.Public()))
}

// newEnv writes a configuration, opens a coordinator and runs it.
func newEnv(t *testing.T, extra string) *env { return newEnvWith(t, extra, nil, 1) }

// newEnvWith is newEnv whose members are given addresses by addrs (nil:
// addresses nothing listens on) before the configuration is written, with
// one guardian member (alice's) or two (alice's and bob's).
func newEnvWith(t *testing.T, extra string, addrs func(e *env) []string, guardians int) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: &clock{t: time.Now().UTC().Truncate(time.Second)}}
	var err error
	e.guardian, _ = crypto.GenerateKey()
	e.outsider, _ = crypto.GenerateKey()
	if e.bot, err = agentauth.NewCredential("bot"); err != nil {
		t.Fatal(err)
	}
	if e.helper, err = agentauth.NewCredential("helper"); err != nil {
		t.Fatal(err)
	}
	e.bob, _ = crypto.GenerateKey()
	var bob *common.Address
	e.names = []string{"agent", "policy", "guardian"}
	e.roles = []ids.Role{ids.RoleAgent, ids.RolePolicy, ids.RoleGuardian}
	if guardians == 2 {
		b := crypto.PubkeyToAddress(e.bob.PublicKey)
		bob = &b
		e.names = append(e.names, "guardian2")
		e.roles = append(e.roles, ids.RoleGuardian)
	}
	src := genesisSource(crypto.PubkeyToAddress(e.guardian.PublicKey), bob, e.bot, e.helper)
	d, err := policy.ParseDocument([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	e.wallet = d.Hash()
	var memberAddrs []string
	for _, n := range e.names {
		e.members = append(e.members, memberID(t, e.dir, n))
		memberAddrs = append(memberAddrs, "/ip4/127.0.0.1/tcp/9")
	}
	if addrs != nil {
		memberAddrs = addrs(e)
	}
	var memberList strings.Builder
	for i, m := range e.members {
		fmt.Fprintf(&memberList, "  - {id: %s, role: %s, addrs: [%s]}\n", m, e.roles[i], memberAddrs[i])
	}
	keyFile := filepath.Join(e.dir, "store.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cfgText = fmt.Sprintf(`data_dir: data
store_key: {file: store.key}
listen: [/ip4/127.0.0.1/tcp/0]
http: {listen: "127.0.0.1:0"}
members:
%soperators: [{name: ops, token: %s}]
chain: {chain_id: %d}
policy: {genesis_hash: "%s"}
timeouts: {propose: 2s, probe: 1s, session: 5s}
%s`, memberList.String(), testToken, testChainID, e.wallet.Hex(), extra)
	if err := os.WriteFile(filepath.Join(e.dir, "coordinator.yaml"), []byte(e.cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	e.open()
	if _, err := e.op.ProposePolicy(context.Background(), api.PolicyDocument{Source: src, Signatures: []hexutil.Bytes{e.sign(e.guardian, d)}}); err != nil {
		t.Fatal(err)
	}
	e.addKey()
	return e
}

func (e *env) sign(k *ecdsa.PrivateKey, d *policy.Document) []byte {
	sig, err := policy.SignDocument(k, e.wallet, d)
	if err != nil {
		e.t.Fatal(err)
	}
	return sig
}

// open opens and runs the coordinator on the env's directory.
func (e *env) open() {
	t := e.t
	cfg, err := LoadConfig(filepath.Join(e.dir, "coordinator.yaml"), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	e.c, err = New(cfg, Options{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancelRun, e.runDone = cancel, make(chan error, 1)
	go func() { e.runDone <- e.c.Run(ctx) }()
	e.op, err = client.New(e.c.URL(), client.Options{Token: testToken, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
}

func (e *env) close() {
	if e.c == nil {
		return
	}
	e.cancelRun()
	if err := <-e.runDone; err != nil {
		e.t.Errorf("Run: %v", err)
	}
	if err := e.c.Close(); err != nil {
		e.t.Error(err)
	}
	e.c = nil
}

// addKey records a key as a finished keygen would (the coordinator knows
// keys only from keygens it ran; no node runs here).
func (e *env) addKey() {
	k, _ := crypto.GenerateKey()
	e.keyPriv = k
	cm := tss.Committee{Threshold: len(e.members) - 2}
	for i, m := range e.members {
		cm.Members = append(cm.Members, tss.Member{ID: m, Role: e.roles[i]})
	}
	cm = cm.Canonical()
	e.key = tss.KeyInfo{Address: crypto.PubkeyToAddress(k.PublicKey), PublicKey: crypto.FromECDSAPub(&k.PublicKey),
		Committee: cm, GuardianFloor: cm.GuardianFloor()}
	if err := e.c.putKey(context.Background(), e.key, false); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) agentClient(cred *agentauth.Credential) *client.Client {
	cl, err := client.New(e.c.URL(), client.Options{Agent: cred, Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	return cl
}

// txHex is an unsigned transfer on chainID.
func txHex(t *testing.T, chainID int64, nonce uint64) string {
	to := common.HexToAddress("0x1111111111111111111111111111111111111111")
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: bigInt(chainID), Nonce: nonce, GasTipCap: bigInt(1), GasFeeCap: bigInt(10),
		Gas: 21000, To: &to, Value: bigInt(1000)})
	b, err := tx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return hexutil.Encode(b)
}

// body is a signing request body with fields replaced or removed ("-").
func (e *env) body(fields map[string]string) []byte {
	m := map[string]string{
		"key":             fmt.Sprintf("%q", e.key.ID().String()),
		"chain_id":        fmt.Sprint(testChainID),
		"kind":            `"transaction"`,
		"payload":         fmt.Sprintf("%q", txHex(e.t, testChainID, 0)),
		"idempotency_key": `"pay-1"`,
		"expiry":          fmt.Sprintf("%q", e.clock.Now().Add(time.Hour).Format(time.RFC3339)),
	}
	order := []string{"key", "chain_id", "kind", "payload", "idempotency_key", "expiry"}
	for k, v := range fields {
		if _, ok := m[k]; !ok {
			order = append(order, k)
		}
		m[k] = v
	}
	var parts []string
	for _, k := range order {
		if m[k] != "-" {
			parts = append(parts, fmt.Sprintf("%q: %s", k, m[k]))
		}
	}
	return []byte("{" + strings.Join(parts, ", ") + "}")
}

// requests lists the signing requests in the store.
func (e *env) requests() []store.RequestRecord {
	recs, err := e.c.store.Requests(context.Background(), func(r store.RequestRecord) bool { return strings.HasPrefix(string(r.ID), "req:") })
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

func (e *env) approval(k *ecdsa.PrivateKey, id ids.RequestID, digest common.Hash) api.Approval {
	a := policy.Approval{RequestID: id, Digest: digest, ChainID: bigInt(testChainID), Key: e.key.Address,
		Issued: e.clock.Now().Add(-time.Minute), Expiry: e.clock.Now().Add(time.Hour)}
	sig, err := policy.SignTypedData(k, a.TypedData(e.wallet))
	if err != nil {
		e.t.Fatal(err)
	}
	return api.ApprovalFrom(policy.SignedApproval{Approval: a, Signature: sig})
}

func (e *env) denial(k *ecdsa.PrivateKey, id ids.RequestID, digest common.Hash, reason string) api.Denial {
	d := policy.Denial{RequestID: id, Digest: digest, Reason: reason, Issued: e.clock.Now()}
	sig, err := policy.SignTypedData(k, d.TypedData(e.wallet))
	if err != nil {
		e.t.Fatal(err)
	}
	return api.DenialFrom(policy.SignedDenial{Denial: d, Signature: sig})
}

func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

func bigInt(v int64) *big.Int { return big.NewInt(v) }

// raw sends one HTTP request and returns its status, headers and body.
func (e *env) raw(method, path string, body []byte, prepare func(*http.Request)) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.c.URL()+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if prepare != nil {
		prepare(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// signedBy signs a request with cred at the env's clock.
func (e *env) signedBy(cred *agentauth.Credential, body []byte) func(*http.Request) {
	return func(r *http.Request) { cred.SignHTTP(r, body, e.clock.Now()) }
}

// policyFreeze is a freeze of everything signed by k.
func policyFreeze(t *testing.T, e *env, k *ecdsa.PrivateKey) api.Freeze {
	f := policy.Freeze{Target: policy.TargetAll, Reason: "test", Issued: e.clock.Now()}
	sig, err := policy.SignTypedData(k, f.TypedData(e.wallet))
	if err != nil {
		t.Fatal(err)
	}
	return api.FreezeFrom(f, sig)
}
