//go:build race

package tss

const raceEnabled = true
