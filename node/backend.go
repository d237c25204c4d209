package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/common"
	"github.com/libp2p/go-libp2p/core/peer"
)

// queued is one request in the guardian queue.
type queued struct {
	desc   admin.PendingRequest
	target policy.ApprovalTarget
	path   []uint32
}

// maxQueued bounds the guardian queue. A variable for tests.
var maxQueued = 1024

// pending puts a request awaiting this node's human in the guardian
// queue, after decoding and checking it here: what the human is shown
// comes from the agent's own bytes.
func (n *Node) pending(ctx context.Context, p *control.Pending) error {
	if n.set.role != ids.RoleGuardian {
		return refusef(CheckMessage, "this node is a %s node; only guardian nodes keep a queue for their human", n.set.role)
	}
	if denied, err := n.deniedHere(ctx, p.RequestID); err != nil {
		return err
	} else if denied {
		return refusef(CheckApproval, "request %s was denied by a guardian through this node", p.RequestID)
	}
	if err := n.enqueue(ctx, p, n.now()); err != nil {
		return err
	}
	if err := n.saveQueued(ctx, p); err != nil {
		return err
	}
	var desc admin.PendingRequest
	n.mu.Lock()
	if q, ok := n.queue[p.RequestID]; ok {
		desc = q.desc
	}
	n.mu.Unlock()
	n.audit(ctx, store.Entry{Kind: store.AuditRequest, RequestID: p.RequestID, Decision: "pending", RuleID: desc.RuleID,
		Fields: map[string]string{"tier": desc.Tier, "digest": desc.Digest.Hex(), "summary": desc.Summary}})
	return nil
}

// enqueue checks a pending request and puts it in the queue in memory.
func (n *Node) enqueue(ctx context.Context, p *control.Pending, received time.Time) error {
	parsed, err := api.ParseSigned(p.Request, n.now())
	if err != nil {
		return refusef(CheckRequest, "%v", err)
	}
	if want := control.RequestID(p.Request.Agent, parsed.IdempotencyKey); p.RequestID != want {
		return refusef(CheckRequest, "request id %s is not the id of agent %s's idempotency key %q", p.RequestID, p.Request.Agent, parsed.IdempotencyKey)
	}
	eng, req, err := n.checkedRequest(ctx, p.RequestID, parsed, p.Request.Agent, p.Request.Message(), p.Request.Signature)
	if err != nil {
		return err
	}
	d := eng.DryRun(ctx, req)
	if !d.Allowed() || d.Tier == nil {
		return &refusal{rule: d.RuleID, reason: "this node's policy denies the request: " + d.Reason}
	}
	pol := eng.Policy()
	desc := admin.DescribePayload(pol, parsed.Payload)
	desc.RequestID, desc.Agent, desc.Key = p.RequestID, p.Request.Agent, parsed.Key.Address()
	desc.Tier, desc.Approvals, desc.Delay = d.Tier.Name, d.Tier.Approvals, control.Duration(d.Tier.Delay)
	desc.RuleID, desc.Reason = d.RuleID, d.Reason
	if claimed, ok := findTier(pol, p.Tier); ok && claimed.Rank > d.Tier.Rank {
		desc.Tier, desc.Approvals, desc.Delay = claimed.Name, claimed.Approvals, control.Duration(claimed.Delay)
	}
	desc.Received, desc.Expiry = received.UTC(), parsed.Expiry
	q := &queued{desc: desc, target: policy.ApprovalTarget{RequestID: p.RequestID, Digest: desc.Digest, ChainID: parsed.Payload.ChainID(), Key: parsed.Key.Address()},
		path: slices.Clone(parsed.Path)}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.queue[p.RequestID]; ok {
		// The human saw, and may have approved, the first payload: another
		// one under the same request id never takes its place.
		if old.target.Digest != q.target.Digest || old.target.Key != q.target.Key || !slices.Equal(old.path, q.path) {
			return refusef(CheckRequest, "request %s is queued here for digest %s of key %s at path %v; this one is for digest %s of key %s at path %v, and a request id names one payload",
				p.RequestID, old.target.Digest.Hex(), old.target.Key.Hex(), old.path, q.target.Digest.Hex(), q.target.Key.Hex(), q.path)
		}
		q.desc.Received, q.desc.ApprovedBy = old.desc.Received, old.desc.ApprovedBy
	} else if len(n.queue) >= maxQueued {
		return refusef(CheckRequest, "the guardian queue holds %d requests, its bound", len(n.queue))
	}
	n.queue[p.RequestID] = q
	return nil
}

// The admin.Backend of a node.
var _ admin.Backend = (*Node)(nil)

// Pending lists the guardian queue, oldest first, dropping what expired.
func (n *Node) Pending(ctx context.Context) ([]admin.PendingRequest, error) {
	now := n.now()
	n.mu.Lock()
	out := []admin.PendingRequest{}
	var expired []ids.RequestID
	for id, q := range n.queue {
		if !q.desc.Expiry.After(now) {
			delete(n.queue, id)
			expired = append(expired, id)
			continue
		}
		out = append(out, q.desc)
	}
	n.mu.Unlock()
	for _, id := range expired {
		n.dequeue(ctx, id)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Received.Equal(out[j].Received) {
			return out[i].Received.Before(out[j].Received)
		}
		return out[i].RequestID < out[j].RequestID
	})
	return out, nil
}

// PendingRequest returns one queued request.
func (n *Node) PendingRequest(ctx context.Context, id ids.RequestID) (*admin.PendingRequest, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	q, ok := n.queue[id]
	if !ok || !q.desc.Expiry.After(n.now()) {
		return nil, fmt.Errorf("%w: request %s is not waiting here", admin.ErrNotFound, id)
	}
	d := q.desc
	return &d, nil
}

// Approve verifies a guardian's approval against the request as this node
// decoded it and the policy's guardians, then sends it to every
// coordinator.
func (n *Node) Approve(ctx context.Context, a api.Approval) (*admin.Delivery, error) {
	eng := n.policyEngine()
	if eng == nil {
		return nil, admin.Refusef(CheckPolicy, "this node has no policy yet")
	}
	pol := eng.Policy()
	n.mu.Lock()
	q, ok := n.queue[a.RequestID]
	n.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: request %s is not waiting here", admin.ErrNotFound, a.RequestID)
	}
	sa := a.Policy()
	if _, err := pol.VerifyApprovals(q.target, []policy.SignedApproval{sa}, policy.TierSpec{Name: "approval", Approvals: 1}, n.now()); err != nil {
		return nil, admin.Refusef(CheckApproval, "%v", err)
	}
	by, _ := policy.RecoverTypedData(sa.Approval.TypedData(pol.WalletID()), sa.Signature)
	if id, err := approvalID(pol.WalletID(), sa.Approval); err == nil {
		if used, _ := n.st.ApprovalUsed(ctx, id); used {
			return nil, &admin.Refused{Rule: CheckApproval, Reason: "this approval was used already", Conflict: true}
		}
	}
	n.mu.Lock()
	if q, ok := n.queue[a.RequestID]; ok && !slices.Contains(q.desc.ApprovedBy, by) {
		q.desc.ApprovedBy = append(q.desc.ApprovedBy, by)
	}
	n.mu.Unlock()
	n.audit(ctx, store.Entry{Kind: store.AuditApproval, RequestID: a.RequestID, Decision: "approved", Fields: map[string]string{
		"guardian": by.Hex(), "digest": a.Digest.Hex()}})
	d := &admin.Delivery{RequestID: a.RequestID, Guardian: by}
	d.Forwarded, d.Failed = n.sendCoordinators(ctx, &control.Message{Type: control.TypeApproval, Approval: &control.ApprovalMsg{Approval: &a}})
	return d, nil
}

// Deny verifies a guardian's denial and sends it to every coordinator; the
// request leaves the queue.
func (n *Node) Deny(ctx context.Context, dn api.Denial) (*admin.Delivery, error) {
	eng := n.policyEngine()
	if eng == nil {
		return nil, admin.Refusef(CheckPolicy, "this node has no policy yet")
	}
	n.mu.Lock()
	q, ok := n.queue[dn.RequestID]
	n.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: request %s is not waiting here", admin.ErrNotFound, dn.RequestID)
	}
	by, err := eng.Policy().VerifyDenial(q.target, dn.Policy())
	if err != nil {
		return nil, admin.Refusef("denial", "%v", err)
	}
	n.mu.Lock()
	delete(n.queue, dn.RequestID)
	n.mu.Unlock()
	n.endQueued(ctx, dn.RequestID, queueDenied)
	n.audit(ctx, store.Entry{Kind: store.AuditApproval, RequestID: dn.RequestID, Decision: "denied", Fields: map[string]string{
		"guardian": by.Hex(), "reason": dn.Reason}})
	d := &admin.Delivery{RequestID: dn.RequestID, Guardian: by}
	d.Forwarded, d.Failed = n.sendCoordinators(ctx, &control.Message{Type: control.TypeApproval, Approval: &control.ApprovalMsg{Denial: &dn}})
	return d, nil
}

// Freeze applies a guardian's freeze here, persisted, then sends it to
// every member and coordinator.
func (n *Node) Freeze(ctx context.Context, f api.Freeze) (*admin.FreezeResult, error) {
	eng := n.policyEngine()
	if eng == nil {
		return nil, admin.Refusef(CheckPolicy, "this node has no policy yet")
	}
	pf, sig := f.Policy()
	wallet := eng.Policy().WalletID()
	by, err := policy.RecoverTypedData(pf.TypedData(wallet), sig)
	if err != nil {
		return nil, admin.Refusef(CheckFreeze, "%v", err)
	}
	if err := n.applyFreeze(ctx, f); err != nil {
		var rf *refusal
		if errors.As(err, &rf) {
			return nil, admin.Refusef(rf.rule, "%s", rf.reason)
		}
		return nil, err
	}
	id, _ := pf.ID(wallet)
	res := &admin.FreezeResult{ID: id, Target: string(pf.Target), Guardians: []common.Address{by}, Applied: true}
	res.Acknowledged, res.Failed = n.sendAll(ctx, &control.Message{Type: control.TypeFreeze, Freeze: &f})
	return res, nil
}

// Unfreeze applies a guardian quorum's unfreeze here, then sends it on.
// Members take an unfreeze only from coordinators, so it goes to the
// coordinators, which carry it to every member.
func (n *Node) Unfreeze(ctx context.Context, u api.Unfreeze) (*admin.FreezeResult, error) {
	eng := n.policyEngine()
	if eng == nil {
		return nil, admin.Refusef(CheckPolicy, "this node has no policy yet")
	}
	pu, sigs := u.Policy()
	wallet := eng.Policy().WalletID()
	var by []common.Address
	for _, s := range sigs {
		if a, err := policy.RecoverTypedData(pu.TypedData(wallet), s); err == nil {
			by = append(by, a)
		}
	}
	if err := n.applyUnfreeze(ctx, u); err != nil {
		var rf *refusal
		if errors.As(err, &rf) {
			return nil, admin.Refusef(rf.rule, "%s", rf.reason)
		}
		return nil, err
	}
	res := &admin.FreezeResult{ID: pu.Freeze, Target: string(pu.Target), Guardians: by, Applied: true}
	res.Acknowledged, res.Failed = n.sendCoordinators(ctx, &control.Message{Type: control.TypeUnfreeze, Unfreeze: &u})
	return res, nil
}

// Wallet reports what a guardian signs against.
func (n *Node) Wallet(ctx context.Context) (*admin.Wallet, error) {
	eng := n.policyEngine()
	if eng == nil {
		return nil, fmt.Errorf("%w: this node has no policy yet", admin.ErrNotFound)
	}
	p := eng.Policy()
	w := &admin.Wallet{WalletID: p.WalletID(), PolicyVersion: p.Version(), PolicyHash: p.Hash(),
		Guardians: p.Guardians(), Quorum: p.Quorum(), Domain: policy.Domain(p.WalletID())}
	if n.set.role == ids.RoleGuardian {
		g := n.set.guardian
		w.Guardian = &g
	}
	for _, f := range eng.Freezes() {
		w.Freezes = append(w.Freezes, admin.ActiveFreeze{ID: f.ID, Target: string(f.Target), Reason: f.Reason, By: f.By, At: f.At})
	}
	return w, nil
}

// Audit returns audit entries with from <= seq <= to.
func (n *Node) Audit(ctx context.Context, from, to uint64) ([]store.Entry, error) {
	return n.st.AuditRange(ctx, from, to)
}

// VerifyAudit checks the whole audit chain.
func (n *Node) VerifyAudit(ctx context.Context) (int, error) { return n.st.VerifyAudit(ctx) }

// Status reports the node and its queue.
func (n *Node) Status(ctx context.Context) (*admin.Status, error) {
	s, err := n.status(ctx)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	q := len(n.queue)
	n.mu.Unlock()
	return &admin.Status{Status: *s, Pending: q}, nil
}

// Ready is nil once the node has its policy.
func (n *Node) Ready(ctx context.Context) error {
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return errors.New("node closed")
	}
	if n.policyEngine() == nil {
		return errors.New("no policy document yet")
	}
	return nil
}

// sendCoordinators sends m to every coordinator.
func (n *Node) sendCoordinators(ctx context.Context, m *control.Message) ([]ids.MemberID, []admin.Failure) {
	var to []peer.ID
	for _, c := range n.set.coordinators {
		to = append(to, c.ID)
	}
	return n.send(ctx, m, to)
}

// sendAll sends m to every other member and every coordinator.
func (n *Node) sendAll(ctx context.Context, m *control.Message) ([]ids.MemberID, []admin.Failure) {
	var to []peer.ID
	for _, ms := range [][]p2p.Member{n.set.members, n.set.coordinators} {
		for _, c := range ms {
			if ids.MemberID(c.ID.String()) != n.self {
				to = append(to, c.ID)
			}
		}
	}
	return n.send(ctx, m, to)
}

func (n *Node) send(ctx context.Context, m *control.Message, to []peer.ID) ([]ids.MemberID, []admin.Failure) {
	b, err := control.Encode(m)
	ok := []ids.MemberID{}
	var failed []admin.Failure
	if err != nil {
		for _, p := range to {
			failed = append(failed, admin.Failure{Member: ids.MemberID(p.String()), Error: err.Error()})
		}
		return ok, failed
	}
	type answer struct {
		p   peer.ID
		err error
	}
	ch := make(chan answer, len(to))
	for _, p := range to {
		go func() {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			resp, err := n.p2p.Request(rctx, p, control.Protocol, b, control.MaxMessage)
			if err == nil {
				var r *control.Reply
				if r, err = control.DecodeReply(resp); err == nil && r.Refusal != nil {
					err = r.Refusal
				}
			}
			ch <- answer{p, err}
		}()
	}
	for range to {
		a := <-ch
		if a.err != nil {
			failed = append(failed, admin.Failure{Member: ids.MemberID(a.p.String()), Error: a.err.Error()})
		} else {
			ok = append(ok, ids.MemberID(a.p.String()))
		}
	}
	slices.Sort(ok)
	sort.Slice(failed, func(i, j int) bool { return failed[i].Member < failed[j].Member })
	return ok, failed
}

// serveAdmin runs the admin API on the configured address.
func (n *Node) serveAdmin(ctx context.Context) error {
	addr := n.AdminAddr()
	token := ""
	if n.cfg.Admin.TokenFile != "" {
		token = n.cfg.path(n.cfg.Admin.TokenFile)
	}
	srv, err := admin.NewServer(n, admin.Config{Addr: addr, TokenFile: token, Gatherer: n.gatherer,
		Registerer: n.registry, Log: n.log.With("component", "admin")})
	if err != nil {
		return err
	}
	n.log.Info("admin API listening", "addr", addr)
	return srv.Run(ctx)
}
