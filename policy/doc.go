// Package policy is the rule engine of Custos: the limits that bound what an
// agent can sign, evaluated independently by every policy node before it
// contributes a share, and by the coordinator to pick a tier.
//
// A policy is a YAML document (ParseDocument) signed by a quorum of guardian
// identity accounts with EIP-712 signatures (SignDocument). The first
// document of a wallet is checked against a Genesis the operator pinned
// (VerifyDocument), and its hash is the wallet id that every later guardian
// signature is bound to; replacements go through Engine.ApplyDocument. A
// document is compiled once (Compile) and evaluated many times. Evaluation is pure: it
// takes a decoded Request (see package chain), the compiled Policy and a
// Ledger, and returns a typed Decision naming the rule that decided, a reason
// and the trace of every rule considered. No rule matching means deny; an
// explicit deny rule wins over any other; an evaluation error is a deny.
//
// The document also holds the agent registry: each agent's Ed25519
// credential key (Policy.AgentKey, Policy.VerifyAgent), against which nodes
// verify who asked.
//
// Engine holds the state around evaluation: the current document, freezes,
// revoked grants, the circuit breaker and the ledger of budget
// reservations. It reads no clock (every call takes the time, which must be
// the node's own) and performs no I/O itself; storage and networking are
// the caller's: Engine.Export and Engine.Restore carry freezes, revocations
// and the breaker's memory across restarts, and the Ledger (an interface,
// called outside the engine's lock, with the conformance suite
// policy/ledgertest) holds the budgets. Engine.Prune forgets what no window
// can reach any more.
package policy
