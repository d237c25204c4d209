package dev_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/cli"
	"github.com/custos-wallet/custos/dev"
	"github.com/custos-wallet/custos/internal/testfixtures"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"
)

// fixtureOrder gives each member the committed pre-parameter fixtures it
// draws, in order: the hot keygen takes the first of agent, policy and
// guardian-1 (0, 1, 2), the vault keygen the next of all four (3, 4, 5,
// 6), so that no session has two members with one set.
var fixtureOrder = map[string][]int{
	dev.NameAgent:     {0, 3},
	dev.NamePolicy:    {1, 4},
	dev.NameGuardian1: {2, 5},
	dev.NameGuardian2: {6},
}

// fixtures hands out a member's fixtures in order, then waits (like a
// pool whose generation is slow) until ctx ends. calls counts every call.
type fixtures struct {
	mu    sync.Mutex
	next  map[string]int
	list  map[string][]int
	calls int
}

func (f *fixtures) generator(member string) tss.Generator {
	return func(ctx context.Context) (*tss.PreParams, error) {
		f.mu.Lock()
		f.calls++
		i := f.next[member]
		if i < len(f.list[member]) {
			f.next[member]++
			f.mu.Unlock()
			lp, err := testfixtures.PreParams(f.list[member][i])
			if err != nil {
				return nil, err
			}
			return tss.NewPreParams(lp)
		}
		f.mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}
}

// syncBuffer is the Out of a cluster: written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func logTo(t *testing.T) io.Writer {
	if os.Getenv("CUSTOS_DEV_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

// runStep runs a printed custos step in-process, as printed (with
// replace applied), and returns its exit code and output.
func runStep(t *testing.T, s dev.Step, stdin string, replace ...string) (int, string) {
	t.Helper()
	args := slices.Clone(s.Args)
	for i := range args {
		args[i] = strings.NewReplacer(replace...).Replace(args[i])
	}
	if args[0] != "custos" {
		t.Fatalf("step %q runs %s, not custos", s.Say, args[0])
	}
	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), Getenv: func(string) string { return "" }}
	code := cli.Run(context.Background(), env, args[1:])
	t.Logf("$ %s\n%s%s", dev.ShellQuote(args), out.String(), errb.String())
	return code, out.String() + errb.String()
}

func balance(t *testing.T, url string, a common.Address) *big.Int {
	t.Helper()
	ec, err := ethclient.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	b, err := ec.BalanceAt(context.Background(), a, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var requestID = regexp.MustCompile(`req:[0-9a-f]{32}`)

// The first run lays the directory out, makes both keys, and every
// printed step works as printed: a hot payment mined, a guarded payment
// approved by guardian-1 through its CLI and mined. The second run on the
// same directory reuses everything: no pre-parameters, no key generation,
// the same keys, and the hot payment it prints works too, as do the steps
// compose setup prints for the compose cluster (the same daemons and keys).
func TestFirstRunThenReuse(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two key generations: a minute or two of CPU")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "dev")
	var out syncBuffer
	first := &fixtures{next: map[string]int{}, list: fixtureOrder}
	opts := dev.Options{Dir: dir, ChainListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", MCPListen: "127.0.0.1:0",
		Out: &out, Log: logTo(t),
		PreParams: first.generator}
	c, err := dev.Start(ctx, opts)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out.String())
	}
	defer c.Close()
	if !c.Created() {
		t.Error("the first run says it reused the directory")
	}
	hot := c.Hot()
	if hot.GuardianFloor != 0 || hot.Threshold != 1 || len(hot.Committee.Members) != 3 {
		t.Errorf("hot key %+v: want 3 members, threshold 1, guardian floor 0", hot)
	}
	if got := balance(t, c.ChainURL(), hot.Address); got.Cmp(dev.HotFunding) != 0 {
		t.Errorf("hot key balance %s, want %s", got, dev.HotFunding)
	}

	steps, err := c.HotSteps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code, o := runCurl(t, steps[0]); code != 200 || !strings.Contains(o, `"result":"0x`) {
		t.Errorf("balance step: HTTP %d: %s", code, o)
	}
	before := balance(t, c.ChainURL(), dev.Vendors[0])
	if code, o := runStep(t, steps[1], ""); code != 0 || !strings.Contains(o, "(broadcast)") {
		t.Fatalf("hot payment step: exit %d", code)
	}
	waitBalance(t, c.ChainURL(), dev.Vendors[0], new(big.Int).Add(before, dev.HotPayment))
	if code, o := runCurl(t, steps[2]); code != 200 || !regexp.MustCompile(`"result":"0x[0-9a-f]{64}"`).MatchString(o) {
		t.Fatalf("sidecar payment step: HTTP %d: %s", code, o)
	}
	waitBalance(t, c.ChainURL(), dev.Vendors[0], new(big.Int).Add(before, new(big.Int).Mul(dev.HotPayment, big.NewInt(2))))
	checkMCP(t, steps[3].Text)
	if code, o := runStep(t, steps[4], ""); code != 0 || !strings.Contains(o, hot.Address.Hex()) {
		t.Errorf("keys list step: exit %d", code)
	}

	select {
	case <-c.VaultReady():
	case <-ctx.Done():
		t.Fatal("no vault key")
	}
	if err := c.VaultErr(); err != nil {
		t.Fatalf("vault key: %v\n%s", err, out.String())
	}
	vault, _ := c.Vault()
	if vault.GuardianFloor != 1 || vault.Threshold != 2 || len(vault.Committee.Members) != 4 {
		t.Errorf("vault key %+v: want 4 members, threshold 2, guardian floor 1", vault)
	}
	if got := balance(t, c.ChainURL(), vault.Address); got.Cmp(dev.VaultFunding) != 0 {
		t.Errorf("vault key balance %s, want %s", got, dev.VaultFunding)
	}
	vs, err := c.VaultSteps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code, o := runStep(t, vs[0], ""); code != 0 || strings.Contains(o, ": signed") {
		t.Fatalf("guarded request step: exit %d (signed before any approval?)", code)
	}
	var id string
	for id == "" {
		code, o := runStep(t, vs[1], "")
		if code != 0 {
			t.Fatalf("guardian pending step: exit %d", code)
		}
		id = requestID.FindString(o)
		if id == "" {
			select {
			case <-ctx.Done():
				t.Fatal("the guarded request never reached guardian-1's queue")
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	if code, _ := runStep(t, vs[2], "y\n", dev.RequestIDPlaceholder, id); code != 0 {
		t.Fatalf("approve step: exit %d", code)
	}
	before = balance(t, c.ChainURL(), dev.Vendors[1])
	if code, o := runStep(t, vs[3], ""); code != 0 || !strings.Contains(o, id) || !strings.Contains(o, "(broadcast)") {
		t.Fatalf("collect step: exit %d", code)
	}
	waitBalance(t, c.ChainURL(), dev.Vendors[1], new(big.Int).Add(before, dev.GuardedPayment))
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	// The second run: fixtures no more, and a generator that would hang
	// a key generation.
	second := &fixtures{next: map[string]int{}, list: map[string][]int{}}
	opts.PreParams = second.generator
	t0 := time.Now()
	c2, err := dev.Start(ctx, opts)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out.String())
	}
	defer c2.Close()
	t.Logf("second run ready in %s", time.Since(t0))
	if c2.Created() {
		t.Error("the second run laid the directory out again")
	}
	select {
	case <-c2.VaultReady():
	case <-ctx.Done():
		t.Fatal("the second run has no vault key")
	}
	if v, ok := c2.Vault(); !ok || v.ID != vault.ID || c2.Hot().ID != hot.ID {
		t.Errorf("second run keys hot %s vault %s, want %s and %s", c2.Hot().ID, v.ID, hot.ID, vault.ID)
	}
	keys, err := c2.REST().Keys(ctx)
	if err != nil || len(keys) != 2 {
		t.Errorf("coordinator keys after the second run: %d (%v), want 2", len(keys), err)
	}
	if n := c2.Generated(); n != 0 {
		t.Errorf("the second run generated %d pre-parameter sets", n)
	}
	steps, err = c2.HotSteps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before = balance(t, c2.ChainURL(), dev.Vendors[0])
	if code, _ := runStep(t, steps[1], ""); code != 0 {
		t.Fatalf("hot payment step of the second run: exit %d", code)
	}
	waitBalance(t, c2.ChainURL(), dev.Vendors[0], new(big.Int).Add(before, dev.HotPayment))
	// What compose setup prints works too: the same daemons and keys.
	checkComposeSteps(t, ctx, c2)
	if err := c2.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	// The command itself on the same directory: ready, both keys' steps
	// printed, and stopped cleanly when its context ends (Ctrl-C).
	var out3 syncBuffer
	opts.Out = &out3
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- dev.Run(rctx, opts) }()
	for !strings.Contains(out3.String(), "guardian approve") {
		select {
		case err := <-done:
			t.Fatalf("Run returned before it was ready: %v\n%s", err, out3.String())
		case <-ctx.Done():
			t.Fatalf("Run never printed the vault steps:\n%s", out3.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run after Ctrl-C: %v", err)
	}
	if o := out3.String(); !strings.Contains(o, "Reusing") || !strings.Contains(o, "Stopped; everything is kept in") {
		t.Errorf("Run's output:\n%s", o)
	}
}

// runCurl does what a printed curl step does (-s, -H, --data, the URL),
// over net/http so that the test needs no curl; it returns the HTTP
// status and body.
func runCurl(t *testing.T, s dev.Step) (int, string) {
	t.Helper()
	if s.Args[0] != "curl" {
		t.Fatalf("step %q runs %s, not curl", s.Say, s.Args[0])
	}
	t.Logf("$ %s", dev.ShellQuote(s.Args))
	hdr := http.Header{}
	var body, url string
	for i := 1; i < len(s.Args); i++ {
		switch a := s.Args[i]; a {
		case "-s":
		case "-H":
			i++
			k, v, _ := strings.Cut(s.Args[i], ":")
			hdr.Add(k, strings.TrimSpace(v))
		case "--data":
			i++
			body = s.Args[i]
		default:
			if strings.HasPrefix(a, "-") || url != "" {
				t.Fatalf("runCurl does not know %q", a)
			}
			url = a
		}
	}
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	t.Logf("%s", b)
	return resp.StatusCode, string(b)
}

// checkMCP initialises an MCP session with the printed configuration:
// the URL and bearer token work, and a request without the token is
// refused.
func checkMCP(t *testing.T, config string) {
	t.Helper()
	var cfg struct {
		MCPServers map[string]struct {
			Type    string            `json:"type"`
			URL     string            `json:"url"`
			Headers map[string]string `json:"headers"`
		} `json:"mcpServers"`
	}
	if err := json.Unmarshal([]byte(config), &cfg); err != nil {
		t.Fatalf("MCP configuration: %v\n%s", err, config)
	}
	srv, ok := cfg.MCPServers["custos"]
	if !ok || srv.Type != "http" {
		t.Fatalf("MCP configuration names no custos http server:\n%s", config)
	}
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"dev-test","version":"1"}}}`
	for _, auth := range []bool{true, false} {
		req, _ := http.NewRequest("POST", srv.URL, strings.NewReader(init))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if auth {
			for k, v := range srv.Headers {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if auth && (resp.StatusCode != 200 || !strings.Contains(string(b), "serverInfo")) {
			t.Errorf("MCP initialize with the printed token: HTTP %d: %s", resp.StatusCode, b)
		}
		if sid := resp.Header.Get("Mcp-Session-Id"); auth && sid != "" {
			// End the session, as a client does when it is done.
			del, _ := http.NewRequest("DELETE", srv.URL, nil)
			for k, v := range srv.Headers {
				del.Header.Set(k, v)
			}
			del.Header.Set("Mcp-Session-Id", sid)
			if resp, err := http.DefaultClient.Do(del); err == nil {
				resp.Body.Close()
			}
		}
		if !auth && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("MCP initialize without a token: HTTP %d, want 401", resp.StatusCode)
		}
	}
}

// waitBalance waits until a's balance is want: the dev chain mines a
// broadcast transaction in its own time.
func waitBalance(t *testing.T, url string, a common.Address, want *big.Int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		got := balance(t, url, a)
		if got.Cmp(want) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("balance of %s is %s, want %s", a.Hex(), got, want)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// A directory that is not a dev directory is refused, and left alone.
func TestRefusesAForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := dev.Start(context.Background(), dev.Options{Dir: dir, ChainListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "not a custos dev directory") {
		t.Fatalf("Start on a foreign directory: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("the foreign directory now holds %d entries", len(ents))
	}
}

func TestShellQuote(t *testing.T) {
	got := dev.ShellQuote([]string{"curl", "-H", "Content-Type: application/json", "--data", `{"a":"it's"}`, "http://127.0.0.1:8545"})
	want := `curl -H 'Content-Type: application/json' --data '{"a":"it'\''s"}' http://127.0.0.1:8545`
	if got != want {
		t.Errorf("ShellQuote = %s\nwant %s", got, want)
	}
	if fmt.Sprint(dev.ShellQuote([]string{""})) != "''" {
		t.Error("an empty argument is not quoted")
	}
}

// A first run that fails while laying the directory out leaves nothing
// behind: no dev directory, no half-made sibling.
func TestFailedLayoutLeavesNothing(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "dev")
	_, err := dev.Start(context.Background(), dev.Options{Dir: dir, ChainListen: "127.0.0.1:0", HTTPListen: "no port here"})
	if err == nil || !strings.Contains(err.Error(), "REST listen address") {
		t.Fatalf("Start with a bad REST address: %v", err)
	}
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		t.Errorf("left behind: %s", e.Name())
	}
}

// With NoVault the cluster makes the hot key only: the vault is reported
// missing at once with ErrNoVault, and no member draws the pre-parameters
// a vault key generation would take.
func TestNoVault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	f := &fixtures{next: map[string]int{}, list: fixtureOrder}
	c, err := dev.Start(ctx, dev.Options{Dir: filepath.Join(t.TempDir(), "dev"), ChainListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		AgentListen: "127.0.0.1:0", MCPListen: "127.0.0.1:0", Log: logTo(t), PreParams: f.generator, NoVault: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-c.VaultReady():
	default:
		t.Fatal("VaultReady not closed at once")
	}
	if err := c.VaultErr(); !errors.Is(err, dev.ErrNoVault) {
		t.Fatalf("VaultErr %v, want %v", err, dev.ErrNoVault)
	}
	if _, ok := c.Vault(); ok {
		t.Fatal("a vault key exists")
	}
	keys, err := c.REST().Keys(ctx)
	if err != nil || len(keys) != 1 || keys[0].ID != c.Hot().ID {
		t.Fatalf("keys %v, %v; want the hot key alone", keys, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}
