package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/devchain"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/params"
)

// Step is one printed next step: what it does and the command, exactly
// as it runs (the custos binary as Options.Program names it, or curl).
type Step struct {
	Say  string
	Args []string
	// Text is shown instead of a command (a configuration to paste).
	Text string
}

// RequestIDPlaceholder stands in a printed command for the id of a
// request that an earlier step creates.
const RequestIDPlaceholder = "REQUEST_ID"

// The payments the printed steps make.
var (
	HotPayment     = new(big.Int).Mul(big.NewInt(5), big.NewInt(params.Ether/1000))   // 0.005 ETH: tier hot
	GuardedPayment = new(big.Int).Mul(big.NewInt(500), big.NewInt(params.Ether/1000)) // 0.5 ETH: tier guarded
)

// HotSteps are the steps that work once the hot key exists. The payment
// is built at the key's next nonce now, so print them afresh each run.
func (c *Cluster) HotSteps(ctx context.Context) ([]Step, error) {
	hot := c.Hot()
	tx, err := paymentTx(ctx, c.eth, c.chain.ChainID(), hot.Address, Vendors[0], HotPayment)
	if err != nil {
		return nil, err
	}
	balance := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["%s","latest"]}`, Vendors[0].Hex())
	send := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"eth_sendTransaction","params":[{"from":"%s","to":"%s","value":"%s"}]}`,
		hot.Address.Hex(), Vendors[0].Hex(), hexutil.EncodeBig(HotPayment))
	return []Step{
		{Say: fmt.Sprintf("Vendor %s's balance on the dev chain (plain JSON-RPC: any Ethereum client works):", Vendors[0].Hex()),
			Args: []string{"curl", "-s", "-H", "Content-Type: application/json", "--data", balance, c.ChainURL()}},
		{Say: fmt.Sprintf("Pay that vendor %s ETH from the hot key, as the agent: tier hot, the agent and policy nodes sign with no human, and the transaction is mined:", formatEther(HotPayment)),
			Args: c.signArgs(hot, tx, "--broadcast")},
		{Say: "The same through the agent sidecar's Ethereum JSON-RPC endpoint, as any wallet client sends it (it fills nonce, gas and fees, signs through the cluster and broadcasts; the answer is the transaction hash):",
			Args: []string{"curl", "-s", "-H", "Content-Type: application/json", "--data", send, c.AgentRPCURL()}},
		{Say: "The agent sidecar's MCP server, for an LLM agent: put this in your MCP client's configuration (Claude Code: .mcp.json):",
			Text: c.MCPConfig()},
		{Say: "The keys, as the operator (committees, thresholds, guardian floors):",
			Args: c.command("keys", "list", "--url", c.URL(), "--token-file", c.OperatorTokenFile())},
	}, nil
}

// VaultSteps are the steps of a guarded payment from the vault key: the
// agent asks, guardian-1 approves with its keystore, the agent collects
// and broadcasts.
func (c *Cluster) VaultSteps(ctx context.Context) ([]Step, error) {
	vault, ok := c.Vault()
	if !ok {
		return nil, fmt.Errorf("no vault key yet")
	}
	tx, err := paymentTx(ctx, c.eth, c.chain.ChainID(), vault.Address, Vendors[1], GuardedPayment)
	if err != nil {
		return nil, err
	}
	idem := fmt.Sprintf("dev-guarded-%d", time.Now().Unix())
	admin := "unix://" + c.AdminSocket(NameGuardian1)
	return []Step{
		{Say: fmt.Sprintf("Ask to pay vendor %s %s ETH from the vault key: tier guarded, so it waits for one guardian:", Vendors[1].Hex(), formatEther(GuardedPayment)),
			Args: c.signArgs(vault, tx, "--idempotency-key", idem, "--wait=false")},
		{Say: "guardian-1's queue, with the request decoded by its own node (note the request id):",
			Args: c.command("guardian", "pending", "--admin", admin)},
		{Say: fmt.Sprintf("Approve it as guardian-1 (an EIP-712 signature by its keystore account; password %q, in %s), with the id in place of %s:", GuardianPassword, c.PasswordFile(), RequestIDPlaceholder),
			Args: c.command("guardian", "approve", RequestIDPlaceholder, "--admin", admin, "--keystore", c.Keystore(NameGuardian1), "--password-file", c.PasswordFile())},
		{Say: "Collect the signature and broadcast (the same idempotency key returns the same request):",
			Args: c.signArgs(vault, tx, "--idempotency-key", idem, "--broadcast")},
	}, nil
}

func (c *Cluster) signArgs(k api.Key, tx string, extra ...string) []string {
	args := c.command("sign", "--url", c.URL(), "--credential", c.CredentialFile(),
		"--key", k.ID.String(), "--chain-id", fmt.Sprint(c.ChainID()), "--tx", tx)
	return append(args, extra...)
}

// command is a custos command line, the binary named as Options.Program
// says (one word, or several such as "go run ./cmd/custos").
func (c *Cluster) command(args ...string) []string {
	return append(strings.Fields(c.program), args...)
}

// paymentTx is an unsigned payment from a key at its next nonce, as the
// 0x-hex binary `custos sign --tx` takes.
func paymentTx(ctx context.Context, eth *ethclient.Client, chainID *big.Int, from, to common.Address, value *big.Int) (string, error) {
	nonce, err := eth.PendingNonceAt(ctx, from)
	if err != nil {
		return "", fmt.Errorf("nonce of %s: %w", from.Hex(), err)
	}
	feeCap, tip, err := chainFees(ctx, eth)
	if err != nil {
		return "", err
	}
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: chainID, Nonce: nonce, To: &to, Value: value,
		Gas: 21000, GasFeeCap: feeCap, GasTipCap: tip})
	raw, err := tx.MarshalBinary()
	if err != nil {
		return "", err
	}
	return hexutil.Encode(raw), nil
}

// Summary describes the running cluster in a few lines.
func (c *Cluster) Summary() string {
	var b strings.Builder
	acct, _ := devchain.DevAccount(0)
	g1, _ := GuardianKey(1)
	g2, _ := GuardianKey(2)
	hot := c.Hot()
	fmt.Fprintf(&b, "\n  dev chain (JSON-RPC)  %s  chain id %d; dev account 0 %s (key public: dev only)\n", c.ChainURL(), c.ChainID(), acct.Address.Hex())
	fmt.Fprintf(&b, "  coordinator (REST)    %s/v1  operator token in %s\n", c.URL(), c.OperatorTokenFile())
	fmt.Fprintf(&b, "  agent credential      %s (agent %s)\n", c.CredentialFile(), AgentID)
	fmt.Fprintf(&b, "  agent sidecar         JSON-RPC %s  MCP %s (bearer token in %s)\n", c.AgentRPCURL(), c.MCPURL(), c.p.mcpToken())
	fmt.Fprintf(&b, "  guardian-1            %s  keystore %s\n", crypto.PubkeyToAddress(g1.PublicKey).Hex(), c.Keystore(NameGuardian1))
	fmt.Fprintf(&b, "  guardian-2            %s  keystore %s\n", crypto.PubkeyToAddress(g2.PublicKey).Hex(), c.Keystore(NameGuardian2))
	fmt.Fprintf(&b, "                        keystore password %q (in %s)\n", GuardianPassword, c.PasswordFile())
	fmt.Fprintf(&b, "  guardian admin APIs   unix://%s, unix://%s\n", c.AdminSocket(NameGuardian1), c.AdminSocket(NameGuardian2))
	fmt.Fprintf(&b, "  hot key               %s (agent, policy, guardian-1; any 2 sign; guardian floor %d)\n", hot.Address.Hex(), hot.GuardianFloor)
	if v, ok := c.Vault(); ok {
		fmt.Fprintf(&b, "  vault key             %s (all four; any 3 sign; guardian floor %d)\n", v.Address.Hex(), v.GuardianFloor)
	} else {
		fmt.Fprintf(&b, "  vault key             being made in the background (all four; any 3 sign; guardian floor 1)\n")
	}
	fmt.Fprintf(&b, "  policy                %s (hot: up to 0.01 ETH to the vendors; guarded: up to 1 ETH; vault: up to 100 ETH)\n", c.p.policySource())
	fmt.Fprintf(&b, "  daemon logs           %s\n", c.p.log())
	return b.String()
}

// FormatSteps prints steps numbered from first, each command quoted for
// a POSIX shell.
func FormatSteps(steps []Step, first int) string {
	var b strings.Builder
	for i, s := range steps {
		body := ShellQuote(s.Args)
		if s.Args == nil {
			body = strings.ReplaceAll(s.Text, "\n", "\n   ")
		}
		fmt.Fprintf(&b, "\n%d. %s\n   %s\n", first+i, s.Say, body)
	}
	b.WriteString("\n")
	return b.String()
}

// ShellQuote joins args into one POSIX shell command line.
func ShellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = quoteArg(a)
	}
	return strings.Join(q, " ")
}

func quoteArg(s string) string {
	if s == "" {
		return "''"
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./:=@,+-%", r)) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}

func formatEther(wei *big.Int) string {
	s := new(big.Rat).SetFrac(wei, big.NewInt(params.Ether)).FloatString(18)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

func readSignedPolicy(path string) (api.PolicyDocument, error) {
	var d api.PolicyDocument
	b, err := os.ReadFile(path)
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// genTracker counts pre-parameter generations for the progress estimate.
// A set costs about prior of CPU time, but it is found by chance (safe
// primes), so any estimate is rough; what the tracker does know is how
// much CPU this process has had since each set began (shared equally
// among the sets running) and how fast it gets more, which on a busy
// machine is much less than all of its cores.
type genTracker struct {
	cores int
	prior time.Duration // CPU time of one set, before any finished here

	mu      sync.Mutex
	next    int
	running map[int]*genRun // guarded by mu
	done    []time.Duration // CPU time of the sets finished; guarded by mu
	lastCPU time.Duration   // process CPU at the last accrual; guarded by mu
	rateCPU time.Duration   // process CPU and time when sets began running; guarded by mu
	rateAt  time.Time       // guarded by mu
}

type genRun struct {
	start time.Time
	cpu   time.Duration // its share of the process's CPU so far
}

// accrueLocked shares the CPU used since the last call among the running
// sets. It reports whether the process CPU is known.
func (g *genTracker) accrueLocked() bool {
	cpu, known := processCPU()
	if !known {
		return false
	}
	if n := len(g.running); n > 0 {
		share := (cpu - g.lastCPU) / time.Duration(n)
		for _, r := range g.running {
			r.cpu += share
		}
	}
	g.lastCPU = cpu
	return true
}

// begin counts a generation as started; the func it returns ends it.
func (g *genTracker) begin() func(ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running == nil {
		g.running = map[int]*genRun{}
	}
	g.accrueLocked()
	if len(g.running) == 0 {
		g.rateCPU, g.rateAt = g.lastCPU, time.Now()
	}
	id := g.next
	g.next++
	r := &genRun{start: time.Now()}
	g.running[id] = r
	return func(ok bool) {
		g.mu.Lock()
		defer g.mu.Unlock()
		known := g.accrueLocked()
		delete(g.running, id)
		if ok {
			if known {
				g.done = append(g.done, r.cpu)
			} else {
				g.done = append(g.done, time.Since(r.start))
			}
		}
	}
}

func (g *genTracker) completed() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.done)
}

// summary is one line of progress with an estimate: the CPU the running
// sets still need (prior, or the mean of the sets done here, less what
// each had), over the rate at which this process has got CPU since they
// began.
func (g *genTracker) summary() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := len(g.running)
	if n == 0 {
		return fmt.Sprintf("%d pre-parameter sets made; the members are taking them", len(g.done))
	}
	per := g.prior
	if len(g.done) > 0 {
		var sum time.Duration
		for _, d := range g.done {
			sum += d
		}
		per = sum / time.Duration(len(g.done))
	}
	known := g.accrueLocked()
	now := time.Now()
	rate := float64(min(n, g.cores)) // cores' worth of CPU per second
	if known && now.Sub(g.rateAt) > 5*time.Second {
		if r := float64(g.lastCPU-g.rateCPU) / float64(now.Sub(g.rateAt)); r > 0.05 {
			rate = r
		}
	}
	var need time.Duration
	for _, r := range g.running {
		had := r.cpu
		if !known {
			had = time.Duration(float64(now.Sub(r.start)) * rate / float64(n))
		}
		if l := per - had; l > 0 {
			need += l
		}
	}
	est := "longer than usual: safe primes are found by chance, any moment now"
	if need > 0 {
		// The sets run in parallel: no faster than one core each.
		left := time.Duration(float64(need) / min(rate, float64(n)))
		est = "about " + left.Round(5*time.Second).String() + " left"
	}
	busy := ""
	if rate < float64(min(n, g.cores))*0.75 {
		busy = fmt.Sprintf(" (this machine is busy: %.1f of %d cores for us)", rate, g.cores)
	}
	return fmt.Sprintf("%d members generating pre-parameters, %d sets done, %s%s", n, len(g.done), est, busy)
}
