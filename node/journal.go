package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// requestState is the node's journal record of one signing request (the
// Body of its store.RequestRecord): what it reserved, which approvals it
// consumed for it and, once signed, the signature.
type requestState struct {
	Session ids.SessionID `json:"session"`
	Key     ids.KeyID     `json:"key"`
	Digest  common.Hash   `json:"digest"`
	// Path is the derivation path signed under Key: with Digest and Key it
	// is what the request id was first proposed for here.
	Path []uint32 `json:"path,omitempty"`
	// Reserved: the ledger holds a reservation under the request id.
	Reserved bool `json:"reserved"`
	// Started: a session ran while the reservation was held, so this node
	// may have sent its last-round share; the reservation is then never
	// released (the signature may exist), only reused by a retry.
	Started   bool          `json:"started"`
	Approvals []common.Hash `json:"approvals,omitempty"`
	Signature hexutil.Bytes `json:"signature,omitempty"`
	Error     string        `json:"error,omitempty"`
}

// Request states in the node's journal.
const (
	// reqProposed: joined. From here the node may start the session
	// without another write, so a restart counts the request as started.
	reqProposed = "proposed"
	// reqRunning: started; written by earlier versions only (a start now
	// writes nothing), and read as reqProposed is.
	reqRunning = "running"
	reqSigned  = "signed"
	reqFailed  = "failed"
)

// loadRequest returns the journal record of request id; found is false when
// the node never saw it.
func (n *Node) loadRequest(ctx context.Context, id ids.RequestID) (rs requestState, state string, found bool, err error) {
	rec, err := n.st.Request(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return requestState{}, "", false, nil
	}
	if err != nil {
		return requestState{}, "", false, err
	}
	if err := json.Unmarshal(rec.Body, &rs); err != nil {
		return requestState{}, "", false, fmt.Errorf("node: journal of %s: %w", id, err)
	}
	return rs, rec.State, true, nil
}

// saveRequest writes the journal record of request id.
func (n *Node) saveRequest(ctx context.Context, id ids.RequestID, state string, rs requestState) error {
	body, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	return n.saveRecord(ctx, id, state, body)
}

// sessionRecord is the journal record of session s in state.
func (n *Node) sessionRecord(s *session, state string, errText string) store.SessionRecord {
	return store.SessionRecord{
		ID: s.id, RequestID: s.request, Kind: s.kind, State: state, Key: s.key,
		Members: s.members, Culprits: s.result.Culprits, Error: errText,
		Started: s.created, Updated: n.now().UTC(),
	}
}

// putSession journals a session record, logging a failure.
func (n *Node) putSession(ctx context.Context, s *session, state string, errText string) {
	rec := n.sessionRecord(s, state, errText)
	if err := n.st.PutSession(context.WithoutCancel(ctx), rec); err != nil {
		n.log.Error("journal session failed", "session", s.id, "err", err)
	}
}

// loadPolicy re-verifies the genesis document, re-applies every stored
// replacement in order and restores the engine's state (freezes,
// revocations, breaker).
func (n *Node) loadPolicy(ctx context.Context) error {
	latest, err := n.st.LatestPolicyDocument(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("node: load policy: %w", err)
	}
	var eng *policy.Engine
	for v := uint64(1); v <= latest.Version; v++ {
		d, err := n.st.PolicyDocumentByVersion(ctx, v)
		if err != nil {
			return fmt.Errorf("node: load policy version %d: %w", v, err)
		}
		if eng == nil {
			p, err := policy.VerifyDocument(d.Signed, n.set.genesis)
			if err != nil {
				return fmt.Errorf("node: stored genesis policy no longer verifies: %w", err)
			}
			eng = policy.NewEngine(p, n.st.Ledger())
			continue
		}
		if err := eng.ApplyDocument(d.Signed); err != nil {
			return fmt.Errorf("node: re-apply stored policy version %d: %w", v, err)
		}
	}
	if st, found, err := n.st.PolicyState(ctx); err != nil {
		return fmt.Errorf("node: load policy state: %w", err)
	} else if found {
		eng.Restore(st)
	}
	n.engine = eng
	return nil
}

// saveState persists the engine's state snapshot; callers hold policyMu
// or accept a concurrent newer snapshot winning (SavePolicyState keeps the
// highest Seq).
func (n *Node) saveState(ctx context.Context, eng *policy.Engine) error {
	if _, err := n.st.SavePolicyState(context.WithoutCancel(ctx), eng.Export()); err != nil {
		return fmt.Errorf("node: persist policy state: %w", err)
	}
	return nil
}

// recoverJournal fails the sessions that were proposed or running when the
// node stopped. A reservation no session can have used (journaled before
// the join) is released; one of a joined proposal is kept, since a start
// writes nothing before the session's first message (this node may have
// sent its last share, so the signature may exist), and a retry of the
// request reuses it, so nothing is reserved twice.
func (n *Node) recoverJournal(ctx context.Context) error {
	open, err := n.st.Requests(ctx, func(r store.RequestRecord) bool {
		return r.State != reqSigned && !isQueueRecord(r.ID)
	})
	if err != nil {
		return fmt.Errorf("node: read journal: %w", err)
	}
	for _, rec := range open {
		var rs requestState
		if err := json.Unmarshal(rec.Body, &rs); err != nil {
			return fmt.Errorf("node: journal of %s: %w", rec.ID, err)
		}
		if rec.State == reqFailed && (!rs.Reserved || rs.Started) {
			continue // ended, nothing held that may be released
		}
		// A joined signing proposal may have started: a start writes
		// nothing before the session's first message (Node.start).
		if rec.State == reqProposed || rec.State == reqRunning {
			rs.Started = true
		}
		outcome := "released"
		if rs.Reserved && !rs.Started && n.engine != nil {
			if err := n.engine.Release(ctx, rec.ID); err != nil && !errors.Is(err, policy.ErrUnknownRequest) {
				return fmt.Errorf("node: release %s after restart: %w", rec.ID, err)
			}
			rs.Reserved = false
		} else if rs.Reserved {
			outcome = "kept (a session may have run with it)"
		}
		rs.Error = "node restarted during the session"
		if err := n.saveRequest(ctx, rec.ID, reqFailed, rs); err != nil {
			return err
		}
		if sr, err := n.st.Session(ctx, rs.Session); err == nil {
			sr.State, sr.Error, sr.Updated = control.StateFailed, rs.Error, n.now().UTC()
			if err := n.st.PutSession(ctx, sr); err != nil {
				return fmt.Errorf("node: journal session %s: %w", rs.Session, err)
			}
		}
		n.audit(ctx, store.Entry{Kind: store.AuditSession, RequestID: rec.ID, Decision: control.StateFailed,
			Fields: map[string]string{"session": rs.Session.String(), "reason": rs.Error, "reservation": outcome}})
		n.log.Warn("failed a session interrupted by a restart", "request", rec.ID, "session", rs.Session, "reservation", outcome)
	}
	return n.releaseOrphans(ctx)
}

// releaseOrphans releases the reservations the ledger holds for requests
// whose journal does not record them: no record at all, or one that says
// nothing is reserved (a failed attempt released its reservation, and a
// retry reserved again). A proposal's reservation commits in the batch
// that journals it (a staged reservation, see store.Stage); a release
// journals "not reserved" first and lets the ledger go after, so a crash
// between the two leaves such a reservation, as does a journal of an
// earlier version, which reserved first and journaled after. No session
// can have used one: a session starts only after the join's batch
// recorded the reservation, and a started one is never released. It runs
// before the node takes messages.
func (n *Node) releaseOrphans(ctx context.Context) error {
	if n.engine == nil {
		return nil
	}
	held, err := n.st.Ledger().Held(ctx)
	if err != nil {
		return fmt.Errorf("node: read ledger: %w", err)
	}
	for _, id := range held {
		rec, err := n.st.Request(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return fmt.Errorf("node: journal of %s: %w", id, err)
		default:
			var rs requestState
			if err := json.Unmarshal(rec.Body, &rs); err != nil {
				return fmt.Errorf("node: journal of %s: %w", id, err)
			}
			if rs.Reserved {
				continue // the journal's own recovery decided about it
			}
		}
		if err := n.engine.Release(ctx, id); err != nil && !errors.Is(err, policy.ErrUnknownRequest) {
			return fmt.Errorf("node: release %s after restart: %w", id, err)
		}
		n.audit(ctx, store.Entry{Kind: store.AuditSession, RequestID: id, Decision: control.StateFailed,
			Fields: map[string]string{"reason": "node restarted before it journaled the proposal", "reservation": "released"}})
		n.log.Warn("released a reservation no proposal journaled", "request", id)
	}
	return nil
}

// The guardian queue is journalled too, under its own id prefix, so a
// request waiting hours for a human survives a restart of its node.
const (
	queuePrefix   = "queue/"
	queueWaiting  = "queued"
	queueFinished = "dequeued"
	// queueDenied: this node's guardian denied the request; the node joins
	// no session of it afterwards, even with approvals given before.
	queueDenied = "denied"
)

func queueRecordID(id ids.RequestID) ids.RequestID { return ids.RequestID(queuePrefix + string(id)) }

func isQueueRecord(id ids.RequestID) bool { return strings.HasPrefix(string(id), queuePrefix) }

// saveQueued journals a pending request as the coordinator sent it.
func (n *Node) saveQueued(ctx context.Context, p *control.Pending) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return n.saveRecord(ctx, queueRecordID(p.RequestID), queueWaiting, body)
}

// dequeue marks a queued request finished (signed or expired).
func (n *Node) dequeue(ctx context.Context, id ids.RequestID) { n.endQueued(ctx, id, queueFinished) }

// endQueued marks a queued request finished in state (queueFinished or
// queueDenied); a denial is never turned back into a plain finish.
func (n *Node) endQueued(ctx context.Context, id ids.RequestID, state string) {
	_, err := n.st.UpdateRequest(context.WithoutCancel(ctx), queueRecordID(id), func(r *store.RequestRecord) error {
		if r.State != queueDenied {
			r.State = state
		}
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		n.log.Error("journal guardian queue", "request", id, "err", err)
	}
}

// reloadQueue puts the journalled guardian queue back, checking each
// request again (an expired one is dropped).
func (n *Node) reloadQueue(ctx context.Context) error {
	recs, err := n.st.Requests(ctx, func(r store.RequestRecord) bool { return isQueueRecord(r.ID) && r.State == queueWaiting })
	if err != nil {
		return fmt.Errorf("node: read guardian queue: %w", err)
	}
	for _, r := range recs {
		var p control.Pending
		if err := json.Unmarshal(r.Body, &p); err != nil {
			return fmt.Errorf("node: guardian queue record %s: %w", r.ID, err)
		}
		if err := n.enqueue(ctx, &p, r.Created); err != nil {
			n.log.Info("dropped a queued request on restart", "request", p.RequestID, "reason", err)
			n.dequeue(ctx, p.RequestID)
		}
	}
	return nil
}

func (n *Node) saveRecord(ctx context.Context, id ids.RequestID, state string, body []byte) error {
	ctx = context.WithoutCancel(ctx)
	now := n.now().UTC()
	_, created, err := n.st.CreateRequest(ctx, store.RequestRecord{ID: id, State: state, Body: body, Created: now, Updated: now})
	if err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("node: journal %s: %w", id, err)
	}
	if created {
		return nil
	}
	if _, err := n.st.UpdateRequest(ctx, id, func(r *store.RequestRecord) error {
		r.State, r.Body, r.Updated = state, body, now
		return nil
	}); err != nil {
		return fmt.Errorf("node: journal %s: %w", id, err)
	}
	return nil
}

// deniedHere reports whether this node's guardian denied request id.
func (n *Node) deniedHere(ctx context.Context, id ids.RequestID) (bool, error) {
	rec, err := n.st.Request(ctx, queueRecordID(id))
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return rec.State == queueDenied, nil
}
