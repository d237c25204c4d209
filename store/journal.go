package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/custos-wallet/custos/ids"
)

// RequestRecord is one signing (or key) request in the journal: its state
// and a JSON body that the coordinator or node defines.
type RequestRecord struct {
	ID ids.RequestID `json:"id"`
	// IdempotencyKey, if set, is unique across requests: a second create
	// with it returns the first request. The caller scopes it (for
	// example by agent).
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	State          string          `json:"state"`
	Body           json.RawMessage `json:"body,omitempty"`
	Created        time.Time       `json:"created"`
	Updated        time.Time       `json:"updated"`
	// Version counts the writes of the record: 1 when created.
	Version uint64 `json:"version"`
}

var (
	requestPrefix = []byte("request/")
	idemPrefix    = []byte("idem/")
)

func requestKey(id ids.RequestID) []byte {
	return append(append([]byte(nil), requestPrefix...), id...)
}
func idemKey(k string) []byte { return append(append([]byte(nil), idemPrefix...), k...) }

// CreateRequest stores a new request. When r.IdempotencyKey names a request
// already stored, it stores nothing and returns that request with created
// false. A new request whose id is taken fails with ErrExists.
func (s *Store) CreateRequest(ctx context.Context, r RequestRecord) (rec RequestRecord, created bool, err error) {
	if r.ID == "" || r.State == "" {
		return RequestRecord{}, false, errors.New("store: create request: id and state are required")
	}
	now := time.Now().UTC()
	if r.Created.IsZero() {
		r.Created = now
	}
	r.Updated, r.Version = r.Created, 1
	err = s.update(ctx, func(txn *badgerTxn) error {
		var err error
		rec, created, err = s.createRequestTxn(txn, r)
		return err
	})
	if err != nil {
		return RequestRecord{}, false, fmt.Errorf("store: create request %s: %w", r.ID, err)
	}
	return rec, created, nil
}

// createRequestTxn is CreateRequest within txn, for r with its times and
// version set.
func (s *Store) createRequestTxn(txn *badgerTxn, r RequestRecord) (RequestRecord, bool, error) {
	if r.IdempotencyKey != "" {
		var first ids.RequestID
		err := s.getJSON(txn, recIdempotency, idemKey(r.IdempotencyKey), &first)
		if err == nil {
			var rec RequestRecord
			err := s.getJSON(txn, recRequest, requestKey(first), &rec)
			return rec, false, err
		}
		if !errors.Is(err, ErrNotFound) {
			return RequestRecord{}, false, err
		}
		if err := s.putJSON(txn, recIdempotency, idemKey(r.IdempotencyKey), r.ID); err != nil {
			return RequestRecord{}, false, err
		}
	}
	taken, err := exists(txn, requestKey(r.ID))
	if err != nil {
		return RequestRecord{}, false, err
	}
	if taken {
		return RequestRecord{}, false, fmt.Errorf("%w: request %s", ErrExists, r.ID)
	}
	return r, true, s.putJSON(txn, recRequest, requestKey(r.ID), r)
}

// Request returns the request id.
func (s *Store) Request(ctx context.Context, id ids.RequestID) (RequestRecord, error) {
	var r RequestRecord
	err := s.view(ctx, func(txn *badgerTxn) error { return s.getJSON(txn, recRequest, requestKey(id), &r) })
	if err != nil {
		return RequestRecord{}, fmt.Errorf("store: request %s: %w", id, err)
	}
	return r, nil
}

// RequestByIdempotencyKey returns the request created with key.
func (s *Store) RequestByIdempotencyKey(ctx context.Context, key string) (RequestRecord, error) {
	var r RequestRecord
	err := s.view(ctx, func(txn *badgerTxn) error {
		var id ids.RequestID
		if err := s.getJSON(txn, recIdempotency, idemKey(key), &id); err != nil {
			return err
		}
		return s.getJSON(txn, recRequest, requestKey(id), &r)
	})
	if err != nil {
		return RequestRecord{}, fmt.Errorf("store: request by idempotency key: %w", err)
	}
	return r, nil
}

// UpdateRequest reads request id, lets change modify it, and writes it back
// in one transaction, bumping Version and Updated. change may run more than
// once (on a conflicting concurrent update) and must not have other
// effects; an error from it aborts the update and is returned. ID,
// IdempotencyKey and Created cannot change.
func (s *Store) UpdateRequest(ctx context.Context, id ids.RequestID, change func(*RequestRecord) error) (RequestRecord, error) {
	var out RequestRecord
	err := s.update(ctx, func(txn *badgerTxn) error {
		var err error
		out, err = s.updateRequestTxn(txn, id, change)
		return err
	})
	if err != nil {
		return RequestRecord{}, fmt.Errorf("store: update request %s: %w", id, err)
	}
	return out, nil
}

// updateRequestTxn is UpdateRequest within txn.
func (s *Store) updateRequestTxn(txn *badgerTxn, id ids.RequestID, change func(*RequestRecord) error) (RequestRecord, error) {
	var r RequestRecord
	if err := s.getJSON(txn, recRequest, requestKey(id), &r); err != nil {
		return RequestRecord{}, err
	}
	c := r
	if err := change(&c); err != nil {
		return RequestRecord{}, err
	}
	c.ID, c.IdempotencyKey, c.Created = r.ID, r.IdempotencyKey, r.Created
	c.Version = r.Version + 1
	c.Updated = time.Now().UTC()
	return c, s.putJSON(txn, recRequest, requestKey(id), c)
}

// Requests returns every request for which keep returns true (all when keep
// is nil), in id order: a coordinator restarting lists those not finished.
func (s *Store) Requests(ctx context.Context, keep func(RequestRecord) bool) ([]RequestRecord, error) {
	return s.RequestsPrefixed(ctx, "", keep)
}

// RequestsPrefixed is Requests over the records whose id starts with
// idPrefix only: the others are not read from disk.
func (s *Store) RequestsPrefixed(ctx context.Context, idPrefix string, keep func(RequestRecord) bool) ([]RequestRecord, error) {
	var out []RequestRecord
	err := s.view(ctx, func(txn *badgerTxn) error {
		return s.scan(txn, recRequest, requestKey(ids.RequestID(idPrefix)), func(key, plain []byte) error {
			var r RequestRecord
			if err := json.Unmarshal(plain, &r); err != nil {
				return fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
			}
			if keep == nil || keep(r) {
				out = append(out, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list requests: %w", err)
	}
	return out, nil
}

// SessionRecord is one protocol session in the journal.
type SessionRecord struct {
	ID        ids.SessionID  `json:"id"`
	RequestID ids.RequestID  `json:"request_id,omitempty"`
	Kind      string         `json:"kind"`  // keygen, sign, reshare
	State     string         `json:"state"` // caller-defined, e.g. proposed, running, done, failed
	Key       ids.KeyID      `json:"key,omitempty"`
	Members   []ids.MemberID `json:"members,omitempty"`
	Culprits  []ids.MemberID `json:"culprits,omitempty"`
	Error     string         `json:"error,omitempty"`
	Started   time.Time      `json:"started"`
	Updated   time.Time      `json:"updated"`
}

var (
	sessionLogPrefix = []byte("sessionlog/")
	sessionReqPrefix = []byte("sessionreq/")
)

func sessionLogKey(id ids.SessionID) []byte {
	return append(append([]byte(nil), sessionLogPrefix...), id.String()...)
}

func sessionReqKey(r ids.RequestID, id ids.SessionID) []byte {
	return fmt.Appendf(nil, "%s%s/%s", sessionReqPrefix, r, id)
}

// PutSession writes a session's journal record (creating or replacing it)
// and indexes it under its request. It does not claim the session id; see
// SessionIDs.
func (s *Store) PutSession(ctx context.Context, r SessionRecord) error {
	if r.ID.IsZero() {
		return errors.New("store: put session: the session id is zero")
	}
	r.Updated = time.Now().UTC()
	if r.Started.IsZero() {
		r.Started = r.Updated
	}
	err := s.update(ctx, func(txn *badgerTxn) error { return s.putSessionTxn(txn, r) })
	if err != nil {
		return fmt.Errorf("store: put session %s: %w", r.ID, err)
	}
	return nil
}

// putSessionTxn writes r (its Updated set) in txn.
func (s *Store) putSessionTxn(txn *badgerTxn, r SessionRecord) error {
	var old SessionRecord
	err := s.getJSON(txn, recSession, sessionLogKey(r.ID), &old)
	switch {
	case err == nil && old.RequestID != r.RequestID:
		return fmt.Errorf("session belongs to request %q, not %q", old.RequestID, r.RequestID)
	case err == nil:
		r.Started = old.Started
	case !errors.Is(err, ErrNotFound):
		return err
	}
	if r.RequestID != "" {
		if err := s.set(txn, recSession, sessionReqKey(r.RequestID, r.ID), nil); err != nil {
			return err
		}
	}
	return s.putJSON(txn, recSession, sessionLogKey(r.ID), r)
}

// Session returns the journal record of session id.
func (s *Store) Session(ctx context.Context, id ids.SessionID) (SessionRecord, error) {
	var r SessionRecord
	err := s.view(ctx, func(txn *badgerTxn) error { return s.getJSON(txn, recSession, sessionLogKey(id), &r) })
	if err != nil {
		return SessionRecord{}, fmt.Errorf("store: session %s: %w", id, err)
	}
	return r, nil
}

// RequestSessions returns the sessions run for request id, oldest first.
func (s *Store) RequestSessions(ctx context.Context, id ids.RequestID) ([]SessionRecord, error) {
	prefix := fmt.Appendf(nil, "%s%s/", sessionReqPrefix, id)
	var out []SessionRecord
	err := s.view(ctx, func(txn *badgerTxn) error {
		return s.scan(txn, recSession, prefix, func(key, _ []byte) error {
			sid, err := ids.ParseSessionID(string(key[len(prefix):]))
			if err != nil {
				return nil // a longer request id that shares this prefix
			}
			var r SessionRecord
			if err := s.getJSON(txn, recSession, sessionLogKey(sid), &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: sessions of request %s: %w", id, err)
	}
	slices.SortStableFunc(out, func(a, b SessionRecord) int { return a.Started.Compare(b.Started) })
	return out, nil
}
