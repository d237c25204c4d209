package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agent/x402"
	"github.com/custos-wallet/custos/api"
	"github.com/ethereum/go-ethereum/common"
)

// PayConfig configures x402 payments from one of the agent's addresses.
type PayConfig struct {
	// From is the address that pays. Required.
	From common.Address
	// Limits, if set, is a cap of the sidecar's own on top of the
	// policy's (which alone decides when nil).
	Limits *x402.Limits
	// HTTPClient fetches resources; nil is a client with a one-minute
	// timeout.
	HTTPClient *http.Client
	// ExplainTimeout bounds the dry runs of one choice.
	ExplainTimeout time.Duration
	Now            func() time.Time
}

// Payer returns an x402 client that pays from cfg.From through the
// cluster. Of the offered requirements it picks the cheapest one that the
// policy allows at a tier needing no guardian approval (asked with a dry
// run of the very authorization it would sign, so the cap is checked
// against the requirement chosen, not the first offered), and within
// cfg.Limits if set. Nothing is signed when no offer is allowed; the
// signing request is then evaluated again by every node of the quorum.
func (w *Wallet) Payer(cfg PayConfig) (*x402.Client, error) {
	if cfg.From == (common.Address{}) {
		return nil, errors.New("sidecar: x402 payer needs a from address")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: time.Minute}
	}
	if cfg.ExplainTimeout <= 0 {
		cfg.ExplainTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = w.cfg.Now
	}
	return x402.New(x402.Config{
		Signer:     w.Signer(cfg.From),
		Choose:     w.policyChooser(cfg),
		HTTPClient: cfg.HTTPClient,
		Now:        cfg.Now,
	})
}

// policyChooser asks the policy about each offer, cheapest first.
func (w *Wallet) policyChooser(cfg PayConfig) x402.Chooser {
	return func(reqs []x402.Requirement) (x402.Requirement, error) {
		order := slices.Clone(reqs)
		slices.SortStableFunc(order, func(a, b x402.Requirement) int { return a.Amount.Cmp(b.Amount) })
		var why []string
		for _, r := range order {
			if cfg.Limits != nil {
				if _, err := x402.Cap(*cfg.Limits)([]x402.Requirement{r}); err != nil {
					why = append(why, fmt.Sprintf("%s: %v", r, err))
					continue
				}
			}
			d, err := w.explainPayment(cfg, r)
			if err != nil {
				why = append(why, fmt.Sprintf("%s: %v", r, err))
				continue
			}
			if d.Decision.Verdict == "deny" {
				why = append(why, fmt.Sprintf("%s: denied by rule %q: %s", r, d.Decision.RuleID, d.Decision.Reason))
				continue
			}
			if d.Decision.Approvals > 0 {
				why = append(why, fmt.Sprintf("%s: tier %s needs %d guardian approval(s) (rule %q)", r, d.Decision.Tier, d.Decision.Approvals, d.Decision.RuleID))
				continue
			}
			return r, nil
		}
		return x402.Requirement{}, fmt.Errorf("the policy allows none of the %d offers: %s", len(reqs), strings.Join(why, "; "))
	}
}

// explainPayment dry-runs the authorization that paying r would sign.
func (w *Wallet) explainPayment(cfg PayConfig, r x402.Requirement) (*api.DryRun, error) {
	nonce, err := x402.NewNonce()
	if err != nil {
		return nil, err
	}
	now := cfg.Now()
	tr := x402.Transfer{From: cfg.From, To: r.PayTo, Value: r.Amount, ValidAfter: uint64(now.Add(-time.Minute).Unix()),
		ValidBefore: uint64(now.Add(r.MaxTimeout).Unix()), Nonce: nonce}
	p, err := TypedPayload(tr.TypedData(r))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ExplainTimeout)
	defer cancel()
	return w.Explain(ctx, cfg.From, p)
}
