//go:build !unix

package dev

import "time"

// processCPU is unknown here: the estimate assumes every core is ours.
func processCPU() (time.Duration, bool) { return 0, false }
