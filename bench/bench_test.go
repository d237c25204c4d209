package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/goccy/go-yaml"
)

func TestQuantileNearestRank(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ q, want float64 }{{0.5, 3}, {0.99, 5}, {0.2, 1}, {0.21, 2}} {
		if got := quantile(xs, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Errorf("quantile sorted its input: %v", xs)
	}
}

// Bad specs and options are refused with what was wrong, before any work.
func TestRefusals(t *testing.T) {
	for spec, want := range map[Spec]string{
		{Scenario: "nope", Concurrency: 1, Signatures: 1}:              `unknown scenario "nope"`,
		{Scenario: ScenarioOnline, Concurrency: 1, Signatures: 1}:      "member0.key",
		{Scenario: ScenarioFloor, Concurrency: 0, Signatures: 1}:       "concurrency 0",
		{Scenario: ScenarioRESTPresign, Concurrency: 1, Signatures: 1}: "no cluster directory",
	} {
		var out bytes.Buffer
		err := RunChild(context.Background(), spec, &out)
		if err == nil || !strings.Contains(err.Error(), want) || out.Len() != 0 {
			t.Errorf("%+v: %v (output %q), want an error with %q", spec, err, out.String(), want)
		}
	}
	for name, o := range map[string]Options{
		"scenario":    {Scenarios: []string{"SOAP"}, Child: []string{"x"}},
		"concurrency": {Concurrency: []int{0}, Child: []string{"x"}},
		"100":         {Signatures: 95, Concurrency: []int{8}, Child: []string{"x"}},
	} {
		o.Work = t.TempDir()
		if err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// With a preparer, signatures run in batches of the concurrency, each
// prepared (for exactly its numbers) before any of it is signed.
func TestMeasureBatchesPreparesEachBatch(t *testing.T) {
	var mu sync.Mutex
	prepared := map[int]bool{}
	var calls [][2]int
	prepare := func(_ context.Context, first, n int) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, [2]int{first, n})
		for i := first; i < first+n; i++ {
			prepared[i] = true
		}
		return nil
	}
	var signed []int
	sign := func(_ context.Context, i int) error {
		mu.Lock()
		defer mu.Unlock()
		if !prepared[i] {
			return fmt.Errorf("signature %d was not prepared", i)
		}
		delete(prepared, i) // one preparation serves one signature
		signed = append(signed, i)
		return nil
	}
	lat, _, _, err := measureBatches(context.Background(), sign, prepare, 3, 7, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := [][2]int{{3, 3}, {6, 3}, {9, 1}}; !slices.Equal(calls, want) {
		t.Fatalf("prepare calls %v, want %v", calls, want)
	}
	slices.Sort(signed)
	if len(lat) != 7 || !slices.Equal(signed, []int{3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("%d latencies, signed %v", len(lat), signed)
	}
	// A preparation that fails stops the run with its error.
	boom := errors.New("pool empty")
	if _, _, _, err := measureBatches(context.Background(), sign, func(context.Context, int, int) error { return boom }, 0, 2, 1); !errors.Is(err, boom) {
		t.Fatalf("failing prepare: %v", err)
	}
}

// setCoordinator rewrites the coordinator's presign section and the
// agent's rate limit, and keeps the rest of its configuration.
func TestSetCoordinator(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "coordinator", "coordinator.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("data_dir: data\npresign:\n  target: 2\nrate_limits:\n  operator: {per_second: 7, burst: 9}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := setCoordinator(dir, 0); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		DataDir string `yaml:"data_dir"`
		Presign struct {
			Target   *int   `yaml:"target"`
			Interval string `yaml:"interval"`
		} `yaml:"presign"`
		RateLimits map[string]struct {
			PerSecond float64 `yaml:"per_second"`
			Burst     int     `yaml:"burst"`
		} `yaml:"rate_limits"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "data" || cfg.Presign.Target == nil || *cfg.Presign.Target != 0 || cfg.Presign.Interval != presignPoolInterval.String() {
		t.Fatalf("rewritten configuration:\n%s", b)
	}
	if a, o := cfg.RateLimits["agent"], cfg.RateLimits["operator"]; a.PerSecond != 1000 || a.Burst != 1000 || o.PerSecond != 7 || o.Burst != 9 {
		t.Fatalf("rewritten rate limits %+v:\n%s", cfg.RateLimits, b)
	}
	if err := setCoordinator(filepath.Join(dir, "missing"), 1); err == nil {
		t.Fatal("setCoordinator of a directory without a coordinator: no error")
	}
}

// A batch starts only when every pool the coordinator fills is full: the
// hot key's alone is not enough while another key's pool still refills.
func TestPoolsFullNeedsEveryKey(t *testing.T) {
	a, b, c := ids.MemberID("a"), ids.MemberID("b"), ids.MemberID("c")
	committee := tss.Committee{Threshold: 1, Members: []tss.Member{{ID: a, Role: ids.RoleAgent}, {ID: b, Role: ids.RolePolicy}, {ID: c, Role: ids.RoleGuardian}}}
	hot := api.Key{ID: ids.KeyIDOf(common.Address{1}), Committee: committee, Threshold: 1}
	other := api.Key{ID: ids.KeyIDOf(common.Address{2}), Committee: committee, Threshold: 1}
	health := func(counts map[ids.MemberID]map[ids.KeyID]int) *api.Health {
		h := &api.Health{}
		for _, m := range []ids.MemberID{a, b, c, "outsider"} {
			h.Members = append(h.Members, api.MemberHealth{ID: m, Presignatures: counts[m]})
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		counts map[ids.MemberID]map[ids.KeyID]int
		want   bool
	}{
		{"both pools full", map[ids.MemberID]map[ids.KeyID]int{a: {hot.ID: 4, other.ID: 4}, b: {hot.ID: 4, other.ID: 5}}, true},
		{"the other key still filling", map[ids.MemberID]map[ids.KeyID]int{a: {hot.ID: 4, other.ID: 3}, b: {hot.ID: 4, other.ID: 3}}, false},
		{"one member short", map[ids.MemberID]map[ids.KeyID]int{a: {hot.ID: 4, other.ID: 4}, b: {hot.ID: 3, other.ID: 4}}, false},
		{"a member outside the committee does not count", map[ids.MemberID]map[ids.KeyID]int{a: {hot.ID: 4, other.ID: 4}, "outsider": {hot.ID: 4, other.ID: 4}}, false},
	} {
		if got := poolsFull(health(tc.counts), []api.Key{hot, other}, 4); got != tc.want {
			t.Errorf("%s: poolsFull = %v, want %v", tc.name, got, tc.want)
		}
	}
}
