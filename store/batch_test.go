package store

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
)

// TestBatchCommitsAllOrNothing: a batch's request, session and audit
// entries are all there after a reopen, the audit chain in order and
// valid; a batch whose function fails leaves nothing of it behind.
func TestBatchCommitsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	if _, err := s.AppendAudit(ctx, Entry{Kind: AuditPolicy, Decision: "before"}); err != nil {
		t.Fatal(err)
	}
	sess := ids.NewSessionID()
	err := s.Batch(ctx, func(b *Batch) error {
		if err := b.SaveRequest("req-1", "signed", []byte(`{"a":1}`)); err != nil {
			return err
		}
		if err := b.AppendAudit(Entry{Kind: AuditSignature, RequestID: "req-1", Decision: "signed"}); err != nil {
			return err
		}
		if err := b.PutSession(SessionRecord{ID: sess, RequestID: "req-1", Kind: "sign", State: "done"}); err != nil {
			return err
		}
		return b.AppendAudit(Entry{Kind: AuditSession, RequestID: "req-1", Decision: "done"})
	})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = s.Batch(ctx, func(b *Batch) error {
		if err := b.SaveRequest("req-2", "signed", nil); err != nil {
			return err
		}
		if err := b.AppendAudit(Entry{Kind: AuditSignature, RequestID: "req-2"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failed batch: %v, want %v", err, boom)
	}
	// A second save of the same request replaces it and bumps its version.
	if err := s.Batch(ctx, func(b *Batch) error { return b.SaveRequest("req-1", "final", []byte(`{"a":2}`)) }); err != nil {
		t.Fatal(err)
	}

	s = reopen(t, s, key)
	r, err := s.Request(ctx, "req-1")
	if err != nil {
		t.Fatal(err)
	}
	if r.State != "final" || string(r.Body) != `{"a":2}` || r.Version != 2 || r.Created.IsZero() {
		t.Fatalf("request %+v, want state final, body a:2, version 2", r)
	}
	if rec, err := s.Session(ctx, sess); err != nil || rec.State != "done" || rec.RequestID != "req-1" {
		t.Fatalf("session %+v, %v", rec, err)
	}
	if _, err := s.Request(ctx, "req-2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("request of the failed batch: %v, want not found", err)
	}
	n, err := s.VerifyAudit(ctx)
	if err != nil || n != 3 {
		t.Fatalf("audit: %d entries, %v; want 3, valid", n, err)
	}
	es, err := s.AuditRange(ctx, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[1].Kind != AuditSignature || es[2].Kind != AuditSession || es[2].PrevHash != es[1].Hash {
		t.Fatalf("audit entries %+v", es)
	}
	if byReq, err := s.AuditByRequest(ctx, "req-1"); err != nil || len(byReq) != 2 {
		t.Fatalf("audit by request: %d, %v; want 2", len(byReq), err)
	}
}

// TestBatchPolicyStateNeverRollsBack: a batch saves the policy state with
// the rest of its writes, but a snapshot older than the stored one (a
// batch that commits after a later one) is skipped while its other writes
// commit; a failed batch saves no state.
func TestBatchPolicyStateNeverRollsBack(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	save := func(seq uint64, grant string, fail error) error {
		return s.Batch(ctx, func(b *Batch) error {
			if err := b.SavePolicyState(policy.State{Seq: seq, Revoked: []policy.Revocation{{GrantID: grant}}}); err != nil {
				return err
			}
			if err := b.AppendAudit(Entry{Kind: AuditPolicy, Decision: grant}); err != nil {
				return err
			}
			return fail
		})
	}
	if err := save(7, "g-7", nil); err != nil {
		t.Fatal(err)
	}
	if err := save(5, "g-5", nil); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := save(9, "g-9", boom); !errors.Is(err, boom) {
		t.Fatalf("failing batch: %v", err)
	}
	s = reopen(t, s, key)
	got, found, err := s.PolicyState(ctx)
	if err != nil || !found || got.Seq != 7 || len(got.Revoked) != 1 || got.Revoked[0].GrantID != "g-7" {
		t.Fatalf("state after the batches: %+v %v %v, want seq 7 (g-7)", got, found, err)
	}
	entries, err := s.AuditRange(ctx, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	var decisions []string
	for _, e := range entries {
		decisions = append(decisions, e.Decision)
	}
	if !slices.Equal(decisions, []string{"g-7", "g-5"}) {
		t.Fatalf("audit entries %v, want the two committed batches' [g-7 g-5]", decisions)
	}
}

// TestBatchRequestWithAudit: a request created or changed in a batch
// commits with the batch's audit entry, or not at all; its idempotency
// key holds across batches and Store.CreateRequest alike.
func TestBatchRequestWithAudit(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	create := func(id ids.RequestID, body string, fail error) (RequestRecord, bool, error) {
		var rec RequestRecord
		var created bool
		err := s.Batch(ctx, func(b *Batch) error {
			var err error
			rec, created, err = b.CreateRequest(RequestRecord{ID: id, IdempotencyKey: "idem-" + string(id[:5]), State: "received", Body: []byte(body)})
			if err != nil || !created {
				return err
			}
			if err := b.AppendAudit(Entry{Kind: AuditRequest, RequestID: id}); err != nil {
				return err
			}
			return fail
		})
		return rec, created, err
	}
	boom := errors.New("boom")
	if _, _, err := create("req-a1", `{"n":0}`, boom); !errors.Is(err, boom) {
		t.Fatalf("failed batch: %v, want %v", err, boom)
	}
	if _, err := s.Request(ctx, "req-a1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("request of a failed batch: %v, want not found", err)
	}
	rec, created, err := create("req-a1", `{"n":1}`, nil)
	if err != nil || !created || rec.Version != 1 {
		t.Fatalf("create: %+v, %v, %v", rec, created, err)
	}
	// The same idempotency key under another id: the first request, nothing written.
	rec, created, err = create("req-a2", `{"n":2}`, nil)
	if err != nil || created || rec.ID != "req-a1" || string(rec.Body) != `{"n":1}` {
		t.Fatalf("retry: %+v, created %v, %v; want req-a1 unchanged", rec, created, err)
	}
	if _, created, err := s.CreateRequest(ctx, RequestRecord{ID: "req-a3", IdempotencyKey: "idem-req-a", State: "received"}); err != nil || created {
		t.Fatalf("Store.CreateRequest with the key a batch took: created %v, %v", created, err)
	}
	err = s.Batch(ctx, func(b *Batch) error {
		if _, err := b.UpdateRequest("req-a1", func(r *RequestRecord) error { r.State = "signed"; return nil }); err != nil {
			return err
		}
		return b.AppendAudit(Entry{Kind: AuditSignature, RequestID: "req-a1"})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Batch(ctx, func(b *Batch) error {
		if err := b.AppendAudit(Entry{Kind: AuditDecision, RequestID: "req-a1"}); err != nil {
			return err
		}
		_, err := b.UpdateRequest("req-a1", func(r *RequestRecord) error { return boom })
		return err
	})
	if !errors.Is(err, boom) {
		t.Fatalf("refused change: %v, want %v", err, boom)
	}
	err = s.Batch(ctx, func(b *Batch) error {
		_, err := b.UpdateRequest("req-none", func(*RequestRecord) error { return nil })
		return err
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of an unknown request: %v, want not found", err)
	}
	s = reopen(t, s, key)
	r, err := s.Request(ctx, "req-a1")
	if err != nil || r.State != "signed" || r.Version != 2 {
		t.Fatalf("request %+v, %v; want signed, version 2", r, err)
	}
	es, err := s.AuditByRequest(ctx, "req-a1")
	if err != nil || len(es) != 2 || es[0].Kind != AuditRequest || es[1].Kind != AuditSignature {
		t.Fatalf("audit of req-a1: %+v, %v; want the request and the signature only", es, err)
	}
}
