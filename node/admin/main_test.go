package admin

import (
	"testing"

	"go.uber.org/goleak"
)

// The server and the client start goroutines (serving, connections): none
// may outlive the tests. tss-lib's logger starts one of its own at init.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/ipfs/go-log/writer.(*MirrorWriter).logRoutine"))
}
