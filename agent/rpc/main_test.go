package rpc

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakOptions ignores the one goroutine go-ethereum never stops: the
// process-wide transaction sender cacher of the dev chain's node.
var leakOptions = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/ethereum/go-ethereum/core.(*txSenderCacher).cache"),
}

// leakGrace covers goleveldb's (*DB).mpoolDrain in the dev chain's node
// database, which after Close waits up to a second (a time.After, nothing to
// wait on) before it returns; see devchain/main_test.go.
const leakGrace = 3 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(leakGrace)
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
