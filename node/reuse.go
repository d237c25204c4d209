package node

import (
	"context"
	"errors"
	"math/big"
	"time"

	"github.com/custos-wallet/custos/policy"
)

// errReadOnly: the ledger view of a re-evaluation takes no reservations.
var errReadOnly = errors.New("node: a re-evaluation's ledger view is read-only")

// heldLedger is the node's ledger as it would be without one request's
// own held reservation: a retry that reuses that reservation is judged by
// the policy without counting its own budget twice.
type heldLedger struct {
	policy.Ledger
	held []policy.Record
}

func (l heldLedger) Reserve(context.Context, policy.Reservation) error { return errReadOnly }

func (l heldLedger) Usage(ctx context.Context, b policy.Bucket, window time.Duration, now time.Time) (policy.Usage, error) {
	u, err := l.Ledger.Usage(ctx, b, window, now)
	if err != nil {
		return u, err
	}
	amount := new(big.Int)
	if u.Amount != nil {
		amount.Set(u.Amount)
	}
	count := u.Count
	for _, r := range l.held {
		if r.Bucket != b || (window != 0 && r.Time.Before(now.Add(-window))) {
			continue
		}
		if r.Amount != nil {
			amount.Sub(amount, r.Amount)
		}
		count -= min(count, r.Count)
	}
	if amount.Sign() < 0 {
		amount.SetInt64(0)
	}
	return policy.Usage{Amount: amount, Count: count}, nil
}

// reevaluate is the policy decision for a retry of req that reuses the
// reservation the node holds for it: every rule, freeze, revocation and
// the current document apply as for a new request, with the budget the
// reservation already holds not counted a second time. Nothing is
// reserved or fed to the breaker.
func (n *Node) reevaluate(ctx context.Context, eng *policy.Engine, req *policy.Request) (policy.Decision, error) {
	recs, err := n.st.Ledger().Records(ctx)
	if err != nil {
		return policy.Decision{}, err
	}
	var held []policy.Record
	for _, r := range recs {
		if r.ID == req.ID && r.State == policy.Reserved {
			held = append(held, r)
		}
	}
	view := policy.NewEngine(eng.Policy(), heldLedger{Ledger: n.st.Ledger(), held: held})
	view.Restore(eng.Export())
	return view.DryRun(ctx, req), nil
}
