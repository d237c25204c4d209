//go:build !race

package p2p

const raceSlowdown = 1
