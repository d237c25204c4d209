package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/coordinator"
	"github.com/custos-wallet/custos/p2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errs bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errs, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
	code := Run(context.Background(), env, args)
	return code, out.String(), errs.String()
}

// TestCoordinatorCommands runs coordinator init, then the REST commands
// against that coordinator (its members configured but not running):
// human and JSON output, and clear errors.
func TestCoordinatorCommands(t *testing.T) {
	dir := t.TempDir()
	k, err := p2p.LoadOrCreateIdentity(filepath.Join(dir, "member.key"))
	if err != nil {
		t.Fatal(err)
	}
	member, _ := peer.IDFromPrivateKey(k)
	k2, err := p2p.LoadOrCreateIdentity(filepath.Join(dir, "member2.key"))
	if err != nil {
		t.Fatal(err)
	}
	member2, _ := peer.IDFromPrivateKey(k2)
	code, out, errs := runCmd(t, "coordinator", "init", "--dir", filepath.Join(dir, "c"), "--http", "127.0.0.1:0",
		"--listen", "/ip4/127.0.0.1/tcp/0", "--member", member.String()+":policy@/ip4/127.0.0.1/tcp/9",
		"--member", member2.String()+":agent@/ip4/127.0.0.1/tcp/9",
		"--genesis", "0x1111111111111111111111111111111111111111111111111111111111111111")
	if code != 0 || !strings.Contains(out, "coordinator peer id") || strings.Contains(out, "still to fill in") {
		t.Fatalf("init: %d %s %s", code, out, errs)
	}
	if code, _, errs := runCmd(t, "coordinator", "init", "--dir", filepath.Join(dir, "c")); code != 1 || !strings.Contains(errs, "exists") {
		t.Fatalf("init over a configuration: %d %s", code, errs)
	}
	cfg, err := coordinator.LoadConfig(filepath.Join(dir, "c", "coordinator.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	co, err := coordinator.New(cfg, coordinator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- co.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rest := []string{"--url", co.URL(), "--token-file", filepath.Join(dir, "c", "operator.token")}

	code, out, errs = runCmd(t, append([]string{"keys", "list"}, rest...)...)
	if code != 0 || !strings.Contains(out, "no keys") {
		t.Fatalf("keys list: %d %s %s", code, out, errs)
	}
	code, out, _ = runCmd(t, append([]string{"keys", "list", "--json"}, rest...)...)
	var keys api.Keys
	if code != 0 || json.Unmarshal([]byte(out), &keys) != nil || keys.Keys == nil || len(keys.Keys) != 0 {
		t.Fatalf("keys list --json: %d %s", code, out)
	}
	code, _, errs = runCmd(t, append([]string{"keys", "show", "key:0x2222222222222222222222222222222222222222"}, rest...)...)
	if code != 1 || !strings.Contains(errs, "unknown key") {
		t.Fatalf("keys show unknown: %d %s", code, errs)
	}
	code, _, errs = runCmd(t, append([]string{"keys", "create", "--member", member.String() + ":agent", "--member", member2.String() + ":agent", "--threshold", "1", "--wait=false"}, rest...)...)
	if code != 1 || !strings.Contains(errs, "has role policy here") {
		t.Fatalf("keys create with a wrong role: %d %s", code, errs)
	}
	if code, _, errs := runCmd(t, "keys", "create", "--threshold", "1"); code != 2 || !strings.Contains(errs, "--member") {
		t.Fatalf("keys create without members: %d %s", code, errs)
	}
	code, _, errs = runCmd(t, append([]string{"requests", "show", "req:0123456789abcdef0123456789abcdef"}, rest...)...)
	if code != 1 || !strings.Contains(errs, "unknown request") {
		t.Fatalf("requests show unknown: %d %s", code, errs)
	}
	code, _, errs = runCmd(t, "keys", "list", "--url", co.URL())
	if code != 1 || !strings.Contains(errs, "401") {
		t.Fatalf("keys list without a token: %d %s", code, errs)
	}

	cred := filepath.Join(dir, "bot.credential")
	code, out, errs = runCmd(t, "sign", "new-credential", "--agent", "bot", "--out", cred)
	if code != 0 || !strings.Contains(out, "public key") {
		t.Fatalf("new-credential: %d %s %s", code, out, errs)
	}
	if fi, err := os.Stat(cred); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credential file: %v %v", err, fi.Mode())
	}
	if code, _, errs := runCmd(t, "sign", "new-credential", "--agent", "bot", "--out", cred); code != 1 || !strings.Contains(errs, "exists") {
		t.Fatalf("new-credential over a file: %d %s", code, errs)
	}
	sign := []string{"sign", "--url", co.URL(), "--credential", cred, "--key", "key:0x2222222222222222222222222222222222222222", "--chain-id", "1", "--wait=false"}
	// The coordinator has no policy yet, so it knows no agent.
	code, _, errs = runCmd(t, append(sign, "--message", "hello")...)
	if code != 1 || !strings.Contains(errs, "unknown agent") {
		t.Fatalf("sign before any policy: %d %s", code, errs)
	}
	if code, _, errs := runCmd(t, append(sign, "--message", "a", "--message-hex", "0x61")...); code != 2 || !strings.Contains(errs, "exactly one") {
		t.Fatalf("two payloads: %d %s", code, errs)
	}
	if err := os.Chmod(cred, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCmd(t, append(sign, "--message", "hello")...); code != 1 || !strings.Contains(errs, "chmod 600") {
		t.Fatalf("readable credential: %d %s", code, errs)
	}
}
