package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/dev"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/tss"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The work directory's layout.
func identityPath(work string, i int) string {
	return filepath.Join(work, "p2p", fmt.Sprintf("member%d.key", i))
}
func sharePath(work string, i int) string {
	return filepath.Join(work, "p2p", fmt.Sprintf("member%d.share", i))
}
func templateDir(work string) string { return filepath.Join(work, "template") }
func logPath(work string) string     { return filepath.Join(work, "bench.log") }

// roles of the three members of the in-process key, in identity order;
// the first two sign.
var roles = []ids.Role{ids.RoleAgent, ids.RolePolicy, ids.RoleGuardian}

// fixtureOrder gives each dev member the fixtures it draws, in order: the
// hot key takes 0, 1 and 2, the key made to time a warm-pool keygen 3, 4
// and 5. Guardian-2 takes 6 and is in neither.
var fixtureOrder = map[string][]int{
	dev.NameAgent:     {0, 3},
	dev.NamePolicy:    {1, 4},
	dev.NameGuardian1: {2, 5},
	dev.NameGuardian2: {6},
}

// FixturesEnv names the directory of the pre-parameter fixtures;
// unset, the repository's internal/testfixtures/preparams from the
// working directory. The fixtures are read from files, never built into
// the binary: they are public test-only key material that must not reach
// a node.
const FixturesEnv = "CUSTOS_BENCH_FIXTURES"

// fixture reads fixture i (0-based) from the fixtures directory.
func fixture(i int) (*tss.PreParams, error) {
	dir := os.Getenv(FixturesEnv)
	if dir == "" {
		dir = filepath.Join("internal", "testfixtures", "preparams")
	}
	pp, err := node.ReadPreParamsFile(filepath.Join(dir, fmt.Sprintf("%02d.json", i)))
	if err != nil {
		return nil, fmt.Errorf("bench: pre-parameter fixture %d (run from the repository root, or set %s): %w", i, FixturesEnv, err)
	}
	return pp, nil
}

// fixtures hands out each member's fixtures in fixtureOrder, then blocks
// until ctx ends, like a pool whose generation never finishes. With fresh
// false it hands out none: a child that copies a cluster makes no key.
func fixtures(fresh bool) func(member string) tss.Generator {
	var mu sync.Mutex
	next := map[string]int{}
	return func(member string) tss.Generator {
		return func(ctx context.Context) (*tss.PreParams, error) {
			mu.Lock()
			i := next[member]
			list := fixtureOrder[member]
			if fresh && i < len(list) {
				next[member]++
				mu.Unlock()
				return fixture(list[i])
			}
			mu.Unlock()
			<-ctx.Done()
			return nil, ctx.Err()
		}
	}
}

// runSetup prepares the work directory: three identities and their 2-of-3
// key made in-process (timed), and the dev cluster template with its hot
// key, on which a second key is made with warm pools (timed).
func runSetup(ctx context.Context, spec Spec) (*Result, error) {
	res := &Result{Scenario: scenarioSetup, Values: map[string]float64{}}
	// A setup that did not finish left parts behind: start over.
	for _, d := range []string{filepath.Dir(identityPath(spec.Work, 0)), templateDir(spec.Work)} {
		if err := os.RemoveAll(d); err != nil {
			return nil, err
		}
	}
	members := make([]tss.Member, len(roles))
	for i := range roles {
		key, err := p2p.LoadOrCreateIdentity(identityPath(spec.Work, i))
		if err != nil {
			return nil, err
		}
		pid, err := peer.IDFromPrivateKey(key)
		if err != nil {
			return nil, err
		}
		members[i] = tss.Member{ID: ids.MemberID(pid.String()), Role: roles[i]}
	}
	committee := tss.Committee{Members: members, Threshold: 1}
	net := newMemNet()
	sid := ids.NewSessionID()
	shares := make([]*tss.Share, len(members))
	start := time.Now()
	err := all(len(members), func(i int) error {
		pp, err := fixture(i)
		if err != nil {
			return err
		}
		shares[i], err = tss.NewEngine(net.endpoint(members[i].ID), tss.Config{}).Keygen(ctx,
			tss.KeygenRequest{Session: sid, Committee: committee, PreParams: pp})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("in-process keygen: %w", err)
	}
	res.Values["keygen_inprocess"] = time.Since(start).Seconds()
	for i, sh := range shares {
		b, err := sh.MarshalSecret()
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(sharePath(spec.Work, i), b, 0o600); err != nil {
			return nil, err
		}
	}

	logf, err := os.OpenFile(logPath(spec.Work), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	c, err := dev.Start(ctx, dev.Options{Dir: templateDir(spec.Work), ChainListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		AgentListen: "127.0.0.1:0", MCPListen: "127.0.0.1:0", Log: logf, PreParams: fixtures(true), NoVault: true})
	if err != nil {
		return nil, fmt.Errorf("dev cluster: %w", err)
	}
	defer c.Close()
	hot := c.Hot()
	if err := waitPools(ctx, c, hot.Committee); err != nil {
		return nil, err
	}
	start = time.Now()
	var cm []api.CommitteeMember
	for _, m := range hot.Committee.Members {
		cm = append(cm, api.CommitteeMember{ID: m.ID, Role: m.Role})
	}
	op, err := c.REST().CreateKey(ctx, api.CreateKey{Committee: cm, Threshold: hot.Threshold})
	if err != nil {
		return nil, fmt.Errorf("keygen with warm pools: %w", err)
	}
	// A short interval: the poll's granularity is part of what is timed.
	op, err = c.REST().WaitOperation(ctx, op.ID, 20*time.Millisecond, nil)
	if err != nil {
		return nil, fmt.Errorf("keygen with warm pools: %w", err)
	}
	if op.State != api.OpDone {
		return nil, fmt.Errorf("keygen with warm pools ended %s: %s", op.State, op.Error)
	}
	res.Values["keygen_warm"] = time.Since(start).Seconds()
	res.Notes = append(res.Notes, "keygen_warm: POST /v1/keys to a done operation, the same 2-of-3 committee shape, every member's pool holding a set")
	if err := c.Close(); err != nil {
		return nil, fmt.Errorf("dev cluster: %w", err)
	}
	return res, nil
}

// waitPools waits until every member of a committee holds pre-parameters.
func waitPools(ctx context.Context, c *dev.Cluster, committee tss.Committee) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		h, err := c.REST().Health(ctx)
		if err == nil {
			ready := 0
			for _, m := range h.Members {
				for _, cm := range committee.Members {
					if m.ID == cm.ID && m.Reachable && m.PreParams > 0 {
						ready++
					}
				}
			}
			if ready == len(committee.Members) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for warm pools: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// all runs f(0..n-1) at once and joins their errors.
func all(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// runCold times one generation of pre-parameters as a node's pool makes
// them: what a keygen waits for when a member's pool is empty.
func runCold(ctx context.Context, _ Spec) (*Result, error) {
	start := time.Now()
	if _, err := tss.GeneratePreParams(ctx); err != nil {
		return nil, err
	}
	return &Result{Scenario: scenarioCold, Values: map[string]float64{"cold_pool_wait": time.Since(start).Seconds()},
		Notes: []string{"cold_pool_wait: one tss.GeneratePreParams, alone on the machine; a keygen waits for its slowest member"}}, nil
}

// quietLogger discards everything.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
