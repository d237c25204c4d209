package coordinator

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
)

// access is who may call a route.
type access int

const (
	// anyone: no credential needed (health, and what guardians signed:
	// its signature is the credential, checked against the policy).
	anyone access = iota
	// authed: an operator token or an agent signature.
	authed
	// operator: an operator token; an agent credential is refused.
	operator
	// agent: an agent-signed request.
	agent
)

// Body limits.
const (
	smallBody  = 64 << 10
	policyBody = 2*policy.MaxDocumentSize + 64<<10
	noBody     = 1 << 10
)

// MaxWait bounds GET /v1/requests/{id}/wait.
const MaxWait = 2 * time.Minute

// DefaultWait is the wait when the query gives none.
const DefaultWait = 30 * time.Second

type caller struct {
	kind   string // operator, agent, anonymous
	name   string // the operator's name, the agent id, the remote address
	agent  ids.AgentID
	signed *agentauth.Signed
}

type route struct {
	Method  string
	Pattern string
	access  access
	limit   int64
	h       func(w http.ResponseWriter, r *http.Request, cl *caller, body []byte) error
}

// Routes lists the REST API's routes as "METHOD /pattern" (the OpenAPI
// document describes exactly these).
func Routes() []string {
	var c Coordinator
	var out []string
	for _, r := range c.routes() {
		out = append(out, r.Method+" "+r.Pattern)
	}
	return append(out, "GET /metrics")
}

func (c *Coordinator) routes() []route {
	return []route{
		{"GET", "/v1/health", anyone, noBody, c.getHealth},
		{"POST", "/v1/keys", operator, smallBody, c.postKeys},
		{"GET", "/v1/keys", authed, noBody, c.getKeys},
		{"GET", "/v1/keys/{key}", authed, noBody, c.getKey},
		{"POST", "/v1/keys/{key}/reshare", operator, smallBody, c.postReshare},
		{"GET", "/v1/operations/{id}", operator, noBody, c.getOperation},
		{"POST", "/v1/requests", agent, api.MaxSignRequestBody, c.postRequest},
		{"GET", "/v1/requests/{id}", authed, noBody, c.getRequest},
		{"GET", "/v1/requests/{id}/wait", authed, noBody, c.waitRequest},
		{"POST", "/v1/requests/{id}/approvals", anyone, smallBody, c.postApproval},
		{"POST", "/v1/requests/{id}/denials", anyone, smallBody, c.postDenial},
		{"POST", "/v1/requests/{id}/broadcast", authed, noBody, c.postBroadcast},
		{"GET", "/v1/approvals", authed, noBody, c.getApprovals},
		{"GET", "/v1/policy", authed, noBody, c.getPolicy},
		{"POST", "/v1/policy", operator, policyBody, c.postPolicy},
		{"POST", "/v1/policy/dry-run", authed, 2 * api.MaxSignRequestBody, c.postDryRun},
		{"POST", "/v1/grants", anyone, smallBody, c.postGrant},
		{"POST", "/v1/revocations", anyone, smallBody, c.postRevocation},
		{"POST", "/v1/freezes", anyone, smallBody, c.postFreeze},
		{"POST", "/v1/unfreezes", anyone, smallBody, c.postUnfreeze},
		{"GET", "/v1/audit", operator, noBody, c.getAudit},
	}
}

func (c *Coordinator) handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range c.routes() {
		mux.Handle(rt.Method+" "+rt.Pattern, httpapi.Wrap(c.log, c.serve(rt)))
	}
	mux.Handle("GET /metrics", c.metrics.handler())
	mux.Handle("/", httpapi.Wrap(c.log, func(w http.ResponseWriter, r *http.Request) error {
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no route %s %s", r.Method, r.URL.Path)
	}))
	return mux
}

func (c *Coordinator) serve(rt route) httpapi.Handler {
	label := rt.Method + " " + rt.Pattern
	return func(w http.ResponseWriter, r *http.Request) (err error) {
		defer func() {
			status := "2xx"
			var ae *httpapi.Error
			if errors.As(err, &ae) {
				status = strconv.Itoa(ae.Status)
			} else if err != nil {
				status = "500"
			}
			c.metrics.http.WithLabelValues(label, status).Inc()
		}()
		body, err := httpapi.ReadBody(w, r, rt.limit)
		if err != nil {
			return err
		}
		cl, err := c.authenticate(r, body)
		if err != nil {
			return err
		}
		switch {
		case rt.access == operator && cl.kind == "agent":
			return httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "%s needs an operator credential; an agent credential cannot call it", label)
		case rt.access == operator && cl.kind != "operator":
			return httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "%s needs an operator bearer token", label)
		case rt.access == agent && cl.kind == "operator":
			return httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "%s takes a request signed with an agent credential, not an operator token", label)
		case rt.access == agent && cl.kind != "agent":
			return httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "%s needs a request signed with an agent credential (%s headers)", label, agentauth.HeaderSignature)
		case rt.access == authed && cl.kind == "anonymous":
			return httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "%s needs an operator bearer token or an agent signature", label)
		}
		lim := c.limAnon
		switch cl.kind {
		case "agent":
			lim = c.limAgent
		case "operator":
			lim = c.limOper
		}
		if err := lim.Allow(cl.kind + ":" + cl.name); err != nil {
			return err
		}
		return rt.h(w, r, cl, body)
	}
}

func (c *Coordinator) operatorName(tok string) string {
	name := ""
	for t, n := range c.cfg.tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
			name = n
		}
	}
	return name
}

func (c *Coordinator) authenticate(r *http.Request, body []byte) (*caller, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "the Authorization header must be \"Bearer <token>\"")
		}
		name := c.operatorName(strings.TrimSpace(tok))
		if name == "" {
			return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "unknown operator token")
		}
		return &caller{kind: "operator", name: name}, nil
	}
	if r.Header.Get(agentauth.HeaderAgent) != "" || r.Header.Get(agentauth.HeaderSignature) != "" {
		s, err := agentauth.FromHTTP(r, body)
		if err != nil {
			return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "agent signature: %v", err)
		}
		if err := c.verifier.Verify(s, c.now()); err != nil {
			return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "agent signature: %v", err)
		}
		return &caller{kind: "agent", name: string(s.Agent), agent: s.Agent, signed: &s}, nil
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return &caller{kind: "anonymous", name: host}, nil
}

func withRequest(err error, id ids.RequestID) error {
	var ae *httpapi.Error
	if errors.As(err, &ae) && ae.RequestID == "" {
		ae.RequestID = string(id)
	}
	return err
}

func (c *Coordinator) getHealth(w http.ResponseWriter, r *http.Request, _ *caller, _ []byte) error {
	members := c.configured()
	st := c.probe(r.Context(), members)
	h := api.Health{Status: "ok", Peer: c.p2p.ID().String()}
	if p := c.pol.current(); p != nil {
		h.PolicyVersion = p.Version()
	}
	for _, m := range members {
		mh := api.MemberHealth{ID: m, Role: c.roles[m], Reachable: st[m] != nil}
		if s := st[m]; s != nil {
			mh.PolicyVersion, mh.PreParams = s.PolicyVersion, s.PreParams
			for _, ps := range s.Presignatures {
				if mh.Presignatures == nil {
					mh.Presignatures = map[ids.KeyID]int{}
				}
				mh.Presignatures[ps.Key]++
			}
		} else {
			h.Status = "degraded"
		}
		h.Members = append(h.Members, mh)
	}
	h.Pending = c.inProgress()
	httpapi.WriteJSON(w, http.StatusOK, h)
	return nil
}

func (c *Coordinator) postKeys(w http.ResponseWriter, r *http.Request, _ *caller, body []byte) error {
	var ck api.CreateKey
	if err := httpapi.Decode(r, body, &ck); err != nil {
		return err
	}
	op, err := c.createKey(r.Context(), ck)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/operations/"+op.ID)
	httpapi.WriteJSON(w, http.StatusAccepted, op)
	return nil
}

func (c *Coordinator) getKeys(w http.ResponseWriter, r *http.Request, _ *caller, _ []byte) error {
	keys, err := c.keys(r.Context())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, api.Keys{Keys: keys})
	return nil
}

func pathKey(r *http.Request) (ids.KeyID, error) {
	k, err := ids.ParseKeyID(r.PathValue("key"))
	if err != nil {
		return ids.KeyID{}, badRequest("key %q: %v", r.PathValue("key"), err)
	}
	return k, nil
}

func (c *Coordinator) getKey(w http.ResponseWriter, r *http.Request, _ *caller, _ []byte) error {
	k, err := pathKey(r)
	if err != nil {
		return err
	}
	ki, err := c.keyInfo(r.Context(), k)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, api.KeyFrom(ki))
	return nil
}

func (c *Coordinator) postReshare(w http.ResponseWriter, r *http.Request, _ *caller, body []byte) error {
	k, err := pathKey(r)
	if err != nil {
		return err
	}
	var rk api.ReshareKey
	if err := httpapi.Decode(r, body, &rk); err != nil {
		return err
	}
	op, err := c.reshareKey(r.Context(), k, rk)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/operations/"+op.ID)
	httpapi.WriteJSON(w, http.StatusAccepted, op)
	return nil
}

func (c *Coordinator) getOperation(w http.ResponseWriter, r *http.Request, _ *caller, _ []byte) error {
	b, err := c.operation(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, b.View)
	return nil
}

func (c *Coordinator) postRequest(w http.ResponseWriter, r *http.Request, cl *caller, body []byte) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return httpapi.Errorf(http.StatusUnsupportedMediaType, httpapi.CodeMediaType, "content type %q: want application/json", ct)
	}
	view, created, err := c.submit(r.Context(), *cl.signed)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusAccepted
	}
	w.Header().Set("Location", "/v1/requests/"+string(view.ID))
	httpapi.WriteJSON(w, status, view)
	return nil
}

func pathRequest(r *http.Request) (ids.RequestID, error) {
	id, err := ids.ParseRequestID(r.PathValue("id"))
	if err != nil || !strings.HasPrefix(string(id), "req:") {
		return "", badRequest("request id %q: want req: and hex digits", r.PathValue("id"))
	}
	return id, nil
}

// visible loads a request the caller may see: an agent sees its own only.
func (c *Coordinator) visible(ctx context.Context, r *http.Request, cl *caller) (*reqBody, error) {
	id, err := pathRequest(r)
	if err != nil {
		return nil, err
	}
	b, err := c.load(ctx, id)
	if err != nil {
		return nil, withRequest(err, id)
	}
	if cl.kind == "agent" && b.View.Agent != cl.agent {
		return nil, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "unknown request %s", id)
	}
	return b, nil
}

func (c *Coordinator) getRequest(w http.ResponseWriter, r *http.Request, cl *caller, _ []byte) error {
	b, err := c.visible(r.Context(), r, cl)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, b.View)
	return nil
}

func (c *Coordinator) waitRequest(w http.ResponseWriter, r *http.Request, cl *caller, _ []byte) error {
	timeout := DefaultWait
	if s := r.URL.Query().Get("timeout"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return badRequest("timeout %q: want a duration such as 30s", s)
		}
		timeout = min(d, MaxWait)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	// Reads are not cut short by the poll's end: a poll ended by the
	// timeout or a shutdown still answers with the request as it stands.
	read := context.WithoutCancel(r.Context())
	for {
		id, _ := pathRequest(r)
		wake := c.watch(string(id))
		b, err := c.visible(read, r, cl)
		if err != nil {
			return err
		}
		if api.Final(b.View.State) || ctx.Err() != nil {
			httpapi.WriteJSON(w, http.StatusOK, b.View)
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
		}
	}
}

func (c *Coordinator) postApproval(w http.ResponseWriter, r *http.Request, _ *caller, body []byte) error {
	id, err := pathRequest(r)
	if err != nil {
		return err
	}
	var a api.Approval
	if err := httpapi.Decode(r, body, &a); err != nil {
		return withRequest(err, id)
	}
	view, err := c.addApproval(r.Context(), id, a)
	if err != nil {
		return withRequest(err, id)
	}
	httpapi.WriteJSON(w, http.StatusOK, view)
	return nil
}

func (c *Coordinator) postDenial(w http.ResponseWriter, r *http.Request, _ *caller, body []byte) error {
	id, err := pathRequest(r)
	if err != nil {
		return err
	}
	var d api.Denial
	if err := httpapi.Decode(r, body, &d); err != nil {
		return withRequest(err, id)
	}
	view, err := c.addDenial(r.Context(), id, d)
	if err != nil {
		return withRequest(err, id)
	}
	httpapi.WriteJSON(w, http.StatusOK, view)
	return nil
}

func (c *Coordinator) postBroadcast(w http.ResponseWriter, r *http.Request, cl *caller, _ []byte) error {
	b, err := c.visible(r.Context(), r, cl)
	if err != nil {
		return err
	}
	view, err := c.broadcast(r.Context(), b.View.ID)
	if err != nil {
		return withRequest(err, b.View.ID)
	}
	httpapi.WriteJSON(w, http.StatusOK, view)
	return nil
}

func (c *Coordinator) getApprovals(w http.ResponseWriter, r *http.Request, cl *caller, _ []byte) error {
	recs, err := c.store.RequestsPrefixed(r.Context(), "req:", func(rec store.RequestRecord) bool {
		return rec.State == api.StatePendingApproval
	})
	if err != nil {
		return err
	}
	out := api.PendingApprovals{Requests: []api.Request{}}
	for _, rec := range recs {
		b, err := c.load(r.Context(), rec.ID)
		if err != nil {
			return err
		}
		if cl.kind == "agent" && b.View.Agent != cl.agent {
			continue
		}
		out.Requests = append(out.Requests, b.View)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (c *Coordinator) getPolicy(w http.ResponseWriter, _ *http.Request, _ *caller, _ []byte) error {
	d, ok := c.pol.document()
	if !ok {
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no policy yet: POST /v1/policy a guardian-signed genesis document")
	}
	p := c.pol.current()
	httpapi.WriteJSON(w, http.StatusOK, api.Policy{Version: d.Version, Hash: d.Hash, WalletID: p.WalletID(), Document: api.PolicyDocumentFrom(d.Signed)})
	return nil
}

func (c *Coordinator) postPolicy(w http.ResponseWriter, r *http.Request, cl *caller, body []byte) error {
	var pd api.PolicyDocument
	if err := httpapi.Decode(r, body, &pd); err != nil {
		return err
	}
	if len(pd.Source) > policy.MaxDocumentSize {
		return httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "policy source of %d bytes exceeds %d", len(pd.Source), policy.MaxDocumentSize)
	}
	d, fresh, err := c.pol.accept(r.Context(), pd.Policy(), c.now())
	if err != nil {
		var ae *httpapi.Error
		if errors.As(err, &ae) {
			return err
		}
		if strings.HasPrefix(err.Error(), "store") {
			return err
		}
		return badRequest("policy refused: %v", err)
	}
	if fresh {
		c.audit(r.Context(), store.Entry{Kind: store.AuditPolicy, Decision: "document", Fields: map[string]string{
			"version": fmt.Sprint(d.Version), "hash": d.Hash.Hex(), "operator": cl.name}})
	}
	// Push the document as verified and stored: the same source again
	// goes out with the signatures that made it current.
	stored := api.PolicyDocumentFrom(d.Signed)
	acks := c.push(r.Context(), &control.Message{Type: control.TypePolicy, Policy: &control.PolicyUpdate{Document: &stored}})
	httpapi.WriteJSON(w, http.StatusOK, api.Pushed{Version: d.Version, Hash: d.Hash, Members: acks})
	return nil
}

func (c *Coordinator) postDryRun(w http.ResponseWriter, r *http.Request, _ *caller, body []byte) error {
	var dr api.DryRunRequest
	if err := httpapi.Decode(r, body, &dr); err != nil {
		return err
	}
	pr, err := api.ParseSigned(dr.Request, c.now())
	if err != nil {
		return badRequest("%s", strings.TrimPrefix(err.Error(), api.ErrBadRequest.Error()+": "))
	}
	id := control.RequestID(dr.Request.Agent, pr.IdempotencyKey)
	var members []ids.MemberID
	if ki, err := c.keyInfo(r.Context(), pr.Key); err == nil {
		for _, m := range ki.Committee.Canonical().Members {
			if m.Role == ids.RolePolicy {
				members = append(members, m.ID)
			}
		}
	} else {
		return err
	}
	if len(members) == 0 {
		members = c.configured()
	}
	var lastErr error
	for _, m := range members {
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.Timeouts.Propose)
		rep, err := c.call(ctx, m, &control.Message{Type: control.TypeEvaluate, Evaluate: &control.Evaluate{RequestID: id, Request: dr.Request}})
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		if rep.Refusal != nil {
			e := httpapi.Errorf(http.StatusUnprocessableEntity, httpapi.CodeBadRequest, "%s", rep.Refusal.Error())
			e.Data = rep.Refusal
			return e
		}
		if rep.Decision == nil {
			lastErr = fmt.Errorf("%s answered without a decision", m)
			continue
		}
		d := rep.Decision
		out := api.DryRun{Digest: d.Digest, Trace: []api.TraceStep{}, Decision: api.Decision{Verdict: d.Verdict, RuleID: d.RuleID,
			Reason: d.Reason, Tier: d.Tier, Roles: d.Roles, Approvals: d.Approvals, PolicyHash: d.PolicyHash,
			PolicyVersion: d.PolicyVersion, Member: m}}
		if d.Delay > 0 {
			out.Decision.Delay = time.Duration(d.Delay).String()
		}
		for _, s := range d.Trace {
			out.Trace = append(out.Trace, api.TraceStep{Rule: s.Rule, Matched: s.Matched, Detail: s.Detail})
		}
		for _, b := range d.Budgets {
			ab := api.BudgetLeft{Rule: b.Rule, Asset: b.Asset, Limit: b.Limit, Used: b.Used, Left: b.Left, CountLimit: b.CountLimit, CountUsed: b.CountUsed}
			if b.Window > 0 {
				ab.Window = time.Duration(b.Window).String()
			}
			out.Budgets = append(out.Budgets, ab)
		}
		httpapi.WriteJSON(w, http.StatusOK, out)
		return nil
	}
	return httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "no policy member answered the dry run: %v", lastErr)
}

func (c *Coordinator) postGrant(w http.ResponseWriter, r *http.Request, _ *caller, body []byte) error {
	var g api.Grant
	if err := httpapi.Decode(r, body, &g); err != nil {
		return err
	}
	sg, err := g.Policy()
	if err != nil {
		return badRequest("grant: %v", err)
	}
	p := c.pol.current()
	if p == nil {
		return httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "no policy yet: a grant cannot be checked")
	}
	if _, err := guardianOf(p, sg.Grant.TypedData(p.WalletID()), sg.Signature); err != nil {
		return badRequest("grant %s: %v", g.ID, err)
	}
	acks := c.push(r.Context(), &control.Message{Type: control.TypePolicy, Policy: &control.PolicyUpdate{Grant: &g}})
	c.audit(r.Context(), store.Entry{Kind: store.AuditPolicy, Decision: "grant", Fields: map[string]string{"grant": g.ID, "agent": string(g.Agent)}})
	httpapi.WriteJSON(w, http.StatusOK, api.Pushed{Members: acks})
	return nil
}

// freeze checks a freeze against the current policy and pushes it to every
// member before it answers.
func (c *Coordinator) freeze(ctx context.Context, f api.Freeze) (api.Pushed, error) {
	p := c.pol.current()
	if p == nil {
		return api.Pushed{}, httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "no policy yet: a freeze cannot be checked")
	}
	pf, sig := f.Policy()
	if err := checkFreeze(p, pf, sig); err != nil {
		return api.Pushed{}, badRequest("%v", err)
	}
	acks := c.push(ctx, &control.Message{Type: control.TypeFreeze, Freeze: &f})
	c.audit(ctx, store.Entry{Kind: store.AuditPolicy, Decision: "freeze", Fields: map[string]string{"target": string(f.Target), "reason": f.Reason, "acknowledged": ackList(acks)}})
	return api.Pushed{Members: acks}, nil
}

func ackList(acks []api.MemberAck) string {
	var s []string
	for _, a := range acks {
		if a.Accepted {
			s = append(s, string(a.Member))
		}
	}
	slices.Sort(s)
	return strings.Join(s, ",")
}

func (c *Coordinator) postFreeze(w http.ResponseWriter, r *http.Request, _ *caller, body []byte) error {
	var f api.Freeze
	if err := httpapi.Decode(r, body, &f); err != nil {
		return err
	}
	out, err := c.freeze(r.Context(), f)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (c *Coordinator) postUnfreeze(w http.ResponseWriter, r *http.Request, _ *caller, body []byte) error {
	var u api.Unfreeze
	if err := httpapi.Decode(r, body, &u); err != nil {
		return err
	}
	p := c.pol.current()
	if p == nil {
		return httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "no policy yet: an unfreeze cannot be checked")
	}
	pu, sigs := u.Policy()
	if err := checkUnfreeze(p, pu, sigs); err != nil {
		return badRequest("%v", err)
	}
	acks := c.push(r.Context(), &control.Message{Type: control.TypeUnfreeze, Unfreeze: &u})
	c.audit(r.Context(), store.Entry{Kind: store.AuditPolicy, Decision: "unfreeze", Fields: map[string]string{"target": string(u.Target), "freeze": u.Freeze.Hex(), "acknowledged": ackList(acks)}})
	httpapi.WriteJSON(w, http.StatusOK, api.Pushed{Members: acks})
	return nil
}

// parseBound reads an audit bound: a sequence number or an RFC 3339 time.
func parseBound(s string) (seq uint64, t time.Time, err error) {
	if s == "" {
		return 0, time.Time{}, nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return n, time.Time{}, nil
	}
	t, err = time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("%q is neither a sequence number nor an RFC 3339 time", s)
	}
	return 0, t, nil
}

func (c *Coordinator) getAudit(w http.ResponseWriter, r *http.Request, _ *caller, _ []byte) error {
	q := r.URL.Query()
	fromSeq, fromT, err := parseBound(q.Get("from"))
	if err != nil {
		return badRequest("from: %v", err)
	}
	toSeq, toT, err := parseBound(q.Get("to"))
	if err != nil {
		return badRequest("to: %v", err)
	}
	member := q.Get("member")
	reqID := q.Get("request")
	entries, err := c.store.AuditRange(r.Context(), max(fromSeq, 1), toSeq)
	if err != nil {
		return err
	}
	out := api.Audit{Entries: []api.AuditEntry{}}
	for _, e := range entries {
		if !fromT.IsZero() && e.Time.Before(fromT) || !toT.IsZero() && e.Time.After(toT) {
			continue
		}
		if reqID != "" && string(e.RequestID) != reqID {
			continue
		}
		if member != "" && !mentions(e, member) {
			continue
		}
		out.Entries = append(out.Entries, api.AuditEntry{Seq: e.Seq, Time: e.Time, Kind: string(e.Kind), RequestID: e.RequestID,
			Decision: e.Decision, RuleID: e.RuleID, Fields: e.Fields, PrevHash: e.PrevHash, Hash: e.Hash})
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func mentions(e store.Entry, member string) bool {
	for _, v := range e.Fields {
		if slices.Contains(strings.Split(v, ","), member) {
			return true
		}
	}
	return false
}

// postRevocation checks a guardian's revocation of a session grant against
// the current policy and pushes it to every member; each member verifies
// the signature again before it refuses the grant.
func (c *Coordinator) postRevocation(w http.ResponseWriter, r *http.Request, _ *caller, body []byte) error {
	var rv api.Revocation
	if err := httpapi.Decode(r, body, &rv); err != nil {
		return err
	}
	pr, sig, err := rv.Policy()
	if err != nil {
		return badRequest("%v", err)
	}
	p := c.pol.current()
	if p == nil {
		return httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "no policy yet: a revocation cannot be checked")
	}
	if err := checkRevocation(p, pr, sig); err != nil {
		return badRequest("%v", err)
	}
	acks := c.push(r.Context(), &control.Message{Type: control.TypePolicy, Policy: &control.PolicyUpdate{Revocation: &control.Revocation{
		GrantID: rv.GrantID, Issued: rv.Issued, Signature: rv.Signature}}})
	c.audit(r.Context(), store.Entry{Kind: store.AuditPolicy, Decision: "revocation", Fields: map[string]string{"grant": rv.GrantID, "acknowledged": ackList(acks)}})
	httpapi.WriteJSON(w, http.StatusOK, api.Pushed{Members: acks})
	return nil
}
