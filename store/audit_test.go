package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

// appendN appends n entries, request ids req-1..req-n, and returns them.
func appendN(t *testing.T, s *Store, n int) []Entry {
	t.Helper()
	var out []Entry
	t0 := time.Date(2026, 12, 1, 20, 0, 0, 123456789, time.UTC)
	for i := 1; i <= n; i++ {
		e, err := s.AppendAudit(context.Background(), Entry{
			Time: t0.Add(time.Duration(i) * time.Second), Kind: AuditDecision,
			RequestID: ids.RequestID(fmt.Sprintf("req-%d", i)), Decision: "allow", RuleID: "small-payments",
			Fields: map[string]string{"digest": fmt.Sprintf("0x%064x", i), "to": "0x1111"},
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func verifyFails(t *testing.T, s *Store, seq uint64, problem string) {
	t.Helper()
	n, err := s.VerifyAudit(context.Background())
	var ae *AuditError
	if !errors.As(err, &ae) || !errors.Is(err, ErrAuditBroken) {
		t.Fatalf("verify: %v (n=%d), want an audit error at entry %d", err, n, seq)
	}
	if ae.Seq != seq || !strings.Contains(err.Error(), problem) {
		t.Fatalf("verify: %v, want entry %d: %s", err, seq, problem)
	}
	if n != int(seq)-1 {
		t.Fatalf("verify passed %d entries before entry %d", n, seq)
	}
}

// rawAudit reads, changes and rewrites entry seq through badger itself.
func rawAudit(t *testing.T, s *Store, seq uint64, change func(raw []byte, e *Entry) []byte) {
	t.Helper()
	key := auditEntryKey(seq)
	err := s.update(context.Background(), func(txn *badgerTxn) error {
		it, err := txn.Get(key)
		if err != nil {
			return err
		}
		raw, err := it.ValueCopy(nil)
		if err != nil {
			return err
		}
		var e Entry
		if err := s.getJSON(txn, recAudit, key, &e); err != nil {
			return err
		}
		return txn.Set(key, change(raw, &e))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAuditChain(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	if n, err := s.VerifyAudit(ctx); n != 0 || err != nil {
		t.Fatalf("empty log: %d, %v", n, err)
	}
	es := appendN(t, s, 3)
	if es[0].Seq != 1 || es[0].PrevHash != (common.Hash{}) || es[1].PrevHash != es[0].Hash || es[2].PrevHash != es[1].Hash {
		t.Fatalf("chain not linked: %+v", es)
	}
	s = reopen(t, s, key)
	es = append(es, appendN(t, s, 2)...)
	if es[3].Seq != 4 || es[3].PrevHash != es[2].Hash {
		t.Fatalf("chain not continued after a restart: %+v", es[3])
	}
	if n, err := s.VerifyAudit(ctx); n != 5 || err != nil {
		t.Fatalf("verify: %d, %v", n, err)
	}
	seq, head, err := s.AuditHead(ctx)
	if err != nil || seq != 5 || head != es[4].Hash {
		t.Fatalf("head %d %s %v", seq, head, err)
	}
	got, err := s.AuditRange(ctx, 2, 3)
	if err != nil || len(got) != 2 || got[0].Seq != 2 || got[1].Hash != es[2].Hash {
		t.Fatalf("range 2..3: %+v %v", got, err)
	}
	if got[0].Time != es[1].Time || got[0].Fields["digest"] != es[1].Fields["digest"] {
		t.Fatalf("entry read back differs: %+v, want %+v", got[0], es[1])
	}
	if got, err = s.AuditRange(ctx, 4, 0); err != nil || len(got) != 2 {
		t.Fatalf("range 4..: %d entries, %v", len(got), err)
	}
	if _, err := s.AppendAudit(ctx, Entry{Kind: AuditSignature, RequestID: "req-1/x"}); err != nil {
		t.Fatal(err)
	}
	byReq, err := s.AuditByRequest(ctx, "req-1")
	// req-1 came twice (appendN numbers from 1 each time); req-1/x is
	// another request.
	if err != nil || len(byReq) != 2 || byReq[0].Seq != 1 || byReq[1].Seq != 4 {
		t.Fatalf("by request: %+v %v", byReq, err)
	}
}

func TestAuditConcurrentAppends(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir(), newKeyFile(t))
	var wg sync.WaitGroup
	const writers, each = 4, 10
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := s.AppendAudit(ctx, Entry{Kind: AuditRequest, RequestID: ids.RequestID(fmt.Sprintf("w%d-%d", w, i))}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if n, err := s.VerifyAudit(ctx); n != writers*each || err != nil {
		t.Fatalf("verify: %d, %v", n, err)
	}
}

func TestAuditVerifyNamesFirstBadEntry(t *testing.T) {
	ctx := context.Background()
	t.Run("flipped byte", func(t *testing.T) {
		s := openTest(t, t.TempDir(), newKeyFile(t))
		appendN(t, s, 5)
		rawAudit(t, s, 3, func(raw []byte, _ *Entry) []byte {
			raw[len(raw)/2] ^= 0x20
			return raw
		})
		verifyFails(t, s, 3, "value altered")
	})
	t.Run("rewritten by a key holder", func(t *testing.T) {
		s := openTest(t, t.TempDir(), newKeyFile(t))
		appendN(t, s, 5)
		rawAudit(t, s, 3, func(_ []byte, e *Entry) []byte {
			e.Decision = "deny"
			b, _ := json.Marshal(e)
			return s.seal(recAudit, auditEntryKey(3), b)
		})
		verifyFails(t, s, 3, "contents do not match its hash")
	})
	t.Run("rewritten with its hash", func(t *testing.T) {
		s := openTest(t, t.TempDir(), newKeyFile(t))
		appendN(t, s, 5)
		rawAudit(t, s, 3, func(_ []byte, e *Entry) []byte {
			e.RuleID = "other"
			e.Hash = e.ComputeHash()
			b, _ := json.Marshal(e)
			return s.seal(recAudit, auditEntryKey(3), b)
		})
		verifyFails(t, s, 4, "previous hash")
	})
	t.Run("moved to another number", func(t *testing.T) {
		s := openTest(t, t.TempDir(), newKeyFile(t))
		appendN(t, s, 5)
		rawAudit(t, s, 3, func(_ []byte, e *Entry) []byte {
			var four Entry
			if err := s.view(ctx, func(txn *badgerTxn) error { return s.getJSON(txn, recAudit, auditEntryKey(4), &four) }); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(four)
			return s.seal(recAudit, auditEntryKey(3), b)
		})
		verifyFails(t, s, 3, "holds entry 4")
	})
	t.Run("deleted in the middle", func(t *testing.T) {
		s := openTest(t, t.TempDir(), newKeyFile(t))
		appendN(t, s, 5)
		if err := s.update(ctx, func(txn *badgerTxn) error { return txn.Delete(auditEntryKey(3)) }); err != nil {
			t.Fatal(err)
		}
		verifyFails(t, s, 3, "missing (the next stored entry is 4)")
	})
	t.Run("last deleted", func(t *testing.T) {
		s := openTest(t, t.TempDir(), newKeyFile(t))
		appendN(t, s, 5)
		if err := s.update(ctx, func(txn *badgerTxn) error { return txn.Delete(auditEntryKey(5)) }); err != nil {
			t.Fatal(err)
		}
		verifyFails(t, s, 5, "missing (the head is at entry 5)")
	})
}
