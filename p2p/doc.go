// Package p2p is the network of a Custos cluster: a libp2p host per node that
// implements the threshold engine's tss.Transport, so that key generation,
// signing and resharing run between separate machines.
//
// What it adds to libp2p, and why:
//
//   - A persisted Ed25519 node identity (LoadOrCreateIdentity): the peer id is
//     the node's member id, so it must survive restarts.
//   - A static member list from local configuration and a connection gater
//     that admits only those peer ids. Nothing a peer sends can add a member.
//   - One protocol, ProtocolID (/custos/tss/1.0.0), carried on one long-lived
//     outbound stream per peer. Each message is a length-prefixed Frame whose
//     length is checked against Config.MaxFrameSize before anything is
//     allocated. A frame carries version, kind, session id, sequence number,
//     sender, recipient and payload, and the sender's Ed25519 signature over
//     all of it, so a frame can be shown to third parties as evidence.
//   - The sender of a frame is the authenticated remote peer of the stream it
//     arrived on: a frame that names or is signed by anyone else is dropped and
//     counted (invariant 5 of DESIGN.md).
//   - Echo broadcast: every receiver of a broadcast forwards the sender's
//     signed frame header (with the payload hash, not the payload) to the
//     other members of the session. Two validly signed broadcasts by one
//     sender under the same (session, broadcast sequence number) with
//     different payloads end the session at every member that sees both, with
//     a *tss.SessionError of kind tss.FailMisbehaviour naming the sender and
//     an *Evidence holding both signed frames.
//   - Bounded, expiring buffering of frames that arrive before the local node
//     opens their session, and per-peer frame and byte rate limits, so that
//     one member cannot exhaust another's memory.
//
// # Delivery and the equivocation window
//
// Broadcasts are delivered to the engine as soon as they arrive and verify
// (no Bracha-style wait for echoes), and cross-checked as echoes arrive. A
// receiver writes its echoes before it delivers the broadcast, on the same
// ordered stream that carries its own later messages, so a member learns of
// another member's view of round r before it can see that member's round r+1.
// The window that remains: an equivocation in the last round of a protocol
// can reach the engine before the echo that exposes it. Then the session may
// finish at a member before the transport ends it; the equivocation is still
// detected, logged and counted when the echo arrives if the session is open,
// and Close(nil) returns the misbehaviour error if it was detected by then.
// In GG18 signing a forged last-round share makes the final signature fail
// verification inside tss-lib, so this window cannot produce a wrong
// signature.
//
// QUIC listen addresses are supported; QUIC brings its own TLS 1.3 handshake,
// while TCP connections are secured with Noise and multiplexed with yamux.
package p2p
