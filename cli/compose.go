package cli

import (
	"context"
	"fmt"

	"github.com/custos-wallet/custos/dev"
)

func init() {
	register(&Command{
		Name:    "compose",
		Summary: "the local compose cluster: lay out its volumes (compose init), push its policy, make its keys and print a first payment (compose setup)",
		Run:     runCompose,
	})
}

func runCompose(ctx context.Context, env *Env, args []string) error {
	sub, rest, err := Subcommand("compose", args, "init", "setup")
	if err != nil {
		return err
	}
	if sub == "init" {
		return composeInit(env, rest)
	}
	return composeSetup(ctx, env, rest)
}

func composeInit(env *Env, args []string) error {
	fs := NewFlags(env, "compose init", "compose init --dir DIR [--out DIR] [--chain-id N]")
	dir := fs.String("dir", "/init", "the directory holding one volume per service (coordinator, agent, policy, guardian-1, guardian-2, agent-2)")
	out := fs.String("out", "", "a directory for the operator: agent credential, policy, cluster.json")
	chainID := fs.Uint64("chain-id", 0, "the dev chain's id (default the dev chain's default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return Usagef("compose init takes no arguments")
	}
	made, err := dev.ComposeInit(dev.ComposeInitOptions{Dir: *dir, Out: *out, ChainID: *chainID})
	if err != nil {
		return err
	}
	if !made {
		fmt.Fprintf(env.Stdout, "the compose cluster is laid out already in %s: nothing changed\n", *dir)
		return nil
	}
	fmt.Fprintf(env.Stdout, "laid out the compose cluster in %s (new identities, store keys, guardian keystores, agent credential, signed policy)\n", *dir)
	if *out != "" {
		fmt.Fprintf(env.Stdout, "the agent credential, the policy and cluster.json are in %s\n", *out)
	}
	return nil
}

func composeSetup(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "compose setup", "compose setup [--url URL] [--token-file FILE] [--dir DIR] [--chain-rpc URL] [--host-url URL] [--host-credential FILE]")
	url := fs.String("url", "http://coordinator:8080", "the coordinator's REST API")
	dir := fs.String("dir", "/data", "the coordinator's volume (cluster.json, policy.json; keys.json is written there)")
	tokenFile := fs.String("token-file", "", "the operator token (default DIR/operator.token)")
	chainRPC := fs.String("chain-rpc", "http://devchain:8545", "the dev chain that funds the keys")
	hostURL := fs.String("host-url", dev.ComposeHostURL, "the coordinator as the operator's machine reaches it, for the printed steps")
	hostCred := fs.String("host-credential", dev.ComposeHostCredential, "the agent credential on the operator's machine, for the printed steps")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return Usagef("compose setup takes no arguments")
	}
	if *tokenFile == "" {
		*tokenFile = *dir + "/operator.token"
	}
	keys, err := dev.ComposeSetup(ctx, dev.ComposeSetupOptions{URL: *url, TokenFile: *tokenFile, Dir: *dir, ChainRPC: *chainRPC, Out: env.Stdout})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "hot key   %s  %s (guardian floor %d)\nvault key %s  %s (guardian floor %d)\n",
		keys.Hot.ID, keys.Hot.Address.Hex(), keys.Hot.GuardianFloor, keys.Vault.ID, keys.Vault.Address.Hex(), keys.Vault.GuardianFloor)
	steps, err := dev.ComposeSteps(ctx, *chainRPC, keys, dev.ComposeStepsOptions{URL: *hostURL, Credential: *hostCred})
	if err != nil {
		return fmt.Errorf("compose setup: the next steps: %w", err)
	}
	fmt.Fprintf(env.Stdout, "\nNext, from the repository root on this machine (run compose setup again for fresh ones: each payment is built at its key's next nonce):\n%s",
		dev.FormatSteps(steps, 1))
	return nil
}
