// Package cluster holds the end-to-end tests of a whole Custos cluster in
// one process: a coordinator and four nodes (agent, policy and two
// guardians) over real libp2p on loopback, real badger stores in temporary
// directories, committed test-only pre-parameters and go-ethereum's
// simulated chain. It has no code of its own outside the tests.
//
// Run it with
//
//	go test -v ./cluster/
//
// (one key generation per key and test binary, shared by every test; a few
// minutes on two cores), or one test with -run.
package cluster
