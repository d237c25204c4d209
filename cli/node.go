package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node"
	"github.com/ethereum/go-ethereum/common"
)

func init() {
	register(&Command{
		Name:    "node",
		Summary: "run a node (custos node --config FILE), write a starter one (custos node init), seal pre-parameters into it (custos node import-preparams)",
		Run:     runNode,
	})
}

func runNode(ctx context.Context, env *Env, args []string) error {
	if len(args) > 0 && args[0] == "init" {
		return nodeInit(env, args[1:])
	}
	if len(args) > 0 && args[0] == "import-preparams" {
		return nodeImportPreParams(ctx, env, args[1:])
	}
	fs := NewFlags(env, "node", "node --config FILE  |  node init --dir DIR --role ROLE [flags]")
	cfgPath := fs.String("config", "", "the node's configuration file (YAML); CUSTOS_NODE_* variables override its keys")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		return Usagef("node needs --config FILE (or the init subcommand)")
	}
	cfg, err := node.LoadConfig(*cfgPath, env.Getenv)
	if err != nil {
		return err
	}
	log := cfg.Logger(env.Stderr)
	n, err := node.New(cfg, node.Options{Logger: log, Getenv: env.Getenv})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "node %s (%s) listening on %v\n", n.Self(), n.Role(), n.Addrs())
	return n.Run(ctx)
}

func nodeInit(env *Env, args []string) error {
	fs := NewFlags(env, "node init", "node init --dir DIR --role agent|policy|guardian [--agent ID] [--guardian 0x…] [--listen ADDRS] [--genesis 0x…]")
	dir := fs.String("dir", "", "directory for node.yaml, identity.key and store.key")
	role := fs.String("role", "", "agent, policy or guardian")
	agent := fs.String("agent", "", "role agent: the agent this node serves")
	guardian := fs.String("guardian", "", "role guardian: the guardian's identity account")
	listen := fs.String("listen", "", "comma-separated libp2p listen multiaddrs (default /ip4/0.0.0.0/tcp/4001)")
	genesis := fs.String("genesis", "", "the genesis policy document's hash (can be set in node.yaml later)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *role == "" || fs.NArg() > 0 {
		return Usagef("node init needs --dir and --role")
	}
	r, err := ids.ParseRole(*role)
	if err != nil {
		return Usagef("--role: %v", err)
	}
	opts := node.InitOptions{Role: r}
	if *agent != "" {
		a, err := ids.ParseAgentID(*agent)
		if err != nil {
			return Usagef("--agent: %v", err)
		}
		opts.Agent = a
	}
	if r == ids.RoleAgent && opts.Agent == "" {
		return Usagef("a node of role agent needs --agent")
	}
	if *guardian != "" {
		a, err := ids.ParseAddress(*guardian)
		if err != nil {
			return Usagef("--guardian: %v", err)
		}
		opts.Guardian = a
	}
	if r == ids.RoleGuardian && opts.Guardian == (common.Address{}) {
		return Usagef("a node of role guardian needs --guardian (its human's identity account)")
	}
	if *listen != "" {
		for _, l := range strings.Split(*listen, ",") {
			if l = strings.TrimSpace(l); l != "" {
				opts.Listen = append(opts.Listen, l)
			}
		}
	}
	if *genesis != "" {
		if !strings.HasPrefix(*genesis, "0x") || len(*genesis) != 66 {
			return Usagef("--genesis: %q is not a 0x-prefixed 32-byte hash", *genesis)
		}
		opts.GenesisHash = common.HexToHash(*genesis)
	}
	cfg, path, err := node.Init(*dir, opts)
	if err != nil {
		return err
	}
	peerID := cfg.Members[0].PeerID
	if *asJSON {
		return PrintJSON(env.Stdout, map[string]any{"config": path, "peer_id": peerID, "role": cfg.Role, "listen": cfg.Listen})
	}
	fmt.Fprintf(env.Stdout, "wrote %s\nmember id (peer id): %s\nrole: %s\n", path, peerID, cfg.Role)
	fmt.Fprintln(env.Stdout, "next: list the other members and the coordinators in it, pin genesis.hash, then: custos node --config", path)
	return nil
}

func nodeImportPreParams(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "node import-preparams", "node import-preparams --config FILE PREPARAMS.json...")
	cfgPath := fs.String("config", "", "the stopped node's configuration file (YAML); CUSTOS_NODE_* variables override its keys")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" || fs.NArg() == 0 {
		return Usagef("node import-preparams needs --config FILE and at least one pre-parameter file")
	}
	cfg, err := node.LoadConfig(*cfgPath, env.Getenv)
	if err != nil {
		return err
	}
	n, err := node.ImportPreParams(ctx, cfg, env.Getenv, fs.Args())
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "imported %d pre-parameter sets; the pool holds %d\n", fs.NArg(), n)
	return nil
}
