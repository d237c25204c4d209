// Package chain is the go-ethereum glue of Custos. The decoding part turns the
// payloads an agent asks to sign (transactions of every type, ERC-20 calldata,
// EIP-2612 and Permit2 typed data, EIP-7702 authorization lists) into a plain
// description of what they spend: which asset moves, to whom, how much, and
// whether the amount is unlimited. Package policy evaluates that description.
//
// Everything here is a pure function of its input: no network, no clock.
package chain
