package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
)

// Client talks to a node's admin API. A refusal by the node comes back as
// a *Refused; something the node does not hold as an error that
// errors.Is finds ErrNotFound in; any other API error as an
// *httpapi.Error.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// maxResponse bounds what the client reads of one answer.
const maxResponse = 32 << 20

// NewClient dials addr ("unix:///path/admin.sock" or "http://host:port"),
// sending token as the bearer token when it is not empty.
func NewClient(addr, token string) (*Client, error) {
	network, where, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	c := &Client{token: token}
	tr := &http.Transport{MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second, ResponseHeaderTimeout: 2 * time.Minute}
	if network == "unix" {
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", where)
		}
		c.base = "http://admin"
	} else {
		c.base = "http://" + where
	}
	c.hc = &http.Client{Transport: tr, Timeout: 3 * time.Minute}
	return c, nil
}

// NewClientTokenFile is NewClient with the token read from a file
// (ReadTokenFile's rules); an empty path means no token.
func NewClientTokenFile(addr, tokenFile string) (*Client, error) {
	var tok string
	if tokenFile != "" {
		var err error
		if tok, err = ReadTokenFile(tokenFile); err != nil {
			return nil, err
		}
	}
	return NewClient(addr, tok)
}

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Pending lists the requests waiting for the node's human.
func (c *Client) Pending(ctx context.Context) ([]PendingRequest, error) {
	var out PendingList
	err := c.do(ctx, http.MethodGet, Prefix+"pending", nil, &out)
	return out.Pending, err
}

// PendingRequest returns one waiting request.
func (c *Client) PendingRequest(ctx context.Context, id ids.RequestID) (*PendingRequest, error) {
	var out PendingRequest
	if err := c.do(ctx, http.MethodGet, Prefix+"pending/"+url.PathEscape(string(id)), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Approve submits a signed approval.
func (c *Client) Approve(ctx context.Context, a api.Approval) (*Delivery, error) {
	var out Delivery
	if err := c.do(ctx, http.MethodPost, Prefix+"approvals", a, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Deny submits a signed denial.
func (c *Client) Deny(ctx context.Context, d api.Denial) (*Delivery, error) {
	var out Delivery
	if err := c.do(ctx, http.MethodPost, Prefix+"denials", d, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Freeze submits a signed freeze.
func (c *Client) Freeze(ctx context.Context, f api.Freeze) (*FreezeResult, error) {
	var out FreezeResult
	if err := c.do(ctx, http.MethodPost, Prefix+"freezes", f, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Unfreeze submits an unfreeze with the guardians' signatures.
func (c *Client) Unfreeze(ctx context.Context, u api.Unfreeze) (*FreezeResult, error) {
	var out FreezeResult
	if err := c.do(ctx, http.MethodPost, Prefix+"unfreezes", u, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Wallet returns what a guardian signs against.
func (c *Client) Wallet(ctx context.Context) (*Wallet, error) {
	var out Wallet
	if err := c.do(ctx, http.MethodGet, Prefix+"wallet", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Audit returns one page of audit entries from from to to (0: to the
// end), at most limit (0: the server's default).
func (c *Client) Audit(ctx context.Context, from, to uint64, limit int) (*AuditPage, error) {
	q := url.Values{}
	if from != 0 {
		q.Set("from", strconv.FormatUint(from, 10))
	}
	if to != 0 {
		q.Set("to", strconv.FormatUint(to, 10))
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := Prefix + "audit"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out AuditPage
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// VerifyAudit has the running node check its audit chain.
func (c *Client) VerifyAudit(ctx context.Context) (*AuditCheck, error) {
	var out AuditCheck
	if err := c.do(ctx, http.MethodGet, Prefix+"audit/verify", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Status returns the node's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var out Status
	if err := c.do(ctx, http.MethodGet, Prefix+"status", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Health is nil when the node reports itself ready.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("admin: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("admin: read answer of %s %s: %w", method, path, err)
	}
	if len(b) > maxResponse {
		return fmt.Errorf("admin: answer of %s %s exceeds %d bytes", method, path, maxResponse)
	}
	if resp.StatusCode/100 != 2 {
		return answerError(resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin: decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// answerError turns an error answer back into the error it was: a
// *Refused for a refusal, an *httpapi.Error otherwise.
func answerError(status int, b []byte) error {
	var eb struct {
		Error *struct {
			Code      string          `json:"code"`
			Message   string          `json:"message"`
			RequestID string          `json:"request_id"`
			Data      json.RawMessage `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error == nil {
		return &httpapi.Error{Status: status, Code: "http_" + strconv.Itoa(status), Message: fmt.Sprintf("HTTP %d: %.200s", status, bytes.TrimSpace(b))}
	}
	e := eb.Error
	if e.Code == CodeRefused {
		var rd RefusalData
		if json.Unmarshal(e.Data, &rd) == nil && rd.Rule != "" {
			return &Refused{Rule: rd.Rule, Reason: rd.Reason, Conflict: rd.Conflict}
		}
	}
	ae := &httpapi.Error{Status: status, Code: e.Code, Message: e.Message, RequestID: e.RequestID}
	if status == http.StatusNotFound && e.Code == httpapi.CodeNotFound {
		return notFound{ae}
	}
	return ae
}

// notFound is a 404 answer: errors.Is finds ErrNotFound in it, and
// errors.As the *httpapi.Error.
type notFound struct{ api *httpapi.Error }

func (e notFound) Error() string        { return e.api.Message }
func (e notFound) Is(target error) bool { return target == ErrNotFound }
func (e notFound) Unwrap() error        { return e.api }

// IsRefused reports whether err is a node's refusal, and returns it.
func IsRefused(err error) (*Refused, bool) {
	var r *Refused
	ok := errors.As(err, &r)
	return r, ok
}
