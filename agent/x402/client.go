package x402

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Errors of the payment flow.
var (
	// ErrWindow: the time a requirement leaves to settle is too short, or
	// ran out while the authorization was being signed.
	ErrWindow = errors.New("x402: payment window too short")
	// ErrPaidButRefused: the server answered 402 again to the paid retry.
	// The client does not pay again for the same 402.
	ErrPaidButRefused = errors.New("x402: server answered 402 after payment")
	// ErrBadSignature: the Signer's signature is malformed or does not
	// recover to its address.
	ErrBadSignature = errors.New("x402: bad signature")
	// ErrRequestBodyTooLarge: the caller's body is over Config.MaxRequestBody
	// and cannot be buffered for the retry.
	ErrRequestBodyTooLarge = errors.New("x402: request body too large to replay")
)

// Signer signs EIP-712 typed data for one address. The sidecar implements
// it by sending the typed data through the cluster, whose policy decides.
type Signer interface {
	Address() common.Address
	SignTypedData(ctx context.Context, td apitypes.TypedData) ([]byte, error)
}

// Defaults of Config.
const (
	DefaultMaxRequestBody = 1 << 20
	DefaultMaxWindow      = 5 * time.Minute
	DefaultMinWindow      = 10 * time.Second
	DefaultValidAfterSkew = time.Minute
)

// Config configures a Client. Only Signer is required.
type Config struct {
	Signer Signer
	// Choose picks the requirement to pay; nil refuses every payment.
	Choose Chooser
	// HTTPClient sends the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// MaxRequestBody bounds a request body buffered for the paid retry
	// (bodies with GetBody are not buffered).
	MaxRequestBody int64
	// MaxWindow bounds validBefore - now whatever the requirement allows:
	// a signed authorization outliving its use is a liability.
	MaxWindow time.Duration
	// MinWindow is the least time to settle a payment is worth signing for.
	MinWindow time.Duration
	// ValidAfterSkew is how far before now validAfter is put, for servers
	// whose clocks are behind; zero means DefaultValidAfterSkew.
	ValidAfterSkew time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Client is an HTTP client that pays x402 402 responses once, under its
// Chooser. It is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
	paid *http.Client
}

// New returns a Client for cfg, with defaults filled in.
func New(cfg Config) (*Client, error) {
	if cfg.Signer == nil {
		return nil, errors.New("x402: new client: no signer")
	}
	if cfg.Choose == nil {
		cfg.Choose = RefuseAll
	}
	if cfg.MaxRequestBody <= 0 {
		cfg.MaxRequestBody = DefaultMaxRequestBody
	}
	if cfg.MaxWindow <= 0 {
		cfg.MaxWindow = DefaultMaxWindow
	}
	if cfg.MinWindow <= 0 {
		cfg.MinWindow = DefaultMinWindow
	}
	if cfg.MinWindow > cfg.MaxWindow {
		return nil, fmt.Errorf("x402: new client: MinWindow %s is over MaxWindow %s", cfg.MinWindow, cfg.MaxWindow)
	}
	if cfg.ValidAfterSkew < 0 {
		return nil, fmt.Errorf("x402: new client: negative ValidAfterSkew %s", cfg.ValidAfterSkew)
	}
	if cfg.ValidAfterSkew == 0 {
		cfg.ValidAfterSkew = DefaultValidAfterSkew
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	// The paid retry follows no redirect: the payment header goes to the
	// server that asked for it and to no one else.
	paid := *hc
	paid.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{cfg: cfg, http: hc, paid: &paid}, nil
}

// Receipt records a payment the client signed and sent.
type Receipt struct {
	Requirement   Requirement
	Transfer      Transfer
	Authorization Authorization
	Signature     []byte
	// Settlement is the server's settlement response; nil when it sent none.
	Settlement *SettlementResponse
	// SettlementErr is set when the server's settlement header was
	// malformed; the resource was still served.
	SettlementErr error
}

// Do sends req. A response other than 402 is returned as it is, with a nil
// Receipt. On 402 it parses the offered requirements, lets the Chooser pick
// one, has the Signer sign the EIP-3009 authorization and sends the request
// once more with the payment header; the response to that retry is
// returned with the Receipt. A 402 to the retry is ErrPaidButRefused (with
// the Receipt: the server holds a signed authorization). Nothing is signed
// when the offer is malformed, unsupported, refused or its window too short.
func (c *Client) Do(ctx context.Context, req *http.Request) (*http.Response, *Receipt, error) {
	if req.Header.Get(HeaderPaymentSignature) != "" || req.Header.Get(HeaderPaymentV1) != "" {
		return nil, nil, errors.New("x402: request already carries a payment header")
	}
	first, err := c.replayable(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.http.Do(first)
	if err != nil {
		return nil, nil, fmt.Errorf("x402: %s %s: %w", req.Method, req.URL, err)
	}
	if resp.StatusCode != http.StatusPaymentRequired {
		return resp, nil, nil
	}
	asked := resp.Request
	if asked == nil {
		asked = first
	}
	o, err := readOffer(resp)
	if err != nil {
		return nil, nil, fmt.Errorf("x402: 402 from %s: %w", asked.URL, err)
	}
	r, err := c.choose(o)
	if err != nil {
		return nil, nil, fmt.Errorf("x402: 402 from %s: %w", asked.URL, err)
	}
	// The retry's body is ready before anything is signed.
	retry := asked.Clone(ctx)
	retry.Body = nil
	if asked.GetBody != nil {
		if retry.Body, err = asked.GetBody(); err != nil {
			return nil, nil, fmt.Errorf("x402: replay body of %s %s: %w", req.Method, req.URL, err)
		}
	}
	rec, header, err := c.pay(ctx, o, r)
	if err != nil {
		if retry.Body != nil {
			retry.Body.Close()
		}
		return nil, nil, fmt.Errorf("x402: pay %s: %w", r, err)
	}
	retry.Header.Set(o.paymentHeader(), header)
	resp, err = c.paid.Do(retry)
	if err != nil {
		return nil, rec, fmt.Errorf("x402: paid %s %s: %w", retry.Method, retry.URL, err)
	}
	name := o.responseHeader()
	var sErr error
	if v := resp.Header.Values(name); len(v) > 1 {
		sErr = fmt.Errorf("%w: %d %s headers", ErrMalformed, len(v), name)
	} else if len(v) == 1 {
		rec.Settlement, sErr = ParseSettlementResponse(name, v[0])
	}
	if resp.StatusCode == http.StatusPaymentRequired {
		reason := "no reason given"
		switch {
		case rec.Settlement != nil && rec.Settlement.ErrorReason != "":
			reason = rec.Settlement.ErrorReason
		case sErr != nil:
			reason = sErr.Error()
		default:
			if msg := o.refusal(resp); msg != "" {
				reason = fmt.Sprintf("%q", msg)
			}
		}
		drain(resp)
		return nil, rec, fmt.Errorf("%w: %s %s paid with %s: %s", ErrPaidButRefused, retry.Method, retry.URL, r, reason)
	}
	rec.SettlementErr = sErr
	return resp, rec, nil
}

// replayable returns a copy of req under ctx whose body can be sent again:
// with GetBody when the caller set one, else buffered up to the limit.
func (c *Client) replayable(ctx context.Context, req *http.Request) (*http.Request, error) {
	out := req.Clone(ctx)
	if req.Body == nil || req.Body == http.NoBody || req.GetBody != nil {
		return out, nil
	}
	data, err := io.ReadAll(io.LimitReader(req.Body, c.cfg.MaxRequestBody+1))
	req.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("x402: read body of %s %s: %w", req.Method, req.URL, err)
	}
	if int64(len(data)) > c.cfg.MaxRequestBody {
		return nil, fmt.Errorf("%w: %s %s: over %d bytes", ErrRequestBodyTooLarge, req.Method, req.URL, c.cfg.MaxRequestBody)
	}
	out.ContentLength = int64(len(data))
	out.Body = io.NopCloser(bytes.NewReader(data))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	return out, nil
}

// choose runs the Chooser and insists it returned an offered requirement.
func (c *Client) choose(o *offer) (Requirement, error) {
	shown := make([]Requirement, len(o.reqs))
	for i, r := range o.reqs {
		shown[i] = r.clone()
	}
	pick, err := c.cfg.Choose(shown)
	if err != nil {
		if !errors.Is(err, ErrRefused) {
			err = fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return Requirement{}, err
	}
	for _, r := range o.reqs {
		if r.Index == pick.Index {
			if !r.same(pick) {
				break
			}
			return r, nil
		}
	}
	return Requirement{}, fmt.Errorf("%w: chooser returned a requirement that was not offered (%s)", ErrRefused, pick)
}

// pay builds, signs and encodes the authorization for r. The window is
// checked before the Signer is called, and again after it returns.
func (c *Client) pay(ctx context.Context, o *offer, r Requirement) (*Receipt, string, error) {
	window := min(r.MaxTimeout, c.cfg.MaxWindow)
	if window < c.cfg.MinWindow {
		return nil, "", fmt.Errorf("%w: maxTimeoutSeconds allows %s, the least worth signing for is %s", ErrWindow, r.MaxTimeout, c.cfg.MinWindow)
	}
	now := c.cfg.Now()
	nonce, err := NewNonce()
	if err != nil {
		return nil, "", err
	}
	after := now.Add(-c.cfg.ValidAfterSkew).Unix()
	t := Transfer{
		From:        c.cfg.Signer.Address(),
		To:          r.PayTo,
		Value:       r.Amount,
		ValidAfter:  uint64(max(after, 0)),
		ValidBefore: uint64(now.Add(window).Unix()),
		Nonce:       nonce,
	}
	td := t.TypedData(r)
	sig, err := c.cfg.Signer.SignTypedData(ctx, td)
	if err != nil {
		return nil, "", fmt.Errorf("sign authorization: %w", err)
	}
	if sig, err = checkSignature(td, sig, t.From); err != nil {
		return nil, "", err
	}
	if left := time.Unix(int64(t.ValidBefore), 0).Sub(c.cfg.Now()); left < c.cfg.MinWindow {
		return nil, "", fmt.Errorf("%w: %s left of the authorization after signing", ErrWindow, left)
	}
	rec := &Receipt{Requirement: r, Transfer: t, Authorization: t.Authorization(), Signature: sig}
	header, err := o.encodePayment(r, ExactEVMPayload{Signature: hexutil.Encode(sig), Authorization: rec.Authorization})
	if err != nil {
		return nil, "", err
	}
	return rec, header, nil
}

// checkSignature checks that sig is 65 bytes and recovers to from over td,
// and returns it with v as 27 or 28, the form EIP-3009 contracts take.
func checkSignature(td apitypes.TypedData, sig []byte, from common.Address) ([]byte, error) {
	if len(sig) != crypto.SignatureLength {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadSignature, len(sig), crypto.SignatureLength)
	}
	sig = bytes.Clone(sig)
	switch sig[64] {
	case 0, 1:
		sig[64] += 27
	case 27, 28:
	default:
		return nil, fmt.Errorf("%w: v is %d", ErrBadSignature, sig[64])
	}
	digest, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		return nil, fmt.Errorf("hash typed data: %w", err)
	}
	rsv := bytes.Clone(sig)
	rsv[64] -= 27
	pub, err := crypto.SigToPub(digest, rsv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if got := crypto.PubkeyToAddress(*pub); got != from {
		return nil, fmt.Errorf("%w: recovers to %s, not the payer %s", ErrBadSignature, got.Hex(), from.Hex())
	}
	return sig, nil
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxBodyBytes))
	resp.Body.Close()
}
