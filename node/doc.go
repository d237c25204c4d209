// Package node is the Custos node daemon: one member of a wallet's
// committees (role agent, policy or guardian) holding its shares in an
// encrypted store and serving the control protocol (/custos/ctl/1.0.0) to
// the coordinators it is configured with.
//
// The node trusts no coordinator. Before it joins a signing session it
// checks, itself and in this order, refusing at the first failure with a
// rule id and a reason: the session id is new (rule "session"); the
// request id is the agent's and the request was not signed here already
// ("request"); the payload decodes and its digest is computed here
// (invariant 2); the agent's Ed25519 signature verifies against the agent
// registry of the guardian-signed policy, and an agent node serves only its
// own agent ("agent"); it holds a share of the key, the path derives the
// expected address, the quorum is in the committee with this node in it
// ("key", "quorum"); its own policy evaluation over its own ledger allows
// the request, reserving the budget (the deciding rule's id); the
// coordinator's tier is no lower than its own and the quorum satisfies
// both ("tier", "quorum"; invariant 3); the approvals the tier needs are
// valid EIP-712 guardian signatures over this request's id, digest, chain
// and key, each consumed once ("approval"; invariant 4), and a guardian
// node joins a guardian tier only with its own guardian's approval.
// Every step is journalled and audited in the store's hash-chained log.
//
// Budgets: every role evaluates and reserves in its own ledger. A key with
// several policy members has all of them in every quorum (quorum.Check),
// so no budget is spent twice across ledgers.
//
// Crashes (invariant 9): on restart the node reloads its policy documents
// in order, its policy state and its shares, and fails every session that
// was proposed or running. A reservation no session ran with is released;
// one a session ran with is kept, since this node may have sent its last
// share and the signature may exist, and a retry of the same request
// reuses it, so no budget is reserved twice.
//
// Keygen and reshare take pre-parameters from a pool filled in the
// background and persisted encrypted; a miss waits (Result reports the
// progress) and never fails. A reshare runs only with the guardian
// quorum's authorisation, which every old member verifies against its own
// share; the old share is deleted only once every new member confirmed.
package node
