package cli

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
	"sort"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agent/mcp"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

func init() {
	register(&Command{
		Name:    "session",
		Summary: "session grants: an agent's request for one, a guardian's signature pushing it, its revocation, the grants held (request, grant, revoke, list)",
		Run:     runSession,
	})
}

// maxGrantFile bounds a grant file read.
const maxGrantFile = 64 << 10

func runSession(ctx context.Context, env *Env, args []string) error {
	sub, rest, err := Subcommand("session", args, "request", "grant", "revoke", "list")
	if err != nil {
		return err
	}
	switch sub {
	case "request":
		return sessionRequest(ctx, env, rest)
	case "grant":
		return sessionGrant(ctx, env, rest)
	case "revoke":
		return sessionRevoke(ctx, env, rest)
	}
	return sessionList(env, rest)
}

// parseWei reads "0.01ether", "2 gwei" or a plain number of wei.
func parseWei(s string) (*big.Int, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	for _, u := range []struct {
		suffix   string
		decimals int
	}{{"ether", 18}, {"eth", 18}, {"gwei", 9}, {"wei", 0}} {
		if n, ok := strings.CutSuffix(t, u.suffix); ok {
			return mcp.ParseUnits(strings.TrimSpace(n), u.decimals)
		}
	}
	return mcp.ParseUnits(t, 0)
}

func amountFlag(name, s string) (*api.Amount, error) {
	if s == "" {
		return nil, nil
	}
	v, err := parseWei(s)
	if err != nil {
		return nil, Usagef("--%s: %v", name, err)
	}
	a := &api.Amount{}
	a.Set(v)
	return a, nil
}

func tokenAmountFlag(name, s string) (*api.Amount, error) {
	if s == "" {
		return nil, nil
	}
	v, err := mcp.ParseUnits(s, 0)
	if err != nil {
		return nil, Usagef("--%s (base units of the token): %v", name, err)
	}
	a := &api.Amount{}
	a.Set(v)
	return a, nil
}

func sessionRequest(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "session request", "session request --key KEY --for 2h [--to A,B] [--value-per-tx 0.01ether] [--value-total 0.1ether] [--erc20 ADDR --amount-per-tx N --amount-total N] [--selectors 0xa9059cbb,...] [--max-count N] [--chain-id N] [--out FILE] [--json]")
	rf := addRESTFlags(fs)
	credFile := fs.String("credential", "", "the agent credential file (default $"+EnvAgentCredential+" or "+defaultCredential+"): the grant is for its agent")
	key := fs.String("key", "", "the key the grant covers (key:0x… or its address)")
	dur := fs.Duration("for", time.Hour, "how long the grant lasts from now")
	to := fs.String("to", "", "comma-separated destinations (and recipients) the grant allows")
	vpt := fs.String("value-per-tx", "", "ether per transaction, e.g. 0.01ether")
	vt := fs.String("value-total", "", "ether in total over the grant")
	tok := fs.String("erc20", "", "the one ERC-20 token (address) the grant may move")
	apt := fs.String("amount-per-tx", "", "token base units per transaction")
	at := fs.String("amount-total", "", "token base units in total")
	sels := fs.String("selectors", "", "comma-separated 4-byte selectors that may be called (none: plain transfers only)")
	maxCount := fs.Uint64("max-count", 0, "the most requests over the grant's life")
	chainID := fs.Uint64("chain-id", 0, "the only chain the grant covers")
	out := fs.String("out", "", "write the proposal here (default: stdout)")
	if pos, err := parseAll(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return Usagef("session request takes no arguments, got %q", pos)
	}
	if *key == "" {
		return Usagef("session request needs --key")
	}
	k, err := ids.ParseKeyID(*key)
	if err != nil {
		return Usagef("--key: %v", err)
	}
	if *dur <= 0 || *dur > api.MaxExpiry {
		return Usagef("--for %v: between 0 and %v", *dur, api.MaxExpiry)
	}
	cred, err := LoadCredential(firstNonEmpty(*credFile, env.Getenv(EnvAgentCredential), defaultCredential))
	if err != nil {
		return err
	}
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	now := time.Now().UTC().Truncate(time.Second)
	g := api.Grant{ID: "sess-" + hex.EncodeToString(idb[:]), Agent: cred.Agent(), Key: common.Address(k), NotBefore: now, Expiry: now.Add(*dur),
		MaxCount: *maxCount, ChainID: *chainID}
	if g.ValuePerTx, err = amountFlag("value-per-tx", *vpt); err != nil {
		return err
	}
	if g.ValueTotal, err = amountFlag("value-total", *vt); err != nil {
		return err
	}
	if g.AmountPerTx, err = tokenAmountFlag("amount-per-tx", *apt); err != nil {
		return err
	}
	if g.AmountTotal, err = tokenAmountFlag("amount-total", *at); err != nil {
		return err
	}
	if *tok != "" {
		a, err := ids.ParseAddress(*tok)
		if err != nil {
			return Usagef("--erc20: %v", err)
		}
		g.Token = &a
	}
	for _, s := range strings.Split(*to, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		a, err := ids.ParseAddress(s)
		if err != nil {
			return Usagef("--to: %v", err)
		}
		g.Destinations = append(g.Destinations, a)
	}
	for _, s := range strings.Split(*sels, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		b, err := hexutil.Decode(s)
		if err != nil || len(b) != 4 {
			return Usagef("--selectors: %q is not a 4-byte 0x-hex selector", s)
		}
		g.Selectors = append(g.Selectors, b)
	}
	// The proposal must be a grant the policy can read, signature aside.
	probe := g
	probe.Signature = make(hexutil.Bytes, 65)
	sg, err := probe.Policy()
	if err != nil {
		return fmt.Errorf("session request: %w", err)
	}
	cl, err := rf.client(env, client.Options{Agent: cred})
	if err != nil {
		return err
	}
	p, err := cl.Policy(ctx)
	if err != nil {
		return fmt.Errorf("session request: read the policy (for the wallet id the guardian signs under): %w", err)
	}
	digest, _, err := apitypes.TypedDataAndHash(sg.Grant.TypedData(p.WalletID))
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out == "" {
		_, err = env.Stdout.Write(b)
		return err
	}
	if err := writeNew(*out, b); err != nil {
		return err
	}
	if *rf.json {
		return PrintJSON(env.Stdout, map[string]any{"grant": g, "file": *out, "digest": hexutil.Encode(digest)})
	}
	fmt.Fprintf(env.Stdout, "wrote %s: grant %s for agent %s on key %s until %s\n", *out, g.ID, g.Agent, g.Key.Hex(), g.Expiry.Format(time.RFC3339))
	fmt.Fprintf(env.Stdout, "EIP-712 digest a guardian signs: %s (wallet %s)\nA guardian signs and pushes it with: custos session grant %s --wallet-id %s --keystore FILE --password-file FILE\n", hexutil.Encode(digest), p.WalletID.Hex(), *out, p.WalletID.Hex())
	return nil
}

// writeNew writes a file that must not exist yet, readable by its owner.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func readGrant(path string) (*api.Grant, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxGrantFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxGrantFile {
		return nil, fmt.Errorf("grant %s: larger than %d bytes", path, maxGrantFile)
	}
	var g api.Grant
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil {
		return nil, fmt.Errorf("grant %s: %w", path, err)
	}
	return &g, nil
}

func sessionGrant(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "session grant", "session grant FILE --keystore FILE --password-file FILE [--wallet-id HASH | --token TOKEN | --credential FILE] [--json]")
	rf := addRESTFlags(fs)
	ks := fs.String("keystore", "", "the guardian's identity keystore (go-ethereum JSON)")
	pw := fs.String("password-file", "", "the keystore's password file")
	walletFlag := fs.String("wallet-id", "", "the wallet id (genesis document hash) the grant is signed under; default read from the coordinator's policy, which needs --token or --credential")
	credFile := fs.String("credential", "", "read the policy as this agent instead of with an operator token")
	pos, err := parseAll(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *ks == "" || *pw == "" {
		return Usagef("session grant needs the proposal file, --keystore and --password-file")
	}
	g, err := readGrant(pos[0])
	if err != nil {
		return err
	}
	password, err := admin.ReadPassword(*pw)
	if err != nil {
		return err
	}
	kb, err := os.ReadFile(*ks)
	if err != nil {
		return fmt.Errorf("keystore: %w", err)
	}
	key, err := keystore.DecryptKey(kb, password)
	if err != nil {
		return fmt.Errorf("keystore %s: %w", *ks, err)
	}
	var opts client.Options
	if *credFile != "" {
		if opts.Agent, err = LoadCredential(*credFile); err != nil {
			return err
		}
	}
	cl, err := rf.client(env, opts)
	if err != nil {
		return err
	}
	var wallet common.Hash
	if *walletFlag != "" {
		b, err := hexutil.Decode(*walletFlag)
		if err != nil || len(b) != 32 {
			return Usagef("--wallet-id %q is not a 32-byte 0x-hex hash", *walletFlag)
		}
		wallet = common.BytesToHash(b)
	} else {
		p, err := cl.Policy(ctx)
		if err != nil {
			return fmt.Errorf("session grant: read the policy for its wallet id (or give --wallet-id): %w", err)
		}
		wallet = p.WalletID
	}
	g.Signature = make(hexutil.Bytes, 65)
	sg, err := g.Policy()
	if err != nil {
		return fmt.Errorf("session grant %s: %w", pos[0], err)
	}
	sig, err := policy.SignTypedData(key.PrivateKey, sg.Grant.TypedData(wallet))
	if err != nil {
		return err
	}
	g.Signature = sig
	pushed, err := cl.Grant(ctx, *g)
	if err != nil {
		return fmt.Errorf("session grant %s: %w", g.ID, err)
	}
	signed, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(pos[0], append(signed, '\n'), 0o600); err != nil {
		return err
	}
	if *rf.json {
		return PrintJSON(env.Stdout, map[string]any{"grant": g, "pushed": pushed})
	}
	fmt.Fprintf(env.Stdout, "signed grant %s as %s and pushed it; %s now holds the signed grant (custos agent --grant %s)\n", g.ID, key.Address.Hex(), pos[0], pos[0])
	refused := 0
	for _, m := range pushed.Members {
		state := "accepted"
		if !m.Accepted {
			state, refused = "refused ("+m.RuleID+"): "+m.Reason, refused+1
		}
		fmt.Fprintf(env.Stdout, "  %s %s\n", m.Member, state)
	}
	if refused > 0 {
		return fmt.Errorf("session grant %s: %d member(s) refused it", g.ID, refused)
	}
	return nil
}

// signRevocation is a guardian's signed revocation of grant id under the
// wallet wallet, issued at issued (whole seconds: the typed data carries
// Unix seconds).
func signRevocation(key *ecdsa.PrivateKey, wallet common.Hash, id string, issued time.Time) (api.Revocation, error) {
	r := api.Revocation{GrantID: id, Issued: issued.UTC().Truncate(time.Second), Signature: make(hexutil.Bytes, 65)}
	pr, _, err := r.Policy()
	if err != nil {
		return api.Revocation{}, err
	}
	sig, err := policy.SignTypedData(key, pr.TypedData(wallet))
	if err != nil {
		return api.Revocation{}, err
	}
	r.Signature = sig
	return r, nil
}

func sessionRevoke(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "session revoke", "session revoke GRANT_ID --keystore FILE --password-file FILE [--wallet-id HASH | --token TOKEN | --credential FILE] [--url URL] [--json]")
	rf := addRESTFlags(fs)
	ks := fs.String("keystore", "", "the guardian's identity keystore (go-ethereum JSON)")
	pw := fs.String("password-file", "", "the keystore's password file")
	walletFlag := fs.String("wallet-id", "", "the wallet id (genesis document hash) the revocation is signed under; default read from the coordinator's policy, which needs --token or --credential")
	credFile := fs.String("credential", "", "read the policy as this agent instead of with an operator token")
	pos, err := parseAll(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *ks == "" || *pw == "" {
		return Usagef("session revoke needs the grant id, --keystore and --password-file")
	}
	id := pos[0]
	if id == "" {
		return Usagef("session revoke: the grant id is empty")
	}
	var wallet common.Hash
	if *walletFlag != "" {
		b, err := hexutil.Decode(*walletFlag)
		if err != nil || len(b) != 32 {
			return Usagef("--wallet-id %q is not a 32-byte 0x-hex hash", *walletFlag)
		}
		wallet = common.BytesToHash(b)
	}
	password, err := admin.ReadPassword(*pw)
	if err != nil {
		return err
	}
	kb, err := os.ReadFile(*ks)
	if err != nil {
		return fmt.Errorf("keystore: %w", err)
	}
	key, err := keystore.DecryptKey(kb, password)
	if err != nil {
		return fmt.Errorf("keystore %s: %w", *ks, err)
	}
	var opts client.Options
	if *credFile != "" {
		if opts.Agent, err = LoadCredential(*credFile); err != nil {
			return err
		}
	}
	cl, err := rf.client(env, opts)
	if err != nil {
		return err
	}
	if *walletFlag == "" {
		p, err := cl.Policy(ctx)
		if err != nil {
			return fmt.Errorf("session revoke: read the policy for its wallet id (or give --wallet-id): %w", err)
		}
		wallet = p.WalletID
	}
	r, err := signRevocation(key.PrivateKey, wallet, id, time.Now())
	if err != nil {
		return fmt.Errorf("session revoke %s: %w", id, err)
	}
	pushed, err := cl.Revoke(ctx, r)
	if err != nil {
		return fmt.Errorf("session revoke %s: %w", id, err)
	}
	if *rf.json {
		return PrintJSON(env.Stdout, map[string]any{"revocation": r, "pushed": pushed})
	}
	fmt.Fprintf(env.Stdout, "revoked grant %s as %s and pushed the revocation\n", id, key.Address.Hex())
	refused := 0
	for _, m := range pushed.Members {
		state := "accepted"
		if !m.Accepted {
			state, refused = "refused ("+m.RuleID+"): "+m.Reason, refused+1
		}
		fmt.Fprintf(env.Stdout, "  %s %s\n", m.Member, state)
	}
	if refused > 0 {
		return fmt.Errorf("session revoke %s: %d member(s) refused it", id, refused)
	}
	return nil
}

func sessionList(env *Env, args []string) error {
	fs := NewFlags(env, "session list", "session list [FILE|DIR ...] [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseAll(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		pos = []string{"."}
	}
	var files []string
	for _, p := range pos {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		m, _ := filepath.Glob(filepath.Join(p, "*.json"))
		files = append(files, m...)
	}
	sort.Strings(files)
	type row struct {
		File   string    `json:"file"`
		ID     string    `json:"id"`
		Agent  string    `json:"agent"`
		Key    string    `json:"key"`
		Expiry time.Time `json:"expiry"`
		State  string    `json:"state"`
	}
	var rows []row
	now := time.Now()
	for _, f := range files {
		g, err := readGrant(f)
		if err != nil {
			if len(pos) == 1 && pos[0] == f {
				return err
			}
			continue // a directory may hold other JSON files
		}
		if g.ID == "" {
			continue
		}
		st := "active"
		switch {
		case len(g.Signature) == 0:
			st = "unsigned (a guardian runs custos session grant)"
		case now.After(g.Expiry):
			st = "expired"
		case now.Before(g.NotBefore):
			st = "not yet valid"
		}
		rows = append(rows, row{f, g.ID, string(g.Agent), g.Key.Hex(), g.Expiry, st})
	}
	if *asJSON {
		if rows == nil {
			rows = []row{}
		}
		return PrintJSON(env.Stdout, rows)
	}
	if len(rows) == 0 {
		return errors.New("no grant files found")
	}
	for _, r := range rows {
		fmt.Fprintf(env.Stdout, "%-22s agent %-10s key %s until %s  %s  (%s)\n", r.ID, r.Agent, r.Key, r.Expiry.Format(time.RFC3339), r.State, r.File)
	}
	return nil
}
