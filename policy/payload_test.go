package policy

import (
	"math/big"
	"testing"

	"github.com/custos-wallet/custos/chain"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

func payloadOf(t *testing.T, to common.Address, value int64) *chain.Payload {
	t.Helper()
	raw, err := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), To: &to, Value: big.NewInt(value), Gas: 21000, GasFeeCap: big.NewInt(1), GasTipCap: big.NewInt(1)}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	p, err := chain.ParseTransaction(big.NewInt(1), raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The engine evaluates the Payload that is signed, never a description
// placed beside it: a request whose Tx says a small payment while its
// Payload is a large one is judged on the large one.
func TestEvaluatesThePayloadThatIsSigned(t *testing.T) {
	p := testPolicy(t, "  - {id: small, when: {chain: 1, value_max: 1 ether}, tier: hot}\n")
	e := NewEngine(p, NewMemLedger())
	vendor := aliases["vendor1"]

	small := NewRequest("r1", "bot", aliases["hot"], payloadOf(t, vendor, 1e17), nil, t0)
	if d := e.Authorize(t.Context(), small); !d.Allowed() || d.RuleID != "small" {
		t.Fatalf("small payment: %s", d.Describe())
	}
	if small.Kind != KindTransaction || small.Tx == nil || small.Tx.Value.Cmp(big.NewInt(1e17)) != 0 || small.ChainID.Cmp(big.NewInt(1)) != 0 {
		t.Errorf("NewRequest did not fill the views: %+v", small)
	}

	large := NewRequest("r2", "bot", aliases["hot"], payloadOf(t, vendor, 2e18), nil, t0)
	large.Tx = payment(t, "x", "bot", vendor, 1).Tx // a lying description
	for name, d := range map[string]Decision{
		"dry run":   e.DryRun(t.Context(), large),
		"authorize": e.Authorize(t.Context(), large),
	} {
		if d.Allowed() {
			t.Errorf("%s: a 2 ether payload allowed by its 1 wei description: %s", name, d.Describe())
		}
	}
	// The same lie in the other field: the Kind.
	msg, err := chain.ParsePersonalMessage(big.NewInt(1), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	lie := NewRequest("r3", "bot", aliases["hot"], msg, nil, t0)
	lie.Kind, lie.Tx = KindTransaction, payment(t, "y", "bot", vendor, 1).Tx
	if d := e.DryRun(t.Context(), lie); d.Allowed() {
		t.Errorf("a personal message evaluated as a payment: %s", d.Describe())
	}
}
