package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/dev"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/quorum"
	"github.com/custos-wallet/custos/tss"
	"github.com/goccy/go-yaml"
)

// preparer readies the n signatures numbered from first before they are
// timed: the presigned scenarios make or wait for their presignatures
// here, outside the measured time.
type preparer func(ctx context.Context, first, n int) error

// presignedEngines signs from presignatures made by prepare: each batch's
// presignatures are made at once (both signers, each presignature its own
// session), then every signature runs only the online phase.
type presignedEngines struct {
	k       *inProcessKey
	engines []*tss.Engine

	mu sync.Mutex
	// guarded by mu
	ready    map[int]ids.SessionID // signature number → its presignature
	made     int                   // presignatures made
	presignT time.Duration         // wall time of the batches of presignatures
	heap     []float64             // bytes of heap per parked presignature at one member, per batch
}

func startOnline(spec Spec, inProcess bool) (signer, func() error, reporter, preparer, error) {
	var k *inProcessKey
	var engines []*tss.Engine
	var stop func() error
	var err error
	if inProcess {
		k, engines, stop, err = floorEngines(spec)
	} else {
		k, engines, stop, err = libp2pEngines(spec)
	}
	if err != nil {
		return nil, nil, nil, nil, err
	}
	p := &presignedEngines{k: k, engines: engines, ready: map[int]ids.SessionID{}}
	return p.sign, stop, p.report, p.prepare, nil
}

func (p *presignedEngines) prepare(ctx context.Context, first, n int) error {
	heap0 := heapBytes()
	start := time.Now()
	made := make([]ids.SessionID, n)
	err := all(n, func(i int) error {
		sess := ids.NewSessionID()
		made[i] = sess
		return all(len(p.engines), func(j int) error {
			_, err := p.engines[j].Presign(ctx, tss.PresignRequest{Session: sess, Share: p.k.shares[j], Signers: p.k.ids[:2]})
			return err
		})
	})
	took := time.Since(start)
	if err != nil {
		return fmt.Errorf("presign: %w", err)
	}
	heap := (heapBytes() - heap0) / float64(n*len(p.engines))
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, sess := range made {
		p.ready[first+i] = sess
	}
	p.made += n
	p.presignT += took
	p.heap = append(p.heap, heap)
	return nil
}

func (p *presignedEngines) sign(ctx context.Context, i int) error {
	p.mu.Lock()
	pre, ok := p.ready[i]
	delete(p.ready, i)
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("no presignature made for signature %d", i)
	}
	sess := ids.NewSessionID()
	digest := sha256.Sum256([]byte("custos bench " + strconv.Itoa(i)))
	return all(len(p.engines), func(j int) error {
		_, err := p.engines[j].SignPresigned(ctx, tss.OnlineRequest{Presign: pre, Session: sess, Digest: digest, Binding: []byte(strconv.Itoa(i))})
		return err
	})
}

func (p *presignedEngines) report(int) (map[string]float64, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := map[string]float64{"presign_per_s": float64(p.made) / p.presignT.Seconds()}
	if len(p.heap) > 0 {
		v["parked_bytes"] = quantile(p.heap, 0.5)
	}
	return v, nil
}

// heapBytes is the live heap after a collection.
func heapBytes() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc)
}

// presignPoolInterval is the coordinator's periodic look at its pools in
// the presigned cluster scenarios: long, so that the pools fill only
// after signing (and at start), as between requests of a busy agent.
const presignPoolInterval = 10 * time.Minute

// benchAgentRate is the agent's rate limit in the cluster children: high
// enough that no measured signature waits for the limiter. The dev
// default (5 a second, a burst of 20) is below what a batch of eight
// presigned transactions asks in a few tens of milliseconds (a submit and
// its polls each).
var benchAgentRate = map[string]any{"per_second": 1000, "burst": 1000}

// setCoordinator sets the presignature pool and the agent's rate limit
// (benchAgentRate) of the coordinator in a dev cluster directory, and
// keeps the rest of its configuration.
func setCoordinator(dir string, target int) error {
	path := filepath.Join(dir, "coordinator", "coordinator.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	cfg["presign"] = map[string]any{"target": target, "interval": presignPoolInterval.String()}
	limits, _ := cfg["rate_limits"].(map[string]any)
	if limits == nil {
		limits = map[string]any{}
	}
	limits["agent"] = benchAgentRate
	cfg["rate_limits"] = limits
	if b, err = yaml.Marshal(cfg); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// presignedCluster is a cluster scenario whose every batch waits, before
// it is timed, until the hot quorum holds a presignature per signature.
type presignedCluster struct {
	c *dev.Cluster

	mu sync.Mutex
	// guarded by mu
	waited  time.Duration // in prepare, waiting for the pool
	made    int           // presignatures waited for
	used0   float64       // the coordinator's presignatures_used_total when measuring began
	checked bool
	last    int // the size of the last batch
}

// startPresignedCluster starts the child's cluster with a pool of the
// highest concurrency's size (at most MaxPresignTarget).
func startPresignedCluster(ctx context.Context, spec Spec) (*presignedCluster, error) {
	c, err := startCluster(ctx, spec, min(max(spec.Concurrency, 1), 8))
	if err != nil {
		return nil, err
	}
	return &presignedCluster{c: c}, nil
}

func (p *presignedCluster) prepare(ctx context.Context, first, n int) error {
	start := time.Now()
	if err := waitPresignatures(ctx, p.c, n); err != nil {
		return err
	}
	took := time.Since(start)
	p.mu.Lock()
	defer p.mu.Unlock()
	if first > 0 && !p.checked {
		// The warm-up is over: count the measured signatures' use.
		used, err := presignaturesUsed(ctx, p.c)
		if err != nil {
			return err
		}
		p.used0, p.checked = used, true
	}
	if first > 0 {
		p.waited += took
		p.made += n
	}
	p.last = n
	return nil
}

// report adds the share of measured signatures made from a
// presignature, and the pool's refill rate, to the scenario's own.
func (p *presignedCluster) report(n int, more reporter) reporter {
	return func(first int) (map[string]float64, []string) {
		v := map[string]float64{}
		var notes []string
		if more != nil {
			v, notes = more(first)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		ctx := context.Background()
		if err := waitPresignatures(ctx, p.c, p.last); err != nil {
			notes = append(notes, fmt.Sprintf("%s: the pool did not refill after the last batch: %v", p.c.URL(), err))
		} else if used, err := presignaturesUsed(ctx, p.c); err == nil && p.checked {
			v["presigned_share"] = (used - p.used0) / float64(n)
		}
		if p.waited > 0 {
			v["presign_per_s"] = float64(p.made) / p.waited.Seconds()
		}
		return v, notes
	}
}

// waitPresignatures waits until every pool the coordinator fills holds at
// least n presignatures: for each key whose committee can form the hot
// tier's quorum (the cluster's hot key, and the key the setup's warm
// keygen made), threshold+1 of its members each hold n of it. Waiting for
// the hot key's alone would start a batch while the coordinator still
// refills another key's pool beside it. The coordinator refills only
// while no signing runs, so once they do, every signature before is fully
// recorded (its metrics too).
func waitPresignatures(ctx context.Context, c *dev.Cluster, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	keys, err := pooledKeys(ctx, c)
	if err != nil {
		return err
	}
	for {
		h, err := c.REST().Health(ctx)
		if err == nil && poolsFull(h, keys, n) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d presignatures of each of %d keys: %w", n, len(keys), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pooledKeys lists the keys whose presignature pools the coordinator
// fills: those with members of every role the policy's hot tier names.
func pooledKeys(ctx context.Context, c *dev.Cluster) ([]api.Key, error) {
	pol, err := c.REST().Policy(ctx)
	if err != nil {
		return nil, err
	}
	p, err := policy.ParseAndCompile([]byte(pol.Document.Source))
	if err != nil {
		return nil, fmt.Errorf("the coordinator's policy: %w", err)
	}
	hot, ok := quorum.Hot(p.Tiers())
	if !ok {
		return nil, errors.New("the coordinator's policy has no hot tier")
	}
	all, err := c.REST().Keys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []api.Key
	for _, k := range all {
		if quorum.CanGrant(k.Committee, hot) == nil {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// poolsFull says whether, for each key, threshold+1 members of its
// committee each report at least n presignatures of it.
func poolsFull(h *api.Health, keys []api.Key, n int) bool {
	for _, k := range keys {
		ready := 0
		for _, m := range h.Members {
			if k.Committee.Has(m.ID) && m.Presignatures[k.ID] >= n {
				ready++
			}
		}
		if ready < k.Threshold+1 {
			return false
		}
	}
	return true
}

// presignaturesUsed reads the coordinator's count of signatures made
// from a presignature.
func presignaturesUsed(ctx context.Context, c *dev.Cluster) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	const name = "custos_coordinator_presignatures_used_total "
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s/metrics has no %s", c.URL(), strings.TrimSpace(name))
}

// startRESTPresigned: the REST scenario with the coordinator's pool
// filled before every batch.
func startRESTPresigned(ctx context.Context, spec Spec) (signer, func() error, reporter, preparer, error) {
	p, err := startPresignedCluster(ctx, spec)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	sign, report, err := restSigner(p.c)
	if err != nil {
		p.c.Close()
		return nil, nil, nil, nil, err
	}
	return sign, closer(p.c), p.report(spec.Signatures, report), p.prepare, nil
}

// startRPCPresigned: the JSON-RPC scenario with the coordinator's pool
// filled before every batch.
func startRPCPresigned(ctx context.Context, spec Spec) (signer, func() error, reporter, preparer, error) {
	p, err := startPresignedCluster(ctx, spec)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	sign, stop, err := rpcSigner(ctx, p.c)
	if err != nil {
		p.c.Close()
		return nil, nil, nil, nil, err
	}
	return sign, closer(p.c, stop), p.report(spec.Signatures, nil), p.prepare, nil
}
