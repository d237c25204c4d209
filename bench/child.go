package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Scenario names, as the table prints them.
const (
	ScenarioFloor  = "floor"
	ScenarioLibp2p = "libp2p"
	ScenarioREST   = "REST"
	ScenarioRPC    = "JSON-RPC"
	ScenarioMCP    = "MCP"
	// The presigned rows: before each batch of concurrency signatures,
	// outside the measured time, the online rows make a presignature per
	// signature (in process, and over libp2p) and the REST and JSON-RPC
	// rows wait until the coordinator's pool holds one per signature.
	ScenarioOnline       = "online (presigned)"
	ScenarioOnlineLibp2p = "libp2p (presigned)"
	ScenarioRESTPresign  = "REST (presigned)"
	ScenarioRPCPresign   = "JSON-RPC (presigned)"
	scenarioSetup        = "setup"
	scenarioIdle         = "idle"
	scenarioCold         = "cold-pool"
	scenarioPolicyDryRun = "policy"
)

// Spec is what one child process runs.
type Spec struct {
	Scenario    string `json:"scenario"`
	Concurrency int    `json:"concurrency"`
	Signatures  int    `json:"signatures"`
	Work        string `json:"work"` // the parent's work directory
	// Dir is the child's own copy of the dev cluster, for REST, JSON-RPC
	// and MCP (budgets start fresh in every child).
	Dir string `json:"dir,omitempty"`
	// CPUProfile, if set, is where the child writes a CPU profile of its
	// measured signatures.
	CPUProfile string `json:"cpu_profile,omitempty"`
	// Paired runs the floor in the same child beside the scenario, in
	// alternating batches (see runPaired).
	Paired bool `json:"paired,omitempty"`
}

// Result is what a child prints: one JSON object on its last line.
type Result struct {
	Scenario    string    `json:"scenario"`
	Concurrency int       `json:"concurrency"`
	Latencies   []float64 `json:"latencies"` // seconds, one per measured signature
	Wall        float64   `json:"wall"`      // seconds, the measured signatures from the first start to the last end
	CPU         float64   `json:"cpu"`       // user+system seconds of the process during the measured signatures
	// Values are the scenario's other measurements (keygen seconds, idle
	// memory), by name.
	Values map[string]float64 `json:"values,omitempty"`
	// Notes say what a value means where it is not obvious.
	Notes []string `json:"notes,omitempty"`
}

// signer makes one signature; i numbers the signatures of a child from 0
// (the warm-up's first, then the measured ones).
type signer func(ctx context.Context, i int) error

// reporter returns a scenario's own measurements of the signatures from
// first on, by name, with notes.
type reporter func(first int) (map[string]float64, []string)

// RunChild runs spec and writes its Result as JSON to out.
func RunChild(ctx context.Context, spec Spec, out io.Writer) error {
	var res *Result
	var err error
	switch spec.Scenario {
	case scenarioSetup:
		res, err = runSetup(ctx, spec)
	case scenarioIdle:
		res, err = runIdle(ctx, spec)
	case scenarioCold:
		res, err = runCold(ctx, spec)
	case scenarioPolicyDryRun:
		res, err = runPolicy(ctx, spec)
	default:
		res, err = runSigning(ctx, spec)
	}
	if err != nil {
		return fmt.Errorf("bench %s: %w", spec.Scenario, err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", b)
	return err
}

// startScenario starts a signing scenario's parts.
func startScenario(ctx context.Context, spec Spec) (sign signer, stop func() error, report reporter, prepare preparer, err error) {
	switch spec.Scenario {
	case ScenarioFloor:
		sign, stop, err = startFloor(ctx, spec)
	case ScenarioLibp2p:
		sign, stop, err = startLibp2p(ctx, spec)
	case ScenarioREST:
		sign, stop, report, err = startREST(ctx, spec)
	case ScenarioRPC:
		sign, stop, err = startRPC(ctx, spec)
	case ScenarioMCP:
		sign, stop, err = startMCP(ctx, spec)
	case ScenarioOnline:
		sign, stop, report, prepare, err = startOnline(spec, true)
	case ScenarioOnlineLibp2p:
		sign, stop, report, prepare, err = startOnline(spec, false)
	case ScenarioRESTPresign:
		sign, stop, report, prepare, err = startRESTPresigned(ctx, spec)
	case ScenarioRPCPresign:
		sign, stop, report, prepare, err = startRPCPresigned(ctx, spec)
	default:
		err = fmt.Errorf("unknown scenario %q", spec.Scenario)
	}
	return sign, stop, report, prepare, err
}

// runSigning starts the scenario's parts, signs Concurrency times at once
// to warm up, then Signatures times with Concurrency workers.
func runSigning(ctx context.Context, spec Spec) (*Result, error) {
	if spec.Concurrency < 1 || spec.Signatures < 1 {
		return nil, fmt.Errorf("concurrency %d and signatures %d: both must be at least 1", spec.Concurrency, spec.Signatures)
	}
	if spec.Paired {
		return runPaired(ctx, spec)
	}
	sign, stop, report, prepare, err := startScenario(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	if _, _, _, err := measureBatches(ctx, sign, prepare, 0, spec.Concurrency, spec.Concurrency); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	var stopProfile func()
	if spec.CPUProfile != "" {
		if stopProfile, err = startCPUProfile(spec.CPUProfile); err != nil {
			return nil, err
		}
	}
	lat, wall, cpu, err := measureBatches(ctx, sign, prepare, spec.Concurrency, spec.Signatures, spec.Concurrency)
	if stopProfile != nil {
		stopProfile()
	}
	if err != nil {
		return nil, err
	}
	res := &Result{Scenario: spec.Scenario, Concurrency: spec.Concurrency, Latencies: lat, Wall: wall.Seconds(), CPU: cpu}
	if report != nil {
		res.Values, res.Notes = report(spec.Concurrency)
	}
	if stop != nil {
		err, stop = stop(), nil
		if err != nil {
			return nil, fmt.Errorf("stop: %w", err)
		}
	}
	return res, nil
}

// pairedScenarios are the scenarios a paired child runs beside the floor.
var pairedScenarios = []string{ScenarioLibp2p, ScenarioREST, ScenarioRPC, ScenarioMCP}

// runPaired measures a scenario and the floor in one child, in batches of
// Concurrency signatures that alternate between the two (floor first in
// even rounds, the scenario first in odd ones), until each made
// Signatures. Children run minutes apart on a shared machine, so the
// ratio of two children's medians carries the machine's drift; batches
// seconds apart share it. The Result is the scenario's (its latencies,
// the wall and CPU time of its batches); Values hold the floor's median
// and wall time.
func runPaired(ctx context.Context, spec Spec) (*Result, error) {
	if !slices.Contains(pairedScenarios, spec.Scenario) {
		return nil, fmt.Errorf("scenario %q is not paired with the floor (want one of %s)", spec.Scenario, strings.Join(pairedScenarios, ", "))
	}
	floorSign, floorStop, err := startFloor(ctx, spec)
	if err != nil {
		return nil, err
	}
	if floorStop != nil {
		defer floorStop()
	}
	sign, stop, _, _, err := startScenario(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	c := spec.Concurrency
	type side struct {
		sign signer
		lat  []float64
		wall time.Duration
		cpu  float64
	}
	floor, scen := &side{sign: floorSign}, &side{sign: sign}
	for _, sd := range []*side{floor, scen} {
		if _, _, err := measure(ctx, sd.sign, 0, c, c); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	for round, done := 0, 0; done < spec.Signatures; round++ {
		b := min(c, spec.Signatures-done)
		order := []*side{floor, scen}
		if round%2 == 1 {
			order = []*side{scen, floor}
		}
		for _, sd := range order {
			// The garbage of the other side's batch is not this one's.
			runtime.GC()
			cpu0 := cpuSeconds()
			l, w, err := measure(ctx, sd.sign, c+done, b, c)
			if err != nil {
				return nil, err
			}
			sd.cpu += cpuSeconds() - cpu0
			sd.lat, sd.wall = append(sd.lat, l...), sd.wall+w
		}
		done += b
	}
	res := &Result{Scenario: spec.Scenario, Concurrency: c, Latencies: scen.lat, Wall: scen.wall.Seconds(), CPU: scen.cpu,
		Values: map[string]float64{"floor_median": quantile(floor.lat, 0.5), "floor_wall": floor.wall.Seconds()}}
	if stop != nil {
		err, stop = stop(), nil
		if err != nil {
			return nil, fmt.Errorf("stop: %w", err)
		}
	}
	return res, nil
}

// measureBatches makes n signatures numbered from first with c workers
// and returns each one's latency in seconds, their wall time and the
// process's CPU seconds while they ran. With prepare, they run in
// batches of c, each prepared before it, and the wall and CPU time are
// those of the batches alone.
func measureBatches(ctx context.Context, sign signer, prepare preparer, first, n, c int) ([]float64, time.Duration, float64, error) {
	if prepare == nil {
		cpu0 := cpuSeconds()
		lat, wall, err := measure(ctx, sign, first, n, c)
		return lat, wall, cpuSeconds() - cpu0, err
	}
	var lat []float64
	var wall time.Duration
	var cpu float64
	for done := 0; done < n; {
		b := min(c, n-done)
		if err := prepare(ctx, first+done, b); err != nil {
			return nil, 0, 0, err
		}
		cpu0 := cpuSeconds()
		l, w, err := measure(ctx, sign, first+done, b, c)
		cpu += cpuSeconds() - cpu0
		if err != nil {
			return nil, 0, 0, err
		}
		lat, wall, done = append(lat, l...), wall+w, done+b
	}
	return lat, wall, cpu, nil
}

// measure makes n signatures numbered from first with c workers and
// returns each one's latency in seconds and the wall time of all.
func measure(ctx context.Context, sign signer, first, n, c int) ([]float64, time.Duration, error) {
	lat := make([]float64, n)
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				if err := sign(ctx, first+i); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("signature %d: %w", first+i, err))
					mu.Unlock()
					cancel()
					return
				}
				lat[i] = time.Since(t0).Seconds()
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), errors.Join(errs...)
}

// residentBytes is this process's resident memory now (VmRSS), or 0 where
// /proc does not say.
func residentBytes() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb float64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%f kB", &kb); err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}
