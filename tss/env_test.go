package tss

import (
	"crypto/sha256"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// env drives the sessions of every member of one protocol run by hand, in
// the manner of etcd's rafttest.InteractionEnv: no transport, clock or
// goroutine. Messages wait in one queue until a command delivers, drops,
// duplicates, reorders or forges them, and everything that happens is
// written to out for the golden files (datadriven_test.go).
type env struct {
	t       testing.TB
	out     strings.Builder
	nodes   map[ids.MemberID]*envNode
	order   []ids.MemberID // every member, sorted
	queue   []*inflight
	seq     int
	runs    int                                            // sessions created, for their ids
	forgers map[ids.MemberID]func(tss.MessageContent) bool // rewrite what these members send
	filter  func(m *inflight) []*inflight                  // sees every message sent; nil keeps it
	shares  map[ids.MemberID]*Share                        // from the last keygen or reshare
	maxIdle int
}

type envNode struct {
	id      ids.MemberID
	s       *Session
	started bool
	crashed bool
	over    bool
	rd      Ready // the outcome: Done or Err, with the result
}

// inflight is one message on its way to one member.
type inflight struct {
	seq       int
	from, to  ids.MemberID
	broadcast bool
	payload   []byte
	note      string
}

func (m *inflight) String() string {
	s := fmt.Sprintf("#%d %s", m.seq, DescribeMessage(m.from, m.to, m.broadcast, m.payload))
	if m.note != "" {
		s += " (" + m.note + ")"
	}
	return s
}

func newEnv(t testing.TB) *env {
	return &env{t: t, nodes: map[ids.MemberID]*envNode{}, forgers: map[ids.MemberID]func(tss.MessageContent) bool{}, maxIdle: 10}
}

func (e *env) printf(format string, args ...any) { fmt.Fprintf(&e.out, format, args...) }

// take returns what was written since the last call.
func (e *env) take() string {
	s := e.out.String()
	e.out.Reset()
	return s
}

// sessionID is the next session's id: fixed, so golden output is stable.
func (e *env) sessionID() ids.SessionID {
	e.runs++
	sum := sha256.Sum256(fmt.Appendf(nil, "tss interaction %d", e.runs))
	return ids.SessionID(sum[:16])
}

// reset forgets the previous run's sessions and queue; forgers and the
// filter stay.
func (e *env) reset() {
	e.nodes, e.order, e.queue = map[ids.MemberID]*envNode{}, nil, nil
}

// inject queues m as if its sender had sent it, past the filter.
func (e *env) inject(m *inflight) {
	e.seq++
	m.seq = e.seq
	e.printf("  sent %s\n", m)
	e.queue = append(e.queue, m)
}

func (e *env) add(id ids.MemberID, s *Session) {
	e.nodes[id] = &envNode{id: id, s: s}
	e.order = append(e.order, id)
	slices.Sort(e.order)
}

func memberOf(id ids.MemberID) Member {
	for _, r := range []ids.Role{ids.RoleAgent, ids.RolePolicy, ids.RoleGuardian} {
		if strings.HasPrefix(string(id), string(r)+"-") {
			return Member{ID: id, Role: r}
		}
	}
	return Member{ID: id, Role: ids.RoleGuardian}
}

// keygen creates a key generation among members, member i using fixture
// first+i.
func (e *env) keygen(members []ids.MemberID, threshold, first int) error {
	e.reset()
	c := Committee{Threshold: threshold}
	for _, id := range members {
		c.Members = append(c.Members, memberOf(id))
	}
	sid := e.sessionID()
	for i, id := range members {
		s, err := newKeygenSession(id, KeygenRequest{Session: sid, Committee: c, PreParams: fixture(e.t, first+i)}, e.maxIdle)
		if err != nil {
			return err
		}
		e.add(id, s)
	}
	return nil
}

// sign creates a signing session among signers with shares.
func (e *env) sign(shares map[ids.MemberID]*Share, signers []ids.MemberID, digest [32]byte, path []uint32) error {
	e.reset()
	sid := e.sessionID()
	for _, id := range signers {
		s, err := newSignSession(id, SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digest, Path: path}, e.maxIdle)
		if err != nil {
			return err
		}
		e.add(id, s)
	}
	return nil
}

// reshare creates a reshare of the key of shares from oldSigners to the
// committee of newMembers, new member i using fixture first+i.
func (e *env) reshare(shares map[ids.MemberID]*Share, oldSigners, newMembers []ids.MemberID, threshold, first int) error {
	var key KeyInfo
	for _, id := range oldSigners {
		if sh := shares[id]; sh != nil {
			key = sh.Key()
		}
	}
	e.reset()
	nc := Committee{Threshold: threshold}
	for _, id := range newMembers {
		nc.Members = append(nc.Members, memberOf(id))
	}
	everyone := slices.Clone(oldSigners)
	for _, id := range newMembers {
		if !slices.Contains(everyone, id) {
			everyone = append(everyone, id)
		}
	}
	sid := e.sessionID()
	for _, id := range everyone {
		req := ReshareRequest{Session: sid, Key: key, OldSigners: oldSigners, NewCommittee: nc}
		if slices.Contains(oldSigners, id) {
			req.OldShare = shares[id]
		}
		if i := slices.Index(newMembers, id); i >= 0 {
			req.PreParams = fixture(e.t, first+i)
		}
		s, _, err := newReshareSession(id, req, e.maxIdle)
		if err != nil {
			return err
		}
		e.add(id, s)
	}
	return nil
}

// start starts the given members' sessions (every unstarted one if none).
func (e *env) start(members ...ids.MemberID) {
	if len(members) == 0 {
		members = e.order
	}
	for _, id := range members {
		n := e.nodes[id]
		if n == nil || n.started || n.crashed {
			continue
		}
		n.started = true
		e.printf("%s starts\n", id)
		e.handle(n, n.s.Start())
	}
}

// handle queues what n's session asked to send and records its outcome.
func (e *env) handle(n *envNode, rd Ready) {
	for _, o := range rd.Messages {
		var to []ids.MemberID
		if o.Broadcast {
			for _, id := range n.s.members() {
				if id != n.id {
					to = append(to, id)
				}
			}
		} else {
			to = []ids.MemberID{o.To}
		}
		for _, id := range to {
			e.seq++
			m := &inflight{seq: e.seq, from: n.id, to: id, broadcast: o.Broadcast, payload: o.Payload}
			msgs := []*inflight{m}
			if f := e.forgers[n.id]; f != nil {
				e.rewrite(m, f)
			}
			if e.filter != nil {
				msgs = e.filter(m)
			}
			for _, m := range msgs {
				e.printf("  sent %s\n", m)
			}
			e.queue = append(e.queue, msgs...)
		}
	}
	if rd.Err != nil {
		n.over, n.rd = true, rd
		e.printf("  %s %s\n", n.id, describeFailure(rd.Err))
	}
	if rd.Done {
		n.over, n.rd = true, rd
		e.printf("  %s done: %s\n", n.id, e.describeResult(n, rd))
	}
}

func describeFailure(err *SessionError) string {
	s := fmt.Sprintf("failed (%s)", err.Kind)
	if len(err.Culprits) > 0 {
		s += " culprits " + joinIDs(err.Culprits)
	}
	if len(err.Waiting) > 0 {
		s += " waiting for " + joinIDs(err.Waiting)
	}
	return s + ": " + err.Err.Error()
}

func (e *env) describeResult(n *envNode, rd Ready) string {
	switch {
	case rd.Signature != nil:
		return "signature verifies"
	case rd.Share != nil:
		e.setShare(n.id, rd.Share)
		k := rd.Share.Key()
		return fmt.Sprintf("share of %d-of-%d key, generation %d", k.Committee.Threshold+1, len(k.Committee.Members), k.Generation)
	case rd.ShareErr != nil:
		return "new share refused: " + rd.ShareErr.Error()
	}
	return "no new share (old committee only)"
}

// setShare keeps the shares of the last key made, for a later sign or
// reshare command.
func (e *env) setShare(id ids.MemberID, sh *Share) {
	if e.shares != nil {
		for _, old := range e.shares {
			if old.Key().Generation != sh.Key().Generation || old.Key().Address != sh.Key().Address {
				e.shares = nil
			}
			break
		}
	}
	if e.shares == nil {
		e.shares = map[ids.MemberID]*Share{}
	}
	e.shares[id] = sh
}

// deliver hands m to its recipient.
func (e *env) deliver(m *inflight) {
	n := e.nodes[m.to]
	switch {
	case n == nil:
		e.printf("deliver %s: no such member\n", m)
		return
	case n.crashed:
		e.printf("deliver %s: lost, %s crashed\n", m, m.to)
		return
	}
	e.printf("deliver %s\n", m)
	rd := n.s.Step(Incoming{From: m.from, Broadcast: m.broadcast, Payload: m.payload})
	if !n.started {
		e.printf("  held: %s has not started\n", m.to)
	}
	e.handle(n, rd)
}

// deliverAll delivers what is queued now, in order; what that sends waits.
func (e *env) deliverAll(match func(*inflight) bool) int {
	var now, rest []*inflight
	for _, m := range e.queue {
		if match(m) {
			now = append(now, m)
		} else {
			rest = append(rest, m)
		}
	}
	e.queue = rest
	for _, m := range now {
		e.deliver(m)
	}
	return len(now)
}

// stabilize delivers messages until none is left.
func (e *env) stabilize() {
	for len(e.queue) > 0 {
		m := e.queue[0]
		e.queue = e.queue[1:]
		e.deliver(m)
	}
}

// tick advances the clock of every running session (or those named) once.
func (e *env) tick(members ...ids.MemberID) {
	if len(members) == 0 {
		members = e.order
	}
	for _, id := range members {
		n := e.nodes[id]
		if n == nil || n.crashed || !n.started || n.over {
			continue
		}
		e.handle(n, n.s.Tick())
	}
}

// settle runs every session to its end: deliver everything, then tick the
// sessions still running until they finish or time out.
func (e *env) settle() {
	e.stabilize()
	for range e.maxIdle + 1 {
		if e.running() == 0 {
			return
		}
		e.tick()
		e.stabilize()
	}
}

func (e *env) running() int {
	n := 0
	for _, node := range e.nodes {
		if node.started && !node.crashed && !node.over {
			n++
		}
	}
	return n
}

func (e *env) crash(id ids.MemberID) {
	if n := e.nodes[id]; n != nil {
		n.crashed = true
		e.printf("%s crashed\n", id)
	}
}

// outcomes maps each member (but skip) to its error, nil when it finished.
func (e *env) outcomes(skip ids.MemberID) map[ids.MemberID]error {
	out := map[ids.MemberID]error{}
	for _, id := range e.order {
		n := e.nodes[id]
		if id == skip {
			continue
		}
		switch {
		case n.rd.Err != nil:
			out[id] = n.rd.Err
		case n.rd.Done:
			out[id] = nil
		default:
			out[id] = fmt.Errorf("%s did not finish", id)
		}
	}
	return out
}

func (e *env) status() {
	for _, id := range e.order {
		n := e.nodes[id]
		state := "running"
		switch {
		case n.crashed:
			state = "crashed"
		case !n.started:
			state = "not started"
		case n.rd.Done:
			state = "done"
		case n.rd.Err != nil:
			state = "failed"
		}
		if state == "running" || state == "not started" {
			if w := n.s.WaitingFor(); len(w) > 0 {
				state += ", waiting for " + joinIDs(w)
			}
		}
		e.printf("%s: %s\n", id, state)
	}
}

// rewrite replaces m's tss-lib content by what mutate makes of it, as a
// member that forges its own message would send it; it reports whether
// mutate changed anything.
func (e *env) rewrite(m *inflight, mutate func(tss.MessageContent) bool) bool {
	e.t.Helper()
	env, err := decodeEnvelope(m.payload)
	if err != nil || env.Notice {
		return false
	}
	dummy := tss.NewPartyID("x", "x", big.NewInt(1))
	dummy.Index = 0
	msg, err := tss.ParseWireMessage(env.Wire, dummy, env.Broadcast)
	if err != nil {
		e.t.Errorf("forge: %v", err)
		return false
	}
	c := msg.Content()
	if !mutate(c) {
		return false
	}
	a, err := anypb.New(c)
	if err != nil {
		e.t.Errorf("forge: %v", err)
		return false
	}
	if env.Wire, err = proto.Marshal(a); err != nil {
		e.t.Errorf("forge: %v", err)
		return false
	}
	m.payload, m.note = env.encode(), "forged"
	return true
}

// contentOf is the tss-lib content of a session payload, or nil.
func contentOf(payload []byte) tss.MessageContent {
	env, err := decodeEnvelope(payload)
	if err != nil || env.Notice {
		return nil
	}
	dummy := tss.NewPartyID("x", "x", big.NewInt(1))
	dummy.Index = 0
	msg, err := tss.ParseWireMessage(env.Wire, dummy, env.Broadcast)
	if err != nil {
		return nil
	}
	return msg.Content()
}

// withContent is payload with its tss-lib content replaced by c.
func withContent(t testing.TB, payload []byte, c tss.MessageContent) []byte {
	t.Helper()
	env, err := decodeEnvelope(payload)
	if err != nil {
		t.Fatalf("forge: %v", err)
	}
	a, err := anypb.New(c)
	if err != nil {
		t.Fatalf("forge: %v", err)
	}
	if env.Wire, err = proto.Marshal(a); err != nil {
		t.Fatalf("forge: %v", err)
	}
	return env.encode()
}
