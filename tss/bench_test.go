package tss_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	. "github.com/custos-wallet/custos/tss" //nolint:staticcheck // the tests read as if in package tss
	"github.com/custos-wallet/custos/tss/tsstest"
)

// BenchmarkSign2of3 measures one in-process 2-of-3 signature, both parties
// in this process: the floor that networked signing is compared against.
func BenchmarkSign2of3(b *testing.B) {
	shares := shared2of3(b)
	net := tsstest.NewMemNetwork()
	signers := []ids.MemberID{agent.ID, policy.ID}
	digest := digestOf("bench")
	b.ResetTimer()
	for b.Loop() {
		sid := ids.NewSessionID()
		errs := runAll(signers, func(_ int, id ids.MemberID) error {
			_, err := NewEngine(net.Endpoint(id), testConfig()).Sign(context.Background(),
				SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digest})
			return err
		})
		for id, err := range errs {
			if err != nil {
				b.Fatalf("%s: %v", id, err)
			}
		}
	}
}

// BenchmarkKeygen2of3 measures one in-process 2-of-3 key generation with
// pre-parameters ready.
func BenchmarkKeygen2of3(b *testing.B) {
	c := Committee{Members: []Member{agent, policy, guardian}, Threshold: 1}
	for b.Loop() {
		keygenAll(b, tsstest.NewMemNetwork(), c, 0)
	}
}

// Presignature benchmarks: rounds 1-4 ahead of time, and the online phase
// (rounds 5-9) once the digest is known, against the full protocol. Run
//
//	go test -run '^$' -bench 'Presign|Sign2of3$' -benchtime 10x ./tss/

var benchSigners = []ids.MemberID{agent.ID, policy.ID}

// BenchmarkPresign2of3 measures one 2-of-3 presignature, parked at both
// signers.
func BenchmarkPresign2of3(b *testing.B) {
	c := newPresignCluster(b, nil)
	for b.Loop() {
		pid := c.presign(b, benchSigners, nil)
		for _, e := range c.engines {
			e.BurnPresignature(pid)
		}
	}
}

// BenchmarkSignPresigned2of3 measures the online phase alone: a parked
// presignature finished for a digest.
func BenchmarkSignPresigned2of3(b *testing.B) {
	c := newPresignCluster(b, nil)
	digest := digestOf("bench")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		pid := c.presign(b, benchSigners, nil)
		b.StartTimer()
		if _, errs := c.online(benchSigners, pid, digest); len(errs) > 0 {
			for id, err := range errs {
				if err != nil {
					b.Fatalf("%s: %v", id, err)
				}
			}
		}
	}
}

// BenchmarkSignPresignedCompare2of3 alternates the full protocol and the
// online phase, at concurrency 1 and 8 (that many signatures at once, each
// with its own ready presignature), and reports each one's median latency
// and their ratio, which is less sensitive to other load on the machine.
func BenchmarkSignPresignedCompare2of3(b *testing.B) {
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("conc%d", conc), func(b *testing.B) {
			c := newPresignCluster(b, func(cfg *Config) { cfg.MaxPresignatures = conc })
			var full, online []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				full = append(full, tsstest.Concurrently(b, conc, func(int) error {
					return signOnce(c, digestOf("full"))
				})...)
				b.StopTimer()
				pids := make([]ids.SessionID, conc)
				for j := range pids {
					pids[j] = c.presign(b, benchSigners, nil)
				}
				b.StartTimer()
				online = append(online, tsstest.Concurrently(b, conc, func(j int) error {
					_, errs := c.online(benchSigners, pids[j], digestOf("online"))
					return firstError(errs)
				})...)
			}
			f, o := tsstest.Median(full), tsstest.Median(online)
			b.ReportMetric(float64(f)/1e6, "full-median-ms")
			b.ReportMetric(float64(o)/1e6, "online-median-ms")
			b.ReportMetric(float64(o)/float64(f), "ratio")
		})
	}
}

// BenchmarkParkedPresignatureMemory reports the heap one parked
// presignature holds at one member (8 parked per iteration).
func BenchmarkParkedPresignatureMemory(b *testing.B) {
	const n = 8
	c := newPresignCluster(b, func(cfg *Config) { cfg.MaxPresignatures = n })
	var per []float64
	for i := 0; i < b.N; i++ {
		for _, e := range c.engines {
			for _, p := range e.Presignatures() {
				e.BurnPresignature(p.ID)
			}
		}
		before := heapAfterGC()
		for range n {
			c.presign(b, benchSigners, nil)
		}
		after := heapAfterGC()
		per = append(per, float64(after-before)/float64(n*len(benchSigners)))
	}
	slices.Sort(per)
	b.ReportMetric(per[len(per)/2], "bytes/parked")
}

func heapAfterGC() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// signOnce runs the full protocol once among benchSigners.
func signOnce(c *presignCluster, digest [32]byte) error {
	sid := ids.NewSessionID()
	return firstError(runAll(benchSigners, func(_ int, id ids.MemberID) error {
		_, err := c.engines[id].Sign(context.Background(), SignRequest{Session: sid, Share: c.shares[id], Signers: benchSigners, Digest: digest})
		return err
	}))
}

func firstError(errs map[ids.MemberID]error) error {
	for id, err := range errs {
		if err != nil {
			return fmt.Errorf("at %s: %w", id, err)
		}
	}
	return nil
}
