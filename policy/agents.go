package policy

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/custos-wallet/custos/ids"
)

// Errors about agent credentials.
var (
	ErrUnknownAgent   = errors.New("policy: agent not in the agent registry")
	ErrAgentSignature = errors.New("policy: agent signature does not verify")
)

// compileAgents reads the agent registry: agent id to Ed25519 credential
// public key, as 0x-prefixed hex.
func (p *Policy) compileAgents(d *Document) error {
	byKey := map[string]ids.AgentID{}
	for _, name := range sortedKeys(d.Agents) {
		// An agent id is part of freeze targets (agent:<id>) and ledger
		// keys, and is read by people: ids.ParseAgentID bounds it.
		id, err := ids.ParseAgentID(name)
		if err != nil {
			return fmt.Errorf("agent %q: ids are 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
		}
		s := d.Agents[name]
		b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
		if err != nil || !strings.HasPrefix(s, "0x") || len(b) != ed25519.PublicKeySize {
			return fmt.Errorf("agent %s: %q is not a 0x-prefixed 32-byte Ed25519 public key", name, s)
		}
		if other, dup := byKey[string(b)]; dup {
			// One credential for two agents would make "who asked" ambiguous.
			return fmt.Errorf("agents %s and %s: the same credential key", other, name)
		}
		byKey[string(b)] = id
		p.agents[id] = ed25519.PublicKey(b)
	}
	return nil
}

// Agents returns the ids in the agent registry, sorted.
func (p *Policy) Agents() []ids.AgentID {
	out := make([]ids.AgentID, 0, len(p.agents))
	for id := range p.agents {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// AgentKey returns the Ed25519 credential public key the registry holds for
// id: the key a node verifies the agent's request signature with.
func (p *Policy) AgentKey(id ids.AgentID) (ed25519.PublicKey, bool) {
	k, ok := p.agents[id]
	if !ok {
		return nil, false
	}
	return append(ed25519.PublicKey(nil), k...), true
}

// VerifyAgent checks that sig is agent id's Ed25519 signature of msg under
// the key the registry holds for it.
func (p *Policy) VerifyAgent(id ids.AgentID, msg, sig []byte) error {
	k, ok := p.agents[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownAgent, id)
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(k, msg, sig) {
		return fmt.Errorf("%w: agent %s", ErrAgentSignature, id)
	}
	return nil
}

// checkAgent returns why a request by id is refused before any rule: a
// policy with an agent registry serves only the agents it names. A policy
// without one names no agents, and leaves identifying them to the node.
func (p *Policy) checkAgent(id ids.AgentID) string {
	if len(p.agents) == 0 {
		return ""
	}
	if _, ok := p.agents[id]; !ok {
		return fmt.Sprintf("agent %q is not in the policy's agent registry", id)
	}
	return ""
}
