package p2p

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ethcrypto "github.com/ethereum/go-ethereum/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/testfixtures"
	"github.com/custos-wallet/custos/tss"
)

// The engine tests share one cluster of five hosts and one 2-of-3 key
// generation among the first three: key generation costs about 15 s of CPU
// here, and every test after it only needs its shares.
var shared struct {
	once   sync.Once
	dir    string
	c      *cluster
	key    tss.KeyInfo
	shares map[ids.MemberID]*tss.Share
	err    error
}

func teardownShared() {
	if shared.c != nil {
		shared.c.close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

// sharedKey returns the shared cluster and the shares of nodes 0, 1 and 2
// (roles agent, policy, guardian; threshold 1).
func sharedKey(tb testing.TB) (*cluster, map[ids.MemberID]*tss.Share) {
	tb.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "custos-p2p-test-")
		if shared.err != nil {
			return
		}
		shared.c = newCluster(tb, shared.dir, 5, tcpLoopback, nil)
		memberIDs := shared.c.ids()
		committee := tss.Committee{Threshold: 1, Members: []tss.Member{
			{ID: memberIDs[0], Role: ids.RoleAgent}, {ID: memberIDs[1], Role: ids.RolePolicy}, {ID: memberIDs[2], Role: ids.RoleGuardian},
		}}
		sid := ids.NewSessionID()
		start := time.Now()
		shares, errs := runMembers(memberIDs[:3], func(i int, id ids.MemberID) (*tss.Share, error) {
			return engineFor(shared.c.nodes[i].Node, raceSlowdown*60*time.Second).Keygen(context.Background(),
				tss.KeygenRequest{Session: sid, Committee: committee, PreParams: fixture(tb, i)})
		})
		if err := firstErr(errs); err != nil {
			shared.err = fmt.Errorf("keygen over libp2p: %w", err)
			return
		}
		shared.shares = shares
		shared.key = shares[memberIDs[0]].Key()
		for _, sh := range shares {
			if sh.Key().Address != shared.key.Address {
				shared.err = fmt.Errorf("keygen: members disagree on the address")
			}
		}
		tb.Logf("2-of-3 keygen over libp2p took %v, address %s", time.Since(start), shared.key.Address.Hex())
	})
	if shared.err != nil {
		tb.Fatal(shared.err)
	}
	return shared.c, shared.shares
}

func fixture(tb testing.TB, i int) *tss.PreParams {
	tb.Helper()
	lp, err := testfixtures.PreParams(i)
	if err != nil {
		tb.Fatal(err)
	}
	pp, err := tss.NewPreParams(lp)
	if err != nil {
		tb.Fatal(err)
	}
	return pp
}

func engineFor(tr tss.Transport, idle time.Duration) *tss.Engine {
	return tss.NewEngine(tr, tss.Config{IdleTimeout: idle, TickInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
}

// runMembers runs fn for each member at once and collects the results.
func runMembers[T any](memberIDs []ids.MemberID, fn func(i int, id ids.MemberID) (T, error)) (map[ids.MemberID]T, map[ids.MemberID]error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out, errs := map[ids.MemberID]T{}, map[ids.MemberID]error{}
	for i, id := range memberIDs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := fn(i, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[id] = err
			} else {
				out[id] = v
			}
		}()
	}
	wg.Wait()
	return out, errs
}

func firstErr(errs map[ids.MemberID]error) error {
	for id, err := range errs {
		return fmt.Errorf("at %s: %w", id, err)
	}
	return nil
}

// nodeOf returns the index of member id in c.
func nodeOf(c *cluster, id ids.MemberID) int { return slices.Index(c.ids(), id) }

// sign runs one signing session among signers, each on its own node of c
// (or on trs when given), and checks the signature independently.
func sign(tb testing.TB, trs func(ids.MemberID) tss.Transport, shares map[ids.MemberID]*tss.Share, signers []ids.MemberID, idle time.Duration) (tss.Signature, map[ids.MemberID]error) {
	tb.Helper()
	sid := ids.NewSessionID()
	digest := sha256.Sum256(sid[:])
	ctx, cancel := context.WithTimeout(context.Background(), 2*idle+10*time.Second)
	defer cancel()
	sigs, errs := runMembers(signers, func(_ int, id ids.MemberID) (tss.Signature, error) {
		return engineFor(trs(id), idle).Sign(ctx, tss.SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digest})
	})
	var sig tss.Signature
	for id, s := range sigs {
		pub, err := ethcrypto.SigToPub(digest[:], s[:])
		if err != nil {
			tb.Fatalf("signature from %s does not recover: %v", id, err)
		}
		if ethcrypto.PubkeyToAddress(*pub) != shares[id].Key().Address {
			tb.Fatalf("signature from %s recovers to another address", id)
		}
		sig = s
	}
	return sig, errs
}

func (c *cluster) transport(id ids.MemberID) tss.Transport { return c.nodes[nodeOf(c, id)].Node }

func TestKeygenSignReshareOverLibp2p(t *testing.T) {
	c, shares := sharedKey(t)
	memberIDs := c.ids()
	for _, signers := range [][]ids.MemberID{{memberIDs[0], memberIDs[1]}, {memberIDs[1], memberIDs[2]}, {memberIDs[0], memberIDs[1], memberIDs[2]}} {
		start := time.Now()
		if _, errs := sign(t, c.transport, shares, signers, raceSlowdown*20*time.Second); len(errs) > 0 {
			t.Fatalf("sign with %v: %v", signers, firstErr(errs))
		}
		t.Logf("sign with %d signers took %v", len(signers), time.Since(start))
	}

	// Reshare: old signers agent and policy move the key to policy, node 3
	// and node 4 (policy is in both committees).
	key := shares[memberIDs[0]].Key()
	oldSigners := []ids.MemberID{memberIDs[0], memberIDs[1]}
	nc := tss.Committee{Threshold: 1, Members: []tss.Member{
		{ID: memberIDs[1], Role: ids.RolePolicy}, {ID: memberIDs[3], Role: ids.RoleAgent}, {ID: memberIDs[4], Role: ids.RoleGuardian},
	}}
	sid := ids.NewSessionID()
	start := time.Now()
	res, errs := runMembers([]ids.MemberID{memberIDs[0], memberIDs[1], memberIDs[3], memberIDs[4]}, func(i int, id ids.MemberID) (*tss.ReshareResult, error) {
		req := tss.ReshareRequest{Session: sid, Key: key, OldShare: shares[id], OldSigners: oldSigners, NewCommittee: nc}
		if nc.Has(id) {
			req.PreParams = fixture(t, 3+slices.Index(nc.IDs(), id))
		}
		return engineFor(c.transport(id), raceSlowdown*60*time.Second).Reshare(context.Background(), req)
	})
	if err := firstErr(errs); err != nil {
		t.Fatalf("reshare: %v", err)
	}
	t.Logf("reshare took %v", time.Since(start))
	newShares := map[ids.MemberID]*tss.Share{}
	for id, r := range res {
		if r.Key.Address != key.Address {
			t.Fatalf("reshare at %s changed the address", id)
		}
		if r.Share != nil {
			if err := tss.VerifyReshareProof(sid, r.Key, r.Proof); err != nil {
				t.Fatalf("reshare proof at %s: %v", id, err)
			}
			newShares[id] = r.Share
		}
	}
	if len(newShares) != 3 {
		t.Fatalf("%d new shares, want 3", len(newShares))
	}
	if _, errs := sign(t, c.transport, newShares, []ids.MemberID{memberIDs[3], memberIDs[4]}, raceSlowdown*20*time.Second); len(errs) > 0 {
		t.Fatalf("sign with new shares: %v", firstErr(errs))
	}
}

// faultyLinks duplicates, delays and reorders outbound frames.
type faultyLinks struct {
	mu      sync.Mutex
	n       int
	stopped bool // guarded by mu; set, no frame is held back any more
	wg      sync.WaitGroup
}

// stop ends the faults and waits for the frames held back. A writer may
// still call the hook after the test cleared it: the flag, not the
// cleared hook, keeps it from adding to wg while stop waits.
func (fl *faultyLinks) stop() {
	fl.mu.Lock()
	fl.stopped = true
	fl.mu.Unlock()
	fl.wg.Wait()
}

func (fl *faultyLinks) hook() sendHook {
	h := sendHook(func(to peer.ID, f *Frame, write func([]byte) error) error {
		raw := f.Encode()
		fl.mu.Lock()
		if fl.stopped {
			fl.mu.Unlock()
			return write(raw)
		}
		fl.n++
		k := fl.n
		switch k % 5 {
		case 0, 1, 2:
			fl.wg.Add(1) // for later, under mu so that stop sees it
		}
		fl.mu.Unlock()
		switch k % 5 {
		case 0: // duplicated, now and later
			if err := write(raw); err != nil {
				return err
			}
			fl.later(80*time.Millisecond, write, raw)
			return nil
		case 1: // held long enough for later frames to overtake it
			fl.later(150*time.Millisecond, write, raw)
			return nil
		case 2: // delayed
			fl.later(30*time.Millisecond, write, raw)
			return nil
		}
		return write(raw)
	})
	return h
}

func (fl *faultyLinks) later(d time.Duration, write func([]byte) error, raw []byte) {
	time.AfterFunc(d, func() {
		defer fl.wg.Done()
		write(raw)
	})
}

func TestSignWithDuplicatedReorderedDelayedFrames(t *testing.T) {
	c, shares := sharedKey(t)
	memberIDs := c.ids()
	var fl faultyLinks
	for _, i := range []int{0, 2} {
		c.nodes[i].tap.set(fl.hook())
	}
	defer func() {
		for _, i := range []int{0, 2} {
			c.nodes[i].tap.set(nil)
		}
		fl.stop()
	}()
	dups := c.nodes[1].Counters().Dropped(DropDuplicate)
	if _, errs := sign(t, c.transport, shares, memberIDs[:3], 20*time.Second); len(errs) > 0 {
		t.Fatalf("sign over faulty links: %v", firstErr(errs))
	}
	fl.stop()
	t.Logf("faulty links: %d frames, %d duplicates dropped at node 1", fl.n, c.nodes[1].Counters().Dropped(DropDuplicate)-dups)
}

func TestMemberStopsMidSession(t *testing.T) {
	c, shares := sharedKey(t)
	memberIDs := c.ids()
	victim := c.nodes[2]
	var once sync.Once
	var sent atomic.Int32
	stopped := make(chan struct{})
	h := sendHook(func(to peer.ID, f *Frame, write func([]byte) error) error {
		if sent.Add(1) > 3 {
			once.Do(func() {
				go func() {
					victim.Close()
					close(stopped)
				}()
			})
			return ErrClosed
		}
		return write(f.Encode())
	})
	victim.tap.set(h)
	// Long enough that honest members do not time out on each other on a
	// loaded machine; the bound below is loose for the same reason.
	const idle = 5 * time.Second
	start := time.Now()
	_, errs := sign(t, c.transport, shares, memberIDs[:3], idle)
	took := time.Since(start)
	for _, id := range memberIDs[:2] {
		se, ok := tss.AsSessionError(errs[id])
		if !ok {
			t.Fatalf("%s: got %v, want a session error", id, errs[id])
		}
		if !slices.Contains(se.Waiting, victim.Self()) && !slices.Contains(se.Culprits, victim.Self()) {
			t.Fatalf("%s: error does not name the stopped member: %v", id, se)
		}
		t.Logf("%s: %v", id, se)
	}
	if took > 2*idle+10*time.Second {
		t.Fatalf("abort took %v, idle timeout %v", took, idle)
	}
	// The stopped member comes back under the same peer id and signs again.
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the stopped member did not close")
	}
	before := victim.ID()
	c.start(t, 2, nil)
	if c.nodes[2].ID() != before {
		t.Fatalf("restart changed the peer id")
	}
	if _, errs := sign(t, c.transport, shares, []ids.MemberID{memberIDs[1], memberIDs[2]}, 20*time.Second); len(errs) > 0 {
		t.Fatalf("sign after restart: %v", firstErr(errs))
	}
}

func TestEquivocatingSignerNamed(t *testing.T) {
	c, shares := sharedKey(t)
	memberIDs := c.ids()
	liar := c.nodes[0]
	target := c.nodes[2].ID()
	var once sync.Once
	h := sendHook(func(to peer.ID, f *Frame, write func([]byte) error) error {
		equivocate := false
		if f.Kind == KindBroadcast && to == target {
			once.Do(func() { equivocate = true })
		}
		if !equivocate {
			return write(f.Encode())
		}
		g := *f
		g.Payload = slices.Clone(f.Payload)
		g.Payload[len(g.Payload)-1] ^= 1
		if err := g.Sign(liar.key); err != nil {
			return err
		}
		return write(g.Encode())
	})
	liar.tap.set(h)
	defer liar.tap.set(nil)
	// B and C detect the equivocation at once; the idle timeout only ends
	// the liar's own session, and is long so that a loaded machine does not
	// make honest members time out before the detection.
	_, errs := sign(t, c.transport, shares, memberIDs[:3], 8*time.Second)
	evidence := 0
	for _, id := range memberIDs[1:3] {
		se, ok := tss.AsSessionError(errs[id])
		if !ok || !slices.Contains(se.Culprits, liar.Self()) {
			t.Fatalf("%s: got %v, want %s named as culprit", id, errs[id], liar.Self())
		}
		if ev, ok := EvidenceOf(errs[id]); ok {
			if err := ev.Verify(); err != nil {
				t.Fatalf("%s: evidence: %v", id, err)
			}
			evidence++
		}
		t.Logf("%s: %v", id, errs[id])
	}
	if evidence == 0 {
		t.Fatal("no member holds signed evidence of the equivocation")
	}
}
