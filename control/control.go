// Package control is the request protocol that coordinators and nodes speak
// beside the threshold protocol, over the same libp2p hosts
// (/custos/ctl/1.0.0, served through p2p.Node.RegisterHandler). Each
// exchange is one Message and one Reply, JSON, decoded strictly: unknown
// fields, a key given twice, trailing data and a body that does not match
// the message type are all refused.
//
// Signing: the coordinator sends each quorum member a Propose (the
// agent-signed request as the agent signed it, the quorum, the tier it
// expects, the approvals it holds, a fresh session id). The node runs every
// check itself and answers with a Join (its budget reserved) or a Refusal
// (rule id and reason). Once every member joined, the coordinator sends
// Start; each member runs the session over /custos/tss/1.0.0 and the
// coordinator collects the outcome with Result queries, which wait up to a
// bound for the session to end. Keygen and Reshare follow the same
// propose, start and result steps. Evaluate is a dry run at a policy node;
// Pending tells a guardian node of a request awaiting its human; Policy,
// Freeze and Unfreeze carry guardian-signed changes to every node; Approval
// goes from a guardian node to the coordinators; Status reports a node's
// keys, policy, pool and parked presignatures.
//
// Presignatures: the coordinator sends each member of a hot-tier quorum a
// Presign (a fresh session id, the key, the quorum, the path), then Start
// and Result as for a signing session; the members run signing rounds 1-4
// and park the result in memory. A later Propose may name one in
// Presignature; the member runs every check of the proposal as without it
// and, at Start, finishes the parked presignature for the digest it
// computed itself. A member that does not hold it refuses under
// RulePresignature, and the coordinator runs the full protocol instead.
package control

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/strictjson"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocol is the control protocol's libp2p id.
const Protocol protocol.ID = "/custos/ctl/1.0.0"

// MaxMessage bounds a message or a reply: a signing request body at its
// largest, base64 in JSON, with room for approvals and the quorum.
const MaxMessage = 1 << 20

// MaxResultWait bounds how long a Result query waits for a session to end;
// it stays below the transport's request timeout.
const MaxResultWait = 20 * time.Second

// RequestID is the id of the request an agent signed: derived from the
// agent and its idempotency key, so the same signed request has one id
// wherever it travels and a coordinator cannot make two requests of one
// agent signature. Approvals and budget reservations are bound to it.
func RequestID(agent ids.AgentID, idempotencyKey string) ids.RequestID {
	h := sha256.New()
	h.Write([]byte("custos-request/1\x00"))
	h.Write([]byte(agent))
	h.Write([]byte{0})
	h.Write([]byte(idempotencyKey))
	return ids.RequestID("req:" + hex.EncodeToString(h.Sum(nil)[:16]))
}

// Type names a message.
type Type string

// The message types.
const (
	TypePropose  Type = "propose"  // coordinator → member: join a signing session?
	TypeKeygen   Type = "keygen"   // coordinator → member: join a key generation?
	TypeReshare  Type = "reshare"  // coordinator → old and new members: join a reshare?
	TypeStart    Type = "start"    // coordinator → member: every member joined, run it
	TypeAbort    Type = "abort"    // coordinator → member: drop a proposal that will not start
	TypeResult   Type = "result"   // coordinator → member: the session's outcome (waits)
	TypeEvaluate Type = "evaluate" // coordinator → policy member: dry run
	TypePending  Type = "pending"  // coordinator → guardian member: a request awaits your human
	TypePolicy   Type = "policy"   // coordinator → member: a guardian-signed document or grant
	TypeFreeze   Type = "freeze"   // anyone → member: one guardian's freeze
	TypeUnfreeze Type = "unfreeze" // coordinator → member: a guardian quorum's unfreeze
	TypeApproval Type = "approval" // guardian member → coordinator: an approval or denial
	TypeStatus   Type = "status"   // coordinator → member: keys, policy, pool
	TypePresign  Type = "presign"  // coordinator → member: join a presignature?
)

// RulePresignature is the rule id of a refusal of the presignature a
// Propose names (unknown here, claimed by another session, or made for
// another key, quorum or path): the coordinator retries at once without it.
const RulePresignature = "presignature"

// Message is one request of the protocol: Type and exactly the body field
// of that type.
type Message struct {
	Type     Type          `json:"type"`
	Propose  *Propose      `json:"propose,omitempty"`
	Keygen   *Keygen       `json:"keygen,omitempty"`
	Reshare  *Reshare      `json:"reshare,omitempty"`
	Start    *SessionRef   `json:"start,omitempty"`
	Abort    *SessionRef   `json:"abort,omitempty"`
	Result   *ResultQuery  `json:"result,omitempty"`
	Evaluate *Evaluate     `json:"evaluate,omitempty"`
	Pending  *Pending      `json:"pending,omitempty"`
	Policy   *PolicyUpdate `json:"policy,omitempty"`
	Freeze   *api.Freeze   `json:"freeze,omitempty"`
	Unfreeze *api.Unfreeze `json:"unfreeze,omitempty"`
	Approval *ApprovalMsg  `json:"approval,omitempty"`
	Status   *StatusQuery  `json:"status,omitempty"`
	Presign  *Presign      `json:"presign,omitempty"`
}

// Propose asks a member to join the signing of an agent's request.
type Propose struct {
	Session ids.SessionID `json:"session"`
	// RequestID must equal RequestID(Request.Agent, the body's
	// idempotency key); the member recomputes it.
	RequestID ids.RequestID `json:"request_id"`
	// Request is the agent's signature over its request, body included,
	// exactly as the agent made it.
	Request agentauth.Signed `json:"request"`
	// Quorum is every member of the session, this one included.
	Quorum []ids.MemberID `json:"quorum"`
	// Tier is the tier the coordinator expects; the member refuses if its
	// own evaluation gives another.
	Tier      string         `json:"tier"`
	Approvals []api.Approval `json:"approvals,omitempty"`
	// Deadline is when the coordinator gives up: a member that joined and
	// saw no Start by then releases its reservation.
	Deadline time.Time `json:"deadline"`
	// Presignature optionally names a presignature parked at every member
	// of Quorum (its presign session id), made for this key, this quorum
	// and the request's path. It changes no check of the proposal.
	Presignature ids.SessionID `json:"presignature,omitzero"`
}

// Presign asks a member to join a presignature: signing rounds 1-4 for
// Key by Quorum at Path, parked in memory until a Propose names it. Only a
// quorum of the hot tier (no approvals, no delay) gets presignatures.
type Presign struct {
	Session  ids.SessionID  `json:"session"`
	Key      ids.KeyID      `json:"key"`
	Quorum   []ids.MemberID `json:"quorum"`
	Path     []uint32       `json:"path,omitempty"`
	Deadline time.Time      `json:"deadline"`
}

// Keygen asks a member to join a key generation.
type Keygen struct {
	Session   ids.SessionID `json:"session"`
	Committee tss.Committee `json:"committee"`
	Deadline  time.Time     `json:"deadline"`
}

// Reshare asks a member of the old or the new committee to join a reshare.
type Reshare struct {
	Session ids.SessionID `json:"session"`
	// Key is the key as it stands; old members check it against their
	// share, new members take it as the key they will hold.
	Key          tss.KeyInfo    `json:"key"`
	OldSigners   []ids.MemberID `json:"old_signers"`
	NewCommittee tss.Committee  `json:"new_committee"`
	// Authorization is the guardian quorum's signed authorisation; every
	// member checks it names this key, generation and both committees.
	Authorization api.Reshare `json:"authorization"`
	Deadline      time.Time   `json:"deadline"`
}

// SessionRef names a proposed session.
type SessionRef struct {
	Session ids.SessionID `json:"session"`
}

// ResultQuery asks for a session's outcome, waiting up to Wait (at most
// MaxResultWait) for it to end.
type ResultQuery struct {
	Session ids.SessionID `json:"session"`
	Wait    Duration      `json:"wait,omitempty"`
}

// Evaluate asks a policy member for a dry run of an agent's request.
type Evaluate struct {
	RequestID ids.RequestID    `json:"request_id"`
	Request   agentauth.Signed `json:"request"`
}

// Pending tells a guardian member that a request awaits its human. The
// member decodes and checks the request itself: what its human is shown
// comes from the agent's own bytes, not from the coordinator.
type Pending struct {
	RequestID ids.RequestID    `json:"request_id"`
	Request   agentauth.Signed `json:"request"`
	Tier      string           `json:"tier"`
	RuleID    string           `json:"rule_id"`
	Reason    string           `json:"reason,omitempty"`
}

// PolicyUpdate carries a guardian-signed policy document, a session grant
// or a grant's revocation: exactly one.
type PolicyUpdate struct {
	Document   *api.PolicyDocument `json:"document,omitempty"`
	Grant      *api.Grant          `json:"grant,omitempty"`
	Revocation *Revocation         `json:"revocation,omitempty"`
}

// Revocation is a guardian's signed revocation of a session grant.
type Revocation struct {
	GrantID   string        `json:"grant_id"`
	Issued    time.Time     `json:"issued"`
	Signature hexutil.Bytes `json:"signature"`
}

// ApprovalMsg carries a guardian's approval or denial: exactly one.
type ApprovalMsg struct {
	Approval *api.Approval `json:"approval,omitempty"`
	Denial   *api.Denial   `json:"denial,omitempty"`
}

// StatusQuery asks a member for its Status.
type StatusQuery struct{}

// Reply answers a Message. Refusal is set when the member refused; the
// other fields are the answer of the message's type.
type Reply struct {
	Refusal  *Refusal  `json:"refusal,omitempty"`
	Join     *Join     `json:"join,omitempty"`
	Result   *Result   `json:"result,omitempty"`
	Decision *Decision `json:"decision,omitempty"`
	Status   *Status   `json:"status,omitempty"`
}

// Refusal is why a member said no: the policy rule (or a check name such
// as "agent", "tier", "quorum", "approval", "session", "digest") and a
// reason a person can read.
type Refusal struct {
	Member ids.MemberID `json:"member"`
	RuleID string       `json:"rule_id"`
	Reason string       `json:"reason"`
}

// Error makes a refusal an error.
func (r *Refusal) Error() string {
	return fmt.Sprintf("%s refused (%s): %s", r.Member, r.RuleID, r.Reason)
}

// Join is a member's yes to a proposal, with what it checked.
type Join struct {
	Member     ids.MemberID `json:"member"`
	Digest     common.Hash  `json:"digest,omitempty"`
	Tier       string       `json:"tier,omitempty"`
	RuleID     string       `json:"rule_id,omitempty"`
	PolicyHash common.Hash  `json:"policy_hash,omitempty"`
	Reserved   bool         `json:"reserved,omitempty"`
	// PreParams reports, for a keygen or reshare, whether the member has
	// its pre-parameters ready (false: it waits for its pool at Start).
	PreParams bool `json:"pre_params,omitempty"`
}

// Session states a Result reports.
const (
	StateProposed = "proposed" // joined, no Start yet
	StateRunning  = "running"
	StateDone     = "done"
	StateFailed   = "failed"
	StateUnknown  = "unknown" // the member has no such session
)

// Result is a member's view of a session.
type Result struct {
	Member  ids.MemberID  `json:"member"`
	Session ids.SessionID `json:"session"`
	State   string        `json:"state"`
	// Signature: after signing, and the reshare's proof signature.
	Signature hexutil.Bytes `json:"signature,omitempty"`
	// Key: after keygen and reshare, the key as this member holds it.
	Key *tss.KeyInfo `json:"key,omitempty"`
	// Confirmed and Unconfirmed: after a reshare.
	Confirmed   []ids.MemberID `json:"confirmed,omitempty"`
	Unconfirmed []ids.MemberID `json:"unconfirmed,omitempty"`
	// Failure: the kind (tss.FailureKind), culprits and waiting members.
	Failure  string         `json:"failure,omitempty"`
	Error    string         `json:"error,omitempty"`
	Culprits []ids.MemberID `json:"culprits,omitempty"`
	Waiting  []ids.MemberID `json:"waiting,omitempty"`
	// Progress is a line for people while the member waits (for its
	// pre-parameter pool, say).
	Progress string `json:"progress,omitempty"`
}

// Decision is a policy member's dry-run answer.
type Decision struct {
	Verdict       string      `json:"verdict"` // allow, tier or deny
	RuleID        string      `json:"rule_id"`
	Reason        string      `json:"reason"`
	Tier          string      `json:"tier,omitempty"`
	TierRank      int         `json:"tier_rank,omitempty"`
	Roles         []ids.Role  `json:"roles,omitempty"`
	Approvals     int         `json:"approvals,omitempty"`
	Delay         Duration    `json:"delay,omitempty"`
	Digest        common.Hash `json:"digest"`
	PolicyHash    common.Hash `json:"policy_hash"`
	PolicyVersion uint64      `json:"policy_version"`
	Trace         []Step      `json:"trace,omitempty"`
	// Budgets is what remains of the deciding rule's budget for the
	// request's agent and key, from the member's own ledger.
	Budgets []BudgetLeft `json:"budgets,omitempty"`
}

// BudgetLeft is one budget bucket of a rule: amounts in decimal base
// units of the asset ("native" is wei, else the token's address); Limit
// and Left are empty when the bucket caps only the count.
type BudgetLeft struct {
	Rule       string   `json:"rule"`
	Window     Duration `json:"window,omitempty"`
	Asset      string   `json:"asset"`
	Limit      string   `json:"limit,omitempty"`
	Used       string   `json:"used"`
	Left       string   `json:"left,omitempty"`
	CountLimit uint64   `json:"count_limit,omitempty"`
	CountUsed  uint64   `json:"count_used"`
}

// Step is one line of a rule trace.
type Step struct {
	Rule    string `json:"rule"`
	Matched bool   `json:"matched"`
	Detail  string `json:"detail,omitempty"`
}

// Status is what a member reports of itself.
type Status struct {
	Member        ids.MemberID  `json:"member"`
	Role          ids.Role      `json:"role"`
	Agent         ids.AgentID   `json:"agent,omitempty"`    // agent members: whose
	Guardian      string        `json:"guardian,omitempty"` // guardian members: the identity account
	Keys          []tss.KeyInfo `json:"keys"`
	PolicyVersion uint64        `json:"policy_version"`
	PolicyHash    common.Hash   `json:"policy_hash"`
	PreParams     int           `json:"pre_params"`
	// Presignatures are the presignatures parked here, oldest first.
	Presignatures []Presignature `json:"presignatures,omitempty"`
}

// Presignature is a presignature a member holds (no secret in it).
type Presignature struct {
	ID      ids.SessionID  `json:"id"`
	Key     ids.KeyID      `json:"key"`
	Quorum  []ids.MemberID `json:"quorum"`
	Path    []uint32       `json:"path,omitempty"`
	Created time.Time      `json:"created"`
}

// Duration is a time.Duration written as Go's duration text ("1.5s").
type Duration time.Duration

// MarshalJSON writes the duration text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON takes a duration text.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"1.5s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %s is negative", s)
	}
	*d = Duration(v)
	return nil
}

// bodies maps each type to its field.
var bodies = map[Type]string{
	TypePropose: "Propose", TypeKeygen: "Keygen", TypeReshare: "Reshare",
	TypeStart: "Start", TypeAbort: "Abort", TypeResult: "Result",
	TypeEvaluate: "Evaluate", TypePending: "Pending", TypePolicy: "Policy",
	TypeFreeze: "Freeze", TypeUnfreeze: "Unfreeze", TypeApproval: "Approval",
	TypeStatus: "Status", TypePresign: "Presign",
}

// Encode serialises m after checking its shape.
func Encode(m *Message) ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("control: encode %s: %w", m.Type, err)
	}
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("control: %s message of %d bytes exceeds %d", m.Type, len(b), MaxMessage)
	}
	return b, nil
}

// Decode parses a message strictly: a known type, exactly its body, no
// unknown or repeated keys, nothing after the object.
func Decode(b []byte) (*Message, error) {
	var m Message
	if err := decodeStrict(b, &m); err != nil {
		return nil, fmt.Errorf("control: malformed message: %w", err)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}

// EncodeReply serialises a reply.
func EncodeReply(r *Reply) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("control: encode reply: %w", err)
	}
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("control: reply of %d bytes exceeds %d", len(b), MaxMessage)
	}
	return b, nil
}

// DecodeReply parses a reply strictly.
func DecodeReply(b []byte) (*Reply, error) {
	var r Reply
	if err := decodeStrict(b, &r); err != nil {
		return nil, fmt.Errorf("control: malformed reply: %w", err)
	}
	return &r, nil
}

func (m *Message) check() error {
	field, ok := bodies[m.Type]
	if !ok {
		return fmt.Errorf("control: unknown message type %q", m.Type)
	}
	v := reflect.ValueOf(m).Elem()
	for _, name := range bodies {
		f := v.FieldByName(name)
		switch {
		case name == field && f.IsNil():
			return fmt.Errorf("control: %s message without its %q body", m.Type, m.Type)
		case name != field && !f.IsNil():
			return fmt.Errorf("control: %s message carries a %s body too", m.Type, name)
		}
	}
	return nil
}

func decodeStrict(b []byte, dst any) error {
	if len(b) > MaxMessage {
		return fmt.Errorf("%d bytes exceed %d", len(b), MaxMessage)
	}
	if err := strictjson.CheckKeys(b, reflect.TypeOf(dst).Elem()); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the JSON object")
	}
	return nil
}
