// Package tss is the threshold engine of Custos: GG18/GG20-line threshold
// ECDSA key generation, signing and resharing (github.com/bnb-chain/tss-lib/v2
// v2.0.2) for a committee of member nodes, run over a small Transport
// interface that the caller supplies.
//
// The engine adds what tss-lib leaves to the application: every message is
// bound to a session id, duplicates are dropped and conflicting duplicates
// are treated as misbehaviour, messages are checked before they reach
// tss-lib (the Feldman VSS commitment count, the Paillier-Blum modulus proof
// gcd(W, N) = 1, the range proof S != 1, Z != 1, S1 != S2, and 2048-bit
// moduli), sessions that make no progress end naming the members they were
// still waiting for, and failures name the culprits tss-lib reports.
//
// The package does not know libp2p, badger or HTTP: package p2p implements
// Transport over the network, and an in-process implementation (MemNetwork)
// serves tests and benchmarks.
package tss
