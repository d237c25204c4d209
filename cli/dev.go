package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/custos-wallet/custos/dev"
	"github.com/custos-wallet/custos/devchain"
)

func init() {
	register(&Command{
		Name:    "dev",
		Summary: "a whole local cluster on loopback (dev chain, coordinator, four nodes, keys, policy) in ./.custos-dev",
		Run:     runDev,
	})
}

func runDev(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "dev", "dev [--dir DIR] [--chain-listen HOST:PORT] [--http HOST:PORT] [--agent-listen HOST:PORT] [--mcp-listen HOST:PORT] [--chain-id N]")
	defDir := env.Getenv(dev.EnvDir)
	if defDir == "" {
		defDir = dev.DefaultDir
	}
	dir := fs.String("dir", defDir, "the dev directory, made on the first run and reused after (default $"+dev.EnvDir+" or "+dev.DefaultDir+")")
	chainListen := fs.String("chain-listen", dev.DefaultChainListen, "first run: the dev chain's JSON-RPC address (port 0: any free port)")
	httpListen := fs.String("http", dev.DefaultHTTPListen, "first run: the coordinator's REST address (port 0: any free port)")
	agentListen := fs.String("agent-listen", dev.DefaultAgentListen, "first run: the agent sidecar's Ethereum JSON-RPC address")
	mcpListen := fs.String("mcp-listen", dev.DefaultMCPListen, "first run: the agent sidecar's MCP address (streamable HTTP)")
	chainID := fs.Uint64("chain-id", devchain.DefaultChainID, "first run: the dev chain's id")
	cores := fs.Int("cores", 2, "cores the pre-parameter estimate assumes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return Usagef("dev takes no arguments")
	}
	program, note := programName()
	if note != "" {
		fmt.Fprintln(env.Stdout, note)
	}
	return dev.Run(ctx, dev.Options{Program: program, Dir: *dir, ChainListen: *chainListen, HTTPListen: *httpListen,
		AgentListen: *agentListen, MCPListen: *mcpListen, ChainID: *chainID,
		Out: env.Stdout, Cores: *cores})
}

// programName is how the printed steps run this binary: custos when that
// is what the PATH finds, else its absolute path. A binary that go run
// built is deleted when it exits: from the module's root the steps then
// use go run too.
func programName() (name, note string) {
	exe, err := os.Executable()
	if err != nil {
		return "custos", ""
	}
	exe, _ = filepath.EvalSymlinks(exe)
	if p, err := exec.LookPath("custos"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			if r, err := filepath.EvalSymlinks(abs); err == nil && r == exe {
				return "custos", ""
			}
		}
	}
	if !strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return exe, ""
	}
	if _, err := os.Stat(filepath.Join("cmd", "custos", "main.go")); err == nil {
		return "go run ./cmd/custos", "The steps below run custos with go run from this directory; after `go install ./cmd/custos`, plain `custos` does the same."
	}
	return "custos", "The steps below call custos: `go install ./cmd/custos` puts it on your PATH."
}
