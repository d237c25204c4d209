package tss

import (
	"fmt"
	"math/big"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/cockroachdb/datadriven"
	"github.com/custos-wallet/custos/ids"
)

// TestInteraction replays the scripts under testdata: protocol runs driven
// message by message (see env). Regenerate the expected output with
//
//	go test ./tss -run TestInteraction -rewrite
//
// Commands:
//
//	keygen members=(a,b,c) threshold=t [fixtures=first] [idle=ticks]
//	sign signers=(a,b) [digest=text] [path=(0,1)] [idle=ticks]   with the last key made, or the shared 2-of-3 key
//	reshare old=(a,b) new=(c,d,e) threshold=t [fixtures=first] [idle=ticks]
//	start [members...]          start sessions (every unstarted one)
//	deliver [from=a] [to=b] [type=T] [id=n]   deliver what is queued now and matches
//	stabilize                   deliver until nothing is queued
//	stabilize hold=T            deliver until only messages of type T are queued
//	drop|dup|forge [id=n] [from=a] [to=b] [type=T] [how=mutation]  change the first matching queued message
//	reorder [to=b]              reverse the queued messages (to b)
//	crash member                the member stops; messages to it are lost
//	tick [n=1] [members...]     advance the sessions' clocks
//	queue, status               show the queued messages, each member's state
func TestInteraction(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		if filepath.Ext(path) != ".txt" {
			return
		}
		e := newEnv(t)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			e.t = t
			if err := e.command(d); err != nil {
				e.printf("error: %v\n", err)
			}
			if out := e.take(); out != "" {
				return out
			}
			return "ok\n"
		})
	})
}

func (e *env) command(d *datadriven.TestData) error {
	switch d.Cmd {
	case "keygen":
		e.maxIdle = intArg(d, "idle", 10)
		return e.keygen(memberArgs(d, "members"), intArg(d, "threshold", 1), intArg(d, "fixtures", 0))
	case "sign":
		e.maxIdle = intArg(d, "idle", 10)
		shares := e.shares
		if shares == nil {
			shares = shared2of3(e.t)
		}
		var path []uint32
		for _, v := range argVals(d, "path") {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return fmt.Errorf("path: %w", err)
			}
			path = append(path, uint32(n))
		}
		digest := "pay vendor"
		if v := argVals(d, "digest"); len(v) > 0 {
			digest = v[0]
		}
		return e.sign(shares, memberArgs(d, "signers"), digestOf(digest), path)
	case "reshare":
		e.maxIdle = intArg(d, "idle", 10)
		shares := e.shares
		if shares == nil {
			shares = shared2of3(e.t)
		}
		return e.reshare(shares, memberArgs(d, "old"), memberArgs(d, "new"), intArg(d, "threshold", 1), intArg(d, "fixtures", 3))
	case "start":
		e.start(positional(d)...)
	case "deliver":
		if e.deliverAll(matcher(d)) == 0 {
			e.printf("nothing to deliver\n")
		}
	case "stabilize":
		if hold := argVals(d, "hold"); len(hold) > 0 {
			e.stabilizeHolding(hold)
		} else {
			e.stabilize()
		}
	case "drop", "dup", "forge":
		return e.change(d)
	case "reorder":
		match := matcher(d)
		var idx []int
		for i, m := range e.queue {
			if match(m) {
				idx = append(idx, i)
			}
		}
		for i, j := 0, len(idx)-1; i < j; i, j = i+1, j-1 {
			e.queue[idx[i]], e.queue[idx[j]] = e.queue[idx[j]], e.queue[idx[i]]
		}
		e.showQueue()
	case "crash":
		for _, id := range positional(d) {
			e.crash(id)
		}
	case "tick":
		for range intArg(d, "n", 1) {
			e.tick(positional(d)...)
		}
	case "queue":
		e.showQueue()
	case "status":
		e.status()
	default:
		return fmt.Errorf("unknown command %q", d.Cmd)
	}
	return nil
}

func (e *env) showQueue() {
	if len(e.queue) == 0 {
		e.printf("queue empty\n")
	}
	for _, m := range e.queue {
		e.printf("%s\n", m)
	}
}

// stabilizeHolding delivers messages until only messages of the given
// types are queued.
func (e *env) stabilizeHolding(types []string) {
	held := func(m *inflight) bool {
		return slices.ContainsFunc(types, func(t string) bool {
			return slices.Contains(strings.Fields(DescribeMessage(m.from, m.to, m.broadcast, m.payload)), t)
		})
	}
	for {
		i := slices.IndexFunc(e.queue, func(m *inflight) bool { return !held(m) })
		if i < 0 {
			return
		}
		m := e.queue[i]
		e.queue = slices.Delete(e.queue, i, i+1)
		e.deliver(m)
	}
}

// change drops, duplicates or forges the first queued message that
// matches (id=, from=, to=, type=).
func (e *env) change(d *datadriven.TestData) error {
	i := slices.IndexFunc(e.queue, matcher(d))
	if i < 0 {
		return fmt.Errorf("no such message is queued")
	}
	m := e.queue[i]
	switch d.Cmd {
	case "drop":
		e.queue = slices.Delete(e.queue, i, i+1)
		e.printf("dropped %s\n", m)
	case "dup":
		e.seq++
		cp := *m
		cp.seq, cp.note = e.seq, fmt.Sprintf("copy of #%d", m.seq)
		e.queue = slices.Insert(e.queue, i+1, &cp)
		e.printf("queued %s\n", &cp)
	case "forge":
		how := argVals(d, "how")
		if len(how) != 1 {
			return fmt.Errorf("forge needs how=, one of %s", strings.Join(mutationNames(), ", "))
		}
		mutate, ok := mutations[how[0]]
		if !ok {
			return fmt.Errorf("unknown mutation %q, want one of %s", how[0], strings.Join(mutationNames(), ", "))
		}
		if !e.rewrite(m, mutate) {
			return fmt.Errorf("mutation %s does not apply to %s", how[0], m)
		}
		m.note = "forged: " + how[0]
		e.printf("forged %s\n", m)
	}
	return nil
}

// mutations are the forgeries a script can apply to a queued message.
var mutations = map[string]func(tss.MessageContent) bool{
	// A Paillier modulus of 1023 bits: too short to be safe.
	"short-paillier": func(c tss.MessageContent) bool {
		m, ok := c.(*keygen.KGRound1Message)
		if ok {
			m.PaillierN = new(big.Int).Lsh(big.NewInt(1), 1023).Bytes()
		}
		return ok
	},
	// A range proof with S = 1.
	"range-proof-s1": func(c tss.MessageContent) bool {
		m, ok := c.(*signing.SignRound1Message1)
		if !ok {
			return false
		}
		pf, err := m.UnmarshalRangeProofAlice()
		if err != nil {
			return false
		}
		pf.S = big.NewInt(1)
		b := pf.Bytes()
		m.RangeProofAlice = b[:]
		return true
	},
	// One more VSS commitment than the threshold allows: a dealer raising it.
	"vss-count": func(c tss.MessageContent) bool {
		switch m := c.(type) {
		case *resharing.DGRound3Message2:
			d := m.VDecommitment
			m.VDecommitment = append(d, d[len(d)-2], d[len(d)-1])
			return true
		case *keygen.KGRound2Message2:
			d := m.DeCommitment
			m.DeCommitment = append(d, d[len(d)-2], d[len(d)-1])
			return true
		}
		return false
	},
	// Another theta in signing round 3: with the real one, two different
	// messages under one key.
	"theta": func(c tss.MessageContent) bool {
		m, ok := c.(*signing.SignRound3Message)
		if ok {
			m.Theta = append([]byte{1}, m.Theta...)
		}
		return ok
	},
}

func mutationNames() []string {
	var out []string
	for k := range mutations {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func argVals(d *datadriven.TestData, key string) []string {
	if a, ok := d.Arg(key); ok {
		return a.Vals
	}
	return nil
}

func memberArgs(d *datadriven.TestData, key string) []ids.MemberID {
	var out []ids.MemberID
	for _, v := range argVals(d, key) {
		out = append(out, ids.MemberID(v))
	}
	return out
}

// positional lists the arguments without a value: member ids.
func positional(d *datadriven.TestData) []ids.MemberID {
	var out []ids.MemberID
	for _, a := range d.CmdArgs {
		if len(a.Vals) == 0 {
			out = append(out, ids.MemberID(a.Key))
		}
	}
	return out
}

func intArg(d *datadriven.TestData, key string, def int) int {
	v := argVals(d, key)
	if len(v) == 0 {
		return def
	}
	n, err := strconv.Atoi(v[0])
	if err != nil {
		panic(fmt.Sprintf("argument %s: %v", key, err))
	}
	return n
}

// matcher selects queued messages by from=, to=, type= and id=.
func matcher(d *datadriven.TestData) func(*inflight) bool {
	from, to, typ, id := argVals(d, "from"), argVals(d, "to"), argVals(d, "type"), argVals(d, "id")
	return func(m *inflight) bool {
		desc := DescribeMessage(m.from, m.to, m.broadcast, m.payload)
		return (len(from) == 0 || slices.Contains(from, string(m.from))) &&
			(len(to) == 0 || slices.Contains(to, string(m.to))) &&
			(len(typ) == 0 || slices.ContainsFunc(typ, func(t string) bool { return slices.Contains(strings.Fields(desc), t) })) &&
			(len(id) == 0 || slices.Contains(id, strconv.Itoa(m.seq)))
	}
}
