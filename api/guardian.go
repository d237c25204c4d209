package api

import (
	"encoding/json"
	"fmt"
	"math/big"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// The JSON forms of what guardians sign, shared by the REST API, the
// control protocol and the guardian CLI. Each converts to and from the
// policy package's type; the EIP-712 message is always the policy's, so
// a JSON form carries nothing that a signature does not cover, except the
// signature itself.

// Approval is a guardian's signed approval of one request.
//
//	{"request_id": "req:…", "digest": "0x…", "chain_id": 1, "key": "0x…",
//	 "issued": "2026-12-01T20:00:00Z", "expiry": "2026-12-01T21:00:00Z",
//	 "signature": "0x…"}
type Approval struct {
	RequestID ids.RequestID  `json:"request_id"`
	Digest    common.Hash    `json:"digest"`
	ChainID   uint64         `json:"chain_id"`
	Key       common.Address `json:"key"`
	Issued    time.Time      `json:"issued"`
	Expiry    time.Time      `json:"expiry"`
	Signature hexutil.Bytes  `json:"signature"`
}

// Policy returns the approval in the policy's form.
func (a Approval) Policy() policy.SignedApproval {
	return policy.SignedApproval{
		Approval: policy.Approval{
			RequestID: a.RequestID,
			Digest:    a.Digest,
			ChainID:   new(big.Int).SetUint64(a.ChainID),
			Key:       a.Key,
			Issued:    a.Issued,
			Expiry:    a.Expiry,
		},
		Signature: a.Signature,
	}
}

// ApprovalFrom returns the JSON form of a signed approval.
func ApprovalFrom(s policy.SignedApproval) Approval {
	var chainID uint64
	if s.Approval.ChainID != nil && s.Approval.ChainID.IsUint64() {
		chainID = s.Approval.ChainID.Uint64()
	}
	return Approval{
		RequestID: s.Approval.RequestID,
		Digest:    s.Approval.Digest,
		ChainID:   chainID,
		Key:       s.Approval.Key,
		Issued:    s.Approval.Issued,
		Expiry:    s.Approval.Expiry,
		Signature: s.Signature,
	}
}

// Approvals converts a list to the policy's form.
func Approvals(list []Approval) []policy.SignedApproval {
	out := make([]policy.SignedApproval, len(list))
	for i, a := range list {
		out[i] = a.Policy()
	}
	return out
}

// Denial is a guardian's signed refusal of one request.
type Denial struct {
	RequestID ids.RequestID `json:"request_id"`
	Digest    common.Hash   `json:"digest"`
	Reason    string        `json:"reason"`
	Issued    time.Time     `json:"issued"`
	Signature hexutil.Bytes `json:"signature"`
}

// Policy returns the denial in the policy's form.
func (d Denial) Policy() policy.SignedDenial {
	return policy.SignedDenial{
		Denial:    policy.Denial{RequestID: d.RequestID, Digest: d.Digest, Reason: d.Reason, Issued: d.Issued},
		Signature: d.Signature,
	}
}

// DenialFrom returns the JSON form of a signed denial.
func DenialFrom(s policy.SignedDenial) Denial {
	return Denial{RequestID: s.Denial.RequestID, Digest: s.Denial.Digest, Reason: s.Denial.Reason, Issued: s.Denial.Issued, Signature: s.Signature}
}

// Freeze is one guardian's signed freeze of an agent, a key or everything
// ("all", "agent:<id>", "key:0x…").
type Freeze struct {
	Target    policy.Target `json:"target"`
	Reason    string        `json:"reason"`
	Issued    time.Time     `json:"issued"`
	Signature hexutil.Bytes `json:"signature"`
}

// Policy returns the freeze and its signature in the policy's form.
func (f Freeze) Policy() (policy.Freeze, []byte) {
	return policy.Freeze{Target: f.Target, Reason: f.Reason, Issued: f.Issued}, f.Signature
}

// FreezeFrom returns the JSON form of a signed freeze.
func FreezeFrom(f policy.Freeze, sig []byte) Freeze {
	return Freeze{Target: f.Target, Reason: f.Reason, Issued: f.Issued, Signature: sig}
}

// Unfreeze lifts the freeze it names once a guardian quorum signed it.
// Signatures holds one signature per guardian; the same unfreeze (target,
// freeze, issued) must be signed by each.
type Unfreeze struct {
	Target     policy.Target   `json:"target"`
	Freeze     common.Hash     `json:"freeze"`
	Issued     time.Time       `json:"issued"`
	Signatures []hexutil.Bytes `json:"signatures"`
}

// Policy returns the unfreeze and its signatures in the policy's form.
func (u Unfreeze) Policy() (policy.Unfreeze, [][]byte) {
	sigs := make([][]byte, len(u.Signatures))
	for i, s := range u.Signatures {
		sigs[i] = s
	}
	return policy.Unfreeze{Target: u.Target, Freeze: u.Freeze, Issued: u.Issued}, sigs
}

// Reshare is a guardian quorum's authorisation to move a key to a new
// committee. Members are policy.CommitteeEntry strings ("<member>:<role>").
type Reshare struct {
	Key          common.Address  `json:"key"`
	Generation   uint32          `json:"generation"`
	OldMembers   []string        `json:"old_members"`
	OldThreshold int             `json:"old_threshold"`
	NewMembers   []string        `json:"new_members"`
	NewThreshold int             `json:"new_threshold"`
	Expiry       time.Time       `json:"expiry"`
	Signatures   []hexutil.Bytes `json:"signatures"`
}

// Policy returns the authorisation in the policy's form.
func (r Reshare) Policy() policy.SignedReshare {
	sigs := make([][]byte, len(r.Signatures))
	for i, s := range r.Signatures {
		sigs[i] = s
	}
	return policy.SignedReshare{
		Authorization: policy.ReshareAuthorization{
			Key: r.Key, Generation: r.Generation,
			OldMembers: r.OldMembers, OldThreshold: r.OldThreshold,
			NewMembers: r.NewMembers, NewThreshold: r.NewThreshold,
			Expiry: r.Expiry,
		},
		Signatures: sigs,
	}
}

// ReshareFrom returns the JSON form of an authorisation.
func ReshareFrom(s policy.SignedReshare) Reshare {
	a := s.Authorization
	sigs := make([]hexutil.Bytes, len(s.Signatures))
	for i, b := range s.Signatures {
		sigs[i] = b
	}
	return Reshare{Key: a.Key, Generation: a.Generation, OldMembers: a.OldMembers, OldThreshold: a.OldThreshold,
		NewMembers: a.NewMembers, NewThreshold: a.NewThreshold, Expiry: a.Expiry, Signatures: sigs}
}

// PolicyDocument is a policy document (its YAML source, byte for byte as
// the guardians signed it) with their signatures.
type PolicyDocument struct {
	Source     string          `json:"source"`
	Signatures []hexutil.Bytes `json:"signatures"`
}

// Policy returns the document in the policy's form.
func (d PolicyDocument) Policy() policy.SignedDocument {
	sigs := make([][]byte, len(d.Signatures))
	for i, s := range d.Signatures {
		sigs[i] = s
	}
	return policy.SignedDocument{Source: []byte(d.Source), Signatures: sigs}
}

// PolicyDocumentFrom returns the JSON form of a signed document.
func PolicyDocumentFrom(s policy.SignedDocument) PolicyDocument {
	sigs := make([]hexutil.Bytes, len(s.Signatures))
	for i, b := range s.Signatures {
		sigs[i] = b
	}
	return PolicyDocument{Source: string(s.Source), Signatures: sigs}
}

// Grant is a guardian-signed session grant: what one agent may do with
// one key for a while. Amounts are decimal strings in wei or token base
// units; absent caps allow nothing.
type Grant struct {
	ID           string           `json:"id"`
	Agent        ids.AgentID      `json:"agent"`
	Key          common.Address   `json:"key"`
	NotBefore    time.Time        `json:"not_before"`
	Expiry       time.Time        `json:"expiry"`
	ValuePerTx   *Amount          `json:"value_per_tx,omitempty"`
	ValueTotal   *Amount          `json:"value_total,omitempty"`
	Token        *common.Address  `json:"token,omitempty"`
	AmountPerTx  *Amount          `json:"amount_per_tx,omitempty"`
	AmountTotal  *Amount          `json:"amount_total,omitempty"`
	Destinations []common.Address `json:"destinations,omitempty"`
	Selectors    []hexutil.Bytes  `json:"selectors,omitempty"`
	MaxCount     uint64           `json:"max_count,omitempty"`
	ChainID      uint64           `json:"chain_id,omitempty"`
	Signature    hexutil.Bytes    `json:"signature"`
}

// Amount is a non-negative integer written as a decimal string, so that
// no JSON parser rounds it.
type Amount struct{ big.Int }

// MarshalJSON writes the decimal string.
func (a Amount) MarshalJSON() ([]byte, error) { return json.Marshal(a.Int.String()) }

// UnmarshalJSON takes a decimal string of at most 78 digits (2^256).
func (a *Amount) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("amount must be a decimal string, got %s", b)
	}
	if len(s) == 0 || len(s) > 78 {
		return fmt.Errorf("amount %q is not 1 to 78 decimal digits", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return fmt.Errorf("amount %q is not a decimal integer", s)
		}
	}
	a.Int.SetString(s, 10)
	return nil
}

func amountFrom(b *big.Int) *Amount {
	if b == nil {
		return nil
	}
	a := new(Amount)
	a.Int.Set(b)
	return a
}

func (a *Amount) big() *big.Int {
	if a == nil {
		return nil
	}
	return new(big.Int).Set(&a.Int)
}

// Policy returns the grant in the policy's form, refusing a selector that
// is not 4 bytes.
func (g Grant) Policy() (*policy.SignedGrant, error) {
	out := policy.Grant{
		ID: g.ID, Agent: g.Agent, Key: g.Key, NotBefore: g.NotBefore, Expiry: g.Expiry,
		ValuePerTx: g.ValuePerTx.big(), ValueTotal: g.ValueTotal.big(),
		AmountPerTx: g.AmountPerTx.big(), AmountTotal: g.AmountTotal.big(),
		Destinations: g.Destinations, MaxCount: g.MaxCount,
	}
	if g.Token != nil {
		out.Token = *g.Token
	}
	if g.ChainID != 0 {
		out.ChainID = new(big.Int).SetUint64(g.ChainID)
	}
	for i, s := range g.Selectors {
		if len(s) != 4 {
			return nil, fmt.Errorf("grant selector %d is %d bytes, want 4", i, len(s))
		}
		out.Selectors = append(out.Selectors, [4]byte(s))
	}
	return &policy.SignedGrant{Grant: out, Signature: g.Signature}, nil
}

// GrantFrom returns the JSON form of a signed grant.
func GrantFrom(s policy.SignedGrant) Grant {
	g := s.Grant
	out := Grant{
		ID: g.ID, Agent: g.Agent, Key: g.Key, NotBefore: g.NotBefore, Expiry: g.Expiry,
		ValuePerTx: amountFrom(g.ValuePerTx), ValueTotal: amountFrom(g.ValueTotal),
		AmountPerTx: amountFrom(g.AmountPerTx), AmountTotal: amountFrom(g.AmountTotal),
		Destinations: g.Destinations, MaxCount: g.MaxCount, Signature: s.Signature,
	}
	if g.Token != (common.Address{}) {
		t := g.Token
		out.Token = &t
	}
	if g.ChainID != nil && g.ChainID.IsUint64() {
		out.ChainID = g.ChainID.Uint64()
	}
	for _, sel := range g.Selectors {
		out.Selectors = append(out.Selectors, sel[:])
	}
	return out
}

// ParseGrant decodes the grant of a signing request strictly.
func ParseGrant(raw json.RawMessage) (*policy.SignedGrant, error) {
	var g Grant
	if err := httpapi.DecodeBytes(raw, &g); err != nil {
		return nil, fmt.Errorf("%w: grant: %v", ErrBadRequest, errMessage(err))
	}
	sg, err := g.Policy()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return sg, nil
}
