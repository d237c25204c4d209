// Package bench is `custos bench`: the whole signing path measured against
// the in-process tss-lib floor, in one run on one machine, printed as one
// table.
//
// The parent process prepares a work directory once (three libp2p
// identities and a 2-of-3 key made in-process, and a dev cluster whose hot
// key is the same kind of 2-of-3 key), then re-executes its own binary
// once per scenario and concurrency. Each child runs one scenario for a
// fixed number of signatures after a warm-up and prints its latencies as
// JSON; the parent reads the child's CPU time and peak resident memory
// from its rusage, so one scenario's memory does not hide another's.
//
// Scenarios: floor (tss-lib 2-of-3 signing through the engine over the
// in-memory transport), libp2p (three hosts on loopback), REST (a signed
// request through the coordinator's REST API: agent authentication,
// policy on every node, badger journaling, audit), JSON-RPC
// (eth_sendTransaction through the agent sidecar against the dev chain)
// and MCP (the transfer tool), plus key generation with a warm pool, the
// wait of a keygen on a cold pool, one policy evaluation and a node's idle
// memory.
//
// The benchmark is not a production node: every node takes its Paillier
// pre-parameters from the committed test fixtures (internal/testfixtures, read from files),
// which hold public secrets. Stores are real badger directories, hosts are
// real libp2p on loopback, the chain is the go-ethereum dev chain.
package bench
