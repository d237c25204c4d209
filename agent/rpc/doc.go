// Package rpc is the Ethereum JSON-RPC endpoint of the agent sidecar: a
// drop-in wallet for unmodified clients (go-ethereum's ethclient and
// console, ethers, viem, web3.py, cast --unlocked, geth --signer).
//
// It serves the wallet's methods itself (accounts, chain id, sending and
// signing transactions, personal_sign, eth_sign, EIP-712 typed data and
// go-ethereum's external-signer namespace account_*) with go-ethereum's own
// rpc server, and passes every other method to an upstream node. An HTTP
// dispatcher in front of the server reads the method names of a request or
// batch, answers the wallet's methods locally and forwards the rest in one
// upstream batch, and writes the answers back in the order and with the ids
// of the request.
//
// Signing goes through a Wallet, which the sidecar implements by sending
// agent-signed requests to the coordinator: this package never holds a key.
// The policy's answer comes back as an error the client can act on: a denial
// (*Denied) is error code 4001 with the rule, reason and request id in the
// error data; a request still waiting for a guardian (*Pending) is code
// -32002 with the request id to poll.
//
// Transactions from one address are signed and broadcast one at a time, so
// a nonce is spent only when the upstream node took the transaction: a
// denied, pending or failed send leaves no gap for the next one to fill.
//
// The endpoint listens on a loopback address only and refuses requests
// whose Host is not a loopback name or that come from a browser page.
package rpc
