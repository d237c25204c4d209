package rpc_test

import (
	"context"
	"log"

	"github.com/custos-wallet/custos/agent/rpc"
)

// The sidecar runs the endpoint beside the agent, in front of the node it
// broadcasts to, with a Wallet that sends agent-signed requests to the
// coordinator. Clients then use http://127.0.0.1:8546 as their wallet.
func ExampleRun() {
	var wallet rpc.Wallet // the sidecar's client of the coordinator
	ctx := context.Background()
	err := rpc.Run(ctx, rpc.Config{
		Upstream: "http://127.0.0.1:8545",
		Wallet:   wallet,
		Listen:   rpc.DefaultListen,
	})
	if err != nil {
		log.Fatal(err)
	}
}
