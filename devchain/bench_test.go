package devchain

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkStart measures Start (to the JSON-RPC server answering, block 1
// sealed and indexed) and reports the process's resident memory with one
// chain running:
//
//	go test -run '^$' -bench Start -benchtime 5x ./devchain/
func BenchmarkStart(b *testing.B) {
	var rss int
	for b.Loop() {
		c, err := Start(Config{Listen: "127.0.0.1:0"})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rss = max(rss, vmRSSKiB(b))
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(rss), "rss-KiB")
}

func vmRSSKiB(b *testing.B) int {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				b.Fatalf("parse %q: %v", line, err)
			}
			return n
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
