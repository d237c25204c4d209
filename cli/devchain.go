package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/custos-wallet/custos/devchain"
)

func init() {
	register(&Command{
		Name:    "devchain",
		Summary: "a local Ethereum dev chain (go-ethereum in dev mode) with prefunded dev accounts",
		Run:     runDevchain,
	})
}

func runDevchain(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "devchain", "devchain [--listen HOST:PORT] [--chain-id N] [--block-period D] [--accounts N] [--datadir DIR]")
	listen := fs.String("listen", devchain.DefaultListen, "the JSON-RPC address (HOST:PORT; port 0 picks a free one)")
	allowRemote := fs.Bool("allow-remote", false, "allow a non-loopback --listen (a container's 0.0.0.0:8545): anyone who reaches it gets the dev keys")
	chainID := fs.Uint64("chain-id", devchain.DefaultChainID, "the chain id")
	period := fs.Duration("block-period", 0, "seal a block every period (whole seconds); 0 mines as soon as a transaction arrives")
	accounts := fs.Int("accounts", devchain.DefaultAccounts, "how many prefunded dev accounts")
	dataDir := fs.String("datadir", "", "keep the chain in this directory across restarts (default: in memory)")
	quiet := fs.Bool("quiet", false, "do not list the dev accounts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return Usagef("devchain takes no arguments")
	}
	if _, _, err := net.SplitHostPort(*listen); err != nil {
		return Usagef("--listen %q: %v", *listen, err)
	}
	if *period < 0 || *period%time.Second != 0 {
		return Usagef("--block-period %s: want whole seconds (block timestamps are), or 0", *period)
	}
	if *chainID == 0 {
		return Usagef("--chain-id must not be 0")
	}
	if *accounts < 1 {
		return Usagef("--accounts must be at least 1")
	}
	c, err := devchain.Start(devchain.Config{Listen: *listen, AllowRemote: *allowRemote, ChainID: *chainID, BlockPeriod: *period,
		Accounts: *accounts, DataDir: *dataDir, Logger: slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	mode := "a block as soon as a transaction arrives"
	if *period > 0 {
		mode = "a block every " + period.String()
	}
	fmt.Fprintf(env.Stdout, "dev chain %d at %s (%s; dev_mine or evm_mine seal one now)\n", c.ChainID(), c.URL(), mode)
	if !*quiet {
		fmt.Fprintln(env.Stdout, "dev accounts (keys are public knowledge: dev only):")
		for _, a := range c.Accounts() {
			fmt.Fprintf(env.Stdout, "  %d  %s  %s\n", a.Index, a.Address.Hex(), a.KeyHex())
		}
	}
	<-ctx.Done()
	return c.Close()
}
