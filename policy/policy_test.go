package policy

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/purity"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

// TestPureImports fails if package policy (or its ledger conformance
// suite) reaches the network, storage or threshold layers, directly or
// through a dependency: the policy is plain logic, and its callers do the
// I/O.
func TestPureImports(t *testing.T) {
	purity.Check(t, func(p string) bool { return impureImport(p) || p == "net" }, impureImport, ".", "./ledgertest")
}

func impureImport(path string) bool {
	return path == "net/http" || strings.Contains(path, "libp2p") || strings.Contains(path, "dgraph-io/badger") ||
		strings.Contains(path, "bnb-chain/tss-lib") || strings.HasPrefix(path, "github.com/custos-wallet/custos/tss") ||
		strings.HasPrefix(path, "github.com/custos-wallet/custos/p2p") || strings.HasPrefix(path, "github.com/custos-wallet/custos/store")
}

func TestParseAmount(t *testing.T) {
	dec := func(s string) (int, bool) { return map[string]int{"USDC": 6}[s], s == "USDC" }
	for in, want := range map[string]string{
		"0.05 ether": "50000000000000000", "30 gwei": "30000000000", "100 USDC": "100000000",
		"1.5 USDC": "1500000", "12345": "12345", "0 ether": "0", "7 wei": "7",
	} {
		v, _, err := parseAmount(in, dec)
		if err != nil || v.String() != want {
			t.Errorf("%q: got %v %v, want %s", in, v, err, want)
		}
	}
	for _, in := range []string{"0.0000001 USDC", "1.5", "1 DAI", "-1 ether", "1e18", "", ". ether"} {
		if _, _, err := parseAmount(in, dec); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
}

// TestConcurrentReservationsNeverExceedBudget races many reservations
// against one budget, for many seeds, and checks that what was reserved and
// committed never exceeds the cap, in amount or in count.
func TestConcurrentReservationsNeverExceedBudget(t *testing.T) {
	for seed := int64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewSource(seed))
		l := NewMemLedger()
		capAmt := big.NewInt(rng.Int63n(1000) + 1)
		capCount := uint64(rng.Intn(50) + 1)
		now := t0
		workers, per := 8, 25
		amounts := make([][]int64, workers)
		for w := range amounts {
			for i := 0; i < per; i++ {
				amounts[w] = append(amounts[w], rng.Int63n(60))
			}
		}
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i, a := range amounts[w] {
					id := ids.RequestID(fmt.Sprintf("s%d-w%d-%d", seed, w, i))
					err := l.Reserve(t.Context(), Reservation{ID: id, Time: now, Entries: []Entry{{
						Bucket: "b", Amount: big.NewInt(a), Count: 1, Window: time.Hour, LimitAmount: capAmt, LimitCount: capCount,
					}}})
					if err != nil && !errors.Is(err, ErrBudgetExceeded) {
						t.Error(err)
						return
					}
					if err == nil {
						switch i % 3 { // commit, release, or leave reserved
						case 0:
							_ = l.Commit(t.Context(), id)
						case 1:
							_ = l.Release(t.Context(), id)
						}
					}
					u, _ := l.Usage(t.Context(), "b", time.Hour, now)
					if u.Amount.Cmp(capAmt) > 0 || u.Count > capCount {
						t.Errorf("seed %d: usage %v/%d exceeds cap %v/%d", seed, u.Amount, u.Count, capAmt, capCount)
					}
				}
			}(w)
		}
		wg.Wait()
		u, _ := l.Usage(t.Context(), "b", time.Hour, now)
		if u.Amount.Cmp(capAmt) > 0 || u.Count > capCount {
			t.Fatalf("seed %d: final usage %v/%d exceeds cap %v/%d", seed, u.Amount, u.Count, capAmt, capCount)
		}
	}
}

// TestConcurrentAuthorize drives the engine itself from many goroutines:
// the hot tier must never be granted beyond the rule's budget.
func TestConcurrentAuthorize(t *testing.T) {
	alice := guardianKey("alice")
	src := fmt.Sprintf(`version: 1
guardians: {alice: %q}
quorum: 1
tiers: [{name: hot, signers: [agent, policy]}]
rules:
  - id: capped
    when: {chain: 1, value_max: 1 ether}
    budget: {window: 1h, value: 1 ether, count: 30}
    tier: hot
`, crypto.PubkeyToAddress(alice.PublicKey).Hex())
	d, err := ParseDocument([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := SignDocument(alice, d.Hash(), d)
	p, err := VerifyDocument(SignedDocument{Source: []byte(src), Signatures: [][]byte{sig}}, Genesis{Hash: d.Hash()})
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(p, NewMemLedger())
	to := aliases["vendor1"]
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		granted = new(big.Int)
		count   int
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for i := 0; i < 20; i++ {
				v := new(big.Int).Mul(big.NewInt(rng.Int63n(200)+1), big.NewInt(1e15)) // up to 0.2 ether
				tx, _ := chain.DescribeTransaction(types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), To: &to, Value: v, Gas: 21000, GasFeeCap: big.NewInt(1), GasTipCap: big.NewInt(1)}))
				dec := e.Authorize(t.Context(), &Request{ID: ids.RequestID(fmt.Sprintf("w%d-%d", w, i)), Agent: "bot", Key: aliases["hot"], ChainID: big.NewInt(1), Kind: KindTransaction, Tx: tx, Time: t0})
				if dec.Allowed() {
					mu.Lock()
					granted.Add(granted, v)
					count++
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if granted.Cmp(big.NewInt(1e18)) > 0 || count > 30 {
		t.Fatalf("granted %s wei in %d requests, budget 1 ether / 30", granted, count)
	}
	if count == 0 {
		t.Fatal("nothing granted")
	}
}

// TestLedgerSurvivesRestart stores the records of one ledger and loads
// them into another, as a persistent implementation would.
func TestLedgerSurvivesRestart(t *testing.T) {
	l := NewMemLedger()
	e := Entry{Bucket: "b", Amount: big.NewInt(70), Count: 1, Window: time.Hour, LimitAmount: big.NewInt(100)}
	if err := l.Reserve(t.Context(), Reservation{ID: "r1", Time: t0, Entries: []Entry{e}}); err != nil {
		t.Fatal(err)
	}
	restarted := NewMemLedger(l.Records()...)
	if err := restarted.Reserve(t.Context(), Reservation{ID: "r2", Time: t0, Entries: []Entry{e}}); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("reservation lost across restart: %v", err)
	}
	if err := restarted.Commit(t.Context(), "r1"); err != nil {
		t.Fatal(err)
	}
	if u, _ := restarted.Usage(t.Context(), "b", time.Hour, t0); u.Amount.Int64() != 70 || u.Count != 1 {
		t.Fatalf("usage %+v", u)
	}
}

func TestDescribe(t *testing.T) {
	d := Decision{Verdict: Deny, RuleID: "usdc-to-vendors", Reason: "recipient 0x9a.. is not in list vendors"}
	if got, want := d.Describe(), `deny: rule "usdc-to-vendors": recipient 0x9a.. is not in list vendors`; got != want {
		t.Fatalf("got %s", got)
	}
	var zero Decision
	if zero.Allowed() {
		t.Fatal("the zero decision allows")
	}
}

func benchPolicy(b *testing.B) (*Engine, *Request) {
	alice := guardianKey("alice")
	var sb strings.Builder
	fmt.Fprintf(&sb, `version: 1
guardians: {alice: %q}
quorum: 1
tiers:
  - {name: hot, signers: [agent, policy]}
  - {name: vault, signers: [agent, policy, guardian], approvals: 1}
tokens:
  USDC: {address: %q, decimals: 6}
lists:
  vendors: [%q, %q]
  blocked: [%q]
rules:
`, crypto.PubkeyToAddress(alice.PublicKey).Hex(), aliases["usdc"].Hex(), aliases["vendor1"].Hex(), aliases["vendor2"].Hex(), aliases["blocked"].Hex())
	for i := 0; i < 49; i++ {
		switch i % 5 {
		case 0:
			fmt.Fprintf(&sb, "  - {id: deny-%d, when: {to: $blocked, chain: %d}, deny: true}\n", i, i+1)
		case 1:
			fmt.Fprintf(&sb, "  - {id: usdc-%d, when: {chain: 1, token: $USDC, call: transfer, recipient: $vendors, amount_max: %d USDC}, budget: {window: 24h, amount: 1000 USDC}, tier: hot}\n", i, i)
		case 2:
			fmt.Fprintf(&sb, "  - {id: chain-%d, when: {chain: %d, to: $vendors, value_max: 1 ether}, tier: hot}\n", i, i+100)
		case 3:
			fmt.Fprintf(&sb, "  - {id: typed-%d, when: {domain: {name: App%d}, primary_type: Order}, tier: vault}\n", i, i)
		case 4:
			fmt.Fprintf(&sb, "  - {id: gas-%d, when: {chain: 1, to: $vendors, gas_max: %d}, tier: hot}\n", i, 1000+i)
		}
	}
	sb.WriteString("  - {id: small-payments, when: {chain: 1, to: $vendors, value_max: 0.05 ether, fee_max: 200 gwei}, budget: {window: 24h, value: 1 ether, count: 100}, tier: hot}\n")
	d, err := ParseDocument([]byte(sb.String()))
	if err != nil {
		b.Fatal(err)
	}
	sig, _ := SignDocument(alice, d.Hash(), d)
	p, err := VerifyDocument(SignedDocument{Source: []byte(sb.String()), Signatures: [][]byte{sig}}, Genesis{Hash: d.Hash()})
	if err != nil {
		b.Fatal(err)
	}
	if len(p.rules) != 50 {
		b.Fatalf("%d rules", len(p.rules))
	}
	l := NewMemLedger()
	for i := 0; i < 20; i++ { // some history in the budget's bucket
		_ = l.Reserve(context.Background(), Reservation{ID: ids.RequestID(fmt.Sprint("h", i)), Time: t0.Add(-time.Duration(i) * time.Hour), Entries: []Entry{{
			Bucket: BudgetBucket("small-payments", "bot", aliases["hot"], AssetNative), Amount: big.NewInt(1e15), Count: 1}}})
	}
	to := aliases["vendor1"]
	tx, err := chain.DescribeTransaction(types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), To: &to, Value: big.NewInt(1e16), Gas: 21000, GasFeeCap: big.NewInt(3e10), GasTipCap: big.NewInt(1e9)}))
	if err != nil {
		b.Fatal(err)
	}
	req := &Request{ID: "bench", Agent: "bot", Key: aliases["hot"], ChainID: big.NewInt(1), Kind: KindTransaction, Tx: tx, Time: t0}
	return NewEngine(p, l), req
}

// BenchmarkEvaluate50Rules evaluates one transaction against a policy of 50
// rules whose last rule matches, with a budget read from the ledger.
func BenchmarkEvaluate50Rules(b *testing.B) {
	e, req := benchPolicy(b)
	if d := e.DryRun(context.Background(), req); d.RuleID != "small-payments" {
		b.Fatalf("unexpected decision %s", d.Describe())
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = e.DryRun(context.Background(), req)
	}
}

// failingLedger answers every usage query with an error.
type failingLedger struct{ *MemLedger }

func (failingLedger) Usage(context.Context, Bucket, time.Duration, time.Time) (Usage, error) {
	return Usage{}, errors.New("disk on fire")
}

func testPolicy(t *testing.T, rules string) *Policy {
	t.Helper()
	alice := guardianKey("alice")
	src := fmt.Sprintf("version: 1\nguardians: {alice: %q}\nquorum: 1\ntiers: [{name: hot, signers: [agent, policy]}, {name: vault, signers: [agent, policy, guardian], approvals: 1}]\nrules:\n%s",
		crypto.PubkeyToAddress(alice.PublicKey).Hex(), rules)
	d, err := ParseDocument([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := SignDocument(alice, d.Hash(), d)
	p, err := VerifyDocument(SignedDocument{Source: []byte(src), Signatures: [][]byte{sig}}, Genesis{Hash: d.Hash()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLedgerErrorDenies checks that a ledger failure while checking a
// budget aborts the evaluation (rule "error") instead of letting the
// request fall through to a later allowing rule.
func TestLedgerErrorDenies(t *testing.T) {
	p := testPolicy(t, `  - id: budgeted
    when: {chain: 1, value_max: 1 ether}
    budget: {window: 1h, value: 1 ether}
    tier: vault
  - id: fallback
    when: {chain: 1, value_max: 1 ether}
    tier: hot
`)
	to := aliases["vendor1"]
	tx, _ := chain.DescribeTransaction(types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), To: &to, Value: big.NewInt(1), Gas: 21000, GasFeeCap: big.NewInt(1), GasTipCap: big.NewInt(1)}))
	req := &Request{ID: "r1", Agent: "bot", Key: aliases["hot"], ChainID: big.NewInt(1), Kind: KindTransaction, Tx: tx, Time: t0}
	for name, e := range map[string]*Engine{"dry run": NewEngine(p, failingLedger{NewMemLedger()}), "authorize": NewEngine(p, failingLedger{NewMemLedger()})} {
		var d Decision
		if name == "dry run" {
			d = e.DryRun(t.Context(), req)
		} else {
			d = e.Authorize(t.Context(), req)
		}
		if d.Allowed() || d.RuleID != RuleError || !strings.Contains(d.Reason, "disk on fire") {
			t.Errorf("%s: %s", name, d.Describe())
		}
	}
	// With a working ledger the budgeted rule decides.
	if d := NewEngine(p, NewMemLedger()).DryRun(t.Context(), req); d.RuleID != "budgeted" {
		t.Errorf("working ledger: %s", d.Describe())
	}
}

// TestRestoreMerges checks that Restore of an older snapshot keeps what
// the engine applied since (a newer freeze of the same target, a
// revocation, a lifted freeze stays lifted), that Seq grows, and that
// restoring a snapshot twice counts no breaker event twice.
func TestRestoreMerges(t *testing.T) {
	p := testPolicy(t, "  - {id: r, when: {chain: 1, value_max: 1 ether}, tier: hot}\n")
	alice := guardianKey("alice")
	e := NewEngine(p, NewMemLedger())
	freeze := func(f Freeze) {
		t.Helper()
		sig, _ := SignTypedData(alice, f.TypedData(p.WalletID()))
		if err := e.Freeze(f, sig, t0); err != nil {
			t.Fatal(err)
		}
	}
	to := aliases["vendor1"]
	tx, _ := chain.DescribeTransaction(types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), To: &to, Value: big.NewInt(1), Gas: 21000, GasFeeCap: big.NewInt(1), GasTipCap: big.NewInt(1)}))
	e.Authorize(t.Context(), &Request{ID: "r1", Agent: "bot", Key: aliases["hot"], ChainID: big.NewInt(1), Kind: KindTransaction, Tx: tx, Time: t0})
	first := Freeze{Target: "agent:x", Reason: "first", Issued: t0.Add(-time.Minute)}
	freeze(first)
	freeze(Freeze{Target: "agent:y", Reason: "lifted later", Issued: t0})
	old := e.Export()

	second := Freeze{Target: "agent:x", Reason: "second", Issued: t0}
	freeze(second)
	freeze(Freeze{Target: "agent:z", Reason: "after the snapshot", Issued: t0})
	var yID common.Hash
	for _, r := range e.Freezes() {
		if r.Target == "agent:y" {
			yID = r.ID
		}
	}
	u := Unfreeze{Target: "agent:y", Freeze: yID, Issued: t0}
	usig, _ := SignTypedData(alice, u.TypedData(p.WalletID()))
	if err := e.Unfreeze(u, [][]byte{usig}, t0); err != nil {
		t.Fatal(err)
	}
	rsig, _ := SignTypedData(alice, Revocation{GrantID: "g1", Issued: t0}.TypedData(p.WalletID()))
	if err := e.Revoke(Revocation{GrantID: "g1", Issued: t0}, rsig); err != nil {
		t.Fatal(err)
	}
	before := e.Export()
	if before.Seq <= old.Seq {
		t.Fatalf("seq %d after changes, snapshot %d", before.Seq, old.Seq)
	}
	e.Restore(old)
	e.Restore(old)
	after := e.Export()
	if after.Seq <= before.Seq {
		t.Errorf("seq %d after restore, %d before", after.Seq, before.Seq)
	}
	got := map[Target]string{}
	for _, r := range after.Freezes {
		got[r.Target] = r.Reason
	}
	if len(got) != 2 || got["agent:x"] != "second" || got["agent:z"] != "after the snapshot" {
		t.Errorf("freezes after restoring an older snapshot: %v", got)
	}
	if len(after.Revoked) != 1 {
		t.Errorf("revocations: %v", after.Revoked)
	}
	if len(after.Breaker) != 1 || len(after.Breaker[0].NewDests) != 1 {
		t.Errorf("breaker history: %+v", after.Breaker)
	}
	// The first freeze of agent:x was replaced: an unfreeze naming it
	// lifts nothing, and it cannot be applied again.
	id, _ := first.ID(p.WalletID())
	u = Unfreeze{Target: "agent:x", Freeze: id, Issued: t0}
	usig, _ = SignTypedData(alice, u.TypedData(p.WalletID()))
	if err := e.Unfreeze(u, [][]byte{usig}, t0); err == nil {
		t.Error("unfreeze of a replaced freeze lifted the current one")
	}
	sig, _ := SignTypedData(alice, first.TypedData(p.WalletID()))
	if err := e.Freeze(first, sig, t0); err == nil {
		t.Error("replayed freeze applied")
	}
	// A fresh engine restoring the newer state gets the same freezes.
	e2 := NewEngine(p, NewMemLedger())
	e2.Restore(after)
	if n := len(e2.Freezes()); n != 2 {
		t.Errorf("fresh restore: %d freezes", n)
	}
}
