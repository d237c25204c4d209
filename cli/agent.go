package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agent/mcp"
	"github.com/custos-wallet/custos/agent/rpc"
	"github.com/custos-wallet/custos/agent/sidecar"
	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

// Environment variables of `custos agent`.
const (
	EnvAgentCredential = "CUSTOS_AGENT_CREDENTIAL" // the agent credential file
	EnvChainRPC        = "CUSTOS_CHAIN_RPC"        // the chain's JSON-RPC URL (upstream)
	EnvMCPToken        = "CUSTOS_MCP_TOKEN"        // the MCP HTTP bearer token
	defaultCredential  = "custos-agent.json"
	defaultMCPListen   = "127.0.0.1:8547"
)

func init() {
	register(&Command{
		Name:    "agent",
		Summary: "the agent sidecar: JSON-RPC wallet, MCP server and x402 payments (init, mcp, pay)",
		Run:     runAgent,
	})
}

const agentUsage = `agent [flags]            run the sidecar: JSON-RPC on --listen, MCP over HTTP on --mcp-listen
       agent init --agent ID [--out FILE]   make a credential and print its public key
       agent mcp [flags]        serve MCP over stdio (for agent hosts that spawn it)
       agent pay URL [flags]    fetch URL, paying an x402 price under the policy`

func runAgent(ctx context.Context, env *Env, args []string) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "init":
			return agentInit(env, args[1:])
		case "mcp":
			return agentMCP(ctx, env, args[1:])
		case "pay":
			return agentPay(ctx, env, args[1:])
		case "run":
			args = args[1:]
		default:
			return Usagef("unknown agent subcommand %q (want init, mcp, pay, or flags to run the sidecar)", args[0])
		}
	}
	return agentRun(ctx, env, args)
}

func agentInit(env *Env, args []string) error {
	fs := NewFlags(env, "agent init", "agent init --agent ID [--out FILE] [--json]")
	agent := fs.String("agent", "", "the agent's id, as the policy's agent registry will name it")
	out := fs.String("out", "", "the credential file to write, mode 0600 (default $"+EnvAgentCredential+" or "+defaultCredential+")")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseAll(fs, args); err != nil {
		return err
	}
	if *agent == "" {
		return Usagef("agent init needs --agent")
	}
	a, err := ids.ParseAgentID(*agent)
	if err != nil {
		return Usagef("--agent: %v", err)
	}
	path := firstNonEmpty(*out, env.Getenv(EnvAgentCredential), defaultCredential)
	c, err := agentauth.NewCredential(a)
	if err != nil {
		return err
	}
	if err := WriteCredential(path, c); err != nil {
		return err
	}
	pub := agentauth.FormatPublicKey(c.Public())
	if *asJSON {
		return PrintJSON(env.Stdout, map[string]string{"agent": string(a), "public_key": pub, "credential": path})
	}
	fmt.Fprintf(env.Stdout, "wrote %s (keep it private: it signs every request of agent %s)\n\n", path, a)
	fmt.Fprintf(env.Stdout, "Ask your guardians to add the agent to the policy's registry:\n\n  agents:\n    %s: \"%s\"\n", a, pub)
	return nil
}

// agentFlags are the flags of the sidecar and its subcommands.
type agentFlags struct {
	rest       *restFlags
	credential *string
	upstream   *string
	keys       *string
	wait       *time.Duration
	expiry     *time.Duration
	grant      *string
	logLevel   *string
}

func addAgentFlags(fs *flag.FlagSet) *agentFlags {
	return &agentFlags{
		rest:       addRESTFlags(fs),
		credential: fs.String("credential", "", "the agent credential file (default $"+EnvAgentCredential+" or "+defaultCredential+")"),
		upstream:   fs.String("upstream", "", "the chain's JSON-RPC URL (default $"+EnvChainRPC+")"),
		keys:       fs.String("keys", "", "comma-separated keys to sign with (key:0x… or addresses; default every key the coordinator lists)"),
		wait:       fs.Duration("wait", sidecar.DefaultWait, "how long a signing call waits for a guardian before answering with the request id"),
		expiry:     fs.Duration("expiry", sidecar.DefaultExpiry, "how long each request stays valid for guardians to approve"),
		grant:      fs.String("grant", "", "a guardian-signed session grant file (custos session grant) to present with every request"),
		logLevel:   fs.String("log-level", "info", "debug, info, warn or error"),
	}
}

// wallet builds the sidecar's Wallet from the flags.
func (f *agentFlags) wallet(env *Env, log *slog.Logger) (*sidecar.Wallet, error) {
	cred, err := LoadCredential(firstNonEmpty(*f.credential, env.Getenv(EnvAgentCredential), defaultCredential))
	if err != nil {
		return nil, err
	}
	cl, err := f.rest.client(env, client.Options{Agent: cred})
	if err != nil {
		return nil, err
	}
	var keys []ids.KeyID
	for _, k := range strings.Split(*f.keys, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		id, err := ids.ParseKeyID(k)
		if err != nil {
			return nil, Usagef("--keys: %v", err)
		}
		keys = append(keys, id)
	}
	var grant json.RawMessage
	if *f.grant != "" {
		g, err := readGrant(*f.grant)
		if err != nil {
			return nil, err
		}
		if len(g.Signature) == 0 {
			return nil, fmt.Errorf("--grant %s: the grant is not signed yet (a guardian runs custos session grant)", *f.grant)
		}
		if g.Agent != cred.Agent() {
			return nil, fmt.Errorf("--grant %s: the grant is for agent %s, the credential is %s's", *f.grant, g.Agent, cred.Agent())
		}
		if grant, err = json.Marshal(g); err != nil {
			return nil, err
		}
	}
	return sidecar.New(sidecar.Config{Client: cl, Credential: cred, Keys: keys, Wait: *f.wait, Expiry: *f.expiry, Grant: grant, Logger: log})
}

func (f *agentFlags) upstreamURL(env *Env) (string, error) {
	u := firstNonEmpty(*f.upstream, env.Getenv(EnvChainRPC))
	if u == "" {
		return "", Usagef("the sidecar needs the chain's JSON-RPC URL: --upstream or $%s", EnvChainRPC)
	}
	return u, nil
}

func (f *agentFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*f.logLevel)); err != nil {
		return nil, Usagef("--log-level: %v", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func agentRun(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "agent", agentUsage)
	af := addAgentFlags(fs)
	listen := fs.String("listen", rpc.DefaultListen, "the JSON-RPC endpoint's loopback address")
	mcpListen := fs.String("mcp-listen", defaultMCPListen, "the MCP streamable-HTTP loopback address (empty: no MCP over HTTP)")
	mcpTokenFile := fs.String("mcp-token-file", "", "file holding the MCP bearer token; created with a fresh token if missing (default $"+EnvMCPToken+", else a fresh token printed once)")
	txObject := fs.Bool("sign-tx-object", false, "eth_signTransaction answers go-ethereum's {raw, tx} object instead of raw hex")
	if pos, err := parseAll(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return Usagef("agent takes no arguments, got %q", pos)
	}
	log, err := af.logger(env.Stderr)
	if err != nil {
		return err
	}
	up, err := af.upstreamURL(env)
	if err != nil {
		return err
	}
	wl, err := af.wallet(env, log)
	if err != nil {
		return err
	}
	ep, err := rpc.Start(ctx, rpc.Config{Upstream: up, Wallet: wl, Listen: *listen, SignTransactionObject: *txObject, Logger: log})
	if err != nil {
		return err
	}
	defer ep.Close()
	fmt.Fprintf(env.Stdout, "JSON-RPC wallet endpoint: %s (chain %s, agent %s)\n", ep.URL(), ep.ChainID(), wl.Agent())
	if *mcpListen == "" {
		<-ctx.Done()
		return nil
	}
	token, err := mcpToken(env, *mcpTokenFile)
	if err != nil {
		return err
	}
	ms, err := mcp.New(ctx, mcp.Config{Wallet: wl, Endpoint: ep, Logger: log})
	if err != nil {
		return err
	}
	defer ms.Close()
	h, err := ms.Handler(token.value)
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*mcpListen)
	if err != nil {
		return Usagef("--mcp-listen %q: %v", *mcpListen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return Usagef("--mcp-listen %q: the MCP server listens on loopback only", *mcpListen)
	}
	l, err := net.Listen("tcp", *mcpListen)
	if err != nil {
		return fmt.Errorf("mcp listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	fmt.Fprintf(env.Stdout, "MCP (streamable HTTP): http://%s/mcp  bearer token %s\n", l.Addr(), token.shown)
	select {
	case <-ctx.Done():
	case err := <-done:
		return fmt.Errorf("mcp server: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

type mcpTokenValue struct{ value, shown string }

// mcpToken reads the bearer token from the file (creating it with a fresh
// token if missing) or the environment, or makes one for this run.
func mcpToken(env *Env, path string) (mcpTokenValue, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			t := newToken()
			if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
				return mcpTokenValue{}, fmt.Errorf("mcp token file: %w", err)
			}
			return mcpTokenValue{t, "written to " + path}, nil
		}
		if err != nil {
			return mcpTokenValue{}, fmt.Errorf("mcp token file: %w", err)
		}
		return mcpTokenValue{strings.TrimSpace(string(b)), "from " + path}, nil
	}
	if t := env.Getenv(EnvMCPToken); t != "" {
		return mcpTokenValue{t, "from $" + EnvMCPToken}, nil
	}
	t := newToken()
	return mcpTokenValue{t, t}, nil
}

func newToken() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

func agentMCP(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "agent mcp", "agent mcp [--credential FILE] [--upstream URL] [--url COORDINATOR] [flags]")
	af := addAgentFlags(fs)
	listen := fs.String("listen", "127.0.0.1:0", "the JSON-RPC endpoint the tools send through (loopback)")
	if pos, err := parseAll(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return Usagef("agent mcp takes no arguments, got %q", pos)
	}
	// Stdout carries the protocol: everything else goes to stderr.
	log, err := af.logger(env.Stderr)
	if err != nil {
		return err
	}
	up, err := af.upstreamURL(env)
	if err != nil {
		return err
	}
	wl, err := af.wallet(env, log)
	if err != nil {
		return err
	}
	ep, err := rpc.Start(ctx, rpc.Config{Upstream: up, Wallet: wl, Listen: *listen, Logger: log})
	if err != nil {
		return err
	}
	defer ep.Close()
	ms, err := mcp.New(ctx, mcp.Config{Wallet: wl, Endpoint: ep, Logger: log})
	if err != nil {
		return err
	}
	defer ms.Close()
	err = ms.ServeStdio(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func agentPay(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "agent pay", "agent pay URL [--from ADDRESS] [--method GET|POST] [--data BODY] [--json] [flags]")
	af := addAgentFlags(fs)
	from := fs.String("from", "", "the paying address (default the first key's)")
	method := fs.String("method", "GET", "GET or POST")
	data := fs.String("data", "", "the request body, for POST")
	pos, err := parseAll(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return Usagef("agent pay needs exactly one URL")
	}
	u := pos[0]
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return Usagef("agent pay: %q is not an http(s) URL", u)
	}
	m := strings.ToUpper(*method)
	if m != http.MethodGet && m != http.MethodPost {
		return Usagef("--method %q: GET or POST", *method)
	}
	log, err := af.logger(env.Stderr)
	if err != nil {
		return err
	}
	wl, err := af.wallet(env, log)
	if err != nil {
		return err
	}
	var payFrom common.Address
	if *from != "" {
		if payFrom, err = ids.ParseAddress(*from); err != nil {
			return Usagef("--from: %v", err)
		}
	} else {
		accts, err := wl.Accounts(ctx)
		if err != nil {
			return err
		}
		if len(accts) == 0 {
			return errors.New("agent pay: the agent has no keys")
		}
		payFrom = accts[0]
	}
	payer, err := wl.Payer(sidecar.PayConfig{From: payFrom})
	if err != nil {
		return err
	}
	var body io.Reader
	if *data != "" {
		body = strings.NewReader(*data)
	}
	req, err := http.NewRequestWithContext(ctx, m, u, body)
	if err != nil {
		return err
	}
	resp, receipt, err := payer.Do(ctx, req)
	if err != nil {
		return fmt.Errorf("agent pay %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if *af.rest.json {
		out := map[string]any{"status": resp.StatusCode, "content_type": resp.Header.Get("Content-Type"), "body": string(b), "paid": receipt != nil}
		if receipt != nil {
			out["amount"], out["asset"], out["pay_to"], out["network"] = receipt.Requirement.Amount.String(), receipt.Requirement.Asset, receipt.Requirement.PayTo, receipt.Requirement.Network
			if receipt.Settlement != nil {
				out["settlement_tx"] = receipt.Settlement.Transaction
			}
		}
		return PrintJSON(env.Stdout, out)
	}
	if receipt != nil {
		fmt.Fprintf(env.Stderr, "paid %s (base units) of %s to %s on %s", receipt.Requirement.Amount, receipt.Requirement.Asset.Hex(), receipt.Requirement.PayTo.Hex(), receipt.Requirement.Network)
		if receipt.Settlement != nil && receipt.Settlement.Transaction != "" {
			fmt.Fprintf(env.Stderr, ", settled in %s", receipt.Settlement.Transaction)
		}
		fmt.Fprintln(env.Stderr)
	}
	fmt.Fprintf(env.Stderr, "HTTP %d\n", resp.StatusCode)
	_, err = env.Stdout.Write(b)
	if err == nil && resp.StatusCode/100 != 2 {
		return fmt.Errorf("agent pay %s: HTTP %d", u, resp.StatusCode)
	}
	return err
}
