package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/policy"
)

// TestSessionRevoke: the revocation `custos session revoke` signs with a
// guardian's keystore is one the policy engine every node runs accepts;
// one signed with an outsider's keystore is refused, and the command
// fails naming why. The test's coordinator checks with the real engine.
func TestSessionRevoke(t *testing.T) {
	pol := testPolicy(t)
	eng := policy.NewEngine(pol, policy.NewMemLedger())
	var got []api.Revocation
	srv := httptest.NewServer(httpapi.Wrap(slog.New(slog.DiscardHandler), func(w http.ResponseWriter, r *http.Request) error {
		if r.Method != "POST" || r.URL.Path != "/v1/revocations" {
			return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no route %s %s", r.Method, r.URL.Path)
		}
		var rv api.Revocation
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rv); err != nil {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "%v", err)
		}
		pr, sig, err := rv.Policy()
		if err == nil {
			err = eng.Revoke(pr, sig)
		}
		if err != nil {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "%v", err)
		}
		got = append(got, rv)
		httpapi.WriteJSON(w, http.StatusOK, api.Pushed{Members: []api.MemberAck{{Member: "policy-1", Accepted: true}}})
		return nil
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	for _, n := range []string{"alice", "mallory"} {
		if err := os.WriteFile(filepath.Join(dir, n+".pw"), []byte("password of "+n+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.ImportKeystore(filepath.Join(dir, n+".json"), "password of "+n, testKey(n), true); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		env := &Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
		code := Run(context.Background(), env, args)
		return code, out.String(), errb.String()
	}
	as := func(name string) []string {
		return []string{"--url", srv.URL, "--wallet-id", pol.WalletID().Hex(),
			"--keystore", filepath.Join(dir, name+".json"), "--password-file", filepath.Join(dir, name+".pw")}
	}

	code, _, errs := run(args("session", "revoke", "sess-1", as("mallory"))...)
	if code != 1 || !strings.Contains(errs, "not a guardian") {
		t.Fatalf("revocation by an outsider: %d %s", code, errs)
	}
	if len(eng.Export().Revoked) != 0 || len(got) != 0 {
		t.Fatal("an outsider's revocation was taken")
	}

	code, out, errs := run(args("session", "revoke", "sess-1", as("alice"), "--json")...)
	if code != 0 {
		t.Fatalf("revocation by a guardian: %d %s", code, errs)
	}
	var res struct {
		Revocation api.Revocation `json:"revocation"`
		Pushed     api.Pushed     `json:"pushed"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Revocation.GrantID != "sess-1" || len(res.Pushed.Members) != 1 {
		t.Fatalf("output: %v %s", err, out)
	}
	rev := eng.Export().Revoked
	if len(rev) != 1 || rev[0].GrantID != "sess-1" || time.Since(rev[0].Issued) > time.Hour {
		t.Fatalf("engine revocations: %+v", rev)
	}

	// The same signature under another wallet's id is not a revocation of
	// this wallet's grant.
	other, err := signRevocation(testKey("alice"), [32]byte{1}, "sess-2", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pr, sig, _ := other.Policy()
	if err := eng.Revoke(pr, sig); err == nil {
		t.Fatal("a revocation signed under another wallet id was accepted")
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{args("session", "revoke", as("alice")), "grant id"},
		{args("session", "revoke", "a", "b", as("alice")), "grant id"},
		{args("session", "revoke", "sess-1", "--url", srv.URL), "--keystore"},
		{args("session", "revoke", "sess-1", as("alice"), "--wallet-id", "0x12"), "--wallet-id"},
	} {
		if code, _, errs := run(c.args...); code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%q: %d %s", c.args, code, errs)
		}
	}
}
