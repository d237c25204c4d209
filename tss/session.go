package tss

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
	"google.golang.org/protobuf/proto"
)

// Session is the pure core of one protocol run at one node, in the manner of
// etcd's raft RawNode: the caller feeds it Start, Step and Tick, and each
// returns a Ready with the messages to send and, at the end, the outcome.
// It owns no goroutine, clock or socket and is not safe for concurrent use.
//
// tss-lib parties write to buffered channels that the session drains after
// each call into tss-lib returns, so tss-lib never blocks on its send path
// and Update is never called from it.
type Session struct {
	id      ids.SessionID
	params  [32]byte // hash of the request; see envelope.Params
	proto   protocol
	self    ids.MemberID
	maxIdle int // ticks without progress before the session times out
	maxPre  int // messages held before Start

	committees map[tag]tss.SortedPartyIDs
	parties    map[partyRef]*tss.PartyID
	refs       map[*tss.PartyID]partyRef
	local      []*localParty
	out        chan tss.Message
	hard       *hardener

	seen    map[dedupKey][32]byte // payload hash of every message accepted
	recv    map[recvKey]bool      // which types each party sent to each of our committees
	dups    int                   // exact duplicates dropped
	held    []heldMessage         // waiting for an earlier message of their sender
	pre     []Incoming            // stepped before Start
	loop    []Incoming            // from one local party to another
	started bool
	over    bool
	idle    int
	ready   Ready

	noticed bool                    // this node sent a stall notice since its last progress
	notices map[ids.MemberID]notice // what each member last said it waits for

	pre4 *presignPhase // a presignature: rounds 1-4 park, 5-9 run later; see presign.go
}

// Ready is what a call into a Session hands back.
type Ready struct {
	Messages []Outbound    // to send, in order
	Done     bool          // every local party finished; read the result
	Parked   bool          // a presignature finished rounds 1-4 and holds its round-4 messages
	Err      *SessionError // the session failed; final for this attempt
}

// Outbound is one message to send: to one member, or broadcast.
type Outbound struct {
	To        ids.MemberID
	Broadcast bool
	Payload   []byte
}

type protocol uint8

const (
	protoKeygen protocol = iota + 1
	protoSign
	protoReshare
)

func (p protocol) String() string {
	return [...]string{"", "keygen", "signing", "resharing"}[p]
}

// partyRef names a party of the session: a member in one committee.
type partyRef struct {
	Member ids.MemberID
	Tag    tag
}

type dedupKey struct {
	from partyRef
	typ  string
	to   toMask
}

type recvKey struct {
	from partyRef
	typ  string
	to   tag
}

type heldMessage struct {
	from partyRef
	to   toMask
	msg  tss.ParsedMessage
}

type localParty struct {
	ref   partyRef
	party tss.Party
	poll  func() bool // drains the party's end channel; true once finished
	done  bool
}

type sessionConfig struct {
	id      ids.SessionID
	params  [32]byte
	proto   protocol
	self    ids.MemberID
	maxIdle int
	parties int // in all committees of the session
	hard    *hardener
}

// maxEarly bounds the messages a Session holds when stepped before Start.
const maxEarly = 256

func newSession(cfg sessionConfig) *Session {
	return &Session{
		id:         cfg.id,
		params:     cfg.params,
		proto:      cfg.proto,
		self:       cfg.self,
		maxIdle:    max(cfg.maxIdle, 1),
		maxPre:     maxEarly,
		committees: map[tag]tss.SortedPartyIDs{},
		parties:    map[partyRef]*tss.PartyID{},
		refs:       map[*tss.PartyID]partyRef{},
		// tss-lib writes to out while holding its lock, on the goroutine
		// that drains it: it must hold everything one call can emit, which
		// is at most one message per party per round, over every round a
		// call can run through (nine in signing).
		out:     make(chan tss.Message, 10*(cfg.parties+1)),
		hard:    cfg.hard,
		seen:    map[dedupKey][32]byte{},
		recv:    map[recvKey]bool{},
		notices: map[ids.MemberID]notice{},
	}
}

// addCommittee registers the parties of one committee, with party keys of
// generation gen.
func (s *Session) addCommittee(t tag, members []ids.MemberID, gen uint32) tss.SortedPartyIDs {
	pids := make(tss.UnSortedPartyIDs, len(members))
	for i, m := range members {
		pids[i] = tss.NewPartyID(fmt.Sprintf("%s/%s", m, t), string(m), partyKey(m, gen))
	}
	sorted := tss.SortPartyIDs(pids)
	for i, pid := range sorted {
		ref := partyRef{Member: ids.MemberID(pid.Moniker), Tag: t}
		s.parties[ref] = sorted[i]
		s.refs[sorted[i]] = ref
	}
	s.committees[t] = sorted
	return sorted
}

func (s *Session) addLocal(t tag, party tss.Party, poll func() bool) {
	s.local = append(s.local, &localParty{ref: partyRef{s.self, t}, party: party, poll: poll})
}

// members lists every member of the session, self included.
func (s *Session) members() []ids.MemberID {
	var out []ids.MemberID
	for ref := range s.parties {
		out = append(out, ref.Member)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ErrPanic marks a session that ended because tss-lib (or the engine)
// panicked on this node's goroutine: the session fails, the process lives.
var ErrPanic = errors.New("tss: panic in the protocol")

// catch turns a panic during a call into the session into its failure.
// It does not reach the goroutines tss-lib starts itself: the hardening
// checks keep panicking values away from those.
func (s *Session) catch(rd *Ready) {
	r := recover()
	if r == nil {
		return
	}
	s.over = false // fail even if the panic came after the end was marked
	s.ready = Ready{}
	s.fail(&SessionError{Kind: FailLocal, Err: fmt.Errorf("%w: %v", ErrPanic, r)})
	*rd = s.take()
}

// Start starts the local parties and replays what was stepped before.
func (s *Session) Start() (rd Ready) {
	defer s.catch(&rd)
	if s.started || s.over {
		return s.take()
	}
	s.started = true
	for _, lp := range s.local {
		if err := lp.party.Start(); err != nil {
			s.failProtocol(err)
			return s.take()
		}
		s.drain()
	}
	pre := s.pre
	s.pre = nil
	for _, in := range pre {
		if s.over {
			break
		}
		s.receive(in)
	}
	s.flushLoop()
	return s.take()
}

// Step takes one message from the transport.
func (s *Session) Step(in Incoming) (rd Ready) {
	defer s.catch(&rd)
	if s.over {
		return Ready{}
	}
	if !s.started {
		// Bounded: a member that floods a session before it starts only
		// loses its own messages.
		if len(s.pre) < s.maxPre {
			s.pre = append(s.pre, in)
		}
		return Ready{}
	}
	s.receive(in)
	s.flushLoop()
	return s.take()
}

// Tick advances the session's clock; after maxIdle ticks without an
// accepted message the session fails naming whom it was waiting for.
//
// A member stalled by another (one that withheld a message from it alone)
// sends nothing more, so the rest would name it, the victim. Halfway to
// the timeout every stalled member therefore broadcasts a stall notice
// naming whom it waits for, and at the timeout a member it waits for that
// sent one is replaced by the members that one named.
func (s *Session) Tick() (rd Ready) {
	defer s.catch(&rd)
	if s.over || !s.started {
		return Ready{}
	}
	s.idle++
	if s.idle >= s.maxIdle {
		waiting, missing := s.blameWaiting()
		s.fail(&SessionError{Kind: FailTimeout, Waiting: waiting,
			Err: fmt.Errorf("no progress in %d ticks%s", s.idle, missing)})
		return s.take()
	}
	if !s.noticed && s.idle >= (s.maxIdle+1)/2 {
		s.noticed = true
		s.sendNotice()
	}
	return s.take()
}

const maxNotice = 4096

// notice is what a stalled member says: the protocol step it is stuck at
// and whom it waits for there.
type notice struct {
	step    int
	waiting []ids.MemberID
}

func (s *Session) sendNotice() {
	if len(s.local) == 0 {
		return
	}
	w := s.missing()
	if len(w.ids) == 0 {
		return
	}
	b := fmt.Appendf(nil, "%d", w.step)
	for _, id := range w.ids {
		b = append(b, '\n')
		b = append(b, id...)
	}
	if len(b) > maxNotice {
		return
	}
	payload := envelope{Session: s.id, Params: s.params, From: s.local[0].ref.Tag, Broadcast: true, Notice: true, Wire: b}.encode()
	s.ready.Messages = append(s.ready.Messages, Outbound{Broadcast: true, Payload: payload})
}

// receiveNotice records what a member says it waits for.
func (s *Session) receiveNotice(from ids.MemberID, body []byte) {
	if len(body) > maxNotice {
		s.misbehaved(from, "stall notice of %d bytes", len(body))
		return
	}
	parts := bytes.Split(body, []byte{'\n'})
	step, err := strconv.Atoi(string(parts[0]))
	if err != nil || step < 1 || step > maxStep {
		s.misbehaved(from, "malformed stall notice")
		return
	}
	members := s.members()
	n := notice{step: step}
	for _, part := range parts[1:] {
		id := ids.MemberID(part)
		if !slices.Contains(members, id) {
			s.misbehaved(from, "stall notice names %q, not a member of the session", id)
			return
		}
		n.waiting = append(n.waiting, id)
	}
	s.notices[from] = n
}

// blameWaiting is WaitingFor with each member excused that sent a stall
// notice showing it stuck at an earlier step than the one whose message
// is missing: it could not have sent that message, and the members it
// waits for (at its earlier step) are followed instead, never this node.
// These are the members that actually failed to send, as far as this
// node can tell. A member that lies in its notice can move the blame from
// itself onto the members it names (a direct message it claims to lack
// cannot be checked here); the error names it as excused, and only the
// reports of every member together settle it.
func (s *Session) blameWaiting() ([]ids.MemberID, string) {
	w := s.missing()
	var out []ids.MemberID
	var excused []string
	visited := map[ids.MemberID]bool{s.self: true}
	var walk func(id ids.MemberID, step int)
	walk = func(id ids.MemberID, step int) {
		if visited[id] {
			return
		}
		visited[id] = true
		n, ok := s.notices[id]
		var next []ids.MemberID
		if ok && n.step < step {
			for _, x := range n.waiting {
				if x != s.self && x != id {
					next = append(next, x)
				}
			}
		}
		if len(next) == 0 {
			out = append(out, id)
			return
		}
		excused = append(excused, fmt.Sprintf("%s is stalled at step %d waiting for %s", id, n.step, joinIDs(n.waiting)))
		for _, x := range next {
			walk(x, n.step)
		}
	}
	for _, id := range w.ids {
		walk(id, w.step)
	}
	slices.Sort(out)
	desc := ""
	if len(w.what) > 0 {
		desc = "; missing " + strings.Join(w.what, ", ")
	}
	if len(excused) > 0 {
		desc += "; " + strings.Join(excused, "; ")
	}
	return slices.Compact(out), desc
}

// WaitingFor lists the members whose messages the unfinished local parties
// still need: for each, the senders of a message of the first round it
// has not received in full. (tss-lib's own list is no guide: signing
// round 1 stops at the first sender it lacks and lists every later one.)
func (s *Session) WaitingFor() []ids.MemberID { return s.missing().ids }

type waiting struct {
	ids  []ids.MemberID
	step int      // the earliest protocol step a local party is stuck at
	what []string // the missing messages, for the error
}

func (s *Session) missing() waiting {
	var w waiting
	add := func(id ids.MemberID) {
		if id != s.self && !slices.Contains(w.ids, id) {
			w.ids = append(w.ids, id)
		}
	}
	for _, lp := range s.local {
		if lp.done {
			continue
		}
		found := false
		for _, r := range roundsFor(s.proto, lp.ref.Tag) {
			for _, pid := range s.committees[r.from] {
				ref := s.refs[pid]
				if ref == lp.ref {
					continue
				}
				for _, typ := range r.types {
					if !s.recv[recvKey{ref, typ, lp.ref.Tag}] {
						found = true
						add(ref.Member)
						w.what = append(w.what, fmt.Sprintf("%s from %s", typ[strings.LastIndex(typ, ".")+1:], ref.Member))
						break
					}
				}
			}
			if found {
				if w.step == 0 || r.step < w.step {
					w.step = r.step
				}
				break
			}
		}
		if found {
			continue
		}
		// Everything arrived and the party has not finished: fall back to
		// tss-lib's own view.
		for _, pid := range lp.party.WaitingFor() {
			if ref, ok := s.refs[pid]; ok {
				add(ref.Member)
			}
		}
		if w.step == 0 {
			w.step = maxStep
		}
	}
	slices.Sort(w.ids)
	return w
}

// round is what a party must receive, from one committee, before tss-lib
// moves it on; step orders the rounds of both committees of a reshare.
type round struct {
	step  int
	from  tag
	types []string
}

const maxStep = 10

func typeOf(c proto.Message) string { return string(proto.MessageName(c)) }

var (
	keygenRounds = []round{
		{1, tagMain, []string{typeOf(&keygen.KGRound1Message{})}},
		{2, tagMain, []string{typeOf(&keygen.KGRound2Message1{}), typeOf(&keygen.KGRound2Message2{})}},
		{3, tagMain, []string{typeOf(&keygen.KGRound3Message{})}},
	}
	signRounds = []round{
		{1, tagMain, []string{typeOf(&signing.SignRound1Message1{}), typeOf(&signing.SignRound1Message2{})}},
		{2, tagMain, []string{typeOf(&signing.SignRound2Message{})}},
		{3, tagMain, []string{typeOf(&signing.SignRound3Message{})}},
		{4, tagMain, []string{typeOf(&signing.SignRound4Message{})}},
		{5, tagMain, []string{typeOf(&signing.SignRound5Message{})}},
		{6, tagMain, []string{typeOf(&signing.SignRound6Message{})}},
		{7, tagMain, []string{typeOf(&signing.SignRound7Message{})}},
		{8, tagMain, []string{typeOf(&signing.SignRound8Message{})}},
		{9, tagMain, []string{typeOf(&signing.SignRound9Message{})}},
	}
	reshareOldRounds = []round{
		{2, tagNew, []string{typeOf(&resharing.DGRound2Message2{})}},
		{4, tagNew, []string{typeOf(&resharing.DGRound4Message2{})}},
	}
	reshareNewRounds = []round{
		{1, tagOld, []string{typeOf(&resharing.DGRound1Message{})}},
		{2, tagNew, []string{typeOf(&resharing.DGRound2Message1{})}},
		{3, tagOld, []string{typeOf(&resharing.DGRound3Message1{}), typeOf(&resharing.DGRound3Message2{})}},
		{4, tagNew, []string{typeOf(&resharing.DGRound4Message1{}), typeOf(&resharing.DGRound4Message2{})}},
	}
)

func roundsFor(p protocol, t tag) []round {
	switch {
	case p == protoKeygen:
		return keygenRounds
	case p == protoSign:
		return signRounds
	case t == tagOld:
		return reshareOldRounds
	}
	return reshareNewRounds
}

func (s *Session) take() Ready {
	r := s.ready
	s.ready = Ready{}
	return r
}

func (s *Session) fail(err *SessionError) {
	if s.over {
		return
	}
	err.Session = s.id
	s.over = true
	s.ready.Err = err
	s.ready.Messages = nil
}

func (s *Session) misbehaved(who ids.MemberID, format string, args ...any) {
	s.fail(&SessionError{Kind: FailMisbehaviour, Culprits: []ids.MemberID{who}, Err: fmt.Errorf(format, args...)})
}

// failProtocol ends the session on a tss-lib error, naming tss-lib's
// culprits except this node: tss-lib names the local party for failures it
// cannot attribute (reshare round 4 "V_0 != y", signing round 9), and a node
// that blamed itself would be excluded from its own key.
func (s *Session) failProtocol(err *tss.Error) {
	var culprits []ids.MemberID
	for _, pid := range err.Culprits() {
		if ref, ok := s.refs[pid]; ok && ref.Member != s.self && !slices.Contains(culprits, ref.Member) {
			culprits = append(culprits, ref.Member)
		}
	}
	slices.Sort(culprits)
	s.fail(&SessionError{Kind: FailProtocol, Culprits: culprits, Err: err})
}

// receive checks one message and hands it to the local parties it is for.
func (s *Session) receive(in Incoming) {
	env, err := decodeEnvelope(in.Payload)
	if err != nil {
		s.misbehaved(in.From, "%v", err)
		return
	}
	if env.Session != s.id {
		s.misbehaved(in.From, "message bound to session %s", env.Session)
		return
	}
	if env.Params != s.params {
		// Either the sender or this node was given another request; only
		// the coordinator that gave them can be told apart, not here.
		s.fail(&SessionError{Kind: FailProtocol, Err: fmt.Errorf("member %s was asked to run a different request (parameters %x, ours %x)", in.From, env.Params[:6], s.params[:6])})
		return
	}
	from := partyRef{Member: in.From, Tag: env.From}
	pid, ok := s.parties[from]
	if !ok {
		s.misbehaved(in.From, "sender is not in the %s committee of this session", env.From)
		return
	}
	if env.Broadcast != in.Broadcast {
		s.misbehaved(in.From, "message marked broadcast=%v was sent with broadcast=%v", env.Broadcast, in.Broadcast)
		return
	}
	if env.Notice {
		s.receiveNotice(in.From, env.Wire)
		return
	}
	msg, err := tss.ParseWireMessage(env.Wire, pid, env.Broadcast)
	if err != nil {
		s.misbehaved(in.From, "undecodable %s message: %v", s.proto, err)
		return
	}
	rule, ok := s.ruleFor(msg.Content())
	if !ok {
		s.misbehaved(in.From, "unexpected message type %s in %s", msg.Type(), s.proto)
		return
	}
	if s.pre4 != nil {
		if err := s.pre4.admits(msg.Content()); err != nil {
			s.misbehaved(in.From, "%v", err)
			return
		}
	}
	if rule != (msgRule{broadcast: env.Broadcast, from: env.From, to: env.To}) {
		s.misbehaved(in.From, "message %s has routing broadcast=%v from=%s to=%b, want broadcast=%v from=%s to=%b",
			msg.Type(), env.Broadcast, env.From, env.To, rule.broadcast, rule.from, rule.to)
		return
	}
	// tss-lib keeps the last message per sender and round and does not see
	// replays: drop exact duplicates, and treat a different payload under
	// the same key as misbehaviour.
	key := dedupKey{from: from, typ: msg.Type(), to: env.To}
	sum := sha256.Sum256(in.Payload)
	if prev, ok := s.seen[key]; ok {
		if prev != sum {
			s.misbehaved(in.From, "two different %s messages", msg.Type())
			return
		}
		s.dups++
		return
	}
	s.seen[key] = sum
	for _, t := range []tag{tagMain, tagOld, tagNew} {
		if env.To.has(t) {
			s.recv[recvKey{from, msg.Type(), t}] = true
		}
	}
	if !msg.ValidateBasic() {
		s.misbehaved(in.From, "%s message fails basic validation", msg.Type())
		return
	}
	s.admit(heldMessage{from: from, to: env.To, msg: msg})
}

// admit runs the hardening checks and delivers, then retries held messages
// whose prerequisites may have arrived.
func (s *Session) admit(h heldMessage) {
	if !s.check(h) {
		return
	}
	for progress := true; progress && !s.over; {
		progress = false
		held := s.held
		s.held = nil
		for _, m := range held {
			if s.over {
				return
			}
			before := len(s.held)
			s.check(m)
			if len(s.held) == before {
				progress = true
			}
		}
	}
}

// check returns false only when h is held back or the session failed.
func (s *Session) check(h heldMessage) bool {
	switch err := s.hard.check(h.from, h.msg); {
	case err == nil:
	case err == errNotYet:
		s.held = append(s.held, h)
		return false
	case errors.Is(err, errNoCulprit):
		s.fail(&SessionError{Kind: FailProtocol, Err: err})
		return false
	default:
		s.misbehaved(h.from.Member, "%v", err)
		return false
	}
	s.deliver(h)
	return !s.over
}

func (s *Session) deliver(h heldMessage) {
	for _, lp := range s.local {
		if s.over {
			return
		}
		if !h.to.has(lp.ref.Tag) || lp.ref == h.from {
			continue
		}
		s.idle, s.noticed = 0, false // progress: a local party took a message
		if _, err := lp.party.Update(h.msg); err != nil {
			s.failProtocol(err)
			return
		}
		s.drain()
	}
}

// drain collects what the parties wrote to their channels.
func (s *Session) drain() {
	for !s.over {
		select {
		case m := <-s.out:
			s.route(m)
			continue
		default:
		}
		break
	}
	allDone := len(s.local) > 0
	for _, lp := range s.local {
		if !lp.done && lp.poll() {
			lp.done = true
		}
		allDone = allDone && lp.done
	}
	if allDone && !s.over {
		s.over = true
		s.ready.Done = true
	}
}

func (s *Session) route(m tss.Message) {
	wire, r, err := m.WireBytes()
	if err != nil {
		s.fail(&SessionError{Kind: FailLocal, Err: fmt.Errorf("encode %s: %w", m.Type(), err)})
		return
	}
	from, ok := s.refs[r.From]
	if !ok {
		s.fail(&SessionError{Kind: FailLocal, Err: fmt.Errorf("message from unknown local party %s", r.From)})
		return
	}
	if pm, ok := m.(tss.ParsedMessage); ok {
		s.hard.sent(from, pm)
	}
	if s.pre4 != nil {
		before := len(s.ready.Messages)
		defer s.pre4.routed(s, m, before)
	}
	to := s.maskOf(r)
	recipients := r.To
	if recipients == nil {
		for t, members := range s.committees {
			if to.has(t) {
				recipients = append(recipients, members...)
			}
		}
	}
	payload := envelope{Session: s.id, Params: s.params, From: from.Tag, To: to, Broadcast: r.IsBroadcast, Wire: wire}.encode()
	local, remote := false, false
	for _, pid := range recipients {
		ref, ok := s.refs[pid]
		switch {
		case !ok || ref == from:
		case ref.Member == s.self:
			local = true
		case r.IsBroadcast:
			remote = true
		default:
			s.ready.Messages = append(s.ready.Messages, Outbound{To: ref.Member, Payload: payload})
		}
	}
	if remote {
		s.ready.Messages = append(s.ready.Messages, Outbound{Broadcast: true, Payload: payload})
	}
	if local {
		s.loop = append(s.loop, Incoming{From: s.self, Broadcast: r.IsBroadcast, Payload: payload})
	}
}

// flushLoop delivers messages between this node's own parties (a member of
// both committees of a reshare) after the call that produced them returned.
func (s *Session) flushLoop() {
	for len(s.loop) > 0 && !s.over {
		in := s.loop[0]
		s.loop = s.loop[1:]
		s.receive(in)
	}
	s.loop = nil
}

func (s *Session) maskOf(r *tss.MessageRouting) toMask {
	if s.proto != protoReshare {
		return maskOf(tagMain)
	}
	switch {
	case r.IsToOldAndNewCommittees:
		return maskOf(tagOld, tagNew)
	case r.IsToOldCommittee:
		return maskOf(tagOld)
	}
	return maskOf(tagNew)
}

// msgRule is how a message type must travel.
type msgRule struct {
	broadcast bool
	from      tag
	to        toMask
}

func (s *Session) ruleFor(c tss.MessageContent) (msgRule, bool) {
	main := maskOf(tagMain)
	bcast := msgRule{true, tagMain, main}
	direct := msgRule{false, tagMain, main}
	switch s.proto {
	case protoKeygen:
		switch c.(type) {
		case *keygen.KGRound1Message, *keygen.KGRound2Message2, *keygen.KGRound3Message:
			return bcast, true
		case *keygen.KGRound2Message1:
			return direct, true
		}
	case protoSign:
		switch c.(type) {
		case *signing.SignRound1Message1, *signing.SignRound2Message:
			return direct, true
		case *signing.SignRound1Message2, *signing.SignRound3Message, *signing.SignRound4Message,
			*signing.SignRound5Message, *signing.SignRound6Message, *signing.SignRound7Message,
			*signing.SignRound8Message, *signing.SignRound9Message:
			return bcast, true
		}
	case protoReshare:
		toNew, toOld := maskOf(tagNew), maskOf(tagOld)
		switch c.(type) {
		case *resharing.DGRound1Message, *resharing.DGRound3Message2:
			return msgRule{true, tagOld, toNew}, true
		case *resharing.DGRound3Message1:
			return msgRule{false, tagOld, toNew}, true
		case *resharing.DGRound2Message1:
			return msgRule{true, tagNew, toNew}, true
		case *resharing.DGRound2Message2:
			return msgRule{true, tagNew, toOld}, true
		case *resharing.DGRound4Message1:
			return msgRule{false, tagNew, toNew}, true
		case *resharing.DGRound4Message2:
			return msgRule{true, tagNew, maskOf(tagOld, tagNew)}, true
		}
	}
	return msgRule{}, false
}
