package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/quorum"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
)

// Attempt states.
const (
	attProposing = "proposing"
	attRunning   = "running"
	attDone      = "done"
	attFailed    = "failed"
	attRefused   = "refused"
)

// maxAttempts bounds the sessions tried for one request.
const maxAttempts = 8

// Rule ids the coordinator itself reports.
const (
	ruleExpired = "expiry"
	ruleQuorum  = "quorum"
	// ruleUnreachable: the members a tier needs stayed out of reach.
	ruleUnreachable = "unreachable"
	ruleTier        = "tier"
	ruleGuardian    = "guardian-denial"
	ruleSession     = "session"
	ruleSigned      = "request" // a member already signed this request
	ruleAttempts    = "attempts"
	ruleInternal    = "internal" // a member's own fault: not a refusal of the request
)

// reqBody is a signing request's journal record.
type reqBody struct {
	// Signed is the agent's request exactly as it signed it: what every
	// node of a quorum receives.
	Signed agentauth.Signed `json:"signed"`
	View   api.Request      `json:"view"`
	Path   []uint32         `json:"path,omitempty"`
	Tier   *tierSpec        `json:"tier_spec,omitempty"`
	// Excluded are the members failed sessions blamed.
	Excluded []ids.MemberID `json:"excluded,omitempty"`
	// Unreachable is when the request began to wait for members it could
	// not reach (zero: it is not waiting).
	Unreachable time.Time `json:"unreachable,omitzero"`
}

// tierSpec is policy.TierSpec as stored.
type tierSpec struct {
	Name      string        `json:"name"`
	Rank      int           `json:"rank"`
	Roles     []ids.Role    `json:"roles,omitempty"`
	Approvals int           `json:"approvals,omitempty"`
	Delay     time.Duration `json:"delay,omitempty"`
}

func (t *tierSpec) policy() policy.TierSpec {
	return policy.TierSpec{Name: t.Name, Rank: t.Rank, Roles: t.Roles, Approvals: t.Approvals, Delay: t.Delay}
}

func (b *reqBody) target() policy.ApprovalTarget {
	return policy.ApprovalTarget{RequestID: b.View.ID, Digest: b.View.Digest,
		ChainID: new(big.Int).SetUint64(b.View.ChainID), Key: b.View.Key.Address()}
}

func badRequest(format string, args ...any) *httpapi.Error {
	return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, format, args...)
}

func errText(err error) string {
	var ae *httpapi.Error
	if errors.As(err, &ae) {
		return ae.Message
	}
	return err.Error()
}

// keyRecordID is the journal record of a key the coordinator created.
func keyRecordID(k ids.KeyID) ids.RequestID { return ids.RequestID(k.String()) }

// keyInfo returns the key id as the coordinator knows it.
func (c *Coordinator) keyInfo(ctx context.Context, k ids.KeyID) (tss.KeyInfo, error) {
	rec, err := c.store.Request(ctx, keyRecordID(k))
	if errors.Is(err, store.ErrNotFound) {
		return tss.KeyInfo{}, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "unknown key %s", k)
	}
	if err != nil {
		return tss.KeyInfo{}, err
	}
	var ki tss.KeyInfo
	if err := json.Unmarshal(rec.Body, &ki); err != nil {
		return tss.KeyInfo{}, fmt.Errorf("key record %s: %w", k, err)
	}
	return ki, nil
}

// submit validates an agent-signed request and stores it, or returns the
// request first stored under the same agent and idempotency key (when it
// asks to sign the same payload with the same key and chain; otherwise
// the retry is a conflict). Nothing is stored unless every check passed.
func (c *Coordinator) submit(ctx context.Context, s agentauth.Signed) (api.Request, bool, error) {
	now := c.now()
	var raw api.SignRequest
	if err := httpapi.DecodeBytes(s.Body, &raw); err != nil {
		return api.Request{}, false, err
	}
	pr, err := api.ParseSigned(s, now)
	if err != nil {
		return api.Request{}, false, badRequest("%s", strings.TrimPrefix(err.Error(), api.ErrBadRequest.Error()+": "))
	}
	if c.chainID != 0 && pr.ChainID != c.chainID {
		return api.Request{}, false, badRequest("chain_id %d: this coordinator serves chain %d", pr.ChainID, c.chainID)
	}
	ki, err := c.keyInfo(ctx, pr.Key)
	if err != nil {
		return api.Request{}, false, err
	}
	from := ki.Address
	if len(pr.Path) > 0 {
		ch, err := ki.Child(pr.Path)
		if err != nil {
			return api.Request{}, false, badRequest("path %v of key %s: %v", pr.Path, pr.Key, err)
		}
		from = ch.Address
	}
	if pr.From != nil && *pr.From != from {
		return api.Request{}, false, badRequest("from %s is not the address of key %s at path %v (%s)", pr.From.Hex(), pr.Key, pr.Path, from.Hex())
	}
	id := control.RequestID(s.Agent, pr.IdempotencyKey)
	view := api.Request{ID: id, Agent: s.Agent, Key: pr.Key, From: from, ChainID: pr.ChainID, Kind: pr.Kind,
		Digest: common.Hash(pr.Payload.Digest()), State: api.StateReceived, Summary: pr.Payload.Describe(),
		Expiry: pr.Expiry, Created: now, Updated: now}
	body, err := json.Marshal(reqBody{Signed: s, View: view, Path: pr.Path})
	if err != nil {
		return api.Request{}, false, err
	}
	// The request and its audit entry at one sync; a retry of a stored
	// one writes neither.
	var rec store.RequestRecord
	var created bool
	err = c.store.Batch(ctx, func(bt *store.Batch) error {
		var err error
		rec, created, err = bt.CreateRequest(store.RequestRecord{ID: id, IdempotencyKey: string(id),
			State: view.State, Body: body, Created: now, Updated: now})
		if err != nil || !created {
			return err
		}
		return bt.AppendAudit(store.Entry{Kind: store.AuditRequest, RequestID: id, Time: now, Fields: map[string]string{
			"agent": string(s.Agent), "key": pr.Key.String(), "chain": fmt.Sprint(pr.ChainID),
			"digest": view.Digest.Hex(), "kind": pr.Kind, "summary": view.Summary}})
	})
	if err != nil {
		return api.Request{}, false, fmt.Errorf("store request: %w", err)
	}
	if !created {
		var first reqBody
		if err := json.Unmarshal(rec.Body, &first); err != nil {
			return api.Request{}, false, err
		}
		// A retry may carry another expiry or grant; what it asks to sign
		// must be the same.
		fv := first.View
		if !bytes.Equal(first.Signed.Body, s.Body) && (fv.Digest != view.Digest || fv.Key != view.Key || fv.From != view.From ||
			fv.ChainID != view.ChainID || fv.Kind != view.Kind) {
			e := httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict,
				"idempotency key %q of agent %s was used for a request to sign something else (%s)", pr.IdempotencyKey, s.Agent, id)
			e.RequestID = string(id)
			return api.Request{}, false, e
		}
		return first.View, false, nil
	}
	c.metrics.requests.WithLabelValues("received").Inc()
	c.spawn(string(id), func(ctx context.Context) { c.drive(ctx, id) })
	return view, true, nil
}

// load reads a request's record.
func (c *Coordinator) load(ctx context.Context, id ids.RequestID) (*reqBody, error) {
	rec, err := c.store.Request(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !strings.HasPrefix(string(id), "req:")) {
		return nil, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "unknown request %s", id)
	}
	if err != nil {
		return nil, err
	}
	var b reqBody
	if err := json.Unmarshal(rec.Body, &b); err != nil {
		return nil, fmt.Errorf("request record %s: %w", id, err)
	}
	b.View.Updated = rec.Updated
	return &b, nil
}

// update changes a request's record in one transaction and wakes its
// watchers.
func (c *Coordinator) update(ctx context.Context, id ids.RequestID, change func(b *reqBody) error) (*reqBody, error) {
	var out reqBody
	_, err := c.store.UpdateRequest(ctx, id, c.changeBody(change, &out))
	if err != nil {
		return nil, err
	}
	c.notify(string(id))
	return &out, nil
}

// updateAudited is update with an audit entry of the change (entry, made
// from the changed body), committed with it at one sync: both or neither,
// so whoever sees the change finds it in the log, and a change refused
// (errFinal) writes no entry.
func (c *Coordinator) updateAudited(ctx context.Context, id ids.RequestID, change func(b *reqBody) error, entry func(b *reqBody) store.Entry) (*reqBody, error) {
	var out reqBody
	// As update: a coordinator shutting down (ctx cancelled) changes
	// nothing, and the request is resumed as it stood.
	err := c.store.Batch(ctx, func(bt *store.Batch) error {
		if _, err := bt.UpdateRequest(id, c.changeBody(change, &out)); err != nil {
			return err
		}
		e := entry(&out)
		e.Time = c.now()
		return bt.AppendAudit(e)
	})
	if err != nil {
		return nil, err
	}
	c.notify(string(id))
	return &out, nil
}

// changeBody applies change to a request record's body, leaving the
// changed body in out.
func (c *Coordinator) changeBody(change func(b *reqBody) error, out *reqBody) func(r *store.RequestRecord) error {
	return func(r *store.RequestRecord) error {
		var b reqBody
		if err := json.Unmarshal(r.Body, &b); err != nil {
			return err
		}
		if err := change(&b); err != nil {
			return err
		}
		b.View.Updated = c.now()
		body, err := json.Marshal(&b)
		if err != nil {
			return err
		}
		r.Body, r.State = body, b.View.State
		*out = b
		return nil
	}
}

// errFinal stops an update of a request that became final meanwhile.
var errFinal = errors.New("request is final")

// finish makes a request final with a rule and reason.
func (c *Coordinator) finish(ctx context.Context, id ids.RequestID, state string, member ids.MemberID, rule, reason string) {
	_, err := c.updateAudited(ctx, id, func(b *reqBody) error {
		if api.Final(b.View.State) {
			return errFinal
		}
		b.View.State, b.View.RuleID, b.View.Reason = state, rule, reason
		b.View.Member = member
		return nil
	}, func(b *reqBody) store.Entry {
		return store.Entry{Kind: store.AuditDecision, RequestID: id, Decision: state, RuleID: rule,
			Fields: map[string]string{"reason": reason, "member": string(member), "agent": string(b.View.Agent)}}
	})
	if err != nil {
		if !errors.Is(err, errFinal) {
			c.log.Error("finish request", "request", id, "err", err)
		}
		return
	}
	c.metrics.requests.WithLabelValues(state).Inc()
	c.log.Info("request final", "request", id, "state", state, "rule", rule, "reason", reason)
}

// drive moves one request along until it is final or the coordinator
// closes. It is the request's only driver (spawn), so no two sessions of
// one request ever run from this coordinator at once.
func (c *Coordinator) drive(ctx context.Context, id ids.RequestID) {
	told := false // whether this driver told the guardians of a pending request
	// A request this driver cannot read, or finds in a state it does not
	// know, keeps its driver (health counts it in progress, and the log
	// says why every time) and is read again after a growing pause.
	stuck := time.Duration(0)
	wait := func(wake <-chan struct{}) {
		stuck = min(max(2*stuck, 500*time.Millisecond), 30*time.Second)
		sleep(ctx, stuck, wake)
	}
	for ctx.Err() == nil {
		wake := c.watch(string(id))
		b, err := c.load(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Error("load request", "request", id, "err", err)
				wait(wake)
			}
			continue
		}
		if api.Final(b.View.State) {
			return
		}
		if !c.now().Before(b.View.Expiry) {
			if c.settleOpen(ctx, id, b) {
				continue
			}
			c.finish(ctx, id, api.StateExpired, "", ruleExpired, fmt.Sprintf("expiry %s passed", b.View.Expiry.UTC().Format(time.RFC3339)))
			return
		}
		untilExpiry := b.View.Expiry.Sub(c.now())
		switch b.View.State {
		case api.StateReceived:
			told = true // evaluate tells the guardians when the tier needs them
			retry, pre, pd := c.evaluate(ctx, id, b)
			switch {
			case retry:
				sleep(ctx, min(2*time.Second, untilExpiry), wake)
			case pd != nil:
				// Signing at once: the first attempt records the decision.
				if err := pd.apply(b); err == nil && c.attemptWith(ctx, id, b, true, pre, pd) {
					sleep(ctx, min(time.Second, untilExpiry), wake)
				}
			}
		case api.StatePendingApproval:
			if !told {
				// A driver that finds the request waiting (after a
				// restart) tells the guardians again; their queues keep
				// one entry per request.
				c.retellGuardians(ctx, b)
			}
			told = true
			ok, wait := c.approved(b)
			if ok {
				_, err := c.update(ctx, id, func(b *reqBody) error {
					if b.View.State != api.StatePendingApproval {
						return errFinal
					}
					b.View.State, b.View.Reason, b.View.RuleID = api.StateSigning, "", ""
					return nil
				})
				if err != nil && !errors.Is(err, errFinal) {
					c.log.Error("update request", "request", id, "err", err)
					sleep(ctx, time.Second, wake)
				}
				continue
			}
			sleep(ctx, min(wait, untilExpiry), wake)
		case api.StateSigning:
			if c.attemptWith(ctx, id, b, true, nil, nil) {
				sleep(ctx, min(time.Second, untilExpiry), wake)
			}
		default:
			c.log.Error("request in unknown state", "request", id, "state", b.View.State)
			wait(wake)
			continue
		}
		stuck = 0
	}
}

// evaluate asks a member (policy members first) for the dry run that
// gives the request's tier. It reports whether to try again later and,
// when the request goes on to signing at once, the committee's status
// from a probe made while the dry run ran (the attempt needs it next, and
// the two round trips need not follow each other) and the decision, not
// yet recorded: the first attempt records it (attemptWith). A decision
// that waits for guardians is recorded here.
func (c *Coordinator) evaluate(ctx context.Context, id ids.RequestID, b *reqBody) (retry bool, probed map[ids.MemberID]*control.Status, pending *decided) {
	ki, err := c.keyInfo(ctx, b.View.Key)
	if err != nil {
		c.finish(ctx, id, api.StateFailed, "", "key", errText(err))
		return false, nil, nil
	}
	// Cancelled on every return: only the path to signing waits for it.
	pctx, cancelProbe := context.WithCancel(ctx)
	defer cancelProbe()
	probe := make(chan map[ids.MemberID]*control.Status, 1)
	go func() { probe <- c.probe(pctx, ki.Committee.IDs()) }()
	members := ki.Committee.Canonical().IDs()
	slices.SortStableFunc(members, func(x, y ids.MemberID) int {
		px, py := ki.Committee.Role(x) == ids.RolePolicy, ki.Committee.Role(y) == ids.RolePolicy
		switch {
		case px && !py:
			return -1
		case py && !px:
			return 1
		}
		return strings.Compare(string(x), string(y))
	})
	var d *control.Decision
	var by ids.MemberID
	var lastErr error
	for _, m := range members {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose)
		r, err := c.call(cctx, m, &control.Message{Type: control.TypeEvaluate, Evaluate: &control.Evaluate{RequestID: id, Request: b.Signed}})
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		if r.Refusal != nil && r.Refusal.RuleID == ruleInternal {
			lastErr = r.Refusal
			continue
		}
		if r.Refusal != nil {
			c.finish(ctx, id, api.StateDenied, r.Refusal.Member, r.Refusal.RuleID, r.Refusal.Reason)
			return false, nil, nil
		}
		if r.Decision == nil {
			lastErr = fmt.Errorf("%s answered the dry run without a decision", m)
			continue
		}
		d, by = r.Decision, m
		break
	}
	if d == nil {
		reason := "no member answered the dry run"
		if lastErr != nil {
			reason += ": " + lastErr.Error()
		}
		c.note(ctx, id, reason)
		return true, nil, nil
	}
	dec := &api.Decision{Verdict: d.Verdict, RuleID: d.RuleID, Reason: d.Reason, Tier: d.Tier, Roles: d.Roles,
		Approvals: d.Approvals, PolicyHash: d.PolicyHash, PolicyVersion: d.PolicyVersion, Member: by}
	if d.Delay > 0 {
		dec.Delay = time.Duration(d.Delay).String()
	}
	if d.Verdict == "deny" || d.Tier == "" {
		_, _ = c.update(ctx, id, func(b *reqBody) error { b.View.Decision = dec; return nil })
		c.finish(ctx, id, api.StateDenied, by, d.RuleID, d.Reason)
		return false, nil, nil
	}
	if d.Digest != (common.Hash{}) && d.Digest != b.View.Digest {
		c.log.Warn("member computed another digest", "request", id, "member", by, "digest", d.Digest, "ours", b.View.Digest)
	}
	tier := &tierSpec{Name: d.Tier, Rank: d.TierRank, Roles: d.Roles, Approvals: d.Approvals, Delay: time.Duration(d.Delay)}
	if err := quorum.CanGrant(ki.Committee, tier.policy()); err != nil {
		_, _ = c.update(ctx, id, func(b *reqBody) error { b.View.Decision = dec; return nil })
		c.finish(ctx, id, api.StateDenied, "", ruleTier, fmt.Sprintf("tier %s: %v", d.Tier, err))
		return false, nil, nil
	}
	state := api.StateSigning
	if tier.Approvals > 0 || tier.Delay > 0 {
		state = api.StatePendingApproval
	}
	pd := &decided{dec: dec, tier: tier, state: state, rule: d.RuleID, reason: d.Reason,
		entry: store.Entry{Kind: store.AuditDecision, RequestID: id, Decision: d.Verdict, RuleID: d.RuleID,
			Fields: map[string]string{"tier": d.Tier, "member": string(by), "reason": d.Reason, "agent": string(b.View.Agent)}}}
	if state == api.StateSigning {
		// Recorded with the first attempt, at one sync (attemptWith).
		return false, <-probe, pd
	}
	nb, err := c.recordDecision(ctx, id, pd)
	if err != nil {
		return !errors.Is(err, errFinal), nil, nil
	}
	c.sendPending(ctx, ki, nb, d)
	return false, nil, nil
}

// decided is a request's tier, from the dry run, with its audit entry:
// recorded at once for a tier that waits for guardians, and with the
// request's first attempt for one that goes to signing at once.
type decided struct {
	dec          *api.Decision
	tier         *tierSpec
	state        string // signing or pending_approval
	rule, reason string
	entry        store.Entry
}

// apply records the decision in a request still received.
func (pd *decided) apply(b *reqBody) error {
	if b.View.State != api.StateReceived {
		return errFinal
	}
	b.View.Decision, b.Tier, b.View.Tier, b.View.Needed = pd.dec, pd.tier, pd.tier.Name, pd.tier.Approvals
	b.View.State, b.View.RuleID, b.View.Reason = pd.state, pd.rule, pd.reason
	return nil
}

// recordDecision records pd alone, with its audit entry.
func (c *Coordinator) recordDecision(ctx context.Context, id ids.RequestID, pd *decided) (*reqBody, error) {
	return c.updateAudited(ctx, id, pd.apply, func(*reqBody) store.Entry { return pd.entry })
}

// note records a reason on a request that is still in progress.
func (c *Coordinator) note(ctx context.Context, id ids.RequestID, reason string) {
	_, err := c.update(ctx, id, func(b *reqBody) error {
		if api.Final(b.View.State) {
			return errFinal
		}
		b.View.Reason = reason
		return nil
	})
	if err != nil && !errors.Is(err, errFinal) {
		c.log.Error("update request", "request", id, "err", err)
	}
}

// sendPending tells every guardian member of the key that the request
// awaits its human.
func (c *Coordinator) sendPending(ctx context.Context, ki tss.KeyInfo, b *reqBody, d *control.Decision) {
	var guardians []ids.MemberID
	for _, m := range ki.Committee.Members {
		if m.Role == ids.RoleGuardian {
			guardians = append(guardians, m.ID)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose)
	defer cancel()
	for _, a := range c.callAll(ctx, guardians, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypePending, Pending: &control.Pending{RequestID: b.View.ID,
			Request: b.Signed, Tier: d.Tier, RuleID: d.RuleID, Reason: d.Reason}}
	}) {
		switch {
		case a.err != nil:
			c.log.Warn("pending not delivered", "request", b.View.ID, "member", a.member, "err", a.err)
		case a.reply.Refusal != nil:
			c.log.Warn("pending refused", "request", b.View.ID, "member", a.member, "reason", a.reply.Refusal.Reason)
		}
	}
}

// retellGuardians sends Pending again for a request found waiting.
func (c *Coordinator) retellGuardians(ctx context.Context, b *reqBody) {
	ki, err := c.keyInfo(ctx, b.View.Key)
	if err != nil || b.View.Decision == nil {
		return
	}
	d := b.View.Decision
	c.sendPending(ctx, ki, b, &control.Decision{Tier: d.Tier, RuleID: d.RuleID, Reason: d.Reason})
}

// approved reports whether the request's approvals satisfy its tier, and
// otherwise how long to wait before looking again.
func (c *Coordinator) approved(b *reqBody) (bool, time.Duration) {
	p := c.pol.current()
	if p == nil || b.Tier == nil {
		return false, 5 * time.Second
	}
	now := c.now()
	var live []policy.SignedApproval
	for _, a := range b.View.Approvals {
		if a.Expiry.After(now) {
			live = append(live, a.Policy())
		}
	}
	if len(live) < b.Tier.Approvals {
		return false, time.Hour
	}
	if _, err := p.VerifyApprovals(b.target(), live, b.Tier.policy(), now); err != nil {
		// Enough approvals but the delay runs (or one no longer
		// verifies): look again soon, or at the next approval.
		return false, max(time.Second, min(5*time.Second, b.Tier.Delay))
	}
	return true, 0
}

// addApproval verifies a guardian's approval against the current policy
// and adds it to the request.
func (c *Coordinator) addApproval(ctx context.Context, id ids.RequestID, a api.Approval) (api.Request, error) {
	if a.RequestID != id {
		return api.Request{}, badRequest("approval is for request %s, not %s", a.RequestID, id)
	}
	b, err := c.load(ctx, id)
	if err != nil {
		return api.Request{}, err
	}
	if api.Final(b.View.State) {
		return api.Request{}, httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "request %s is %s", id, b.View.State)
	}
	p := c.pol.current()
	if p == nil {
		return api.Request{}, httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "no policy yet: approvals cannot be checked")
	}
	signers, err := p.VerifyApprovals(b.target(), []policy.SignedApproval{a.Policy()}, policy.TierSpec{Approvals: 1}, c.now())
	if err != nil {
		return api.Request{}, badRequest("approval refused: %v", err)
	}
	signer := signers[0].Hex()
	nb, err := c.update(ctx, id, func(b *reqBody) error {
		if api.Final(b.View.State) {
			return httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "request %s is %s", id, b.View.State)
		}
		if slices.Contains(b.View.Approvers, signer) {
			return nil
		}
		b.View.Approvals = append(b.View.Approvals, a)
		b.View.Approvers = append(b.View.Approvers, signer)
		return nil
	})
	if err != nil {
		return api.Request{}, err
	}
	c.audit(ctx, store.Entry{Kind: store.AuditApproval, RequestID: id, Decision: "approve", Fields: map[string]string{"guardian": signer}})
	return nb.View, nil
}

// addDenial verifies a guardian's denial and ends the request with it.
func (c *Coordinator) addDenial(ctx context.Context, id ids.RequestID, d api.Denial) (api.Request, error) {
	if d.RequestID != id {
		return api.Request{}, badRequest("denial is for request %s, not %s", d.RequestID, id)
	}
	b, err := c.load(ctx, id)
	if err != nil {
		return api.Request{}, err
	}
	p := c.pol.current()
	if p == nil {
		return api.Request{}, httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "no policy yet: denials cannot be checked")
	}
	signer, err := p.VerifyDenial(b.target(), d.Policy())
	if err != nil {
		return api.Request{}, badRequest("denial refused: %v", err)
	}
	nb, err := c.update(ctx, id, func(b *reqBody) error {
		switch b.View.State {
		case api.StateReceived, api.StatePendingApproval:
		default:
			return httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "request %s is %s: too late to deny", id, b.View.State)
		}
		dd := d
		b.View.Denial = &dd
		b.View.State, b.View.RuleID = api.StateDenied, ruleGuardian
		b.View.Reason = fmt.Sprintf("denied by guardian %s: %s", signer.Hex(), d.Reason)
		b.View.Member = ""
		return nil
	})
	if err != nil {
		return api.Request{}, err
	}
	c.metrics.requests.WithLabelValues(api.StateDenied).Inc()
	c.audit(ctx, store.Entry{Kind: store.AuditApproval, RequestID: id, Decision: "deny", RuleID: ruleGuardian,
		Fields: map[string]string{"guardian": signer.Hex(), "reason": d.Reason}})
	return nb.View, nil
}

// attemptDeadline is when an attempt's members give up.
func (c *Coordinator) attemptDeadline(b *reqBody, started time.Time) time.Time {
	d := started.Add(c.cfg.Timeouts.Propose + c.cfg.Timeouts.Session)
	if b.View.Expiry.Before(d) {
		return b.View.Expiry
	}
	return d
}

// settleOpen settles the request's last attempt if it is still open
// (after a restart, or at expiry). It reports whether the request changed
// so the caller should look again.
func (c *Coordinator) settleOpen(ctx context.Context, id ids.RequestID, b *reqBody) bool {
	n := len(b.View.Attempts)
	if n == 0 || (b.View.Attempts[n-1].State != attProposing && b.View.Attempts[n-1].State != attRunning) {
		return false
	}
	att := b.View.Attempts[n-1]
	for {
		sig, culprits, pending := c.settle(ctx, b, att)
		if sig != nil {
			c.signed(ctx, id, b, att.Session, sig)
			return true
		}
		if !pending || ctx.Err() != nil {
			c.closeAttempt(ctx, id, att.Session, attFailed, culprits, "no outcome: the session ended without a signature")
			return true
		}
		sleep(ctx, time.Second, nil)
	}
}

// settle asks every member of an attempt for its outcome: a signature
// (checked), culprits, or whether some member still runs it (or cannot
// be asked before the attempt's deadline).
func (c *Coordinator) settle(ctx context.Context, b *reqBody, att api.Attempt) (sig []byte, culprits []ids.MemberID, pending bool) {
	wait := 2 * time.Second
	cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose+wait)
	defer cancel()
	var proposed []ids.MemberID
	for _, a := range c.callAll(cctx, att.Quorum, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: att.Session, Wait: control.Duration(wait)}}
	}) {
		if a.err != nil || a.reply.Result == nil {
			pending = true
			continue
		}
		r := a.reply.Result
		switch r.State {
		case control.StateDone:
			if len(r.Signature) > 0 && c.verify(b, r.Signature) == nil {
				return r.Signature, nil, false
			}
		case control.StateRunning:
			pending = true
		case control.StateProposed:
			proposed = append(proposed, a.member)
		case control.StateFailed:
			culprits = appendNew(culprits, r.Culprits...)
		}
	}
	if len(proposed) > 0 {
		c.abort(ctx, att.Session, proposed)
	}
	if pending && c.now().After(c.attemptDeadline(b, att.Started).Add(c.cfg.Timeouts.Propose)) {
		pending = false
	}
	return nil, culprits, pending
}

func appendNew(list []ids.MemberID, more ...ids.MemberID) []ids.MemberID {
	for _, m := range more {
		if !slices.Contains(list, m) {
			list = append(list, m)
		}
	}
	return list
}

// verify checks that sig is the key's signature over the request.
func (c *Coordinator) verify(b *reqBody, sig []byte) error {
	pr, err := api.ParseSigned(b.Signed, b.View.Created)
	if err != nil {
		return err
	}
	return pr.Payload.Verify(sig, b.View.From)
}

func (c *Coordinator) abort(ctx context.Context, sess ids.SessionID, members []ids.MemberID) {
	cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose)
	defer cancel()
	c.callAll(cctx, members, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypeAbort, Abort: &control.SessionRef{Session: sess}}
	})
}

// closeAttempt records the end of an attempt that gave no signature.
func (c *Coordinator) closeAttempt(ctx context.Context, id ids.RequestID, sess ids.SessionID, state string, culprits []ids.MemberID, reason string) {
	var quorum []ids.MemberID
	if b, err := c.load(ctx, id); err == nil {
		for _, a := range b.View.Attempts {
			if a.Session == sess {
				quorum = a.Quorum
			}
		}
	}
	fields := map[string]string{"session": sess.String(), "state": state, "reason": reason, "quorum": joinIDs(quorum)}
	if len(culprits) > 0 {
		fields["culprits"] = joinIDs(culprits)
	}
	_, err := c.updateAudited(ctx, id, func(b *reqBody) error {
		for i := range b.View.Attempts {
			a := &b.View.Attempts[i]
			if a.Session == sess {
				a.State, a.Culprits, a.Error, a.Ended = state, culprits, reason, c.now()
			}
		}
		b.Excluded = appendNew(b.Excluded, culprits...)
		if !api.Final(b.View.State) {
			b.View.Reason = reason
		}
		return nil
	}, func(*reqBody) store.Entry {
		return store.Entry{Kind: store.AuditSession, RequestID: id, Decision: state, Fields: fields}
	})
	if err != nil {
		c.log.Error("update request", "request", id, "err", err)
		return
	}
	c.metrics.sessions.WithLabelValues(state).Inc()
}

func joinIDs(list []ids.MemberID) string {
	s := make([]string, len(list))
	for i, m := range list {
		s[i] = string(m)
	}
	return strings.Join(s, ",")
}

// attemptWith runs one signing session for the request: settle an open
// one first, pick a quorum, propose, start, collect. It reports whether
// to try again (a new session) later. With usePresign a hot-tier request
// names a ready presignature of its quorum when there is one; a member
// refusing it makes the attempt run the full protocol at once. probed,
// when not nil, is the committee's status just taken (otherwise the
// members are probed here). pd, when not nil, is the tier's decision,
// applied to b but not yet recorded: the attempt's record carries it, at
// one sync, and any way out before that record writes it first.
func (c *Coordinator) attemptWith(ctx context.Context, id ids.RequestID, b *reqBody, usePresign bool, probed map[ids.MemberID]*control.Status, pd *decided) bool {
	defer c.presign.busy()()
	flushed := pd == nil
	// flush records the decision on its own, before a way out that does
	// not record the attempt (and, deferred, on any other).
	var flush func() error
	defer func() { _ = flush() }()
	flush = func() error {
		if flushed {
			return nil
		}
		flushed = true
		_, err := c.recordDecision(ctx, id, pd)
		if err != nil && !errors.Is(err, errFinal) {
			c.log.Error("record decision", "request", id, "err", err)
		}
		return err
	}
	if pd == nil && c.settleOpen(ctx, id, b) {
		return false
	}
	if len(b.View.Attempts) >= maxAttempts {
		c.finish(ctx, id, api.StateFailed, "", ruleAttempts, fmt.Sprintf("%d signing sessions failed; last: %s", len(b.View.Attempts), b.View.Reason))
		return false
	}
	ki, err := c.keyInfo(ctx, b.View.Key)
	if err != nil {
		if ferr := flush(); ferr != nil {
			return !errors.Is(ferr, errFinal) // the driver tries again after a pause
		}
		c.finish(ctx, id, api.StateFailed, "", "key", errText(err))
		return false
	}
	if b.Tier == nil {
		c.finish(ctx, id, api.StateFailed, "", ruleTier, "no tier recorded for a request being signed")
		return false
	}
	spec := b.Tier.policy()
	statuses := probed
	if statuses == nil {
		statuses = c.probe(ctx, ki.Committee.IDs())
	}
	reach := func(m ids.MemberID) bool { return statuses[m] != nil }
	approvers := map[string]bool{}
	for _, a := range b.View.Approvers {
		approvers[strings.ToLower(a)] = true
	}
	// A guardian node joins a tier that names guardians or needs approvals
	// only with its own human's approval (node, check 8): one whose human
	// has not approved would refuse, and its refusal would end the
	// request. So for such a tier only approvers' nodes are usable; while
	// the one that approved is out of reach, the request waits.
	ownApproval := spec.Approvals > 0 || spec.Delay > 0 || slices.Contains(spec.Roles, ids.RoleGuardian)
	usable := func(m ids.MemberID) bool {
		if !reach(m) {
			return false
		}
		if ownApproval && ki.Committee.Role(m) == ids.RoleGuardian {
			return approvers[strings.ToLower(statuses[m].Guardian)]
		}
		return true
	}
	q, err := quorum.Select(ki.Committee, spec, usable, b.Excluded)
	if err != nil {
		if ferr := flush(); ferr != nil {
			return !errors.Is(ferr, errFinal)
		}
		if _, err2 := quorum.Select(ki.Committee, spec, nil, b.Excluded); err2 != nil {
			c.finish(ctx, id, api.StateFailed, "", ruleQuorum, fmt.Sprintf("no quorum left for tier %s without the members failed sessions blamed (%s): %v", spec.Name, joinIDs(b.Excluded), err2))
			return false
		}
		var missing []string
		for _, m := range ki.Committee.IDs() {
			if !reach(m) {
				missing = append(missing, fmt.Sprintf("%s member %s", ki.Committee.Role(m), m))
			}
		}
		reason := fmt.Sprintf("no usable quorum: %v", err)
		if len(missing) > 0 {
			reason = fmt.Sprintf("cannot reach %s: %v", strings.Join(missing, ", "), err)
		}
		since := b.Unreachable
		if since.IsZero() {
			since = c.now()
			_, _ = c.update(ctx, id, func(b *reqBody) error {
				if b.Unreachable.IsZero() {
					b.Unreachable = since
				}
				return nil
			})
		}
		if c.now().Sub(since) >= c.cfg.Timeouts.Unreachable {
			c.finish(ctx, id, api.StateFailed, "", ruleUnreachable, fmt.Sprintf("no quorum for tier %s after %s: %s", spec.Name, c.cfg.Timeouts.Unreachable, reason))
			return false
		}
		c.note(ctx, id, "waiting: "+reason)
		return true
	}
	if !b.Unreachable.IsZero() {
		_, _ = c.update(ctx, id, func(b *reqBody) error { b.Unreachable = time.Time{}; return nil })
	}
	var presig ids.SessionID
	if usePresign && presignable(c.pol.current(), spec, b.Path) {
		var left int
		presig, left = c.presign.take(statuses, b.View.Key, q, c.now())
		if !presig.IsZero() {
			c.metrics.presignReady.WithLabelValues(b.View.Key.String()).Set(float64(left))
		}
	}
	sess := ids.NewSessionID()
	started := c.now()
	deadline := c.attemptDeadline(b, started)
	record := func(b *reqBody) error {
		if pd != nil {
			if err := pd.apply(b); err != nil {
				return err
			}
		}
		if b.View.State != api.StateSigning {
			return errFinal
		}
		b.View.Attempts = append(b.View.Attempts, api.Attempt{Session: sess, Quorum: q, State: attProposing, Started: started, Presignature: presig})
		return nil
	}
	if flushed {
		_, err = c.update(ctx, id, record)
	} else {
		// The decision and its audit entry with the attempt, at one sync.
		flushed = true
		_, err = c.updateAudited(ctx, id, record, func(*reqBody) store.Entry { return pd.entry })
	}
	if err != nil {
		c.presign.release(presig)
		return !errors.Is(err, errFinal)
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose)
	answers := c.callAll(pctx, q, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypePropose, Propose: &control.Propose{Session: sess, RequestID: id,
			Request: b.Signed, Quorum: q, Tier: spec.Name, Approvals: b.View.Approvals, Deadline: deadline, Presignature: presig}}
	})
	cancel()
	var refusal *control.Refusal
	var silent []string
	var joined []ids.MemberID
	for _, a := range answers {
		switch {
		case a.err != nil:
			silent = append(silent, a.err.Error())
		case a.reply.Refusal != nil:
			if refusal == nil {
				refusal = a.reply.Refusal
			}
		case a.reply.Join != nil:
			joined = append(joined, a.member)
		default:
			silent = append(silent, fmt.Sprintf("%s answered the proposal with neither join nor refusal", a.member))
		}
	}
	if refusal != nil || len(silent) > 0 {
		c.abort(ctx, sess, joined)
		if refusal != nil {
			reason := fmt.Sprintf("%s refused (%s): %s", refusal.Member, refusal.RuleID, refusal.Reason)
			c.closeAttempt(ctx, id, sess, attRefused, nil, reason)
			if refusal.RuleID == control.RulePresignature && !presig.IsZero() {
				// A member lost it (a restart) or another holds it: the
				// full protocol runs at once, with no presignature.
				c.metrics.presignBurned.WithLabelValues("refused").Inc()
				nb, err := c.load(ctx, id)
				if err != nil {
					return true
				}
				return c.attemptWith(ctx, id, nb, false, nil, nil)
			}
			// Refused for another reason before any start: the members
			// keep the presignature parked, and it may serve another.
			c.presign.release(presig)
			switch refusal.RuleID {
			case ruleSession, ruleInternal:
				// A session id the member saw before, or a fault of its
				// own: another session may go through.
				return true
			case ruleSigned:
				// The member signed this request in an earlier session:
				// its signature comes through that session's Result.
				if c.recoverEarlier(ctx, id, b) {
					return false
				}
			}
			c.finish(ctx, id, api.StateDenied, refusal.Member, refusal.RuleID, refusal.Reason)
			return false
		}
		c.presign.release(presig)
		c.closeAttempt(ctx, id, sess, attFailed, nil, "no answer to the proposal: "+strings.Join(silent, "; "))
		return true
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose)
	for _, a := range c.callAll(sctx, q, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sess}}
	}) {
		if a.err != nil || a.reply.Refusal != nil {
			c.log.Warn("start not accepted", "request", id, "member", a.member, "err", a.err)
		}
	}
	cancel()
	// The attempt's running state is recorded while the session runs: it
	// tells a reader the session started, and nothing depends on its
	// sync (a restart settles an open attempt, proposing or running, the
	// same way). It commits before anything else of the request does.
	running := c.now()
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		_, _ = c.update(ctx, id, func(b *reqBody) error {
			for i := range b.View.Attempts {
				if b.View.Attempts[i].Session == sess {
					b.View.Attempts[i].State, b.View.Attempts[i].Running = attRunning, running
				}
			}
			return nil
		})
	}()
	defer func() { <-recorded }()
	att := api.Attempt{Session: sess, Quorum: q, Started: started}
	for ctx.Err() == nil {
		began := time.Now()
		sig, culprits, pending := c.collect(ctx, b, att, deadline)
		<-recorded
		if sig != nil {
			c.signed(ctx, id, b, sess, sig)
			if !presig.IsZero() {
				c.metrics.presignUsed.Inc()
			}
			return false
		}
		if !pending {
			if !presig.IsZero() {
				c.metrics.presignBurned.WithLabelValues("failed").Inc()
			}
			reason := "session failed"
			if len(culprits) > 0 {
				reason += "; blamed " + joinIDs(culprits)
			}
			if c.now().After(deadline) {
				reason = "session timed out"
				c.abort(ctx, sess, q)
			}
			c.closeAttempt(ctx, id, sess, attFailed, culprits, reason)
			return true
		}
		if time.Since(began) < time.Second {
			// Members that cannot be reached answer at once: do not
			// ask them again in a tight loop.
			sleep(ctx, 500*time.Millisecond, nil)
		}
	}
	return false
}

// collect waits for the members' results of a running session.
func (c *Coordinator) collect(ctx context.Context, b *reqBody, att api.Attempt, deadline time.Time) (sig []byte, culprits []ids.MemberID, pending bool) {
	remaining := deadline.Sub(c.now())
	if remaining <= 0 {
		return nil, nil, false
	}
	wait := min(remaining, control.MaxResultWait)
	cctx, cancel := context.WithTimeout(ctx, wait+5*time.Second)
	defer cancel()
	var errs []string
	// The first signature that verifies ends the collection: a member
	// answers once its own journal holds the signature, and the others'
	// journals do not change what the coordinator returns.
	c.callEach(cctx, att.Quorum, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: att.Session, Wait: control.Duration(wait)}}
	}, func(a answer) bool {
		if a.err != nil || a.reply.Result == nil {
			pending = true
			return true
		}
		r := a.reply.Result
		switch r.State {
		case control.StateDone:
			if err := c.verify(b, r.Signature); err == nil {
				sig = r.Signature
				return false
			} else {
				errs = append(errs, fmt.Sprintf("%s: signature does not verify: %v", a.member, err))
			}
		case control.StateRunning, control.StateProposed:
			pending = true
		case control.StateFailed:
			culprits = appendNew(culprits, r.Culprits...)
			if r.Error != "" {
				errs = append(errs, fmt.Sprintf("%s: %s", a.member, r.Error))
			}
		}
		return true
	})
	if sig != nil {
		return sig, nil, false
	}
	if len(errs) > 0 {
		c.log.Warn("session results", "request", b.View.ID, "session", att.Session, "errors", strings.Join(errs, "; "))
	}
	if c.now().After(deadline) {
		pending = false
	}
	return nil, culprits, pending
}

// recoverEarlier looks for the signature of an earlier attempt.
func (c *Coordinator) recoverEarlier(ctx context.Context, id ids.RequestID, b *reqBody) bool {
	for i := len(b.View.Attempts) - 1; i >= 0; i-- {
		att := b.View.Attempts[i]
		if sig, _, _ := c.settle(ctx, b, att); sig != nil {
			c.signed(ctx, id, b, att.Session, sig)
			return true
		}
	}
	return false
}

// signed records a checked signature: the Ethereum form, and for a
// transaction the signed raw transaction and its hash.
func (c *Coordinator) signed(ctx context.Context, id ids.RequestID, b *reqBody, sess ids.SessionID, sig []byte) {
	collected := c.now()
	pr, err := api.ParseSigned(b.Signed, b.View.Created)
	if err != nil {
		c.finish(ctx, id, api.StateFailed, "", "request", err.Error())
		return
	}
	eth, err := pr.Payload.EthSignature(sig, b.View.From)
	if err != nil {
		c.finish(ctx, id, api.StateFailed, "", "signature", err.Error())
		return
	}
	var raw []byte
	var txHash *common.Hash
	if tx, err := pr.Payload.SignedTransaction(sig, b.View.From); err == nil && tx != nil {
		raw, err = tx.MarshalBinary()
		if err != nil {
			c.finish(ctx, id, api.StateFailed, "", "signature", err.Error())
			return
		}
		h := tx.Hash()
		txHash = &h
	}
	fields := map[string]string{"session": sess.String(), "digest": b.View.Digest.Hex(), "signature": hexutil.Encode(eth)}
	if cur, err := c.load(ctx, id); err == nil {
		if cur.View.State == api.StateSigned {
			return
		}
		for _, a := range cur.View.Attempts {
			if a.Session == sess {
				fields["quorum"] = joinIDs(a.Quorum)
			}
		}
	}
	if txHash != nil {
		fields["tx_hash"] = txHash.Hex()
	}
	_, err = c.updateAudited(ctx, id, func(b *reqBody) error {
		if b.View.State == api.StateSigned {
			return errFinal
		}
		for i := range b.View.Attempts {
			if b.View.Attempts[i].Session == sess {
				b.View.Attempts[i].State, b.View.Attempts[i].Collected, b.View.Attempts[i].Ended = attDone, collected, c.now()
			}
		}
		b.View.State, b.View.Signature, b.View.RawTransaction, b.View.TxHash = api.StateSigned, eth, raw, txHash
		b.View.RuleID, b.View.Reason, b.View.Member = "", "", ""
		if b.Tier != nil {
			b.View.RuleID = b.View.Decision.RuleID
		}
		return nil
	}, func(*reqBody) store.Entry {
		return store.Entry{Kind: store.AuditSignature, RequestID: id, Fields: fields}
	})
	if err != nil {
		if !errors.Is(err, errFinal) {
			c.log.Error("record signature", "request", id, "err", err)
		}
		return
	}
	c.metrics.requests.WithLabelValues(api.StateSigned).Inc()
	c.metrics.sessions.WithLabelValues(attDone).Inc()
	c.log.Info("request signed", "request", id, "session", sess)
}

// broadcast sends a signed transaction to the chain.
func (c *Coordinator) broadcast(ctx context.Context, id ids.RequestID) (api.Request, error) {
	b, err := c.load(ctx, id)
	if err != nil {
		return api.Request{}, err
	}
	if b.View.State != api.StateSigned || len(b.View.RawTransaction) == 0 {
		return api.Request{}, httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "request %s is %s, not a signed transaction", id, b.View.State)
	}
	if c.chain == nil {
		return api.Request{}, httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "this coordinator has no chain to broadcast to")
	}
	tx := new(types.Transaction)
	if err := tx.UnmarshalBinary(b.View.RawTransaction); err != nil {
		return api.Request{}, fmt.Errorf("stored transaction of %s: %w", id, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	sendErr := c.chain.SendTransaction(sctx, tx)
	cancel()
	if sendErr != nil && strings.Contains(strings.ToLower(sendErr.Error()), "already known") {
		sendErr = nil
	}
	nb, err := c.update(ctx, id, func(b *reqBody) error {
		b.View.Broadcast = sendErr == nil || b.View.Broadcast
		b.View.BroadcastError = ""
		if sendErr != nil {
			b.View.BroadcastError = sendErr.Error()
		}
		return nil
	})
	if err != nil {
		return api.Request{}, err
	}
	if sendErr != nil {
		e := httpapi.Errorf(http.StatusBadGateway, httpapi.CodeUnavailable, "broadcast: %v", sendErr)
		e.RequestID = string(id)
		return nb.View, e
	}
	return nb.View, nil
}

// audit appends to the coordinator's own log.
func (c *Coordinator) audit(ctx context.Context, e store.Entry) {
	e.Time = c.now()
	if _, err := c.store.AppendAudit(context.WithoutCancel(ctx), e); err != nil {
		c.log.Error("audit append", "kind", e.Kind, "request", e.RequestID, "err", err)
	}
}

// resume starts a driver for every request and operation not finished.
func (c *Coordinator) resume() error {
	recs, err := c.store.Requests(c.ctx, func(r store.RequestRecord) bool { return !api.Final(r.State) })
	if err != nil {
		return fmt.Errorf("coordinator: list requests: %w", err)
	}
	for _, r := range recs {
		id := r.ID
		switch {
		case strings.HasPrefix(string(id), "req:"):
			c.log.Info("resuming request", "request", id, "state", r.State)
			c.spawn(string(id), func(ctx context.Context) { c.drive(ctx, id) })
		case strings.HasPrefix(string(id), opPrefix) && r.State == api.OpRunning:
			c.log.Info("resuming key operation", "operation", id)
			c.spawn(string(id), func(ctx context.Context) { c.runOp(ctx, id) })
		}
	}
	return nil
}
