package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/quorum"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
)

// kindPresign is a presign session: signing rounds 1-4, parked in the
// engine's memory until a proposal names it.
const kindPresign = "presign"

// maxPresignatures bounds the presignatures a node holds or makes at once
// (parked, proposed and running together), whatever the coordinators ask.
// A variable for tests.
var maxPresignatures = 16

// proposePresign checks a presignature proposal and joins it: a key held
// here, a quorum of its committee with this node in it that the hot tier
// of this node's policy accepts, and room under the bound.
func (n *Node) proposePresign(ctx context.Context, from string, p *control.Presign) (*control.Join, error) {
	now := n.now()
	if err := n.checkSessionID(ctx, p.Session); err != nil {
		return nil, err
	}
	if err := n.checkRoom(from); err != nil {
		return nil, err
	}
	if !p.Deadline.After(now) {
		return nil, refusef(CheckRequest, "the proposal's deadline %s has passed", p.Deadline.UTC().Format(time.RFC3339))
	}
	eng := n.policyEngine()
	if eng == nil {
		return nil, refusef(CheckPolicy, "this node has no policy yet; send it the guardian-signed document first")
	}
	share, err := n.st.LatestShare(ctx, p.Key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, refusef(CheckKey, "this node holds no share of key %s", p.Key)
	}
	if err != nil {
		return nil, err
	}
	info := share.Key()
	if len(p.Path) > 0 {
		if _, err := info.Child(p.Path); err != nil {
			return nil, refusef(CheckKey, "key %s path %v: %v", p.Key, p.Path, err)
		}
	}
	if err := checkQuorumShape(info.Committee, n.self, p.Quorum); err != nil {
		return nil, err
	}
	pol := eng.Policy()
	hot, ok := quorum.Hot(pol.Tiers())
	if !ok {
		return nil, refusef(control.RulePresignature, "policy version %d has no tier without approvals and delay; presignatures serve that tier only", pol.Version())
	}
	if err := quorum.Check(info.Committee, hot, p.Quorum); err != nil {
		return nil, refusef(CheckQuorum, "presignatures are made for quorums of tier %s only: %v", hot.Name, err)
	}
	if held := n.presignaturesHeld(); held >= maxPresignatures {
		return nil, refusef(control.RulePresignature, "this node holds or makes %d presignatures, the bound; use or burn some first", held)
	}
	s := &session{
		id: p.Session, kind: kindPresign, key: p.Key, members: slices.Clone(p.Quorum),
		created: now.UTC(), deadline: p.Deadline, from: from,
		share: share, path: slices.Clone(p.Path), state: control.StateProposed, done: make(chan struct{}),
	}
	n.putSession(ctx, s, control.StateProposed, "")
	if !n.addSession(s) {
		return nil, refusef(CheckInternal, "node closing")
	}
	return &control.Join{Member: n.self, Tier: hot.Name}, nil
}

// presignaturesHeld counts the presignatures parked in the engine and the
// presign sessions proposed or running.
func (n *Node) presignaturesHeld() int {
	held := len(n.tss.Presignatures())
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.sessions {
		if s.kind == kindPresign && (s.state == control.StateProposed || s.state == control.StateRunning) {
			held++
		}
	}
	return held
}

// runPresign runs signing rounds 1-4 and parks the presignature.
func (n *Node) runPresign(ctx context.Context, s *session) {
	pi, err := n.tss.Presign(ctx, tss.PresignRequest{Session: s.id, Share: s.share, Signers: s.members, Path: s.path})
	bg := context.WithoutCancel(ctx)
	if err != nil {
		res := failureResult(err)
		n.putSession(bg, s, control.StateFailed, err.Error())
		n.mu.Lock()
		s.finishLocked(control.StateFailed, res)
		n.mu.Unlock()
		n.metrics.sessions.WithLabelValues(kindPresign, "failed").Inc()
		n.log.Warn("presign failed", "session", s.id, "key", s.key, "err", err)
		return
	}
	n.putSession(bg, s, control.StateDone, "")
	n.mu.Lock()
	s.finishLocked(control.StateDone, control.Result{})
	n.mu.Unlock()
	n.metrics.sessions.WithLabelValues(kindPresign, "done").Inc()
	n.log.Debug("presignature parked", "id", pi.ID, "key", s.key, "quorum", joinMembers(pi.Signers))
}

// claimPresignature ties the presignature a proposal names to its session
// s, or refuses: the engine must hold it for this key, quorum and path,
// and no other open session may have claimed it. A proposal that never
// starts leaves it parked (nothing of the online phase was sent); a
// started session consumes it.
func (n *Node) claimPresignature(id ids.SessionID, s *session, key tss.KeyInfo) error {
	var held *tss.PresignInfo
	for _, pi := range n.tss.Presignatures() {
		if pi.ID == id {
			held = &pi
			break
		}
	}
	if held == nil {
		return refusef(control.RulePresignature, "presignature %s is not parked here (never made, used, burned, expired, or lost in a restart)", id)
	}
	if held.Key != key.Address {
		return refusef(control.RulePresignature, "presignature %s is for key %s, not %s", id, ids.KeyIDOf(held.Key), key.ID())
	}
	if !sameMembers(held.Signers, s.members) {
		return refusef(control.RulePresignature, "presignature %s is for quorum %s; this proposal's quorum is %s", id, joinMembers(held.Signers), joinMembers(s.members))
	}
	if !slices.Equal(held.Path, s.path) {
		return refusef(control.RulePresignature, "presignature %s is for path %v; this request's path is %v", id, held.Path, s.path)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, o := range n.sessions {
		if o.presign == id && o != s && (o.state == control.StateProposed || o.state == control.StateRunning) {
			return refusef(control.RulePresignature, "presignature %s is claimed by session %s (request %s); a presignature is used once", id, o.id, o.request)
		}
	}
	s.presign = id
	return nil
}

func sameMembers(a, b []ids.MemberID) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// burnFrozen burns the presignatures a freeze of target holds, and ends
// the presign sessions of them: a key's for a key freeze, every one for a
// freeze of everything or of an agent (a node cannot tell which keys an
// agent will use).
func (n *Node) burnFrozen(target policy.Target) int {
	holds := func(key ids.KeyID) bool {
		return target == policy.TargetAll || strings.HasPrefix(string(target), "agent:") || string(target) == key.String()
	}
	burned := 0
	for _, pi := range n.tss.Presignatures() {
		if holds(ids.KeyIDOf(pi.Key)) && n.tss.BurnPresignature(pi.ID) {
			burned++
		}
	}
	n.mu.Lock()
	var drop []*session
	for _, s := range n.sessions {
		if s.kind != kindPresign || !holds(s.key) {
			continue
		}
		switch s.state {
		case control.StateProposed:
			drop = append(drop, s)
		case control.StateRunning:
			if s.cancel != nil {
				s.cancel()
			}
		}
	}
	n.mu.Unlock()
	for _, s := range drop {
		n.dropProposal(s, fmt.Sprintf("frozen: %s", target))
	}
	return burned
}

// presignatures lists the parked presignatures for Status.
func (n *Node) presignatures() []control.Presignature {
	var out []control.Presignature
	for _, pi := range n.tss.Presignatures() {
		out = append(out, control.Presignature{ID: pi.ID, Key: ids.KeyIDOf(pi.Key), Quorum: pi.Signers, Path: pi.Path, Created: pi.Created})
	}
	return out
}

// Presignatures are the presignatures parked at this node, as Status
// reports them (no secret in them).
func (n *Node) Presignatures() []control.Presignature { return n.presignatures() }
