package cluster

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
)

// BenchmarkHotRequest is the full hot-tier request through the
// coordinator (REST submit, dry run, quorum, propose, signing, the signed
// transaction recorded) with a ready presignature against the same
// request with presignatures off, at concurrency 1 and 8. Each op is one
// batch of that many requests submitted at once; before a presigned batch
// the timer stops until the pool holds a presignature for each. Reported:
// the median request latency (ms/req) and the share of requests that ran
// from a presignature. Run it alone (it loosens the cluster's budget):
//
//	go test ./cluster -run '^$' -bench BenchmarkHotRequest -benchtime 4x
func BenchmarkHotRequest(b *testing.B) {
	setupOnce.Do(func() { setupErr = buildShared() })
	if setupErr != nil {
		b.Fatalf("cluster setup: %v", setupErr)
	}
	c := shared
	c.loosenBudget(b)
	for _, conc := range []int{1, 8} {
		for _, mode := range []string{"full", "presigned"} {
			target := 0
			if mode == "presigned" {
				target = 8
			}
			c.restartCoordinatorWith(b, fmt.Sprintf("presign: {target: %d, interval: 1s}\n", target))
			b.Run(fmt.Sprintf("%s/c%d", mode, conc), func(b *testing.B) {
				var lat []time.Duration
				presigned, total := 0, 0
				var used []ids.SessionID
				for i := 0; i < b.N; i++ {
					if mode == "presigned" {
						b.StopTimer()
						c.waitPoolB(b, conc, used)
						b.StartTimer()
					}
					rs, ls := c.batch(b, conc)
					lat = append(lat, ls...)
					for _, r := range rs {
						total++
						last := r.Attempts[len(r.Attempts)-1]
						if !last.Presignature.IsZero() {
							presigned++
							used = append(used, last.Presignature)
						}
					}
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms/req")
				b.ReportMetric(float64(presigned)/float64(total), "presigned/req")
			})
		}
	}
	c.restartCoordinatorWith(b, "")
}

// batch submits n hot payments at once and waits for each to be signed,
// returning the requests and their latencies.
func (c *cluster) batch(b *testing.B, n int) ([]*api.Request, []time.Duration) {
	nonce, err := c.w.sim.Client().PendingNonceAt(context.Background(), hotKey.Address)
	if err != nil {
		b.Fatal(err)
	}
	rs := make([]*api.Request, n)
	ls := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			began := time.Now()
			rs[i], errs[i] = c.signHot(nonce, big.NewInt(int64(1000+i)))
			ls[i] = time.Since(began)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
		if rs[i].State != api.StateSigned {
			b.Fatalf("request %s", describeRequest(rs[i]))
		}
	}
	return rs, ls
}

// signHot submits one hot payment and long-polls it until it is final.
func (c *cluster) signHot(nonce uint64, value *big.Int) (*api.Request, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(simChainID), Nonce: nonce, To: &vendor1, Value: value,
		Gas: 21000, GasFeeCap: feeCap, GasTipCap: tipCap})
	raw, err := tx.MarshalBinary()
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(map[string]any{
		"key": hotKey.ID.String(), "chain_id": simChainID, "kind": "transaction", "payload": hexutil.Encode(raw),
		"idempotency_key": idem("bench"), "expiry": expiry().Format(time.RFC3339),
	})
	if err != nil {
		return nil, err
	}
	var r api.Request
	if err := c.callAgent(ctx, c.w.bot, "POST", "/v1/requests", body, &r); err != nil {
		return nil, err
	}
	for !api.Final(r.State) {
		if err := c.call(ctx, "GET", "/v1/requests/"+string(r.ID)+"/wait?timeout=10s", nil, c.opToken, &r); err != nil {
			return nil, err
		}
	}
	return &r, nil
}

// waitPoolB waits until the agent and policy nodes hold n presignatures
// of the hot key in common, none of them used already.
func (c *cluster) waitPoolB(b *testing.B, n int, used []ids.SessionID) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := waitFor(ctx, 20*time.Millisecond, func() (bool, error) {
		a, p := c.node(nameAgent), c.node(namePolicy)
		held := map[ids.SessionID]int{}
		for _, ps := range a.Presignatures() {
			if ps.Key == hotKey.ID && !slices.Contains(used, ps.ID) {
				held[ps.ID]++
			}
		}
		for _, ps := range p.Presignatures() {
			held[ps.ID]++
		}
		common := 0
		for _, k := range held {
			if k == 2 {
				common++
			}
		}
		return common >= n, nil
	})
	if err != nil {
		b.Fatalf("pool of the hot key: %v", err)
	}
}

// loosenBudget replaces the policy with one whose hot budgets a benchmark
// cannot exhaust, signed by both guardians.
func (c *cluster) loosenBudget(b *testing.B) {
	src := string(c.w.signedDoc.Source)
	src = strings.Replace(src, "version: 1\n", fmt.Sprintf("version: 2\nreplaces: %q\n", c.w.walletID.Hex()), 1)
	src = strings.Replace(src, "budget: {window: 24h, value: 0.5 ether, count: 50}", "budget: {window: 24h, value: 1000 ether, count: 1000000}", 1)
	d, err := policy.ParseDocument([]byte(src))
	if err != nil {
		b.Fatal(err)
	}
	doc := api.PolicyDocument{Source: src}
	for _, g := range []*ecdsa.PrivateKey{c.w.alice, c.w.bob} {
		sig, err := policy.SignDocument(g, c.w.walletID, d)
		if err != nil {
			b.Fatal(err)
		}
		doc.Signatures = append(doc.Signatures, sig)
	}
	var p api.Pushed
	if err := c.call(context.Background(), "POST", "/v1/policy", doc, c.opToken, &p); err != nil {
		b.Fatalf("loosen the budget: %v", err)
	}
	for _, m := range p.Members {
		if !m.Accepted {
			b.Fatalf("%s refused the loosened policy (%s): %s", c.nameOf(m.Member), m.RuleID, m.Reason)
		}
	}
}

// restartCoordinatorWith restarts the coordinator with extra appended to
// its configuration.
func (c *cluster) restartCoordinatorWith(b *testing.B, extra string) {
	if err := c.stopCoordinator(); err != nil {
		b.Fatal(err)
	}
	if err := c.writeCoordinatorConfig(); err != nil {
		b.Fatal(err)
	}
	if extra != "" {
		f, err := os.OpenFile(c.coord.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		_, err = f.WriteString(extra)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := c.startCoordinator(); err != nil {
		b.Fatal(err)
	}
}
