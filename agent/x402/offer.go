package x402

import (
	"fmt"
	"io"
	"net/http"
)

// offer is a parsed 402 response: the version's wire form and the usable
// requirements.
type offer struct {
	v2   *PaymentRequired
	v1   *PaymentRequiredV1
	reqs []Requirement
}

// readOffer parses the requirements of a 402 response: the v2
// PAYMENT-REQUIRED header when present, else the v1 JSON body. It closes
// the body.
func readOffer(resp *http.Response) (*offer, error) {
	defer drain(resp)
	o := &offer{}
	var err error
	switch v := resp.Header.Values(HeaderPaymentRequired); len(v) {
	case 0:
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes+1))
		if rerr != nil {
			return nil, fmt.Errorf("read 402 body: %w", rerr)
		}
		if len(body) > MaxBodyBytes {
			return nil, fmt.Errorf("%w: no %s header, and the 402 body is over %d bytes", ErrTooLarge, HeaderPaymentRequired, MaxBodyBytes)
		}
		if o.v1, err = ParsePaymentRequiredV1(body); err != nil {
			return nil, fmt.Errorf("no %s header, so v1: %w", HeaderPaymentRequired, err)
		}
		o.reqs, err = o.v1.Requirements()
	case 1:
		if o.v2, err = ParsePaymentRequired(v[0]); err != nil {
			return nil, err
		}
		o.reqs, err = o.v2.Requirements()
	default:
		return nil, fmt.Errorf("%w: %d %s headers", ErrMalformed, len(v), HeaderPaymentRequired)
	}
	if err != nil {
		return nil, err
	}
	return o, nil
}

func (o *offer) paymentHeader() string {
	if o.v2 != nil {
		return HeaderPaymentSignature
	}
	return HeaderPaymentV1
}

func (o *offer) responseHeader() string {
	if o.v2 != nil {
		return HeaderPaymentResponse
	}
	return HeaderPaymentResponseV1
}

// encodePayment returns the payment header value paying r with p: in v2
// the offered requirement is echoed as accepted, with the resource and the
// extensions as received.
func (o *offer) encodePayment(r Requirement, p ExactEVMPayload) (string, error) {
	if o.v2 != nil {
		return EncodeHeader(PaymentPayload{
			X402Version: 2,
			Resource:    o.v2.Resource,
			Accepted:    o.v2.Accepts[r.Index],
			Payload:     p,
			Extensions:  o.v2.Extensions,
		})
	}
	a := o.v1.Accepts[r.Index]
	return EncodeHeader(PaymentPayloadV1{X402Version: 1, Scheme: a.Scheme, Network: a.Network, Payload: p})
}

// refusal returns the error text of a 402 answered to a paid retry, from
// the same version's PAYMENT-REQUIRED header or body, or "".
func (o *offer) refusal(resp *http.Response) string {
	if o.v2 != nil {
		if pr, err := ParsePaymentRequired(resp.Header.Get(HeaderPaymentRequired)); err == nil {
			return pr.Error
		}
		return ""
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	if err != nil {
		return ""
	}
	if pr, err := ParsePaymentRequiredV1(body); err == nil {
		return pr.Error
	}
	return ""
}
