package chain

import (
	"strings"
	"testing"

	"github.com/custos-wallet/custos/internal/purity"
)

// Package chain is pure go-ethereum glue: it must not reach for the
// network, the database or HTTP itself, and nothing it depends on may
// bring in libp2p or badger. go-ethereum packages it uses may depend on
// net/http; only direct imports are checked for that.
func TestChainImportsNoNetworkOrStorage(t *testing.T) {
	purity.Check(t, func(p string) bool {
		return purity.NetworkOrStorage(p) || p == "net/http" || p == "net" ||
			strings.HasPrefix(p, "github.com/custos-wallet/custos/") && p != "github.com/custos-wallet/custos/internal/strictjson"
	}, purity.NetworkOrStorage)
}
