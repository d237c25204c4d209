package p2p

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos-wallet/custos/ids"
)

// TestDataDriven drives the session machine and the pre-open buffer from
// the scripts in testdata/machine, one node's view at a time. Members and
// sessions have names (A, B, s1); keys derive from the names, so frames,
// signatures and hashes are the same on every run.
//
// Commands:
//
//	init self=A peers=(A,B,C,D) [window=16] [slots=1024] [queue=4096] [queue-bytes=N] [max-frame=N]
//	     [pending-frames=512] [pending-bytes=N] [pending-total=N] [pending-sessions=64] [ttl=30s]
//	open sess=s1 members=(A,B,C)        open a session (replays its buffered frames)
//	frame sess=s1 from=B kind=broadcast|direct seq=1 payload=P [to=A]
//	echo sess=s1 from=C of=B seq=1 payload=P [inner-sess=s1] [signer=B] [kind=broadcast] [raw]
//	send sess=s1 kind=broadcast|direct payload=P [to=B]   number one of our frames
//	read sess=s1                        the engine takes the oldest delivered message
//	end sess=s1                         the session ends for another reason (a failed send)
//	close sess=s1                       the engine leaves the session
//	tick advance=10s                    time passes: the pre-open buffer expires
//	state sess=s1 | pending             what the machine or the buffer holds
//
// A frame for a session not open goes to the pre-open buffer, as the node
// does; one for a session open goes to its machine. Every frame is taken
// as verified: the node checks signatures and senders before (see
// handleFrame, and the loopback tests).
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, filepath.Join("testdata", "machine"), func(t *testing.T, path string) {
		e := &ddEnv{}
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string { return e.run(t, td) })
	})
}

type ddEnv struct {
	t        *testing.T
	self     string
	keys     map[string]crypto.PrivKey
	names    map[peer.ID]string
	peers    []string // the node's peer set: members it admits
	cfg      Config
	sessions map[string]*ddSession
	pending  pendingBuffer
	now      time.Time
	replacer *strings.Replacer
}

type ddSession struct {
	id  ids.SessionID
	m   *machine
	out []action // delivered, not yet read
}

// ddKey derives the key of a named member.
func ddKey(name string) crypto.PrivKey {
	seed := sha256.Sum256([]byte("custos/p2p/testdata/" + name))
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		panic(err)
	}
	return k
}

func ddSessionID(name string) ids.SessionID {
	h := sha256.Sum256([]byte("custos/p2p/testdata/session/" + name))
	var id ids.SessionID
	copy(id[:], h[:])
	return id
}

func (e *ddEnv) id(td *datadriven.TestData, name string) peer.ID {
	k := e.keys[name]
	if k == nil {
		td.Fatalf(e.t, "unknown member %q", name)
	}
	p, _ := peer.IDFromPrivateKey(k)
	return p
}

func (e *ddEnv) str(td *datadriven.TestData, key, def string) string {
	if !td.HasArg(key) {
		return def
	}
	var v string
	td.ScanArgs(e.t, key, &v)
	return v
}

func (e *ddEnv) num(td *datadriven.TestData, key string, def int) int {
	if !td.HasArg(key) {
		return def
	}
	var v int
	td.ScanArgs(e.t, key, &v)
	return v
}

func (e *ddEnv) list(td *datadriven.TestData, key string) []string {
	a, ok := td.Arg(key)
	if !ok {
		td.Fatalf(e.t, "%s: missing argument %s", td.Cmd, key)
	}
	return a.Vals
}

func (e *ddEnv) session(td *datadriven.TestData) (string, ids.SessionID) {
	name := e.str(td, "sess", "s1")
	return name, ddSessionID(name)
}

func (e *ddEnv) run(t *testing.T, td *datadriven.TestData) string {
	e.t = t
	if td.Cmd != "init" && e.keys == nil {
		td.Fatalf(t, "init first")
	}
	switch td.Cmd {
	case "init":
		return e.init(t, td)
	case "open":
		return e.open(t, td)
	case "frame":
		return e.frame(t, td)
	case "echo":
		return e.echo(t, td)
	case "send":
		return e.send(t, td)
	case "read":
		return e.read(t, td)
	case "end", "close":
		name, id := e.session(td)
		s := e.sessions[name]
		if s == nil {
			return fmt.Sprintf("error: session %s is not open", name)
		}
		if td.Cmd == "end" {
			s.m.end()
			return "ok"
		}
		s.m.shut()
		delete(e.sessions, name)
		e.pending.end(id, e.now)
		return "ok"
	case "tick":
		var d time.Duration
		var err error
		if d, err = time.ParseDuration(e.str(td, "advance", "1s")); err != nil {
			td.Fatalf(t, "advance: %v", err)
		}
		e.now = e.now.Add(d)
		var b strings.Builder
		e.expired(&b, e.pending.expire(e.now))
		if b.Len() == 0 {
			return "ok"
		}
		return b.String()
	case "state":
		return e.state(t, td)
	case "pending":
		return e.pendingState()
	}
	td.Fatalf(t, "unknown command %q", td.Cmd)
	return ""
}

func (e *ddEnv) init(t *testing.T, td *datadriven.TestData) string {
	e.self = e.str(td, "self", "A")
	e.peers = e.list(td, "peers")
	e.keys = map[string]crypto.PrivKey{}
	e.names = map[peer.ID]string{}
	var pairs []string
	for _, n := range append(slices.Clone(e.peers), e.self, "X") { // X: a stranger
		if e.keys[n] != nil {
			continue
		}
		e.keys[n] = ddKey(n)
		p := e.id(td, n)
		e.names[p] = n
		pairs = append(pairs, p.String(), n, shortID(p), n)
	}
	ttl, err := time.ParseDuration(e.str(td, "ttl", "30s"))
	if err != nil {
		td.Fatalf(t, "ttl: %v", err)
	}
	e.cfg = Config{
		MaxFrameSize:      e.num(td, "max-frame", DefaultMaxFrameSize),
		BroadcastWindow:   uint64(e.num(td, "window", 16)),
		SessionSlots:      uint64(e.num(td, "slots", 1024)),
		SessionQueue:      e.num(td, "queue", 4096),
		SessionQueueBytes: e.num(td, "queue-bytes", 64<<20),
		PendingFrames:     e.num(td, "pending-frames", 512),
		PendingBytes:      e.num(td, "pending-bytes", 16<<20),
		PendingTotalBytes: e.num(td, "pending-total", 64<<20),
		PendingSessions:   e.num(td, "pending-sessions", 64),
		PendingTTL:        ttl,
	}
	for _, s := range []string{"s1", "s2", "s3", "s4", "s5"} {
		pairs = append(pairs, ddSessionID(s).String(), s)
	}
	e.replacer = strings.NewReplacer(pairs...)
	e.sessions = map[string]*ddSession{}
	e.pending = newPendingBuffer(e.cfg)
	e.now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return "ok"
}

// expired renders expired sessions in the order of their names.
func (e *ddEnv) expired(b *strings.Builder, xs []expiredSession) {
	var lines []string
	for _, x := range xs {
		lines = append(lines, fmt.Sprintf("expire %s: %d frames\n", e.name(x.session), x.frames))
	}
	sort.Strings(lines)
	for _, l := range lines {
		b.WriteString(l)
	}
}

func (e *ddEnv) name(v any) string { return e.replacer.Replace(fmt.Sprint(v)) }

func (e *ddEnv) open(t *testing.T, td *datadriven.TestData) string {
	name, id := e.session(td)
	if e.sessions[name] != nil {
		return fmt.Sprintf("error: session %s is already open", name)
	}
	var others []peer.ID
	for _, n := range e.list(td, "members") {
		if n != e.self {
			others = append(others, e.id(td, n))
		}
	}
	s := &ddSession{id: id, m: newMachine(machineConfig{
		session: id, self: e.id(td, e.self), key: e.keys[e.self], others: others,
		window: e.cfg.BroadcastWindow, slots: e.cfg.SessionSlots,
		queueFrames: e.cfg.SessionQueue, queueBytes: e.cfg.SessionQueueBytes, maxFrameSize: e.cfg.MaxFrameSize,
	})}
	e.sessions[name] = s
	var b strings.Builder
	for _, pf := range e.pending.take(id) {
		fmt.Fprintf(&b, "replay %s\n", e.describe(pf.f))
		e.apply(&b, s, s.m.step(pf.f, pf.size))
	}
	if b.Len() == 0 {
		return "ok"
	}
	return b.String()
}

// route hands a frame to its session's machine, or to the pre-open buffer.
func (e *ddEnv) route(td *datadriven.TestData, sessName string, f *Frame) string {
	if err := f.Sign(e.keys[e.names[f.From]]); err != nil {
		td.Fatalf(e.t, "sign: %v", err)
	}
	size := len(f.Encode())
	s := e.sessions[sessName]
	var b strings.Builder
	if s == nil {
		members := 0
		for _, n := range e.peers {
			if n != e.self {
				members++
			}
		}
		from := e.names[f.From]
		drop, expired := e.pending.add(f, size, e.now, members, from != e.self && slices.Contains(e.peers, from))
		e.expired(&b, expired)
		if drop != nil {
			e.apply(&b, nil, []action{*drop})
		} else {
			fmt.Fprintf(&b, "buffer %s (session not open)\n", e.describe(f))
		}
		return b.String()
	}
	e.apply(&b, s, s.m.step(f, size))
	if b.Len() == 0 {
		return "ok"
	}
	return b.String()
}

func (e *ddEnv) frame(t *testing.T, td *datadriven.TestData) string {
	sessName, id := e.session(td)
	f := &Frame{Session: id, From: e.id(td, e.str(td, "from", "B")), Payload: []byte(e.str(td, "payload", "P"))}
	td.ScanArgs(t, "seq", &f.Seq)
	switch k := e.str(td, "kind", "broadcast"); k {
	case "broadcast":
		f.Kind = KindBroadcast
	case "direct":
		f.Kind = KindDirect
		f.To = e.id(td, e.str(td, "to", e.self))
	default:
		td.Fatalf(t, "kind %q", k)
	}
	return e.route(td, sessName, f)
}

// echo sends an echo from "from" of the broadcast header "of" #seq with
// payload; inner-sess, signer and kind forge the inner frame; raw sends
// the payload itself instead of a frame.
func (e *ddEnv) echo(t *testing.T, td *datadriven.TestData) string {
	sessName, id := e.session(td)
	from := e.id(td, e.str(td, "from", "C"))
	echo := &Frame{Kind: KindEcho, Session: id, Seq: uint64(e.num(td, "echo-seq", 1)), From: from}
	if td.HasArg("raw") {
		echo.Payload = []byte(e.str(td, "payload", "P"))
		return e.route(td, sessName, echo)
	}
	of := e.str(td, "of", "B")
	innerID := ddSessionID(e.str(td, "inner-sess", sessName))
	inner := &Frame{Kind: KindBroadcast, Session: innerID, From: e.id(td, of), Payload: []byte(e.str(td, "payload", "P"))}
	td.ScanArgs(t, "seq", &inner.Seq)
	if e.str(td, "kind", "broadcast") == "direct" {
		inner.Kind = KindDirect
		inner.To = e.id(td, e.self)
	}
	if err := inner.Sign(e.keys[e.str(td, "signer", of)]); err != nil {
		td.Fatalf(t, "sign: %v", err)
	}
	echo.Payload = inner.HeaderOnly().Encode()
	return e.route(td, sessName, echo)
}

func (e *ddEnv) send(t *testing.T, td *datadriven.TestData) string {
	name, _ := e.session(td)
	s := e.sessions[name]
	if s == nil {
		return fmt.Sprintf("error: session %s is not open", name)
	}
	kind, to := KindBroadcast, peer.ID("")
	if e.str(td, "kind", "broadcast") == "direct" {
		kind, to = KindDirect, e.id(td, e.str(td, "to", "B"))
	}
	return "send " + e.describe(s.m.next(kind, to, []byte(e.str(td, "payload", "P"))))
}

func (e *ddEnv) read(t *testing.T, td *datadriven.TestData) string {
	name, _ := e.session(td)
	s := e.sessions[name]
	switch {
	case s == nil:
		return fmt.Sprintf("error: session %s is not open", name)
	case len(s.out) == 0:
		return "nothing to read"
	}
	a := s.out[0]
	s.out = s.out[1:]
	s.m.read(a.frame.From, a.size)
	return "read " + e.describe(a.frame)
}

// apply renders the actions of one step, in order, as the session would
// carry them out.
func (e *ddEnv) apply(b *strings.Builder, s *ddSession, acts []action) {
	for _, a := range acts {
		switch a.kind {
		case actDeliver:
			s.out = append(s.out, a)
			fmt.Fprintf(b, "deliver %s\n", e.describe(a.frame))
		case actEcho:
			if a.fault != nil {
				fmt.Fprintf(b, "echo failed: %v\n", a.fault)
				continue
			}
			inner, err := DecodeFrame(a.frame.Payload)
			if err != nil {
				fmt.Fprintf(b, "echo with a bad payload: %v\n", err)
				continue
			}
			var to []string
			for _, p := range s.m.others {
				if p != a.skip {
					to = append(to, e.names[p])
				}
			}
			fmt.Fprintf(b, "echo #%d to %s: %s\n", a.frame.Seq, strings.Join(to, ","), e.describe(inner))
		case actHold:
			fmt.Fprintf(b, "hold %s\n", e.describe(a.frame))
		case actDrop:
			fmt.Fprintf(b, "drop %s: %s", a.reason, e.describe(a.frame))
			if a.msg != "" {
				fmt.Fprintf(b, "\n  log %q", a.msg)
				for i := 0; i+1 < len(a.args); i += 2 {
					if a.args[i] == "frame" {
						continue // the frame is shown above
					}
					fmt.Fprintf(b, " %v=%s", a.args[i], e.name(a.args[i+1]))
				}
			}
			b.WriteString("\n")
		case actEnd:
			fmt.Fprintf(b, "end %s culprits=%s: %s\n", a.err.Kind, e.name(a.err.Culprits), e.name(a.err.Err))
			if ev, ok := EvidenceOf(a.err); ok {
				if err := ev.Verify(); err != nil {
					fmt.Fprintf(b, "  evidence does not verify: %v\n", err)
				} else {
					fmt.Fprintf(b, "  evidence verifies: %s | %s\n", e.describe(ev.First), e.describe(ev.Second))
				}
			}
		}
	}
}

// describe renders a frame with names: "B broadcast #1 "P"" or, for a
// header, its payload hash.
func (e *ddEnv) describe(f *Frame) string {
	from := e.names[f.From]
	if from == "" {
		from = shortID(f.From)
	}
	s := fmt.Sprintf("%s %s #%d", from, f.Kind, f.Seq)
	if f.Kind == KindDirect {
		s += " to " + e.names[f.To]
	}
	if sess := e.name(f.Session); sess != "s1" {
		s += " in " + sess
	}
	switch {
	case f.HashOnly:
		s += " hash " + hex.EncodeToString(f.PayloadHash[:4])
	case f.Kind == KindEcho:
		s += fmt.Sprintf(" (%d bytes)", len(f.Payload))
	default:
		s += fmt.Sprintf(" %q", f.Payload)
	}
	return s
}

func (e *ddEnv) state(t *testing.T, td *datadriven.TestData) string {
	name, _ := e.session(td)
	s := e.sessions[name]
	if s == nil {
		return fmt.Sprintf("error: session %s is not open", name)
	}
	m := s.m
	var b strings.Builder
	fmt.Fprintf(&b, "ended=%v queued=%d share=%d frames\n", m.ended, m.queued, m.shareFrames)
	for _, p := range m.others {
		st := m.senders[p]
		var held []uint64
		for k := range st.held {
			held = append(held, k)
		}
		slices.Sort(held)
		fmt.Fprintf(&b, "%s: next #%d held %v queued %d\n", e.names[p], st.next, held, st.queuedFrames)
	}
	var recs []string
	for k, r := range m.bcast {
		how := "echo"
		if r.received {
			how = "received"
		}
		recs = append(recs, fmt.Sprintf("%s #%d hash %s (%s)", e.names[k.from], k.seq, hex.EncodeToString(r.first.PayloadHash[:4]), how))
	}
	sort.Strings(recs)
	for _, r := range recs {
		fmt.Fprintf(&b, "record %s\n", r)
	}
	return b.String()
}

func (e *ddEnv) pendingState() string {
	sessions, frames, bytes := e.pending.stats()
	var b strings.Builder
	fmt.Fprintf(&b, "%d sessions, %d frames, %d bytes\n", sessions, frames, bytes)
	var names []string
	for id, p := range e.pending.sessions {
		var from []string
		for _, pf := range p.frames {
			from = append(from, e.names[pf.f.From])
		}
		names = append(names, fmt.Sprintf("%s: %s", e.name(id), strings.Join(from, " ")))
	}
	sort.Strings(names)
	for _, n := range names {
		b.WriteString(n + "\n")
	}
	return b.String()
}
