package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/store"
)

// stoppedNode makes a store with n audit entries and closes it, as a
// stopped node leaves its data directory.
func stoppedNode(t *testing.T, n int) (dataDir, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	keyFile = newKeyFile(t, dir)
	dataDir = filepath.Join(dir, "data")
	st := openStore(t, dataDir, keyFile)
	for i := 0; i < n; i++ {
		if _, err := st.AppendAudit(context.Background(), store.Entry{Kind: store.AuditDecision, RequestID: "req:0123456789abcdef0123456789abcdef", Decision: "allow", RuleID: fmt.Sprintf("rule-%d", i), Time: time.Unix(1700000000+int64(i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return dataDir, keyFile
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	h := &harness{t: t}
	return h.run("", args...)
}

func TestAuditVerifyOffline(t *testing.T) {
	dataDir, keyFile := stoppedNode(t, 4)
	code, out, errs := runCLI(t, "audit", "verify", "--data-dir", dataDir, "--key-file", keyFile)
	if code != 0 || !strings.Contains(out, "intact: 4 entries") {
		t.Fatalf("verify: %d %s %s", code, out, errs)
	}
	code, out, _ = runCLI(t, "audit", "verify", "--data-dir", dataDir, "--key-file", keyFile, "--json")
	var check admin.AuditCheck
	if code != 0 || json.Unmarshal([]byte(out), &check) != nil || !check.Valid || check.Entries != 4 {
		t.Fatalf("verify --json: %d %s", code, out)
	}

	// Another key is named as the wrong key, never as corrupt data.
	other := filepath.Join(t.TempDir(), "other.key")
	os.WriteFile(other, []byte(strings.Repeat("6b", 32)), 0o600)
	code, _, errs = runCLI(t, "audit", "verify", "--data-dir", dataDir, "--key-file", other)
	if code != 1 || !strings.Contains(errs, "wrong encryption key") {
		t.Fatalf("wrong key: %d %s", code, errs)
	}
	// A mistyped directory is not created empty and reported intact.
	missing := filepath.Join(t.TempDir(), "nothing-here")
	code, _, errs = runCLI(t, "audit", "verify", "--data-dir", missing, "--key-file", keyFile)
	if code != 1 {
		t.Fatalf("missing data dir: %d %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(missing, "MANIFEST")); err == nil {
		t.Fatal("verify created a store")
	}
	// A running node holds the directory: the command says to use --admin.
	st := openStore(t, dataDir, keyFile)
	code, _, errs = runCLI(t, "audit", "verify", "--data-dir", dataDir, "--key-file", keyFile)
	st.Close()
	if code != 1 || !strings.Contains(errs, "--admin") {
		t.Fatalf("locked store: %d %s", code, errs)
	}
}

func TestAuditShowOffline(t *testing.T) {
	dataDir, keyFile := stoppedNode(t, 5)
	code, out, errs := runCLI(t, "audit", "show", "--data-dir", dataDir, "--key-file", keyFile, "--from", "2", "--limit", "2")
	if code != 0 || !strings.Contains(out, "rule-1") || !strings.Contains(out, "rule-2") || strings.Contains(out, "rule-3") || !strings.Contains(out, "--from 4") {
		t.Fatalf("show: %d %s %s", code, out, errs)
	}
	code, out, _ = runCLI(t, "audit", "show", "--data-dir", dataDir, "--key-file", keyFile, "--json")
	var page admin.AuditPage
	if code != 0 || json.Unmarshal([]byte(out), &page) != nil || len(page.Entries) != 5 {
		t.Fatalf("show --json: %d %s", code, out)
	}
	// Anyone holding the entries can recompute the chain.
	for i, e := range page.Entries {
		if e.Entry.ComputeHash() != e.Hash || (i > 0 && e.PrevHash != page.Entries[i-1].Hash) {
			t.Fatalf("entry %d does not chain", e.Seq)
		}
	}
}

func TestAuditUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"audit"}, "needs a subcommand"},
		{[]string{"audit", "verify"}, "--data-dir"},
		{[]string{"audit", "verify", "--data-dir", "x"}, "exactly one of"},
		{[]string{"audit", "verify", "--data-dir", "x", "--admin", "unix:///x"}, "not both"},
		{[]string{"audit", "show", "--admin", "unix:///x", "--limit", "0"}, "--limit"},
		{[]string{"audit", "show", "--admin", "unix:///x", "--from", "5", "--to", "2"}, "before"},
	} {
		code, _, errs := runCLI(t, c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: %d %s, want a usage error with %q", c.args, code, errs, c.want)
		}
	}
}

func TestAuditThroughTheAdminAPI(t *testing.T) {
	h := newHarness(t)
	code, out, errs := h.run("", "audit", "verify", "--admin", h.addr)
	if code != 0 || !strings.Contains(out, "intact: 3 entries") {
		t.Fatalf("verify --admin: %d %s %s", code, out, errs)
	}
	code, out, errs = h.run("", "audit", "show", "--admin", h.addr, "--to", "2")
	if code != 0 || strings.Count(out, "\n") != 2 {
		t.Fatalf("show --admin: %d %q %s", code, out, errs)
	}
}

func TestAuditVerifyNamesTheFirstBadEntry(t *testing.T) {
	h := newHarness(t)
	h.backend.brokenAudit = &store.AuditError{Seq: 2, Problem: "its contents do not match its hash", Err: store.ErrAuditBroken}
	code, out, errs := h.run("", "audit", "verify", "--admin", h.addr)
	if code != 1 || out != "" || !strings.Contains(errs, "broken at entry 2: its contents do not match its hash") {
		t.Fatalf("broken chain: %d %q %s", code, out, errs)
	}
	code, out, _ = h.run("", "audit", "verify", "--admin", h.addr, "--json")
	var check admin.AuditCheck
	if code != 1 || json.Unmarshal([]byte(out), &check) != nil || check.Valid || check.FirstBad != 2 {
		t.Fatalf("broken chain --json: %d %s", code, out)
	}
}
