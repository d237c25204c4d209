// Package p2p is the network of a Custos cluster: a libp2p host per node that
// implements the threshold engine's tss.Transport, so that key generation,
// signing and resharing run between separate machines.
//
// What it adds to libp2p, and why:
//
//   - A persisted Ed25519 node identity (LoadOrCreateIdentity): the peer id is
//     the node's member id, so it must survive restarts.
//   - A peer set from local configuration, replaced at run time with
//     SetPeers (a reshare adds or removes a member without a restart):
//     members, who may be session members, and coordinators, who may
//     connect and use request protocols but are never session members. The
//     connection gater admits the current set only; a removed peer's
//     connections are closed. Nothing a peer sends can add a member. The
//     members of one session are the list given to Open.
//   - One protocol shell for every protocol served (admission by the current
//     peer set, a length limit checked before allocation, a memory
//     reservation, deadlines, reset on error), and on it request protocols
//     (RegisterHandler, Request) beside the session protocol.
//   - Session ids claimed in a durable SessionRegistry (Config.Sessions), so
//     a reused id is refused after a restart too.
//   - The session protocol, ProtocolID (/custos/tss/1.0.0), carried on one long-lived
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
//   - Contiguous broadcasts: a sender's broadcast #k is delivered only after
//     its #k-1, never past a gap (a few may wait ahead of it), so a sender
//     cannot give two members different payloads under different numbers.
//   - One bounded FIFO outbound queue and writer goroutine per member, shared
//     by engine sends and echoes. Stream readers never wait on the network:
//     an echo to a full queue goes over its cap by a small allowance, and
//     past that is dropped and ends its session naming the member. Send and
//     Broadcast wait for room at most Config.OutQueueWait (Broadcast only
//     after queueing for every member with room); a wait that ends, or one
//     of our frames the writer cannot deliver, ends the session naming the
//     member (tss.FailTransport, Waiting).
//   - Bounds in frames and bytes, with a share per sender, on everything a
//     member can make another keep: frames buffered before their session
//     opens (expiring), messages the engine has not read, sequence numbers,
//     held broadcasts; per-peer frame and byte rate limits on reading; and
//     rate-limited logs of drops.
//
// # Shape
//
// The broadcast logic of a session (echoes, ordering, duplicates,
// equivocation, queue shares) is a state machine without locks, goroutines
// or clocks (machine.go): it is stepped with verified frames and returns
// actions (deliver, echo, hold, drop, end) that the session carries out in
// order. Frames for sessions not open yet wait in a pre-open buffer that
// takes the time as an input (pending.go). Locks, channels, streams and
// goroutines live in the layer around them (session.go, node.go, out.go).
// Methods named ...Locked are called with Node.mu held.
//
// # Delivery and the equivocation window
//
// Broadcasts are delivered to the engine as soon as they arrive in sequence
// and verify (no Bracha-style wait for echoes), and cross-checked as echoes
// arrive. A receiver queues its echoes before it delivers the broadcast, in
// the same ordered outbound queue that carries its own later messages, so a
// member learns of another member's view of round r before it can see that
// member's round r+1.
// The window that remains: an equivocation in the last round of a protocol
// can reach the engine before the echo that exposes it. Then the session may
// finish at a member before the transport ends it; the equivocation is still
// detected, logged and counted when the echo arrives if the session is open,
// and Close(nil) returns the misbehaviour error if it was detected by then.
// In GG18 signing a forged last-round share makes the final signature fail
// verification inside tss-lib, so this window cannot produce a wrong
// signature. In key generation it can leave some members finished and
// others failed: callers treat a key generation as done only when all
// members report success.
//
// Session ids must never be reused (see Node.Open), and member ids are
// taken in canonical text form only.
//
// QUIC listen addresses are supported; QUIC brings its own TLS 1.3 handshake,
// while TCP connections are secured with Noise and multiplexed with yamux.
package p2p
