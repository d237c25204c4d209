package dev

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/coordinator"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/goccy/go-yaml"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The members of the dev cluster, by directory name.
const (
	NameAgent     = "agent"
	NamePolicy    = "policy"
	NameGuardian1 = "guardian-1"
	NameGuardian2 = "guardian-2"
)

// Members are the dev cluster's nodes in the order they are laid out.
var Members = []string{NameAgent, NamePolicy, NameGuardian1, NameGuardian2}

var memberRoles = map[string]ids.Role{
	NameAgent: ids.RoleAgent, NamePolicy: ids.RolePolicy,
	NameGuardian1: ids.RoleGuardian, NameGuardian2: ids.RoleGuardian,
}

// The committees of the two dev keys.
var (
	hotCommittee   = []string{NameAgent, NamePolicy, NameGuardian1}
	vaultCommittee = []string{NameAgent, NamePolicy, NameGuardian1, NameGuardian2}
)

const (
	hotThreshold   = 1 // any 2 of 3 sign; agent and policy are 2: guardian floor 0
	vaultThreshold = 2 // any 3 of 4 sign; only 2 are not guardians: guardian floor 1
)

// AgentID is the dev agent's id in the policy's agent registry.
const AgentID ids.AgentID = "dev-agent"

// GuardianPassword is the password of the dev guardians' keystore files.
// It is printed: the dev guardian keys are public knowledge anyway.
const GuardianPassword = "custos-dev"

// GuardianSeed is the prefix of the string whose Keccak-256 hash is dev
// guardian i's identity key (i = 1, 2): public, for dev use only.
const GuardianSeed = "custos-dev-guardian-"

// Vendors are the destinations the sample policy lets the hot tier pay.
var Vendors = []common.Address{
	common.HexToAddress("0x1111111111111111111111111111111111111111"),
	common.HexToAddress("0x2222222222222222222222222222222222222222"),
}

const stateFile = "dev.json"

// state is what the dev directory remembers between runs (dev.json):
// where everything listens, who everyone is, and how far the setup got.
type state struct {
	Version     int                   `json:"version"`
	ChainID     uint64                `json:"chain_id"`
	ChainListen string                `json:"chain_listen"`
	HTTPListen  string                `json:"http_listen"`
	AgentListen string                `json:"agent_listen"`
	MCPListen   string                `json:"mcp_listen"`
	Coordinator peerState             `json:"coordinator"`
	Nodes       map[string]*peerState `json:"nodes"`
	WalletID    common.Hash           `json:"wallet_id"`

	PolicyPushed bool            `json:"policy_pushed,omitempty"`
	HotOp        string          `json:"hot_operation,omitempty"`
	Hot          *api.Key        `json:"hot,omitempty"`
	VaultOp      string          `json:"vault_operation,omitempty"`
	Vault        *api.Key        `json:"vault,omitempty"`
	Funded       map[string]bool `json:"funded,omitempty"` // by address
}

type peerState struct {
	ID   string `json:"id"`
	Port int    `json:"port"`
}

func (p peerState) addr() string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p.Port) }

// paths inside a dev directory.
type paths struct{ root string }

func (p paths) state() string       { return filepath.Join(p.root, stateFile) }
func (p paths) chain() string       { return filepath.Join(p.root, "chain") }
func (p paths) coordinator() string { return filepath.Join(p.root, "coordinator") }
func (p paths) coordinatorConfig() string {
	return filepath.Join(p.root, "coordinator", "coordinator.yaml")
}
func (p paths) operatorToken() string     { return filepath.Join(p.root, "coordinator", "operator.token") }
func (p paths) member(name string) string { return filepath.Join(p.root, name) }
func (p paths) nodeConfig(name string) string {
	return filepath.Join(p.root, name, node.ConfigFile)
}
func (p paths) adminSocket(name string) string { return filepath.Join(p.root, name, "admin.sock") }
func (p paths) credential() string             { return filepath.Join(p.root, "agent.json") }
func (p paths) keystore(name string) string    { return filepath.Join(p.root, "guardians", name+".json") }
func (p paths) password() string               { return filepath.Join(p.root, "guardians", "password") }
func (p paths) policySource() string           { return filepath.Join(p.root, "policy.yaml") }
func (p paths) signedPolicy() string           { return filepath.Join(p.root, "policy.json") }
func (p paths) mcpToken() string               { return filepath.Join(p.root, "mcp.token") }
func (p paths) log() string                    { return filepath.Join(p.root, "dev.log") }

// GuardianKey derives dev guardian i's identity key (i = 1 or 2) from a
// public string: the same on every machine, known to everybody.
func GuardianKey(i int) (*ecdsa.PrivateKey, error) {
	return crypto.ToECDSA(crypto.Keccak256([]byte(GuardianSeed + strconv.Itoa(i))))
}

const policyTemplate = `# The policy of a custos dev wallet, signed by its two dev guardians.
# Hot: small payments to the vendors, agent and policy node sign alone.
# Guarded: larger ones need one guardian's approval; vault: both.
version: 1
guardians: {guardian1: "{{g1}}", guardian2: "{{g2}}"}
quorum: 2
agents:
  {{agent}}: "{{agentkey}}"
tiers:
  - {name: hot, signers: [agent, policy]}
  - {name: guarded, signers: [agent, policy, guardian], approvals: 1}
  - {name: vault, signers: [agent, policy, guardian], approvals: 2}
lists:
  vendors: [{{vendors}}]
rules:
  - id: small-payments
    description: routine payments to known vendors
    when: {chain: {{chain}}, to: $vendors, value_max: 0.01 ether, gas_max: 21000, fee_max: 100 gwei}
    budget: {window: 24h, value: 1 ether, count: 100}
    tier: hot
  - id: larger-payments
    description: larger payments to vendors need a guardian
    when: {chain: {{chain}}, to: $vendors, value_max: 1 ether, gas_max: 21000, fee_max: 100 gwei}
    tier: guarded
  - id: very-large-payments
    description: very large payments to vendors need both guardians
    when: {chain: {{chain}}, to: $vendors, value_max: 100 ether, gas_max: 21000, fee_max: 100 gwei}
    tier: vault
`

// samplePolicy is the dev wallet's genesis document, signed by both dev
// guardians.
func samplePolicy(chainID uint64, agent *agentauth.Credential, g1, g2 *ecdsa.PrivateKey) (*policy.Document, api.PolicyDocument, error) {
	var vendors []string
	for _, v := range Vendors {
		vendors = append(vendors, strconv.Quote(v.Hex()))
	}
	src := strings.NewReplacer(
		"{{g1}}", crypto.PubkeyToAddress(g1.PublicKey).Hex(),
		"{{g2}}", crypto.PubkeyToAddress(g2.PublicKey).Hex(),
		"{{agent}}", string(agent.Agent()),
		"{{agentkey}}", agentauth.FormatPublicKey(agent.Public()),
		"{{vendors}}", strings.Join(vendors, ", "),
		"{{chain}}", strconv.FormatUint(chainID, 10),
	).Replace(policyTemplate)
	doc, err := policy.ParseDocument([]byte(src))
	if err != nil {
		return nil, api.PolicyDocument{}, fmt.Errorf("sample policy: %w", err)
	}
	signed := api.PolicyDocument{Source: src}
	for _, g := range []*ecdsa.PrivateKey{g1, g2} {
		sig, err := policy.SignDocument(g, doc.Hash(), doc)
		if err != nil {
			return nil, api.PolicyDocument{}, fmt.Errorf("sample policy: sign: %w", err)
		}
		signed.Signatures = append(signed.Signatures, sig)
	}
	return doc, signed, nil
}

// layoutOptions are the first run's choices.
type layoutOptions struct {
	chainID     uint64
	chainListen string
	httpListen  string
	agentListen string
	mcpListen   string
}

// layout makes a new dev directory at root: it builds everything in a
// sibling directory and renames it into place, so that an interrupted
// first run leaves no half-made dev directory behind.
func layout(root string, o layoutOptions) (*state, error) {
	parent := filepath.Dir(root)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("dev directory: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(root)+".init-")
	if err != nil {
		return nil, fmt.Errorf("dev directory: %w", err)
	}
	st, err := layoutIn(tmp, o)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, root); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("dev directory: %w", err)
	}
	return st, nil
}

func layoutIn(dir string, o layoutOptions) (*state, error) {
	p := paths{dir}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	chainListen, err := concretePort(o.chainListen)
	if err != nil {
		return nil, fmt.Errorf("chain listen address: %w", err)
	}
	httpListen, err := concretePort(o.httpListen)
	if err != nil {
		return nil, fmt.Errorf("REST listen address: %w", err)
	}
	agentListen, err := concretePort(o.agentListen)
	if err != nil {
		return nil, fmt.Errorf("agent JSON-RPC listen address: %w", err)
	}
	mcpListen, err := concretePort(o.mcpListen)
	if err != nil {
		return nil, fmt.Errorf("MCP listen address: %w", err)
	}
	ports, err := freePorts(len(Members) + 1)
	if err != nil {
		return nil, err
	}
	st := &state{Version: 1, ChainID: o.chainID, ChainListen: chainListen, HTTPListen: httpListen,
		AgentListen: agentListen, MCPListen: mcpListen, Nodes: map[string]*peerState{}, Funded: map[string]bool{}}

	// The people: two dev guardians with keystore files, one agent.
	if err := os.MkdirAll(filepath.Join(dir, "guardians"), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.password(), []byte(GuardianPassword+"\n"), 0o600); err != nil {
		return nil, err
	}
	var guardians []*ecdsa.PrivateKey
	for i, name := range []string{NameGuardian1, NameGuardian2} {
		k, err := GuardianKey(i + 1)
		if err != nil {
			return nil, err
		}
		// Light scrypt: the password is printed, and the key public.
		if _, err := admin.ImportKeystore(p.keystore(name), GuardianPassword, k, true); err != nil {
			return nil, fmt.Errorf("%s keystore: %w", name, err)
		}
		guardians = append(guardians, k)
	}
	cred, err := agentauth.NewCredential(AgentID)
	if err != nil {
		return nil, err
	}
	if err := writeCredential(p.credential(), cred); err != nil {
		return nil, err
	}
	doc, signed, err := samplePolicy(o.chainID, cred, guardians[0], guardians[1])
	if err != nil {
		return nil, err
	}
	st.WalletID = doc.Hash()
	if err := os.WriteFile(p.policySource(), []byte(signed.Source), 0o600); err != nil {
		return nil, err
	}
	sb, err := json.MarshalIndent(signed, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.signedPolicy(), append(sb, '\n'), 0o600); err != nil {
		return nil, err
	}

	// The nodes and the coordinator: identities and store keys first, then
	// configurations that name each other.
	guardianOf := map[string]common.Address{
		NameGuardian1: crypto.PubkeyToAddress(guardians[0].PublicKey),
		NameGuardian2: crypto.PubkeyToAddress(guardians[1].PublicKey),
	}
	for i, name := range Members {
		ps := &peerState{Port: ports[i]}
		opts := node.InitOptions{Role: memberRoles[name], Agent: AgentID, Guardian: guardianOf[name],
			Listen: []string{ps.addr()}, GenesisHash: st.WalletID}
		if opts.Role != ids.RoleAgent {
			opts.Agent = ""
		}
		cfg, _, err := node.Init(p.member(name), opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		ps.ID = cfg.Members[0].PeerID
		st.Nodes[name] = ps
	}
	st.Coordinator.Port = ports[len(Members)]
	var members []coordinator.MemberConf
	for _, name := range Members {
		ps := st.Nodes[name]
		members = append(members, coordinator.MemberConf{ID: ps.ID, Role: string(memberRoles[name]), Addrs: []string{ps.addr()}})
	}
	res, err := coordinator.Init(p.coordinator(), coordinator.InitOptions{
		Listen: []string{st.Coordinator.addr()}, HTTPListen: httpListen, Members: members,
		GenesisHash: st.WalletID.Hex(), ChainRPCURL: "http://" + chainListen, ChainID: o.chainID,
	})
	if err != nil {
		return nil, err
	}
	if len(res.Missing) > 0 {
		return nil, fmt.Errorf("coordinator configuration lacks %s", strings.Join(res.Missing, ", "))
	}
	st.Coordinator.ID = res.PeerID.String()
	for _, name := range Members {
		if err := writeNodeConfig(p, st, name, guardianOf[name]); err != nil {
			return nil, err
		}
	}
	if _, err := loadOrMakeToken(p.mcpToken()); err != nil {
		return nil, err
	}
	if err := saveState(p, st); err != nil {
		return nil, err
	}
	return st, nil
}

// writeNodeConfig replaces the starter configuration node init wrote with
// the dev cluster's: every member, the coordinator, the genesis pin, a
// pool of one set (enough for the next key, without keeping two cores
// busy for long).
func writeNodeConfig(p paths, st *state, name string, guardian common.Address) error {
	role := memberRoles[name]
	cfg := node.Config{
		Role:         string(role),
		DataDir:      "data",
		IdentityFile: "identity.key",
		Listen:       []string{st.Nodes[name].addr()},
		Coordinators: []node.PeerConfig{{PeerID: st.Coordinator.ID, Addrs: []string{st.Coordinator.addr()}}},
		Admin:        node.AdminConfig{Socket: "admin.sock"},
		StoreKey:     node.StoreKeyConfig{File: "store.key"},
		Genesis:      node.GenesisConfig{Hash: st.WalletID.Hex()},
		Pool:         node.PoolConfig{Target: 1, Concurrency: 1},
		Log:          node.LogConfig{Level: "info", Format: "text"},
	}
	for _, m := range Members {
		cfg.Members = append(cfg.Members, node.PeerConfig{PeerID: st.Nodes[m].ID, Addrs: []string{st.Nodes[m].addr()}, Role: string(memberRoles[m])})
	}
	switch role {
	case ids.RoleAgent:
		cfg.Agent = string(AgentID)
	case ids.RoleGuardian:
		cfg.Guardian = guardian.Hex()
	}
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		return err
	}
	head := fmt.Sprintf("# Custos dev node %s (role %s), written by custos dev.\n", name, role)
	return os.WriteFile(p.nodeConfig(name), append([]byte(head), b...), 0o600)
}

// writeCredential writes the agent's credential file in the form `custos
// sign --credential` reads (cli.CredentialFile: the agent's id and its
// Ed25519 seed, mode 0600).
func writeCredential(path string, c *agentauth.Credential) error {
	b, err := json.Marshal(struct {
		Agent ids.AgentID   `json:"agent"`
		Seed  hexutil.Bytes `json:"seed"`
	}{c.Agent(), c.Seed()})
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// loadState reads dev.json, or returns nil if the directory does not
// exist or is empty.
func loadState(p paths) (*state, error) {
	b, err := os.ReadFile(p.state())
	if errors.Is(err, os.ErrNotExist) {
		ents, derr := os.ReadDir(p.root)
		if errors.Is(derr, os.ErrNotExist) || (derr == nil && len(ents) == 0) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s exists but is not a custos dev directory (no %s): remove it or choose another --dir", p.root, stateFile)
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", p.state(), err)
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("%s: version %d, want 1: remove the directory to start afresh", p.state(), st.Version)
	}
	for _, name := range Members {
		ps := st.Nodes[name]
		if ps == nil || ps.ID == "" {
			return nil, fmt.Errorf("%s: no node %s", p.state(), name)
		}
		if _, err := peer.Decode(ps.ID); err != nil {
			return nil, fmt.Errorf("%s: node %s: %w", p.state(), name, err)
		}
	}
	if st.Funded == nil {
		st.Funded = map[string]bool{}
	}
	if st.AgentListen == "" {
		st.AgentListen = DefaultAgentListen
	}
	if st.MCPListen == "" {
		st.MCPListen = DefaultMCPListen
	}
	return &st, nil
}

// saveState replaces dev.json atomically.
func saveState(p paths, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := p.state() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p.state())
}

// concretePort turns host:0 into host:<a free port>, so that the address
// written into the configurations stays the same on every run.
func concretePort(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return hostport, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// freePorts finds n free loopback TCP ports for the libp2p hosts.
func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
