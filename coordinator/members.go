package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

// errNoAnswer marks a member that did not answer (unreachable, reset
// stream, malformed reply): not a refusal.
var errNoAnswer = errors.New("no answer")

// call sends m to member to over the control protocol and returns its
// reply. A transport failure wraps errNoAnswer; a refusal is returned in
// the reply, not as an error.
func (c *Coordinator) call(ctx context.Context, to ids.MemberID, m *control.Message) (*control.Reply, error) {
	pid, err := peer.Decode(string(to))
	if err != nil {
		return nil, fmt.Errorf("%w from %s: not a peer id: %v", errNoAnswer, to, err)
	}
	b, err := control.Encode(m)
	if err != nil {
		return nil, err
	}
	resp, err := c.p2p.Request(ctx, pid, control.Protocol, b, control.MaxMessage)
	if err != nil {
		outcome := "error"
		if errors.Is(ctx.Err(), context.Canceled) {
			outcome = "cancelled" // not wanted any more (callEach), or closing
		}
		c.metrics.calls.WithLabelValues(string(m.Type), outcome).Inc()
		return nil, fmt.Errorf("%w from %s to %s: %v", errNoAnswer, to, m.Type, err)
	}
	r, err := control.DecodeReply(resp)
	if err != nil {
		c.metrics.calls.WithLabelValues(string(m.Type), "error").Inc()
		return nil, fmt.Errorf("%w from %s to %s: %v", errNoAnswer, to, m.Type, err)
	}
	if r.Refusal != nil {
		c.metrics.calls.WithLabelValues(string(m.Type), "refused").Inc()
		if r.Refusal.Member == "" {
			r.Refusal.Member = to
		}
	} else {
		c.metrics.calls.WithLabelValues(string(m.Type), "ok").Inc()
	}
	return r, nil
}

// answer is one member's reply or error in a fan-out.
type answer struct {
	member ids.MemberID
	reply  *control.Reply
	err    error
}

// callAll sends each member its message (msg(member)) at once and returns
// the answers in the members' order.
func (c *Coordinator) callAll(ctx context.Context, members []ids.MemberID, msg func(ids.MemberID) *control.Message) []answer {
	out := make([]answer, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.call(ctx, m, msg(m))
			out[i] = answer{member: m, reply: r, err: err}
		}()
	}
	wg.Wait()
	return out
}

// callEach sends each member its message at once, like callAll, and hands
// each answer to each as it arrives; when each returns false the calls
// still out are cancelled and callEach returns.
func (c *Coordinator) callEach(ctx context.Context, members []ids.MemberID, msg func(ids.MemberID) *control.Message, each func(answer) bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	answers := make(chan answer, len(members))
	for _, m := range members {
		go func() {
			r, err := c.call(ctx, m, msg(m))
			answers <- answer{member: m, reply: r, err: err}
		}()
	}
	for range members {
		if !each(<-answers) {
			return
		}
	}
}

// probe asks each member for its status; a member that does not answer
// within the probe timeout maps to nil.
func (c *Coordinator) probe(ctx context.Context, members []ids.MemberID) map[ids.MemberID]*control.Status {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Probe)
	defer cancel()
	out := map[ids.MemberID]*control.Status{}
	for _, a := range c.callAll(ctx, members, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypeStatus, Status: &control.StatusQuery{}}
	}) {
		if a.err == nil && a.reply.Status != nil {
			out[a.member] = a.reply.Status
		} else {
			out[a.member] = nil
		}
	}
	return out
}

// configured returns the configured members in id order.
func (c *Coordinator) configured() []ids.MemberID {
	out := make([]ids.MemberID, 0, len(c.roles))
	for m := range c.roles {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// push sends m to every configured member and reports each answer.
func (c *Coordinator) push(ctx context.Context, m *control.Message) []api.MemberAck {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose)
	defer cancel()
	var acks []api.MemberAck
	for _, a := range c.callAll(ctx, c.configured(), func(ids.MemberID) *control.Message { return m }) {
		ack := api.MemberAck{Member: a.member}
		switch {
		case a.err != nil:
			ack.RuleID, ack.Reason = "unreachable", a.err.Error()
		case a.reply.Refusal != nil:
			ack.RuleID, ack.Reason = a.reply.Refusal.RuleID, a.reply.Refusal.Reason
		default:
			ack.Accepted = true
		}
		acks = append(acks, ack)
	}
	return acks
}

// handleControl serves the control messages a coordinator receives:
// approvals and denials from guardian members, and freezes from any
// member (which the coordinator passes on to every member).
func (c *Coordinator) handleControl(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
	member := ids.MemberID(from.String())
	refuse := func(rule, format string, args ...any) ([]byte, error) {
		return control.EncodeReply(&control.Reply{Refusal: &control.Refusal{Member: c.p2p.Self(), RuleID: rule, Reason: fmt.Sprintf(format, args...)}})
	}
	if c.p2p.PeerKind(from) != p2p.PeerMember {
		return refuse("peer", "%s is not a member", member)
	}
	m, err := control.Decode(req)
	if err != nil {
		return refuse("request", "%v", err)
	}
	switch m.Type {
	case control.TypeApproval:
		if c.roles[member] != ids.RoleGuardian {
			return refuse("peer", "approvals come from guardian members; %s is %s", member, c.roles[member])
		}
		var err error
		switch {
		case m.Approval.Approval != nil && m.Approval.Denial == nil:
			_, err = c.addApproval(ctx, m.Approval.Approval.RequestID, *m.Approval.Approval)
		case m.Approval.Denial != nil && m.Approval.Approval == nil:
			_, err = c.addDenial(ctx, m.Approval.Denial.RequestID, *m.Approval.Denial)
		default:
			return refuse("request", "an approval message carries exactly one approval or denial")
		}
		if err != nil {
			return refuse("approval", "%s", errText(err))
		}
		return control.EncodeReply(&control.Reply{})
	case control.TypeFreeze, control.TypeUnfreeze:
		// A node sends a freeze to every member itself, and an unfreeze
		// to the coordinators only (members take one from coordinators
		// alone). Either way the coordinator checks it and carries it to
		// every member, after answering, so the sender is not held up.
		p := c.pol.current()
		if p == nil {
			return refuse("policy", "the coordinator has no policy yet")
		}
		var err error
		if m.Type == control.TypeFreeze {
			pf, sig := m.Freeze.Policy()
			err = checkFreeze(p, pf, sig)
		} else {
			pu, sigs := m.Unfreeze.Policy()
			err = checkUnfreeze(p, pu, sigs)
		}
		if err != nil {
			return refuse(string(m.Type), "%v", err)
		}
		c.pushLater(m)
		return control.EncodeReply(&control.Reply{})
	}
	return refuse("request", "a coordinator does not serve %s messages", m.Type)
}

// pushLater pushes m to every member in the background.
func (c *Coordinator) pushLater(m *control.Message) {
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		acks := c.push(c.ctx, m)
		c.audit(c.ctx, store.Entry{Kind: store.AuditPolicy, Decision: string(m.Type), Fields: map[string]string{"acknowledged": ackList(acks), "from": "member"}})
	}()
}
