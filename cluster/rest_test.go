package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
)

// A small REST caller of the coordinator's API, raw enough to send it bad
// input too.

// restError is a structured error answer.
type restError struct {
	Status int
	Body   httpapi.Error
	Raw    string
	Header http.Header
}

func (e *restError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Body.Code, e.Body.Message)
}

var httpClient = &http.Client{Timeout: 90 * time.Second}

// call sends method path with body (raw bytes, or a value to marshal) and
// decodes a 2xx answer into out. auth: "" none, "op" the operator token,
// or an agent credential via callAgent.
func (c *cluster) call(ctx context.Context, method, path string, body any, token string, out any) error {
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url()+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(req, out)
}

// callAgent sends body signed by cred.
func (c *cluster) callAgent(ctx context.Context, cred *agentauth.Credential, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.url()+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	cred.SignHTTP(req, body, time.Now())
	return do(req, out)
}

func do(req *http.Request, out any) error {
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		e := &restError{Status: resp.StatusCode, Raw: string(b), Header: resp.Header}
		var eb httpapi.ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
			e.Body = *eb.Error
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer %q: %w", req.Method, req.URL.Path, b, err)
	}
	return nil
}

// signBody is a signing request body from the agent.
func signBody(t *testing.T, key ids.KeyID, idem, payload string) []byte {
	t.Helper()
	r := map[string]any{
		"key": key.String(), "chain_id": simChainID, "kind": "transaction",
		"payload": payload, "idempotency_key": idem, "expiry": expiry().Format(time.RFC3339),
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// submit posts a signing request for a transaction.
func (c *cluster) submit(t *testing.T, cred *agentauth.Credential, key ids.KeyID, idem, payload string) *api.Request {
	t.Helper()
	return c.submitBody(t, cred, signBody(t, key, idem, payload))
}

// submitBody posts a signing request body, signed by cred.
func (c *cluster) submitBody(t *testing.T, cred *agentauth.Credential, body []byte) *api.Request {
	t.Helper()
	var r api.Request
	if err := c.callAgent(context.Background(), cred, "POST", "/v1/requests", body, &r); err != nil {
		t.Fatalf("submit %s: %v", body, err)
	}
	return &r
}

// request reads a request's state.
func (c *cluster) request(t *testing.T, id ids.RequestID) *api.Request {
	t.Helper()
	var r api.Request
	if err := c.call(context.Background(), "GET", "/v1/requests/"+string(id), nil, c.opToken, &r); err != nil {
		t.Fatalf("request %s: %v", id, err)
	}
	return &r
}

// waitState long-polls a request until it is final or in one of states.
func (c *cluster) waitState(t *testing.T, id ids.RequestID, states ...string) *api.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var last *api.Request
	err := waitFor(ctx, 200*time.Millisecond, func() (bool, error) {
		var r api.Request
		if err := c.call(ctx, "GET", "/v1/requests/"+string(id)+"/wait?timeout=10s", nil, c.opToken, &r); err != nil {
			return false, err
		}
		last = &r
		if api.Final(r.State) {
			return true, nil
		}
		for _, s := range states {
			if r.State == s {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("wait for request %s (last state %+v): %v", id, describeRequest(last), err)
	}
	return last
}

func describeRequest(r *api.Request) string {
	if r == nil {
		return "none"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s state=%s tier=%s rule=%s reason=%q member=%s", r.ID, r.State, r.Tier, r.RuleID, r.Reason, r.Member)
	for _, a := range r.Attempts {
		fmt.Fprintf(&b, "; attempt %s quorum=%v %s %s", a.Session, a.Quorum, a.State, a.Error)
	}
	return b.String()
}
