package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/coordinator"
	"github.com/custos-wallet/custos/ids"
)

func init() {
	register(&Command{
		Name:    "coordinator",
		Summary: "run the coordinator (custos coordinator --config FILE), or write a starter one (custos coordinator init)",
		Run:     runCoordinator,
	})
}

// Environment variables of the REST commands (keys, sign, requests).
const (
	EnvURL       = "CUSTOS_URL"            // the coordinator's base URL
	EnvToken     = "CUSTOS_OPERATOR_TOKEN" // an operator bearer token
	EnvTokenFile = "CUSTOS_OPERATOR_TOKEN_FILE"
	defaultURL   = "http://127.0.0.1:8080"
)

func runCoordinator(ctx context.Context, env *Env, args []string) error {
	if len(args) > 0 && args[0] == "init" {
		return coordinatorInit(env, args[1:])
	}
	fs := NewFlags(env, "coordinator", "coordinator --config FILE  |  coordinator init --dir DIR [flags]")
	cfgPath := fs.String("config", "", "the coordinator's configuration file (YAML); CUSTOS_COORDINATOR_* variables override some keys")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		return Usagef("coordinator needs --config FILE (or the init subcommand)")
	}
	cfg, err := coordinator.LoadConfig(*cfgPath, env.Getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: cfg.Level()}))
	c, err := coordinator.New(cfg, coordinator.Options{Logger: log})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "coordinator %s\nREST API %s\nlibp2p %v\n", c.ID(), c.URL(), c.Addrs())
	return c.Run(ctx)
}

// memberFlag collects --member ID:ROLE[@ADDR,ADDR] flags.
type memberFlag []coordinator.MemberConf

func (m *memberFlag) String() string { return fmt.Sprint(len(*m)) }

func (m *memberFlag) Set(s string) error {
	spec, addrs, _ := strings.Cut(s, "@")
	id, role, ok := strings.Cut(spec, ":")
	if !ok {
		return fmt.Errorf("%q: want PEER_ID:ROLE or PEER_ID:ROLE@MULTIADDR[,MULTIADDR]", s)
	}
	if _, err := ids.ParseRole(role); err != nil {
		return err
	}
	mc := coordinator.MemberConf{ID: id, Role: role}
	if addrs != "" {
		mc.Addrs = strings.Split(addrs, ",")
	}
	*m = append(*m, mc)
	return nil
}

func coordinatorInit(env *Env, args []string) error {
	fs := NewFlags(env, "coordinator init", "coordinator init --dir DIR [--member PEER:ROLE@ADDR]... [--genesis 0x…] [--http ADDR] [--chain-rpc URL --chain-id N]")
	dir := fs.String("dir", "", "directory for coordinator.yaml, identity.key, store.key and operator.token")
	var members memberFlag
	fs.Var(&members, "member", "a node: PEER_ID:ROLE@MULTIADDR (repeat)")
	listen := fs.String("listen", "", "comma-separated libp2p listen multiaddrs (default /ip4/0.0.0.0/tcp/4100)")
	httpAddr := fs.String("http", "", "REST API listen address (default "+coordinator.DefaultHTTPListen+")")
	genesis := fs.String("genesis", "", "the genesis policy document's hash")
	rpc := fs.String("chain-rpc", "", "Ethereum JSON-RPC URL to broadcast to")
	chainID := fs.Uint64("chain-id", 0, "the only chain id requests may name")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() > 0 {
		return Usagef("coordinator init needs --dir")
	}
	opts := coordinator.InitOptions{Members: members, HTTPListen: *httpAddr, GenesisHash: *genesis, ChainRPCURL: *rpc, ChainID: *chainID}
	if *listen != "" {
		opts.Listen = splitList(*listen)
	}
	res, err := coordinator.Init(*dir, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		return PrintJSON(env.Stdout, res)
	}
	fmt.Fprintf(env.Stdout, "wrote %s\ncoordinator peer id: %s (list it under coordinators in every node's configuration)\noperator token: %s\n", res.Config, res.PeerID, res.TokenFile)
	if len(res.Missing) > 0 {
		fmt.Fprintf(env.Stdout, "still to fill in: %s\n", strings.Join(res.Missing, ", "))
	}
	fmt.Fprintln(env.Stdout, "then: custos coordinator --config", res.Config)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// restFlags are the flags every REST command takes.
type restFlags struct {
	url       *string
	token     *string
	tokenFile *string
	json      *bool
}

func addRESTFlags(fs *flag.FlagSet) *restFlags {
	return &restFlags{
		url:       fs.String("url", "", "the coordinator's base URL (default $"+EnvURL+" or "+defaultURL+")"),
		token:     fs.String("token", "", "operator bearer token (default $"+EnvToken+")"),
		tokenFile: fs.String("token-file", "", "file holding the operator token (default $"+EnvTokenFile+")"),
		json:      fs.Bool("json", false, "print JSON instead of text"),
	}
}

// client returns a REST client from the flags and the environment.
func (f *restFlags) client(env *Env, opts client.Options) (*client.Client, error) {
	url := *f.url
	if url == "" {
		url = env.Getenv(EnvURL)
	}
	if url == "" {
		url = defaultURL
	}
	tok := *f.token
	if tok == "" {
		tok = env.Getenv(EnvToken)
	}
	tf := *f.tokenFile
	if tf == "" {
		tf = env.Getenv(EnvTokenFile)
	}
	if tok == "" && tf != "" {
		b, err := os.ReadFile(tf)
		if err != nil {
			return nil, fmt.Errorf("operator token: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if opts.Token == "" {
		opts.Token = tok
	}
	return client.New(url, opts)
}

// parseAll parses flags wherever they stand among the arguments
// ("keys show KEY --json" as well as "keys show --json KEY") and returns
// the positional arguments.
func parseAll(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
