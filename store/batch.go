package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
)

// Batch collects writes that commit together, in one synced transaction:
// all of them or none. A node journals the outcome of a session this way
// (the request, its audit entries, the session record) at one disk sync
// instead of one each.
type Batch struct {
	s     *Store
	txn   *badgerTxn
	state *batchState
}

// batchState is what a batch's attempts share: the stage it commits.
type batchState struct {
	staged *Stage
}

// Batch runs fn and commits the writes it made through b in one synced
// transaction; an error from fn (or from a write) commits nothing and is
// returned. fn may run more than once (on a conflicting concurrent
// transaction) and must not have other effects. Audit appends elsewhere
// wait until the batch committed, so the chain stays in order.
func (s *Store) Batch(ctx context.Context, fn func(b *Batch) error) error {
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	state := &batchState{}
	err := s.update(ctx, func(txn *badgerTxn) error {
		state.staged = nil
		return fn(&Batch{s: s, txn: txn, state: state})
	})
	if state.staged != nil {
		state.staged.committed(err)
	}
	if err != nil {
		return fmt.Errorf("store: batch: %w", err)
	}
	return nil
}

// CreateRequest stores a new request, as Store.CreateRequest: created
// is false, and rec the stored request, when r's idempotency key is
// already taken.
func (b *Batch) CreateRequest(r RequestRecord) (rec RequestRecord, created bool, err error) {
	if r.ID == "" || r.State == "" {
		return RequestRecord{}, false, errors.New("store: create request: id and state are required")
	}
	if r.Created.IsZero() {
		r.Created = time.Now().UTC()
	}
	r.Updated, r.Version = r.Created, 1
	rec, created, err = b.s.createRequestTxn(b.txn, r)
	if err != nil {
		return RequestRecord{}, false, fmt.Errorf("store: create request %s: %w", r.ID, err)
	}
	return rec, created, nil
}

// UpdateRequest changes a stored request, as Store.UpdateRequest.
func (b *Batch) UpdateRequest(id ids.RequestID, change func(*RequestRecord) error) (RequestRecord, error) {
	out, err := b.s.updateRequestTxn(b.txn, id, change)
	if err != nil {
		return RequestRecord{}, fmt.Errorf("store: update request %s: %w", id, err)
	}
	return out, nil
}

// SaveRequest creates request id with state and body, or replaces the
// state and body of the stored one (bumping Version and Updated). It
// takes no idempotency key: use CreateRequest for requests that have one.
func (b *Batch) SaveRequest(id ids.RequestID, state string, body []byte) error {
	if id == "" || state == "" {
		return errors.New("store: save request: id and state are required")
	}
	now := time.Now().UTC()
	var r RequestRecord
	err := b.s.getJSON(b.txn, recRequest, requestKey(id), &r)
	switch {
	case errors.Is(err, ErrNotFound):
		r = RequestRecord{ID: id, Created: now, Version: 0}
	case err != nil:
		return err
	}
	r.State, r.Body, r.Updated, r.Version = state, body, now, r.Version+1
	return b.s.putJSON(b.txn, recRequest, requestKey(id), r)
}

// PutSession writes a session's journal record, as Store.PutSession.
func (b *Batch) PutSession(r SessionRecord) error {
	if r.ID.IsZero() {
		return errors.New("store: put session: the session id is zero")
	}
	r.Updated = time.Now().UTC()
	if r.Started.IsZero() {
		r.Started = r.Updated
	}
	return b.s.putSessionTxn(b.txn, r)
}

// AppendAudit appends e to the audit log, as Store.AppendAudit; entries
// of one batch follow each other in the chain in the order appended.
func (b *Batch) AppendAudit(e Entry) error {
	e, err := prepareEntry(e)
	if err != nil {
		return err
	}
	_, err = b.s.appendAuditTxn(b.txn, e)
	return err
}

// SavePolicyState writes the policy engine's snapshot, as
// Store.SavePolicyState: a snapshot older than the one stored (a lower
// sequence number, exported before it) is skipped, so batches that commit
// out of the order their snapshots were taken in never roll the state back.
func (b *Batch) SavePolicyState(st policy.State) error {
	var old policy.State
	err := b.s.getJSON(b.txn, recPolicyState, policyStateKey, &old)
	if err == nil && old.Seq >= st.Seq {
		return nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return b.s.putJSON(b.txn, recPolicyState, policyStateKey, st)
}
