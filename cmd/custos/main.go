// Command custos is the one binary of a Custos cluster: node, coordinator,
// guardian, agent and operator commands. Run custos help for the list.
package main

import (
	"os"

	"github.com/custos-wallet/custos/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
