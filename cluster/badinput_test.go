package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

// Bad input over REST to the full cluster gets a clear 4xx error and
// leaves nothing behind: no request at the coordinator, nothing in any
// node's audit log. (The coordinator's own tests cover the rest.)
func TestBadInputOverREST(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	good := func(mod func(map[string]any)) []byte {
		m := map[string]any{
			"key": hotKey.ID.String(), "chain_id": simChainID, "kind": "transaction",
			"payload": c.w.unsignedTx(t, hotKey.Address, vendor1, eth(1)), "idempotency_key": idem("bad"),
			"expiry": expiry().Format(time.RFC3339),
		}
		mod(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	unknownKey := ids.KeyIDOf(common.HexToAddress("0x00000000000000000000000000000000000000aa"))
	cases := []struct {
		name   string
		body   []byte
		status []int
		says   string
	}{
		{"malformed JSON", []byte(`{"key": "` + hotKey.ID.String() + `", "chain_id": 1337,`), []int{400}, ""},
		{"unknown field", good(func(m map[string]any) { m["broadcast"] = true }), []int{400}, "broadcast"},
		{"invalid hex", good(func(m map[string]any) { m["payload"] = "0x02zz" }), []int{400}, "hex"},
		{"wrong chain id", good(func(m map[string]any) { m["chain_id"] = 1 }), []int{400, 422}, "chain"},
		{"unknown key", good(func(m map[string]any) { m["key"] = unknownKey.String() }), []int{400, 404, 422}, "key"},
		{"from is not the key's address", good(func(m map[string]any) { m["from"] = stranger.Hex() }), []int{400, 422}, "from"},
		{"oversize body", good(func(m map[string]any) { m["idempotency_key"] = strings.Repeat("x", 3<<20) }), []int{413}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.callAgent(ctx, c.w.bot, "POST", "/v1/requests", tc.body, nil)
			var re *restError
			if !errors.As(err, &re) {
				t.Fatalf("answer %v, want an HTTP error", err)
			}
			ok := false
			for _, s := range tc.status {
				ok = ok || re.Status == s
			}
			if !ok || re.Body.Code == "" || re.Body.Message == "" {
				t.Fatalf("HTTP %d %q, want one of %v with a code and a message", re.Status, re.Raw, tc.status)
			}
			if tc.says != "" && !strings.Contains(strings.ToLower(re.Body.Message), tc.says) {
				t.Errorf("message %q does not say %q", re.Body.Message, tc.says)
			}
			t.Logf("%s: HTTP %d %s: %s", tc.name, re.Status, re.Body.Code, re.Body.Message)
			// Nothing stored half-way.
			var m map[string]any
			if json.Unmarshal(tc.body, &m) == nil {
				if k, _ := m["idempotency_key"].(string); k != "" && len(k) < 200 {
					id := control.RequestID(agentBot, k)
					err := c.call(ctx, "GET", "/v1/requests/"+string(id), nil, c.opToken, nil)
					if !errors.As(err, &re) || re.Status != 404 {
						t.Errorf("GET the refused request %s: %v, want 404", id, err)
					}
					for _, n := range memberNames {
						if es, err := c.node(n).Store().AuditByRequest(ctx, id); err != nil || len(es) != 0 {
							t.Errorf("%s audited the refused request: %v %v", n, es, err)
						}
					}
				}
			}
		})
	}
	// Operator endpoints: bad JSON and unknown fields, with the operator
	// token; no token at all.
	for _, tc := range []struct {
		name, path, body, token string
		status                  int
	}{
		{"policy malformed", "/v1/policy", `{"source": `, c.opToken, 400},
		{"policy unknown field", "/v1/policy", `{"source": "x", "signatures": [], "force": true}`, c.opToken, 400},
		{"keys without a token", "/v1/keys", `{"committee": [], "threshold": 1}`, "", 401},
		{"keys unknown field", "/v1/keys", `{"committee": [], "threshold": 1, "dealer": "me"}`, c.opToken, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.call(ctx, "POST", tc.path, tc.body, tc.token, nil)
			var re *restError
			if !errors.As(err, &re) || re.Status != tc.status || re.Body.Message == "" {
				t.Fatalf("answer %v, want HTTP %d with a message", err, tc.status)
			}
			t.Logf("%s: HTTP %d %s: %s", tc.name, re.Status, re.Body.Code, re.Body.Message)
		})
	}
	// And the cluster still works as before.
	var k map[string]any
	if err := c.call(ctx, "GET", "/v1/keys/"+hotKey.ID.String(), nil, c.opToken, &k); err != nil {
		t.Fatal(err)
	}
}
