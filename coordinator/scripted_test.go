package coordinator

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// scripted is a member played by the test over real libp2p: for the
// faults no honest node makes (a failed session blaming a member, a forged
// signature) and to see exactly what the coordinator asks, in what order.
// Everything else is answered as a node answers.
type scripted struct {
	id   ids.MemberID
	role ids.Role
	node *p2p.Node

	mu sync.Mutex
	// guarded by mu
	log     []string                          // "type session" in arrival order
	results map[ids.SessionID]*control.Result // what Result answers, once started
	onStart func(s ids.SessionID) *control.Result
	refuse  func(m *control.Message) *control.Refusal
	// approvals is how many approvals the scripted tier needs, roles the
	// roles it names (default: policy).
	approvals int
	roles     []ids.Role
	tier      string                 // the scripted tier's name (default solo)
	presigned []control.Presignature // what Status reports parked
	// hold, when set, keeps each Result query unanswered until it is
	// closed.
	hold  chan struct{}
	human *ecdsa.PrivateKey // a guardian member's human, if not alice
}

func (s *scripted) record(m *control.Message) {
	var sess string
	switch m.Type {
	case control.TypePropose:
		sess = m.Propose.Session.String()
		if !m.Propose.Presignature.IsZero() {
			sess += " " + m.Propose.Presignature.String()
		}
	case control.TypeKeygen:
		sess = m.Keygen.Session.String()
	case control.TypeStart:
		sess = m.Start.Session.String()
	case control.TypeResult:
		sess = m.Result.Session.String()
	case control.TypeAbort:
		sess = m.Abort.Session.String()
	}
	s.log = append(s.log, strings.TrimSpace(string(m.Type)+" "+sess))
}

func (s *scripted) calls(kind string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.log {
		if l == kind || strings.HasPrefix(l, kind+" ") {
			out = append(out, strings.TrimPrefix(l, kind+" "))
		}
	}
	return out
}

func (s *scripted) handle(e *env) p2p.Handler {
	return func(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
		m, err := control.Decode(req)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.record(m)
		refuse := s.refuse
		s.mu.Unlock()
		if refuse != nil {
			if r := refuse(m); r != nil {
				r.Member = s.id
				return control.EncodeReply(&control.Reply{Refusal: r})
			}
		}
		var rep control.Reply
		switch m.Type {
		case control.TypeStatus:
			s.mu.Lock()
			st := &control.Status{Member: s.id, Role: s.role, Presignatures: slices.Clone(s.presigned)}
			s.mu.Unlock()
			if s.role == ids.RoleGuardian {
				human := e.guardian
				if s.human != nil {
					human = s.human
				}
				st.Guardian = crypto.PubkeyToAddress(human.PublicKey).Hex()
			}
			rep.Status = st
		case control.TypeEvaluate:
			pr, err := api.ParseSigned(m.Evaluate.Request, e.clock.Now())
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			n, roles, tier := s.approvals, s.roles, s.tier
			s.mu.Unlock()
			if roles == nil {
				roles = []ids.Role{ids.RolePolicy}
			}
			if tier == "" {
				tier = "solo"
			}
			rep.Decision = &control.Decision{Verdict: "allow", RuleID: "scripted", Reason: "scripted", Tier: tier,
				Roles: roles, Approvals: n, Digest: pr.Payload.Digest(),
				Budgets: []control.BudgetLeft{{Rule: "scripted", Window: control.Duration(time.Hour), Asset: "native", Limit: "1000", Used: "300", Left: "700", CountLimit: 5, CountUsed: 1}}}
		case control.TypePropose:
			rep.Join = &control.Join{Member: s.id}
		case control.TypeKeygen:
			rep.Join = &control.Join{Member: s.id, PreParams: true}
		case control.TypeStart:
			s.mu.Lock()
			if s.onStart != nil {
				s.results[m.Start.Session] = s.onStart(m.Start.Session)
			}
			s.mu.Unlock()
		case control.TypeResult:
			s.mu.Lock()
			hold := s.hold
			s.mu.Unlock()
			if hold != nil {
				select {
				case <-hold:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			s.mu.Lock()
			r, ok := s.results[m.Result.Session]
			s.mu.Unlock()
			if !ok {
				r = &control.Result{State: control.StateUnknown}
			}
			c := *r
			c.Member, c.Session = s.id, m.Result.Session
			rep.Result = &c
		}
		return control.EncodeReply(&rep)
	}
}

// newScriptedEnv runs the env's three members as scripted members.
func newScriptedEnv(t *testing.T) (*env, map[ids.Role]*scripted) {
	e, m, _ := newScriptedEnvN(t, 1)
	return e, m
}

// newScriptedEnvN is newScriptedEnv with one or two guardian members; the
// list holds every member in the env's order (the map the last of each
// role).
func newScriptedEnvN(t *testing.T, guardians int) (*env, map[ids.Role]*scripted, []*scripted) {
	return newScriptedEnvConf(t, "", guardians)
}

// newScriptedEnvConf is newScriptedEnvN with extra coordinator
// configuration.
func newScriptedEnvConf(t *testing.T, extra string, guardians int) (*env, map[ids.Role]*scripted, []*scripted) {
	members := map[ids.Role]*scripted{}
	var list []*scripted
	var coordID peer.ID
	e := newEnvWith(t, extra, func(e *env) []string {
		k, err := p2p.LoadOrCreateIdentity(filepath.Join(e.dir, "data", "identity.key"))
		if err != nil {
			t.Fatal(err)
		}
		coordID, _ = peer.IDFromPrivateKey(k)
		coord := p2p.Member{ID: coordID}
		var addrs []string
		for i, role := range e.roles {
			key, err := p2p.LoadIdentity(filepath.Join(e.dir, e.names[i]+".key"))
			if err != nil {
				t.Fatal(err)
			}
			port := freePort(t)
			addr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
			n, err := p2p.New(p2p.Config{Identity: key, ListenAddrs: []string{addr}, Coordinators: []p2p.Member{coord},
				Sessions: p2p.NewMemorySessionRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Close() })
			s := &scripted{id: e.members[i], role: role, node: n, results: map[ids.SessionID]*control.Result{}}
			if err := n.RegisterHandler(control.Protocol, control.MaxMessage, s.handle(e)); err != nil {
				t.Fatal(err)
			}
			if i == 3 {
				s.human = e.bob
			}
			members[role] = s
			list = append(list, s)
			addrs = append(addrs, addr)
		}
		return addrs
	}, guardians)
	return e, members, list
}

// TestRetryExcludesCulprits: a session that fails blaming a member is
// retried under the same request id with a fresh session id and a quorum
// without that member, and only after every member of the failed session
// reported it ended; a member that reports a signature that does not
// verify gives no signed request; the quorum is the same for the same
// inputs.
func TestRetryExcludesCulprits(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	digestSig := func(r *api.Request) []byte {
		sig, err := crypto.Sign(r.Digest[:], e.keyPriv)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	var (
		mu       sync.Mutex
		sessions []ids.SessionID
		req      *api.Request
	)
	forged := make([]byte, 65)
	// First session: the policy member reports failure blaming the agent,
	// the agent reports a forged signature. Second: a good signature.
	for _, s := range m {
		s.mu.Lock()
		s.onStart = func(sess ids.SessionID) *control.Result {
			mu.Lock()
			defer mu.Unlock()
			if !slices.Contains(sessions, sess) {
				sessions = append(sessions, sess)
			}
			if sess == sessions[0] {
				if s.role == ids.RoleAgent {
					return &control.Result{State: control.StateDone, Signature: forged}
				}
				return &control.Result{State: control.StateFailed, Failure: "misbehaviour", Culprits: []ids.MemberID{m[ids.RoleAgent].id}}
			}
			return &control.Result{State: control.StateDone, Signature: digestSig(req)}
		}
		s.mu.Unlock()
	}
	r, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, e.body(nil))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	req = r
	mu.Unlock()
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
	wantFirst := []ids.MemberID{m[ids.RoleAgent].id, m[ids.RolePolicy].id}
	slices.Sort(wantFirst)
	if !slices.Equal(first.Quorum, wantFirst) || first.State != attFailed || !slices.Contains(first.Culprits, m[ids.RoleAgent].id) {
		t.Fatalf("first attempt %+v, want quorum %v failed blaming the agent", first, wantFirst)
	}
	if slices.Contains(second.Quorum, m[ids.RoleAgent].id) || !slices.Contains(second.Quorum, m[ids.RolePolicy].id) || second.Session == first.Session {
		t.Fatalf("second attempt %+v", second)
	}
	if err := e.key.Committee.Validate(); err != nil {
		t.Fatal(err)
	}
	// The second session was proposed only after the first one's members
	// were asked for its result and reported it ended.
	pol := m[ids.RolePolicy]
	pol.mu.Lock()
	log := slices.Clone(pol.log)
	pol.mu.Unlock()
	lastFirst, firstSecond := -1, -1
	for i, l := range log {
		if strings.HasSuffix(l, first.Session.String()) {
			lastFirst = i
		}
		if firstSecond < 0 && strings.HasSuffix(l, second.Session.String()) {
			firstSecond = i
		}
	}
	if lastFirst < 0 || firstSecond < lastFirst || !strings.HasPrefix(log[firstSecond], "propose") {
		t.Fatalf("sessions overlap at the policy member: %v", log)
	}
	if len(m[ids.RoleAgent].calls("propose")) != 1 {
		t.Fatalf("the blamed agent was proposed again: %v", m[ids.RoleAgent].calls("propose"))
	}
	// The audit log names the members of each session.
	entries, err := e.op.Audit(ctx, client.AuditQuery{Member: string(m[ids.RoleAgent].id)})
	if err != nil || len(entries) != 1 || entries[0].Kind != "session" || entries[0].Fields["culprits"] != string(m[ids.RoleAgent].id) {
		t.Fatalf("audit entries naming the agent: %v %+v", err, entries)
	}
	entries, err = e.op.Audit(ctx, client.AuditQuery{Member: string(m[ids.RoleGuardian].id)})
	if err != nil || len(entries) != 1 || entries[0].Kind != "signature" {
		t.Fatalf("audit entries naming the guardian: %v %+v", err, entries)
	}
}

// TestFirstSignatureEnds: the first signature that verifies ends a
// session's collection. One signer reports it at once; the other's
// Result query stays unanswered (a member slow to journal, or gone): the
// request is signed all the same, while that query is still held (its
// wait is control.MaxResultWait).
func TestFirstSignatureEnds(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	hold := make(chan struct{})
	defer close(hold)
	pol := m[ids.RolePolicy]
	pol.mu.Lock()
	pol.hold = hold
	pol.mu.Unlock()
	r := submitSigned(t, e, slices.Collect(maps.Values(m))...)
	wctx, cancel := context.WithTimeout(ctx, control.MaxResultWait/2)
	defer cancel()
	got, err := e.op.WaitFinal(wctx, r.ID)
	if err != nil {
		t.Fatalf("the request did not end while one signer's result was held: %v", err)
	}
	if got.State != api.StateSigned || len(got.Attempts) != 1 {
		t.Fatalf("request: %s %s attempts %+v", got.State, got.Reason, got.Attempts)
	}
	if !slices.Contains(got.Attempts[0].Quorum, pol.id) {
		t.Fatalf("the held policy member is not in the quorum %v", got.Attempts[0].Quorum)
	}
	if asked := pol.calls("result"); !slices.Contains(asked, got.Attempts[0].Session.String()) {
		t.Fatalf("the held policy member was not asked for the result: %v", asked)
	}
}

// TestRefusalEndsRequest: a member's policy refusal ends the request as
// denied with that member's rule id and reason, and the members that
// joined are told to drop the proposal.
func TestRefusalEndsRequest(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	m[ids.RolePolicy].mu.Lock()
	m[ids.RolePolicy].refuse = func(msg *control.Message) *control.Refusal {
		if msg.Type == control.TypePropose {
			return &control.Refusal{RuleID: "daily-budget", Reason: "budget of 0.5 ether over 24h exceeded"}
		}
		return nil
	}
	m[ids.RolePolicy].mu.Unlock()
	r, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, e.body(nil))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := e.op.WaitFinal(wctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateDenied || got.RuleID != "daily-budget" || got.Member != m[ids.RolePolicy].id || !strings.Contains(got.Reason, "exceeded") {
		t.Fatalf("refused request: %+v", got)
	}
	if len(got.Attempts) != 1 || got.Attempts[0].State != attRefused {
		t.Fatalf("attempts %+v", got.Attempts)
	}
	if p, a := m[ids.RoleAgent].calls("propose"), m[ids.RoleAgent].calls("abort"); len(p) != 1 || len(a) != 1 || p[0] != a[0] {
		t.Fatalf("agent: proposals %v aborts %v", p, a)
	}
	if len(m[ids.RoleAgent].calls("start")) != 0 {
		t.Fatal("a session started after a refusal")
	}
}

// TestProbeBesideDryRun: the probe of the committee that the first
// signing attempt needs runs while the dry run is answered, not after it:
// the policy member holds its dry-run answer until the agent member was
// probed. (The pools are off, so nothing else probes.) The attempt then
// proposes without probing again.
func TestProbeBesideDryRun(t *testing.T) {
	e, m, _ := newScriptedEnvConf(t, "presign: {target: 0}\n", 1)
	ctx := context.Background()
	probed := make(chan struct{})
	var once sync.Once
	m[ids.RoleAgent].mu.Lock()
	m[ids.RoleAgent].refuse = func(msg *control.Message) *control.Refusal {
		if msg.Type == control.TypeStatus {
			once.Do(func() { close(probed) })
		}
		return nil
	}
	m[ids.RoleAgent].mu.Unlock()
	held := make(chan bool, 1)
	m[ids.RolePolicy].mu.Lock()
	m[ids.RolePolicy].refuse = func(msg *control.Message) *control.Refusal {
		if msg.Type == control.TypeEvaluate {
			select {
			case <-probed:
				held <- true
			case <-time.After(time.Second): // within the env's propose timeout (2s), after which the dry run would go to another member
				held <- false
			}
		}
		return nil
	}
	m[ids.RolePolicy].mu.Unlock()
	if _, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, e.body(nil)); err != nil {
		t.Fatal(err)
	}
	select {
	case beside := <-held:
		if !beside {
			t.Fatal("the agent member was not probed while the dry run was pending: the probe waited for the dry run")
		}
	case <-time.After(time.Minute):
		t.Fatal("no dry run")
	}
	deadline := time.Now().Add(time.Minute)
	for len(m[ids.RoleAgent].calls("propose")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no proposal after the dry run")
		}
		time.Sleep(20 * time.Millisecond)
	}
	m[ids.RoleAgent].mu.Lock()
	log := slices.Clone(m[ids.RoleAgent].log)
	m[ids.RoleAgent].mu.Unlock()
	first := slices.IndexFunc(log, func(l string) bool { return strings.HasPrefix(l, "propose ") })
	if n := slices.IndexFunc(log[:first], func(l string) bool { return l == "status" }); n < 0 || slices.Contains(log[n+1:first], "status") {
		t.Fatalf("the agent member's calls %v: want one status before the first proposal", log)
	}
}

// TestApprovalsFromMembers: a guardian member forwards its human's
// approval over the control protocol and it is recorded; the same message
// from a member that is not a guardian is refused, and so is a freeze
// signed by someone who is not a guardian.
func TestApprovalsFromMembers(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	r, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, e.body(nil))
	if err != nil {
		t.Fatal(err)
	}
	a := e.approval(e.guardian, r.ID, r.Digest)
	send := func(from *scripted, msg *control.Message) *control.Reply {
		t.Helper()
		b, err := control.Encode(msg)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := from.node.Request(ctx, e.c.ID(), control.Protocol, b, control.MaxMessage)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := control.DecodeReply(resp)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	approval := &control.Message{Type: control.TypeApproval, Approval: &control.ApprovalMsg{Approval: &a}}
	if rep := send(m[ids.RoleAgent], approval); rep.Refusal == nil || !strings.Contains(rep.Refusal.Reason, "guardian members") {
		t.Fatalf("approval from the agent member: %+v", rep)
	}
	if rep := send(m[ids.RoleGuardian], approval); rep.Refusal != nil {
		t.Fatalf("approval from the guardian member: %+v", rep.Refusal)
	}
	got, err := e.op.Request(ctx, r.ID)
	if err != nil || len(got.Approvers) != 1 {
		t.Fatalf("approvals after the guardian's: %v %+v", err, got.Approvers)
	}
	f := policyFreeze(t, e, e.outsider)
	if rep := send(m[ids.RoleGuardian], &control.Message{Type: control.TypeFreeze, Freeze: &f}); rep.Refusal == nil || !strings.Contains(rep.Refusal.Reason, "not a guardian") {
		t.Fatalf("freeze by an outsider: %+v", rep)
	}
	f = policyFreeze(t, e, e.guardian)
	if rep := send(m[ids.RoleGuardian], &control.Message{Type: control.TypeFreeze, Freeze: &f}); rep.Refusal != nil {
		t.Fatalf("a guardian's freeze: %+v", rep.Refusal)
	}
	// The coordinator carries it on to every member.
	for i := 0; i < 200 && len(m[ids.RolePolicy].calls("freeze")) == 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if len(m[ids.RolePolicy].calls("freeze")) == 0 {
		t.Fatal("the freeze was not carried to the policy member")
	}

	// Over REST: the same checks, and the answer says who acknowledged.
	anon, _ := client.New(e.c.URL(), client.Options{})
	if _, err := anon.Freeze(ctx, policyFreeze(t, e, e.outsider)); !client.IsCode(err, httpapi.CodeBadRequest) {
		t.Fatalf("REST freeze by an outsider: %v", err)
	}
	pushed, err := anon.Freeze(ctx, policyFreeze(t, e, e.guardian))
	if err != nil || len(pushed.Members) != 3 {
		t.Fatalf("REST freeze: %v %+v", err, pushed)
	}
	for _, a := range pushed.Members {
		if !a.Accepted {
			t.Fatalf("not acknowledged: %+v", a)
		}
	}
	u := policy.Unfreeze{Target: policy.TargetAll, Freeze: common.HexToHash("0x01"), Issued: e.clock.Now()}
	usig, _ := policy.SignTypedData(e.outsider, u.TypedData(e.wallet))
	if _, err := anon.Unfreeze(ctx, api.Unfreeze{Target: u.Target, Freeze: u.Freeze, Issued: u.Issued, Signatures: []hexutil.Bytes{usig}}); !client.IsCode(err, httpapi.CodeBadRequest) {
		t.Fatalf("unfreeze by an outsider: %v", err)
	}
	if _, err := anon.Unfreeze(ctx, api.Unfreeze{Target: u.Target, Freeze: u.Freeze, Issued: u.Issued}); !client.IsCode(err, httpapi.CodeBadRequest) || !strings.Contains(err.Error(), "needs 1") {
		t.Fatalf("unfreeze without signatures: %v", err)
	}
	usig, _ = policy.SignTypedData(e.guardian, u.TypedData(e.wallet))
	if _, err := anon.Unfreeze(ctx, api.Unfreeze{Target: u.Target, Freeze: u.Freeze, Issued: u.Issued, Signatures: []hexutil.Bytes{usig}}); err != nil {
		t.Fatalf("a quorum's unfreeze: %v", err)
	}
	if len(m[ids.RoleAgent].calls("unfreeze")) != 1 {
		t.Fatalf("unfreeze not pushed: %v", m[ids.RoleAgent].log)
	}
}

// TestDryRunAndPolicy: a dry run is a policy member's evaluation of a
// request the agent signed for POST /v1/requests (a body signed for any
// other endpoint is refused); the policy endpoint shows the document, and
// a document the guardians did not sign is refused.
func TestDryRunAndPolicy(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	s := e.bot.Sign(api.SignRequestMethod, api.SignRequestPath, e.body(nil), e.clock.Now())
	dr, err := e.op.DryRun(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if dr.Decision.Tier != "solo" || dr.Decision.Member != m[ids.RolePolicy].id || dr.Digest == (common.Hash{}) {
		t.Fatalf("dry run: %+v", dr)
	}
	if n := len(e.requests()); n != 0 {
		t.Fatalf("a dry run stored %d requests", n)
	}
	if want := (api.BudgetLeft{Rule: "scripted", Window: "1h0m0s", Asset: "native", Limit: "1000", Used: "300", Left: "700", CountLimit: 5, CountUsed: 1}); len(dr.Budgets) != 1 || dr.Budgets[0] != want {
		t.Fatalf("dry run budgets: %+v", dr.Budgets)
	}
	other := e.bot.Sign("POST", "/v1/policy/dry-run", e.body(nil), e.clock.Now())
	if _, err := e.op.DryRun(ctx, other); !client.IsCode(err, httpapi.CodeBadRequest) || !strings.Contains(err.Error(), "not POST /v1/requests") {
		t.Fatalf("dry run of a body signed for another endpoint: %v", err)
	}
	p, err := e.op.Policy(ctx)
	if err != nil || p.Version != 1 || p.WalletID != e.wallet || p.Hash != e.wallet {
		t.Fatalf("policy: %v %+v", err, p)
	}
	doc := p.Document
	doc.Source = strings.Replace(doc.Source, "version: 1", "version: 2", 1)
	doc.Signatures = []hexutil.Bytes{make([]byte, 65)}
	if _, err := e.op.ProposePolicy(ctx, doc); !client.IsCode(err, httpapi.CodeBadRequest) {
		t.Fatalf("a document with a forged signature: %v", err)
	}
	// The current document again (whatever signatures come with it) is
	// pushed again as it was verified, not refused.
	pushed, err := e.op.ProposePolicy(ctx, p.Document)
	if err != nil || len(pushed.Members) != 3 || !pushed.Members[0].Accepted {
		t.Fatalf("the current document again: %v %+v", err, pushed)
	}
}

// TestPendingSurvivesRestart: a request whose tier needs an approval waits
// (the guardian member told), survives a restart still waiting (the
// guardian told again), and signs once a guardian approves.
func TestPendingSurvivesRestart(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	r := submitPending(t, e, m)
	if n := len(m[ids.RoleGuardian].calls("pending")); n != 1 {
		t.Fatalf("guardian told %d times", n)
	}
	pendingHealth(t, e, 1, "waiting for its approval")
	if n := len(m[ids.RoleAgent].calls("pending")); n != 0 {
		t.Fatalf("a non-guardian member was told %d times", n)
	}
	e.close()
	e.open()
	for i := 0; i < 200 && len(m[ids.RoleGuardian].calls("pending")) < 2; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(m[ids.RoleGuardian].calls("pending")); n != 2 {
		t.Fatalf("after the restart the guardian was told %d times in all", n)
	}
	if got, err := e.op.Request(ctx, r.ID); err != nil || got.State != api.StatePendingApproval {
		t.Fatalf("after the restart: %v %+v", err, got)
	}
	if len(m[ids.RoleAgent].calls("propose")) != 0 {
		t.Fatal("a request waiting for approval was proposed")
	}
	pendingHealth(t, e, 1, "waiting after the restart")
	anon, _ := client.New(e.c.URL(), client.Options{})
	if _, err := anon.Approve(ctx, e.approval(e.guardian, r.ID, r.Digest)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := e.op.WaitFinal(wctx, r.ID)
	if err != nil || got.State != api.StateSigned {
		t.Fatalf("approved: %v %+v", err, got)
	}
	pendingHealth(t, e, 0, "signed")
}

// TestDriverKeepsAStrangeRequest: a request found in a state its driver
// does not know (a record written by another version, say) keeps its
// driver: health counts it in progress, and once the record is readable
// again the request goes on without a restart.
func TestDriverKeepsAStrangeRequest(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	r := submitPending(t, e, m)
	if _, err := e.c.update(ctx, r.ID, func(b *reqBody) error { b.View.State = "mystery"; return nil }); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ { // health is rate-limited: 5 a second
		time.Sleep(250 * time.Millisecond)
		pendingHealth(t, e, 1, "in a state its driver does not know")
	}
	if _, err := e.c.update(ctx, r.ID, func(b *reqBody) error { b.View.State = api.StatePendingApproval; return nil }); err != nil {
		t.Fatal(err)
	}
	anon, _ := client.New(e.c.URL(), client.Options{})
	if _, err := anon.Approve(ctx, e.approval(e.guardian, r.ID, r.Digest)); err != nil {
		t.Fatal(err)
	}
	got, err := e.op.Wait(ctx, r.ID, 10*time.Second)
	if err != nil || got.State != api.StateSigned {
		t.Fatalf("the request, readable again: %v %+v", err, got)
	}
	pendingHealth(t, e, 0, "signed")
}

// submitPending submits a request whose tier needs one approval (the
// policy member's dry run says so) and waits until it waits for it.
func submitPending(t *testing.T, e *env, m map[ids.Role]*scripted) *api.Request {
	t.Helper()
	m[ids.RolePolicy].mu.Lock()
	m[ids.RolePolicy].approvals = 1
	m[ids.RolePolicy].mu.Unlock()
	r := submitSigned(t, e, slices.Collect(maps.Values(m))...)
	var err error
	for r.State == api.StateReceived {
		if r, err = e.op.Wait(context.Background(), r.ID, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if r.State != api.StatePendingApproval || r.Needed != 1 {
		t.Fatalf("request: %+v", r)
	}
	return r
}

// pendingHealth waits (five seconds at most) until the health counts
// want requests in progress.
func pendingHealth(t *testing.T, e *env, want int, when string) {
	t.Helper()
	var got int
	for i := 0; i < 20; i++ {
		h, err := e.op.Health(context.Background())
		if err != nil {
			t.Fatalf("%s: health: %v", when, err)
		}
		if got = h.Pending; got == want {
			return
		}
		time.Sleep(250 * time.Millisecond) // health is rate-limited: 5 a second
	}
	t.Fatalf("%s: health counts %d requests in progress, want %d", when, got, want)
}

// TestGrants: a session grant is checked against the policy's guardians
// and pushed to every member once a guardian signed it.
func TestGrants(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	g := policy.Grant{ID: "g1", Agent: "bot", Key: e.key.Address, NotBefore: e.clock.Now(), Expiry: e.clock.Now().Add(time.Hour), MaxCount: 3}
	anon, _ := client.New(e.c.URL(), client.Options{})
	for _, k := range []*ecdsa.PrivateKey{e.outsider, e.guardian} {
		sg, err := policy.SignGrant(k, e.wallet, g)
		if err != nil {
			t.Fatal(err)
		}
		pushed, err := anon.Grant(ctx, api.GrantFrom(*sg))
		switch {
		case k == e.outsider && !client.IsCode(err, httpapi.CodeBadRequest):
			t.Fatalf("grant by an outsider: %v", err)
		case k == e.guardian && (err != nil || len(pushed.Members) != 3):
			t.Fatalf("grant by a guardian: %v %+v", err, pushed)
		}
	}
	if n := len(m[ids.RoleAgent].calls("policy")); n != 2 {
		t.Fatalf("agent member got %d policy updates, want the genesis document and the grant", n)
	}
}

// TestQuorumPrefersApprovingGuardians: for a tier that needs a guardian,
// the quorum takes the guardian whose human approved, not the first
// guardian by id.
func TestQuorumPrefersApprovingGuardians(t *testing.T) {
	e, m, list := newScriptedEnvN(t, 2)
	ctx := context.Background()
	pol, g1, g2 := m[ids.RolePolicy], list[2], list[3]
	pol.mu.Lock()
	pol.approvals, pol.roles = 1, []ids.Role{ids.RoleAgent, ids.RolePolicy, ids.RoleGuardian}
	pol.mu.Unlock()
	r := submitSigned(t, e, list...)
	var err error
	for r.State == api.StateReceived {
		if r, err = e.op.Wait(ctx, r.ID, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if r.State != api.StatePendingApproval {
		t.Fatalf("request: %+v", r)
	}
	// The guardian that comes second by id approves (Select without a
	// preference takes the first).
	first, second, human := g1, g2, e.bob
	if g2.id < g1.id {
		first, second, human = g2, g1, e.guardian
	}
	a := policy.Approval{RequestID: r.ID, Digest: r.Digest, ChainID: bigInt(testChainID), Key: e.key.Address,
		Issued: e.clock.Now().Add(-time.Minute), Expiry: e.clock.Now().Add(time.Hour)}
	sig, err := policy.SignTypedData(human, a.TypedData(e.wallet))
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := client.New(e.c.URL(), client.Options{})
	if _, err := anon.Approve(ctx, api.ApprovalFrom(policy.SignedApproval{Approval: a, Signature: sig})); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := e.op.WaitFinal(wctx, r.ID)
	if err != nil || got.State != api.StateSigned || len(got.Attempts) != 1 {
		t.Fatalf("approved request: %v %+v", err, got)
	}
	q := got.Attempts[0].Quorum
	if !slices.Contains(q, second.id) || slices.Contains(q, first.id) {
		t.Fatalf("quorum %v: want the approving guardian %s, not %s", q, second.id, first.id)
	}
}

// TestInternalRefusalRetries: a member's internal fault (rule "internal")
// ends that attempt, not the request: the next session signs.
func TestInternalRefusalRetries(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	var mu sync.Mutex
	refused := 0
	pol := m[ids.RolePolicy]
	pol.mu.Lock()
	pol.refuse = func(msg *control.Message) *control.Refusal {
		mu.Lock()
		defer mu.Unlock()
		if msg.Type == control.TypePropose && refused == 0 {
			refused++
			return &control.Refusal{RuleID: "internal", Reason: "store: write failed"}
		}
		return nil
	}
	pol.mu.Unlock()
	r := submitSigned(t, e, slices.Collect(maps.Values(m))...)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := e.op.WaitFinal(wctx, r.ID)
	if err != nil || got.State != api.StateSigned || len(got.Attempts) != 2 || got.Attempts[0].State != attRefused {
		t.Fatalf("after an internal refusal: %v %+v", err, got)
	}
}

// TestRevocations: a grant's revocation is checked against the policy's
// guardians and pushed to every member only once a guardian signed it.
func TestRevocations(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	anon, _ := client.New(e.c.URL(), client.Options{})
	rv := policy.Revocation{GrantID: "g1", Issued: e.clock.Now().UTC().Truncate(time.Second)}
	for _, k := range []*ecdsa.PrivateKey{e.outsider, e.guardian} {
		sig, err := policy.SignTypedData(k, rv.TypedData(e.wallet))
		if err != nil {
			t.Fatal(err)
		}
		pushed, err := anon.Revoke(ctx, api.Revocation{GrantID: rv.GrantID, Issued: rv.Issued, Signature: sig})
		switch {
		case k == e.outsider && (!client.IsCode(err, httpapi.CodeBadRequest) || !strings.Contains(err.Error(), "not a guardian")):
			t.Fatalf("revocation by an outsider: %v", err)
		case k == e.outsider && len(m[ids.RoleAgent].calls("policy")) != 1:
			t.Fatal("a revocation by an outsider was pushed")
		case k == e.guardian && (err != nil || len(pushed.Members) != 3 || !pushed.Members[0].Accepted):
			t.Fatalf("revocation by a guardian: %v %+v", err, pushed)
		}
	}
	if _, err := anon.Revoke(ctx, api.Revocation{GrantID: "g1", Issued: rv.Issued}); !client.IsCode(err, httpapi.CodeBadRequest) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("revocation without a signature: %v", err)
	}
	for _, s := range m {
		if n := len(s.calls("policy")); n != 2 {
			t.Fatalf("%s got %d policy updates, want the genesis document and the revocation", s.id, n)
		}
	}
}

// TestRequestAuditedWithItsRecord: a request signed in one session leaves
// exactly its three audit entries (received, the tier's decision, the
// signature), each committed with the change of the record it reports;
// the agent's retry of the same request adds none.
func TestRequestAuditedWithItsRecord(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	r := submitSigned(t, e, slices.Collect(maps.Values(m))...)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := e.op.WaitFinal(wctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateSigned {
		t.Fatalf("request %s (%s), want signed", got.State, got.Reason)
	}
	again, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, e.body(nil))
	if err != nil || again.ID != r.ID {
		t.Fatalf("retry: %+v, %v; want request %s", again, err, r.ID)
	}
	es, err := e.c.store.AuditByRequest(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, en := range es {
		kinds = append(kinds, string(en.Kind))
	}
	want := []string{string(store.AuditRequest), string(store.AuditDecision), string(store.AuditSignature)}
	if !slices.Equal(kinds, want) {
		t.Fatalf("audit entries of %s: %v, want %v", r.ID, kinds, want)
	}
	if es[1].Fields["tier"] == "" || es[2].Fields["signature"] == "" || es[2].Fields["quorum"] == "" {
		t.Fatalf("audit entries %+v: want the tier and the signature with its quorum", es)
	}
}

// TestDecisionRecordedWhileQuorumWaits: a request that goes to signing at
// once records its tier's decision with its first attempt; when no
// attempt can be made (the tier's member answers the dry run but not the
// probe), the decision is recorded all the same, with its audit entry,
// and the request waits for the member under the tier it was given.
func TestDecisionRecordedWhileQuorumWaits(t *testing.T) {
	e, m := newScriptedEnv(t)
	ctx := context.Background()
	pol := m[ids.RolePolicy]
	pol.mu.Lock()
	pol.refuse = func(msg *control.Message) *control.Refusal {
		if msg.Type == control.TypeStatus {
			return &control.Refusal{RuleID: ruleInternal, Reason: "scripted: no status"}
		}
		return nil
	}
	pol.mu.Unlock()
	r, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, e.body(nil))
	if err != nil {
		t.Fatal(err)
	}
	var got *api.Request
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got, err = e.op.Request(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(got.Reason, "waiting: cannot reach") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("request %s (%s), want it waiting for the policy member", got.State, got.Reason)
		}
	}
	if got.State != api.StateSigning || got.Decision == nil || got.Tier != "solo" || len(got.Attempts) != 0 {
		t.Fatalf("request %s tier %q decision %+v attempts %d, want signing under tier solo with its decision and no attempt", got.State, got.Tier, got.Decision, len(got.Attempts))
	}
	es, err := e.c.store.AuditByRequest(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	var decisions int
	for _, en := range es {
		if en.Kind == store.AuditDecision && en.Fields["tier"] == "solo" {
			decisions++
		}
	}
	if decisions != 1 {
		t.Fatalf("audit entries of %s: %+v, want one decision of tier solo", r.ID, es)
	}
	// The member stays out of reach: the request fails, its decision
	// kept, and the log gives the decision before the end.
	e.clock.Add(DefaultUnreachable)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if got, err = e.op.WaitFinal(wctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateFailed || got.RuleID != ruleUnreachable || got.Decision == nil || got.Tier != "solo" {
		t.Fatalf("request %s rule %s tier %q decision %+v, want failed as unreachable with its decision", got.State, got.RuleID, got.Tier, got.Decision)
	}
	if es, err = e.c.store.AuditByRequest(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, en := range es {
		kinds = append(kinds, string(en.Kind)+":"+en.Decision)
	}
	if n := len(es); n < 3 || es[n-1].Decision != api.StateFailed || es[n-2].Fields["tier"] != "solo" {
		t.Fatalf("audit entries of %s: %v, want the tier's decision, then the failure", r.ID, kinds)
	}
}

// submitSigned submits the env's request with the members answering its
// session with a good signature of it, and returns the request.
func submitSigned(t *testing.T, e *env, members ...*scripted) *api.Request {
	t.Helper()
	var mu sync.Mutex
	var req *api.Request
	for _, s := range members {
		s.mu.Lock()
		s.onStart = func(ids.SessionID) *control.Result {
			mu.Lock()
			defer mu.Unlock()
			sig, err := crypto.Sign(req.Digest[:], e.keyPriv)
			if err != nil {
				t.Error(err)
			}
			return &control.Result{State: control.StateDone, Signature: sig}
		}
		s.mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	r, err := e.agentClient(e.bot).SubmitBody(context.Background(), e.bot, e.body(nil))
	if err != nil {
		t.Fatal(err)
	}
	req = r
	return r
}
