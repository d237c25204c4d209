package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/custos-wallet/custos/node/admin"
)

func init() {
	register(&Command{
		Name:    "health",
		Summary: "check a daemon for a container health check: a coordinator or dev chain URL, or a node's admin API; exit 0 or 1",
		Run:     runHealth,
	})
}

// runHealth answers a container's HEALTHCHECK, where the image has no
// shell and no curl: one line saying why, exit 0 when healthy.
func runHealth(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "health", "health URL  |  health --rpc URL  |  health --admin unix:///data/admin.sock")
	adminAddr := fs.String("admin", "", "a node's admin address: unix:///path/admin.sock or http://host:port (GET /healthz)")
	tokenFile := fs.String("token-file", "", "the admin bearer token file, for an http:// admin address")
	rpc := fs.String("rpc", "", "an Ethereum JSON-RPC URL (eth_chainId)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := 0
	for _, v := range []string{*adminAddr, *rpc} {
		if v != "" {
			given++
		}
	}
	if fs.NArg() == 1 {
		given++
	}
	if given != 1 || fs.NArg() > 1 {
		return Usagef("health needs exactly one of: a URL, --rpc URL, --admin ADDR")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var what string
	var err error
	switch {
	case *adminAddr != "":
		what, err = healthAdmin(ctx, *adminAddr, *tokenFile)
	case *rpc != "":
		what, err = healthRPC(ctx, *rpc)
	default:
		what, err = healthURL(ctx, fs.Arg(0))
	}
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	fmt.Fprintln(env.Stdout, "healthy: "+what)
	return nil
}

func healthAdmin(ctx context.Context, addr, tokenFile string) (string, error) {
	tok := ""
	if tokenFile != "" {
		t, err := admin.ReadTokenFile(tokenFile)
		if err != nil {
			return "", err
		}
		tok = t
	}
	c, err := admin.NewClient(addr, tok)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Health(ctx); err != nil {
		return "", err
	}
	return "node at " + addr + " is ready", nil
}

func healthRPC(ctx context.Context, url string) (string, error) {
	body := `{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Result string `json:"result"`
		Error  *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&out); err != nil {
		return "", fmt.Errorf("%s: HTTP %d, not a JSON-RPC answer", url, resp.StatusCode)
	}
	if out.Error != nil {
		return "", fmt.Errorf("%s: eth_chainId: %s", url, out.Error.Message)
	}
	if out.Result == "" {
		return "", fmt.Errorf("%s: eth_chainId: no result", url)
	}
	return fmt.Sprintf("chain %s at %s", out.Result, url), nil
}

func healthURL(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("%s: HTTP %d: %s", url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return fmt.Sprintf("%s: HTTP %d", url, resp.StatusCode), nil
}
