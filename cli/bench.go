package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/custos-wallet/custos/bench"
)

func init() {
	register(&Command{
		Name:    "bench",
		Summary: "measure signing end to end (REST, JSON-RPC, MCP, with and without presignatures) against the in-process tss-lib floor, and print one table",
		Run:     runBench,
	})
}

func runBench(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "bench", "bench [--signatures N] [--concurrency 1,2,4,8] [--paired 1,8|none] [--scenarios floor,libp2p,REST,...] [--cold] [--profile FILE] [--work DIR]")
	n := fs.Int("signatures", 16, "signatures measured per scenario and concurrency, after a warm-up of one per worker")
	conc := fs.String("concurrency", "1,2,4,8", "concurrency levels, comma-separated")
	scenarios := fs.String("scenarios", strings.Join(bench.DefaultScenarios, ","), "signing scenarios, comma-separated")
	cold := fs.Bool("cold", false, "also time one real pre-parameter generation (tens of seconds of CPU): a keygen's wait on a cold pool")
	profile := fs.String("profile", "", "write a CPU profile of the REST scenario at concurrency 1 here, or of the presigned REST scenario when REST is not run (go tool pprof)")
	work := fs.String("work", "", "work directory, kept afterwards and reused by a later run with the same --work (default: a temporary one, removed)")
	paired := fs.String("paired", "", "concurrency levels at which libp2p, REST, JSON-RPC and MCP are also measured beside the floor in one child, in alternating batches (default: 1 and 8 where --concurrency has them; none: skip)")
	child := fs.String("child", "", "internal: run one measurement from its JSON spec")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *child != "" {
		var spec bench.Spec
		if err := json.Unmarshal([]byte(*child), &spec); err != nil {
			return Usagef("--child: %v", err)
		}
		return bench.RunChild(ctx, spec, env.Stdout)
	}
	if fs.NArg() > 0 {
		return Usagef("bench takes no arguments")
	}
	o := bench.Options{Signatures: *n, Cold: *cold, Profile: *profile, Work: *work, Out: env.Stdout, Progress: env.Stderr}
	for _, s := range strings.Split(*conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return Usagef("--concurrency %q: %v", *conc, err)
		}
		o.Concurrency = append(o.Concurrency, c)
	}
	switch p := strings.TrimSpace(*paired); p {
	case "":
	case "none":
		o.Paired = []int{}
	default:
		for _, s := range strings.Split(p, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return Usagef("--paired %q: %v", *paired, err)
			}
			o.Paired = append(o.Paired, c)
		}
	}
	for _, s := range strings.Split(*scenarios, ",") {
		o.Scenarios = append(o.Scenarios, strings.TrimSpace(s))
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find this program to run its children: %w", err)
	}
	o.Child = []string{exe, "bench", "--child"}
	return bench.Run(ctx, o)
}
