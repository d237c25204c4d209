package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Options configure a run of the benchmark.
type Options struct {
	// Signatures is how many signatures each (scenario, concurrency)
	// measures after its warm-up (default 16).
	Signatures int
	// Concurrency lists the concurrency levels (default 1, 2, 4, 8).
	Concurrency []int
	// Scenarios lists the signing scenarios (default all five).
	Scenarios []string // default DefaultScenarios
	// Cold also times one generation of pre-parameters (tens of seconds).
	Cold bool
	// Work is the work directory; empty makes a temporary one, removed at
	// the end.
	Work string
	// Profile, if set, is where the REST scenario at concurrency 1 (or,
	// without it, the presigned REST scenario) writes
	// a CPU profile of its measured signatures (go tool pprof).
	Profile string
	// Paired lists the concurrency levels at which the libp2p, REST,
	// JSON-RPC and MCP scenarios (those of Scenarios) are also measured
	// beside the floor in one child, in alternating batches (default 1
	// and 8, those of the targets, where Concurrency has them; an empty,
	// non-nil list measures none).
	Paired []int
	// Child is the command that runs one child: the parent appends the
	// child's spec as its last argument (custos bench --child).
	Child []string
	// Out receives the table; Progress a line per child.
	Out, Progress io.Writer
}

// DefaultScenarios are the signing scenarios, in table order.
var DefaultScenarios = []string{ScenarioFloor, ScenarioLibp2p, ScenarioREST, ScenarioRPC, ScenarioMCP,
	ScenarioOnline, ScenarioOnlineLibp2p, ScenarioRESTPresign, ScenarioRPCPresign}

// clusterScenarios run on their own copy of the dev cluster.
var clusterScenarios = []string{ScenarioREST, ScenarioRPC, ScenarioMCP, ScenarioRESTPresign, ScenarioRPCPresign, scenarioIdle}

// presignedOf names, for each presigned row, the row it is compared with:
// the same signature without a presignature.
var presignedOf = map[string]string{ScenarioOnline: ScenarioFloor, ScenarioOnlineLibp2p: ScenarioLibp2p,
	ScenarioRESTPresign: ScenarioREST, ScenarioRPCPresign: ScenarioRPC}

// row is one child's result with its process's resource use.
type row struct {
	Result
	n       int
	maxRSS  float64 // bytes, the child's peak
	procCPU float64 // seconds, the child's whole life
	elapsed time.Duration
}

// Run runs the benchmark and prints its table.
func Run(ctx context.Context, o Options) error {
	if o.Signatures == 0 {
		o.Signatures = 16
	}
	if len(o.Concurrency) == 0 {
		o.Concurrency = []int{1, 2, 4, 8}
	}
	if len(o.Scenarios) == 0 {
		o.Scenarios = DefaultScenarios
	}
	for _, s := range o.Scenarios {
		if !slices.Contains(DefaultScenarios, s) {
			return fmt.Errorf("bench: unknown scenario %q (want one of %s)", s, strings.Join(DefaultScenarios, ", "))
		}
	}
	if o.Paired == nil {
		for _, c := range []int{1, 8} {
			if slices.Contains(o.Concurrency, c) {
				o.Paired = append(o.Paired, c)
			}
		}
	}
	for _, c := range append(slices.Clone(o.Concurrency), o.Paired...) {
		if c < 1 || c > 64 {
			return fmt.Errorf("bench: concurrency %d: want 1 to 64", c)
		}
	}
	// Each cluster child pays warm-up and measured signatures out of a
	// budget of 100 payments a day in the sample policy.
	if o.Signatures < 1 || o.Signatures+slices.Max(append(slices.Clone(o.Concurrency), o.Paired...)) > 100 {
		return fmt.Errorf("bench: %d signatures: want at least 1 and, with the warm-up of the highest concurrency, at most 100 (the sample policy's daily count)", o.Signatures)
	}
	if len(o.Child) == 0 {
		return errors.New("bench: no child command")
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	load := loadAverage()
	work := o.Work
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "custos-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	} else if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	t0 := time.Now()
	run := func(spec Spec) (*row, error) {
		spec.Work = work
		if slices.Contains(clusterScenarios, spec.Scenario) {
			spec.Dir = filepath.Join(work, fmt.Sprintf("run-%d", time.Now().UnixNano()))
			if err := copyDir(templateDir(work), spec.Dir); err != nil {
				return nil, err
			}
			defer os.RemoveAll(spec.Dir)
		}
		r, err := runChild(ctx, o.Child, spec)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(o.Progress, "  %-10s c=%d  %s\n", spec.Scenario, spec.Concurrency, r.elapsed.Round(100*time.Millisecond))
		return r, nil
	}
	fmt.Fprintf(o.Progress, "custos bench: work directory %s; load average before %s\n", work, load)
	setup, err := loadSetup(work)
	if err != nil {
		return err
	}
	if setup == nil {
		if setup, err = run(Spec{Scenario: scenarioSetup}); err != nil {
			return err
		}
		if err := saveSetup(work, setup); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(o.Progress, "  reusing the key and cluster of %s (its keygen timings too)\n", work)
	}
	var rows []*row
	for _, s := range o.Scenarios {
		for _, c := range o.Concurrency {
			spec := Spec{Scenario: s, Concurrency: c, Signatures: o.Signatures}
			if s == profiled(o.Scenarios) && c == 1 && o.Profile != "" {
				spec.CPUProfile, _ = filepath.Abs(o.Profile)
			}
			r, err := run(spec)
			if err != nil {
				return err
			}
			r.n = o.Signatures
			rows = append(rows, r)
		}
	}
	var paired []*row
	for _, s := range o.Scenarios {
		if !slices.Contains(pairedScenarios, s) {
			continue
		}
		for _, c := range o.Paired {
			r, err := run(Spec{Scenario: s, Concurrency: c, Signatures: o.Signatures, Paired: true})
			if err != nil {
				return err
			}
			paired = append(paired, r)
		}
	}
	extra := []*row{setup}
	for _, s := range []string{scenarioPolicyDryRun, scenarioIdle} {
		r, err := run(Spec{Scenario: s})
		if err != nil {
			return err
		}
		extra = append(extra, r)
	}
	if o.Cold {
		r, err := run(Spec{Scenario: scenarioCold})
		if err != nil {
			return err
		}
		extra = append(extra, r)
	}
	printTable(o.Out, rows, paired, extra, load, loadAverage(), time.Since(t0))
	return nil
}

// setupFile records the setup's result in a kept work directory, which a
// later run reuses.
func setupFile(work string) string { return filepath.Join(work, "setup.json") }

func loadSetup(work string) (*row, error) {
	b, err := os.ReadFile(setupFile(work))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r := &row{}
	if err := json.Unmarshal(b, &r.Result); err != nil {
		return nil, fmt.Errorf("bench: %s: %w", setupFile(work), err)
	}
	return r, nil
}

func saveSetup(work string, r *row) error {
	b, err := json.Marshal(r.Result)
	if err != nil {
		return err
	}
	return os.WriteFile(setupFile(work), b, 0o600)
}

// runChild runs one child and reads its result and rusage.
func runChild(ctx context.Context, child []string, spec Spec) (*row, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, child[0], append(slices.Clone(child[1:]), string(b))...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("bench: %s at concurrency %d: %w\n%s", spec.Scenario, spec.Concurrency, err, tail(stderr.String(), 4000))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	r := &row{elapsed: elapsed}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r.Result); err != nil {
		return nil, fmt.Errorf("bench: %s: the child's result: %w\n%s", spec.Scenario, err, tail(stdout.String(), 2000))
	}
	r.maxRSS, r.procCPU = usage(cmd.ProcessState)
	return r, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// copyDir copies a stopped dev cluster's directory (regular files only:
// sockets are made afresh).
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case info.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, info.Mode().Perm())
		}
		return nil
	})
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// quantile is the nearest-rank quantile q of xs: with fewer than 100
// samples, p99 is the largest.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (r *row) median() float64     { return quantile(r.Latencies, 0.5) }
func (r *row) p99() float64        { return quantile(r.Latencies, 0.99) }
func (r *row) throughput() float64 { return float64(len(r.Latencies)) / r.Wall }
func (r *row) cpuPerSig() float64  { return r.CPU / float64(len(r.Latencies)) }

func printTable(w io.Writer, rows, paired, extra []*row, loadBefore, loadAfter string, took time.Duration) {
	floor := map[int]*row{}
	for _, r := range rows {
		if r.Scenario == ScenarioFloor {
			floor[r.Concurrency] = r
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tconc\tn\tmedian ms\tp99 ms\tsig/s\tCPU s/sig\tpeak RSS MB\tmedian/floor\tsig/s/floor\t")
	for _, r := range rows {
		ratioM, ratioT := "-", "-"
		if f := floor[r.Concurrency]; f != nil {
			ratioM = fmt.Sprintf("%.3f", r.median()/f.median())
			ratioT = fmt.Sprintf("%.3f", r.throughput()/f.throughput())
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.1f\t%.2f\t%.3f\t%.0f\t%s\t%s\t\n", r.Scenario, r.Concurrency, len(r.Latencies),
			r.median()*1e3, r.p99()*1e3, r.throughput(), r.cpuPerSig(), r.maxRSS/(1<<20), ratioM, ratioT)
	}
	tw.Flush()
	fmt.Fprintln(w, "  p99 is nearest-rank (the largest sample when n < 100); CPU s/sig is the child's user+system time during the measured signatures; peak RSS is the child's maxrss (REST, JSON-RPC and MCP run coordinator, four nodes, dev chain and sidecar in one process).")
	fmt.Fprintln(w, "  Presigned rows: before each batch of conc signatures, untimed, the online rows make one presignature per signature and the REST and JSON-RPC rows wait until the coordinator's pool holds one per signature; their sig/s and CPU count the batches only.")

	values := map[string]float64{}
	var notes []string
	for _, r := range extra {
		for k, v := range r.Values {
			values[k] = v
		}
		notes = append(notes, r.Notes...)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if v, ok := values["keygen_inprocess"]; ok {
		fmt.Fprintf(tw, "keygen 2-of-3, in-process\t%.2f s\t\n", v)
	}
	if v, ok := values["keygen_warm"]; ok {
		fmt.Fprintf(tw, "keygen 2-of-3 through the coordinator, warm pools\t%.2f s\t%.3f x in-process\n", v, v/values["keygen_inprocess"])
	}
	if v, ok := values["cold_pool_wait"]; ok {
		fmt.Fprintf(tw, "keygen's wait on a cold pool (one pre-parameter set)\t%.1f s\t\n", v)
	} else {
		fmt.Fprintf(tw, "keygen's wait on a cold pool\tnot measured (--cold)\t\n")
	}
	if v, ok := values["policy_eval"]; ok {
		fmt.Fprintf(tw, "one policy evaluation\t%.1f µs\t\n", v*1e6)
	}
	if v, ok := values["idle_rss"]; ok {
		fmt.Fprintf(tw, "a node's idle resident memory\t%.0f MB\t\n", v/(1<<20))
	}
	at1 := map[string]*row{}
	for _, r := range rows {
		if r.Concurrency == 1 {
			at1[r.Scenario] = r
		}
	}
	for _, base := range []string{ScenarioFloor, ScenarioLibp2p} {
		var beyond []string
		for _, s := range []string{ScenarioREST, ScenarioRPC, ScenarioMCP} {
			if r, b := at1[s], at1[base]; r != nil && b != nil {
				beyond = append(beyond, fmt.Sprintf("%s %+.1f ms", s, (r.median()-b.median())*1e3))
			}
		}
		if len(beyond) > 0 {
			fmt.Fprintf(tw, "median beyond %s at concurrency 1\t%s\t\n", base, strings.Join(beyond, ", "))
		}
	}
	for _, r := range rows {
		if v := r.Values; (r.Scenario == ScenarioREST || r.Scenario == ScenarioRESTPresign) && len(v) > 0 {
			fmt.Fprintf(tw, "%s at concurrency %d, median by phase\tPOST %.1f ms, to the session's proposal %.1f ms, session %.1f ms (propose and start %.1f, protocol and results %.1f, audit and record %.1f), to the client %.1f ms\t\n",
				r.Scenario, r.Concurrency, v["rest_post"]*1e3, v["rest_to_session"]*1e3, v["rest_session"]*1e3,
				v["rest_propose_start"]*1e3, v["rest_protocol"]*1e3, v["rest_record"]*1e3, v["rest_after_session"]*1e3)
		}
	}
	tw.Flush()
	printPaired(w, paired)
	printPresigned(w, rows)
	for _, n := range notes {
		fmt.Fprintln(w, "  "+n)
	}
	fmt.Fprintf(w, "\nload average %s before, %s after; %s in all. Pre-parameters are the committed test fixtures: this is not a production node.\n",
		loadBefore, loadAfter, took.Round(time.Second))
}

// printPaired prints the scenarios measured beside the floor in one
// child, with their ratios to that floor.
func printPaired(w io.Writer, paired []*row) {
	if len(paired) == 0 {
		return
	}
	fmt.Fprintln(w, "\nbeside the floor in one child, alternating batches of conc signatures:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tconc\tn\tmedian ms\tfloor median ms\tsig/s\tfloor sig/s\tmedian/floor\tsig/s/floor\t")
	for _, r := range paired {
		fm, fw := r.Values["floor_median"], r.Values["floor_wall"]
		ft := float64(len(r.Latencies)) / fw
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.1f\t%.2f\t%.2f\t%.3f\t%.3f\t\n", r.Scenario, r.Concurrency, len(r.Latencies),
			r.median()*1e3, fm*1e3, r.throughput(), ft, r.median()/fm, r.throughput()/ft)
	}
	tw.Flush()
	fmt.Fprintln(w, "  sig/s of a paired row: its signatures over the sum of its batches' wall times (each batch starts once the last of the other's ended).")
}

// printPresigned compares each presigned row with the same signature
// without a presignature, and reports the presignatures' own costs.
func printPresigned(w io.Writer, rows []*row) {
	by := map[string]map[int]*row{}
	for _, r := range rows {
		if by[r.Scenario] == nil {
			by[r.Scenario] = map[int]*row{}
		}
		by[r.Scenario][r.Concurrency] = r
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	seen := false
	for _, s := range []string{ScenarioOnline, ScenarioOnlineLibp2p, ScenarioRESTPresign, ScenarioRPCPresign} {
		for _, r := range rows {
			if r.Scenario != s {
				continue
			}
			seen = true
			line := ""
			if base := by[presignedOf[s]][r.Concurrency]; base != nil {
				line = fmt.Sprintf("median %.3f x %s's, sig/s %.2f x", r.median()/base.median(), presignedOf[s], r.throughput()/base.throughput())
			} else {
				line = fmt.Sprintf("(%s not measured)", presignedOf[s])
			}
			if v, ok := r.Values["presigned_share"]; ok {
				line += fmt.Sprintf("; %.0f %% of its signatures from a presignature", v*100)
			}
			if v, ok := r.Values["presign_per_s"]; ok {
				line += fmt.Sprintf("; presignatures %.2f/s", v)
			}
			if v, ok := r.Values["parked_bytes"]; ok {
				line += fmt.Sprintf("; %.0f KB of heap per parked presignature per member", v/1024)
			}
			fmt.Fprintf(tw, "%s at concurrency %d\t%s\t\n", s, r.Concurrency, line)
		}
	}
	if !seen {
		return
	}
	fmt.Fprintln(w)
	tw.Flush()
	fmt.Fprintln(w, "  presignatures/s: for the online rows, presignatures made at once per batch over the batch's wall time; for REST and JSON-RPC, the coordinator's refill of one quorum (one presignature at a time, after signing) over the wait for the pool.")
}

// profiled is the scenario whose child at concurrency 1 --profile
// profiles: REST, or without it the presigned REST row.
func profiled(scenarios []string) string {
	if slices.Contains(scenarios, ScenarioREST) || !slices.Contains(scenarios, ScenarioRESTPresign) {
		return ScenarioREST
	}
	return ScenarioRESTPresign
}
