package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/coordinator"
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
// hot key takes 0, 1 and 2 (those of the in-process key the floor signs
// with), and timed keygen r through the coordinator takes
// keygenFixtures(r), as the in-process keygen it is paired with does. A
// node takes a pre-parameter set once only, so the rounds rotate the same
// three sets among the members. The timed keygens' committee is policy,
// guardian-1 and guardian-2: without the agent it cannot form the hot
// tier, so the coordinator fills no presignature pool for those keys, and
// no refill runs between the timed keygens or beside the later scenarios.
var fixtureOrder = func() map[string][]int {
	m := map[string][]int{dev.NameAgent: {0}, dev.NamePolicy: {1}, dev.NameGuardian1: {2}}
	for r := range keygenRounds {
		for i, name := range keygenNames {
			m[name] = append(m[name], keygenFixtures(r)[i])
		}
	}
	return m
}()

// keygenNames are the members of the timed keygens through the
// coordinator.
var keygenNames = []string{dev.NamePolicy, dev.NameGuardian1, dev.NameGuardian2}

// keygenFixtures are the fixtures of timed keygen r, one per member of
// keygenNames (and of the in-process committee).
func keygenFixtures(r int) []int { return []int{4 + r%3, 4 + (r+1)%3, 4 + (r+2)%3} }

// keygenRounds is how many keygens of each kind the setup times,
// alternating in-process and through the coordinator: the table reports
// the medians.
const keygenRounds = 3

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
// key made in-process, and the dev cluster template with its hot key.
// Then it times keygenRounds keygens in-process and as many through the
// template's coordinator with every member's pool warm, alternating, each
// pair with the same pre-parameters, once the coordinator's presignature
// pools are full (no refill runs beside them).
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
	shares, err := keygenInProcess(ctx, committee, []int{0, 1, 2})
	if err != nil {
		return nil, err
	}
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
	warm, err := keygenCommittee(ctx, c)
	if err != nil {
		return nil, err
	}
	// The hot key's pool fills right after the cluster starts: a second
	// of CPU a presignature at its members, which a timed keygen must not
	// share.
	if err := waitPresignatures(ctx, c, coordinator.DefaultPresignTarget); err != nil {
		return nil, err
	}
	var inproc, through []float64
	for r := range keygenRounds {
		// In-process first in even rounds, through the coordinator first
		// in odd ones.
		for k := range 2 {
			if (r+k)%2 == 0 {
				start := time.Now()
				if _, err := keygenInProcess(ctx, committee, keygenFixtures(r)); err != nil {
					return nil, err
				}
				inproc = append(inproc, time.Since(start).Seconds())
				continue
			}
			d, err := keygenWarm(ctx, c, warm)
			if err != nil {
				return nil, err
			}
			through = append(through, d.Seconds())
		}
	}
	res.Values["keygen_inprocess"] = quantile(inproc, 0.5)
	res.Values["keygen_warm"] = quantile(through, 0.5)
	res.Notes = append(res.Notes,
		fmt.Sprintf("keygen: medians of %d, alternating, each pair with the same pre-parameters, nothing else running; in-process %s s, through the coordinator %s s", keygenRounds, seconds(inproc), seconds(through)),
		"keygen_warm: POST /v1/keys to a done operation, the same 2-of-3 committee shape, every member's pool holding a set")
	if err := c.Close(); err != nil {
		return nil, fmt.Errorf("dev cluster: %w", err)
	}
	return res, nil
}

// keygenInProcess runs a keygen of committee with every member in this
// process over a memory network, member i taking fixture fx[i].
func keygenInProcess(ctx context.Context, committee tss.Committee, fx []int) ([]*tss.Share, error) {
	net := newMemNet()
	sid := ids.NewSessionID()
	shares := make([]*tss.Share, len(committee.Members))
	err := all(len(committee.Members), func(i int) error {
		pp, err := fixture(fx[i])
		if err != nil {
			return err
		}
		shares[i], err = tss.NewEngine(net.endpoint(committee.Members[i].ID), tss.Config{}).Keygen(ctx,
			tss.KeygenRequest{Session: sid, Committee: committee, PreParams: pp})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("in-process keygen: %w", err)
	}
	return shares, nil
}

// keygenCommittee is the timed keygens' committee: the members named
// keygenNames, read from the coordinator's health.
func keygenCommittee(ctx context.Context, c *dev.Cluster) ([]api.CommitteeMember, error) {
	h, err := c.REST().Health(ctx)
	if err != nil {
		return nil, err
	}
	hot := c.Hot()
	var out []api.CommitteeMember
	var guardian2 *api.MemberHealth
	for _, m := range h.Members {
		switch {
		case m.Role == ids.RolePolicy && hot.Committee.Has(m.ID):
			out = append(out, api.CommitteeMember{ID: m.ID, Role: m.Role})
		case m.Role == ids.RoleGuardian && hot.Committee.Has(m.ID):
			out = append(out, api.CommitteeMember{ID: m.ID, Role: m.Role})
		case m.Role == ids.RoleGuardian:
			guardian2 = &m
		}
	}
	if len(out) != 2 || guardian2 == nil {
		return nil, fmt.Errorf("bench: the dev cluster's health does not name %v", keygenNames)
	}
	return append(out, api.CommitteeMember{ID: guardian2.ID, Role: guardian2.Role}), nil
}

// keygenWarm times one keygen through the coordinator, from its POST to
// the done operation, once every member's pool holds a set.
func keygenWarm(ctx context.Context, c *dev.Cluster, committee []api.CommitteeMember) (time.Duration, error) {
	tc := tss.Committee{Threshold: 1}
	for _, m := range committee {
		tc.Members = append(tc.Members, tss.Member{ID: m.ID, Role: m.Role})
	}
	if err := waitPools(ctx, c, tc); err != nil {
		return 0, err
	}
	start := time.Now()
	op, err := c.REST().CreateKey(ctx, api.CreateKey{Committee: committee, Threshold: 1})
	if err != nil {
		return 0, fmt.Errorf("keygen with warm pools: %w", err)
	}
	// A short interval: the poll's granularity is part of what is timed.
	op, err = c.REST().WaitOperation(ctx, op.ID, 20*time.Millisecond, nil)
	if err != nil {
		return 0, fmt.Errorf("keygen with warm pools: %w", err)
	}
	if op.State != api.OpDone {
		return 0, fmt.Errorf("keygen with warm pools ended %s: %s", op.State, op.Error)
	}
	return time.Since(start), nil
}

// seconds lists durations in seconds, two decimals.
func seconds(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, ", ")
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
