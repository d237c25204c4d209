package bench

import (
	"context"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/dev"
	"github.com/custos-wallet/custos/devchain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/params"
)

// runPolicy times one evaluation (a dry run: every rule, no reservation)
// of the dev sample policy on the payment the REST scenario signs.
func runPolicy(_ context.Context, spec Spec) (*Result, error) {
	src, err := os.ReadFile(filepath.Join(templateDir(spec.Work), "policy.yaml"))
	if err != nil {
		return nil, err
	}
	p, err := policy.ParseAndCompile(src)
	if err != nil {
		return nil, err
	}
	chainID := uint64(devchain.DefaultChainID)
	to := dev.Vendors[0]
	cid := new(big.Int).SetUint64(chainID)
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: cid, Nonce: 1, To: &to, Value: payment, Gas: 21000,
		GasFeeCap: big.NewInt(20 * params.GWei), GasTipCap: big.NewInt(params.GWei)})
	raw, err := tx.MarshalBinary()
	if err != nil {
		return nil, err
	}
	payload, err := chain.ParseTransaction(cid, raw)
	if err != nil {
		return nil, err
	}
	e := policy.NewEngine(p, policy.NewMemLedger())
	req := policy.NewRequest(ids.NewRequestID(), dev.AgentID, common.HexToAddress("0x1"), payload, nil, time.Now())
	if d := e.DryRun(context.Background(), req); !d.Allowed() {
		return nil, fmt.Errorf("the sample policy does not allow the payment: %s", d.Describe())
	}
	r := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			e.DryRun(context.Background(), req)
		}
	})
	return &Result{Scenario: scenarioPolicyDryRun, Values: map[string]float64{"policy_eval": float64(r.NsPerOp()) / 1e9},
		Notes: []string{"policy_eval: one dry run of the dev sample policy (3 rules) on a 1 gwei payment, parsed payload ready"}}, nil
}
