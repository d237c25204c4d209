package tsstest

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// Concurrently runs f(0..n-1) at once and returns each one's latency; an
// error fails the benchmark or test.
func Concurrently(tb testing.TB, n int, f func(int) error) []time.Duration {
	tb.Helper()
	ds := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			start := time.Now()
			errs[i] = f(i)
			ds[i] = time.Since(start)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	return ds
}

// Median is the median of ds (0 for none).
func Median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
