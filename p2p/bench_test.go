package p2p

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	ethcrypto "github.com/ethereum/go-ethereum/crypto"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
	"github.com/custos-wallet/custos/tss/tsstest"
	"github.com/libp2p/go-libp2p/core/peer"
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
	m := tsstest.Median(ds)
	b.ReportMetric(float64(m)/1e6, name+"-median-ms")
	return float64(m)
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

// Presignatures over libp2p: the online phase (rounds 5-9, a parked
// presignature finished for a digest) against the full protocol, with the
// same engines, alternating, at concurrency 1 and 8 (that many signatures
// at once, each with its own presignature). Run
//
//	go test -run '^$' -bench SignPresigned2of3Libp2p -benchtime 10x ./p2p/
func BenchmarkSignPresigned2of3Libp2p(b *testing.B) {
	signers, shares, c := benchSigners(b)
	engines := map[ids.MemberID]*tss.Engine{}
	for _, id := range signers {
		engines[id] = engineFor(c.transport(id), benchIdle)
	}
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("conc%d", conc), func(b *testing.B) {
			var full, online []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				full = append(full, tsstest.Concurrently(b, conc, func(int) error {
					sid := ids.NewSessionID()
					digest := sha256.Sum256(sid[:])
					_, errs := runMembers(signers, func(_ int, id ids.MemberID) (tss.Signature, error) {
						return engines[id].Sign(context.Background(), tss.SignRequest{Session: sid, Share: shares[id], Signers: signers, Digest: digest})
					})
					return firstErr(errs)
				})...)
				b.StopTimer()
				pids := make([]ids.SessionID, conc)
				for j := range pids {
					pids[j] = ids.NewSessionID()
					_, errs := runMembers(signers, func(_ int, id ids.MemberID) (tss.PresignInfo, error) {
						return engines[id].Presign(context.Background(), tss.PresignRequest{Session: pids[j], Share: shares[id], Signers: signers})
					})
					if err := firstErr(errs); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				online = append(online, tsstest.Concurrently(b, conc, func(j int) error {
					sid := ids.NewSessionID()
					digest := sha256.Sum256(sid[:])
					sigs, errs := runMembers(signers, func(_ int, id ids.MemberID) (tss.Signature, error) {
						return engines[id].SignPresigned(context.Background(), tss.OnlineRequest{Presign: pids[j], Session: sid, Digest: digest, Binding: sid[:]})
					})
					if err := firstErr(errs); err != nil {
						return err
					}
					for _, sig := range sigs {
						pub, err := ethcrypto.SigToPub(digest[:], sig[:])
						if err != nil || ethcrypto.PubkeyToAddress(*pub) != shares[signers[0]].Key().Address {
							return fmt.Errorf("presigned signature does not recover to the key's address")
						}
					}
					return nil
				})...)
			}
			f := reportMedian(b, "full", full)
			o := reportMedian(b, "online", online)
			b.ReportMetric(o/f, "ratio")
		})
	}
}

// BenchmarkRequest times one exchange of a request protocol between two
// hosts on loopback (a fresh stream, a 1 KB request, a short answer): the
// cost of each control-protocol call beside what its handler does.
//
//	go test -run '^$' -bench 'Request$' -benchtime 2000x ./p2p/
func BenchmarkRequest(b *testing.B) {
	c := newCluster(b, b.TempDir(), 2, tcpLoopback, nil)
	defer c.close()
	a, z := c.nodes[0], c.nodes[1]
	if err := a.RegisterHandler(toyProto, 4096, func(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
		return req[:16], nil
	}); err != nil {
		b.Fatal(err)
	}
	req := make([]byte, 1024)
	if _, err := z.Request(context.Background(), a.ID(), toyProto, req, 4096); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := z.Request(context.Background(), a.ID(), toyProto, req, 4096); err != nil {
			b.Fatal(err)
		}
	}
}
