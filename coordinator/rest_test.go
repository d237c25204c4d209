package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"encoding/json"
	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// TestSubmitBadInput sends malformed, oversize, unknown-field, unknown-key,
// bad-hex, wrong-chain, stale and replayed requests: each gets a clear
// error with a stable code, and the store holds no request after any.
func TestSubmitBadInput(t *testing.T) {
	e := newEnv(t, "")
	unknownKey := fmt.Sprintf("%q", "key:0x2222222222222222222222222222222222222222")
	good := e.body(nil)
	replayed := func(r *http.Request) {}
	{
		// A request whose signature was used once: the second use is a
		// replay even though the first one was refused for its body.
		body := e.body(map[string]string{"chain_id": "5"})
		req, _ := http.NewRequest("POST", e.c.URL()+"/v1/requests", bytes.NewReader(body))
		e.bot.SignHTTP(req, body, e.clock.Now())
		hdr := req.Header.Clone()
		replayed = func(r *http.Request) {
			for k, v := range hdr {
				r.Header[k] = v
			}
		}
		if code, _, b := e.raw("POST", "/v1/requests", body, replayed); code != http.StatusBadRequest {
			t.Fatalf("first use: %d %s", code, b)
		}
	}
	cases := []struct {
		name    string
		body    []byte
		prepare func(*http.Request)
		status  int
		code    string
		want    string
	}{
		{"malformed JSON", []byte(`{"key": `), nil, 400, httpapi.CodeMalformed, "malformed JSON"},
		{"unknown field", e.body(map[string]string{"amount": "1"}), nil, 400, httpapi.CodeUnknownField, "amount"},
		{"field given twice", []byte(strings.Replace(string(good), `"kind"`, `"kind": "transaction", "kind"`, 1)), nil, 400, httpapi.CodeMalformed, "kind"},
		{"oversize body", bytes.Repeat([]byte(" "), api.MaxSignRequestBody+1), nil, 413, httpapi.CodeTooLarge, "exceeds"},
		{"unknown key", e.body(map[string]string{"key": unknownKey}), nil, 404, httpapi.CodeNotFound, "unknown key"},
		{"invalid hex", e.body(map[string]string{"payload": `"0xzz"`}), nil, 400, httpapi.CodeBadRequest, "hex"},
		{"wrong chain id", e.body(map[string]string{"chain_id": "5", "payload": fmt.Sprintf("%q", txHex(t, 5, 0))}), nil, 400, httpapi.CodeBadRequest, "serves chain 31337"},
		{"from of another address", e.body(map[string]string{"from": `"0x3333333333333333333333333333333333333333"`}), nil, 400, httpapi.CodeBadRequest, "is not the address"},
		{"expired", e.body(map[string]string{"expiry": fmt.Sprintf("%q", e.clock.Now().Add(-time.Minute).Format(time.RFC3339))}), nil, 400, httpapi.CodeBadRequest, "has passed"},
		{"stale signature", good, func(r *http.Request) { e.bot.SignHTTP(r, good, e.clock.Now().Add(-time.Hour)) }, 401, httpapi.CodeUnauthorized, "timestamp"},
		{"replayed signature", e.body(map[string]string{"chain_id": "5"}), replayed, 401, httpapi.CodeUnauthorized, "nonce"},
		{"signature over another body", good, func(r *http.Request) {
			e.bot.SignHTTP(r, e.body(map[string]string{"idempotency_key": `"x"`}), e.clock.Now())
		}, 401, httpapi.CodeUnauthorized, "does not verify"},
		{"unregistered agent", good, func(r *http.Request) {
			cred, _ := agentauth.NewCredential("intruder")
			cred.SignHTTP(r, good, e.clock.Now())
		}, 401, httpapi.CodeUnauthorized, "unknown agent"},
		{"unsigned", good, func(*http.Request) {}, 401, httpapi.CodeUnauthorized, "agent credential"},
		{"operator token", good, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken) }, 403, httpapi.CodeForbidden, "not an operator token"},
		{"bad token", good, func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, 401, httpapi.CodeUnauthorized, "unknown operator token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prepare := tc.prepare
			if prepare == nil {
				prepare = e.signedBy(e.bot, tc.body)
			}
			status, _, b := e.raw("POST", "/v1/requests", tc.body, prepare)
			var eb httpapi.ErrorBody
			decodeJSON(t, b, &eb)
			if status != tc.status || eb.Error == nil || eb.Error.Code != tc.code || !strings.Contains(eb.Error.Message, tc.want) {
				t.Fatalf("got %d %s, want %d %s containing %q", status, b, tc.status, tc.code, tc.want)
			}
			if n := len(e.requests()); n != 0 {
				t.Fatalf("%d requests stored after a refused submission", n)
			}
		})
	}
}

// TestOperatorEndpoints checks that operator actions need an operator
// token: an agent credential is refused with 403, no credential with 401,
// and a bad committee is named.
func TestOperatorEndpoints(t *testing.T) {
	e := newEnv(t, "")
	ck := fmt.Appendf(nil, `{"committee": [{"id": %q, "role": "agent"}, {"id": %q, "role": "policy"}], "threshold": 1}`, e.members[0], e.members[1])
	for _, path := range []string{"/v1/keys", "/v1/policy", "/v1/keys/" + e.key.ID().String() + "/reshare"} {
		status, _, b := e.raw("POST", path, ck, e.signedBy(e.bot, ck))
		if status != http.StatusForbidden || !strings.Contains(string(b), "agent credential cannot") {
			t.Errorf("agent on %s: %d %s", path, status, b)
		}
		status, _, b = e.raw("POST", path, ck, nil)
		if status != http.StatusUnauthorized {
			t.Errorf("anonymous on %s: %d %s", path, status, b)
		}
	}
	status, _, b := e.raw("GET", "/v1/audit", nil, e.signedBy(e.bot, nil))
	if status != http.StatusForbidden {
		t.Errorf("agent reading the audit log: %d %s", status, b)
	}
	ctx := context.Background()
	_, err := e.op.CreateKey(ctx, api.CreateKey{Committee: []api.CommitteeMember{{ID: e.members[0], Role: "agent"}, {ID: "12D3KooWnotamember", Role: "policy"}}, Threshold: 1})
	if !client.IsCode(err, httpapi.CodeBadRequest) || !strings.Contains(err.Error(), "not a configured member") {
		t.Errorf("unknown member: %v", err)
	}
	_, err = e.op.CreateKey(ctx, api.CreateKey{Committee: []api.CommitteeMember{{ID: e.members[0], Role: "policy"}, {ID: e.members[1], Role: "policy"}}, Threshold: 1})
	if !client.IsCode(err, httpapi.CodeBadRequest) || !strings.Contains(err.Error(), "role agent here") {
		t.Errorf("wrong role: %v", err)
	}
	_, err = e.op.CreateKey(ctx, api.CreateKey{Committee: []api.CommitteeMember{{ID: e.members[0], Role: "agent"}}, Threshold: 1})
	if !client.IsCode(err, httpapi.CodeBadRequest) {
		t.Errorf("threshold above the committee: %v", err)
	}
	if _, err := e.op.Key(ctx, e.key.ID()); err != nil {
		t.Errorf("show key: %v", err)
	}
	_, err = e.op.Reshare(ctx, e.key.ID(), api.ReshareKey{Committee: []api.CommitteeMember{{ID: e.members[0], Role: "agent"}, {ID: e.members[1], Role: "policy"}}, Threshold: 1,
		Authorization: api.Reshare{Key: common.HexToAddress("0x01"), Signatures: nil}})
	if !client.IsCode(err, httpapi.CodeBadRequest) || !strings.Contains(err.Error(), "authorization names key") {
		t.Errorf("reshare with an authorisation for another key: %v", err)
	}
	ops, err := e.c.store.Requests(ctx, func(r store.RequestRecord) bool { return strings.HasPrefix(string(r.ID), opPrefix) })
	if err != nil || len(ops) != 0 {
		t.Errorf("operations stored after refused calls: %d %v", len(ops), err)
	}
}

// TestRateLimit answers a credential over its rate with 429 and a
// Retry-After header.
func TestRateLimit(t *testing.T) {
	e := newEnv(t, "rate_limits: {anonymous: {per_second: 0.01, burst: 1}}\n")
	body := []byte(`{}`)
	status, _, b := e.raw("POST", "/v1/freezes", body, nil)
	if status != http.StatusBadRequest {
		t.Fatalf("first: %d %s", status, b)
	}
	status, hdr, b := e.raw("POST", "/v1/freezes", body, nil)
	if status != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" || !strings.Contains(string(b), httpapi.CodeRateLimited) {
		t.Fatalf("second: %d %v %s", status, hdr, b)
	}
	// Another credential has its own bucket.
	if _, err := e.op.Keys(context.Background()); err != nil {
		t.Fatalf("operator after anonymous was limited: %v", err)
	}
}

// TestIdempotency: the same idempotency key from the same agent returns
// the first request (with a fresh signature too); another body under it
// is a conflict; the same key from another agent is another request.
func TestIdempotency(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	body := e.body(nil)
	first, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, body)
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != control.RequestID("bot", "pay-1") || first.State != api.StateReceived {
		t.Fatalf("first: %+v", first)
	}
	again, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, body)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID || !again.Created.Equal(first.Created) {
		t.Fatalf("second submission made another request: %+v", again)
	}
	_, err = e.agentClient(e.bot).SubmitBody(ctx, e.bot, e.body(map[string]string{"payload": fmt.Sprintf("%q", txHex(t, testChainID, 7))}))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != httpapi.CodeConflict || ce.RequestID != string(first.ID) {
		t.Fatalf("another body under the same key: %v", err)
	}
	other, err := e.agentClient(e.helper).SubmitBody(ctx, e.helper, body)
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == first.ID || other.Agent != "helper" {
		t.Fatalf("another agent's request: %+v", other)
	}
	if n := len(e.requests()); n != 2 {
		t.Fatalf("%d requests stored, want 2", n)
	}
	// An agent sees its own requests only.
	if _, err := e.agentClient(e.helper).Request(ctx, first.ID); !client.IsCode(err, httpapi.CodeNotFound) {
		t.Fatalf("helper read bot's request: %v", err)
	}
	if r, err := e.agentClient(e.bot).Request(ctx, first.ID); err != nil || r.ID != first.ID {
		t.Fatalf("bot reads its request: %v", err)
	}
}

// TestApprovalsAndDenials: an approval signed by a non-guardian or for
// another digest is refused, a guardian's is recorded once, and a
// guardian's denial ends the request with its reason.
func TestApprovalsAndDenials(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	r, err := e.agentClient(e.bot).Submit(ctx, e.bot, mustSignRequest(t, e.body(nil)))
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := client.New(e.c.URL(), client.Options{})
	if _, err := anon.Approve(ctx, e.approval(e.outsider, r.ID, r.Digest)); !client.IsCode(err, httpapi.CodeBadRequest) {
		t.Fatalf("outsider's approval: %v", err)
	}
	if _, err := anon.Approve(ctx, e.approval(e.guardian, r.ID, common.HexToHash("0x1234"))); !client.IsCode(err, httpapi.CodeBadRequest) {
		t.Fatalf("approval of another digest: %v", err)
	}
	a := e.approval(e.guardian, r.ID, r.Digest)
	got, err := anon.Approve(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Approve(ctx, a); err != nil {
		t.Fatal(err)
	}
	got, _ = e.op.Request(ctx, r.ID)
	if len(got.Approvals) != 1 || len(got.Approvers) != 1 || got.Approvers[0] != crypto.PubkeyToAddress(e.guardian.PublicKey).Hex() {
		t.Fatalf("approvals %+v approvers %v", got.Approvals, got.Approvers)
	}
	if _, err := anon.Deny(ctx, e.denial(e.outsider, r.ID, r.Digest, "no")); !client.IsCode(err, httpapi.CodeBadRequest) {
		t.Fatalf("outsider's denial: %v", err)
	}
	got, err = anon.Deny(ctx, e.denial(e.guardian, r.ID, r.Digest, "not this vendor"))
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateDenied || got.RuleID != ruleGuardian || !strings.Contains(got.Reason, "not this vendor") {
		t.Fatalf("after denial: %+v", got)
	}
	if _, err := anon.Approve(ctx, a); !client.IsCode(err, httpapi.CodeConflict) {
		t.Fatalf("approval of a denied request: %v", err)
	}
	w, err := e.op.Wait(ctx, r.ID, time.Second)
	if err != nil || w.State != api.StateDenied {
		t.Fatalf("wait: %v %+v", err, w)
	}
	entries, err := e.op.Audit(ctx, client.AuditQuery{Request: string(r.ID)})
	if err != nil || len(entries) < 3 {
		t.Fatalf("audit: %v %d entries", err, len(entries))
	}
	if _, err := e.c.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

func mustSignRequest(t *testing.T, body []byte) api.SignRequest {
	var r api.SignRequest
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	return r
}
