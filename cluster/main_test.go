package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
)

// One cluster and its keys per test binary: each key generation costs tens
// of seconds of CPU here, so the tests share them.
//
//	hot:   agent-1, policy-1, guardian-1; threshold 1 (any 2 sign); guardian
//	       floor 0: agent and policy sign routine payments alone.
//	vault: agent-1, policy-1, guardian-1, guardian-2; threshold 2 (any 3
//	       sign); guardian floor 1: no signature without a guardian share.
var (
	setupOnce sync.Once
	setupErr  error
	shared    *cluster
	hotOp     *api.Operation
	vaultOp   *api.Operation
	hotKey    api.Key
	vaultKey  api.Key
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if shared != nil {
		shared.close()
		shared.w.close()
	}
	os.Exit(code)
}

// setup returns the shared cluster with its policy and both keys, made on
// first use.
func setup(t *testing.T) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("the cluster tests run key generations: minutes of CPU")
	}
	setupOnce.Do(func() { setupErr = buildShared() })
	if setupErr != nil {
		t.Fatalf("cluster setup: %v", setupErr)
	}
	return shared
}

func buildShared() error {
	w, err := newWorld()
	if err != nil {
		return err
	}
	c, err := newCluster(w)
	if err != nil {
		w.close()
		return err
	}
	shared = c
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := c.pushGenesis(ctx); err != nil {
		return err
	}
	if hotOp, err = c.createKey(ctx, []string{nameAgent, namePolicy, nameGuardian1}, 1); err != nil {
		return fmt.Errorf("hot key: %w", err)
	}
	hotKey = *hotOp.Key
	if vaultOp, err = c.createKey(ctx, []string{nameAgent, namePolicy, nameGuardian1, nameGuardian2}, 2); err != nil {
		return fmt.Errorf("vault key: %w", err)
	}
	vaultKey = *vaultOp.Key
	for _, k := range []api.Key{hotKey, vaultKey} {
		if err := w.fund(ctx, k.Address, eth(100_000)); err != nil {
			return err
		}
	}
	return nil
}

// pushGenesis proposes the guardian-signed genesis document through the
// REST API and checks that every member took it.
func (c *cluster) pushGenesis(ctx context.Context) error {
	var p api.Pushed
	if err := c.call(ctx, "POST", "/v1/policy", c.w.signedDoc, c.opToken, &p); err != nil {
		return fmt.Errorf("POST /v1/policy: %w", err)
	}
	accepted := 0
	for _, m := range p.Members {
		if !m.Accepted {
			return fmt.Errorf("POST /v1/policy: %s refused the genesis document (%s): %s", c.nameOf(m.Member), m.RuleID, m.Reason)
		}
		accepted++
	}
	if accepted != len(memberNames) {
		return fmt.Errorf("POST /v1/policy: %d members accepted, want %d: %+v", accepted, len(memberNames), p)
	}
	return nil
}

// committee is the REST form of the named members.
func (c *cluster) committee(names ...string) []api.CommitteeMember {
	var out []api.CommitteeMember
	for _, n := range names {
		out = append(out, api.CommitteeMember{ID: c.memberID(n), Role: memberRoles[n]})
	}
	return out
}

// createKey runs a key generation through the REST API and waits for it.
func (c *cluster) createKey(ctx context.Context, names []string, threshold int) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, "POST", "/v1/keys", api.CreateKey{Committee: c.committee(names...), Threshold: threshold}, c.opToken, &op); err != nil {
		return nil, fmt.Errorf("POST /v1/keys: %w", err)
	}
	return c.waitOperation(ctx, op.ID)
}

// waitOperation polls a key generation or reshare until it ends.
func (c *cluster) waitOperation(ctx context.Context, id string) (*api.Operation, error) {
	var op api.Operation
	err := waitFor(ctx, 500*time.Millisecond, func() (bool, error) {
		if err := c.call(ctx, "GET", "/v1/operations/"+id, nil, c.opToken, &op); err != nil {
			return false, err
		}
		return op.State != api.OpRunning, nil
	})
	if err != nil {
		return &op, fmt.Errorf("operation %s (phase %s, progress %v): %w", id, op.Phase, op.Progress, err)
	}
	if op.State != api.OpDone || op.Key == nil {
		return &op, fmt.Errorf("operation %s ended %s: %s", id, op.State, op.Error)
	}
	return &op, nil
}

func keyIDOf(k api.Key) ids.KeyID { return k.ID }
