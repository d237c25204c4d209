package p2p

import (
	"slices"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
	"github.com/custos-wallet/custos/tss/tsstest"
)

// Benchmarks of 2-of-3 signing, over libp2p between three hosts and over the
// engine's in-process network, with the same shares (the in-process
// endpoints take the peer ids as names). Run both at once with
//
//	go test -run '^$' -bench Sign2of3 -count 5 ./p2p/
//
// BenchmarkSign2of3Compare alternates the two and reports both medians and
// their ratio, which is less sensitive to other load on the machine.

const benchIdle = 30 * time.Second

func benchSigners(b *testing.B) ([]ids.MemberID, map[ids.MemberID]*tss.Share, *cluster) {
	c, shares := sharedKey(b)
	members := c.ids()
	return []ids.MemberID{members[0], members[1]}, shares, c
}

func benchSign(b *testing.B, trs func(ids.MemberID) tss.Transport, shares map[ids.MemberID]*tss.Share, signers []ids.MemberID) time.Duration {
	start := time.Now()
	if _, errs := sign(b, trs, shares, signers, benchIdle); len(errs) > 0 {
		b.Fatal(firstErr(errs))
	}
	return time.Since(start)
}

func memTransports() func(ids.MemberID) tss.Transport {
	net := tsstest.NewMemNetwork()
	return func(id ids.MemberID) tss.Transport { return net.Endpoint(id) }
}

func reportMedian(b *testing.B, name string, ds []time.Duration) float64 {
	m := median(ds)
	b.ReportMetric(float64(m)/1e6, name+"-median-ms")
	return float64(m)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func BenchmarkSign2of3Libp2p(b *testing.B) {
	signers, shares, c := benchSigners(b)
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ds = append(ds, benchSign(b, c.transport, shares, signers))
	}
	reportMedian(b, "libp2p", ds)
}

func BenchmarkSign2of3InProcess(b *testing.B) {
	signers, shares, _ := benchSigners(b)
	trs := memTransports()
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ds = append(ds, benchSign(b, trs, shares, signers))
	}
	reportMedian(b, "inprocess", ds)
}

func BenchmarkSign2of3Compare(b *testing.B) {
	signers, shares, c := benchSigners(b)
	trs := memTransports()
	var net, mem []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		net = append(net, benchSign(b, c.transport, shares, signers))
		mem = append(mem, benchSign(b, trs, shares, signers))
	}
	n := reportMedian(b, "libp2p", net)
	m := reportMedian(b, "inprocess", mem)
	b.ReportMetric(n/m, "ratio")
}
