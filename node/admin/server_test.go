package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/store"
	"github.com/prometheus/client_golang/prometheus"
)

// shapeBackend is a fake for the HTTP-shape tests only: it records what
// reached it and answers what the test sets. The checks themselves are
// tested against the real policy engine in the cli package.
type shapeBackend struct {
	mu      sync.Mutex
	calls   []string
	err     error // returned by every method when set
	ready   error
	audit   []store.Entry
	auditN  int
	auditE  error
	pending []PendingRequest
}

func (b *shapeBackend) record(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, name)
	return b.err
}

func (b *shapeBackend) Calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.calls...)
}

func (b *shapeBackend) Pending(ctx context.Context) ([]PendingRequest, error) {
	return b.pending, b.record("pending")
}
func (b *shapeBackend) PendingRequest(ctx context.Context, id ids.RequestID) (*PendingRequest, error) {
	if err := b.record("pending/" + string(id)); err != nil {
		return nil, err
	}
	for i := range b.pending {
		if b.pending[i].RequestID == id {
			return &b.pending[i], nil
		}
	}
	return nil, ErrNotFound
}
func (b *shapeBackend) Approve(ctx context.Context, a api.Approval) (*Delivery, error) {
	if err := b.record("approve"); err != nil {
		return nil, err
	}
	return &Delivery{RequestID: a.RequestID, Forwarded: []ids.MemberID{"coord"}}, nil
}
func (b *shapeBackend) Deny(ctx context.Context, d api.Denial) (*Delivery, error) {
	if err := b.record("deny"); err != nil {
		return nil, err
	}
	return &Delivery{RequestID: d.RequestID}, nil
}
func (b *shapeBackend) Freeze(ctx context.Context, f api.Freeze) (*FreezeResult, error) {
	if err := b.record("freeze"); err != nil {
		return nil, err
	}
	return &FreezeResult{Target: string(f.Target), Applied: true}, nil
}
func (b *shapeBackend) Unfreeze(ctx context.Context, u api.Unfreeze) (*FreezeResult, error) {
	if err := b.record("unfreeze"); err != nil {
		return nil, err
	}
	return &FreezeResult{Target: string(u.Target), Applied: true}, nil
}
func (b *shapeBackend) Wallet(ctx context.Context) (*Wallet, error) {
	if err := b.record("wallet"); err != nil {
		return nil, err
	}
	return &Wallet{Quorum: 2}, nil
}
func (b *shapeBackend) Audit(ctx context.Context, from, to uint64) ([]store.Entry, error) {
	if err := b.record(fmt.Sprintf("audit %d-%d", from, to)); err != nil {
		return nil, err
	}
	var out []store.Entry
	for _, e := range b.audit {
		if e.Seq >= from && (to == 0 || e.Seq <= to) {
			out = append(out, e)
		}
	}
	return out, nil
}
func (b *shapeBackend) VerifyAudit(ctx context.Context) (int, error) {
	if err := b.record("verify"); err != nil {
		return 0, err
	}
	return b.auditN, b.auditE
}
func (b *shapeBackend) Status(ctx context.Context) (*Status, error) {
	if err := b.record("status"); err != nil {
		return nil, err
	}
	return &Status{Pending: len(b.pending)}, nil
}
func (b *shapeBackend) Ready(ctx context.Context) error { return b.ready }

// serveUnix starts a server on a unix socket in a fresh directory and
// returns its address.
func serveUnix(t *testing.T, b Backend, cfg Config) string {
	t.Helper()
	cfg.Addr = "unix://" + filepath.Join(t.TempDir(), "admin.sock")
	serve(t, b, cfg)
	return cfg.Addr
}

func serve(t *testing.T, b Backend, cfg Config) net.Listener {
	t.Helper()
	s, err := NewServer(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln
}

// raw sends one request over the socket and returns the status and body.
func raw(t *testing.T, addr, method, path, contentType string, body []byte, token string) (int, []byte) {
	t.Helper()
	_, where, err := ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		if strings.HasPrefix(addr, "unix:") {
			return (&net.Dialer{}).DialContext(ctx, "unix", where)
		}
		return (&net.Dialer{}).DialContext(ctx, "tcp", where)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://admin"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func errCode(t *testing.T, body []byte) (string, string) {
	t.Helper()
	var eb struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return eb.Error.Code, eb.Error.Message
}

func sig65() string { return "0x" + strings.Repeat("11", 65) }

func validApprovalJSON() string {
	return `{"request_id":"req:0123456789abcdef0123456789abcdef","digest":"0x` + strings.Repeat("ab", 32) +
		`","chain_id":1,"key":"0x1111111111111111111111111111111111111111","issued":"2026-12-01T20:00:00Z","expiry":"2026-12-01T21:00:00Z","signature":"` + sig65() + `"}`
}

func TestBadBodiesNeverReachTheBackend(t *testing.T) {
	b := &shapeBackend{}
	addr := serveUnix(t, b, Config{})
	cases := []struct {
		name, path, ctype, body string
		status                  int
		code, want              string
	}{
		{"malformed", "/admin/v1/approvals", "application/json", `{"request_id":`, 400, httpapi.CodeMalformed, "ends early"},
		{"not an object", "/admin/v1/approvals", "application/json", `[1,2]`, 400, httpapi.CodeMalformed, "want api.Approval"},
		{"unknown field", "/admin/v1/approvals", "application/json", strings.TrimSuffix(validApprovalJSON(), "}") + `,"tier":"hot"}`, 400, httpapi.CodeUnknownField, `"tier"`},
		{"duplicate key", "/admin/v1/approvals", "application/json", strings.TrimSuffix(validApprovalJSON(), "}") + `,"chain_id":2}`, 400, httpapi.CodeMalformed, "chain_id"},
		{"trailing data", "/admin/v1/approvals", "application/json", validApprovalJSON() + `{}`, 400, httpapi.CodeMalformed, "trailing"},
		{"oversize", "/admin/v1/freezes", "application/json", `{"reason":"` + strings.Repeat("x", MaxBody) + `"}`, 413, httpapi.CodeTooLarge, "limit"},
		{"media type", "/admin/v1/approvals", "text/plain", validApprovalJSON(), 415, httpapi.CodeMediaType, "text/plain"},
		{"empty", "/admin/v1/denials", "application/json", ``, 400, httpapi.CodeMalformed, "empty body"},
		{"invalid hex", "/admin/v1/approvals", "application/json", strings.Replace(validApprovalJSON(), `"digest":"0xab`, `"digest":"0xzz`, 1), 400, httpapi.CodeMalformed, "digest"},
		{"short signature", "/admin/v1/approvals", "application/json", strings.Replace(validApprovalJSON(), sig65(), "0x1111", 1), 400, httpapi.CodeBadRequest, "signature is 2 bytes"},
		{"bad request id", "/admin/v1/approvals", "application/json", strings.Replace(validApprovalJSON(), "req:0123", "-req 0123", 1), 400, httpapi.CodeBadRequest, "request_id"},
		{"expiry before issue", "/admin/v1/approvals", "application/json", strings.Replace(validApprovalJSON(), "21:00:00Z", "19:00:00Z", 1), 400, httpapi.CodeBadRequest, "not after issued"},
		{"freeze without target", "/admin/v1/freezes", "application/json", `{"target":"","reason":"x","issued":"2026-12-01T20:00:00Z","signature":"` + sig65() + `"}`, 400, httpapi.CodeBadRequest, "target missing"},
		{"unfreeze without signatures", "/admin/v1/unfreezes", "application/json", `{"target":"all","freeze":"0x` + strings.Repeat("01", 32) + `","issued":"2026-12-01T20:00:00Z","signatures":[]}`, 400, httpapi.CodeBadRequest, "no signatures"},
		{"query on a post", "/admin/v1/denials?x=1", "application/json", `{}`, 400, httpapi.CodeBadRequest, "no query"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := raw(t, addr, http.MethodPost, c.path, c.ctype, []byte(c.body), "")
			code, msg := errCode(t, body)
			if status != c.status || code != c.code || !strings.Contains(msg, c.want) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", status, code, msg, c.status, c.code, c.want)
			}
		})
	}
	if calls := b.Calls(); len(calls) != 0 {
		t.Fatalf("the backend saw %v", calls)
	}
	// The same approval, well formed, does reach it.
	status, body := raw(t, addr, http.MethodPost, "/admin/v1/approvals", "application/json", []byte(validApprovalJSON()), "")
	if status != 200 {
		t.Fatalf("valid approval: %d %s", status, body)
	}
	if calls := b.Calls(); len(calls) != 1 || calls[0] != "approve" {
		t.Fatalf("the backend saw %v", calls)
	}
}

func TestUnixSocketMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.sock")
	serve(t, &shapeBackend{}, Config{Addr: "unix://" + path})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s has mode %v, want a socket with 0600", path, fi.Mode())
	}
	// No other file is left beside it (the private directory it was made in).
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want the socket only", len(ents))
	}
	// Closing removes the socket.
	s1, _ := NewServer(&shapeBackend{}, Config{Addr: "unix://" + filepath.Join(dir, "other.sock")})
	ln, err := s1.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := os.Lstat(filepath.Join(dir, "other.sock")); !os.IsNotExist(err) {
		t.Fatalf("socket left after close: %v", err)
	}
	// A second server on the same live socket is refused.
	s2, err := NewServer(&shapeBackend{}, Config{Addr: "unix://" + path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Listen(); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listen: %v", err)
	}
}

func TestUnixSocketPath(t *testing.T) {
	dir := t.TempDir()
	t.Run("a file that is not a socket", func(t *testing.T) {
		p := filepath.Join(dir, "plain")
		os.WriteFile(p, []byte("x"), 0o600)
		s, _ := NewServer(&shapeBackend{}, Config{Addr: "unix://" + p})
		if _, err := s.Listen(); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("listen over a plain file: %v", err)
		}
		if b, _ := os.ReadFile(p); string(b) != "x" {
			t.Fatal("the file was touched")
		}
	})
	t.Run("a stale socket is replaced", func(t *testing.T) {
		p := filepath.Join(dir, "stale.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
		serve(t, &shapeBackend{}, Config{Addr: "unix://" + p})
		c, err := NewClient("unix://"+p, "")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a missing directory is made private", func(t *testing.T) {
		p := filepath.Join(dir, "run", "admin.sock")
		serve(t, &shapeBackend{}, Config{Addr: "unix://" + p})
		fi, err := os.Stat(filepath.Dir(p))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("made directory: %v %v", fi, err)
		}
	})
	t.Run("a path too long for a socket", func(t *testing.T) {
		p := filepath.Join(dir, strings.Repeat("d", 100), "admin.sock")
		s, _ := NewServer(&shapeBackend{}, Config{Addr: "unix://" + p})
		if _, err := s.Listen(); err == nil || !strings.Contains(err.Error(), "at most 107") {
			t.Fatalf("long path: %v", err)
		}
	})
	t.Run("a mode open to others", func(t *testing.T) {
		if _, err := NewServer(&shapeBackend{}, Config{Addr: "unix://" + filepath.Join(dir, "x.sock"), SocketMode: 0o666}); err == nil {
			t.Fatal("mode 0666 accepted")
		}
	})
}

func writeToken(t *testing.T, mode os.FileMode, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	return p
}

func TestTokenOverTCP(t *testing.T) {
	tok := strings.Repeat("a1", 20)
	tf := writeToken(t, 0o600, tok)
	b := &shapeBackend{}
	ln := serve(t, b, Config{Addr: "http://127.0.0.1:0", TokenFile: tf})
	_ = ln
	addr := "http://" + ln.Addr().String()
	for _, c := range []struct {
		name, token string
		status      int
	}{
		{"no token", "", 401},
		{"wrong token", strings.Repeat("b2", 20), 401},
		{"a prefix of the token", tok[:len(tok)-1], 401},
		{"the token", tok, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/admin/v1/status", "/metrics", "/healthz", "/admin/v1/nothing"} {
				status, body := raw(t, addr, http.MethodGet, path, "", nil, c.token)
				want := c.status
				if path == "/admin/v1/nothing" && want == 200 {
					want = 404
				}
				if status != want {
					t.Fatalf("%s: got %d %s, want %d", path, status, body, want)
				}
				if status == 401 {
					if code, _ := errCode(t, body); code != httpapi.CodeUnauthorized {
						t.Fatalf("%s: code %s", path, code)
					}
				}
			}
		})
	}
	// The client sends the token from its file.
	c, err := NewClientTokenFile(addr, tf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	nc, _ := NewClient(addr, "")
	defer nc.Close()
	var ae *httpapi.Error
	if _, err := nc.Status(context.Background()); !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("tokenless client: %v", err)
	}
}

func TestTokenFileRules(t *testing.T) {
	good := strings.Repeat("c3", 20)
	if _, err := NewServer(&shapeBackend{}, Config{Addr: "http://127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "needs a token file") {
		t.Fatalf("TCP without a token: %v", err)
	}
	if _, err := NewServer(&shapeBackend{}, Config{Addr: "http://127.0.0.1:0", TokenFile: writeToken(t, 0o644, good)}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("token readable by others: %v", err)
	}
	if _, err := NewServer(&shapeBackend{}, Config{Addr: "http://127.0.0.1:0", TokenFile: writeToken(t, 0o600, "short")}); err == nil || !strings.Contains(err.Error(), "at least") {
		t.Fatalf("short token: %v", err)
	}
	if _, err := NewServer(&shapeBackend{}, Config{Addr: "http://127.0.0.1:0", TokenFile: filepath.Join(t.TempDir(), "none")}); err == nil {
		t.Fatal("missing token file accepted")
	}
	for _, remote := range []string{"http://0.0.0.0:7070", "http://192.0.2.1:7070", "http://[::]:7070", "http://admin.example:7070"} {
		if _, err := NewServer(&shapeBackend{}, Config{Addr: remote, TokenFile: writeToken(t, 0o600, good)}); err == nil || !strings.Contains(err.Error(), "not a loopback") {
			t.Errorf("%s: %v", remote, err)
		}
	}
	for _, local := range []string{"http://127.0.0.1:7070", "http://[::1]:7070", "http://localhost:7070"} {
		if _, err := NewServer(&shapeBackend{}, Config{Addr: local, TokenFile: writeToken(t, 0o600, good)}); err != nil {
			t.Errorf("%s: %v", local, err)
		}
	}
	if _, err := NewServer(&shapeBackend{}, Config{Addr: "http://0.0.0.0:7070", TokenFile: writeToken(t, 0o600, good), AllowRemote: true}); err != nil {
		t.Errorf("remote allowed explicitly: %v", err)
	}
	p := filepath.Join(t.TempDir(), "new")
	tok, err := WriteTokenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ReadTokenFile(p); err != nil || got != tok {
		t.Fatalf("read back %q, %v", got, err)
	}
	if _, err := WriteTokenFile(p); err == nil {
		t.Fatal("WriteTokenFile replaced a file")
	}
	for _, bad := range []string{"", "unix://", "tcp://x:1", "http://host", "http://h:1/path", "/just/a/path"} {
		if _, _, err := ParseAddr(bad); err == nil {
			t.Errorf("ParseAddr(%q) accepted", bad)
		}
	}
}

func TestRefusalsAndFailures(t *testing.T) {
	b := &shapeBackend{}
	addr := serveUnix(t, b, Config{})
	c, _ := NewClient(addr, "")
	defer c.Close()
	ctx := context.Background()
	var a api.Approval
	if err := json.Unmarshal([]byte(validApprovalJSON()), &a); err != nil {
		t.Fatal(err)
	}

	b.err = Refusef("approval", "signed by 0xdead, not a guardian of policy v3")
	status, body := raw(t, addr, http.MethodPost, "/admin/v1/approvals", "application/json", []byte(validApprovalJSON()), "")
	code, msg := errCode(t, body)
	if status != 422 || code != CodeRefused || !strings.Contains(msg, "not a guardian") {
		t.Fatalf("refusal: %d %s %q", status, code, msg)
	}
	_, err := c.Approve(ctx, a)
	r, ok := IsRefused(err)
	if !ok || r.Rule != "approval" || r.Reason != "signed by 0xdead, not a guardian of policy v3" || r.Conflict {
		t.Fatalf("client refusal: %#v", err)
	}

	b.err = &Refused{Rule: "approval", Reason: "already used", Conflict: true}
	status, _ = raw(t, addr, http.MethodPost, "/admin/v1/approvals", "application/json", []byte(validApprovalJSON()), "")
	if status != 409 {
		t.Fatalf("conflict: %d", status)
	}
	if _, err := c.Approve(ctx, a); err == nil {
		t.Fatal("no error")
	} else if r, ok := IsRefused(err); !ok || !r.Conflict {
		t.Fatalf("client conflict: %v", err)
	}

	b.err = errors.New("badger: secret internal detail")
	status, body = raw(t, addr, http.MethodGet, "/admin/v1/status", "", nil, "")
	code, msg = errCode(t, body)
	if status != 500 || code != httpapi.CodeInternal || strings.Contains(msg, "secret") {
		t.Fatalf("internal failure: %d %s %q", status, code, msg)
	}

	b.err = nil
	status, body = raw(t, addr, http.MethodGet, "/admin/v1/pending/req:0123456789abcdef0123456789abcdef", "", nil, "")
	if code, _ := errCode(t, body); status != 404 || code != httpapi.CodeNotFound {
		t.Fatalf("unknown request: %d %s", status, body)
	}
	if _, err := c.PendingRequest(ctx, "req:0123456789abcdef0123456789abcdef"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no pending request") {
		t.Fatalf("client, unknown request: %v", err)
	} else if ae := (*httpapi.Error)(nil); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("client, unknown request: not an API error: %v", err)
	}
	status, body = raw(t, addr, http.MethodGet, "/admin/v1/pending/not%20an%20id", "", nil, "")
	if code, msg := errCode(t, body); status != 400 || !strings.Contains(msg, "not an id") {
		t.Fatalf("bad request id: %d %s %s", status, code, msg)
	}
	status, body = raw(t, addr, http.MethodGet, "/admin/v1/approvals", "", nil, "")
	if code, _ := errCode(t, body); status != 405 || code != httpapi.CodeMethod {
		t.Fatalf("GET on a POST endpoint: %d %s", status, body)
	}
	status, body = raw(t, addr, http.MethodDelete, "/admin/v1/pending", "", nil, "")
	if status != 405 {
		t.Fatalf("DELETE: %d %s", status, body)
	}

	b.ready = errors.New("store sealed")
	status, body = raw(t, addr, http.MethodGet, "/healthz", "", nil, "")
	if status != 503 || !strings.Contains(string(body), "store sealed") {
		t.Fatalf("healthz not ready: %d %s", status, body)
	}
	if err := c.Health(ctx); err == nil {
		t.Fatal("client health: no error")
	}
	b.ready = nil
	if err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestAuditQueries(t *testing.T) {
	b := &shapeBackend{}
	for i := uint64(1); i <= 5; i++ {
		b.audit = append(b.audit, store.Entry{Seq: i, Kind: store.AuditRequest, RequestID: "req:0123456789abcdef0123456789abcdef", Time: time.Unix(int64(i), 0).UTC()})
	}
	addr := serveUnix(t, b, Config{})
	c, _ := NewClient(addr, "")
	defer c.Close()
	ctx := context.Background()

	page, err := c.Audit(ctx, 2, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 2 || page.Entries[0].Seq != 2 || page.Next != 4 || page.Entries[0].Summary == "" {
		t.Fatalf("page: %+v", page)
	}
	page, err = c.Audit(ctx, 4, 0, 0)
	if err != nil || len(page.Entries) != 2 || page.Next != 0 {
		t.Fatalf("last page: %+v, %v", page, err)
	}
	for _, q := range []string{"from=x", "to=1&from=3", "limit=0", fmt.Sprintf("limit=%d", MaxAuditPage+1), "from=1&from=2", "since=3"} {
		status, body := raw(t, addr, http.MethodGet, "/admin/v1/audit?"+q, "", nil, "")
		if code, _ := errCode(t, body); status != 400 || code != httpapi.CodeBadRequest {
			t.Errorf("audit?%s: %d %s", q, status, body)
		}
	}

	b.auditN = 5
	check, err := c.VerifyAudit(ctx)
	if err != nil || !check.Valid || check.Entries != 5 {
		t.Fatalf("intact: %+v, %v", check, err)
	}
	b.auditN, b.auditE = 2, &store.AuditError{Seq: 3, Problem: "its contents do not match its hash", Err: store.ErrAuditBroken}
	check, err = c.VerifyAudit(ctx)
	if err != nil || check.Valid || check.FirstBad != 3 || !strings.Contains(check.Problem, "do not match") {
		t.Fatalf("broken: %+v, %v", check, err)
	}
	b.auditE = fmt.Errorf("read: %w", store.ErrSealed)
	if _, err := c.VerifyAudit(ctx); err == nil {
		t.Fatal("a failure to read the chain reported as a check")
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	// A first server on the same registry, as before a restart.
	if _, err := NewServer(&shapeBackend{}, Config{Addr: "unix:///x.sock", Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	addr := serveUnix(t, &shapeBackend{}, Config{Gatherer: reg, Registerer: reg})
	raw(t, addr, http.MethodGet, "/admin/v1/status", "", nil, "")
	status, body := raw(t, addr, http.MethodGet, "/metrics", "", nil, "")
	if status != 200 || !strings.Contains(string(body), `custos_admin_requests_total{route="status",status="2xx"} 1`) {
		t.Fatalf("metrics: %d %s", status, body)
	}
}

func bigInt(v int64) *big.Int { return big.NewInt(v) }
