package tss

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/testfixtures"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
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
		sharedShares = keygenScripted(t, Committee{Members: []Member{agent, policy, guardian}, Threshold: 1}, 0)
	})
	if sharedShares == nil {
		t.Fatal("shared keygen failed earlier")
	}
	return sharedShares
}

// keygenScripted runs a key generation of c on the scripted environment,
// member i using fixture first+i, and returns the shares.
func keygenScripted(t testing.TB, c Committee, first int) map[ids.MemberID]*Share {
	t.Helper()
	e := newEnv(t)
	if err := e.keygen(c.IDs(), c.Threshold, first); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.stabilize()
	shares := map[ids.MemberID]*Share{}
	for id, err := range e.outcomes("") {
		if err != nil {
			t.Fatalf("keygen at %s: %v", id, err)
		}
		shares[id] = e.nodes[id].rd.Share
	}
	return shares
}

func recoverAddress(t testing.TB, digest [32]byte, sig Signature) common.Address {
	t.Helper()
	pub, err := crypto.SigToPub(digest[:], sig[:])
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	return crypto.PubkeyToAddress(*pub)
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
