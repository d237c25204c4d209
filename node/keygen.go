package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
)

// checkCommittee refuses a committee this node cannot serve: invalid,
// without this node under its configured role, or naming a peer the
// configuration does not list as a member with that role.
func (n *Node) checkCommittee(c tss.Committee, what string) error {
	if err := c.Validate(); err != nil {
		return refusef(CheckKeygen, "%s: %v", what, err)
	}
	for _, m := range c.Members {
		if m.ID == n.self {
			if m.Role != n.set.role {
				return refusef(CheckKeygen, "%s names this node (%s) as %s, but its role is %s", what, n.self, m.Role, n.set.role)
			}
			continue
		}
		r, ok := n.set.memberRoles[m.ID]
		if !ok {
			return refusef(CheckKeygen, "%s member %s is not a member in this node's configuration", what, m.ID)
		}
		if r != m.Role {
			return refusef(CheckKeygen, "%s names %s as %s; this node's configuration has it as %s", what, m.ID, m.Role, r)
		}
	}
	return nil
}

// proposeKeygen checks a key generation and joins it.
func (n *Node) proposeKeygen(ctx context.Context, from string, k *control.Keygen) (*control.Join, error) {
	now := n.now()
	if err := n.checkSessionID(ctx, k.Session); err != nil {
		return nil, err
	}
	if err := n.checkRoom(from); err != nil {
		return nil, err
	}
	if !k.Committee.Has(n.self) {
		return nil, refusef(CheckKeygen, "the committee does not include this node (%s)", n.self)
	}
	if err := n.checkCommittee(k.Committee, "the committee"); err != nil {
		return nil, err
	}
	if !k.Deadline.After(now) {
		return nil, refusef(CheckKeygen, "the proposal's deadline %s has passed", k.Deadline.UTC().Format(time.RFC3339))
	}
	c := k.Committee.Canonical()
	s := &session{
		id: k.Session, kind: kindKeygen, members: c.IDs(), created: now.UTC(), deadline: k.Deadline, from: from,
		committee: c, state: control.StateProposed, done: make(chan struct{}),
	}
	n.putSession(ctx, s, control.StateProposed, "")
	if !n.addSession(s) {
		return nil, refusef(CheckInternal, "node closing")
	}
	return &control.Join{Member: n.self, PreParams: n.pool.Len() > 0}, nil
}

// takePreParams takes a set from the pool, reporting progress while it
// waits: a miss waits, it never fails the session.
func (n *Node) takePreParams(ctx context.Context, s *session) (*tss.PreParams, error) {
	n.mu.Lock()
	s.progress = fmt.Sprintf("waiting for pre-parameters (%d ready, pool target %d)", n.pool.Len(), n.cfg.Pool.Target)
	s.waitingPool = true
	n.mu.Unlock()
	pp, err := n.pool.Take(ctx)
	n.mu.Lock()
	s.waitingPool = false
	n.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return pp, nil
}

func (n *Node) setProgress(s *session, p string) {
	n.mu.Lock()
	s.progress = p
	n.mu.Unlock()
}

func (n *Node) runKeygen(ctx context.Context, s *session, timeout time.Duration) {
	pp, err := n.takePreParams(ctx, s)
	if err == nil {
		n.setProgress(s, "key generation running")
		kctx, cancel := context.WithTimeout(ctx, timeout)
		var share *tss.Share
		share, err = n.tss.Keygen(kctx, tss.KeygenRequest{Session: s.id, Committee: s.committee, PreParams: pp})
		cancel()
		if err == nil {
			err = n.st.PutShare(context.WithoutCancel(ctx), share)
			if err == nil {
				info := share.Key()
				n.mu.Lock()
				s.key = info.ID()
				n.mu.Unlock()
				n.putSession(ctx, s, control.StateDone, "")
				n.audit(ctx, store.Entry{Kind: store.AuditKey, Decision: "created", Fields: map[string]string{
					"key": info.ID().String(), "session": s.id.String(), "committee": info.Committee.Describe(),
					"generation": fmt.Sprint(info.Generation)}})
				n.mu.Lock()
				s.finishLocked(control.StateDone, control.Result{Key: &info})
				n.mu.Unlock()
				n.metrics.sessions.WithLabelValues(kindKeygen, "done").Inc()
				n.log.Info("key generated", "key", info.ID(), "committee", info.Committee.Describe())
				return
			}
		}
	}
	n.failSession(ctx, s, err)
}

// failSession records a keygen or reshare failure.
func (n *Node) failSession(ctx context.Context, s *session, err error) {
	res := failureResult(err)
	n.mu.Lock()
	s.result.Culprits = res.Culprits
	n.mu.Unlock()
	n.putSession(ctx, s, control.StateFailed, err.Error())
	n.audit(ctx, store.Entry{Kind: store.AuditSession, Decision: control.StateFailed, Fields: map[string]string{
		"session": s.id.String(), "kind": s.kind, "error": err.Error(), "culprits": joinMembers(res.Culprits)}})
	n.mu.Lock()
	s.finishLocked(control.StateFailed, res)
	n.mu.Unlock()
	n.metrics.sessions.WithLabelValues(s.kind, "failed").Inc()
	n.log.Warn("session failed", "kind", s.kind, "session", s.id, "err", err)
}

// committeeEntries is a committee in an authorisation's form, sorted by
// member.
func committeeEntries(c tss.Committee) []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = policy.CommitteeEntry(string(m.ID), m.Role)
	}
	sort.Strings(out)
	return out
}

// proposeReshare checks a reshare: every old member verifies the guardian
// quorum's authorisation against its own view of the key (its share), and
// a new-only member against the key the message names.
func (n *Node) proposeReshare(ctx context.Context, from string, r *control.Reshare) (*control.Join, error) {
	now := n.now()
	if err := n.checkSessionID(ctx, r.Session); err != nil {
		return nil, err
	}
	if err := n.checkRoom(from); err != nil {
		return nil, err
	}
	eng := n.policyEngine()
	if eng == nil {
		return nil, refusef(CheckPolicy, "this node has no policy yet; a reshare is checked against the guardians of the policy")
	}
	keyID := r.Key.ID()
	share, err := n.st.LatestShare(ctx, keyID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		share = nil
	case err != nil:
		return nil, err
	}
	inNew := r.NewCommittee.Has(n.self)
	var info tss.KeyInfo
	if share != nil {
		info = share.Key()
		if !info.Equal(r.Key) {
			return nil, refusef(CheckReshare, "the message's key (%s, generation %d) is not the key this node holds (%s, generation %d)",
				r.Key.Describe(), r.Key.Generation, info.Describe(), info.Generation)
		}
	} else {
		if !inNew {
			return nil, refusef(CheckKey, "this node holds no share of key %s and is not in the new committee", keyID)
		}
		info = r.Key
	}
	if err := n.checkCommittee(r.NewCommittee, "the new committee"); err != nil {
		return nil, err
	}
	oldSigner := share != nil && slices.Contains(r.OldSigners, n.self)
	if share != nil && !oldSigner && !inNew {
		return nil, refusef(CheckReshare, "this node is neither among the old signers nor in the new committee")
	}
	seen := map[ids.MemberID]bool{}
	for _, m := range r.OldSigners {
		if !info.Committee.Has(m) || seen[m] {
			return nil, refusef(CheckReshare, "old signer %s is not a member of the key's committee, or is named twice", m)
		}
		seen[m] = true
	}
	if len(r.OldSigners) < info.Committee.Threshold+1 {
		return nil, refusef(CheckReshare, "%d old signers; the key needs %d", len(r.OldSigners), info.Committee.Threshold+1)
	}
	want := policy.ReshareAuthorization{
		Key: info.Address, Generation: info.Generation,
		OldMembers: committeeEntries(info.Committee), OldThreshold: info.Committee.Threshold,
		NewMembers: committeeEntries(r.NewCommittee), NewThreshold: r.NewCommittee.Threshold,
		Expiry: r.Authorization.Expiry,
	}
	if err := eng.Policy().VerifyReshare(want, r.Authorization.Policy(), now); err != nil {
		n.audit(ctx, store.Entry{Kind: store.AuditKey, Decision: "reshare refused", RuleID: CheckReshare, Fields: map[string]string{
			"key": keyID.String(), "session": r.Session.String(), "reason": err.Error()}})
		return nil, refusef(CheckReshare, "%v", err)
	}
	if !r.Deadline.After(now) {
		return nil, refusef(CheckReshare, "the proposal's deadline %s has passed", r.Deadline.UTC().Format(time.RFC3339))
	}
	nc := r.NewCommittee.Canonical()
	req := tss.ReshareRequest{Session: r.Session, Key: info, OldSigners: slices.Clone(r.OldSigners), NewCommittee: nc}
	if oldSigner {
		req.OldShare = share
	}
	members := slices.Clone(r.OldSigners)
	for _, m := range nc.IDs() {
		if !slices.Contains(members, m) {
			members = append(members, m)
		}
	}
	s := &session{
		id: r.Session, kind: kindReshare, key: keyID, members: members, created: now.UTC(), deadline: r.Deadline, from: from,
		reshare: req, state: control.StateProposed, done: make(chan struct{}),
	}
	n.putSession(ctx, s, control.StateProposed, "")
	if !n.addSession(s) {
		return nil, refusef(CheckInternal, "node closing")
	}
	n.audit(ctx, store.Entry{Kind: store.AuditKey, Decision: "reshare joined", Fields: map[string]string{
		"key": keyID.String(), "session": r.Session.String(), "new_committee": nc.Describe()}})
	return &control.Join{Member: n.self, PreParams: !inNew || n.pool.Len() > 0}, nil
}

// runReshare runs a reshare. The new share is stored at once; the old
// generation is deleted only when every new member confirmed (two-phase),
// otherwise both are kept and the result names the unconfirmed.
func (n *Node) runReshare(ctx context.Context, s *session, timeout time.Duration) {
	req := s.reshare
	if req.NewCommittee.Has(n.self) {
		pp, err := n.takePreParams(ctx, s)
		if err != nil {
			n.failSession(ctx, s, err)
			return
		}
		req.PreParams = pp
	}
	n.setProgress(s, "reshare running")
	rctx, cancel := context.WithTimeout(ctx, timeout)
	res, err := n.tss.Reshare(rctx, req)
	cancel()
	if res == nil {
		if err == nil {
			err = errors.New("reshare ended without a result")
		}
		n.failSession(ctx, s, err)
		return
	}
	bg := context.WithoutCancel(ctx)
	if res.Share != nil {
		if perr := n.st.PutShare(bg, res.Share); perr != nil && !errors.Is(perr, store.ErrExists) {
			n.failSession(ctx, s, fmt.Errorf("store new share: %w", perr))
			return
		}
	}
	out := control.Result{Key: &res.Key, Signature: res.Proof[:], Confirmed: res.Confirmed, Unconfirmed: res.Unconfirmed}
	outcome := "reshared"
	if res.Complete() {
		if req.OldShare != nil || req.Key.Committee.Has(n.self) {
			if derr := n.st.DeleteShare(bg, s.key, req.Key.Generation); derr != nil && !errors.Is(derr, store.ErrNotFound) {
				n.log.Error("delete old share", "key", s.key, "generation", req.Key.Generation, "err", derr)
			}
		}
	} else {
		outcome = "reshare unconfirmed"
		if err != nil {
			out.Error = err.Error()
		}
		out.Failure = string(tss.FailUnconfirmed)
	}
	n.putSession(ctx, s, control.StateDone, out.Error)
	n.audit(ctx, store.Entry{Kind: store.AuditKey, Decision: outcome, Fields: map[string]string{
		"key": s.key.String(), "session": s.id.String(), "generation": fmt.Sprint(res.Key.Generation),
		"committee": res.Key.Committee.Describe(), "proof": res.Proof.String(),
		"unconfirmed": joinMembers(res.Unconfirmed), "kept_old": fmt.Sprint(!res.Complete())}})
	n.mu.Lock()
	s.finishLocked(control.StateDone, out)
	n.mu.Unlock()
	n.metrics.sessions.WithLabelValues(kindReshare, strings.ReplaceAll(outcome, " ", "_")).Inc()
	n.log.Info("reshare ended", "key", s.key, "complete", res.Complete(), "unconfirmed", res.Unconfirmed)
}
