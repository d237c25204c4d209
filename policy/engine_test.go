package policy

import (
	"context"
	"fmt"
	"math/big"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

func payment(t *testing.T, id string, agent ids.AgentID, to common.Address, value int64) *Request {
	t.Helper()
	tx, err := chain.DescribeTransaction(types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), To: &to, Value: big.NewInt(value), Gas: 21000, GasFeeCap: big.NewInt(1), GasTipCap: big.NewInt(1)}))
	if err != nil {
		t.Fatal(err)
	}
	return &Request{ID: ids.RequestID(id), Agent: agent, Key: aliases["hot"], ChainID: big.NewInt(1), Kind: KindTransaction, Tx: tx, Time: t0}
}

// TestSeqCountsOnlySnapshotChanges checks that the state sequence number
// grows exactly when what Export returns changes: a node writes a
// snapshot per Seq, so a bump without a change is a wasted write, and a
// change without a bump a lost one.
func TestSeqCountsOnlySnapshotChanges(t *testing.T) {
	p := testPolicy(t, "  - {id: r, when: {chain: 1, value_max: 1 ether}, budget: {window: 1h, value: 1 ether}, tier: hot}\n")
	e := NewEngine(p, NewMemLedger())
	vendor := aliases["vendor1"]
	bad := payment(t, "bad", "bot", vendor, 1)
	bad.Tx.Value = big.NewInt(-1)
	steps := []struct {
		name string
		do   func()
	}{
		{"dry run", func() { e.DryRun(t.Context(), payment(t, "d", "bot", vendor, 1)) }},
		{"malformed request", func() { e.Authorize(t.Context(), bad) }},
		{"denied request", func() { e.Authorize(t.Context(), payment(t, "big", "bot", vendor, 2e18)) }},
		{"allowed request", func() { e.Authorize(t.Context(), payment(t, "ok", "bot", vendor, 1)) }},
		{"duplicate request", func() { e.Authorize(t.Context(), payment(t, "ok", "bot", vendor, 1)) }},
		{"prune", func() { _, _ = e.Prune(t.Context(), t0) }},
	}
	strip := func(s State) State { s.Seq = 0; return s }
	// A breaker trip after the reservation (here: a second new
	// destination) freezes the agent, which the snapshot holds.
	nd := testPolicy(t, "  - {id: r, when: {chain: 1, value_max: 1 ether}, tier: hot}\nbreaker:\n  new_destinations: {max: 1, window: 1h}\n")
	e2 := NewEngine(nd, NewMemLedger())
	steps = append(steps,
		struct {
			name string
			do   func()
		}{"first destination", func() { e2.Authorize(t.Context(), payment(t, "n1", "bot", vendor, 1)) }},
		struct {
			name string
			do   func()
		}{"trip on a new destination", func() { e2.Authorize(t.Context(), payment(t, "n2", "bot", aliases["vendor2"], 1)) }},
	)
	for i, st := range steps {
		if i == 6 {
			e = e2
		}
		before := e.Export()
		st.do()
		after := e.Export()
		changed := !reflect.DeepEqual(strip(before), strip(after))
		if changed != (after.Seq != before.Seq) || after.Seq < before.Seq {
			t.Errorf("%s: snapshot changed %v, seq %d -> %d", st.name, changed, before.Seq, after.Seq)
		}
	}
}

// blockingLedger holds every Usage call until proceed is closed.
type blockingLedger struct {
	*MemLedger
	entered chan struct{}
	proceed chan struct{}
	once    sync.Once
}

func (b *blockingLedger) Usage(ctx context.Context, bucket Bucket, w time.Duration, now time.Time) (Usage, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.proceed
	return b.MemLedger.Usage(ctx, bucket, w, now)
}

// TestLedgerOutsideTheLock holds the ledger in the middle of an evaluation
// and applies a freeze meanwhile: the freeze must not wait for the ledger
// (it would, if the engine held its lock over ledger I/O), and the request
// evaluated across it must be refused, its reservation released.
func TestLedgerOutsideTheLock(t *testing.T) {
	p := testPolicy(t, "  - {id: r, when: {chain: 1, value_max: 1 ether}, budget: {window: 1h, value: 1 ether}, tier: hot}\n")
	l := &blockingLedger{MemLedger: NewMemLedger(), entered: make(chan struct{}), proceed: make(chan struct{})}
	e := NewEngine(p, l)
	done := make(chan Decision)
	go func() { done <- e.Authorize(context.Background(), payment(t, "r1", "bot", aliases["vendor1"], 1)) }()
	<-l.entered
	f := Freeze{Target: AgentTarget("bot"), Reason: "stop", Issued: t0}
	sig, _ := SignTypedData(guardianKey("alice"), f.TypedData(p.WalletID()))
	if err := e.Freeze(f, sig, t0); err != nil {
		t.Fatal(err)
	}
	close(l.proceed)
	d := <-done
	if d.Allowed() || d.RuleID != RuleFreeze || d.Reserved {
		t.Fatalf("request evaluated across a freeze: %s", d.Describe())
	}
	if u, _ := l.MemLedger.Usage(t.Context(), BudgetBucket("r", "bot", aliases["hot"], AssetNative), 0, t0); u.Amount.Sign() != 0 || u.Count != 0 {
		t.Fatalf("reservation kept: %s / %d", u.Amount, u.Count)
	}
}

// TestConcurrentNewDestinations races allowed requests to distinct new
// destinations against the new_destinations detector: with the ledger
// outside the lock, the detector's check and its record must still be one
// step, so no more than max new destinations are ever allowed.
func TestConcurrentNewDestinations(t *testing.T) {
	p := testPolicy(t, "  - {id: r, when: {chain: 1, value_max: 1 ether}, tier: hot}\nbreaker:\n  new_destinations: {max: 3, window: 1h}\n")
	for round := 0; round < 20; round++ {
		e := NewEngine(p, NewMemLedger())
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			allowed int
		)
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				to := common.BigToAddress(big.NewInt(int64(0x1000 + w)))
				if e.Authorize(context.Background(), payment(t, fmt.Sprint("r", w), "bot", to, 1)).Allowed() {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}(w)
		}
		wg.Wait()
		if allowed > 3 || allowed == 0 {
			t.Fatalf("round %d: %d requests to new destinations allowed, max 3", round, allowed)
		}
	}
}

// TestBreakerMemoryBounded sends requests from many agents to many
// destinations: what the breaker remembers stays within its bounds.
func TestBreakerMemoryBounded(t *testing.T) {
	p := testPolicy(t, "  - {id: r, when: {chain: 1, value_max: 1 ether}, tier: hot}\n")
	e := NewEngine(p, NewMemLedger())
	for i := 0; i < maxKnownDests+100; i++ {
		to := common.BigToAddress(big.NewInt(int64(0x10000 + i)))
		req := payment(t, fmt.Sprint("d", i), "bot", to, 1)
		req.Time = t0.Add(time.Duration(i) * time.Millisecond)
		if d := e.Authorize(t.Context(), req); !d.Allowed() {
			t.Fatal(d.Describe())
		}
	}
	for i := 0; i < maxBreakerAgents+100; i++ {
		req := payment(t, fmt.Sprint("a", i), ids.AgentID(fmt.Sprint("agent-", i)), aliases["vendor1"], 1)
		req.Time = t0.Add(time.Duration(i) * time.Millisecond)
		e.Authorize(t.Context(), req)
	}
	s := e.Export()
	if len(s.Breaker) > maxBreakerAgents {
		t.Errorf("%d agents remembered, bound %d", len(s.Breaker), maxBreakerAgents)
	}
	for _, h := range s.Breaker {
		if len(h.Known) > maxKnownDests || len(h.NewDests) > maxBreakerTimes || len(h.Requests) > maxBreakerTimes {
			t.Fatalf("agent %s: %d known, %d new-destination and %d request instants", h.Agent, len(h.Known), len(h.NewDests), len(h.Requests))
		}
	}
	// Pruning past every window forgets the agents altogether.
	if _, err := e.Prune(t.Context(), t0.Add(MaxWindow+time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := len(e.Export().Breaker); n != 0 {
		t.Errorf("%d agents remembered after pruning", n)
	}
}

// TestPruneLedger checks that Engine.Prune forgets ledger records only
// once no budget window or grant can reach them, and that windows and
// grant lifetimes are bounded so that this holds.
func TestPruneLedger(t *testing.T) {
	p := testPolicy(t, "  - {id: r, when: {chain: 1, value_max: 1 ether}, budget: {window: 24h, value: 1 ether}, tier: hot}\n")
	l := NewMemLedger()
	e := NewEngine(p, l)
	if d := e.Authorize(t.Context(), payment(t, "r1", "bot", aliases["vendor1"], 1e17)); !d.Allowed() {
		t.Fatal(d.Describe())
	}
	b := BudgetBucket("r", "bot", aliases["hot"], AssetNative)
	for _, c := range []struct {
		at   time.Time
		kept bool
	}{{t0.Add(48 * time.Hour), true}, {t0.Add(MaxWindow), true}, {t0.Add(MaxWindow + time.Second), false}} {
		if _, err := e.Prune(t.Context(), c.at); err != nil {
			t.Fatal(err)
		}
		if u, _ := l.Usage(t.Context(), b, 0, t0); (u.Count == 1) != c.kept {
			t.Errorf("pruned at %s: usage %d", c.at.Sub(t0), u.Count)
		}
	}
	if _, err := ParseAndCompile([]byte((&ddEnv{}).expand("version: 1\nguardians: {alice: \"{{alice}}\"}\nquorum: 1\ntiers: [{name: hot, signers: [agent, policy]}]\nrules:\n  - {id: r, when: {chain: 1}, budget: {window: 9000h, count: 1}, tier: hot}\n"))); err == nil {
		t.Error("a budget window longer than MaxWindow compiled")
	}
	g := Grant{ID: "long", Agent: "bot", Key: aliases["hot"], NotBefore: t0.Add(-time.Hour), Expiry: t0.Add(MaxWindow), ValuePerTx: big.NewInt(1e18), ValueTotal: big.NewInt(1e18), MaxCount: 5, Destinations: []common.Address{aliases["vendor1"]}}
	sg, err := SignGrant(guardianKey("alice"), p.WalletID(), g)
	if err != nil {
		t.Fatal(err)
	}
	req := payment(t, "r2", "bot", aliases["vendor1"], 1)
	req.Grant = sg
	if d := e.DryRun(t.Context(), req); d.RuleID != RuleGrant {
		t.Errorf("grant longer than MaxWindow: %s", d.Describe())
	}
}

// TestPolicyReplacedDuringEvaluation replaces the document while a request
// is being evaluated under the old one: the request is refused and its
// reservation released, never allowed under a policy that no longer holds.
func TestPolicyReplacedDuringEvaluation(t *testing.T) {
	p := testPolicy(t, "  - {id: r, when: {chain: 1, value_max: 1 ether}, budget: {window: 1h, value: 1 ether}, tier: hot}\n")
	l := &blockingLedger{MemLedger: NewMemLedger(), entered: make(chan struct{}), proceed: make(chan struct{})}
	e := NewEngine(p, l)
	done := make(chan Decision)
	go func() { done <- e.Authorize(context.Background(), payment(t, "r1", "bot", aliases["vendor1"], 1)) }()
	<-l.entered
	src := []byte((&ddEnv{}).expand("version: 2\nreplaces: \"" + p.Hash().Hex() + "\"\nguardians: {alice: \"{{alice}}\"}\nquorum: 1\ntiers: [{name: hot, signers: [agent, policy]}, {name: vault, signers: [agent, policy, guardian], approvals: 1}]\nrules:\n  - {id: r, when: {chain: 1, value_max: 1 ether}, budget: {window: 1h, value: 1 ether}, tier: vault}\n"))
	d, err := ParseDocument(src)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := SignDocument(guardianKey("alice"), p.WalletID(), d)
	if err := e.ApplyDocument(SignedDocument{Source: src, Signatures: [][]byte{sig}}); err != nil {
		t.Fatal(err)
	}
	close(l.proceed)
	if dec := <-done; dec.Allowed() || dec.RuleID != RuleError || dec.PolicyVersion != 2 {
		t.Fatalf("request evaluated across a replacement: %s (policy v%d)", dec.Describe(), dec.PolicyVersion)
	}
	if u, _ := l.MemLedger.Usage(t.Context(), BudgetBucket("r", "bot", aliases["hot"], AssetNative), 0, t0); u.Count != 0 {
		t.Fatal("reservation kept")
	}
	// Evaluated again, it gets the new policy's tier.
	if dec := e.Authorize(t.Context(), payment(t, "r1", "bot", aliases["vendor1"], 1)); dec.Tier == nil || dec.Tier.Name != "vault" {
		t.Fatalf("re-evaluation: %s", dec.Describe())
	}
}

// TestBreakerTripsAboveItsMemoryBound checks that bounding the breaker's
// memory does not blind a detector whose max is above the default bound.
func TestBreakerTripsAboveItsMemoryBound(t *testing.T) {
	const limit = maxBreakerTimes + 500
	p := testPolicy(t, fmt.Sprintf("  - {id: r, when: {chain: 1, value_max: 1 ether}, tier: hot}\nbreaker:\n  requests: {max: %d, window: 1h}\n", limit))
	e := NewEngine(p, NewMemLedger())
	for i := 0; i <= limit; i++ {
		req := payment(t, fmt.Sprint("r", i), "bot", aliases["vendor1"], 1)
		req.Time = t0.Add(time.Duration(i) * time.Millisecond)
		d := e.Authorize(t.Context(), req)
		if tripped := d.RuleID == RuleBreaker; tripped != (i == limit) {
			t.Fatalf("request %d: %s", i+1, d.Describe())
		}
	}
	if _, err := ParseAndCompile([]byte((&ddEnv{}).expand(fmt.Sprintf("version: 1\nguardians: {alice: \"{{alice}}\"}\nquorum: 1\ntiers: [{name: hot, signers: [agent, policy]}]\nrules: []\nbreaker:\n  requests: {max: %d, window: 1h}\n", maxBreakerRate+1)))); err == nil {
		t.Error("a rate above maxBreakerRate compiled")
	}
}
