package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHealth: custos health exits 0 with "healthy: …" for a 2xx answer or
// a JSON-RPC result, and 1 with "unhealthy: …" and the reason otherwise.
func TestHealth(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"status":"ok"}`))
		case "/rpc":
			w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":"0x539"}`))
		case "/rpcerr":
			w.Write([]byte(`{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"not synced"}}`))
		default:
			http.Error(w, "not ready: no policy document yet", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{srv.URL + "/ok"}, 0, "healthy: " + srv.URL + "/ok: HTTP 200"},
		{[]string{srv.URL + "/down"}, 1, "unhealthy: " + srv.URL + "/down: HTTP 503: not ready: no policy document yet"},
		{[]string{"--rpc", srv.URL + "/rpc"}, 0, "healthy: chain 0x539"},
		{[]string{"--rpc", srv.URL + "/rpcerr"}, 1, "unhealthy: " + srv.URL + "/rpcerr: eth_chainId: not synced"},
		{[]string{"--admin", "unix://" + t.TempDir() + "/none.sock"}, 1, "unhealthy: "},
		{[]string{"http://127.0.0.1:1/v1/health"}, 1, "unhealthy: "},
		{[]string{}, 2, "exactly one of"},
		{[]string{"--rpc", srv.URL, srv.URL}, 2, "exactly one of"},
	} {
		var out, errb bytes.Buffer
		env := &Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
		code := Run(context.Background(), env, append([]string{"health"}, c.args...))
		got := out.String() + errb.String()
		if code != c.code || !strings.Contains(got, c.want) {
			t.Errorf("health %v: exit %d, %q; want exit %d with %q", c.args, code, got, c.code, c.want)
		}
	}
}
