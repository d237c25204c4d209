package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/testfixtures"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/tss"
	"github.com/custos-wallet/custos/tss/tsstest"
)

func fixture(t *testing.T, i int) *tss.PreParams {
	t.Helper()
	lp, err := testfixtures.PreParams(i)
	if err != nil {
		t.Fatal(err)
	}
	pp, err := tss.NewPreParams(lp)
	if err != nil {
		t.Fatal(err)
	}
	return pp
}

var (
	sharesOnce sync.Once
	shares     []*tss.Share
)

// testShares runs one 2-of-3 keygen per test binary (about 13 s of CPU) on
// fixtures 0 to 2 and returns the three shares.
func testShares(t *testing.T) []*tss.Share {
	t.Helper()
	sharesOnce.Do(func() {
		c := tss.Committee{Threshold: 1, Members: []tss.Member{
			{ID: "agent-1", Role: ids.RoleAgent}, {ID: "policy-1", Role: ids.RolePolicy}, {ID: "guardian-1", Role: ids.RoleGuardian},
		}}
		net := tsstest.NewMemNetwork()
		sid := ids.NewSessionID()
		out := make([]*tss.Share, 3)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i, m := range c.Members {
			pp := fixture(t, i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				eng := tss.NewEngine(net.Endpoint(m.ID), tss.Config{IdleTimeout: time.Minute})
				out[i], errs[i] = eng.Keygen(context.Background(), tss.KeygenRequest{Session: sid, Committee: c, PreParams: pp})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("keygen at member %d: %v", i, err)
				return
			}
		}
		shares = out
	})
	if shares == nil {
		t.Fatal("keygen failed")
	}
	return shares
}

// secretNeedles returns byte strings that must never appear in a store's
// files: the share's secret Xi in decimal, hex and big-endian bytes, its
// Paillier secret in decimal, and the head of its serialised form.
func secretNeedles(t *testing.T, sh *tss.Share) map[string][]byte {
	t.Helper()
	b, err := sh.MarshalSecret()
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Data struct {
			Xi         json.Number
			PaillierSK struct{ LambdaN json.Number }
		} `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&j); err != nil {
		t.Fatal(err)
	}
	xi, ok := new(big.Int).SetString(string(j.Data.Xi), 10)
	if !ok || xi.Sign() <= 0 || j.Data.PaillierSK.LambdaN == "" {
		t.Fatalf("share has no Xi or LambdaN: %q", j.Data.Xi)
	}
	return map[string][]byte{
		"Xi decimal":      []byte(xi.String()),
		"Xi hex":          []byte(hex.EncodeToString(xi.Bytes())),
		"Xi bytes":        xi.Bytes(),
		"LambdaN decimal": []byte(j.Data.PaillierSK.LambdaN)[:40],
		"share format":    []byte(`"format":"custos-share/1"`),
	}
}

// grepDir fails the test if any file under dir contains a needle.
func grepDir(t *testing.T, dir string, needles map[string][]byte) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for name, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("%s found in %s", name, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("no files under %s", dir)
	}
}

func TestShareNotInRawFiles(t *testing.T) {
	ctx := context.Background()
	sh := testShares(t)[1]
	needles := secretNeedles(t, sh)
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	if err := s.PutShare(ctx, sh); err != nil {
		t.Fatal(err)
	}
	grepDir(t, s.Dir(), needles) // while open: the write-ahead log
	s = reopen(t, s, key)
	grepDir(t, s.Dir(), needles) // after close: the flushed tables
	got, err := s.Share(ctx, sh.Key().ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := sh.MarshalSecret()
	b, _ := got.MarshalSecret()
	if !bytes.Equal(a, b) {
		t.Fatal("share read back differs")
	}
}

func TestShareGenerationsKept(t *testing.T) {
	ctx := context.Background()
	sh := testShares(t)[0]
	id := sh.Key().ID()
	s := openTest(t, t.TempDir(), newKeyFile(t))
	if _, err := s.LatestShare(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no share yet: %v", err)
	}
	if err := s.PutShare(ctx, sh); err != nil {
		t.Fatal(err)
	}
	if err := s.PutShare(ctx, sh); !errors.Is(err, ErrExists) {
		t.Fatalf("second put of one generation: %v, want %v", err, ErrExists)
	}
	keys, err := s.ShareKeys(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Equal(sh.Key()) {
		t.Fatalf("share keys: %v %v", keys, err)
	}
	gens, err := s.ShareGenerations(ctx, id)
	if err != nil || len(gens) != 1 || gens[0] != 0 {
		t.Fatalf("generations %v %v", gens, err)
	}
	if err := s.DeleteShare(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Share(ctx, id, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted share: %v", err)
	}
	if err := s.DeleteShare(ctx, id, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// TestShareKeysKept checks the descriptions ShareKeys keeps in memory: a
// caller that changes what it got does not change the next answer, and a
// deleted share is no longer listed.
func TestShareKeysKept(t *testing.T) {
	ctx := context.Background()
	s, sh := storeWithShare(t)
	for i := 0; i < 2; i++ {
		keys, err := s.ShareKeys(ctx)
		if err != nil || len(keys) != 1 || !keys[0].Equal(sh.Key()) {
			t.Fatalf("share keys, call %d: %v %v", i, keys, err)
		}
		keys[0].PublicKey[1] ^= 0xff
		keys[0].Committee.Members[0].ID = "changed by the caller"
	}
	if err := s.DeleteShare(ctx, sh.Key().ID(), 0); err != nil {
		t.Fatal(err)
	}
	if keys, err := s.ShareKeys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("share keys after the delete: %v %v", keys, err)
	}
}

// TestShareKept checks the shares Share keeps in memory: a second read
// decodes nothing (a share decoded again costs hundreds of allocations), a
// caller that changes the key description it got does not change the
// share, and a deleted share is gone, also from memory.
func TestShareKept(t *testing.T) {
	ctx := context.Background()
	s, sh := storeWithShare(t)
	id := sh.Key().ID()
	first, err := s.Share(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	k := first.Key()
	k.Committee.Members[0].ID = "changed by the caller"
	k.PublicKey[1] ^= 0xff
	again, err := s.Share(ctx, id, 0)
	if err != nil || !again.Key().Equal(sh.Key()) {
		t.Fatalf("second read: %v, key %v", err, again.Key())
	}
	if allocs := testing.AllocsPerRun(20, func() { _, _ = s.Share(ctx, id, 0) }); allocs > 20 {
		t.Errorf("a share read again costs %.0f allocations: it was decoded again", allocs)
	}
	if err := s.DeleteShare(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Share(ctx, id, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("share after its delete: %v, want %v", err, ErrNotFound)
	}
	if _, err := s.LatestShare(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("latest share after the delete: %v, want %v", err, ErrNotFound)
	}
}

// TestShareDeletedDuringReadNotKept: a share deleted while another caller
// was reading it (a reshare dropping the old generation during a probe)
// is not put back in memory by that read; the next read finds it gone.
func TestShareDeletedDuringReadNotKept(t *testing.T) {
	ctx := context.Background()
	s, sh := storeWithShare(t)
	id := sh.Key().ID()
	shareReadHook = func() {
		shareReadHook = nil
		if err := s.DeleteShare(ctx, id, 0); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { shareReadHook = nil })
	if _, err := s.Share(ctx, id, 0); err != nil {
		t.Fatalf("the read the delete raced: %v", err)
	}
	if _, err := s.Share(ctx, id, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("share read after its delete: %v, want %v (the racing read kept it in memory)", err, ErrNotFound)
	}
}

// storeWithShare opens a store holding one test share.
func storeWithShare(t *testing.T) (*Store, *tss.Share) {
	t.Helper()
	sh := testShares(t)[0]
	s := openTest(t, t.TempDir(), newKeyFile(t))
	if err := s.PutShare(context.Background(), sh); err != nil {
		t.Fatal(err)
	}
	return s, sh
}

// crashCopy copies the files of an open store to a new directory: what a
// crash at this moment would leave on disk, before any Close.
func crashCopy(t *testing.T, s *Store) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.Dir(), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func marshalPP(t *testing.T, p *tss.PreParams) []byte {
	t.Helper()
	b, err := p.MarshalSecret()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPreParamsTakenOnceAcrossRestart(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	sets := []*tss.PreParams{fixture(t, 3), fixture(t, 4), fixture(t, 5)}
	if err := s.PreParams().Save(ctx, sets); err != nil {
		t.Fatal(err)
	}
	first, err := s.TakePreParams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A crash right after the take: the copy is what the disk holds.
	crashed := openTest(t, crashCopy(t, s), key)
	second, err := crashed.TakePreParams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(marshalPP(t, first), marshalPP(t, second)) {
		t.Fatal("the same pre-parameter set was taken twice across a crash")
	}
	rest, err := crashed.PreParams().Load(ctx)
	if err != nil || len(rest) != 1 {
		t.Fatalf("after two takes: %d sets, %v", len(rest), err)
	}
	for _, p := range rest {
		if bytes.Equal(marshalPP(t, p), marshalPP(t, first)) || bytes.Equal(marshalPP(t, p), marshalPP(t, second)) {
			t.Fatal("a taken set is still in the pool")
		}
	}
	// A taken set cannot come back through Save.
	if err := crashed.PreParams().Save(ctx, append(rest, first)); !errors.Is(err, ErrPreParamsTaken) {
		t.Fatalf("save of a taken set: %v, want %v", err, ErrPreParamsTaken)
	}
	if n, err := crashed.CountPreParams(ctx); n != 1 || err != nil {
		t.Fatalf("a refused save changed the pool: %d sets, %v", n, err)
	}
	if _, err := crashed.TakePreParams(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := crashed.TakePreParams(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("take from an empty pool: %v, want %v", err, ErrNotFound)
	}
}

func TestPreParamsPoolAcrossRestart(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	noGen := func(ctx context.Context) (*tss.PreParams, error) {
		return nil, errors.New("no generation in this test")
	}
	if err := s.PreParams().Save(ctx, []*tss.PreParams{fixture(t, 4), fixture(t, 6)}); err != nil {
		t.Fatal(err)
	}
	pool, err := tss.NewPool(ctx, tss.PoolConfig{Target: 2, Store: s.PreParams(), Generate: noGen})
	if err != nil {
		t.Fatal(err)
	}
	first, err := pool.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	crashed := openTest(t, crashCopy(t, s), key)
	pool2, err := tss.NewPool(ctx, tss.PoolConfig{Target: 2, Store: crashed.PreParams(), Generate: noGen})
	if err != nil {
		t.Fatal(err)
	}
	if pool2.Len() != 1 {
		t.Fatalf("pool after a crash holds %d sets, want 1", pool2.Len())
	}
	second, err := pool2.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(marshalPP(t, first), marshalPP(t, second)) {
		t.Fatal("the pool handed out one set twice across a crash")
	}
}

func TestSessionIDClaimedOnce(t *testing.T) {
	ctx := context.Background()
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	id := ids.NewSessionID()
	if err := s.SessionIDs().Claim(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.SessionIDs().Claim(ctx, id); !errors.Is(err, p2p.ErrSessionReused) {
		t.Fatalf("second claim: %v, want %v", err, p2p.ErrSessionReused)
	}
	crashed := openTest(t, crashCopy(t, s), key)
	s = reopen(t, s, key)
	for _, st := range []*Store{s, crashed} {
		if err := st.SessionIDs().Claim(ctx, id); !errors.Is(err, p2p.ErrSessionReused) {
			t.Fatalf("claim after a restart: %v, want %v", err, p2p.ErrSessionReused)
		}
		if used, err := st.SessionIDs().Used(ctx, id); !used || err != nil {
			t.Fatalf("used: %v %v", used, err)
		}
	}
	// Concurrent claims of one new id: exactly one wins.
	fresh := ids.NewSessionID()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.SessionIDs().Claim(ctx, fresh)
			if err != nil && !errors.Is(err, p2p.ErrSessionReused) {
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
		t.Fatalf("%d concurrent claims of one id succeeded", wins)
	}
}

func TestPreParamsNotInRawFiles(t *testing.T) {
	ctx := context.Background()
	set := fixture(t, 3)
	b := marshalPP(t, set)
	var j struct {
		PaillierSK struct{ LambdaN json.Number }
		Alpha, P   json.Number
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&j); err != nil || len(j.PaillierSK.LambdaN) < 40 || len(j.Alpha) < 40 || len(j.P) < 40 {
		t.Fatalf("fixture lacks its secrets: %v", err)
	}
	needles := map[string][]byte{
		"LambdaN": []byte(j.PaillierSK.LambdaN)[:40],
		"Alpha":   []byte(j.Alpha)[:40],
		"P":       []byte(j.P)[:40],
	}
	key := newKeyFile(t)
	s := openTest(t, t.TempDir(), key)
	if err := s.PreParams().Save(ctx, []*tss.PreParams{set}); err != nil {
		t.Fatal(err)
	}
	grepDir(t, s.Dir(), needles)
	s = reopen(t, s, key)
	grepDir(t, s.Dir(), needles)
	if n, err := s.CountPreParams(ctx); n != 1 || err != nil {
		t.Fatalf("%d sets, %v", n, err)
	}
}
