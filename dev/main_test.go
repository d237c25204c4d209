package dev_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakOptions ignore goroutines that libraries keep for the life of the
// process: go-log's mirror writer and go-ethereum's sender cacher.
var leakOptions = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/ipfs/go-log/writer.(*MirrorWriter).logRoutine"),
	goleak.IgnoreTopFunction("github.com/ethereum/go-ethereum/core.(*txSenderCacher).cache"),
}

// TestMain fails the package when a closed dev cluster leaves goroutines
// behind (daemons, the sidecar's servers, the vault's background work).
// The check is retried for a few seconds, since some closes finish their
// goroutines shortly after they return.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(5 * time.Second)
		err := goleak.Find(leakOptions...)
		for err != nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			err = goleak.Find(leakOptions...)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
