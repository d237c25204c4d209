package devchain

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakOptions ignores the one goroutine go-ethereum never stops: the
// process-wide transaction sender cacher, started once on first use by
// core.SenderCacher (a sync.OnceValue) and kept for the life of the process.
var leakOptions = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/ethereum/go-ethereum/core.(*txSenderCacher).cache"),
}

// leakGrace covers goleveldb's (*DB).mpoolDrain, which the p2p node database
// runs and which, after Close, waits up to one second (time.After in
// leveldb/db_state.go) before it returns. There is no channel to wait on, so
// the check is retried for a little longer than that; a database that is
// never closed keeps the goroutine for ever and still fails.
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
