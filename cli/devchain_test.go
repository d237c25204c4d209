package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/ethclient"
)

// lockedBuffer is a command's output, written while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDevchainCommand runs custos devchain until its context ends: it
// prints a URL that serves the chain id asked for, lists the dev
// accounts, and stops with exit 0.
func TestDevchainCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errs lockedBuffer
	env := &Env{Stdout: &out, Stderr: &errs, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, env, []string{"devchain", "--listen", "127.0.0.1:0", "--chain-id", "31337", "--accounts", "2", "--block-period", "1s"})
	}()
	urlRe := regexp.MustCompile(`at (http://127\.0\.0\.1:\d+) `)
	var url string
	for url == "" {
		if m := urlRe.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("devchain exited %d before serving: %s %s", code, out.String(), errs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	ec, err := ethclient.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	id, err := ec.ChainID(ctx)
	if err != nil || id.Uint64() != 31337 {
		t.Fatalf("chain id %v (%v), want 31337", id, err)
	}
	if !strings.Contains(out.String(), "a block every 1s") || len(regexp.MustCompile(`(?m)^  \d+  0x[0-9a-fA-F]{40}  0x[0-9a-f]{64}$`).FindAllString(out.String(), -1)) != 2 {
		t.Errorf("devchain output:\n%s", out.String())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("devchain exit %d: %s", code, errs.String())
	}
}

func TestDevchainAndDevRefuseBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"devchain", "--block-period", "1500ms"},
		{"devchain", "--listen", "nonsense"},
		{"devchain", "--chain-id", "0"},
		{"devchain", "extra"},
		{"dev", "extra"},
	} {
		if code, _, errs := runCmd(t, args...); code != 2 || errs == "" {
			t.Errorf("custos %s: exit %d, stderr %q; want a usage error", strings.Join(args, " "), code, errs)
		}
	}
}

// A directory that is not a dev directory is refused by name, and left
// alone.
func TestDevRefusesAForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, "dev", "--dir", dir, "--chain-listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errs, "not a custos dev directory") {
		t.Errorf("custos dev on a foreign directory: exit %d: %s", code, errs)
	}
}
