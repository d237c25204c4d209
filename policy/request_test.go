package policy

import (
	"context"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/ethereum/go-ethereum/core/types"
)

// TestImpossibleRequestsRefused hands the engine requests built by hand
// with values no decoder produces. Each is refused under rule "request"
// before it reaches a rule, the breaker or the ledger, and none changes
// the budget used.
func TestImpossibleRequestsRefused(t *testing.T) {
	p := testPolicy(t, `  - id: pay
    when: {chain: 1, recipient: "0x1111111111111111111111111111111111111111", value_max: 1 ether}
    budget: {window: 1h, value: 1 ether}
    tier: hot
`)
	vendor, stranger := aliases["vendor1"], aliases["stranger"]
	good := func() *Request {
		tx, err := chain.DescribeTransaction(types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), To: &vendor, Value: big.NewInt(1e17), Gas: 21000, GasFeeCap: big.NewInt(1e9), GasTipCap: big.NewInt(1)}))
		if err != nil {
			t.Fatal(err)
		}
		return &Request{ID: "r", Agent: "bot", Key: aliases["hot"], ChainID: big.NewInt(1), Kind: KindTransaction, Tx: tx, Time: t0}
	}
	for name, c := range map[string]struct {
		edit func(*Request)
		want string
	}{
		"negative value": {func(r *Request) { r.Tx.Value = big.NewInt(-1e18); r.Tx.Spends = nil }, "negative value"},
		"negative fee":   {func(r *Request) { r.Tx.GasFeeCap = big.NewInt(-1) }, "negative max fee"},
		"negative tip":   {func(r *Request) { r.Tx.GasTipCap = big.NewInt(-1) }, "negative priority fee"},
		"no fee cap":     {func(r *Request) { r.Tx.GasFeeCap = nil }, "without a max fee"},
		"nil spend amount": {func(r *Request) {
			r.Tx.Spends = append(r.Tx.Spends, chain.Spend{Kind: chain.SpendTransfer, Token: aliases["usdc"], To: vendor})
		}, "no amount"},
		"negative spend": {func(r *Request) { r.Tx.Spends[0].Amount = big.NewInt(-5) }, "negative amount"},
		"spend removed":  {func(r *Request) { r.Tx.To = &stranger; r.Tx.Spends = nil }, "spends are not"},
		"spend redirected": {func(r *Request) {
			r.Tx.To = &stranger
		}, "spends are not"},
		"hidden calldata": {func(r *Request) { r.Tx.Data = chain.EncodeCall(chain.SelApprove, stranger, chain.MaxUint256) }, "calldata and its decoded call disagree"},
		"edited call": {func(r *Request) {
			r.Tx.Data = chain.EncodeCall(chain.SelApprove, stranger, chain.MaxUint256)
			r.Tx.Call = &chain.Call{Selector: chain.SelTransfer}
		}, "selector"},
		"no time":        {func(r *Request) { r.Time = time.Time{} }, "no evaluation time"},
		"no transaction": {func(r *Request) { r.Tx = nil }, "without a decoded transaction"},
		"nil typed spend": {func(r *Request) {
			r.Kind, r.Tx = KindTypedData, nil
			r.Typed = &chain.Typed{ChainID: big.NewInt(1), Spends: []chain.Spend{{Kind: chain.SpendPermit, Token: aliases["usdc"], To: vendor}}}
		}, "no amount"},
		"negative grant": {func(r *Request) {
			r.Grant = &SignedGrant{Grant: Grant{ID: "g", ValueTotal: big.NewInt(-1)}}
		}, "negative"},
	} {
		t.Run(name, func(t *testing.T) {
			e := NewEngine(p, NewMemLedger())
			for _, op := range []string{"dry run", "authorize"} {
				req := good()
				c.edit(req)
				var d Decision
				if op == "dry run" {
					d = e.DryRun(t.Context(), req)
				} else {
					d = e.Authorize(t.Context(), req)
				}
				if d.Allowed() || d.RuleID != RuleRequest || !strings.Contains(d.Reason, c.want) {
					t.Errorf("%s: %s (want rule request: %s)", op, d.Describe(), c.want)
				}
			}
			if u, _ := e.ledger.Usage(t.Context(), BudgetBucket("pay", "bot", aliases["hot"], AssetNative), 0, t0); u.Amount.Sign() != 0 || u.Count != 0 {
				t.Errorf("budget used: %s, %d", u.Amount, u.Count)
			}
		})
	}
	// The unedited request is allowed: the refusals above are the edits'.
	if d := NewEngine(p, NewMemLedger()).Authorize(t.Context(), good()); !d.Allowed() {
		t.Fatalf("good request: %s", d.Describe())
	}
}

// panickingLedger panics where a ledger would do I/O.
type panickingLedger struct{ *MemLedger }

func (panickingLedger) Reserve(context.Context, Reservation) error { panic("ledger bug") }

// TestAuthorizeRecoversPanics checks that a panic after evaluation (here
// in the ledger's Reserve) denies under rule "error" instead of taking the
// node down.
func TestAuthorizeRecoversPanics(t *testing.T) {
	p := testPolicy(t, "  - {id: r, when: {chain: 1, value_max: 1 ether}, budget: {window: 1h, value: 1 ether}, tier: hot}\n")
	to := aliases["vendor1"]
	tx, _ := chain.DescribeTransaction(types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), To: &to, Value: big.NewInt(1), Gas: 21000, GasFeeCap: big.NewInt(1), GasTipCap: big.NewInt(1)}))
	d := NewEngine(p, panickingLedger{NewMemLedger()}).Authorize(t.Context(), &Request{ID: "r1", Agent: "bot", Key: aliases["hot"], ChainID: big.NewInt(1), Kind: KindTransaction, Tx: tx, Time: t0})
	if d.Allowed() || d.RuleID != RuleError || !strings.Contains(d.Reason, "ledger bug") {
		t.Fatal(d.Describe())
	}
}
