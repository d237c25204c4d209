package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/node"
	"github.com/custos-wallet/custos/tss"
)

// TestKeygenWaitsForSlowPool: one member's pool is still making its
// pre-parameters when the others join. Members that started then would
// wait for its first message and give up after their engine's idle
// timeout, so the coordinator holds the start until every member has
// pre-parameters, showing whom it waits for. The slow member's set is
// released only after three idle timeouts: the key is still made.
func TestKeygenWaitsForSlowPool(t *testing.T) {
	if testing.Short() {
		t.Skip("keygen takes tens of seconds")
	}
	const idle = 2 * time.Second
	release := make(chan struct{})
	nc := startNodes(t, [3][]int{{0}, {1}, {2}}, func(i int, o *node.Options) {
		o.TSS = tss.Config{IdleTimeout: idle}
		if i == 2 {
			gen := o.Generate
			o.Generate = func(ctx context.Context) (*tss.PreParams, error) {
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return gen(ctx)
			}
		}
	})
	ctx := nc.ctx
	op, err := client.New(nc.co.URL(), client.Options{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.ProposePolicy(ctx, nc.signedDoc); err != nil {
		t.Fatal(err)
	}
	var committee []api.CommitteeMember
	for i, id := range nc.ids {
		committee = append(committee, api.CommitteeMember{ID: id, Role: nc.roles[i]})
	}
	started, err := op.CreateKey(ctx, api.CreateKey{Committee: committee, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	// The operation shows that it waits, and for whom.
	slow := nc.ids[2]
	for {
		o, err := op.Operation(wctx, started.ID)
		if err != nil {
			t.Fatal(err)
		}
		if o.State != api.OpRunning {
			t.Fatalf("operation ended before the slow pool was released: %+v", o)
		}
		if o.Phase == "pre_params" && strings.Contains(o.Progress[slow], "pre-parameters") {
			break
		}
		select {
		case <-wctx.Done():
			t.Fatalf("the operation never reported waiting for %s's pre-parameters", slow)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Longer than the idle timeout of a member that would have started.
	time.Sleep(3 * idle)
	close(release)
	done, err := op.WaitOperation(wctx, started.ID, 200*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != api.OpDone || done.Key == nil {
		t.Fatalf("keygen after a slow pool: %+v", done)
	}
}
