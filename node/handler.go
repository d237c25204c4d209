package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/libp2p/go-libp2p/core/peer"
)

// handle serves one control protocol exchange. Every answer the protocol
// defines, a refusal included, is a reply; only a reply that cannot be
// encoded resets the stream.
func (n *Node) handle(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
	start := time.Now()
	typ := "malformed"
	var reply *control.Reply
	if m, err := control.Decode(req); err != nil {
		reply = refusalReply(refusef(CheckMessage, "%v", err))
	} else {
		typ = string(m.Type)
		reply = n.dispatch(ctx, from, m)
	}
	if reply.Refusal != nil {
		reply.Refusal.Member = n.self
		n.metrics.refusals.WithLabelValues(typ, reply.Refusal.RuleID).Inc()
		n.log.Info("refused", "type", typ, "from", from, "rule", reply.Refusal.RuleID, "reason", reply.Refusal.Reason)
	}
	n.metrics.messages.WithLabelValues(typ).Inc()
	n.metrics.latency.WithLabelValues(typ).Observe(time.Since(start).Seconds())
	return control.EncodeReply(reply)
}

func (n *Node) dispatch(ctx context.Context, from peer.ID, m *control.Message) *control.Reply {
	var err error
	kind := n.p2p.PeerKind(from)
	switch {
	case m.Type == control.TypeFreeze:
		if kind != p2p.PeerCoordinator && kind != p2p.PeerMember {
			return refusalReply(refusef(CheckPeer, "peer %s is neither a member nor a coordinator", from))
		}
	case m.Type == control.TypeApproval:
		return refusalReply(refusef(CheckMessage, "a node does not take approvals; they go to the coordinators"))
	case kind != p2p.PeerCoordinator:
		return refusalReply(refusef(CheckPeer, "%s messages are taken from coordinators only; %s is a %s", m.Type, from, kind))
	}
	who := from.String()
	var r control.Reply
	switch m.Type {
	case control.TypePropose:
		r.Join, err = n.propose(ctx, who, m.Propose)
	case control.TypeKeygen:
		r.Join, err = n.proposeKeygen(ctx, who, m.Keygen)
	case control.TypeReshare:
		r.Join, err = n.proposeReshare(ctx, who, m.Reshare)
	case control.TypePresign:
		r.Join, err = n.proposePresign(ctx, who, m.Presign)
	case control.TypeStart:
		err = n.start(ctx, who, m.Start)
		if err == nil {
			r.Result, err = n.result(ctx, &control.ResultQuery{Session: m.Start.Session})
		}
	case control.TypeAbort:
		err = n.abort(who, m.Abort)
	case control.TypeResult:
		r.Result, err = n.result(ctx, m.Result)
	case control.TypeEvaluate:
		r.Decision, err = n.evaluate(ctx, m.Evaluate)
	case control.TypePending:
		err = n.pending(ctx, m.Pending)
	case control.TypePolicy:
		err = n.updatePolicy(ctx, m.Policy)
		if err == nil {
			r.Status, err = n.status(ctx)
		}
	case control.TypeFreeze:
		err = n.applyFreeze(ctx, *m.Freeze)
	case control.TypeUnfreeze:
		err = n.applyUnfreeze(ctx, *m.Unfreeze)
	case control.TypeStatus:
		r.Status, err = n.status(ctx)
	}
	if err != nil {
		var rf *refusal
		if errors.As(err, &rf) {
			return refusalReply(rf)
		}
		n.log.Error("control request failed", "type", m.Type, "from", from, "err", err)
		return refusalReply(refusef(CheckInternal, "%v", err))
	}
	return &r
}

func refusalReply(r *refusal) *control.Reply {
	return &control.Reply{Refusal: &control.Refusal{RuleID: r.rule, Reason: r.reason}}
}

// checkedRequest decodes an agent's signed request and verifies its
// signature against the current policy.
func (n *Node) checkedRequest(ctx context.Context, id ids.RequestID, s *api.ParsedRequest, signedBy ids.AgentID, msg, sig []byte) (*policy.Engine, *policy.Request, error) {
	eng := n.policyEngine()
	if eng == nil {
		return nil, nil, refusef(CheckPolicy, "this node has no policy yet")
	}
	if err := eng.Policy().VerifyAgent(signedBy, msg, sig); err != nil {
		return nil, nil, refusef(CheckAgent, "agent %s: %v", signedBy, err)
	}
	var grant *policy.SignedGrant
	if len(s.Grant) > 0 {
		g, err := api.ParseGrant(s.Grant)
		if err != nil {
			return nil, nil, refusef(CheckRequest, "%v", err)
		}
		grant = g
	}
	return eng, policy.NewRequest(id, signedBy, s.Key.Address(), s.Payload, grant, n.now()), nil
}

// evaluate is a dry run with the rule trace.
func (n *Node) evaluate(ctx context.Context, e *control.Evaluate) (*control.Decision, error) {
	parsed, err := api.ParseSigned(e.Request, n.now())
	if err != nil {
		return nil, refusef(CheckRequest, "%v", err)
	}
	if want := control.RequestID(e.Request.Agent, parsed.IdempotencyKey); e.RequestID != want {
		return nil, refusef(CheckRequest, "request id %s is not the id of agent %s's idempotency key %q", e.RequestID, e.Request.Agent, parsed.IdempotencyKey)
	}
	eng, req, err := n.checkedRequest(ctx, e.RequestID, parsed, e.Request.Agent, e.Request.Message(), e.Request.Signature)
	if err != nil {
		return nil, err
	}
	d := eng.DryRun(ctx, req)
	out := decisionOf(d, common.Hash(parsed.Payload.Digest()))
	out.Budgets = n.budgetsLeft(ctx, eng, req, d.RuleID)
	return out, nil
}

// budgetsLeft is what remains of rule's budget for req, from this node's
// ledger; a ledger that cannot answer leaves the dry run without it.
func (n *Node) budgetsLeft(ctx context.Context, eng *policy.Engine, req *policy.Request, rule string) []control.BudgetLeft {
	bl, err := eng.BudgetsLeft(ctx, req, rule)
	if err != nil {
		n.log.Warn("dry run: budget left", "rule", rule, "err", err)
		return nil
	}
	var out []control.BudgetLeft
	for _, b := range bl {
		c := control.BudgetLeft{Rule: b.Rule, Window: control.Duration(b.Window), Asset: string(b.Asset), Used: b.Used.String(),
			CountLimit: b.CountLimit, CountUsed: b.CountUsed}
		if b.Limit != nil {
			c.Limit, c.Left = b.Limit.String(), b.Left.String()
		}
		out = append(out, c)
	}
	return out
}

func decisionOf(d policy.Decision, digest common.Hash) *control.Decision {
	out := &control.Decision{Verdict: d.Verdict.String(), RuleID: d.RuleID, Reason: d.Reason, Digest: digest,
		PolicyHash: d.PolicyHash, PolicyVersion: d.PolicyVersion}
	if d.Tier != nil {
		out.Tier, out.TierRank, out.Roles, out.Approvals, out.Delay = d.Tier.Name, d.Tier.Rank, d.Tier.Roles, d.Tier.Approvals, control.Duration(d.Tier.Delay)
	}
	for _, s := range d.Trace {
		out.Trace = append(out.Trace, control.Step{Rule: s.Rule, Matched: s.Matched, Detail: s.Detail})
	}
	return out
}

// updatePolicy verifies and persists a document, a grant or a revocation.
func (n *Node) updatePolicy(ctx context.Context, u *control.PolicyUpdate) error {
	count := 0
	for _, set := range []bool{u.Document != nil, u.Grant != nil, u.Revocation != nil} {
		if set {
			count++
		}
	}
	if count != 1 {
		return refusef(CheckMessage, "a policy update carries exactly one of document, grant and revocation (%d given)", count)
	}
	n.policyMu.Lock()
	defer n.policyMu.Unlock()
	eng := n.policyEngine()
	switch {
	case u.Document != nil:
		sd := u.Document.Policy()
		if eng == nil {
			p, err := policy.VerifyDocument(sd, n.set.genesis)
			if err != nil {
				return refusef(CheckPolicy, "%v", err)
			}
			if err := n.st.PutPolicyDocument(ctx, store.PolicyDocument{Version: p.Version(), Hash: p.Hash(), Signed: sd, Stored: n.now().UTC()}); err != nil {
				return err
			}
			eng = policy.NewEngine(p, n.st.Ledger())
			n.mu.Lock()
			n.engine = eng
			n.mu.Unlock()
		} else {
			d, err := policy.ParseDocument(sd.Source)
			if err != nil {
				return refusef(CheckPolicy, "%v", err)
			}
			if d.Hash() == eng.Policy().Hash() {
				return nil // the document in force, again
			}
			if err := eng.ApplyDocument(sd); err != nil {
				return refusef(CheckPolicy, "%v", err)
			}
			p := eng.Policy()
			if err := n.st.PutPolicyDocument(ctx, store.PolicyDocument{Version: p.Version(), Hash: p.Hash(), Signed: sd, Stored: n.now().UTC()}); err != nil {
				return err
			}
		}
		p := eng.Policy()
		n.audit(ctx, store.Entry{Kind: store.AuditPolicy, Decision: "document applied", Fields: map[string]string{
			"version": fmt.Sprint(p.Version()), "hash": p.Hash().Hex(), "wallet": p.WalletID().Hex()}})
		return nil
	case eng == nil:
		return refusef(CheckPolicy, "this node has no policy yet; send the genesis document first")
	case u.Grant != nil:
		sg, err := u.Grant.Policy()
		if err != nil {
			return refusef(CheckRequest, "%v", err)
		}
		p := eng.Policy()
		by, err := policy.RecoverTypedData(sg.Grant.TypedData(p.WalletID()), sg.Signature)
		if err != nil {
			return refusef(CheckPolicy, "grant %s: %v", sg.Grant.ID, err)
		}
		if !containsAddr(p.Guardians(), by) {
			return refusef(CheckPolicy, "grant %s is signed by %s, who is not a guardian of policy version %d", sg.Grant.ID, by.Hex(), p.Version())
		}
		if err := n.st.PutGrant(ctx, *sg); err != nil {
			if errors.Is(err, store.ErrExists) {
				return refusef(CheckPolicy, "another grant is stored under id %s", sg.Grant.ID)
			}
			return err
		}
		n.audit(ctx, store.Entry{Kind: store.AuditPolicy, Decision: "grant stored", Fields: map[string]string{
			"grant": sg.Grant.ID, "agent": string(sg.Grant.Agent), "key": sg.Grant.Key.Hex(), "guardian": by.Hex()}})
		return nil
	default:
		r := policy.Revocation{GrantID: u.Revocation.GrantID, Issued: u.Revocation.Issued}
		if err := eng.Revoke(r, u.Revocation.Signature); err != nil {
			return refusef(CheckPolicy, "%v", err)
		}
		if err := n.saveState(ctx, eng); err != nil {
			return err
		}
		n.audit(ctx, store.Entry{Kind: store.AuditPolicy, Decision: "grant revoked", Fields: map[string]string{"grant": r.GrantID}})
		return nil
	}
}

func containsAddr(list []common.Address, a common.Address) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// applyFreeze applies one guardian's freeze and persists it before
// answering, so the freeze holds before the next signature (invariant 8).
func (n *Node) applyFreeze(ctx context.Context, f api.Freeze) error {
	eng := n.policyEngine()
	if eng == nil {
		return refusef(CheckPolicy, "this node has no policy yet")
	}
	pf, sig := f.Policy()
	n.policyMu.Lock()
	defer n.policyMu.Unlock()
	if err := eng.Freeze(pf, sig, n.now()); err != nil {
		return refusef(CheckFreeze, "%v", err)
	}
	if err := n.saveState(ctx, eng); err != nil {
		return err
	}
	n.holdFrozen(ctx, eng)
	if burned := n.burnFrozen(pf.Target); burned > 0 {
		n.log.Warn("freeze burned presignatures", "target", pf.Target, "count", burned)
	}
	id, _ := pf.ID(eng.Policy().WalletID())
	n.audit(ctx, store.Entry{Kind: store.AuditPolicy, Decision: "frozen", RuleID: policy.RuleFreeze, Fields: map[string]string{
		"target": string(pf.Target), "reason": pf.Reason, "freeze": id.Hex()}})
	n.log.Warn("frozen", "target", pf.Target, "reason", pf.Reason)
	return nil
}

// applyUnfreeze lifts a freeze with the guardian quorum's signatures.
func (n *Node) applyUnfreeze(ctx context.Context, u api.Unfreeze) error {
	eng := n.policyEngine()
	if eng == nil {
		return refusef(CheckPolicy, "this node has no policy yet")
	}
	pu, sigs := u.Policy()
	n.policyMu.Lock()
	defer n.policyMu.Unlock()
	if err := eng.Unfreeze(pu, sigs, n.now()); err != nil {
		return refusef(CheckUnfreeze, "%v", err)
	}
	if err := n.saveState(ctx, eng); err != nil {
		return err
	}
	n.audit(ctx, store.Entry{Kind: store.AuditPolicy, Decision: "unfrozen", Fields: map[string]string{
		"target": string(pu.Target), "freeze": pu.Freeze.Hex(), "signatures": fmt.Sprint(len(sigs))}})
	return nil
}

// status is the node's report of itself.
func (n *Node) status(ctx context.Context) (*control.Status, error) {
	keys, err := n.st.ShareKeys(ctx)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		keys = []tss.KeyInfo{}
	}
	s := &control.Status{Member: n.self, Role: n.set.role, Agent: n.set.agent, Keys: keys, PreParams: n.pool.Len(),
		Presignatures: n.presignatures()}
	if n.set.role == ids.RoleGuardian {
		s.Guardian = n.set.guardian.Hex()
	}
	if eng := n.policyEngine(); eng != nil {
		s.PolicyVersion, s.PolicyHash = eng.Policy().Version(), eng.Policy().Hash()
	}
	return s, nil
}
