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
// Each protocol run at one node is a Session, a pure core in the manner of
// etcd's raft: the caller (Engine, or a test) calls Start, then Step for
// each message and Tick for each clock tick, and after each call
//
//  1. sends Ready.Messages, in order;
//  2. stops when Ready.Err is set (the failure, with culprits) or Ready.Done
//     is (the result, Share or Signature, is on that same Ready).
//
// Keygen, signing and resharing each have a file with their session's
// constructor, rounds and routing rules.
//
// The package does not know libp2p, badger or HTTP: package p2p implements
// Transport over the network, and package tsstest an in-process network for
// tests and benchmarks.
package tss
