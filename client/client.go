// Package client is the Go client of the coordinator's REST API (/v1):
// one method per endpoint, the api package's types in and out, and every
// error response as an *Error carrying the API's code, message and request
// id. The CLI and the cluster tests use it.
//
// Operator calls send the bearer token of Options.Token; an agent's
// signing request, and the reads an agent makes, are signed with its
// agentauth.Credential over the exact bytes sent.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
)

// maxResponse bounds a response body read.
const maxResponse = 8 << 20

// Options configure a Client.
type Options struct {
	// Token is the operator bearer token, for operator calls.
	Token string
	// Agent, if set, signs every call that carries no operator token
	// (the reads an agent makes: its requests, keys, policy).
	Agent *agentauth.Credential
	// HTTP is the HTTP client; nil uses one with a 3-minute timeout
	// (above the longest wait the server allows).
	HTTP *http.Client
	// Now is the clock for agent signatures; nil is time.Now.
	Now func() time.Time
}

// Client calls one coordinator.
type Client struct {
	base string
	opts Options
}

// Error is an error response of the API.
type Error struct {
	Status     int             `json:"-"`
	Code       string          `json:"code"`
	Message    string          `json:"message"`
	RequestID  string          `json:"request_id,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
	RetryAfter time.Duration   `json:"-"`
}

func (e *Error) Error() string {
	s := fmt.Sprintf("coordinator: %s (%d %s)", e.Message, e.Status, e.Code)
	if e.RequestID != "" {
		s += " [" + e.RequestID + "]"
	}
	return s
}

// IsCode reports whether err is an API error with code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// New returns a client of the coordinator at baseURL (http://host:port).
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want http(s)://host:port", baseURL)
	}
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{Timeout: 3 * time.Minute}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), opts: opts}, nil
}

// auth says how a call authenticates.
type auth int

const (
	authDefault  auth = iota // the token if set, else the agent if set
	authNone                 // nothing (guardian-signed bodies, health)
	authOperator             // the token, required
)

func (c *Client) do(ctx context.Context, method, path string, a auth, cred *agentauth.Credential, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if raw, ok := in.([]byte); ok {
			body = raw
		} else if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("client: encode %s %s: %w", method, path, err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case cred != nil:
		cred.SignHTTP(req, body, c.opts.Now())
	case a == authOperator:
		if c.opts.Token == "" {
			return fmt.Errorf("client: %s %s needs an operator token", method, path)
		}
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	case a == authDefault && c.opts.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	case a == authDefault && c.opts.Agent != nil:
		c.opts.Agent.SignHTTP(req, body, c.opts.Now())
	}
	resp, err := c.opts.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("client: %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var eb struct {
			Error *Error `json:"error"`
		}
		if json.Unmarshal(b, &eb) != nil || eb.Error == nil {
			return &Error{Status: resp.StatusCode, Code: "http", Message: strings.TrimSpace(string(b))}
		}
		eb.Error.Status = resp.StatusCode
		if s := resp.Header.Get("Retry-After"); s != "" {
			var n int
			if _, err := fmt.Sscan(s, &n); err == nil {
				eb.Error.RetryAfter = time.Duration(n) * time.Second
			}
		}
		return eb.Error
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("client: %s %s: decode response: %w", method, path, err)
		}
	}
	return nil
}

// Health is GET /v1/health.
func (c *Client) Health(ctx context.Context) (*api.Health, error) {
	var out api.Health
	return &out, c.do(ctx, "GET", "/v1/health", authNone, nil, nil, &out)
}

// CreateKey is POST /v1/keys (operator): starts a key generation.
func (c *Client) CreateKey(ctx context.Context, k api.CreateKey) (*api.Operation, error) {
	var out api.Operation
	return &out, c.do(ctx, "POST", "/v1/keys", authOperator, nil, k, &out)
}

// Operation is GET /v1/operations/{id} (operator).
func (c *Client) Operation(ctx context.Context, id string) (*api.Operation, error) {
	var out api.Operation
	return &out, c.do(ctx, "GET", "/v1/operations/"+url.PathEscape(id), authOperator, nil, nil, &out)
}

// WaitOperation polls an operation every interval until it is done or
// failed, or ctx ends. A rate-limited poll (429) is made again after its
// Retry-After.
func (c *Client) WaitOperation(ctx context.Context, id string, interval time.Duration, progress func(*api.Operation)) (*api.Operation, error) {
	for {
		op, err := c.Operation(ctx, id)
		if pause, limited := rateLimited(err); limited {
			if err := sleep(ctx, pause); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if progress != nil {
			progress(op)
		}
		if op.State != api.OpRunning {
			return op, nil
		}
		if err := sleep(ctx, interval); err != nil {
			return op, err
		}
	}
}

// RateLimited reports whether err is a 429, and how long it asks the
// caller to wait before the same call: its Retry-After, at least a second.
func RateLimited(err error) (time.Duration, bool) { return rateLimited(err) }

func rateLimited(err error) (time.Duration, bool) {
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests {
		return 0, false
	}
	return max(e.RetryAfter, time.Second), true
}

// sleep waits d, or returns ctx's error when it ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Keys is GET /v1/keys.
func (c *Client) Keys(ctx context.Context) ([]api.Key, error) {
	var out api.Keys
	return out.Keys, c.do(ctx, "GET", "/v1/keys", authDefault, nil, nil, &out)
}

// Key is GET /v1/keys/{key}.
func (c *Client) Key(ctx context.Context, k ids.KeyID) (*api.Key, error) {
	var out api.Key
	return &out, c.do(ctx, "GET", "/v1/keys/"+k.String(), authDefault, nil, nil, &out)
}

// Reshare is POST /v1/keys/{key}/reshare (operator).
func (c *Client) Reshare(ctx context.Context, k ids.KeyID, r api.ReshareKey) (*api.Operation, error) {
	var out api.Operation
	return &out, c.do(ctx, "POST", "/v1/keys/"+k.String()+"/reshare", authOperator, nil, r, &out)
}

// Submit is POST /v1/requests: the request body signed with the agent's
// credential. It returns the request as stored (the first one, for an
// idempotency key used before).
func (c *Client) Submit(ctx context.Context, cred *agentauth.Credential, r api.SignRequest) (*api.Request, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("client: encode request: %w", err)
	}
	return c.SubmitBody(ctx, cred, body)
}

// SubmitBody is Submit with the body's exact bytes.
func (c *Client) SubmitBody(ctx context.Context, cred *agentauth.Credential, body []byte) (*api.Request, error) {
	if cred == nil {
		return nil, errors.New("client: a signing request needs an agent credential")
	}
	var out api.Request
	return &out, c.do(ctx, api.SignRequestMethod, api.SignRequestPath, authNone, cred, body, &out)
}

// Request is GET /v1/requests/{id}.
func (c *Client) Request(ctx context.Context, id ids.RequestID) (*api.Request, error) {
	var out api.Request
	return &out, c.do(ctx, "GET", "/v1/requests/"+string(id), authDefault, nil, nil, &out)
}

// Wait is GET /v1/requests/{id}/wait: it returns when the request is final
// or after timeout (at most the server's bound), with its state then.
func (c *Client) Wait(ctx context.Context, id ids.RequestID, timeout time.Duration) (*api.Request, error) {
	var out api.Request
	path := "/v1/requests/" + string(id) + "/wait?timeout=" + url.QueryEscape(timeout.String())
	return &out, c.do(ctx, "GET", path, authDefault, nil, nil, &out)
}

// Poll is Wait made until it answers within the time left: each call
// waits at most slice, and a rate-limited call (429) is made again after
// its Retry-After (at least a second) when that leaves time, so a long
// poll of an agent that is also submitting is not cut short by its own
// rate limit. It returns the request as it was when a call answered; a
// 429 it could not wait out is returned as the error.
func (c *Client) Poll(ctx context.Context, id ids.RequestID, left, slice time.Duration) (*api.Request, error) {
	end := time.Now().Add(left)
	for {
		r, err := c.Wait(ctx, id, max(min(left, slice), 0))
		pause, limited := rateLimited(err)
		if !limited {
			return r, err
		}
		if time.Until(end) <= pause {
			return nil, err
		}
		if err := sleep(ctx, pause); err != nil {
			return nil, err
		}
		left = time.Until(end)
	}
}

// WaitFinal long-polls until the request is final or ctx ends, waiting
// out rate-limited polls (429) as Poll does.
func (c *Client) WaitFinal(ctx context.Context, id ids.RequestID) (*api.Request, error) {
	for {
		left := 24 * time.Hour
		if d, ok := ctx.Deadline(); ok {
			left = time.Until(d)
		}
		r, err := c.Poll(ctx, id, left, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if api.Final(r.State) {
			return r, nil
		}
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
	}
}

// Broadcast is POST /v1/requests/{id}/broadcast: sends the signed
// transaction to the chain.
func (c *Client) Broadcast(ctx context.Context, id ids.RequestID) (*api.Request, error) {
	var out api.Request
	return &out, c.do(ctx, "POST", "/v1/requests/"+string(id)+"/broadcast", authDefault, nil, nil, &out)
}

// Approve is POST /v1/requests/{id}/approvals: a guardian's signed
// approval (its signature is the credential).
func (c *Client) Approve(ctx context.Context, a api.Approval) (*api.Request, error) {
	var out api.Request
	return &out, c.do(ctx, "POST", "/v1/requests/"+string(a.RequestID)+"/approvals", authNone, nil, a, &out)
}

// Deny is POST /v1/requests/{id}/denials.
func (c *Client) Deny(ctx context.Context, d api.Denial) (*api.Request, error) {
	var out api.Request
	return &out, c.do(ctx, "POST", "/v1/requests/"+string(d.RequestID)+"/denials", authNone, nil, d, &out)
}

// Approvals is GET /v1/approvals: requests waiting for guardians.
func (c *Client) Approvals(ctx context.Context) ([]api.Request, error) {
	var out api.PendingApprovals
	return out.Requests, c.do(ctx, "GET", "/v1/approvals", authDefault, nil, nil, &out)
}

// Policy is GET /v1/policy.
func (c *Client) Policy(ctx context.Context) (*api.Policy, error) {
	var out api.Policy
	return &out, c.do(ctx, "GET", "/v1/policy", authDefault, nil, nil, &out)
}

// ProposePolicy is POST /v1/policy (operator): a guardian-signed document,
// pushed to every member.
func (c *Client) ProposePolicy(ctx context.Context, d api.PolicyDocument) (*api.Pushed, error) {
	var out api.Pushed
	return &out, c.do(ctx, "POST", "/v1/policy", authOperator, nil, d, &out)
}

// DryRun is POST /v1/policy/dry-run: the rule trace of a request the agent
// signed for POST /v1/requests, evaluated without signing.
func (c *Client) DryRun(ctx context.Context, s agentauth.Signed) (*api.DryRun, error) {
	var out api.DryRun
	return &out, c.do(ctx, "POST", "/v1/policy/dry-run", authDefault, nil, api.DryRunRequest{Request: s}, &out)
}

// Grant is POST /v1/grants: a guardian-signed session grant.
func (c *Client) Grant(ctx context.Context, g api.Grant) (*api.Pushed, error) {
	var out api.Pushed
	return &out, c.do(ctx, "POST", "/v1/grants", authNone, nil, g, &out)
}

// Revoke is POST /v1/revocations: a guardian-signed revocation of a
// session grant, pushed to every member.
func (c *Client) Revoke(ctx context.Context, r api.Revocation) (*api.Pushed, error) {
	var out api.Pushed
	return &out, c.do(ctx, "POST", "/v1/revocations", authNone, nil, r, &out)
}

// Freeze is POST /v1/freezes: one guardian's freeze, pushed to every member
// before the answer.
func (c *Client) Freeze(ctx context.Context, f api.Freeze) (*api.Pushed, error) {
	var out api.Pushed
	return &out, c.do(ctx, "POST", "/v1/freezes", authNone, nil, f, &out)
}

// Unfreeze is POST /v1/unfreezes: a guardian quorum's unfreeze.
func (c *Client) Unfreeze(ctx context.Context, u api.Unfreeze) (*api.Pushed, error) {
	var out api.Pushed
	return &out, c.do(ctx, "POST", "/v1/unfreezes", authNone, nil, u, &out)
}

// AuditQuery filters GET /v1/audit. From and To are sequence numbers or
// RFC 3339 times; empty means unbounded.
type AuditQuery struct {
	Member, Request, From, To string
}

// Audit is GET /v1/audit (operator): the coordinator's own log.
func (c *Client) Audit(ctx context.Context, q AuditQuery) ([]api.AuditEntry, error) {
	v := url.Values{}
	for k, s := range map[string]string{"member": q.Member, "request": q.Request, "from": q.From, "to": q.To} {
		if s != "" {
			v.Set(k, s)
		}
	}
	path := "/v1/audit"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var out api.Audit
	return out.Entries, c.do(ctx, "GET", path, authOperator, nil, nil, &out)
}
