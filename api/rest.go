package api

import (
	"fmt"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// The REST API's request and response bodies beside the signing request
// (request.go) and the guardians' signed forms (guardian.go). The OpenAPI
// document api/openapi.yaml describes each route with these shapes.

// Request states of GET /v1/requests/{id}.
const (
	StateReceived        = "received"         // stored, tier not known yet
	StatePendingApproval = "pending_approval" // waiting for guardian approvals
	StateSigning         = "signing"          // a quorum is being asked or signs
	StateSigned          = "signed"           // final: signature (and raw transaction)
	StateDenied          = "denied"           // final: the policy, a member or a guardian said no
	StateFailed          = "failed"           // final: no signature could be made
	StateExpired         = "expired"          // final: the request's expiry passed
)

// Final reports whether a request state is final.
func Final(state string) bool {
	switch state {
	case StateSigned, StateDenied, StateFailed, StateExpired:
		return true
	}
	return false
}

// CommitteeMember is one member of a committee in a REST body.
type CommitteeMember struct {
	ID   ids.MemberID `json:"id"`
	Role ids.Role     `json:"role"`
}

// CreateKey is the body of POST /v1/keys.
type CreateKey struct {
	Committee []CommitteeMember `json:"committee"`
	Threshold int               `json:"threshold"`
}

// TSSCommittee returns the committee the body names.
func (c CreateKey) TSSCommittee() tss.Committee { return toCommittee(c.Committee, c.Threshold) }

func toCommittee(ms []CommitteeMember, t int) tss.Committee {
	out := tss.Committee{Threshold: t, Members: make([]tss.Member, len(ms))}
	for i, m := range ms {
		out.Members[i] = tss.Member{ID: m.ID, Role: m.Role}
	}
	return out
}

// ReshareKey is the body of POST /v1/keys/{key}/reshare: the new committee
// and threshold, and the guardian quorum's authorisation of exactly that
// move.
type ReshareKey struct {
	Committee     []CommitteeMember `json:"committee"`
	Threshold     int               `json:"threshold"`
	Authorization Reshare           `json:"authorization"`
}

// TSSCommittee returns the new committee the body names.
func (r ReshareKey) TSSCommittee() tss.Committee { return toCommittee(r.Committee, r.Threshold) }

// Operation states of a key generation or reshare.
const (
	OpRunning = "running"
	OpDone    = "done"
	OpFailed  = "failed"
)

// Operation is a key generation or reshare in progress or finished:
// the answer of POST /v1/keys, POST /v1/keys/{key}/reshare and
// GET /v1/operations/{id}.
type Operation struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"` // keygen or reshare
	State string `json:"state"`
	// Phase is where a running operation is: proposing, pre_params
	// (members waiting for their pre-parameter pool), keygen, reshare.
	Phase     string        `json:"phase,omitempty"`
	Committee tss.Committee `json:"committee"`
	// Key is set once the key exists (for a reshare, from the start).
	Key *Key `json:"key,omitempty"`
	// Progress is each member's last line of progress.
	Progress map[ids.MemberID]string `json:"progress,omitempty"`
	// Confirmed and Unconfirmed: after a reshare, which new members
	// confirmed their share.
	Confirmed   []ids.MemberID `json:"confirmed,omitempty"`
	Unconfirmed []ids.MemberID `json:"unconfirmed,omitempty"`
	Attempts    int            `json:"attempts"`
	Error       string         `json:"error,omitempty"`
	Created     time.Time      `json:"created"`
	Updated     time.Time      `json:"updated"`
}

// Key is a threshold key as GET /v1/keys/{key} shows it.
type Key struct {
	ID        ids.KeyID      `json:"id"`
	Address   common.Address `json:"address"`
	PublicKey hexutil.Bytes  `json:"public_key"`
	Committee tss.Committee  `json:"committee"`
	Threshold int            `json:"threshold"`
	// GuardianFloor is how many guardian shares every signature needs.
	GuardianFloor int    `json:"guardian_floor"`
	Generation    uint32 `json:"generation"`
}

// KeyFrom returns the REST form of a key.
func KeyFrom(k tss.KeyInfo) Key {
	return Key{ID: k.ID(), Address: k.Address, PublicKey: k.PublicKey, Committee: k.Committee,
		Threshold: k.Committee.Threshold, GuardianFloor: k.GuardianFloor, Generation: k.Generation}
}

// Keys is the answer of GET /v1/keys.
type Keys struct {
	Keys []Key `json:"keys"`
}

// Decision is a policy decision as the REST API reports it.
type Decision struct {
	Verdict       string      `json:"verdict"`
	RuleID        string      `json:"rule_id"`
	Reason        string      `json:"reason"`
	Tier          string      `json:"tier,omitempty"`
	Roles         []ids.Role  `json:"roles,omitempty"`
	Approvals     int         `json:"approvals,omitempty"`
	Delay         string      `json:"delay,omitempty"`
	PolicyHash    common.Hash `json:"policy_hash"`
	PolicyVersion uint64      `json:"policy_version"`
	// Member is the policy member that evaluated.
	Member ids.MemberID `json:"member,omitempty"`
}

// Attempt is one signing session run for a request.
type Attempt struct {
	Session  ids.SessionID  `json:"session"`
	Quorum   []ids.MemberID `json:"quorum"`
	State    string         `json:"state"` // proposing, running, done, failed, refused
	Culprits []ids.MemberID `json:"culprits,omitempty"`
	Error    string         `json:"error,omitempty"`
	Started  time.Time      `json:"started"`
	// Running is when every member of the quorum had joined and been
	// told to start; Collected when the coordinator held the checked
	// signature, before its audit entry and record (Ended).
	Running   time.Time `json:"running,omitzero"`
	Collected time.Time `json:"collected,omitzero"`
	Ended     time.Time `json:"ended,omitzero"`
	// Presignature is the presignature the attempt named, if any: its
	// members ran only the online phase of signing.
	Presignature ids.SessionID `json:"presignature,omitzero"`
}

// Request is a signing request as GET /v1/requests/{id} shows it.
type Request struct {
	ID      ids.RequestID  `json:"id"`
	Agent   ids.AgentID    `json:"agent"`
	Key     ids.KeyID      `json:"key"`
	From    common.Address `json:"from"`
	ChainID uint64         `json:"chain_id"`
	Kind    string         `json:"kind"`
	Digest  common.Hash    `json:"digest"`
	State   string         `json:"state"`
	// Summary describes the payload as the coordinator decoded it.
	Summary  string    `json:"summary,omitempty"`
	Decision *Decision `json:"decision,omitempty"`
	// RuleID and Reason say why a request is denied, failed or pending.
	RuleID    string        `json:"rule_id,omitempty"`
	Reason    string        `json:"reason,omitempty"`
	Tier      string        `json:"tier,omitempty"`
	Member    ids.MemberID  `json:"member,omitempty"` // the member that refused, if one did
	Approvals []Approval    `json:"approvals,omitempty"`
	Approvers []string      `json:"approvers,omitempty"` // the guardian accounts that approved
	Needed    int           `json:"approvals_needed,omitempty"`
	Denial    *Denial       `json:"denial,omitempty"`
	Signature hexutil.Bytes `json:"signature,omitempty"`
	// RawTransaction and TxHash: for a transaction, once signed.
	RawTransaction hexutil.Bytes `json:"raw_transaction,omitempty"`
	TxHash         *common.Hash  `json:"tx_hash,omitempty"`
	// Broadcast: the transaction was sent to the chain (BroadcastError
	// says why not, if sending failed).
	Broadcast      bool      `json:"broadcast,omitempty"`
	BroadcastError string    `json:"broadcast_error,omitempty"`
	Attempts       []Attempt `json:"attempts,omitempty"`
	Expiry         time.Time `json:"expiry"`
	Created        time.Time `json:"created"`
	Updated        time.Time `json:"updated"`
}

// PendingApprovals is the answer of GET /v1/approvals: the requests waiting for
// guardians.
type PendingApprovals struct {
	Requests []Request `json:"requests"`
}

// Policy is the answer of GET /v1/policy.
type Policy struct {
	Version  uint64         `json:"version"`
	Hash     common.Hash    `json:"hash"`
	WalletID common.Hash    `json:"wallet_id"`
	Document PolicyDocument `json:"document"`
}

// MemberAck is one member's answer to something pushed to every member.
type MemberAck struct {
	Member   ids.MemberID `json:"member"`
	Accepted bool         `json:"accepted"`
	RuleID   string       `json:"rule_id,omitempty"`
	Reason   string       `json:"reason,omitempty"`
}

// Pushed is the answer of POST /v1/policy, /v1/grants, /v1/freezes and
// /v1/unfreezes: what each member said.
type Pushed struct {
	Version uint64      `json:"version,omitempty"`
	Hash    common.Hash `json:"hash,omitzero"`
	Members []MemberAck `json:"members"`
}

// DryRun is the answer of POST /v1/policy/dry-run.
type DryRun struct {
	Decision Decision    `json:"decision"`
	Digest   common.Hash `json:"digest"`
	Trace    []TraceStep `json:"trace"`
	// Budgets is what remains of the deciding rule's budget for the
	// request's agent and key, as the evaluating member's ledger has it.
	Budgets []BudgetLeft `json:"budgets,omitempty"`
}

// TraceStep is one line of a rule trace.
type TraceStep struct {
	Rule    string `json:"rule"`
	Matched bool   `json:"matched"`
	Detail  string `json:"detail,omitempty"`
}

// AuditEntry is one entry of the coordinator's own request log.
type AuditEntry struct {
	Seq       uint64            `json:"seq"`
	Time      time.Time         `json:"time"`
	Kind      string            `json:"kind"`
	RequestID ids.RequestID     `json:"request_id,omitempty"`
	Decision  string            `json:"decision,omitempty"`
	RuleID    string            `json:"rule_id,omitempty"`
	Fields    map[string]string `json:"fields,omitempty"`
	PrevHash  common.Hash       `json:"prev_hash"`
	Hash      common.Hash       `json:"hash"`
}

// Audit is the answer of GET /v1/audit.
type Audit struct {
	Entries []AuditEntry `json:"entries"`
}

// MemberHealth is what the coordinator knows of one member.
type MemberHealth struct {
	ID            ids.MemberID `json:"id"`
	Role          ids.Role     `json:"role"`
	Reachable     bool         `json:"reachable"`
	PolicyVersion uint64       `json:"policy_version,omitempty"`
	PreParams     int          `json:"pre_params,omitempty"`
	// Presignatures counts the presignatures parked at the member, by
	// key.
	Presignatures map[ids.KeyID]int `json:"presignatures,omitempty"`
	Error         string            `json:"error,omitempty"`
}

// Health is the answer of GET /v1/health.
type Health struct {
	Status        string         `json:"status"` // ok or degraded
	Peer          string         `json:"peer"`
	PolicyVersion uint64         `json:"policy_version"`
	Members       []MemberHealth `json:"members"`
	Pending       int            `json:"pending"` // requests not yet final: waiting for guardians or a delay, or being signed
}

// DryRunRequest is the body of POST /v1/policy/dry-run: a signing request
// as the agent signed it for POST /v1/requests (agentauth.Signed), which a
// policy member evaluates without signing or reserving anything.
type DryRunRequest struct {
	Request agentauth.Signed `json:"request"`
}

// Revocation is the body of POST /v1/revocations: one guardian's
// EIP-712 signature withdrawing a session grant (policy.Revocation's
// typed data under the wallet id). The signature is the credential.
type Revocation struct {
	GrantID   string        `json:"grant_id"`
	Issued    time.Time     `json:"issued"`
	Signature hexutil.Bytes `json:"signature"`
}

// Policy checks the revocation's shape and returns it as the policy
// package has it, with its signature.
func (r Revocation) Policy() (policy.Revocation, []byte, error) {
	switch {
	case r.GrantID == "":
		return policy.Revocation{}, nil, fmt.Errorf("revocation: grant_id is empty")
	case len(r.GrantID) > 128:
		return policy.Revocation{}, nil, fmt.Errorf("revocation: grant_id is longer than 128 bytes")
	case r.Issued.IsZero():
		return policy.Revocation{}, nil, fmt.Errorf("revocation %s: issued is missing", r.GrantID)
	case len(r.Signature) != 65:
		return policy.Revocation{}, nil, fmt.Errorf("revocation %s: signature is %d bytes, want 65", r.GrantID, len(r.Signature))
	}
	return policy.Revocation{GrantID: r.GrantID, Issued: r.Issued}, r.Signature, nil
}

// BudgetLeft is one budget bucket of the rule a dry run named: amounts
// are decimal base units of Asset ("native": wei; else the ERC-20's
// address). Limit and Left are empty when the bucket caps only the
// number of requests; Window is a Go duration ("24h0m0s").
type BudgetLeft struct {
	Rule       string `json:"rule"`
	Window     string `json:"window,omitempty"`
	Asset      string `json:"asset"`
	Limit      string `json:"limit,omitempty"`
	Used       string `json:"used"`
	Left       string `json:"left,omitempty"`
	CountLimit uint64 `json:"count_limit,omitempty"`
	CountUsed  uint64 `json:"count_used"`
}
