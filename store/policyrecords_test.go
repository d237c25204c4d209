package store

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
)

func TestApprovalConsumedOnceAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	id := common.HexToHash("0xa11ce")
	if used, err := s.ApprovalUsed(ctx, id); used || err != nil {
		t.Fatalf("fresh approval used: %v %v", used, err)
	}
	if err := s.ConsumeApproval(ctx, id, "req-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ConsumeApproval(ctx, id, "req-2"); !errors.Is(err, ErrApprovalUsed) {
		t.Fatalf("second use: %v, want %v", err, ErrApprovalUsed)
	}
	crashed := openTest(t, crashCopy(t, s), key)
	s = reopen(t, s, key)
	for _, st := range []*Store{s, crashed} {
		if err := st.ConsumeApproval(ctx, id, "req-3"); !errors.Is(err, ErrApprovalUsed) {
			t.Fatalf("use after a restart: %v, want %v", err, ErrApprovalUsed)
		}
	}
	// Concurrent uses of one approval: exactly one wins.
	fresh := common.HexToHash("0xb0b")
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.ConsumeApproval(ctx, fresh, "req-4")
			if err != nil && !errors.Is(err, ErrApprovalUsed) {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent uses of one approval succeeded", wins)
	}
}

func TestPolicyStateLowerSeqNeverReplacesHigher(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	if _, found, err := s.PolicyState(ctx); found || err != nil {
		t.Fatalf("empty store has a state: %v %v", found, err)
	}
	at := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	high := policy.State{Seq: 7, Revoked: []policy.Revocation{{GrantID: "g-7", Issued: at}},
		Freezes: []policy.FreezeRecord{{ID: common.HexToHash("0xf"), Target: policy.TargetAll, Reason: "incident", At: at}}}
	low := policy.State{Seq: 5, Revoked: []policy.Revocation{{GrantID: "g-5", Issued: at}}}
	if saved, err := s.SavePolicyState(ctx, high); !saved || err != nil {
		t.Fatalf("save seq 7: %v %v", saved, err)
	}
	if saved, err := s.SavePolicyState(ctx, low); saved || err != nil {
		t.Fatalf("save seq 5 over 7: saved %v, %v", saved, err)
	}
	if saved, err := s.SavePolicyState(ctx, policy.State{Seq: 7}); saved || err != nil {
		t.Fatalf("save another seq 7 over 7: saved %v, %v", saved, err)
	}
	s = reopen(t, s, key)
	got, found, err := s.PolicyState(ctx)
	if err != nil || !found || got.Seq != 7 || len(got.Revoked) != 1 || got.Revoked[0].GrantID != "g-7" ||
		len(got.Freezes) != 1 || got.Freezes[0].Reason != "incident" || !got.Freezes[0].At.Equal(at) {
		t.Fatalf("state after a restart: %+v %v %v", got, found, err)
	}
	if saved, err := s.SavePolicyState(ctx, policy.State{Seq: 8}); !saved || err != nil {
		t.Fatalf("save seq 8: %v %v", saved, err)
	}
}

func TestPolicyDocumentsAndGrants(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir(), newKeyFile(t))
	if _, err := s.LatestPolicyDocument(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("latest of none: %v", err)
	}
	d1 := PolicyDocument{Version: 1, Hash: common.HexToHash("0x01"), Signed: policy.SignedDocument{Source: []byte("version: 1\n"), Signatures: [][]byte{{1}}}}
	d2 := PolicyDocument{Version: 2, Hash: common.HexToHash("0x02"), Signed: policy.SignedDocument{Source: []byte("version: 2\n")}}
	for _, d := range []PolicyDocument{d2, d1, d1} {
		if err := s.PutPolicyDocument(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutPolicyDocument(ctx, PolicyDocument{Version: 2, Hash: common.HexToHash("0x03")}); !errors.Is(err, ErrExists) {
		t.Fatalf("second document of version 2: %v", err)
	}
	if err := s.PutPolicyDocument(ctx, PolicyDocument{Version: 3, Hash: d1.Hash}); !errors.Is(err, ErrExists) {
		t.Fatalf("another document under a stored hash: %v", err)
	}
	latest, err := s.LatestPolicyDocument(ctx)
	if err != nil || latest.Hash != d2.Hash || string(latest.Signed.Source) != "version: 2\n" {
		t.Fatalf("latest: %+v %v", latest, err)
	}
	if got, err := s.PolicyDocumentByVersion(ctx, 1); err != nil || got.Hash != d1.Hash || len(got.Signed.Signatures) != 1 {
		t.Fatalf("version 1: %+v %v", got, err)
	}
	if got, err := s.PolicyDocumentByHash(ctx, d2.Hash); err != nil || got.Version != 2 {
		t.Fatalf("by hash: %+v %v", got, err)
	}

	// Built field by field, so the test does not depend on the name of
	// the grant type.
	var g policy.SignedGrant
	g.Grant.ID, g.Grant.Agent, g.Grant.Expiry = "g-1", "agent-1", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	g.Signature = []byte{9}
	if err := s.PutGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	if err := s.PutGrant(ctx, g); err != nil {
		t.Fatalf("same grant again: %v", err)
	}
	other := g
	other.Signature = []byte{8}
	if err := s.PutGrant(ctx, other); !errors.Is(err, ErrExists) {
		t.Fatalf("another grant under a stored id: %v", err)
	}
	got, err := s.Grant(ctx, "g-1")
	if err != nil || got.Grant.Agent != "agent-1" || !got.Grant.Expiry.Equal(g.Grant.Expiry) {
		t.Fatalf("grant: %+v %v", got, err)
	}
	if all, err := s.Grants(ctx); err != nil || len(all) != 1 {
		t.Fatalf("grants: %v %v", all, err)
	}
}

// TestRequestsPrefixed: a prefixed listing holds the records whose id
// starts with the prefix, and no other.
func TestRequestsPrefixed(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir(), newKeyFile(t))
	for _, id := range []ids.RequestID{"req:1", "key:a", "keyring", "key:b", "req:2", "ke"} {
		if _, _, err := s.CreateRequest(ctx, RequestRecord{ID: id, State: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	for prefix, want := range map[string][]ids.RequestID{
		"key:": {"key:a", "key:b"},
		"req:": {"req:1", "req:2"},
		"ke":   {"ke", "key:a", "key:b", "keyring"},
		"":     {"ke", "key:a", "key:b", "keyring", "req:1", "req:2"},
		"zz":   nil,
	} {
		recs, err := s.RequestsPrefixed(ctx, prefix, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []ids.RequestID
		for _, r := range recs {
			got = append(got, r.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("prefix %q: %v, want %v", prefix, got, want)
		}
	}
	if recs, err := s.RequestsPrefixed(ctx, "key:", func(r RequestRecord) bool { return r.ID == "key:b" }); err != nil || len(recs) != 1 {
		t.Fatalf("prefixed with keep: %+v %v", recs, err)
	}
}

func TestRequestJournal(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	body := json.RawMessage(`{"to":"0x1111","value":"1"}`)
	r, created, err := s.CreateRequest(ctx, RequestRecord{ID: "req-1", IdempotencyKey: "agent-1/k1", State: "pending_approval", Body: body})
	if err != nil || !created || r.Version != 1 {
		t.Fatalf("create: %+v %v %v", r, created, err)
	}
	again, created, err := s.CreateRequest(ctx, RequestRecord{ID: "req-2", IdempotencyKey: "agent-1/k1", State: "pending_approval"})
	if err != nil || created || again.ID != "req-1" {
		t.Fatalf("create with a used idempotency key: %+v %v %v", again, created, err)
	}
	if _, err := s.Request(ctx, "req-2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an idempotent repeat stored a request: %v", err)
	}
	if _, _, err := s.CreateRequest(ctx, RequestRecord{ID: "req-1", State: "signing"}); !errors.Is(err, ErrExists) {
		t.Fatalf("create with a used id: %v", err)
	}
	upd, err := s.UpdateRequest(ctx, "req-1", func(r *RequestRecord) error {
		r.State = "signing"
		r.ID = "forged"
		return nil
	})
	if err != nil || upd.State != "signing" || upd.ID != "req-1" || upd.Version != 2 {
		t.Fatalf("update: %+v %v", upd, err)
	}
	stop := errors.New("stop")
	if _, err := s.UpdateRequest(ctx, "req-1", func(r *RequestRecord) error { r.State = "failed"; return stop }); !errors.Is(err, stop) {
		t.Fatalf("aborted update: %v", err)
	}
	s = reopen(t, s, key)
	got, err := s.RequestByIdempotencyKey(ctx, "agent-1/k1")
	if err != nil || got.State != "signing" || string(got.Body) != string(body) {
		t.Fatalf("after a restart: %+v %v", got, err)
	}
	if _, _, err := s.CreateRequest(ctx, RequestRecord{ID: "req-3", State: "signed"}); err != nil {
		t.Fatal(err)
	}
	open, err := s.Requests(ctx, func(r RequestRecord) bool { return r.State != "signed" })
	if err != nil || len(open) != 1 || open[0].ID != "req-1" {
		t.Fatalf("unfinished requests: %+v %v", open, err)
	}

	sid1, sid2 := ids.NewSessionID(), ids.NewSessionID()
	if err := s.PutSession(ctx, SessionRecord{ID: sid1, RequestID: "req-1", Kind: "sign", State: "failed", Culprits: []ids.MemberID{"policy-1"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSession(ctx, SessionRecord{ID: sid2, RequestID: "req-1", Kind: "sign", State: "running"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSession(ctx, SessionRecord{ID: sid2, RequestID: "req-1", Kind: "sign", State: "done"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSession(ctx, SessionRecord{ID: sid2, RequestID: "req-3", Kind: "sign"}); err == nil {
		t.Fatal("a session moved to another request")
	}
	ss, err := s.RequestSessions(ctx, "req-1")
	if err != nil || len(ss) != 2 || ss[0].ID != sid1 || ss[0].Culprits[0] != "policy-1" || ss[1].State != "done" {
		t.Fatalf("sessions of req-1: %+v %v", ss, err)
	}
}
