package policy

import (
	"fmt"
	"strings"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

// Verdict is the outcome of an evaluation.
type Verdict uint8

// Verdicts. The zero value is Deny, so an unset decision refuses.
const (
	Deny  Verdict = iota // refuse to sign
	Allow                // sign with the least demanding tier
	Tier                 // sign with the quorum of a named tier
)

// String returns "deny", "allow" or "tier".
func (v Verdict) String() string {
	switch v {
	case Deny:
		return "deny"
	case Allow:
		return "allow"
	case Tier:
		return "tier"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// TierSpec is what a quorum must satisfy to sign in a tier.
type TierSpec struct {
	Name string
	// Rank orders tiers: 0 is the least demanding.
	Rank int
	// Roles that must each be represented in the quorum.
	Roles []ids.Role
	// Approvals is the number of distinct guardian approvals needed.
	Approvals int
	// Delay between approval and signing.
	Delay time.Duration
}

// Rule ids the engine uses for decisions no document rule made.
const (
	RuleFreeze  = "freeze"  // the agent or key is frozen
	RuleRequest = "request" // the request is inconsistent or malformed
	RuleGrant   = "grant"   // the grant refused the request
	RuleBreaker = "breaker" // the circuit breaker tripped on this request
	RuleDefault = "default" // no rule matched
	RuleBudget  = "budget"  // a budget reservation failed at commit time
)

// Step is one line of an evaluation trace.
type Step struct {
	Rule    string
	Matched bool
	Detail  string
}

// Decision is the result of evaluating a request.
type Decision struct {
	Verdict Verdict
	// RuleID names the rule that decided (a document rule id or one of the
	// Rule* constants).
	RuleID string
	// Reason is a human-readable explanation.
	Reason string
	// Tier is set unless the verdict is Deny.
	Tier *TierSpec
	// PolicyHash and PolicyVersion identify the document evaluated.
	PolicyHash    common.Hash
	PolicyVersion uint64
	// Trace lists every rule considered, in order.
	Trace []Step
	// Reserved is set when budget was reserved under the request id.
	Reserved bool
}

// Allowed reports whether the decision permits signing (in some tier).
func (d Decision) Allowed() bool { return d.Verdict != Deny }

// Describe renders a decision on one line, for logs, CLI output and golden
// files: `deny: rule "usdc-to-vendors": recipient 0x9a.. is not in list vendors`.
func (d Decision) Describe() string {
	var b strings.Builder
	b.WriteString(d.Verdict.String())
	if d.Tier != nil {
		fmt.Fprintf(&b, " %s", describeTier(d.Tier))
	}
	fmt.Fprintf(&b, ": rule %q: %s", d.RuleID, d.Reason)
	return b.String()
}

// DescribeTrace renders the trace, one step per line.
func (d Decision) DescribeTrace() string {
	var b strings.Builder
	for _, s := range d.Trace {
		m := "skip"
		if s.Matched {
			m = "match"
		}
		fmt.Fprintf(&b, "  %s %s: %s\n", m, s.Rule, s.Detail)
	}
	return b.String()
}

func describeTier(t *TierSpec) string {
	roles := make([]string, len(t.Roles))
	for i, r := range t.Roles {
		roles[i] = string(r)
	}
	s := fmt.Sprintf("%s [%s] approvals=%d", t.Name, strings.Join(roles, "+"), t.Approvals)
	if t.Delay > 0 {
		s += " delay=" + t.Delay.String()
	}
	return s
}

func shortAddr(a common.Address) string {
	h := a.Hex()
	return h[:6] + ".." + h[len(h)-4:]
}
