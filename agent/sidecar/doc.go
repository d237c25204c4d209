// Package sidecar is the agent side of Custos: a Wallet that turns each
// signing request of the JSON-RPC endpoint (agent/rpc), the MCP server
// (agent/mcp) and the x402 client (agent/x402) into an api.SignRequest
// signed with the agent's Ed25519 credential, submits it to the
// coordinator with an idempotency key and waits for the cluster's answer.
//
// The Wallet trusts the coordinator for nothing it can check: the digest
// the coordinator reports must be the one the sidecar computed from its own
// payload, and the signature must recover to the address asked for.
//
// A denial is an *rpc.Denied naming the rule, the reason and the request
// id; a request still waiting for a guardian when the configured wait is
// over is an *rpc.Pending with the request id to poll (Status, WaitFor).
package sidecar
