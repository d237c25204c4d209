// Package mcp is the MCP server of the agent sidecar: wallet tools an LLM
// agent calls (get_wallet, get_balance, transfer, send_transaction,
// sign_message, sign_typed_data, explain, request_status,
// wait_for_approval, pay_x402), built on the official Go SDK
// (github.com/modelcontextprotocol/go-sdk), over stdio or streamable HTTP
// on localhost with a bearer token.
//
// Every tool that signs goes through the sidecar's JSON-RPC endpoint
// (agent/rpc) or its Wallet (agent/sidecar), so the policy of the cluster
// decides everything: the server holds no key. Each result is structured
// output plus one sentence an LLM can act on. A denial is an isError
// result that names the rule and the reason and says what to do next
// (lower the amount, ask a guardian with the request id); a request
// waiting for a guardian is not an error but a status with the request id
// to pass to wait_for_approval. Tools that move funds carry the
// destructive annotation.
package mcp

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agent/rpc"
	"github.com/custos-wallet/custos/agent/sidecar"
	"github.com/custos-wallet/custos/agent/x402"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/ethclient"
	gethrpc "github.com/ethereum/go-ethereum/rpc"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Defaults applied by New to a zero Config field.
const (
	DefaultMaxWait      = 5 * time.Minute
	DefaultMaxBodyBytes = 64 << 10
	Name                = "custos"
)

// Config configures a Server.
type Config struct {
	// Wallet signs through the cluster. Required.
	Wallet *sidecar.Wallet
	// Endpoint is the sidecar's JSON-RPC endpoint, started (it has a
	// URL): transactions are filled, signed and sent through it, so that
	// they share its nonce allocator with every other client. Required.
	Endpoint *rpc.Server
	// PayLimits, if set, caps x402 payments on top of the policy.
	PayLimits *x402.Limits
	// PayHTTP fetches x402 resources; nil is a client with a one-minute
	// timeout.
	PayHTTP *http.Client
	// MaxWait bounds wait_for_approval.
	MaxWait time.Duration
	// MaxBodyBytes bounds the body of a fetched x402 resource returned to
	// the agent.
	MaxBodyBytes int
	// Version is the server's version in the MCP handshake.
	Version string
	Logger  *slog.Logger
}

// Server is the MCP server. Close releases its connection to the
// endpoint.
type Server struct {
	cfg Config
	sdk *sdk.Server
	rpc *gethrpc.Client
	eth *ethclient.Client
	log *slog.Logger
}

// New returns a Server with every tool registered.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Wallet == nil || cfg.Endpoint == nil {
		return nil, errors.New("mcp: a wallet and a started JSON-RPC endpoint are required")
	}
	if cfg.Endpoint.URL() == "" {
		return nil, errors.New("mcp: the JSON-RPC endpoint is not listening")
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := gethrpc.DialContext(ctx, cfg.Endpoint.URL())
	if err != nil {
		return nil, fmt.Errorf("mcp: dial the JSON-RPC endpoint: %w", err)
	}
	s := &Server{cfg: cfg, rpc: c, eth: ethclient.NewClient(c), log: cfg.Logger}
	s.sdk = sdk.NewServer(&sdk.Implementation{Name: Name, Title: "Custos wallet", Version: cfg.Version}, &sdk.ServerOptions{
		Instructions: "A threshold wallet whose spending is bounded by a guardian-signed policy. " +
			"Call explain before moving funds; a denial names the rule and what you can do instead.",
		Logger: cfg.Logger,
	})
	s.register()
	return s, nil
}

// MCP returns the SDK server, for a transport of the caller's.
func (s *Server) MCP() *sdk.Server { return s.sdk }

// Close closes the connection to the endpoint.
func (s *Server) Close() { s.rpc.Close() }

// ServeStdio serves one session over stdin and stdout until it ends or
// ctx is done.
func (s *Server) ServeStdio(ctx context.Context) error {
	return s.sdk.Run(ctx, &sdk.StdioTransport{})
}

// Handler serves MCP over streamable HTTP, to requests that carry the
// bearer token and a loopback Host (so a web page cannot reach it by DNS
// rebinding). An empty token is refused: the tools move funds.
func (s *Server) Handler(token string) (http.Handler, error) {
	if len(token) < 16 {
		return nil, errors.New("mcp: the HTTP transport needs a bearer token of at least 16 characters")
	}
	inner := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s.sdk }, &sdk.StreamableHTTPOptions{Logger: s.log})
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host) {
			http.Error(w, "mcp: Host is not a loopback name", http.StatusForbidden)
			return
		}
		if r.Header.Get("Origin") != "" {
			http.Error(w, "mcp: requests from browser pages are refused", http.StatusForbidden)
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="custos-agent"`)
			http.Error(w, "mcp: missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}), nil
}

func loopbackHost(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		h = hostport
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

func boolPtr(b bool) *bool { return &b }

// register adds every tool.
func (s *Server) register() {
	read := &sdk.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: boolPtr(false)}
	moves := func(title string) *sdk.ToolAnnotations {
		return &sdk.ToolAnnotations{Title: title, DestructiveHint: boolPtr(true), OpenWorldHint: boolPtr(true)}
	}
	signs := func(title string) *sdk.ToolAnnotations {
		// A signature can move funds (a permit, an authorization).
		return &sdk.ToolAnnotations{Title: title, DestructiveHint: boolPtr(true), OpenWorldHint: boolPtr(false)}
	}
	sdk.AddTool(s.sdk, &sdk.Tool{Name: "get_wallet", Description: "The wallet's addresses, chain, policy tiers and the rules (limits and budgets) that apply to this agent; with to (and amount, token), how much budget is left under the rule that would apply to that transfer.", Annotations: read}, s.getWallet)
	sdk.AddTool(s.sdk, &sdk.Tool{Name: "get_balance", Description: "Balance of an address (default: the wallet's first) in ether, or in a token named by the policy (e.g. USDC), in token units.", Annotations: read}, s.getBalance)
	sdk.AddTool(s.sdk, &sdk.Tool{Name: "transfer", Description: "Send ether or a token named by the policy, in human units (\"0.01\"). The policy decides; a denial says which rule and what to do instead.", Annotations: moves("Transfer funds")}, s.transfer)
	sdk.AddTool(s.sdk, &sdk.Tool{Name: "send_transaction", Description: "Send a contract call (calldata as 0x-hex) with optional ether value, under the policy.", Annotations: moves("Send a transaction")}, s.sendTransaction)
	sdk.AddTool(s.sdk, &sdk.Tool{Name: "sign_message", Description: "Sign a personal message (EIP-191, personal_sign) under the policy.", Annotations: signs("Sign a message")}, s.signMessage)
	sdk.AddTool(s.sdk, &sdk.Tool{Name: "sign_typed_data", Description: "Sign EIP-712 typed data (eth_signTypedData_v4 JSON) under the policy; permits and authorizations count as spending.", Annotations: signs("Sign typed data")}, s.signTypedData)
	sdk.AddTool(s.sdk, &sdk.Tool{Name: "explain", Description: "Dry run of a transfer or call: would the policy allow it, at which tier, by which rule, why, and how much of that rule's budget remains. Signs nothing.", Annotations: read}, s.explain)
	sdk.AddTool(s.sdk, &sdk.Tool{Name: "request_status", Description: "State of a signing request by id (as returned by a pending or denied call).", Annotations: read}, s.requestStatus)
	sdk.AddTool(s.sdk, &sdk.Tool{Name: "wait_for_approval", Description: "Wait for a request that needs a guardian's approval, up to timeout_seconds; once signed, a transaction is sent.", Annotations: &sdk.ToolAnnotations{Title: "Wait for approval", DestructiveHint: boolPtr(true), OpenWorldHint: boolPtr(true)}}, s.waitForApproval)
	sdk.AddTool(s.sdk, &sdk.Tool{Name: "pay_x402", Description: "Fetch a URL, paying an HTTP 402 (x402) price from the wallet if the policy allows it; pays at most once per call.", Annotations: moves("Pay for a resource (x402)")}, s.payX402)
}

// Outcome is the common part of every result that asks the cluster to
// sign: what happened, and for a denial or a pending approval, why and
// the request to follow.
type Outcome struct {
	Status    string `json:"status" jsonschema:"sent, signed, denied, pending_approval or failed"`
	RequestID string `json:"request_id,omitempty" jsonschema:"the signing request, for request_status and wait_for_approval"`
	Rule      string `json:"rule,omitempty" jsonschema:"the policy rule that decided"`
	Reason    string `json:"reason,omitempty" jsonschema:"why the policy decided so"`
	Next      string `json:"next,omitempty" jsonschema:"what the agent can do next"`
}

// signError turns an error of a signing call into a tool result: a denial
// is an isError result, a pending approval a normal one, anything else a
// tool error.
func signError(err error, what string, out *Outcome) (*sdk.CallToolResult, error) {
	var denied *rpc.Denied
	var pending *rpc.Pending
	code, data := rpcErrorData(err)
	switch {
	case errors.As(err, &denied):
		data = map[string]any{"rule": denied.Rule, "reason": denied.Reason, "requestId": string(denied.RequestID)}
		code = rpc.CodeDenied
	case errors.As(err, &pending):
		data = map[string]any{"requestId": string(pending.RequestID)}
		code = rpc.CodePending
	}
	switch code {
	case rpc.CodeDenied:
		out.Status, out.Rule, out.Reason, out.RequestID = api.StateDenied, str(data["rule"]), str(data["reason"]), str(data["requestId"])
		out.Next = "Do not retry unchanged. Lower the amount, pick a destination the policy allows (see get_wallet), or ask a guardian to change the policy; quote request " + out.RequestID + "."
		return &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: fmt.Sprintf(
			"Denied: %s was refused by policy rule %q: %s. %s", what, out.Rule, out.Reason, out.Next)}}}, nil
	case rpc.CodePending:
		out.Status, out.RequestID = api.StatePendingApproval, str(data["requestId"])
		out.Next = "Ask a guardian to approve request " + out.RequestID + ", then call wait_for_approval with it."
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: fmt.Sprintf(
			"Waiting for a guardian: %s needs approval. %s", what, out.Next)}}}, nil
	}
	return nil, err
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// rpcErrorData returns the JSON-RPC code and error data of err, if any.
func rpcErrorData(err error) (int, map[string]any) {
	var ce gethrpc.Error
	if !errors.As(err, &ce) {
		return 0, nil
	}
	var data map[string]any
	var de gethrpc.DataError
	if errors.As(err, &de) {
		b, _ := json.Marshal(de.ErrorData())
		_ = json.Unmarshal(b, &data)
	}
	return ce.ErrorCode(), data
}

func text(format string, args ...any) *sdk.CallToolResult {
	return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: fmt.Sprintf(format, args...)}}}
}

// from returns the address a call names, or the wallet's first.
func (s *Server) from(ctx context.Context, addr string) (common.Address, error) {
	accts, err := s.cfg.Wallet.Accounts(ctx)
	if err != nil {
		return common.Address{}, err
	}
	if addr == "" {
		if len(accts) == 0 {
			return common.Address{}, errors.New("the wallet has no keys")
		}
		return accts[0], nil
	}
	a, err := parseAddress("from", addr)
	if err != nil {
		return common.Address{}, err
	}
	for _, x := range accts {
		if x == a {
			return a, nil
		}
	}
	return common.Address{}, fmt.Errorf("from %s is not one of the wallet's addresses %v", a.Hex(), accts)
}

func parseAddress(field, s string) (common.Address, error) {
	a, err := ids.ParseAddress(strings.TrimSpace(s))
	if err != nil {
		return common.Address{}, fmt.Errorf("%s: %v", field, err)
	}
	return a, nil
}

// token is a token the policy names.
type token struct {
	Symbol   string
	Address  common.Address
	Decimals int
}

// tokens returns the tokens of the policy in force.
func (s *Server) tokens(ctx context.Context) (map[string]token, *policy.Document, error) {
	p, err := s.cfg.Wallet.Policy(ctx)
	if err != nil {
		return nil, nil, err
	}
	doc, err := policy.ParseDocument([]byte(p.Document.Source))
	if err != nil {
		return nil, nil, fmt.Errorf("policy document: %w", err)
	}
	out := map[string]token{}
	for sym, t := range doc.Tokens {
		if !common.IsHexAddress(t.Address) {
			continue
		}
		out[strings.ToUpper(sym)] = token{Symbol: sym, Address: common.HexToAddress(t.Address), Decimals: t.Decimals}
	}
	return out, doc, nil
}

// lookupToken finds a token by symbol or address.
func (s *Server) lookupToken(ctx context.Context, name string) (token, error) {
	ts, _, err := s.tokens(ctx)
	if err != nil {
		return token{}, err
	}
	if t, ok := ts[strings.ToUpper(strings.TrimSpace(name))]; ok {
		return t, nil
	}
	if common.IsHexAddress(name) {
		for _, t := range ts {
			if t.Address == common.HexToAddress(name) {
				return t, nil
			}
		}
	}
	var names []string
	for _, t := range ts {
		names = append(names, t.Symbol)
	}
	sort.Strings(names)
	return token{}, fmt.Errorf("token %q is not named by the policy (known: %s)", name, strings.Join(names, ", "))
}

func isNative(name string) bool {
	n := strings.ToUpper(strings.TrimSpace(name))
	return n == "" || n == "ETH" || n == "ETHER" || n == "NATIVE"
}

// ---- get_wallet

type GetWalletIn struct {
	To     string `json:"to,omitempty" jsonschema:"optional: a recipient, to see how much budget is left under the rule that would apply to a transfer to it"`
	Amount string `json:"amount,omitempty" jsonschema:"optional, with to: the transfer's amount in human units (default 0)"`
	Token  string `json:"token,omitempty" jsonschema:"optional, with to: a token symbol the policy names; default ether"`
}

type Account struct {
	Address       string `json:"address"`
	Key           string `json:"key"`
	Threshold     int    `json:"threshold" jsonschema:"any threshold+1 shares sign"`
	GuardianFloor int    `json:"guardian_floor" jsonschema:"guardian shares every signature of this key needs"`
}

type Tier struct {
	Name      string   `json:"name"`
	Signers   []string `json:"signers"`
	Approvals int      `json:"approvals,omitempty"`
	Delay     string   `json:"delay,omitempty"`
}

type Rule struct {
	ID          string `json:"id"`
	Description string `json:"description,omitempty"`
	Verdict     string `json:"verdict" jsonschema:"a tier name, allow or deny"`
	Conditions  string `json:"conditions" jsonschema:"the rule's conditions as the policy states them"`
	Budget      string `json:"budget,omitempty" jsonschema:"the rule's budget per window; explain shows what is left"`
}

type GetWalletOut struct {
	Agent         string    `json:"agent"`
	ChainID       uint64    `json:"chain_id"`
	Accounts      []Account `json:"accounts"`
	PolicyVersion uint64    `json:"policy_version"`
	PolicyHash    string    `json:"policy_hash"`
	Tiers         []Tier    `json:"tiers"`
	Rules         []Rule    `json:"rules" jsonschema:"the rules that apply to this agent, in evaluation order"`
	Tokens        []string  `json:"tokens,omitempty" jsonschema:"tokens the policy names, usable by symbol"`
	// BudgetRule and Budgets answer the optional to (amount, token): the
	// rule that would decide such a transfer and what is left of its budget.
	BudgetRule string       `json:"budget_rule,omitempty" jsonschema:"with to: the rule that would decide the transfer"`
	Budgets    []BudgetLeft `json:"budgets,omitempty" jsonschema:"with to: what is left of that rule's budget for this agent"`
}

func (s *Server) getWallet(ctx context.Context, _ *sdk.CallToolRequest, in GetWalletIn) (*sdk.CallToolResult, GetWalletOut, error) {
	var out GetWalletOut
	keys, err := s.cfg.Wallet.Keys(ctx)
	if err != nil {
		return nil, out, err
	}
	out.Agent = string(s.cfg.Wallet.Agent())
	out.ChainID = s.cfg.Endpoint.ChainID().Uint64()
	for _, k := range keys {
		out.Accounts = append(out.Accounts, Account{Address: k.Address.Hex(), Key: k.ID.String(), Threshold: k.Threshold, GuardianFloor: k.GuardianFloor})
	}
	p, err := s.cfg.Wallet.Policy(ctx)
	if err != nil {
		return nil, out, err
	}
	out.PolicyVersion, out.PolicyHash = p.Version, p.Hash.Hex()
	doc, err := policy.ParseDocument([]byte(p.Document.Source))
	if err != nil {
		return nil, out, fmt.Errorf("policy document: %w", err)
	}
	for _, t := range doc.Tiers {
		js, _ := json.Marshal(t)
		var tier Tier
		_ = json.Unmarshal(js, &tier)
		out.Tiers = append(out.Tiers, tier)
	}
	for _, r := range doc.Rules {
		if !ruleAppliesTo(r, out.Agent) {
			continue
		}
		verdict := r.Tier
		switch {
		case r.Deny:
			verdict = "deny"
		case r.Allow:
			verdict = "allow"
		}
		when, _ := json.Marshal(r.When)
		rule := Rule{ID: r.ID, Description: r.Description, Verdict: verdict, Conditions: string(when)}
		if r.Budget != nil {
			b, _ := json.Marshal(r.Budget)
			rule.Budget = string(b)
		}
		out.Rules = append(out.Rules, rule)
	}
	for sym := range doc.Tokens {
		out.Tokens = append(out.Tokens, sym)
	}
	sort.Strings(out.Tokens)
	addrs := make([]string, 0, len(out.Accounts))
	for _, a := range out.Accounts {
		addrs = append(addrs, a.Address)
	}
	left := " Pass to (and amount) to see the budget left under the rule that would apply."
	if in.To != "" {
		amount := in.Amount
		if amount == "" {
			amount = "0"
		}
		_, ex, err := s.explain(ctx, nil, ExplainIn{To: in.To, Amount: amount, Token: in.Token})
		if err != nil {
			return nil, out, fmt.Errorf("budget left for a transfer to %s: %w", in.To, err)
		}
		out.BudgetRule, out.Budgets = ex.Rule, ex.Budgets
		if left = describeBudgets(ex.Budgets); left == "" {
			left = fmt.Sprintf(" A transfer to %s would be decided by rule %q, which has no budget.", in.To, ex.Rule)
		}
	}
	return text("Agent %s has %d address(es) on chain %d (%s) under policy version %d with %d rule(s) that apply to it; call explain before moving funds.%s",
		out.Agent, len(out.Accounts), out.ChainID, strings.Join(addrs, ", "), out.PolicyVersion, len(out.Rules), left), out, nil
}

// ruleAppliesTo reports whether a rule could apply to the agent: it names
// no agents, or names this one.
func ruleAppliesTo(r policy.RuleDoc, agent string) bool {
	js, err := json.Marshal(r.When)
	if err != nil {
		return true
	}
	var w map[string]json.RawMessage
	if json.Unmarshal(js, &w) != nil {
		return true
	}
	raw, ok := w["agent"]
	if !ok || string(raw) == "null" {
		return true
	}
	return strings.Contains(string(raw), `"`+agent+`"`)
}

// ---- get_balance

type GetBalanceIn struct {
	Address string `json:"address,omitempty" jsonschema:"the address; default the wallet's first"`
	Token   string `json:"token,omitempty" jsonschema:"a token symbol the policy names (e.g. USDC) or its address; default ether"`
}

type GetBalanceOut struct {
	Address  string `json:"address"`
	Asset    string `json:"asset"`
	Balance  string `json:"balance" jsonschema:"in human units (ether or token units)"`
	Raw      string `json:"raw" jsonschema:"in base units (wei or the token's smallest unit)"`
	Decimals int    `json:"decimals"`
}

var selBalanceOf = [4]byte{0x70, 0xa0, 0x82, 0x31}

func (s *Server) getBalance(ctx context.Context, _ *sdk.CallToolRequest, in GetBalanceIn) (*sdk.CallToolResult, GetBalanceOut, error) {
	var out GetBalanceOut
	var addr common.Address
	var err error
	if in.Address == "" {
		addr, err = s.from(ctx, "")
	} else {
		addr, err = parseAddress("address", in.Address)
	}
	if err != nil {
		return nil, out, err
	}
	out.Address = addr.Hex()
	if isNative(in.Token) {
		b, err := s.eth.BalanceAt(ctx, addr, nil)
		if err != nil {
			return nil, out, fmt.Errorf("balance: %w", err)
		}
		out.Asset, out.Raw, out.Decimals, out.Balance = "ETH", b.String(), 18, chain.FormatUnits(b, 18)
		return text("%s holds %s ETH.", out.Address, out.Balance), out, nil
	}
	t, err := s.lookupToken(ctx, in.Token)
	if err != nil {
		return nil, out, err
	}
	data := append(selBalanceOf[:], common.LeftPadBytes(addr.Bytes(), 32)...)
	res, err := s.eth.CallContract(ctx, ethereum.CallMsg{To: &t.Address, Data: data}, nil)
	if err != nil {
		return nil, out, fmt.Errorf("%s balanceOf: %w", t.Symbol, err)
	}
	if len(res) != 32 {
		return nil, out, fmt.Errorf("%s balanceOf answered %d bytes, not 32: is %s a token contract?", t.Symbol, len(res), t.Address.Hex())
	}
	b := new(big.Int).SetBytes(res)
	out.Asset, out.Raw, out.Decimals, out.Balance = t.Symbol, b.String(), t.Decimals, chain.FormatUnits(b, t.Decimals)
	return text("%s holds %s %s.", out.Address, out.Balance, t.Symbol), out, nil
}

// ---- transfer, send_transaction, explain

type TransferIn struct {
	To     string `json:"to" jsonschema:"the recipient address"`
	Amount string `json:"amount" jsonschema:"in human units, e.g. 0.01 (ether) or 5 (USDC)"`
	Token  string `json:"token,omitempty" jsonschema:"a token symbol the policy names (e.g. USDC); default ether"`
	From   string `json:"from,omitempty" jsonschema:"the paying address; default the wallet's first"`
}

type SendOut struct {
	Outcome
	TxHash string `json:"tx_hash,omitempty"`
	From   string `json:"from,omitempty"`
}

// transferArgs builds the transaction of a transfer.
func (s *Server) transferArgs(ctx context.Context, in TransferIn) (rpc.TransactionArgs, string, error) {
	var a rpc.TransactionArgs
	from, err := s.from(ctx, in.From)
	if err != nil {
		return a, "", err
	}
	to, err := parseAddress("to", in.To)
	if err != nil {
		return a, "", err
	}
	a.From = &from
	if isNative(in.Token) {
		v, err := ParseUnits(in.Amount, 18)
		if err != nil {
			return a, "", err
		}
		a.To, a.Value = &to, (*hexutil.Big)(v)
		return a, fmt.Sprintf("a transfer of %s ETH to %s", chain.FormatUnits(v, 18), to.Hex()), nil
	}
	t, err := s.lookupToken(ctx, in.Token)
	if err != nil {
		return a, "", err
	}
	v, err := ParseUnits(in.Amount, t.Decimals)
	if err != nil {
		return a, "", err
	}
	data := hexutil.Bytes(chain.EncodeCall(chain.SelTransfer, to, v))
	a.To, a.Data = &t.Address, &data
	return a, fmt.Sprintf("a transfer of %s %s to %s", chain.FormatUnits(v, t.Decimals), t.Symbol, to.Hex()), nil
}

func (s *Server) send(ctx context.Context, a rpc.TransactionArgs, what string) (*sdk.CallToolResult, SendOut, error) {
	out := SendOut{From: a.From.Hex()}
	var h common.Hash
	if err := s.rpc.CallContext(ctx, &h, "eth_sendTransaction", a); err != nil {
		res, err := signError(err, what, &out.Outcome)
		return res, out, err
	}
	out.Status, out.TxHash = "sent", h.Hex()
	return text("Sent %s: transaction %s (signed under the policy, broadcast; it is final once mined).", what, out.TxHash), out, nil
}

func (s *Server) transfer(ctx context.Context, _ *sdk.CallToolRequest, in TransferIn) (*sdk.CallToolResult, SendOut, error) {
	a, what, err := s.transferArgs(ctx, in)
	if err != nil {
		return nil, SendOut{}, err
	}
	return s.send(ctx, a, what)
}

type SendTransactionIn struct {
	To    string `json:"to" jsonschema:"the contract address"`
	Data  string `json:"data,omitempty" jsonschema:"calldata as 0x-hex"`
	Value string `json:"value,omitempty" jsonschema:"ether sent with the call, in ether (e.g. 0.01)"`
	Gas   uint64 `json:"gas,omitempty" jsonschema:"gas limit; default estimated"`
	From  string `json:"from,omitempty" jsonschema:"default the wallet's first address"`
}

func (s *Server) callArgs(ctx context.Context, in SendTransactionIn) (rpc.TransactionArgs, string, error) {
	var a rpc.TransactionArgs
	from, err := s.from(ctx, in.From)
	if err != nil {
		return a, "", err
	}
	to, err := parseAddress("to", in.To)
	if err != nil {
		return a, "", err
	}
	a.From, a.To = &from, &to
	if in.Data != "" {
		b, err := hexutil.Decode(strings.TrimSpace(in.Data))
		if err != nil {
			return a, "", fmt.Errorf("data: %v (want 0x-prefixed hex)", err)
		}
		d := hexutil.Bytes(b)
		a.Data = &d
	}
	if in.Value != "" {
		v, err := ParseUnits(in.Value, 18)
		if err != nil {
			return a, "", fmt.Errorf("value: %w", err)
		}
		a.Value = (*hexutil.Big)(v)
	}
	if in.Gas > 0 {
		g := hexutil.Uint64(in.Gas)
		a.Gas = &g
	}
	return a, fmt.Sprintf("a call to %s", to.Hex()), nil
}

func (s *Server) sendTransaction(ctx context.Context, _ *sdk.CallToolRequest, in SendTransactionIn) (*sdk.CallToolResult, SendOut, error) {
	a, what, err := s.callArgs(ctx, in)
	if err != nil {
		return nil, SendOut{}, err
	}
	return s.send(ctx, a, what)
}

type ExplainIn struct {
	To     string `json:"to" jsonschema:"the recipient (or contract, with data)"`
	Amount string `json:"amount,omitempty" jsonschema:"in human units of token (or ether)"`
	Token  string `json:"token,omitempty" jsonschema:"a token symbol the policy names; default ether"`
	Data   string `json:"data,omitempty" jsonschema:"calldata as 0x-hex, for a contract call (then amount is ether)"`
	From   string `json:"from,omitempty"`
}

type Step struct {
	Rule    string `json:"rule"`
	Matched bool   `json:"matched"`
	Detail  string `json:"detail,omitempty"`
}

type ExplainOut struct {
	Allowed   bool   `json:"allowed"`
	Verdict   string `json:"verdict" jsonschema:"deny, allow or tier"`
	Tier      string `json:"tier,omitempty"`
	Approvals int    `json:"approvals,omitempty" jsonschema:"guardian approvals the tier needs"`
	Rule      string `json:"rule"`
	Reason    string `json:"reason"`
	Trace     []Step `json:"trace,omitempty" jsonschema:"each rule considered, with why it matched or not (budgets left included)"`
	// Budgets is what remains of the deciding rule's budget.
	Budgets []BudgetLeft `json:"budgets,omitempty" jsonschema:"what is left of the deciding rule's budget for this agent and address"`
}

func (s *Server) explain(ctx context.Context, _ *sdk.CallToolRequest, in ExplainIn) (*sdk.CallToolResult, ExplainOut, error) {
	var out ExplainOut
	var a rpc.TransactionArgs
	var what string
	var err error
	if in.Data != "" {
		a, what, err = s.callArgs(ctx, SendTransactionIn{To: in.To, Data: in.Data, Value: in.Amount, From: in.From})
	} else {
		a, what, err = s.transferArgs(ctx, TransferIn{To: in.To, Amount: in.Amount, Token: in.Token, From: in.From})
	}
	if err != nil {
		return nil, out, err
	}
	p, err := s.cfg.Endpoint.Prepare(ctx, a)
	if err != nil {
		return nil, out, err
	}
	d, err := s.cfg.Wallet.Explain(ctx, *a.From, p)
	if err != nil {
		return nil, out, err
	}
	out.Verdict, out.Tier, out.Approvals, out.Rule, out.Reason = d.Decision.Verdict, d.Decision.Tier, d.Decision.Approvals, d.Decision.RuleID, d.Decision.Reason
	out.Allowed = d.Decision.Verdict != "deny"
	for _, st := range d.Trace {
		out.Trace = append(out.Trace, Step{Rule: st.Rule, Matched: st.Matched, Detail: st.Detail})
	}
	if out.Budgets, err = s.budgetsLeft(ctx, d.Budgets); err != nil {
		return nil, out, err
	}
	left := describeBudgets(out.Budgets)
	switch {
	case !out.Allowed:
		return text("Would be denied: %s is refused by rule %q: %s. Lower the amount or pick a destination the policy allows.%s", what, out.Rule, out.Reason, left), out, nil
	case out.Approvals > 0:
		return text("Allowed with approval: %s is tier %s by rule %q and needs %d guardian approval(s); sending it will wait for them.%s", what, out.Tier, out.Rule, out.Approvals, left), out, nil
	}
	return text("Would be allowed: %s is tier %s by rule %q (%s); it signs without a guardian.%s", what, out.Tier, out.Rule, out.Reason, left), out, nil
}

// ---- sign_message, sign_typed_data

type SignMessageIn struct {
	Message string `json:"message" jsonschema:"the message text (or 0x-hex with hex: true)"`
	Hex     bool   `json:"hex,omitempty" jsonschema:"message is 0x-hex bytes"`
	From    string `json:"from,omitempty"`
}

type SignOut struct {
	Outcome
	Signature string `json:"signature,omitempty" jsonschema:"65 bytes, 0x-hex, V = 27 or 28"`
	Signer    string `json:"signer,omitempty"`
}

func (s *Server) signMessage(ctx context.Context, _ *sdk.CallToolRequest, in SignMessageIn) (*sdk.CallToolResult, SignOut, error) {
	var out SignOut
	from, err := s.from(ctx, in.From)
	if err != nil {
		return nil, out, err
	}
	msg := []byte(in.Message)
	if in.Hex {
		if msg, err = hexutil.Decode(in.Message); err != nil {
			return nil, out, fmt.Errorf("message: %v", err)
		}
	}
	var sig hexutil.Bytes
	if err := s.rpc.CallContext(ctx, &sig, "personal_sign", hexutil.Bytes(msg), from); err != nil {
		res, err := signError(err, "the message", &out.Outcome)
		return res, out, err
	}
	out.Status, out.Signature, out.Signer = api.StateSigned, sig.String(), from.Hex()
	return text("Signed the message as %s.", from.Hex()), out, nil
}

type SignTypedDataIn struct {
	TypedData map[string]any `json:"typed_data" jsonschema:"the eth_signTypedData_v4 object: types, primaryType, domain, message"`
	From      string         `json:"from,omitempty"`
}

func (s *Server) signTypedData(ctx context.Context, _ *sdk.CallToolRequest, in SignTypedDataIn) (*sdk.CallToolResult, SignOut, error) {
	var out SignOut
	from, err := s.from(ctx, in.From)
	if err != nil {
		return nil, out, err
	}
	js, err := json.Marshal(in.TypedData)
	if err != nil {
		return nil, out, fmt.Errorf("typed_data: %w", err)
	}
	var td apitypes.TypedData
	if err := json.Unmarshal(js, &td); err != nil {
		return nil, out, fmt.Errorf("typed_data is not EIP-712 typed data: %w", err)
	}
	var sig hexutil.Bytes
	if err := s.rpc.CallContext(ctx, &sig, "eth_signTypedData_v4", from, string(js)); err != nil {
		res, err := signError(err, "the typed data "+td.PrimaryType, &out.Outcome)
		return res, out, err
	}
	out.Status, out.Signature, out.Signer = api.StateSigned, sig.String(), from.Hex()
	return text("Signed %s typed data for %q as %s.", td.PrimaryType, td.Domain.Name, from.Hex()), out, nil
}

// ---- request_status, wait_for_approval

type RequestIn struct {
	RequestID string `json:"request_id" jsonschema:"the request id (req:...)"`
}

type RequestOut struct {
	Outcome
	Kind      string `json:"kind,omitempty"`
	Summary   string `json:"summary,omitempty"`
	Tier      string `json:"tier,omitempty"`
	Approvals int    `json:"approvals,omitempty" jsonschema:"approvals received"`
	Needed    int    `json:"approvals_needed,omitempty"`
	TxHash    string `json:"tx_hash,omitempty"`
	Signature string `json:"signature,omitempty"`
}

func requestOut(r *api.Request) RequestOut {
	out := RequestOut{Outcome: Outcome{Status: r.State, RequestID: string(r.ID), Rule: r.RuleID, Reason: r.Reason},
		Kind: r.Kind, Summary: r.Summary, Tier: r.Tier, Approvals: len(r.Approvals), Needed: r.Needed}
	if r.TxHash != nil {
		out.TxHash = r.TxHash.Hex()
	}
	if len(r.Signature) > 0 {
		out.Signature = hexutil.Encode(r.Signature)
	}
	switch r.State {
	case api.StatePendingApproval:
		out.Next = "Ask a guardian to approve request " + string(r.ID) + ", then call wait_for_approval."
	case api.StateDenied:
		out.Next = "Do not retry unchanged: lower the amount or pick what the policy allows."
	}
	return out
}

func parseRequestID(s string) (ids.RequestID, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "req:") || len(s) > 200 {
		return "", fmt.Errorf("request_id %q is not a request id (req:...)", s)
	}
	return ids.RequestID(s), nil
}

func (s *Server) requestStatus(ctx context.Context, _ *sdk.CallToolRequest, in RequestIn) (*sdk.CallToolResult, RequestOut, error) {
	id, err := parseRequestID(in.RequestID)
	if err != nil {
		return nil, RequestOut{}, err
	}
	r, err := s.cfg.Wallet.Status(ctx, id)
	if err != nil {
		return nil, RequestOut{}, err
	}
	out := requestOut(r)
	return text("Request %s is %s%s.", id, r.State, describeWhy(r)), out, nil
}

func describeWhy(r *api.Request) string {
	switch {
	case r.RuleID != "" && r.Reason != "":
		return fmt.Sprintf(" (rule %q: %s)", r.RuleID, r.Reason)
	case r.RuleID != "":
		return fmt.Sprintf(" (rule %q)", r.RuleID)
	}
	return ""
}

type WaitIn struct {
	RequestID      string `json:"request_id" jsonschema:"the request id (req:...)"`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty" jsonschema:"how long to wait, at most 300; default 60"`
}

func (s *Server) waitForApproval(ctx context.Context, _ *sdk.CallToolRequest, in WaitIn) (*sdk.CallToolResult, RequestOut, error) {
	id, err := parseRequestID(in.RequestID)
	if err != nil {
		return nil, RequestOut{}, err
	}
	timeout := time.Duration(in.TimeoutSeconds) * time.Second
	if in.TimeoutSeconds < 0 {
		return nil, RequestOut{}, fmt.Errorf("timeout_seconds %d is negative", in.TimeoutSeconds)
	}
	if timeout == 0 {
		timeout = time.Minute
	}
	timeout = min(timeout, s.cfg.MaxWait)
	r, err := s.cfg.Wallet.WaitFor(ctx, id, timeout)
	if err != nil {
		return nil, RequestOut{}, err
	}
	out := requestOut(r)
	if r.State == api.StateSigned && len(r.RawTransaction) > 0 {
		// The endpoint gave the nonce back when the wait ran out: another
		// send may have used it since, and then upstream refuses this one
		// as too low (nothing is spent twice).
		var h common.Hash
		if err := s.rpc.CallContext(ctx, &h, "eth_sendRawTransaction", hexutil.Bytes(r.RawTransaction)); err != nil {
			out.Status = api.StateFailed
			out.Next = "The approved transaction could not be sent (" + err.Error() + "); send the transfer again, it will need approval again."
			return &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: "Approved, but sending failed: " + out.Next}}}, out, nil
		}
		out.Status, out.TxHash = "sent", h.Hex()
		return text("Approved and sent: request %s, transaction %s.", id, h.Hex()), out, nil
	}
	switch r.State {
	case api.StateSigned:
		return text("Approved and signed: request %s.", id), out, nil
	case api.StatePendingApproval:
		return text("Still waiting for a guardian on request %s (%d of %d approvals); call wait_for_approval again later.", id, len(r.Approvals), r.Needed), out, nil
	case api.StateDenied:
		return &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: fmt.Sprintf("Denied: request %s%s. %s", id, describeWhy(r), out.Next)}}}, out, nil
	}
	return text("Request %s is %s%s.", id, r.State, describeWhy(r)), out, nil
}

// ---- pay_x402

type PayIn struct {
	URL    string `json:"url" jsonschema:"the http(s) URL of the resource"`
	Method string `json:"method,omitempty" jsonschema:"GET (default) or POST"`
	Body   string `json:"body,omitempty" jsonschema:"request body for POST"`
	From   string `json:"from,omitempty" jsonschema:"the paying address; default the wallet's first"`
}

type PayOut struct {
	Outcome
	HTTPStatus  int    `json:"http_status"`
	ContentType string `json:"content_type,omitempty"`
	Body        string `json:"body,omitempty" jsonschema:"the resource, truncated to the server's bound"`
	Truncated   bool   `json:"truncated,omitempty"`
	Paid        bool   `json:"paid"`
	Amount      string `json:"amount,omitempty" jsonschema:"paid, in the asset's base units"`
	Asset       string `json:"asset,omitempty"`
	Network     string `json:"network,omitempty"`
	PayTo       string `json:"pay_to,omitempty"`
	Settlement  string `json:"settlement_tx,omitempty"`
}

func (s *Server) payX402(ctx context.Context, _ *sdk.CallToolRequest, in PayIn) (*sdk.CallToolResult, PayOut, error) {
	var out PayOut
	from, err := s.from(ctx, in.From)
	if err != nil {
		return nil, out, err
	}
	method := strings.ToUpper(strings.TrimSpace(in.Method))
	if method == "" {
		method = http.MethodGet
	}
	if method != http.MethodGet && method != http.MethodPost {
		return nil, out, fmt.Errorf("method %q: only GET and POST", in.Method)
	}
	if !strings.HasPrefix(in.URL, "http://") && !strings.HasPrefix(in.URL, "https://") {
		return nil, out, fmt.Errorf("url %q is not an http(s) URL", in.URL)
	}
	payer, err := s.cfg.Wallet.Payer(sidecar.PayConfig{From: from, Limits: s.cfg.PayLimits, HTTPClient: s.cfg.PayHTTP})
	if err != nil {
		return nil, out, err
	}
	var body io.Reader
	if in.Body != "" {
		body = strings.NewReader(in.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, in.URL, body)
	if err != nil {
		return nil, out, fmt.Errorf("url: %w", err)
	}
	resp, receipt, err := payer.Do(ctx, req)
	if receipt != nil {
		out.Paid, out.Amount, out.Asset, out.Network, out.PayTo = true, receipt.Requirement.Amount.String(), receipt.Requirement.Asset.Hex(), receipt.Requirement.Network, receipt.Requirement.PayTo.Hex()
		if receipt.Settlement != nil {
			out.Settlement = receipt.Settlement.Transaction
		}
	}
	if err != nil {
		if res, err2 := signError(err, "the x402 payment for "+in.URL, &out.Outcome); err2 == nil {
			return res, out, nil
		}
		out.Status = api.StateDenied
		switch {
		case errors.Is(err, x402.ErrRefused):
			out.Reason = err.Error()
			out.Next = "The price, payee or network is outside what the policy allows: do not retry unchanged; ask a guardian to allow this payee or a higher cap."
		case errors.Is(err, x402.ErrWindow):
			out.Reason = err.Error()
			out.Next = "The server leaves too little time to settle; nothing was signed."
		case errors.Is(err, x402.ErrPaidButRefused):
			out.Status, out.Reason = api.StateFailed, err.Error()
			out.Next = "The server refused a payment it received: do not pay again; report the receipt."
		default:
			return nil, out, err
		}
		return &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: "Not paid: " + out.Reason + ". " + out.Next}}}, out, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(s.cfg.MaxBodyBytes)+1))
	if err != nil {
		return nil, out, fmt.Errorf("read %s: %w", in.URL, err)
	}
	if len(b) > s.cfg.MaxBodyBytes {
		b, out.Truncated = b[:s.cfg.MaxBodyBytes], true
	}
	out.HTTPStatus, out.ContentType, out.Body = resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	out.Status = "fetched"
	if out.Paid {
		out.Status = "paid"
		return text("Paid %s (base units) of %s to %s and fetched %s: HTTP %d, %d bytes.", out.Amount, out.Asset, out.PayTo, in.URL, resp.StatusCode, len(b)), out, nil
	}
	return text("Fetched %s without payment: HTTP %d, %d bytes.", in.URL, resp.StatusCode, len(b)), out, nil
}
