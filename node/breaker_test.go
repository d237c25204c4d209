package node

import (
	"testing"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
)

// breakerOf is what the node's circuit breaker remembers of agent.
func breakerOf(t *testing.T, n *testNode, agent ids.AgentID) policy.BreakerHistory {
	t.Helper()
	eng := n.policyEngine()
	if eng == nil {
		t.Fatalf("%s has no policy", n.name)
	}
	for _, h := range eng.Export().Breaker {
		if h.Agent == agent {
			return h
		}
	}
	return policy.BreakerHistory{Agent: agent}
}

// TestBreakerMemorySurvivesRestart: a proposal a member joins counts in
// its circuit breaker's memory of the agent (the request and its new
// destination), saved with the proposal's journal, so a restart keeps
// it: an agent cannot reset its rate or its new destinations by crashing
// a node.
func TestBreakerMemorySurvivesRestart(t *testing.T) {
	c, key := shared(t)
	pol := c.policy()
	agent := c.w.bot.Agent()
	before := breakerOf(t, pol, agent)
	s, id := request(t, c.w.bot, key, vendor, millis(1))
	sid := ids.NewSessionID()
	var joined []*testNode
	for _, n := range c.nodes {
		expectJoined(t, n.name, c.send(n, propose(sid, id, s, c.memberIDs(), "hot")))
		joined = append(joined, n)
	}
	c.abortAll(sid, joined...)
	after := breakerOf(t, pol, agent)
	if len(after.Requests) != len(before.Requests)+1 {
		t.Fatalf("the breaker remembers %d requests of %s after the join, %d before: want one more", len(after.Requests), agent, len(before.Requests))
	}
	if err := pol.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.start(pol); err != nil {
		t.Fatal(err)
	}
	restored := breakerOf(t, pol, agent)
	if len(restored.Requests) != len(after.Requests) || len(restored.Known) != len(after.Known) {
		t.Fatalf("after a restart the breaker remembers %d requests and %d destinations of %s, before it %d and %d",
			len(restored.Requests), len(restored.Known), agent, len(after.Requests), len(after.Known))
	}
}
