package store

import (
	"context"
	"errors"
	"testing"

	"github.com/custos-wallet/custos/ids"
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
