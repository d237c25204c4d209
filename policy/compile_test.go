package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fingerprint renders what a compiled policy means, in a form that does not
// depend on map order.
func fingerprint(p *Policy) string {
	var b strings.Builder
	var toks []string
	for a, t := range p.tokenAddr {
		toks = append(toks, a.Hex()+"="+t.symbol)
	}
	sort.Strings(toks)
	fmt.Fprintln(&b, strings.Join(toks, " "))
	for _, r := range p.rules {
		var conds []string
		for _, c := range r.conds {
			conds = append(conds, c.name)
		}
		fmt.Fprintln(&b, r.id, r.verdict, r.shape, strings.Join(conds, ","), len(r.sets))
	}
	return b.String()
}

// TestCompileDeterministic compiles the same documents many times (Go
// randomises map iteration on every run) and requires the same result
// every time: the same error, or the same compiled rules.
func TestCompileDeterministic(t *testing.T) {
	env := &ddEnv{}
	base, err := os.ReadFile(filepath.Join("testdata", "policies", "base.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{
		"base": env.expand(string(base)),
		"one token, two symbols": env.expand(`version: 1
guardians: {alice: "{{alice}}"}
quorum: 1
tiers: [{name: hot, signers: [agent, policy]}]
tokens:
  USDC: {address: "{{usdc}}", decimals: 6}
  USDX: {address: "{{usdc}}", decimals: 6}
  WETH: {address: "{{weth}}", decimals: 18}
rules:
  - {id: r, when: {chain: 1, token: $USDC, call: transfer, recipient: "{{vendor1}}", amount_max: 100 USDC}, tier: hot}
`),
		"one guardian, two names": env.expand(`version: 1
guardians: {alice: "{{alice}}", bob: "{{bob}}", carol: "{{alice}}", dave: "{{bob}}"}
quorum: 1
tiers: [{name: hot, signers: [agent, policy]}]
rules: []
`),
	}
	for name, src := range docs {
		var first string
		for i := 0; i < 200; i++ {
			p, err := ParseAndCompile([]byte(src))
			got := ""
			if err != nil {
				got = "error: " + err.Error()
			} else {
				got = fingerprint(p)
			}
			if i == 0 {
				first = got
				continue
			}
			if got != first {
				t.Fatalf("%s: compile %d differs:\n%s\nfirst:\n%s", name, i, got, first)
			}
		}
		if name != "base" && !strings.HasPrefix(first, "error: ") {
			t.Errorf("%s: compiled", name)
		}
	}
}

// TestCompileDelayNeedsApprovals: a tier's delay runs from its guardian
// approvals (VerifyApprovals), so a delay on a tier without approvals would
// promise a wait that nothing enforces; such a document does not compile.
func TestCompileDelayNeedsApprovals(t *testing.T) {
	env := &ddEnv{}
	src := env.expand(`version: 1
guardians: {alice: "{{alice}}"}
quorum: 1
tiers: [{name: hot, signers: [agent, policy]}, {name: slow, signers: [agent, policy, guardian], delay: 1h}]
rules: []
`)
	if _, err := ParseAndCompile([]byte(src)); err == nil || !strings.Contains(err.Error(), "a delay without approvals") {
		t.Errorf("delay without approvals: %v", err)
	}
}
