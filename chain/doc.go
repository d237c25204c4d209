// Package chain is the go-ethereum glue of Custos.
//
// A Payload is what a node is asked to sign: an unsigned transaction,
// EIP-712 typed data or an EIP-191 personal message, held as the exact
// bytes received, their decoded form and the digest the node computes
// itself from that decoded form (design invariant 2). The policy evaluates
// the decoded form (Tx, Typed) of the same Payload whose digest is signed.
// Payloads travel between nodes in one canonical JSON encoding, and the
// threshold signature ([R || S || V], V the recovery id) is checked to
// recover to the key's address, refusing a high S, before it is assembled
// into a signed transaction.
//
// The decoding part turns the payloads an agent asks to sign (transactions
// of every type, ERC-20 calldata, EIP-2612 and Permit2 typed data, EIP-7702
// authorization lists) into a plain description of what they spend: which
// asset moves, to whom, how much, and whether the amount is unlimited.
// Package policy evaluates that description.
//
// Everything here is a pure function of its input: no network, no clock.
package chain
