package tss_test

// The engine over a transport: keygen, signing and resharing with every
// member on its own goroutine, over tsstest's in-process network. The
// protocols themselves are scripted message by message in package tss
// (datadriven_test.go).

import (
	"context"
	"sync"
	"testing"

	"github.com/custos-wallet/custos/ids"
	. "github.com/custos-wallet/custos/tss" //nolint:staticcheck // the tests read as if in package tss
	"github.com/custos-wallet/custos/tss/tsstest"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

var (
	agent, policy, guardian      = Members[0], Members[1], Members[2]
	agent2, guardian2, guardian3 = Members[3], Members[4], Members[5]
	fixture                      = Fixture
	testConfig                   = TestConfig
	digestOf                     = DigestOf
	shared2of3                   = Shared2of3
	sortedIDs                    = SortedIDs
)

func recoverAddress(t testing.TB, digest [32]byte, sig Signature) common.Address {
	t.Helper()
	pub, err := crypto.SigToPub(digest[:], sig[:])
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	return crypto.PubkeyToAddress(*pub)
}

// keygenAll runs a key generation with every member of c on net, member i
// using fixture first+i, and returns the shares.
func keygenAll(t testing.TB, net *tsstest.MemNetwork, c Committee, first int) map[ids.MemberID]*Share {
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

// runWithForger runs f for every member; the forger's run is cancelled once
// the honest members have ended. It returns the honest members' errors.
func runWithForger(members []ids.MemberID, forger ids.MemberID, f func(ctx context.Context, i int, id ids.MemberID) error) map[ids.MemberID]error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var honest []ids.MemberID
	forgerAt := -1
	for i, id := range members {
		if id == forger {
			forgerAt = i
		} else {
			honest = append(honest, id)
		}
	}
	forgerDone := make(chan struct{})
	go func() {
		defer close(forgerDone)
		f(ctx, forgerAt, forger)
	}()
	errs := runAll(honest, func(i int, id ids.MemberID) error {
		for j, x := range members {
			if x == id {
				i = j
			}
		}
		return f(context.Background(), i, id)
	})
	cancel()
	<-forgerDone
	return errs
}

// signAll signs digest with the given signers and returns each signature.
func signAll(t testing.TB, net *tsstest.MemNetwork, shares map[ids.MemberID]*Share, signers []ids.MemberID, digest [32]byte, path []uint32) map[ids.MemberID]Signature {
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
