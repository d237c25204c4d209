package tss

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/testfixtures"
)

// fixture returns test-only pre-parameters number i.
func fixture(t testing.TB, i int) *PreParams {
	t.Helper()
	lp, err := testfixtures.PreParams(i)
	if err != nil {
		t.Fatal(err)
	}
	pp, err := NewPreParams(lp)
	if err != nil {
		t.Fatal(err)
	}
	return pp
}

var (
	agent     = Member{ID: "agent-1", Role: ids.RoleAgent}
	policy    = Member{ID: "policy-1", Role: ids.RolePolicy}
	guardian  = Member{ID: "guardian-1", Role: ids.RoleGuardian}
	agent2    = Member{ID: "agent-2", Role: ids.RoleAgent}
	guardian2 = Member{ID: "guardian-2", Role: ids.RoleGuardian}
	guardian3 = Member{ID: "guardian-3", Role: ids.RoleGuardian}
)

func testConfig() Config {
	return Config{IdleTimeout: 30 * time.Second, TickInterval: 50 * time.Millisecond}
}

// keygenAll runs a key generation with every member of c on net, member i
// using fixture first+i, and returns the shares.
func keygenAll(t testing.TB, net *MemNetwork, c Committee, first int) map[ids.MemberID]*Share {
	t.Helper()
	sid := ids.NewSessionID()
	shares := map[ids.MemberID]*Share{}
	errs := runAll(c.IDs(), func(i int, id ids.MemberID) error {
		sh, err := NewEngine(net.Endpoint(id), testConfig()).Keygen(context.Background(),
			KeygenRequest{Session: sid, Committee: c, PreParams: fixture(t, first+i)})
		if err == nil {
			runMu.Lock()
			shares[id] = sh
			runMu.Unlock()
		}
		return err
	})
	for id, err := range errs {
		if err != nil {
			t.Fatalf("keygen at %s: %v", id, err)
		}
	}
	return shares
}

var runMu sync.Mutex

// runAll calls f for every member concurrently and returns each one's error.
func runAll(members []ids.MemberID, f func(i int, id ids.MemberID) error) map[ids.MemberID]error {
	var wg sync.WaitGroup
	errs := map[ids.MemberID]error{}
	for i, id := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f(i, id)
			runMu.Lock()
			errs[id] = err
			runMu.Unlock()
		}()
	}
	wg.Wait()
	return errs
}

// signAll signs digest with the given signers and returns each signature.
func signAll(t testing.TB, net *MemNetwork, shares map[ids.MemberID]*Share, signers []ids.MemberID, digest [32]byte, path []uint32) map[ids.MemberID]Signature {
	t.Helper()
	sid := ids.NewSessionID()
	sigs := map[ids.MemberID]Signature{}
	errs := runAll(signers, func(_ int, id ids.MemberID) error {
		sig, err := NewEngine(net.Endpoint(id), testConfig()).Sign(context.Background(),
			SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digest, Path: path})
		runMu.Lock()
		sigs[id] = sig
		runMu.Unlock()
		return err
	})
	for id, err := range errs {
		if err != nil {
			t.Fatalf("sign at %s: %v", id, err)
		}
	}
	return sigs
}

var (
	sharedOnce   sync.Once
	sharedShares map[ids.MemberID]*Share
)

// shared2of3 returns the shares of one {agent, policy, guardian} 2-of-3 key,
// generated once per test binary.
func shared2of3(t testing.TB) map[ids.MemberID]*Share {
	t.Helper()
	sharedOnce.Do(func() {
		if dir := os.Getenv(sharesEnv); dir != "" { // a child process: the parent made them
			sharedShares = loadShares(t, dir)
			return
		}
		sharedShares = keygenAll(t, NewMemNetwork(), Committee{Members: []Member{agent, policy, guardian}, Threshold: 1}, 0)
	})
	if sharedShares == nil {
		t.Fatal("shared keygen failed earlier")
	}
	return sharedShares
}

func loadShares(t testing.TB, dir string) map[ids.MemberID]*Share {
	t.Helper()
	out := map[ids.MemberID]*Share{}
	for _, m := range []Member{agent, policy, guardian} {
		b, err := os.ReadFile(filepath.Join(dir, string(m.ID)))
		if err != nil {
			t.Fatal(err)
		}
		if out[m.ID], err = UnmarshalShare(b); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func digestOf(s string) [32]byte {
	var d [32]byte
	copy(d[:], fmt.Sprintf("%-32s", s))
	return d
}
