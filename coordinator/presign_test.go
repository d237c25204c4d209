package coordinator

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/crypto"
)

// TestPresignatureRefusedFallsBack: a hot request whose quorum reports a
// ready presignature names it in propose; a member refusing it under the
// presignature rule makes the coordinator run the full protocol at once,
// in a new session naming none, and the request is signed; the
// presignature is never named again.
func TestPresignatureRefusedFallsBack(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	agent, pol := m[ids.RoleAgent], m[ids.RolePolicy]
	q := []ids.MemberID{agent.id, pol.id}
	slices.Sort(q)
	p := control.Presignature{ID: ids.NewSessionID(), Key: e.key.ID(), Quorum: q, Created: time.Now()}
	var req *api.Request
	var reqMu = make(chan struct{})
	for _, s := range m {
		s.mu.Lock()
		s.tier, s.roles = "hot", []ids.Role{ids.RoleAgent, ids.RolePolicy}
		s.presigned = []control.Presignature{p}
		s.onStart = func(ids.SessionID) *control.Result {
			<-reqMu
			sig, err := crypto.Sign(req.Digest[:], e.keyPriv)
			if err != nil {
				t.Error(err)
			}
			return &control.Result{State: control.StateDone, Signature: sig}
		}
		s.mu.Unlock()
	}
	pol.mu.Lock()
	pol.refuse = func(msg *control.Message) *control.Refusal {
		if msg.Type == control.TypePropose && msg.Propose.Presignature == p.ID {
			return &control.Refusal{RuleID: control.RulePresignature, Reason: "not parked here (restarted)"}
		}
		return nil
	}
	pol.mu.Unlock()
	r, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, e.body(nil))
	if err != nil {
		t.Fatal(err)
	}
	req = r
	close(reqMu)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := e.op.WaitFinal(wctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateSigned || len(got.Attempts) != 2 {
		t.Fatalf("request: %s %s attempts %+v", got.State, got.Reason, got.Attempts)
	}
	first, second := got.Attempts[0], got.Attempts[1]
	if first.Presignature != p.ID || first.State != attRefused || !strings.Contains(first.Error, "("+control.RulePresignature+")") {
		t.Fatalf("first attempt %+v, want presignature %s refused", first, p.ID)
	}
	if !second.Presignature.IsZero() || second.State != attDone {
		t.Fatalf("second attempt %+v, want the full protocol, signed", second)
	}
	// The agent, which joined the first proposal, was told to drop it;
	// the presignature was named once and never again.
	if a := agent.calls("abort"); !slices.Contains(a, first.Session.String()) {
		t.Fatalf("agent aborts %v, want %s", a, first.Session)
	}
	named := 0
	for _, l := range agent.calls("propose") {
		if strings.HasSuffix(l, p.ID.String()) {
			named++
		}
	}
	if named != 1 {
		t.Fatalf("presignature named in %d proposals to the agent: %v", named, agent.calls("propose"))
	}
}

// TestPresignConfig: the pool knobs are checked and defaulted.
func TestPresignConfig(t *testing.T) {
	base := "data_dir: d\nstore_key: {file: k}\nmembers: [{id: 12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq, role: agent, addrs: [/ip4/127.0.0.1/tcp/1]}]\npolicy: {genesis_hash: \"0x" + strings.Repeat("ab", 32) + "\"}\n"
	cfg, err := ParseConfig([]byte(base), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Presign.target() != DefaultPresignTarget || cfg.Presign.Interval != DefaultPresignInterval {
		t.Fatalf("defaults: target %d interval %s", cfg.Presign.target(), cfg.Presign.Interval)
	}
	cfg, err = ParseConfig([]byte(base+"presign: {target: 0}\n"), t.TempDir(), nil)
	if err != nil || cfg.Presign.target() != 0 {
		t.Fatalf("target 0 (off): %v", err)
	}
	for _, bad := range []string{"presign: {target: -1}", "presign: {target: 9}", "presign: {interval: -1s}", "presign: {size: 2}"} {
		if _, err := ParseConfig([]byte(base+bad+"\n"), t.TempDir(), nil); err == nil {
			t.Errorf("%s: accepted", bad)
		} else {
			t.Logf("%s: %v", bad, err)
		}
	}
}

// TestPresignatureKeptAfterAnotherRefusal: a proposal refused for a
// reason of its own (here, a policy rule) never started, so the members
// keep the presignature parked and the coordinator offers it to the next
// request.
func TestPresignatureKeptAfterAnotherRefusal(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	agent, pol := m[ids.RoleAgent], m[ids.RolePolicy]
	q := []ids.MemberID{agent.id, pol.id}
	slices.Sort(q)
	p := control.Presignature{ID: ids.NewSessionID(), Key: e.key.ID(), Quorum: q, Created: time.Now()}
	for _, s := range m {
		s.mu.Lock()
		s.tier, s.roles = "hot", []ids.Role{ids.RoleAgent, ids.RolePolicy}
		s.presigned = []control.Presignature{p}
		s.mu.Unlock()
	}
	pol.mu.Lock()
	refused := false
	pol.refuse = func(msg *control.Message) *control.Refusal {
		if msg.Type == control.TypePropose && !refused {
			refused = true
			return &control.Refusal{RuleID: "budget", Reason: "over budget"}
		}
		return nil
	}
	pol.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for i, idem := range []string{`"first"`, `"second"`} {
		r, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, e.body(map[string]string{"idempotency_key": idem}))
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.op.WaitFinal(wctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && got.State != api.StateDenied {
			t.Fatalf("first request: %s %s", got.State, got.Reason)
		}
		if len(got.Attempts) == 0 || got.Attempts[0].Presignature != p.ID {
			t.Fatalf("request %d: attempts %+v, want presignature %s named", i, got.Attempts, p.ID)
		}
	}
}

// TestHealthCountsPresignatures: the health names, per member and key,
// how many presignatures the member reports parked.
func TestHealthCountsPresignatures(t *testing.T) {
	e, m := newScriptedEnv(t)
	agent, pol := m[ids.RoleAgent], m[ids.RolePolicy]
	q := []ids.MemberID{agent.id, pol.id}
	slices.Sort(q)
	other := ids.KeyIDOf([20]byte{7})
	var two []control.Presignature
	for range 2 {
		two = append(two, control.Presignature{ID: ids.NewSessionID(), Key: e.key.ID(), Quorum: q, Created: time.Now()})
	}
	agent.mu.Lock()
	agent.presigned = append(slices.Clone(two), control.Presignature{ID: ids.NewSessionID(), Key: other, Quorum: q, Created: time.Now()})
	agent.mu.Unlock()
	pol.mu.Lock()
	pol.presigned = two[:1]
	pol.mu.Unlock()
	h, err := e.op.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[ids.MemberID]map[ids.KeyID]int{agent.id: {e.key.ID(): 2, other: 1}, pol.id: {e.key.ID(): 1}}
	for _, mh := range h.Members {
		if !maps.Equal(mh.Presignatures, want[mh.ID]) {
			t.Errorf("member %s (%s): presignatures %v, want %v", mh.ID, mh.Role, mh.Presignatures, want[mh.ID])
		}
	}
}

// The pools wait refillQuiet after the last signing attempt before they
// fill, and are poked once that time is over, so a refill never starts
// between two requests of a burst.
func TestRefillWaitsForQuiet(t *testing.T) {
	p := newPresignPools(PresignConf{})
	if !p.idle() {
		t.Fatal("a fresh pool is not idle")
	}
	done := p.busy()
	if p.idle() {
		t.Fatal("idle while a signing attempt runs")
	}
	ended := time.Now()
	done()
	if p.idle() && time.Since(ended) < refillQuiet {
		t.Fatalf("idle %v after signing ended, before the %v quiet time", time.Since(ended), refillQuiet)
	}
	select {
	case <-p.wake:
		if time.Since(ended) < refillQuiet {
			t.Fatalf("poked %v after signing ended, before the quiet time", time.Since(ended))
		}
	case <-time.After(10 * refillQuiet):
		t.Fatal("never poked after the quiet time")
	}
	if !p.idle() {
		t.Fatal("not idle once the quiet time is over")
	}
}

// TestKeyOperationHoldsPools: no refill starts while a key generation
// runs (seconds of CPU at every member), and the pools are poked once it
// ended and the quiet time passed.
func TestKeyOperationHoldsPools(t *testing.T) {
	e, members := newScriptedEnv(t)
	ctx := context.Background()
	for _, s := range members {
		s.mu.Lock()
		s.onStart = func(ids.SessionID) *control.Result { return &control.Result{State: control.StateRunning} }
		s.mu.Unlock()
	}
	var committee []api.CommitteeMember
	for i, id := range e.members[:3] {
		committee = append(committee, api.CommitteeMember{ID: id, Role: e.roles[i]})
	}
	op, err := e.op.CreateKey(ctx, api.CreateKey{Committee: committee, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(members[ids.RoleAgent].calls(string(control.TypeStart))) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the keygen was never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Past the quiet time of anything before, with the keygen running.
	time.Sleep(2 * refillQuiet)
	if e.c.presign.idle() {
		t.Fatal("the pools may refill while a keygen runs")
	}
	// The keygen fails at every member: the operation ends.
	for _, s := range members {
		s.mu.Lock()
		for sess := range s.results {
			s.results[sess] = &control.Result{State: control.StateFailed, Failure: "scripted", Error: "scripted end"}
		}
		s.mu.Unlock()
	}
	got, err := e.op.WaitOperation(ctx, op.ID, 20*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.OpFailed {
		t.Fatalf("operation %s, want failed", got.State)
	}
	deadline = time.Now().Add(10 * refillQuiet)
	for !e.c.presign.idle() {
		if time.Now().After(deadline) {
			t.Fatal("the pools stay busy after the keygen ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
