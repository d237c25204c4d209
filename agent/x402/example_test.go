package x402_test

import (
	"context"
	"fmt"
	"io"
	"math/big"
	"net/http"

	"github.com/ethereum/go-ethereum/common"

	"github.com/custos-wallet/custos/agent/x402"
)

// The sidecar pays for a resource with at most 0.01 USDC (6 decimals) to
// one vendor on Base. signer sends the typed data through the cluster.
func ExampleClient_Do() {
	var signer x402.Signer // the sidecar's cluster signer
	usdcBase := common.HexToAddress("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913")
	c, err := x402.New(x402.Config{
		Signer: signer,
		Choose: x402.Cap(x402.Limits{
			Max:      big.NewInt(10_000),
			Payees:   []common.Address{common.HexToAddress("0x209693Bc6afc0C5328bA36FaF03C514EF312287C")},
			Assets:   []common.Address{usdcBase},
			Networks: []string{"eip155:8453"},
		}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/premium-data", nil)
	resp, receipt, err := c.Do(context.Background(), req)
	if err != nil {
		fmt.Println(err) // x402.ErrRefused, ErrWindow, ErrPaidButRefused, ...
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if receipt != nil && receipt.Settlement != nil {
		fmt.Println("paid", receipt.Requirement.Amount, "in", receipt.Settlement.Transaction)
	}
	fmt.Println(len(body))
}
