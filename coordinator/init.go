package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/custos-wallet/custos/p2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// InitOptions are what `custos coordinator init` writes into a starter
// configuration.
type InitOptions struct {
	// Listen are the libp2p listen addresses (default
	// /ip4/0.0.0.0/tcp/4100).
	Listen []string
	// HTTPListen is the REST API's address (default 127.0.0.1:8080).
	HTTPListen string
	// Members are the nodes, if known already.
	Members []MemberConf
	// GenesisHash pins the wallet's genesis policy document.
	GenesisHash string
	// ChainRPCURL and ChainID: the chain to broadcast to.
	ChainRPCURL string
	ChainID     uint64
}

// InitResult is what Init wrote.
type InitResult struct {
	Config    string  `json:"config"`
	PeerID    peer.ID `json:"peer_id"`
	TokenFile string  `json:"token_file"`
	// Missing names what the configuration still needs before
	// `custos coordinator --config` accepts it.
	Missing []string `json:"missing,omitempty"`
}

// Init writes a starter configuration into dir: coordinator.yaml, a new
// libp2p identity, a store key file and an operator token file (each
// 0600). It refuses to overwrite an existing coordinator.yaml.
func Init(dir string, opts InitOptions) (*InitResult, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("coordinator init: %w", err)
	}
	cfgPath := filepath.Join(dir, "coordinator.yaml")
	if _, err := os.Stat(cfgPath); err == nil {
		return nil, fmt.Errorf("coordinator init: %s exists; remove it first", cfgPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("coordinator init: %w", err)
	}
	key, err := p2p.LoadOrCreateIdentity(filepath.Join(dir, "identity.key"))
	if err != nil {
		return nil, fmt.Errorf("coordinator init: identity: %w", err)
	}
	pid, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("coordinator init: %w", err)
	}
	if err := writeSecret(filepath.Join(dir, "store.key"), 32); err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(dir, "operator.token")
	if err := writeSecret(tokenFile, 24); err != nil {
		return nil, err
	}
	if len(opts.Listen) == 0 {
		opts.Listen = []string{"/ip4/0.0.0.0/tcp/4100"}
	}
	if opts.HTTPListen == "" {
		opts.HTTPListen = DefaultHTTPListen
	}
	var b strings.Builder
	b.WriteString("# Custos coordinator. It holds no share: availability only.\n")
	b.WriteString("data_dir: data\nstore_key: {file: store.key}\nidentity: identity.key\n")
	fmt.Fprintf(&b, "listen: [%s]\n", quoteList(opts.Listen))
	fmt.Fprintf(&b, "http: {listen: %q}\n", opts.HTTPListen)
	var missing []string
	if len(opts.Members) == 0 {
		b.WriteString("members: []  # each node: {id: <peer id>, role: agent|policy|guardian, addrs: [<multiaddr>]}\n")
		missing = append(missing, "members")
	} else {
		b.WriteString("members:\n")
		for _, m := range opts.Members {
			fmt.Fprintf(&b, "  - {id: %s, role: %s, addrs: [%s]}\n", m.ID, m.Role, quoteList(m.Addrs))
		}
	}
	b.WriteString("operators:\n  - {name: operator, token_file: operator.token}\n")
	if opts.ChainRPCURL != "" || opts.ChainID != 0 {
		fmt.Fprintf(&b, "chain: {rpc_url: %q, chain_id: %d}\n", opts.ChainRPCURL, opts.ChainID)
	}
	if opts.GenesisHash != "" {
		fmt.Fprintf(&b, "policy: {genesis_hash: %q}\n", opts.GenesisHash)
	} else {
		b.WriteString("policy: {genesis_hash: \"\"}  # the genesis policy document's hash, or {guardians: [...], quorum: N}\n")
		missing = append(missing, "policy.genesis_hash")
	}
	b.WriteString("timeouts: {propose: 15s, session: 2m, keygen: 15m, probe: 3s, unreachable: 15s}\nlog_level: info\n")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o600); err != nil {
		return nil, fmt.Errorf("coordinator init: %w", err)
	}
	return &InitResult{Config: cfgPath, PeerID: pid, TokenFile: tokenFile, Missing: missing}, nil
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// writeSecret writes n random bytes as hex to path (0600), never over an
// existing file.
func writeSecret(path string, n int) error {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("coordinator init: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(b) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("coordinator init: %w", err)
	}
	return f.Close()
}
