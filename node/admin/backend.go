// Package admin is a node's admin API: the HTTP interface its operator and
// its guardian's human use on the node's admin address (a unix socket whose
// file mode is the access control, or a TCP address behind a bearer token).
// It serves the guardian queue (requests waiting for this node's human,
// decoded by the node from the agent's own signed bytes), takes guardians'
// EIP-712 approvals, denials, freezes and unfreezes, and reports the wallet,
// the audit log and the node's status, plus /healthz and /metrics.
//
// The package is the HTTP shell and its client; the node implements
// Backend, which does every check (the policy's, against the node's own
// state) and every effect.
package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Backend is what the node gives its admin API. Every method is called
// with the HTTP request's context. An error that is the caller's fault (a
// signature that does not verify, an approval for another digest, an
// unfreeze short of the quorum) is a *Refused; ErrNotFound names something
// absent; anything else is the node's own failure (answered 500).
type Backend interface {
	// Pending lists the requests waiting for this node's human, oldest
	// first.
	Pending(ctx context.Context) ([]PendingRequest, error)
	// PendingRequest returns one of them, or ErrNotFound.
	PendingRequest(ctx context.Context, id ids.RequestID) (*PendingRequest, error)
	// Approve verifies a guardian's approval against the node's policy and
	// the request as the node decoded it, and forwards it.
	Approve(ctx context.Context, a api.Approval) (*Delivery, error)
	// Deny verifies a guardian's denial and forwards it.
	Deny(ctx context.Context, d api.Denial) (*Delivery, error)
	// Freeze verifies and applies a guardian's freeze, then sends it to the
	// other members and the coordinators.
	Freeze(ctx context.Context, f api.Freeze) (*FreezeResult, error)
	// Unfreeze verifies and applies a guardian quorum's unfreeze, then
	// sends it on.
	Unfreeze(ctx context.Context, u api.Unfreeze) (*FreezeResult, error)
	// Wallet reports what a guardian signs against.
	Wallet(ctx context.Context) (*Wallet, error)
	// Audit returns the audit entries with from <= seq <= to (to 0: to the
	// end), as store.AuditRange.
	Audit(ctx context.Context, from, to uint64) ([]store.Entry, error)
	// VerifyAudit checks the whole audit chain, as store.VerifyAudit: the
	// number of entries checked, and a *store.AuditError naming the first
	// bad entry when the chain is broken.
	VerifyAudit(ctx context.Context) (int, error)
	// Status reports the node.
	Status(ctx context.Context) (*Status, error)
	// Ready is nil when the node serves (store open, policy loaded).
	Ready(ctx context.Context) error
}

// ErrNotFound is what a Backend returns for a request it does not hold
// (answered 404).
var ErrNotFound = errors.New("admin: not found")

// Refused is a Backend's answer to input that fails a check: the rule or
// check that refused it (a policy rule id, or a check such as "approval",
// "denial", "freeze", "unfreeze", "quorum") and a reason a person can read.
// It is answered 422 (409 when Conflict) with both.
type Refused struct {
	Rule   string
	Reason string
	// Conflict marks a refusal because of state, not of the input itself
	// (an approval already used, a request no longer pending).
	Conflict bool
}

func (r *Refused) Error() string { return fmt.Sprintf("refused (%s): %s", r.Rule, r.Reason) }

// Refusef makes a *Refused.
func Refusef(rule, format string, args ...any) *Refused {
	return &Refused{Rule: rule, Reason: fmt.Sprintf(format, args...)}
}

// PendingRequest is one request waiting for this node's human, described
// from the bytes the agent signed, as this node decoded them.
type PendingRequest struct {
	RequestID ids.RequestID `json:"request_id"`
	Agent     ids.AgentID   `json:"agent"`
	// Key is the signing key's address: the "from" of a transaction.
	Key     common.Address `json:"key"`
	ChainID uint64         `json:"chain_id"`
	// Kind is "transaction", "personal_message" or "typed_data" (the
	// payload kind's text).
	Kind   string      `json:"kind"`
	Digest common.Hash `json:"digest"`
	// To, Value and ValueEther are set for transactions; Value is wei as a
	// decimal string, ValueEther the same in ether ("0.25").
	To         *common.Address `json:"to,omitempty"`
	Value      string          `json:"value,omitempty"`
	ValueEther string          `json:"value_ether,omitempty"`
	// Method is the decoded call ("transfer(address,uint256)") and
	// Selector its 4 bytes, when there is calldata.
	Method   string `json:"method,omitempty"`
	Selector string `json:"selector,omitempty"`
	// Tokens lists the token movements the payload makes, in token units
	// where the policy knows the token.
	Tokens []TokenMove `json:"tokens,omitempty"`
	// Summary is the payload's one-line description (chain.Payload.Describe).
	Summary string `json:"summary"`
	// Payload is the exact bytes the agent asked to sign (as
	// chain.Payload.Bytes), so the guardian's own tools can decode them,
	// recompute the digest and check this description (CheckPending).
	Payload hexutil.Bytes `json:"payload,omitempty"`
	// Tier, the approvals it needs and its delay; RuleID and Reason are the
	// rule that asked for approval.
	Tier      string           `json:"tier"`
	Approvals int              `json:"approvals_needed"`
	Delay     control.Duration `json:"delay,omitempty"`
	RuleID    string           `json:"rule_id"`
	Reason    string           `json:"reason,omitempty"`
	// ApprovedBy lists the guardians whose approvals the node holds.
	ApprovedBy []common.Address `json:"approved_by,omitempty"`
	Received   time.Time        `json:"received"`
	// Expiry is the request's own expiry: no approval may outlive it.
	Expiry time.Time `json:"expiry"`
}

// TokenMove is one token movement of a payload (a transfer, an approve, a
// permit).
type TokenMove struct {
	Token common.Address `json:"token"`
	// Symbol and Amount are set when the policy declares the token: Amount
	// in token units ("12.5"). Raw is the base-unit amount, always set.
	Symbol string `json:"symbol,omitempty"`
	Amount string `json:"amount,omitempty"`
	Raw    string `json:"raw"`
	// Kind says what moves it ("transfer", "approve", "permit", ...).
	Kind      string          `json:"kind,omitempty"`
	Recipient *common.Address `json:"recipient,omitempty"`
}

// Delivery says where the node sent an approval or a denial.
type Delivery struct {
	RequestID ids.RequestID  `json:"request_id"`
	Guardian  common.Address `json:"guardian"`
	// Forwarded lists the coordinators that took it; Failed those that did
	// not, with why.
	Forwarded []ids.MemberID `json:"forwarded"`
	Failed    []Failure      `json:"failed,omitempty"`
}

// FreezeResult says what became of a freeze or an unfreeze.
type FreezeResult struct {
	// ID is the freeze's id (policy.Freeze.ID); for an unfreeze, the id of
	// the freeze it lifted.
	ID     common.Hash `json:"id"`
	Target string      `json:"target"`
	// Guardians are the signers the node accepted.
	Guardians []common.Address `json:"guardians"`
	// Applied: this node applied it (and persisted it) before answering.
	Applied bool `json:"applied"`
	// Acknowledged lists the members and coordinators that took it; Failed
	// those that did not, with why.
	Acknowledged []ids.MemberID `json:"acknowledged"`
	Failed       []Failure      `json:"failed,omitempty"`
}

// Failure is a peer that did not take what was sent, and why.
type Failure struct {
	Member ids.MemberID `json:"member"`
	Error  string       `json:"error"`
}

// Wallet is what a guardian signs against.
type Wallet struct {
	// WalletID is policy.WalletID: the salt of the EIP-712 domain.
	WalletID      common.Hash      `json:"wallet_id"`
	PolicyVersion uint64           `json:"policy_version"`
	PolicyHash    common.Hash      `json:"policy_hash"`
	Guardians     []common.Address `json:"guardians"`
	Quorum        int              `json:"quorum"`
	// Guardian is this node's guardian identity account, if it has one.
	Guardian *common.Address          `json:"guardian,omitempty"`
	Domain   apitypes.TypedDataDomain `json:"domain"`
	// Freezes are the active freezes, with the ids an unfreeze names.
	Freezes []ActiveFreeze `json:"freezes,omitempty"`
}

// ActiveFreeze is one freeze in force.
type ActiveFreeze struct {
	ID     common.Hash    `json:"id"`
	Target string         `json:"target"`
	Reason string         `json:"reason"`
	By     common.Address `json:"by"` // zero for the circuit breaker
	At     time.Time      `json:"at"`
}

// Status is the node's report of itself: the control protocol's status
// (member, role, keys, policy, pre-parameter pool) and what waits here.
type Status struct {
	control.Status
	Pending int `json:"pending"`
}

// AuditCheck is the answer of GET audit/verify: how many entries were
// checked and, when the chain is broken, the first bad entry and what is
// wrong with it.
type AuditCheck struct {
	Entries  int    `json:"entries"`
	Valid    bool   `json:"valid"`
	FirstBad uint64 `json:"first_bad,omitempty"`
	Problem  string `json:"problem,omitempty"`
}

// CheckOf turns what store.VerifyAudit (or Backend.VerifyAudit) returned
// into an AuditCheck; an error other than a broken chain is returned as is.
func CheckOf(n int, err error) (*AuditCheck, error) {
	if err == nil {
		return &AuditCheck{Entries: n, Valid: true}, nil
	}
	var ae *store.AuditError
	if errors.As(err, &ae) {
		return &AuditCheck{Entries: n, FirstBad: ae.Seq, Problem: ae.Problem}, nil
	}
	return nil, err
}
