package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// childEnv makes this test binary a bench child: it runs the spec given as
// its last argument, as custos bench --child does.
const childEnv = "CUSTOS_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		var spec Spec
		if err := json.Unmarshal([]byte(os.Args[len(os.Args)-1]), &spec); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(2)
		}
		if err := RunChild(context.Background(), spec, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRunPrintsTheTable runs the benchmark end to end with one signature
// per row (the setup's keygens, the floor, REST with and without a
// presignature, REST beside the floor, the policy and idle measurements)
// and checks that its table reports each of them.
func TestRunPrintsTheTable(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the dev cluster and four key generations")
	}
	fx, err := filepath.Abs(filepath.Join("..", "internal", "testfixtures", "preparams"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(FixturesEnv, fx)
	t.Setenv(childEnv, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out, progress bytes.Buffer
	err = Run(ctx, Options{Signatures: 1, Concurrency: []int{1}, Scenarios: []string{ScenarioFloor, ScenarioREST, ScenarioRESTPresign},
		Work: t.TempDir(), Out: &out, Progress: &progress, Child: []string{os.Args[0]}})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	table := out.String()
	for _, re := range []string{
		`(?m)^ +floor +1 +1 +[0-9.]+ .* 1\.000 +1\.000$`,
		`(?m)^ +REST +1 +1( +[0-9.]+){5} +[0-9]\.[0-9]{3} +[0-9]\.[0-9]{3}$`, // the table: median, p99, sig/s, CPU, RSS, two ratios
		`(?m)^ +REST \(presigned\) +1 +1 +[0-9.]+ `,
		`REST \(presigned\) at concurrency 1 +median [0-9.]+ x REST's.*; 100 % of its signatures from a presignature`,
		`(?m)^ +REST +1 +1( +[0-9.]+){4} +[0-9]\.[0-9]{3} +[0-9]\.[0-9]{3}$`, // beside the floor: two medians, two sig/s, two ratios
		`keygen 2-of-3 through the coordinator, warm pools +[0-9.]+ s +[0-9.]+ x in-process`,
		`keygen: medians of 3, alternating`,
		`one policy evaluation +[0-9.]+ µs`,
		`a node's idle resident memory +[0-9]+ MB`,
		`REST at concurrency 1, median by phase +POST [0-9.]+ ms`,
	} {
		if !regexp.MustCompile(re).MatchString(table) {
			t.Errorf("the table has no line matching %s", re)
		}
	}
	if !strings.Contains(table, "beside the floor in one child") {
		t.Error("the table has no rows beside the floor")
	}
	if t.Failed() {
		t.Logf("table:\n%s", table)
	}
}
