package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
)

// opPrefix starts the journal ids of key operations.
const opPrefix = "op:"

// Operation kinds.
const (
	opKeygen  = "keygen"
	opReshare = "reshare"
)

// opBody is a key operation's journal record.
type opBody struct {
	View     api.Operation  `json:"view"`
	Session  ids.SessionID  `json:"session"`
	Members  []ids.MemberID `json:"members"`
	Started  bool           `json:"started"`
	Deadline time.Time      `json:"deadline"`
	// Reshare only.
	Key           *tss.KeyInfo   `json:"key,omitempty"`
	OldSigners    []ids.MemberID `json:"old_signers,omitempty"`
	Authorization *api.Reshare   `json:"authorization,omitempty"`
}

// checkCommittee checks a committee from a REST body against the
// configured members.
func (c *Coordinator) checkCommittee(cm tss.Committee) error {
	if err := cm.Validate(); err != nil {
		return badRequest("committee: %v", err)
	}
	for _, m := range cm.Members {
		role, ok := c.roles[m.ID]
		if !ok {
			return badRequest("committee member %s is not a configured member", m.ID)
		}
		if role != m.Role {
			return badRequest("committee member %s has role %s here, not %s", m.ID, role, m.Role)
		}
	}
	return nil
}

func newOpID() ids.RequestID {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return ids.RequestID(opPrefix + hex.EncodeToString(b[:]))
}

// createKey starts a key generation across the committee.
func (c *Coordinator) createKey(ctx context.Context, ck api.CreateKey) (api.Operation, error) {
	cm := ck.TSSCommittee()
	if err := c.checkCommittee(cm); err != nil {
		return api.Operation{}, err
	}
	cm = cm.Canonical()
	now := c.now()
	id := newOpID()
	b := opBody{View: api.Operation{ID: string(id), Kind: opKeygen, State: api.OpRunning, Phase: "proposing",
		Committee: cm, Created: now, Updated: now}, Members: cm.IDs()}
	return c.startOp(ctx, id, b)
}

// reshareKey starts a reshare of key k to a new committee.
func (c *Coordinator) reshareKey(ctx context.Context, k ids.KeyID, rk api.ReshareKey) (api.Operation, error) {
	ki, err := c.keyInfo(ctx, k)
	if err != nil {
		return api.Operation{}, err
	}
	cm := rk.TSSCommittee()
	if err := c.checkCommittee(cm); err != nil {
		return api.Operation{}, err
	}
	cm = cm.Canonical()
	if rk.Authorization.Key != ki.Address {
		return api.Operation{}, badRequest("authorization names key %s, not %s", rk.Authorization.Key.Hex(), ki.Address.Hex())
	}
	if len(rk.Authorization.Signatures) == 0 {
		return api.Operation{}, badRequest("authorization carries no guardian signatures")
	}
	statuses := c.probe(ctx, ki.Committee.IDs())
	var old []ids.MemberID
	for _, m := range ki.Committee.Canonical().IDs() {
		if statuses[m] != nil {
			old = append(old, m)
		}
	}
	if len(old) < ki.Committee.Threshold+1 {
		return api.Operation{}, httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable,
			"only %d members of the key's committee are reachable; a reshare needs %d", len(old), ki.Committee.Threshold+1)
	}
	members := slices.Clone(old)
	for _, m := range cm.IDs() {
		if !slices.Contains(members, m) {
			members = append(members, m)
		}
	}
	sort.Slice(members, func(i, j int) bool { return members[i] < members[j] })
	now := c.now()
	id := newOpID()
	key := api.KeyFrom(ki)
	auth := rk.Authorization
	b := opBody{View: api.Operation{ID: string(id), Kind: opReshare, State: api.OpRunning, Phase: "proposing",
		Committee: cm, Key: &key, Created: now, Updated: now},
		Members: members, Key: &ki, OldSigners: old, Authorization: &auth}
	return c.startOp(ctx, id, b)
}

func (c *Coordinator) startOp(ctx context.Context, id ids.RequestID, b opBody) (api.Operation, error) {
	body, err := json.Marshal(b)
	if err != nil {
		return api.Operation{}, err
	}
	if _, _, err := c.store.CreateRequest(ctx, store.RequestRecord{ID: id, State: api.OpRunning, Body: body,
		Created: b.View.Created, Updated: b.View.Created}); err != nil {
		return api.Operation{}, fmt.Errorf("store operation: %w", err)
	}
	c.spawn(string(id), func(ctx context.Context) { c.runOp(ctx, id) })
	return b.View, nil
}

// operation returns a key operation.
func (c *Coordinator) operation(ctx context.Context, id string) (*opBody, error) {
	if !strings.HasPrefix(id, opPrefix) {
		return nil, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "unknown operation %q", id)
	}
	rec, err := c.store.Request(ctx, ids.RequestID(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "unknown operation %q", id)
	}
	if err != nil {
		return nil, err
	}
	var b opBody
	if err := json.Unmarshal(rec.Body, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

func (c *Coordinator) updateOp(ctx context.Context, id ids.RequestID, change func(*opBody)) (*opBody, error) {
	var out opBody
	_, err := c.store.UpdateRequest(ctx, id, func(r *store.RequestRecord) error {
		var b opBody
		if err := json.Unmarshal(r.Body, &b); err != nil {
			return err
		}
		change(&b)
		b.View.Updated = c.now()
		body, err := json.Marshal(&b)
		if err != nil {
			return err
		}
		r.Body, r.State = body, b.View.State
		out = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.notify(string(id))
	return &out, nil
}

func (c *Coordinator) failOp(ctx context.Context, id ids.RequestID, reason string) {
	if _, err := c.updateOp(ctx, id, func(b *opBody) { b.View.State, b.View.Error, b.View.Phase = api.OpFailed, reason, "" }); err != nil {
		c.log.Error("update operation", "operation", id, "err", err)
	}
	c.log.Warn("key operation failed", "operation", id, "reason", reason)
	c.audit(ctx, store.Entry{Kind: store.AuditKey, Decision: "failed", Fields: map[string]string{"operation": string(id), "reason": reason}})
}

// runOp drives a key generation or reshare: propose to every member,
// start, collect until every member reports the same key.
func (c *Coordinator) runOp(ctx context.Context, id ids.RequestID) {
	b, err := c.operation(ctx, string(id))
	if err != nil {
		c.log.Error("load operation", "operation", id, "err", err)
		return
	}
	if b.View.State != api.OpRunning {
		return
	}
	// A key operation is seconds of CPU at every member: no presignature
	// refill starts beside it.
	defer c.presign.busy()()
	if !b.Started {
		if !b.Session.IsZero() {
			// Proposed before a restart and never started: drop it and
			// propose again under a fresh session id.
			c.abort(ctx, b.Session, b.Members)
		}
		if b, err = c.proposeOp(ctx, id, b); err != nil {
			c.failOp(ctx, id, err.Error())
			return
		}
	}
	for ctx.Err() == nil {
		if !c.now().Before(b.Deadline) {
			c.abort(ctx, b.Session, b.Members)
			c.failOp(ctx, id, fmt.Sprintf("%s timed out at %s", b.View.Kind, b.Deadline.UTC().Format(time.RFC3339)))
			return
		}
		began := time.Now()
		done, err := c.collectOp(ctx, id, b)
		if err != nil {
			c.failOp(ctx, id, err.Error())
			return
		}
		if done {
			return
		}
		if time.Since(began) < time.Second {
			sleep(ctx, 500*time.Millisecond, nil)
		}
		if b, err = c.operation(ctx, string(id)); err != nil {
			return
		}
	}
}

func (c *Coordinator) proposeOp(ctx context.Context, id ids.RequestID, b *opBody) (*opBody, error) {
	sess := ids.NewSessionID()
	deadline := c.now().Add(c.cfg.Timeouts.Keygen)
	b, err := c.updateOp(ctx, id, func(b *opBody) {
		b.Session, b.Deadline, b.View.Phase = sess, deadline, "proposing"
		b.View.Attempts++
	})
	if err != nil {
		return nil, err
	}
	msg := func(ids.MemberID) *control.Message {
		if b.View.Kind == opKeygen {
			return &control.Message{Type: control.TypeKeygen, Keygen: &control.Keygen{Session: sess, Committee: b.View.Committee, Deadline: deadline}}
		}
		return &control.Message{Type: control.TypeReshare, Reshare: &control.Reshare{Session: sess, Key: *b.Key,
			OldSigners: b.OldSigners, NewCommittee: b.View.Committee, Authorization: *b.Authorization, Deadline: deadline}}
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose)
	answers := c.callAll(pctx, b.Members, msg)
	cancel()
	var problems []string
	var joined, unready []ids.MemberID
	for _, a := range answers {
		switch {
		case a.err != nil:
			problems = append(problems, a.err.Error())
		case a.reply.Refusal != nil:
			problems = append(problems, a.reply.Refusal.Error())
		case a.reply.Join == nil:
			problems = append(problems, fmt.Sprintf("%s answered with neither join nor refusal", a.member))
		default:
			joined = append(joined, a.member)
			if !a.reply.Join.PreParams {
				unready = append(unready, a.member)
			}
		}
	}
	if len(problems) > 0 {
		c.abort(ctx, sess, joined)
		return nil, fmt.Errorf("%s not joined: %s", b.View.Kind, strings.Join(problems, "; "))
	}
	// A member that starts while another still makes its pre-parameters
	// waits for that member's first message, and gives up when its engine's
	// idle timeout passes: so nobody starts before every member has them.
	if err := c.awaitPreParams(ctx, id, unready, deadline); err != nil {
		c.abort(ctx, sess, joined)
		return nil, fmt.Errorf("%s not started: %w", b.View.Kind, err)
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Propose)
	for _, a := range c.callAll(sctx, b.Members, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypeStart, Start: &control.SessionRef{Session: sess}}
	}) {
		if a.err != nil || a.reply.Refusal != nil {
			c.log.Warn("start not accepted", "operation", id, "member", a.member, "err", a.err)
		}
	}
	cancel()
	return c.updateOp(ctx, id, func(b *opBody) { b.Started, b.View.Phase = true, b.View.Kind })
}

// awaitPreParams waits until every member of unready reports a
// pre-parameter set in its pool, showing which ones it still waits for in
// the operation's progress. It gives up at deadline.
func (c *Coordinator) awaitPreParams(ctx context.Context, id ids.RequestID, unready []ids.MemberID, deadline time.Time) error {
	for len(unready) > 0 {
		progress := map[ids.MemberID]string{}
		var still []ids.MemberID
		for m, st := range c.probe(ctx, unready) {
			switch {
			case st == nil:
				progress[m] = "unreachable while making pre-parameters"
				still = append(still, m)
			case st.PreParams == 0:
				progress[m] = "making pre-parameters (none ready yet)"
				still = append(still, m)
			}
		}
		if len(still) == 0 {
			return nil
		}
		slices.Sort(still)
		unready = still
		if _, err := c.updateOp(ctx, id, func(b *opBody) { b.View.Progress, b.View.Phase = progress, "pre_params" }); err != nil {
			return err
		}
		wait := min(2*time.Second, deadline.Sub(c.now()))
		if wait <= 0 {
			return fmt.Errorf("pre-parameters of %s not ready by %s", joinIDs(unready), deadline.UTC().Format(time.RFC3339))
		}
		if sleep(ctx, wait, nil); ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// collectOp asks every member for the session's outcome once (each
// waiting up to control.MaxResultWait). It reports whether the operation
// ended.
func (c *Coordinator) collectOp(ctx context.Context, id ids.RequestID, b *opBody) (bool, error) {
	wait := min(b.Deadline.Sub(c.now()), control.MaxResultWait)
	cctx, cancel := context.WithTimeout(ctx, wait+5*time.Second)
	answers := c.callAll(cctx, b.Members, func(ids.MemberID) *control.Message {
		return &control.Message{Type: control.TypeResult, Result: &control.ResultQuery{Session: b.Session, Wait: control.Duration(wait)}}
	})
	cancel()
	progress := map[ids.MemberID]string{}
	var keys []tss.KeyInfo
	var failures []string
	var confirmed, unconfirmed []ids.MemberID
	allDone, waitingPool := true, false
	for _, a := range answers {
		if a.err != nil || a.reply.Result == nil {
			allDone = false
			if a.err != nil {
				progress[a.member] = "unreachable: " + a.err.Error()
			}
			continue
		}
		r := a.reply.Result
		if r.Progress != "" {
			progress[a.member] = r.Progress
			waitingPool = waitingPool || strings.Contains(strings.ToLower(r.Progress), "pre-param")
		}
		switch r.State {
		case control.StateDone:
			if b.View.Committee.Has(a.member) {
				if r.Key == nil {
					failures = append(failures, fmt.Sprintf("%s reported done without the key", a.member))
					continue
				}
				keys = append(keys, *r.Key)
			}
			confirmed = appendNew(confirmed, r.Confirmed...)
			unconfirmed = appendNew(unconfirmed, r.Unconfirmed...)
		case control.StateFailed:
			msg := fmt.Sprintf("%s: %s %s", a.member, r.Failure, r.Error)
			if len(r.Culprits) > 0 {
				msg += " (blamed " + joinIDs(r.Culprits) + ")"
			}
			failures = append(failures, strings.TrimSpace(msg))
		case control.StateUnknown:
			failures = append(failures, fmt.Sprintf("%s has no such session", a.member))
		default:
			allDone = false
		}
	}
	if len(failures) > 0 {
		c.abort(ctx, b.Session, b.Members)
		return true, fmt.Errorf("%s failed: %s", b.View.Kind, strings.Join(failures, "; "))
	}
	if !allDone {
		phase := b.View.Kind
		if waitingPool {
			phase = "pre_params"
		}
		_, err := c.updateOp(ctx, id, func(b *opBody) { b.View.Progress, b.View.Phase = progress, phase })
		return false, err
	}
	first := keys[0]
	for i, k := range keys[1:] {
		if !k.Equal(first) {
			return true, fmt.Errorf("%s: members report different keys (%s and %s)", b.View.Kind, first.Describe(), keys[i+1].Describe())
		}
	}
	if b.View.Kind == opReshare && first.Address != b.Key.Address {
		return true, fmt.Errorf("reshare: the new committee reports address %s, not %s", first.Address.Hex(), b.Key.Address.Hex())
	}
	if err := c.putKey(ctx, first, b.View.Kind == opReshare); err != nil {
		return true, err
	}
	key := api.KeyFrom(first)
	if _, err := c.updateOp(ctx, id, func(b *opBody) {
		b.View.State, b.View.Phase, b.View.Key, b.View.Progress = api.OpDone, "", &key, progress
		b.View.Confirmed, b.View.Unconfirmed = confirmed, unconfirmed
	}); err != nil {
		return true, err
	}
	c.audit(ctx, store.Entry{Kind: store.AuditKey, Decision: b.View.Kind, Fields: map[string]string{
		"operation": string(id), "key": first.ID().String(), "generation": fmt.Sprint(first.Generation),
		"committee": first.Committee.Describe()}})
	c.log.Info("key operation done", "operation", id, "key", first.ID(), "kind", b.View.Kind)
	return true, nil
}

// putKey stores the key as every member reported it.
func (c *Coordinator) putKey(ctx context.Context, ki tss.KeyInfo, replace bool) error {
	body, err := json.Marshal(ki)
	if err != nil {
		return err
	}
	now := c.now()
	id := keyRecordID(ki.ID())
	if replace {
		_, err = c.store.UpdateRequest(ctx, id, func(r *store.RequestRecord) error { r.Body = body; return nil })
	} else {
		_, _, err = c.store.CreateRequest(ctx, store.RequestRecord{ID: id, State: "key", Body: body, Created: now, Updated: now})
	}
	if err != nil {
		return fmt.Errorf("store key %s: %w", ki.ID(), err)
	}
	return nil
}

// keys lists the keys the coordinator created.
func (c *Coordinator) keys(ctx context.Context) ([]api.Key, error) {
	recs, err := c.store.RequestsPrefixed(ctx, "key:", nil)
	if err != nil {
		return nil, err
	}
	out := []api.Key{}
	for _, r := range recs {
		var ki tss.KeyInfo
		if err := json.Unmarshal(r.Body, &ki); err != nil {
			return nil, fmt.Errorf("key record %s: %w", r.ID, err)
		}
		out = append(out, api.KeyFrom(ki))
	}
	return out, nil
}
