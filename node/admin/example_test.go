package admin_test

import (
	"context"
	"fmt"
	"time"

	"github.com/custos-wallet/custos/node/admin"
)

// A guardian approves everything in its node's queue, as
// `custos guardian approve --yes` does for one request: the details come
// from the node, the signature from the guardian's keystore account, and
// the node checks the approval against its policy before forwarding it.
func Example() {
	ctx := context.Background()
	c, err := admin.NewClient("unix:///var/lib/custos/guardian-1/admin.sock", "")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	g, err := admin.OpenKeystore("alice.json", "password of alice")
	if err != nil {
		panic(err)
	}
	w, err := c.Wallet(ctx)
	if err != nil {
		panic(err)
	}
	pending, err := c.Pending(ctx)
	if err != nil {
		panic(err)
	}
	for i := range pending {
		p := &pending[i]
		fmt.Println(p.RequestID, p.Tier, p.RuleID, p.Summary)
		a, err := g.Approve(w.WalletID, p, time.Now(), time.Hour)
		if err != nil {
			panic(err)
		}
		d, err := c.Approve(ctx, a)
		if r, ok := admin.IsRefused(err); ok {
			fmt.Printf("refused (%s): %s\n", r.Rule, r.Reason)
			continue
		}
		if err != nil {
			panic(err)
		}
		fmt.Println("forwarded to", d.Forwarded)
	}
}
