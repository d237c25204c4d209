// Package devchain runs a local Ethereum development chain for Custos: a real
// go-ethereum node in dev mode (proof of stake driven by go-ethereum's
// simulated beacon, every fork up to the latest active from genesis), with
// prefunded dev accounts, blocks mined as soon as a transaction arrives, and
// the standard eth_* JSON-RPC over HTTP, so any Ethereum client can use it.
//
// The dev accounts' private keys are derived from a public string (see
// DevAccount) and served over JSON-RPC by dev_accounts. Everybody knows them:
// never send anything of value to them, and never point a production node at
// a dev chain.
//
// Beside the eth_*, net_*, web3_* and txpool_* namespaces, a dev chain serves:
//
//   - dev_mine: seals a block now, with whatever the pool holds, and returns
//     {"number", "hash"} of the new head.
//   - evm_mine: the same, returning "0x0" as Hardhat and Anvil do, so their
//     scripts run unchanged.
//   - dev_accounts: the dev accounts as [{"index", "address", "privateKey"}].
//
// Start and Close are the life cycle; Run wraps them for a daemon that stops
// when its context is done.
package devchain
