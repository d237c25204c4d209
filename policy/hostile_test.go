//go:build linux || darwin

package policy

import (
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"syscall"
	"testing"

	"github.com/ethereum/go-ethereum/common"
)

// hostileChildEnv names the attack a re-executed test binary runs.
const hostileChildEnv = "CUSTOS_POLICY_HOSTILE_CHILD"

// childHeapLimit is the heap the child may use before its watchdog kills
// it: parsing any document should need a few megabytes at most.
const childHeapLimit = 256 << 20

// laughs is a "billion laughs" document: each level aliases the one before
// nine times, so the last names 9^levels scalars in a few hundred bytes.
func laughs(prefix, indent string, levels int) string {
	var b strings.Builder
	b.WriteString(prefix)
	fmt.Fprintf(&b, "%sa: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n", indent)
	prev := "a"
	for i := 0; i < levels; i++ {
		n := fmt.Sprintf("b%d", i)
		fmt.Fprintf(&b, "%s%s: &%s [%s]\n", indent, n, n, strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ","))
		prev = n
	}
	return b.String()
}

// hostileDocuments are small documents that exhausted a node's memory (or
// its stack) before any signature was checked.
var hostileDocuments = map[string]string{
	"laughs-in-args":  laughs("version: 1\nrules:\n - id: x\n   when:\n    args:\n", "     ", 8),
	"laughs-in-lists": laughs("version: 1\nlists:\n", "  ", 8),
	"deep-flow":       "version: 1\nreplaces: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n",
	"deep-flow-open":  "version: 1\nreplaces: " + strings.Repeat("{a: ", 20000) + "\n",
	"deep-block":      "version: 1\nrules:\n" + strings.Repeat("- ", 50000) + "x\n",
	"oversize":        "version: 1\n" + strings.Repeat("# padding\n", 1<<20),
	"deep-keys":       "version: 1\n" + strings.Repeat("? ", 50000) + "x\n",
}

// TestHostileDocumentsBounded parses each hostile document in a child
// process whose heap is watched, so that a regression fails this test
// instead of killing the test binary. Each document must be refused.
func TestHostileDocumentsBounded(t *testing.T) {
	if name := os.Getenv(hostileChildEnv); name != "" {
		runHostileChild(t, name)
		return
	}
	for name, src := range hostileDocuments {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHostileDocumentsBounded$", "-test.count=1")
			cmd.Env = append(os.Environ(), hostileChildEnv+"="+name)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child parsing %s (%d bytes) failed: %v\n%s", name, len(src), err, lastLines(string(out), 5))
			}
			if !strings.Contains(string(out), "refused: ") {
				t.Fatalf("child accepted %s:\n%s", name, lastLines(string(out), 5))
			}
		})
	}
}

func runHostileChild(t *testing.T, name string) {
	src, ok := hostileDocuments[name]
	if !ok {
		t.Fatalf("unknown hostile document %q", name)
	}
	// A backstop for CPU; memory is watched below, which also works under
	// the race detector (whose shadow memory rules out RLIMIT_AS).
	_ = syscall.Setrlimit(syscall.RLIMIT_CPU, &syscall.Rlimit{Cur: 120, Max: 120})
	debug.SetMemoryLimit(childHeapLimit / 2)
	stop := make(chan struct{})
	defer close(stop)
	go heapWatchdog(stop)
	_, err := ParseDocument([]byte(src))
	if err == nil {
		t.Fatalf("%s: parsed", name)
	}
	// The signed path refuses it the same way, before any signature.
	if _, err := VerifyDocument(SignedDocument{Source: []byte(src)}, Genesis{Hash: common.Hash{1}}); err == nil {
		t.Fatalf("%s: verified", name)
	}
	fmt.Printf("refused: %v\n", err)
}

// heapWatchdog exits the process as soon as its heap passes
// childHeapLimit: the runtime's own out-of-memory is fatal and may take
// the machine with it first.
func heapWatchdog(stop chan struct{}) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	for {
		select {
		case <-stop:
			return
		default:
		}
		metrics.Read(s)
		if v := s[0].Value.Uint64(); v > childHeapLimit {
			fmt.Printf("heap %d bytes exceeds the limit %d\n", v, childHeapLimit)
			os.Exit(3)
		}
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
