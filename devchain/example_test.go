package devchain_test

import (
	"context"
	"fmt"

	"github.com/custos-wallet/custos/devchain"
	"github.com/ethereum/go-ethereum/ethclient"
)

func Example() {
	c, err := devchain.Start(devchain.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	client, err := ethclient.Dial(c.URL())
	if err != nil {
		panic(err)
	}
	defer client.Close()
	id, err := client.ChainID(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println("chain id", id)
	fmt.Println(c.Accounts()[0])
	// Output:
	// chain id 1337
	// dev-account-0 0xA573be35FB3580f99c1142882B4dd31b1f7da7BA
}
