package dev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// Defaults of the agent sidecar's listeners, on a first run.
const (
	DefaultAgentListen = "127.0.0.1:8546" // Ethereum JSON-RPC
	DefaultMCPListen   = "127.0.0.1:8547" // MCP, streamable HTTP
)

// agentSidecar is the agent's side, run in this process: the JSON-RPC
// endpoint and the MCP server, both signing through the cluster with the
// dev agent's credential (agent/sidecar), holding no key.
type agentSidecar struct {
	endpoint *rpc.Server
	mcp      *mcp.Server
	http     *http.Server
	mcpURL   string
	token    string
}

func (c *Cluster) startSidecar(ctx context.Context) error {
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	cred, err := loadCredential(c.p.credential())
	if err != nil {
		return err
	}
	cl, err := client.New(c.url, client.Options{Agent: cred})
	if err != nil {
		return err
	}
	log := c.log.With("daemon", "agent-sidecar")
	w, err := sidecar.New(sidecar.Config{Client: cl, Credential: cred, Logger: log})
	if err != nil {
		return fmt.Errorf("agent sidecar: %w", err)
	}
	s := &agentSidecar{}
	c.sidecar = s
	if s.endpoint, err = rpc.Start(ctx, rpc.Config{Upstream: c.chain.URL(), Wallet: w, Listen: st.AgentListen, Logger: log}); err != nil {
		return fmt.Errorf("agent sidecar: JSON-RPC: %w", err)
	}
	if s.mcp, err = mcp.New(ctx, mcp.Config{Wallet: w, Endpoint: s.endpoint, Logger: log}); err != nil {
		return fmt.Errorf("agent sidecar: MCP: %w", err)
	}
	if s.token, err = loadOrMakeToken(c.p.mcpToken()); err != nil {
		return fmt.Errorf("agent sidecar: MCP token: %w", err)
	}
	h, err := s.mcp.Handler(s.token)
	if err != nil {
		return fmt.Errorf("agent sidecar: MCP: %w", err)
	}
	ln, err := net.Listen("tcp", st.MCPListen)
	if err != nil {
		return fmt.Errorf("agent sidecar: MCP: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", h)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.mcpURL = "http://" + ln.Addr().String() + "/mcp"
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("MCP server stopped", "err", err)
		}
	}()
	log.Info("agent sidecar started", "rpc", s.endpoint.URL(), "mcp", s.mcpURL)
	return nil
}

func (s *agentSidecar) close() error {
	var errs []error
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, s.http.Shutdown(ctx))
		cancel()
	}
	if s.mcp != nil {
		s.mcp.Close()
	}
	if s.endpoint != nil {
		errs = append(errs, s.endpoint.Close())
	}
	return errors.Join(errs...)
}

// AgentRPCURL is the agent sidecar's Ethereum JSON-RPC endpoint.
func (c *Cluster) AgentRPCURL() string { return c.sidecar.endpoint.URL() }

// MCPURL is the agent sidecar's MCP endpoint (streamable HTTP); every
// call needs the bearer token MCPToken.
func (c *Cluster) MCPURL() string { return c.sidecar.mcpURL }

// MCPToken is the MCP endpoint's bearer token.
func (c *Cluster) MCPToken() string { return c.sidecar.token }

// MCPConfig is the configuration an MCP client (Claude Code's .mcp.json,
// Claude Desktop, Cursor) takes to reach the sidecar.
func (c *Cluster) MCPConfig() string {
	v := map[string]any{"mcpServers": map[string]any{"custos": map[string]any{
		"type": "http", "url": c.MCPURL(), "headers": map[string]string{"Authorization": "Bearer " + c.MCPToken()},
	}}}
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// loadCredential reads the credential file writeCredential wrote.
func loadCredential(path string) (*agentauth.Credential, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agent credential: %w", err)
	}
	var f struct {
		Agent ids.AgentID   `json:"agent"`
		Seed  hexutil.Bytes `json:"seed"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("agent credential %s: %w", path, err)
	}
	return agentauth.CredentialFromSeed(f.Agent, f.Seed)
}

func loadOrMakeToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); len(t) >= 32 {
			return t, nil
		}
		return "", fmt.Errorf("%s holds no token of 32 characters or more", path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var r [24]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	t := hex.EncodeToString(r[:])
	return t, os.WriteFile(path, []byte(t+"\n"), 0o600)
}

// AgentCredential is the dev agent's credential, as CredentialFile holds
// it.
func (c *Cluster) AgentCredential() (*agentauth.Credential, error) {
	return loadCredential(c.p.credential())
}
