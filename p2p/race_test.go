//go:build race

package p2p

// raceSlowdown scales the engine's idle timeouts in the tests: the race
// detector makes tss-lib's proofs several times slower, and a reshare's
// round then outlasts the timeout meant for a plain run.
const raceSlowdown = 4
