package tss_test

import (
	"context"
	"testing"

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
