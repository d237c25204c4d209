package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/agentauth"
)

// agent init writes a private credential file and prints the public key
// a guardian adds to the policy's registry; it never overwrites a file;
// the public key printed is the file's.
func TestAgentInit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bot.json")
	code, out, errs := runCmd(t, "agent", "init", "--agent", "bot", "--out", path)
	if code != 0 {
		t.Fatalf("agent init: exit %d\n%s%s", code, out, errs)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credential file %v mode %v", err, fi.Mode())
	}
	cred, err := LoadCredential(path)
	if err != nil {
		t.Fatal(err)
	}
	if cred.Agent() != "bot" || !strings.Contains(out, agentauth.FormatPublicKey(cred.Public())) || !strings.Contains(out, "agents:") {
		t.Fatalf("agent init output does not show the credential's public key:\n%s", out)
	}
	if strings.Contains(out, string(cred.Seed())) {
		t.Fatal("agent init printed the secret")
	}
	before, _ := os.ReadFile(path)
	if code, _, errs := runCmd(t, "agent", "init", "--agent", "bot", "--out", path); code == 0 {
		t.Fatalf("agent init over an existing file succeeded: %s", errs)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("agent init changed an existing credential file")
	}

	code, out, _ = runCmd(t, "agent", "init", "--agent", "helper", "--out", filepath.Join(dir, "helper.json"), "--json")
	var js map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil || js["agent"] != "helper" || !strings.HasPrefix(js["public_key"], "0x") {
		t.Fatalf("agent init --json: exit %d %q", code, out)
	}
}

// Bad command lines are usage errors naming what is wrong, and start
// nothing.
func TestAgentUsage(t *testing.T) {
	cases := []struct {
		args []string
		text string
	}{
		{[]string{"agent", "init"}, "--agent"},
		{[]string{"agent", "init", "--agent", "not an id!", "--out", filepath.Join(t.TempDir(), "x.json")}, "--agent"},
		{[]string{"agent", "frobnicate"}, "unknown agent subcommand"},
		{[]string{"agent", "--credential", "/nonexistent/cred.json"}, "--upstream"},
		{[]string{"agent", "pay"}, "exactly one URL"},
		{[]string{"agent", "pay", "ftp://example.org/x"}, "not an http(s) URL"},
		{[]string{"agent", "pay", "http://127.0.0.1:1/x", "--method", "DELETE"}, "GET or POST"},
		{[]string{"agent", "--upstream", "http://127.0.0.1:1", "--log-level", "loud"}, "--log-level"},
		{[]string{"policy"}, "subcommand"},
		{[]string{"policy", "dry-run", "--key", "key:0x1111111111111111111111111111111111111111"}, "--credential"},
	}
	for _, c := range cases {
		code, out, errs := runCmd(t, c.args...)
		if code == 0 || !strings.Contains(out+errs, c.text) {
			t.Errorf("%v: exit %d, want an error mentioning %q:\n%s%s", c.args, code, c.text, out, errs)
		}
	}
}

// Every agent-facing subcommand builds its flags and prints its usage
// (a flag defined twice would panic here).
func TestAgentCommandsHelp(t *testing.T) {
	for _, args := range [][]string{
		{"agent", "-h"}, {"agent", "init", "-h"}, {"agent", "mcp", "-h"}, {"agent", "pay", "-h"},
		{"policy", "show", "-h"}, {"policy", "dry-run", "-h"},
		{"session", "request", "-h"}, {"session", "grant", "-h"}, {"session", "list", "-h"},
	} {
		_, out, errs := runCmd(t, args...)
		if !strings.Contains(out+errs, "Usage: custos "+args[0]) {
			t.Errorf("%v: no usage printed:\n%s%s", args, out, errs)
		}
	}
}
