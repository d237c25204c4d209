package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type target struct {
	To    string `json:"to"`
	Value int    `json:"value"`
}

func decodeHandler(limit int64) http.Handler {
	return Wrap(nil, func(w http.ResponseWriter, r *http.Request) error {
		body, err := ReadBody(w, r, limit)
		if err != nil {
			return err
		}
		var t target
		if err := Decode(r, body, &t); err != nil {
			return err
		}
		WriteJSON(w, http.StatusOK, t)
		return nil
	})
}

func call(t *testing.T, h http.Handler, ct, body string) (int, ErrorBody, http.Header) {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/x", strings.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var eb ErrorBody
	if rec.Code != http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == nil {
			t.Fatalf("error response %q is not a structured error: %v", rec.Body.String(), err)
		}
	}
	return rec.Code, eb, rec.Header()
}

func TestDecodeErrors(t *testing.T) {
	h := decodeHandler(64)
	cases := []struct {
		name, ct, body string
		status         int
		code, mention  string
	}{
		{"ok", "application/json", `{"to":"0x1","value":3}`, 200, "", ""},
		{"malformed", "application/json", `{"to":`, 400, CodeMalformed, "ends early"},
		{"syntax", "application/json", `{"to" "x"}`, 400, CodeMalformed, "byte"},
		{"wrong type", "application/json", `{"value":"3"}`, 400, CodeMalformed, "field value"},
		{"unknown field", "application/json", `{"to":"0x1","tx":1}`, 400, CodeUnknownField, `"tx"`},
		{"trailing", "application/json", `{"to":"0x1"} {"to":"0x2"}`, 400, CodeMalformed, "trailing"},
		{"empty", "application/json", ``, 400, CodeMalformed, "empty"},
		{"oversize", "application/json", `{"to":"` + strings.Repeat("a", 100) + `"}`, 413, CodeTooLarge, "limit"},
		{"media type", "text/plain", `{"to":"0x1"}`, 415, CodeMediaType, "text/plain"},
	}
	for _, c := range cases {
		status, eb, _ := call(t, h, c.ct, c.body)
		if status != c.status {
			t.Errorf("%s: status %d, want %d", c.name, status, c.status)
			continue
		}
		if c.code != "" && (eb.Error.Code != c.code || !strings.Contains(eb.Error.Message, c.mention)) {
			t.Errorf("%s: error %+v, want code %s mentioning %q", c.name, eb.Error, c.code, c.mention)
		}
	}
}

func TestWrapHidesInternalErrorsAndPanics(t *testing.T) {
	h := Wrap(nil, func(w http.ResponseWriter, r *http.Request) error {
		if r.URL.Path == "/panic" {
			panic("boom with a secret")
		}
		return errors.New("database path /secret/x failed")
	})
	for _, path := range []string{"/err", "/panic"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 500 || strings.Contains(rec.Body.String(), "secret") || !strings.Contains(rec.Body.String(), CodeInternal) {
			t.Errorf("%s: %d %q", path, rec.Code, rec.Body.String())
		}
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLimiter(2, 2)
	l.now = func() time.Time { return now }
	for i := range 2 {
		if err := l.Allow("bot"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	err := l.Allow("bot")
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 429 || ae.RetryAfter <= 0 || ae.RetryAfter > time.Second {
		t.Fatalf("third request: %v", err)
	}
	if err := l.Allow("other"); err != nil {
		t.Errorf("another credential limited: %v", err)
	}
	now = now.Add(ae.RetryAfter)
	if err := l.Allow("bot"); err != nil {
		t.Errorf("after Retry-After: %v", err)
	}
	rec := httptest.NewRecorder()
	WriteError(rec, ae)
	if rec.Header().Get("Retry-After") != "1" {
		t.Errorf("Retry-After header %q", rec.Header().Get("Retry-After"))
	}
	// Idle buckets are forgotten.
	now = now.Add(5 * time.Minute)
	l.Allow("third")
	if len(l.buckets) != 1 {
		t.Errorf("%d buckets kept, want only the fresh one", len(l.buckets))
	}
}

func TestServeStopsWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := Server("", decodeHandler(1024), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, ln, time.Second) }()
	resp, err := http.Post("http://"+ln.Addr().String()+"/", "application/json", strings.NewReader(`{"to":"a"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"to":"a"`) {
		t.Errorf("response %d %s", resp.StatusCode, b)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("listener still open after shutdown")
	}
}

type inner struct {
	Amount string `json:"amount"`
}

type Embedded struct {
	Note string `json:"note"`
}

type nested struct {
	Embedded
	To     string            `json:"to"`
	Inner  *inner            `json:"inner"`
	List   []inner           `json:"list"`
	Labels map[string]string `json:"labels"`
	Any    any               `json:"any"`
	Raw    json.RawMessage   `json:"raw"`
	Time   time.Time         `json:"time"`
	Plain  string
	Hidden string `json:"-"`
}

// encoding/json keeps the last of two equal keys and matches field names
// regardless of case; another parser of the same bytes (a JavaScript
// wallet, an auditor's tool) reads them otherwise. Both are refused.
func TestDecodeRefusesDuplicateAndCaseFoldedKeys(t *testing.T) {
	ok := []string{
		`{"to":"a","inner":{"amount":"1"},"list":[{"amount":"2"}],"labels":{"a":"x","A":"y"},"any":{"k":1},"raw":{"k":[1,{"k":2}]},"time":"2026-12-01T00:00:00Z","note":"n","Plain":"p"}`,
		`{"inner":null,"list":null}`,
	}
	for _, b := range ok {
		var v nested
		if err := DecodeBytes([]byte(b), &v); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
	bad := map[string]string{
		`{"to":"a","to":"b"}`:                                   `field "to" appears twice`,
		`{"inner":{"amount":"1","amount":"9"}}`:                 `field "inner"."amount" appears twice`,
		`{"list":[{"amount":"1"},{"amount":"1","amount":"2"}]}`: `"list"[1]."amount" appears twice`,
		`{"labels":{"a":"x","a":"y"}}`:                          `"labels"."a" appears twice`,
		`{"any":{"k":1,"k":2}}`:                                 `"any"."k" appears twice`,
		`{"raw":{"k":[{"x":1,"x":2}]}}`:                         `"raw"."k"[0]."x" appears twice`,
		`{"TO":"a"}`:                                            `unknown field "TO" (the field is spelled "to")`,
		`{"inner":{"Amount":"1"}}`:                              `"inner"."Amount"`,
		`{"plain":"p"}`:                                         `spelled "Plain"`,
		`{"Note":"n"}`:                                          `spelled "note"`,
		`{"to":"a","T\u004f":"b"}`:                              `"TO"`,
		`{"to":"a","\u0074o":"b"}`:                              `field "to" appears twice`,
	}
	for b, mention := range bad {
		var v nested
		err := DecodeBytes([]byte(b), &v)
		var ae *Error
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, mention) {
			t.Errorf("%s: %v, want a 400 mentioning %q", b, err, mention)
		}
	}
}
