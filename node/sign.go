package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/quorum"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Check names of refusals that no policy rule made.
const (
	CheckSession  = "session"
	CheckRequest  = "request"
	CheckAgent    = "agent"
	CheckKey      = "key"
	CheckQuorum   = "quorum"
	CheckTier     = "tier"
	CheckApproval = "approval"
	CheckPolicy   = "policy"
	CheckPeer     = "peer"
	CheckMessage  = "message"
	CheckInternal = "internal"
	CheckFreeze   = "freeze"
	CheckUnfreeze = "unfreeze"
	CheckReshare  = "reshare"
	CheckKeygen   = "keygen"
)

// refusal is a control refusal as an error, so checks can return it.
type refusal struct{ rule, reason string }

func (r *refusal) Error() string { return r.rule + ": " + r.reason }

func refusef(rule, format string, args ...any) *refusal {
	return &refusal{rule: rule, reason: fmt.Sprintf(format, args...)}
}

// maxOpenProposals bounds the sessions one coordinator may keep open
// (proposed or running) at a node, so proposals never started, and
// keygens waiting for pre-parameters, cannot grow the node's memory
// without bound. A variable for tests.
var maxOpenProposals = 256

// checkRoom refuses a proposal from a coordinator that has
// maxOpenProposals sessions open here already.
func (n *Node) checkRoom(from string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	open := 0
	for _, s := range n.sessions {
		if s.from == from && (s.state == control.StateProposed || s.state == control.StateRunning) {
			open++
		}
	}
	if open >= maxOpenProposals {
		return refusef(CheckSession, "coordinator %s has %d sessions open here (proposed or running), the bound; let them end or abort some first", from, open)
	}
	return nil
}

// checkSessionID refuses a session id this node has seen before, in this
// process or, through the store's registry and journal, an earlier one.
func (n *Node) checkSessionID(ctx context.Context, id ids.SessionID) error {
	if id.IsZero() {
		return refusef(CheckSession, "the session id is missing")
	}
	n.mu.Lock()
	_, mem := n.sessions[id]
	n.mu.Unlock()
	if mem {
		return refusef(CheckSession, "session %s was proposed here before; a session id is used once", id)
	}
	used, err := n.st.SessionIDs().Used(ctx, id)
	if err != nil {
		return err
	}
	if !used {
		if _, err := n.st.Session(ctx, id); err == nil {
			used = true
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	if used {
		return refusef(CheckSession, "session %s was used here before; a session id is used once", id)
	}
	return nil
}

// propose runs every check of a signing proposal, in order, and joins
// with the budget reserved, or refuses at the first failure.
func (n *Node) propose(ctx context.Context, from string, p *control.Propose) (join *control.Join, err error) {
	now := n.now()
	defer func() {
		// Every refusal is a decision of this node: audited with its check
		// or rule, whoever asked.
		var rf *refusal
		if errors.As(err, &rf) {
			n.audit(ctx, store.Entry{Kind: store.AuditDecision, RequestID: p.RequestID, Decision: "refused", RuleID: rf.rule,
				Fields: map[string]string{"reason": rf.reason, "session": p.Session.String(), "coordinator": from, "agent": string(p.Request.Agent)}})
		}
	}()
	// 1. The session id is new, and the coordinator has room for it.
	if err := n.checkSessionID(ctx, p.Session); err != nil {
		return nil, err
	}
	if err := n.checkRoom(from); err != nil {
		return nil, err
	}
	// 2 and 3. The request as the agent signed it, decoded here, and its id.
	parsed, err := api.ParseSigned(p.Request, now)
	if err != nil {
		return nil, refusef(CheckRequest, "%v", err)
	}
	if want := control.RequestID(p.Request.Agent, parsed.IdempotencyKey); p.RequestID != want {
		return nil, refusef(CheckRequest, "request id %s is not the id of agent %s's idempotency key %q (%s)", p.RequestID, p.Request.Agent, parsed.IdempotencyKey, want)
	}
	var grant *policy.SignedGrant
	if len(parsed.Grant) > 0 {
		if grant, err = api.ParseGrant(parsed.Grant); err != nil {
			return nil, refusef(CheckRequest, "%v", err)
		}
	}
	if !n.claim(p.RequestID) {
		return nil, refusef(CheckRequest, "request %s is being proposed here already", p.RequestID)
	}
	defer n.unclaim(p.RequestID)
	prev, prevState, seen, err := n.loadRequest(ctx, p.RequestID)
	if err != nil {
		return nil, err
	}
	if seen && prevState == reqSigned {
		return nil, refusef(CheckRequest, "request %s was signed here already (session %s); its signature is available through result", p.RequestID, prev.Session)
	}
	// A request id (the agent and its idempotency key) names one payload:
	// a retry under it that signs anything else would reuse the budget
	// reserved, and the approvals consumed, for what was first proposed.
	digest := common.Hash(parsed.Payload.Digest())
	if seen && prev.Digest != (common.Hash{}) && (prev.Digest != digest || prev.Key != parsed.Key || !slices.Equal(prev.Path, parsed.Path)) {
		return nil, refusef(CheckRequest, "request %s was proposed here for digest %s of key %s at path %v; this proposal is for digest %s of key %s at path %v, and an idempotency key names one request",
			p.RequestID, prev.Digest.Hex(), prev.Key, prev.Path, digest.Hex(), parsed.Key, parsed.Path)
	}
	// A request this node's guardian denied ends here, whatever
	// approvals were given before the denial.
	if denied, err := n.deniedHere(ctx, p.RequestID); err != nil {
		return nil, err
	} else if denied {
		return nil, refusef(CheckApproval, "request %s was denied by a guardian through this node", p.RequestID)
	}
	// The same for what this guardian node's human was shown.
	n.mu.Lock()
	q := n.queue[p.RequestID]
	n.mu.Unlock()
	if q != nil && (q.target.Digest != digest || q.target.Key != parsed.Key.Address() || !slices.Equal(q.path, parsed.Path)) {
		return nil, refusef(CheckRequest, "request %s waits in this guardian's queue for digest %s of key %s at path %v; this proposal is for digest %s at path %v",
			p.RequestID, q.target.Digest.Hex(), q.target.Key.Hex(), q.path, digest.Hex(), parsed.Path)
	}
	var replaced *session
	n.mu.Lock()
	if sid, ok := n.requests[p.RequestID]; ok {
		if s := n.sessions[sid]; s != nil {
			switch s.state {
			case control.StateRunning:
				n.mu.Unlock()
				return nil, refusef(CheckRequest, "session %s of request %s is running here; one session per request at a time", sid, p.RequestID)
			case control.StateProposed:
				replaced = s
			}
		}
	}
	n.mu.Unlock()
	if !p.Deadline.After(now) {
		return nil, refusef(CheckRequest, "the proposal's deadline %s has passed", p.Deadline.UTC().Format(time.RFC3339))
	}
	deadline := p.Deadline
	if parsed.Expiry.Before(deadline) {
		deadline = parsed.Expiry
	}

	// 4. The agent signed it, by the registry of this node's policy.
	eng := n.policyEngine()
	if eng == nil {
		return nil, refusef(CheckPolicy, "this node has no policy yet; send it the guardian-signed document first")
	}
	pol := eng.Policy()
	agent := p.Request.Agent
	if err := pol.VerifyAgent(agent, p.Request.Message(), p.Request.Signature); err != nil {
		return nil, refusef(CheckAgent, "agent %s: %v", agent, err)
	}
	if n.set.role == ids.RoleAgent && agent != n.set.agent {
		return nil, refusef(CheckAgent, "this agent node serves agent %s only; the request is agent %s's", n.set.agent, agent)
	}

	// 5. The key: a share here, the address the agent expects, a quorum
	// of its committee with this node in it.
	share, err := n.st.LatestShare(ctx, parsed.Key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, refusef(CheckKey, "this node holds no share of key %s", parsed.Key)
	}
	if err != nil {
		return nil, err
	}
	info := share.Key()
	signer := info.Address
	if len(parsed.Path) > 0 {
		child, err := info.Child(parsed.Path)
		if err != nil {
			return nil, refusef(CheckKey, "key %s path %v: %v", parsed.Key, parsed.Path, err)
		}
		signer = child.Address
	}
	if parsed.From != nil && *parsed.From != signer {
		return nil, refusef(CheckKey, "from %s is not the address key %s derives at path %v (%s)", parsed.From.Hex(), parsed.Key, parsed.Path, signer.Hex())
	}
	if err := checkQuorumShape(info.Committee, n.self, p.Quorum); err != nil {
		return nil, err
	}

	// 6. The policy, evaluated here over this node's own ledger. A held
	// reservation (a proposal not started, or an attempt that ran and
	// failed) is reused, never doubled.
	req := policy.NewRequest(p.RequestID, agent, info.Address, parsed.Payload, grant, now)
	if replaced != nil {
		n.dropProposal(replaced, "replaced by session "+p.Session.String())
		if prev, _, seen, err = n.loadRequest(ctx, p.RequestID); err != nil {
			return nil, err
		}
	}
	reuse := seen && prev.Reserved
	var d policy.Decision
	var serr error
	// A new reservation is staged: checked now, written with the first
	// batch that journals it (the join's, on the hot path), at that
	// batch's sync. Until then the ledger's lock is held, so nothing here
	// may wait for it: a refusal drops a reservation still staged before
	// it journals and releases (fail).
	sctx, stage := n.st.Stage(ctx)
	defer stage.Cancel()
	n.policyMu.Lock()
	if reuse {
		d, serr = n.reevaluate(ctx, eng, req)
		d.Reserved = true
	} else {
		d = eng.Authorize(sctx, req)
	}
	// The state is exported here and saved in the batch below, at the
	// same sync as the audit entries: a batch committing after a later
	// proposal's keeps the later state (Batch.SavePolicyState).
	var state policy.State
	if serr == nil {
		state = eng.Export()
	}
	n.policyMu.Unlock()
	if !d.Reserved {
		// Denied, or a panic caught after the reservation was staged:
		// nothing of it may be written.
		stage.Cancel()
	} else if afterAuthorize != nil {
		afterAuthorize(p.RequestID)
	}
	decision := d.Verdict.String()
	if d.Tier != nil {
		decision += " " + d.Tier.Name
	}
	rs := prev
	rs.Session, rs.Key, rs.Digest, rs.Reserved = p.Session, parsed.Key, digest, d.Reserved
	rs.Path = slices.Clone(parsed.Path)
	if d.Reserved && !reuse {
		// A new reservation: no session has used it.
		rs.Started = false
	} else if n.wasStarted(p.RequestID) {
		// A session of this process started with the reservation held
		// since; the record read above may predate what it journaled.
		rs.Started = true
	}
	// The reservation is written, the policy state saved, the request and
	// the decision audited, and the reservation journaled as failed until
	// the proposal is joined (a crash before releases it), at one sync.
	// When nothing is written between here and the join (no approval to
	// consume: the tiers the agent and a policy node sign alone), all of
	// it but the failed record joins the join's batch instead, one sync
	// on the way of every hot request where there were three; a refusal
	// before the join still writes it first.
	saveFailed := serr == nil && d.Reserved
	at := n.now().UTC()
	decided := func(b *store.Batch, failed bool) error {
		if err := b.CommitStage(stage); err != nil {
			return err
		}
		if serr == nil {
			if err := b.SavePolicyState(state); err != nil {
				return err
			}
		}
		if err := b.AppendAudit(store.Entry{Kind: store.AuditRequest, RequestID: p.RequestID, Time: at, Fields: map[string]string{
			"agent": string(agent), "key": parsed.Key.String(), "chain": fmt.Sprint(parsed.ChainID), "kind": parsed.Kind,
			"digest": digest.Hex(), "session": p.Session.String(), "coordinator": from, "summary": parsed.Payload.Describe(),
		}}); err != nil {
			return err
		}
		if err := b.AppendAudit(store.Entry{Kind: store.AuditDecision, RequestID: p.RequestID, Decision: decision, RuleID: d.RuleID, Time: at,
			Fields: map[string]string{"reason": d.Reason, "policy": d.PolicyHash.Hex(), "reserved": fmt.Sprint(d.Reserved)}}); err != nil {
			return err
		}
		if !failed || !saveFailed {
			return nil
		}
		body, err := json.Marshal(rs)
		if err != nil {
			return err
		}
		return b.SaveRequest(p.RequestID, reqFailed, body)
	}
	journaled := false
	journal := func() error {
		journaled = true
		return n.st.Batch(context.WithoutCancel(ctx), func(b *store.Batch) error { return decided(b, true) })
	}
	// withJoin: the hot path, allowed with no approval step, whose
	// decision the join's batch writes.
	withJoin := serr == nil && d.Allowed() && d.Tier != nil && !approvalStep(pol, n.set.role, *d.Tier, p)
	var berr error
	if !withJoin {
		berr = journal()
	}
	// From here every refusal releases what is safe to release.
	fail := func(r *refusal) (*control.Join, error) {
		if _, ok := stage.Staged(); ok {
			// A reservation still staged is dropped, never written: the
			// refusal's journal says nothing is reserved.
			stage.Cancel()
			rs.Reserved, d.Reserved = false, false
		}
		if !journaled {
			if err := journal(); err != nil {
				n.log.Error("proposal batch failed", "request", p.RequestID, "err", err)
			}
		}
		n.releaseAfterRefusal(ctx, p.RequestID, &rs)
		return nil, r
	}
	if serr != nil {
		if berr != nil {
			n.log.Error("audit append failed", "request", p.RequestID, "err", berr)
		}
		return fail(refusef(CheckInternal, "%v", serr))
	}
	if berr != nil && (d.Allowed() && d.Tier != nil) {
		// The reservation's state did not persist with it: the node
		// cannot join on it.
		return fail(refusef(CheckInternal, "%v", berr))
	}
	if berr != nil {
		// A denial stands (an internal refusal would have the
		// coordinator propose again, evaluating the request anew); only
		// its audit entries and state change are lost to a restart.
		n.log.Error("proposal batch failed", "request", p.RequestID, "err", berr)
	}
	if !d.Allowed() || d.Tier == nil {
		n.metrics.decisions.WithLabelValues("deny").Inc()
		return fail(&refusal{rule: d.RuleID, reason: d.Reason})
	}
	own := *d.Tier

	// 7. The tier the coordinator claims is no lower than this node's own,
	// and the quorum satisfies both (invariant 3).
	claimed, ok := findTier(pol, p.Tier)
	if !ok {
		return fail(refusef(CheckTier, "the coordinator's tier %q is not a tier of policy version %d", p.Tier, pol.Version()))
	}
	if claimed.Rank < own.Rank {
		return fail(refusef(CheckTier, "the coordinator claims tier %s, lower than tier %s that rule %q gives here", claimed.Name, own.Name, d.RuleID))
	}
	for _, t := range uniqueTiers(own, claimed) {
		if err := quorum.Check(info.Committee, t, p.Quorum); err != nil {
			return fail(refusef(CheckQuorum, "%v", err))
		}
		if err := quorum.CanGrant(info.Committee, t); err != nil {
			return fail(refusef(CheckTier, "%v", err))
		}
	}

	// 8. Approvals: every one verified against the request as computed
	// here (invariant 4), then consumed, once.
	needs, guardianNeeded := approvalNeeds(n.set.role, own, claimed)
	if needs || guardianNeeded || len(p.Approvals) > 0 {
		if !journaled {
			// approvalStep said otherwise: the decision is journaled
			// before any approval is consumed, whatever happens.
			if err := journal(); err != nil {
				return fail(refusef(CheckInternal, "%v", err))
			}
		}
		target := policy.ApprovalTarget{RequestID: p.RequestID, Digest: digest, ChainID: parsed.Payload.ChainID(), Key: info.Address}
		signed := api.Approvals(p.Approvals)
		var by []common.Address
		for _, t := range uniqueTiers(own, claimed) {
			if by, err = pol.VerifyApprovals(target, signed, t, now); err != nil {
				n.audit(ctx, store.Entry{Kind: store.AuditApproval, RequestID: p.RequestID, Decision: "refused", RuleID: CheckApproval,
					Fields: map[string]string{"reason": err.Error(), "approvals": fmt.Sprint(len(signed))}})
				return fail(refusef(CheckApproval, "%v", err))
			}
		}
		if guardianNeeded && !slices.Contains(by, n.set.guardian) {
			return fail(refusef(CheckApproval, "this guardian node joins tier %s only with its own guardian %s's approval, which is not among the %d given", claimed.Name, n.set.guardian.Hex(), len(by)))
		}
		for i, a := range signed {
			id, err := approvalID(pol.WalletID(), a.Approval)
			if err != nil {
				return fail(refusef(CheckApproval, "approval %d: %v", i, err))
			}
			if slices.Contains(rs.Approvals, id) {
				continue // consumed for this very request by an earlier attempt
			}
			if err := n.st.ConsumeApproval(ctx, id, p.RequestID); err != nil {
				if errors.Is(err, store.ErrApprovalUsed) {
					return fail(refusef(CheckApproval, "approval %d (%s) was used before: %v", i, id.Hex(), err))
				}
				return fail(refusef(CheckInternal, "%v", err))
			}
			rs.Approvals = append(rs.Approvals, id)
			if err := n.saveRequest(ctx, p.RequestID, reqFailed, rs); err != nil {
				return fail(refusef(CheckInternal, "%v", err))
			}
		}
		n.audit(ctx, store.Entry{Kind: store.AuditApproval, RequestID: p.RequestID, Decision: "accepted",
			Fields: map[string]string{"guardians": joinAddrs(by)}})
	}

	// Join: journal the proposal, arm its deadline.
	s := &session{
		id: p.Session, kind: kindSign, request: p.RequestID, key: parsed.Key, members: slices.Clone(p.Quorum),
		created: now.UTC(), deadline: deadline, expiry: parsed.Expiry, from: from,
		share: share, req: req, digest: parsed.Payload.Digest(), path: slices.Clone(parsed.Path),
		state: control.StateProposed, done: make(chan struct{}),
	}
	// 9. The presignature named, if any: checked last, so it changes
	// none of the checks above; held for this key, quorum and path, and
	// claimed by no other open session.
	if !p.Presignature.IsZero() {
		if err := n.claimPresignature(p.Presignature, s, info); err != nil {
			var rf *refusal
			errors.As(err, &rf)
			return fail(rf)
		}
	}
	// The proposal joined and its session, at one sync.
	body, err := json.Marshal(rs)
	if err != nil {
		return fail(refusef(CheckInternal, "%v", err))
	}
	if err := n.st.Batch(context.WithoutCancel(ctx), func(b *store.Batch) error {
		if !journaled {
			if err := decided(b, false); err != nil {
				return err
			}
		}
		if err := b.SaveRequest(p.RequestID, reqProposed, body); err != nil {
			return err
		}
		return b.PutSession(n.sessionRecord(s, control.StateProposed, ""))
	}); err != nil {
		return fail(refusef(CheckInternal, "node: journal %s: %v", p.RequestID, err))
	}
	journaled = true
	if !n.addSession(s) {
		return fail(refusef(CheckInternal, "node closing"))
	}
	n.metrics.decisions.WithLabelValues("join").Inc()
	return &control.Join{Member: n.self, Digest: digest, Tier: own.Name, RuleID: d.RuleID, PolicyHash: d.PolicyHash, Reserved: d.Reserved}, nil
}

// afterAuthorize, if set (by tests), is called when a proposal's policy
// authorised it, its reservation staged or reused, before anything is
// journaled.
var afterAuthorize func(ids.RequestID)

// approvalStep reports whether a proposal that own, this node's tier,
// allows goes through check 8 (approvals verified and consumed): for a
// tier that needs approvals or a delay (this node's or the one the
// coordinator claims), on a guardian node for a tier that names
// guardians, or when the proposal carries approvals. A claimed tier the
// policy does not know counts as one that needs them, so the decision is
// journaled before the refusal check 7 gives it.
func approvalStep(pol *policy.Policy, role ids.Role, own policy.TierSpec, p *control.Propose) bool {
	claimed, ok := findTier(pol, p.Tier)
	if !ok {
		return true
	}
	needs, guardianNeeded := approvalNeeds(role, own, claimed)
	return needs || guardianNeeded || len(p.Approvals) > 0
}

// approvalNeeds reports whether either tier needs approvals or a delay,
// and whether this node, by its role, needs its own guardian's approval.
func approvalNeeds(role ids.Role, own, claimed policy.TierSpec) (needs, guardianNeeded bool) {
	needs = own.Approvals > 0 || own.Delay > 0 || claimed.Approvals > 0 || claimed.Delay > 0
	guardianNeeded = role == ids.RoleGuardian && (needs || slices.Contains(own.Roles, ids.RoleGuardian) || slices.Contains(claimed.Roles, ids.RoleGuardian))
	return needs, guardianNeeded
}

// releaseAfterRefusal releases a reservation no session ran with.
func (n *Node) releaseAfterRefusal(ctx context.Context, id ids.RequestID, rs *requestState) {
	if n.wasStarted(id) {
		rs.Started = true
	}
	if !rs.Reserved || rs.Started {
		return
	}
	// The journal says nothing is reserved before the ledger lets go: a
	// crash between the two leaves a reservation the journal does not
	// record, which the restart releases (releaseOrphans), never a record
	// claiming a reservation the ledger no longer holds (a retry would
	// reuse it and sign with nothing counted).
	ctx = context.WithoutCancel(ctx)
	rs.Reserved = false
	if err := n.saveRequest(ctx, id, reqFailed, *rs); err != nil {
		n.log.Error("journal after refusal", "request", id, "err", err)
		rs.Reserved = true // as the journal still has it
		return
	}
	if eng := n.policyEngine(); eng != nil {
		if err := eng.Release(ctx, id); err != nil && !errors.Is(err, policy.ErrUnknownRequest) {
			// Held in the ledger, recorded as not: a restart releases it.
			n.log.Error("release after refusal", "request", id, "err", err)
		}
	}
}

func (n *Node) claim(id ids.RequestID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.busy[id] {
		return false
	}
	n.busy[id] = true
	return true
}

func (n *Node) unclaim(id ids.RequestID) {
	n.mu.Lock()
	delete(n.busy, id)
	n.mu.Unlock()
}

// addSession registers s and arms its proposal deadline.
func (n *Node) addSession(s *session) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.sessions[s.id] = s
	if s.request != "" {
		n.requests[s.request] = s.id
	}
	wait := time.Until(s.deadline)
	s.timer = time.AfterFunc(max(wait, 0), func() { n.expire(s) })
	return true
}

// expire releases a proposal that saw no Start by its deadline.
func (n *Node) expire(s *session) {
	n.mu.Lock()
	proposed := s.state == control.StateProposed
	n.mu.Unlock()
	if proposed {
		n.dropProposal(s, "no start by the proposal's deadline")
	}
}

// dropProposal ends a proposal that will not start, releasing its
// reservation.
func (n *Node) dropProposal(s *session, why string) {
	n.mu.Lock()
	if s.state != control.StateProposed {
		n.mu.Unlock()
		return
	}
	// Failed at once, so no Start can take it; done only once the
	// reservation is released, so a Result seen after it finds nothing held.
	s.state = control.StateFailed
	if s.timer != nil {
		s.timer.Stop()
	}
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		s.result = control.Result{Error: why, Failure: "aborted"}
		s.ended = time.Now()
		close(s.done)
		n.mu.Unlock()
	}()
	ctx := context.WithoutCancel(n.ctx) // a closing node drops its proposals too
	if s.kind == kindSign {
		rs, _, found, err := n.loadRequest(ctx, s.request)
		if err == nil && found && rs.Session == s.id {
			n.releaseAfterRefusal(ctx, s.request, &rs)
			if err := n.saveRequest(ctx, s.request, reqFailed, rs); err != nil {
				n.log.Error("journal dropped proposal", "request", s.request, "err", err)
			}
		}
	}
	n.putSession(ctx, s, control.StateFailed, why)
	n.audit(ctx, store.Entry{Kind: store.AuditSession, RequestID: s.request, Decision: "aborted",
		Fields: map[string]string{"session": s.id.String(), "kind": s.kind, "reason": why}})
}

// frozen reports whether a freeze now in force holds signing session s.
func (n *Node) frozen(ctx context.Context, eng *policy.Engine, s *session) (string, bool) {
	if s.kind != kindSign || s.req == nil || eng == nil {
		return "", false
	}
	if d := eng.DryRun(ctx, s.req); !d.Allowed() && d.RuleID == policy.RuleFreeze {
		return d.Reason, true
	}
	return "", false
}

// holdFrozen ends the signing sessions a freeze just applied holds: a
// proposal is dropped, a running session cancelled (invariant 8). With the
// check in start, a freeze holds whichever of the two comes first.
func (n *Node) holdFrozen(ctx context.Context, eng *policy.Engine) {
	n.mu.Lock()
	var open []*session
	for _, s := range n.sessions {
		if s.kind == kindSign && (s.state == control.StateProposed || s.state == control.StateRunning) {
			open = append(open, s)
		}
	}
	n.mu.Unlock()
	for _, s := range open {
		why, ok := n.frozen(ctx, eng, s)
		if !ok {
			continue
		}
		n.mu.Lock()
		st, cancel := s.state, s.cancel
		n.mu.Unlock()
		switch {
		case st == control.StateProposed:
			n.dropProposal(s, "frozen: "+why)
		case st == control.StateRunning && cancel != nil:
			cancel()
		}
		n.log.Warn("freeze holds a session", "session", s.id, "request", s.request, "state", st)
	}
}

// start runs a proposed session in the background.
func (n *Node) start(ctx context.Context, from string, ref *control.SessionRef) error {
	n.mu.Lock()
	if s := n.sessions[ref.Session]; s != nil && s.from == from && s.state == control.StateProposed {
		n.mu.Unlock()
		// A freeze that arrived after the proposal holds here.
		if why, ok := n.frozen(ctx, n.policyEngine(), s); ok {
			n.dropProposal(s, "frozen: "+why)
			return refusef(policy.RuleFreeze, "session %s: %s", ref.Session, why)
		}
		n.mu.Lock()
	}
	s := n.sessions[ref.Session]
	if s == nil {
		n.mu.Unlock()
		return refusef(CheckSession, "no proposal of session %s here", ref.Session)
	}
	if s.from != from {
		n.mu.Unlock()
		return refusef(CheckSession, "session %s was proposed by another coordinator", ref.Session)
	}
	if s.state != control.StateProposed {
		st := s.state
		n.mu.Unlock()
		return refusef(CheckSession, "session %s is %s, not proposed", ref.Session, st)
	}
	if n.closed {
		n.mu.Unlock()
		return refusef(CheckInternal, "node closing")
	}
	s.state = control.StateRunning
	if s.kind == kindSign {
		n.started[s.request] = s.expiry
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	timeout := n.sessionTimeout
	if s.kind != kindSign && s.kind != kindPresign {
		timeout = n.keygenTimeout
	}
	var rctx context.Context
	switch s.kind {
	case kindSign:
		rctx, s.cancel = context.WithDeadline(n.ctx, signDeadline(n.now(), timeout, s.expiry))
	case kindPresign:
		rctx, s.cancel = context.WithTimeout(n.ctx, timeout)
	default:
		rctx, s.cancel = context.WithCancel(n.ctx)
	}
	n.wg.Add(1)
	n.mu.Unlock()

	if s.kind != kindSign {
		n.putSession(ctx, s, control.StateRunning, "")
	}
	// A signing session starts with nothing more written: the join's
	// record (reqProposed) already counts as started for a restart, which
	// keeps its reservation, so the session's first message may leave at
	// once (see recoverJournal).
	go func() {
		defer n.wg.Done()
		defer s.cancel()
		// The session's goroutines carry its kind as a profiler label,
		// so a CPU profile splits by it (go tool pprof -tagfocus).
		pprof.SetGoroutineLabels(pprof.WithLabels(rctx, pprof.Labels("session", s.kind)))
		switch s.kind {
		case kindSign:
			n.runSign(rctx, s)
		case kindKeygen:
			n.runKeygen(rctx, s, timeout)
		case kindReshare:
			n.runReshare(rctx, s, timeout)
		case kindPresign:
			n.runPresign(rctx, s)
		}
	}()
	return nil
}

// signDeadline is when a signing session started at now ends: after the
// session timeout, and never after the request's expiry (the agent asked
// for no signature later than that).
func signDeadline(now time.Time, timeout time.Duration, expiry time.Time) time.Time {
	return minTime(now.Add(timeout), expiry)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// runSign runs the signing session and records its outcome.
func (n *Node) runSign(ctx context.Context, s *session) {
	var sig tss.Signature
	var err error
	if s.presign.IsZero() {
		sig, err = n.tss.Sign(ctx, tss.SignRequest{Session: s.id, Share: s.share, Signers: s.members, Digest: s.digest, Path: s.path})
	} else {
		// The engine consumes the presignature before it sends anything,
		// and burns it on any failure: it is never tried twice.
		sig, err = n.tss.SignPresigned(ctx, tss.OnlineRequest{Presign: s.presign, Session: s.id, Digest: s.digest, Binding: []byte(s.request)})
	}
	bg := context.WithoutCancel(ctx)
	rs, _, _, lerr := n.loadRequest(bg, s.request)
	if lerr != nil {
		// What is written next must not say less than the truth: the
		// session ran, and the reservation, if any, stays.
		n.log.Error("journal read after signing", "request", s.request, "err", lerr)
		rs = requestState{Session: s.id, Key: s.key, Digest: common.Hash(s.digest), Path: s.path, Reserved: true}
	}
	rs.Started = true
	if err == nil {
		rs.Signature = sig[:]
		rs.Error = ""
		// The spend committed in the ledger, the signature, its audit
		// entries and the session's end, at one sync, before any Result
		// reports it.
		if jerr := n.journalSigned(bg, s, rs, sig); jerr != nil {
			n.log.Error("journal signature", "request", s.request, "err", jerr)
		}
		n.mu.Lock()
		s.finishLocked(control.StateDone, control.Result{Signature: sig[:]})
		delete(n.queue, s.request) // signed: nothing waits for the human any more
		delete(n.started, s.request)
		n.mu.Unlock()
		if n.set.role == ids.RoleGuardian {
			n.dequeue(bg, s.request)
		}
		n.metrics.sessions.WithLabelValues(kindSign, "done").Inc()
		return
	}
	res := failureResult(err)
	if n.ctx.Err() != nil {
		// The node is closing: like a crash, the journal keeps the session
		// running and the restart decides (the reservation stays, since
		// this node may have sent its last share).
		n.mu.Lock()
		s.finishLocked(control.StateFailed, control.Result{Error: "node closing", Failure: string(tss.FailLocal)})
		n.mu.Unlock()
		return
	}
	// The attempt failed after this node took part: it may have sent its
	// last-round share, and a member that withheld its own could then
	// complete the signature alone. So the reservation stays (Started) and
	// a retry of the request reuses it; releasing it here would let that
	// member spend the budget again.
	rs.Error = err.Error()
	if jerr := n.saveRequest(bg, s.request, reqFailed, rs); jerr != nil {
		n.log.Error("journal failure", "request", s.request, "err", jerr)
	}
	n.mu.Lock()
	s.result.Culprits = res.Culprits
	n.mu.Unlock()
	n.putSession(bg, s, control.StateFailed, err.Error())
	n.audit(bg, store.Entry{Kind: store.AuditSession, RequestID: s.request, Decision: control.StateFailed,
		Fields: map[string]string{"session": s.id.String(), "quorum": joinMembers(s.members), "culprits": joinMembers(res.Culprits), "error": err.Error()}})
	n.mu.Lock()
	s.finishLocked(control.StateFailed, res)
	n.mu.Unlock()
	n.metrics.sessions.WithLabelValues(kindSign, "failed").Inc()
	n.log.Warn("signing failed", "request", s.request, "session", s.id, "err", err)
}

// journalSigned records a signed session in one batch: the reservation's
// spend committed in the ledger, the request's signature, the signature's
// audit entry, the session done and its audit entry.
func (n *Node) journalSigned(ctx context.Context, s *session, rs requestState, sig tss.Signature) error {
	body, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	now := n.now().UTC()
	committed := false
	var commitErr error
	batch := func(b *store.Batch) error {
		if commitErr == nil {
			var err error
			if committed, err = b.CommitReservation(s.request); err != nil {
				commitErr = err
				return err
			}
		}
		if err := b.SaveRequest(s.request, reqSigned, body); err != nil {
			return err
		}
		if err := b.AppendAudit(store.Entry{Kind: store.AuditSignature, RequestID: s.request, Decision: "signed", Time: now,
			Fields: map[string]string{"session": s.id.String(), "digest": common.Hash(s.digest).Hex(), "signature": sig.String()}}); err != nil {
			return err
		}
		if err := b.PutSession(n.sessionRecord(s, control.StateDone, "")); err != nil {
			return err
		}
		return b.AppendAudit(store.Entry{Kind: store.AuditSession, RequestID: s.request, Decision: control.StateDone, Time: now,
			Fields: map[string]string{"session": s.id.String(), "quorum": joinMembers(s.members)}})
	}
	err = n.st.Batch(ctx, batch)
	if commitErr != nil {
		// The ledger's record of the reservation could not be read or
		// written: the signature exists all the same, so it is journaled
		// without the commit (the reservation still counts, reserved).
		n.log.Error("ledger commit", "request", s.request, "err", commitErr)
		err = n.st.Batch(ctx, batch)
	}
	if err == nil && commitErr == nil && rs.Reserved && !committed {
		n.log.Error("ledger commit: the request's reservation was not held", "request", s.request)
	}
	return err
}

// failureResult turns an engine error into a Result's failure fields.
func failureResult(err error) control.Result {
	r := control.Result{Error: err.Error(), Failure: string(tss.FailLocal)}
	if se, ok := tss.AsSessionError(err); ok {
		r.Failure, r.Culprits, r.Waiting = string(se.Kind), se.Culprits, se.Waiting
	}
	return r
}

// result answers a Result query, waiting up to the bound for the session
// to end; after a restart it answers from the journal.
func (n *Node) result(ctx context.Context, q *control.ResultQuery) (*control.Result, error) {
	wait := min(time.Duration(q.Wait), control.MaxResultWait)
	n.mu.Lock()
	s := n.sessions[q.Session]
	n.mu.Unlock()
	if s != nil {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-s.done:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		n.mu.Lock()
		r := s.snapshotLocked(n.self)
		n.mu.Unlock()
		return &r, nil
	}
	rec, err := n.st.Session(ctx, q.Session)
	if errors.Is(err, store.ErrNotFound) {
		return &control.Result{Member: n.self, Session: q.Session, State: control.StateUnknown}, nil
	}
	if err != nil {
		return nil, err
	}
	r := &control.Result{Member: n.self, Session: q.Session, State: rec.State, Culprits: rec.Culprits, Error: rec.Error}
	if rec.State == control.StateProposed || rec.State == control.StateRunning {
		r.State, r.Error = control.StateFailed, "node restarted during the session"
	}
	switch rec.Kind {
	case kindSign:
		if rs, _, found, err := n.loadRequest(ctx, rec.RequestID); err == nil && found && rs.Session == q.Session && len(rs.Signature) > 0 {
			r.State, r.Signature = control.StateDone, rs.Signature
		}
	case kindKeygen, kindReshare:
		if r.State == control.StateDone && !rec.Key.IsZero() {
			if sh, err := n.st.LatestShare(ctx, rec.Key); err == nil {
				k := sh.Key()
				r.Key = &k
			}
		}
	}
	return r, nil
}

// abort drops a proposal that will not start.
func (n *Node) abort(from string, ref *control.SessionRef) error {
	n.mu.Lock()
	s := n.sessions[ref.Session]
	n.mu.Unlock()
	if s == nil {
		return refusef(CheckSession, "no proposal of session %s here", ref.Session)
	}
	if s.from != from {
		return refusef(CheckSession, "session %s was proposed by another coordinator", ref.Session)
	}
	n.mu.Lock()
	st, waiting, cancel := s.state, s.waitingPool, s.cancel
	n.mu.Unlock()
	if st == control.StateRunning && waiting && cancel != nil {
		// A keygen or reshare that has sent nothing yet: it waits for its
		// pool, and ends as aborted.
		cancel()
		return nil
	}
	if st != control.StateProposed {
		return refusef(CheckSession, "session %s is %s; only a proposal not started (or a keygen or reshare still waiting for pre-parameters) can be aborted", ref.Session, st)
	}
	n.dropProposal(s, "aborted by the coordinator")
	return nil
}

// checkQuorumShape checks what quorum.Check does not: this node is in it.
func checkQuorumShape(c tss.Committee, self ids.MemberID, q []ids.MemberID) error {
	if !slices.Contains(q, self) {
		return refusef(CheckQuorum, "the quorum does not include this node (%s)", self)
	}
	for _, m := range q {
		if !c.Has(m) {
			return refusef(CheckQuorum, "quorum member %s is not in the key's committee", m)
		}
	}
	if len(q) < c.Threshold+1 {
		return refusef(CheckQuorum, "the quorum has %d members; the key needs %d", len(q), c.Threshold+1)
	}
	return nil
}

func findTier(p *policy.Policy, name string) (policy.TierSpec, bool) {
	for _, t := range p.Tiers() {
		if t.Name == name {
			return t, true
		}
	}
	return policy.TierSpec{}, false
}

func uniqueTiers(a, b policy.TierSpec) []policy.TierSpec {
	if a.Name == b.Name {
		return []policy.TierSpec{a}
	}
	return []policy.TierSpec{a, b}
}

// approvalID is the EIP-712 hash of an approval: the same approval under
// any signature is the same approval.
func approvalID(wallet common.Hash, a policy.Approval) (common.Hash, error) {
	h, _, err := apitypes.TypedDataAndHash(a.TypedData(wallet))
	if err != nil {
		return common.Hash{}, err
	}
	return common.BytesToHash(h), nil
}

func joinMembers(m []ids.MemberID) string {
	s := make([]string, len(m))
	for i, x := range m {
		s[i] = string(x)
	}
	return strings.Join(s, ",")
}

func joinAddrs(a []common.Address) string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = x.Hex()
	}
	return strings.Join(s, ",")
}

// wasStarted reports whether a signing session of this process started
// for request id and the request is not signed yet.
func (n *Node) wasStarted(id ids.RequestID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.started[id]
	return ok
}
