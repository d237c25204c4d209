// Package tss is the threshold engine of Custos: GG18/GG20-line threshold
// ECDSA key generation, signing and resharing (github.com/bnb-chain/tss-lib/v2
// v2.0.2) for a committee of member nodes, run over a small Transport
// interface that the caller supplies.
//
// The engine adds what tss-lib leaves to the application: every message is
// bound to a session id and to the whole request, duplicates are dropped
// and conflicting duplicates are treated as misbehaviour, messages are
// checked before they reach tss-lib (the proof checks fixed upstream after
// v2.0.2, and every value that could make tss-lib panic or work without
// bound: see harden.go), sessions that make no progress end naming the
// members that failed to send, failures name the culprits tss-lib reports,
// and a reshare ends with a confirmation round so that it counts as
// complete only when every new member holds its share and the proof.
//
// The package does not know libp2p, badger or HTTP: package p2p implements
// Transport over the network, and an in-process implementation (MemNetwork)
// serves tests and benchmarks.
package tss
