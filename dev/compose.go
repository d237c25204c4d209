package dev

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/coordinator"
	"github.com/custos-wallet/custos/devchain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/goccy/go-yaml"
)

// The compose cluster (docker-compose.yml at the repository root): one
// service per daemon, each with its own volume, named by the service.
// agent-2 is a spare agent node that every configuration lists as a
// member from the start, so that resharing can bring it in.
const (
	ServiceCoordinator = "coordinator"
	ServiceAgent2      = "agent-2"
)

// ComposeMembers are the compose cluster's nodes: the dev cluster's four
// and the spare agent-2.
var ComposeMembers = []string{NameAgent, NamePolicy, NameGuardian1, NameGuardian2, ServiceAgent2}

// ComposeAgentID is the compose cluster's agent in the policy.
const ComposeAgentID ids.AgentID = "compose-agent"

// The ports inside the compose network.
const (
	ComposeNodePort        = 4101
	ComposeCoordinatorPort = 4100
	ComposeHTTPPort        = 8080
	ComposeChainPort       = 8545
)

// ComposeFile names what compose init writes for the operator and for
// the setup step: ComposeClusterFile in the coordinator's volume and in the
// output directory.
const ComposeClusterFile = "cluster.json"

// ComposeCluster is cluster.json: who everyone is.
type ComposeCluster struct {
	ChainID     uint64                    `json:"chain_id"`
	WalletID    common.Hash               `json:"wallet_id"`
	Agent       ids.AgentID               `json:"agent"`
	Coordinator string                    `json:"coordinator"`
	Nodes       map[string]ComposeMember  `json:"nodes"`
	Guardians   map[string]common.Address `json:"guardians"`
}

// ComposeMember is one node of the compose cluster.
type ComposeMember struct {
	ID   ids.MemberID `json:"id"`
	Role ids.Role     `json:"role"`
}

func composeRole(name string) ids.Role {
	if name == ServiceAgent2 {
		return ids.RoleAgent
	}
	return memberRoles[name]
}

func composeAddr(service string, port int) string {
	return fmt.Sprintf("/dns4/%s/tcp/%d", service, port)
}

// ComposeInitOptions configure compose init.
type ComposeInitOptions struct {
	// Dir holds one directory per service (its volume, mounted there):
	// coordinator and each of ComposeMembers.
	Dir string
	// Out receives what the operator needs outside the containers: the
	// agent credential, the policy, cluster.json. Empty: none.
	Out string
	// ChainID is the dev chain's (default devchain.DefaultChainID).
	ChainID uint64
}

// ComposeInit lays out the compose cluster's volumes: for each node a
// libp2p identity, a store key and a node.yaml naming the others by their
// compose DNS names; for each guardian a new identity key in a keystore
// with a new password; a new agent credential; the sample policy signed
// by both guardians; the coordinator's configuration and operator token.
// Every secret is made here, on first use: none is committed anywhere. It
// reports false, changing nothing, when the volumes are laid out already.
func ComposeInit(o ComposeInitOptions) (bool, error) {
	if o.ChainID == 0 {
		o.ChainID = devchain.DefaultChainID
	}
	coordDir := filepath.Join(o.Dir, ServiceCoordinator)
	if _, err := os.Stat(filepath.Join(coordDir, ComposeClusterFile)); err == nil {
		return false, nil
	}
	for _, name := range append([]string{ServiceCoordinator}, ComposeMembers...) {
		d := filepath.Join(o.Dir, name)
		ents, err := os.ReadDir(d)
		if err != nil {
			return false, fmt.Errorf("compose init: volume of %s: %w", name, err)
		}
		if len(ents) > 0 {
			return false, fmt.Errorf("compose init: volume of %s (%s) is not empty but the cluster was never laid out: remove the volumes (docker-compose down -v) and start again", name, d)
		}
	}
	cl := ComposeCluster{ChainID: o.ChainID, Agent: ComposeAgentID, Nodes: map[string]ComposeMember{}, Guardians: map[string]common.Address{}}

	var gkeys []*ecdsa.PrivateKey
	for _, name := range []string{NameGuardian1, NameGuardian2} {
		k, err := crypto.GenerateKey()
		if err != nil {
			return false, err
		}
		pw, err := randomHex(16)
		if err != nil {
			return false, err
		}
		d := filepath.Join(o.Dir, name)
		if err := os.WriteFile(filepath.Join(d, "password"), []byte(pw+"\n"), 0o600); err != nil {
			return false, err
		}
		// Light scrypt: the password lies beside the keystore in the same
		// volume; this is a local cluster.
		if _, err := admin.ImportKeystore(filepath.Join(d, "keystore.json"), pw, k, true); err != nil {
			return false, fmt.Errorf("compose init: %s keystore: %w", name, err)
		}
		gkeys = append(gkeys, k)
		cl.Guardians[name] = crypto.PubkeyToAddress(k.PublicKey)
	}
	cred, err := agentauth.NewCredential(ComposeAgentID)
	if err != nil {
		return false, err
	}
	doc, signed, err := samplePolicy(o.ChainID, cred, gkeys[0], gkeys[1])
	if err != nil {
		return false, err
	}
	cl.WalletID = doc.Hash()

	for _, name := range ComposeMembers {
		opts := node.InitOptions{Role: composeRole(name), Listen: []string{fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", ComposeNodePort)}, GenesisHash: cl.WalletID}
		switch opts.Role {
		case ids.RoleAgent:
			opts.Agent = ComposeAgentID
		case ids.RoleGuardian:
			opts.Guardian = cl.Guardians[name]
		}
		cfg, _, err := node.Init(filepath.Join(o.Dir, name), opts)
		if err != nil {
			return false, fmt.Errorf("compose init: %s: %w", name, err)
		}
		cl.Nodes[name] = ComposeMember{ID: ids.MemberID(cfg.Members[0].PeerID), Role: opts.Role}
	}
	var members []coordinator.MemberConf
	for _, name := range ComposeMembers {
		m := cl.Nodes[name]
		members = append(members, coordinator.MemberConf{ID: string(m.ID), Role: string(m.Role), Addrs: []string{composeAddr(name, ComposeNodePort)}})
	}
	res, err := coordinator.Init(coordDir, coordinator.InitOptions{
		Listen: []string{fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", ComposeCoordinatorPort)}, HTTPListen: fmt.Sprintf("0.0.0.0:%d", ComposeHTTPPort),
		Members: members, GenesisHash: cl.WalletID.Hex(),
		ChainRPCURL: fmt.Sprintf("http://devchain:%d", ComposeChainPort), ChainID: o.ChainID,
	})
	if err != nil {
		return false, err
	}
	if len(res.Missing) > 0 {
		return false, fmt.Errorf("compose init: coordinator configuration lacks %s", strings.Join(res.Missing, ", "))
	}
	cl.Coordinator = res.PeerID.String()
	for _, name := range ComposeMembers {
		if err := writeComposeNodeConfig(o.Dir, cl, name); err != nil {
			return false, err
		}
	}

	files := map[string][]byte{}
	sb, err := json.MarshalIndent(signed, "", "  ")
	if err != nil {
		return false, err
	}
	files["policy.json"] = append(sb, '\n')
	files["policy.yaml"] = []byte(signed.Source)
	cb, err := json.MarshalIndent(cl, "", "  ")
	if err != nil {
		return false, err
	}
	files[ComposeClusterFile] = append(cb, '\n')
	if o.Out != "" {
		if err := os.MkdirAll(o.Out, 0o700); err != nil {
			return false, err
		}
		if err := writeCredential(filepath.Join(o.Out, "agent.json"), cred); err != nil {
			return false, err
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(o.Out, name), b, 0o600); err != nil {
				return false, err
			}
		}
	}
	// cluster.json last: its presence says the layout is complete.
	for _, name := range []string{"policy.json", "policy.yaml", ComposeClusterFile} {
		if err := os.WriteFile(filepath.Join(coordDir, name), files[name], 0o600); err != nil {
			return false, err
		}
	}
	return true, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writeComposeNodeConfig replaces node init's starter configuration with
// the compose cluster's.
func writeComposeNodeConfig(root string, cl ComposeCluster, name string) error {
	role := composeRole(name)
	cfg := node.Config{
		Role:         string(role),
		DataDir:      "data",
		IdentityFile: "identity.key",
		Listen:       []string{fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", ComposeNodePort)},
		Coordinators: []node.PeerConfig{{PeerID: cl.Coordinator, Addrs: []string{composeAddr(ServiceCoordinator, ComposeCoordinatorPort)}}},
		Admin:        node.AdminConfig{Socket: "admin.sock"},
		StoreKey:     node.StoreKeyConfig{File: "store.key"},
		Genesis:      node.GenesisConfig{Hash: cl.WalletID.Hex()},
		Pool:         node.PoolConfig{Target: 1, Concurrency: 1},
		Log:          node.LogConfig{Level: "info", Format: "text"},
	}
	for _, m := range ComposeMembers {
		cfg.Members = append(cfg.Members, node.PeerConfig{PeerID: string(cl.Nodes[m].ID), Addrs: []string{composeAddr(m, ComposeNodePort)}, Role: string(composeRole(m))})
	}
	switch role {
	case ids.RoleAgent:
		cfg.Agent = string(ComposeAgentID)
	case ids.RoleGuardian:
		cfg.Guardian = cl.Guardians[name].Hex()
	}
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		return err
	}
	head := fmt.Sprintf("# Custos compose node %s (role %s), written by custos compose init: a local cluster.\n", name, role)
	return os.WriteFile(filepath.Join(root, name, node.ConfigFile), append([]byte(head), b...), 0o600)
}

// ComposeSetupOptions configure compose setup.
type ComposeSetupOptions struct {
	URL       string // the coordinator's REST API
	TokenFile string // its operator token
	Dir       string // the coordinator's volume: cluster.json, policy.json
	ChainRPC  string // the dev chain, to fund the keys from dev account 0
	Out       io.Writer
}

// ComposeKeys is what compose setup made.
type ComposeKeys struct {
	Hot   api.Key `json:"hot"`
	Vault api.Key `json:"vault"`
}

// The compose keys' committees: as custos dev's.
var (
	ComposeHotCommittee   = hotCommittee
	ComposeVaultCommittee = vaultCommittee
)

// ComposeSetup pushes the signed policy, makes the hot and the vault key
// (or finds them made by an earlier run) and funds each once from dev
// account 0; it writes keys.json in Dir.
func ComposeSetup(ctx context.Context, o ComposeSetupOptions) (*ComposeKeys, error) {
	out := &lineWriter{w: o.Out}
	if o.Out == nil {
		out.w = io.Discard
	}
	var cl ComposeCluster
	b, err := os.ReadFile(filepath.Join(o.Dir, ComposeClusterFile))
	if err != nil {
		return nil, fmt.Errorf("compose setup: %w (run compose init first)", err)
	}
	if err := json.Unmarshal(b, &cl); err != nil {
		return nil, fmt.Errorf("compose setup: %s: %w", ComposeClusterFile, err)
	}
	doc, err := readSignedPolicy(filepath.Join(o.Dir, "policy.json"))
	if err != nil {
		return nil, fmt.Errorf("compose setup: %w", err)
	}
	tok, err := os.ReadFile(o.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("compose setup: operator token: %w", err)
	}
	rest, err := client.New(o.URL, client.Options{Token: strings.TrimSpace(string(tok))})
	if err != nil {
		return nil, err
	}
	eth, err := ethclient.DialContext(ctx, o.ChainRPC)
	if err != nil {
		return nil, fmt.Errorf("compose setup: dev chain: %w", err)
	}
	defer eth.Close()

	// The policy: every member of the two keys must hold it (agent-2, the
	// spare, gets it when it joins).
	need := map[ids.MemberID]string{}
	for _, n := range ComposeVaultCommittee {
		need[cl.Nodes[n].ID] = n
	}
	if err := composePushPolicy(ctx, rest, doc, need, out); err != nil {
		return nil, err
	}
	keys := &ComposeKeys{}
	existing, err := rest.Keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("compose setup: keys: %w", err)
	}
	for _, k := range []struct {
		name      string
		committee []string
		threshold int
		dst       *api.Key
		fund      *big.Int
	}{
		{"hot", ComposeHotCommittee, hotThreshold, &keys.Hot, HotFunding},
		{"vault", ComposeVaultCommittee, vaultThreshold, &keys.Vault, VaultFunding},
	} {
		var committee []api.CommitteeMember
		for _, n := range k.committee {
			committee = append(committee, api.CommitteeMember{ID: cl.Nodes[n].ID, Role: cl.Nodes[n].Role})
		}
		if found, ok := findKey(existing, committee, k.threshold); ok {
			*k.dst = found
			out.printf("The %s key exists: %s.", k.name, found.Address.Hex())
		} else {
			out.printf("Creating the %s key (%s, threshold %d).", k.name, strings.Join(k.committee, ", "), k.threshold)
			op, err := rest.CreateKey(ctx, api.CreateKey{Committee: committee, Threshold: k.threshold})
			if err != nil {
				return nil, fmt.Errorf("compose setup: %s key: %w", k.name, err)
			}
			phase := ""
			op, err = rest.WaitOperation(ctx, op.ID, 500*time.Millisecond, func(op *api.Operation) {
				if op.Phase != phase && op.Phase != "" {
					phase = op.Phase
					out.printf("  %s key: %s", k.name, describePhase(op.Phase))
				}
			})
			if err != nil {
				return nil, fmt.Errorf("compose setup: %s key: %w", k.name, err)
			}
			if op.State != api.OpDone || op.Key == nil {
				return nil, fmt.Errorf("compose setup: %s key: operation %s ended %s: %s", k.name, op.ID, op.State, op.Error)
			}
			*k.dst = *op.Key
			out.printf("The %s key is %s (guardian floor %d).", k.name, op.Key.Address.Hex(), op.Key.GuardianFloor)
		}
		if err := composeFund(ctx, eth, k.dst.Address, k.fund); err != nil {
			return nil, fmt.Errorf("compose setup: fund the %s key: %w", k.name, err)
		}
	}
	kb, err := json.MarshalIndent(keys, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "keys.json"), append(kb, '\n'), 0o600); err != nil {
		return nil, err
	}
	return keys, nil
}

func findKey(keys []api.Key, committee []api.CommitteeMember, threshold int) (api.Key, bool) {
	for _, k := range keys {
		if k.Threshold != threshold || len(k.Committee.Members) != len(committee) {
			continue
		}
		in := map[ids.MemberID]bool{}
		for _, m := range k.Committee.Members {
			in[m.ID] = true
		}
		same := true
		for _, m := range committee {
			if !in[m.ID] {
				same = false
			}
		}
		if same {
			return k, true
		}
	}
	return api.Key{}, false
}

func composePushPolicy(ctx context.Context, rest *client.Client, doc api.PolicyDocument, need map[ids.MemberID]string, out *lineWriter) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	last := ""
	for {
		if h, err := rest.Health(ctx); err == nil {
			on := 0
			for _, m := range h.Members {
				if _, ok := need[m.ID]; ok && m.Reachable && m.PolicyVersion >= 1 {
					on++
				}
			}
			if on == len(need) {
				out.printf("The signed policy is in force on %d members.", on)
				return nil
			}
		}
		p, err := rest.ProposePolicy(ctx, doc)
		if err != nil {
			last = err.Error()
		} else {
			var missing []string
			for _, m := range p.Members {
				if !m.Accepted {
					missing = append(missing, fmt.Sprintf("%s (%s: %s)", need[m.Member], m.RuleID, m.Reason))
				}
			}
			last = "not taken by " + strings.Join(missing, ", ")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("compose setup: push the policy: %s", last)
		case <-time.After(time.Second):
		}
	}
}

// composeFund sends amount from dev account 0 to a key that holds less
// than amount, and waits until it is mined.
func composeFund(ctx context.Context, eth *ethclient.Client, to common.Address, amount *big.Int) error {
	bal, err := eth.BalanceAt(ctx, to, nil)
	if err != nil {
		return err
	}
	if bal.Cmp(amount) >= 0 {
		return nil
	}
	from, err := devchain.DevAccount(0)
	if err != nil {
		return err
	}
	chainID, err := eth.ChainID(ctx)
	if err != nil {
		return err
	}
	nonce, err := eth.PendingNonceAt(ctx, from.Address)
	if err != nil {
		return err
	}
	h, err := eth.HeaderByNumber(ctx, nil)
	if err != nil {
		return err
	}
	tip := big.NewInt(1_000_000_000)
	feeCap := new(big.Int).Add(new(big.Int).Mul(h.BaseFee, big.NewInt(2)), tip)
	tx, err := types.SignNewTx(from.Key, types.LatestSignerForChainID(chainID), &types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, To: &to, Value: amount, Gas: 21000, GasFeeCap: feeCap, GasTipCap: tip})
	if err != nil {
		return err
	}
	if err := eth.SendTransaction(ctx, tx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		r, err := eth.TransactionReceipt(ctx, tx.Hash())
		if err == nil {
			if r.Status != types.ReceiptStatusSuccessful {
				return fmt.Errorf("transaction %s failed", tx.Hash().Hex())
			}
			return nil
		}
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return fmt.Errorf("transaction %s not mined: %w", tx.Hash().Hex(), ctx.Err())
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}
