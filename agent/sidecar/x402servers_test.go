package sidecar_test

import "time"

// clock is the facilitator's clock: the real one, as the cluster's.
type clock struct{}

func (clock) Now() time.Time { return time.Now() }
