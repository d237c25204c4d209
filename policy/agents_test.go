package policy

import (
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/custos-wallet/custos/ids"
)

// TestAgentCredentials checks the registry's lookup and verification: a
// node verifies an agent's request signature with AgentKey's key.
func TestAgentCredentials(t *testing.T) {
	p, err := ParseAndCompile([]byte((&ddEnv{}).expand(`version: 1
guardians: {alice: "{{alice}}"}
quorum: 1
agents: {bot: "{{agent:bot}}", helper: "{{agent:helper}}"}
tiers: [{name: hot, signers: [agent, policy]}]
rules: []
`)))
	if err != nil {
		t.Fatal(err)
	}
	if ids := p.Agents(); len(ids) != 2 || ids[0] != "bot" || ids[1] != "helper" {
		t.Fatalf("agents %v", ids)
	}
	k, ok := p.AgentKey("bot")
	if !ok || !k.Equal(agentKey("bot").Public()) {
		t.Fatalf("bot's key %x", k)
	}
	k[0] ^= 1 // the caller's copy, not the policy's
	if k2, _ := p.AgentKey("bot"); !k2.Equal(agentKey("bot").Public()) {
		t.Fatal("AgentKey returned the policy's own slice")
	}
	if _, ok := p.AgentKey("intruder"); ok {
		t.Fatal("unregistered agent has a key")
	}
	msg := []byte("request r1")
	if err := p.VerifyAgent("bot", msg, ed25519.Sign(agentKey("bot"), msg)); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		id  ids.AgentID
		sig []byte
		err error
	}{
		"another agent's signature": {"bot", ed25519.Sign(agentKey("helper"), msg), ErrAgentSignature},
		"unregistered agent":        {"intruder", ed25519.Sign(agentKey("intruder"), msg), ErrUnknownAgent},
		"short signature":           {"bot", []byte{1, 2, 3}, ErrAgentSignature},
	} {
		if err := p.VerifyAgent(c.id, msg, c.sig); !errors.Is(err, c.err) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
