package cluster

import (
	"context"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

var idemSeq int

// idem is a fresh idempotency key.
func idem(prefix string) string {
	idemSeq++
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), idemSeq)
}

// signedTx checks a signed request's transaction: it decodes, it is from
// the key, it pays to and value, and it is what the agent asked for.
func signedTx(t *testing.T, r *api.Request, key api.Key, to common.Address, value *big.Int) *types.Transaction {
	t.Helper()
	if r.State != api.StateSigned {
		t.Fatalf("request %s", describeRequest(r))
	}
	if len(r.Signature) != 65 {
		t.Fatalf("request %s: signature of %d bytes", r.ID, len(r.Signature))
	}
	var tx types.Transaction
	if err := tx.UnmarshalBinary(r.RawTransaction); err != nil {
		t.Fatalf("request %s: raw transaction: %v", r.ID, err)
	}
	from, err := types.Sender(types.LatestSignerForChainID(big.NewInt(simChainID)), &tx)
	if err != nil || from != key.Address {
		t.Fatalf("request %s: transaction signed by %s (%v), want the key %s", r.ID, from, err, key.Address)
	}
	if tx.To() == nil || *tx.To() != to || tx.Value().Cmp(value) != 0 {
		t.Fatalf("request %s: transaction to %v value %v, want %s %v", r.ID, tx.To(), tx.Value(), to, value)
	}
	if r.TxHash != nil && *r.TxHash != tx.Hash() {
		t.Fatalf("request %s: tx_hash %s, transaction hash %s", r.ID, r.TxHash, tx.Hash())
	}
	if err := chain.VerifySignature(r.Digest, recoveryID(r.Signature), key.Address); err != nil {
		t.Fatalf("request %s: signature does not recover to the key over the digest: %v", r.ID, err)
	}
	return &tx
}

// mine sends a signed transaction to the simulated chain (unless the
// coordinator did), mines a block and checks its receipt.
func (c *cluster) mine(t *testing.T, tx *types.Transaction) {
	t.Helper()
	ctx := context.Background()
	cl := c.w.sim.Client()
	if _, pending, err := cl.TransactionByHash(ctx, tx.Hash()); err != nil || !pending {
		if err := cl.SendTransaction(ctx, tx); err != nil {
			t.Fatalf("send %s: %v", tx.Hash(), err)
		}
	}
	c.w.sim.Commit()
	rcpt, err := cl.TransactionReceipt(ctx, tx.Hash())
	if err != nil {
		t.Fatalf("receipt of %s: %v", tx.Hash(), err)
	}
	if rcpt.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("transaction %s failed on chain", tx.Hash())
	}
}

// quorumOf is the member names of the request's successful attempt.
func (c *cluster) quorumOf(r *api.Request) []string {
	for _, a := range r.Attempts {
		if a.State == "done" {
			var out []string
			for _, m := range a.Quorum {
				out = append(out, c.nameOf(m))
			}
			slices.Sort(out)
			return out
		}
	}
	return nil
}

// A small payment to a vendor is hot: the agent and policy nodes sign it,
// the signed transaction is accepted by the chain and mined, the balance
// moves, and the policy node's ledger has committed its budget.
func TestHotTransfer(t *testing.T) {
	c := setup(t)
	value := eth(5) // 0.005 ether
	before := c.w.balance(t, vendor1)
	body := signBody(t, hotKey.ID, idem("hot"), c.w.unsignedTx(t, hotKey.Address, vendor1, value))
	r := c.submitBody(t, c.w.bot, body)
	if r.ID == "" {
		t.Fatalf("submit answered %+v", r)
	}
	r = c.waitState(t, r.ID)
	if r.Tier != "hot" {
		t.Errorf("tier %q, want hot", r.Tier)
	}
	if r.Decision != nil && r.Decision.RuleID != "small-payments" {
		t.Errorf("decision rule %q, want small-payments", r.Decision.RuleID)
	}
	tx := signedTx(t, r, hotKey, vendor1, value)
	if q := c.quorumOf(r); !slices.Equal(q, []string{nameAgent, namePolicy}) {
		t.Errorf("signed by %v, want agent and policy only", q)
	}
	c.mine(t, tx)
	if got := new(big.Int).Sub(c.w.balance(t, vendor1), before); got.Cmp(value) != 0 {
		t.Fatalf("vendor balance moved by %v, want %v", got, value)
	}
	// The policy node committed the budget for this request, once.
	c.checkCommittedOnce(t, namePolicy, r.ID)
	// The same signed body again (a retry by the agent's sidecar) returns
	// the first request with its signature, not a second signing.
	again := c.submitBody(t, c.w.bot, body)
	if again.ID != r.ID {
		t.Errorf("resubmission with the same idempotency key made request %s, want %s", again.ID, r.ID)
	}
	if again = c.waitState(t, again.ID); again.State != api.StateSigned || string(again.Signature) != string(r.Signature) {
		t.Errorf("resubmission: %s, signature %x, want the first signature %x", describeRequest(again), again.Signature, r.Signature)
	}
	c.checkCommittedOnce(t, namePolicy, r.ID)
}

// recoveryID returns sig with V as 0 or 1, whichever form it came in.
func recoveryID(sig []byte) []byte {
	out := append([]byte(nil), sig...)
	if len(out) == 65 && out[64] >= 27 {
		out[64] -= 27
	}
	return out
}

// ledgerRecords are a node's ledger records of one request, read from its
// store while it runs.
func (c *cluster) ledgerRecords(t *testing.T, name string, id ids.RequestID) []policy.Record {
	t.Helper()
	n := c.node(name)
	if n == nil {
		t.Fatalf("%s is not running", name)
	}
	all, err := n.Store().Ledger().Records(context.Background())
	if err != nil {
		t.Fatalf("%s ledger: %v", name, err)
	}
	var out []policy.Record
	for _, r := range all {
		if r.ID == id {
			out = append(out, r)
		}
	}
	return out
}

// checkCommittedOnce: the node's ledger holds the request's spend in each
// bucket once, committed.
func (c *cluster) checkCommittedOnce(t *testing.T, name string, id ids.RequestID) {
	t.Helper()
	recs := c.ledgerRecords(t, name, id)
	if len(recs) == 0 {
		t.Errorf("%s ledger has no record of %s", name, id)
	}
	seen := map[policy.Bucket]bool{}
	for _, r := range recs {
		if seen[r.Bucket] {
			t.Errorf("%s ledger holds %s twice in bucket %s", name, id, r.Bucket)
		}
		seen[r.Bucket] = true
		if r.State != policy.Committed {
			t.Errorf("%s ledger: %s in %s is %v, want committed", name, id, r.Bucket, r.State)
		}
	}
}
