package tss

import (
	"testing"

	"github.com/custos-wallet/custos/internal/purity"
)

// The engine is pure logic over a Transport: it must not reach for the
// network, the database or HTTP itself, and nothing it depends on may bring
// in libp2p or badger either.
func TestEngineImportsNoNetworkOrStorage(t *testing.T) {
	purity.Check(t, func(p string) bool {
		return purity.NetworkOrStorage(p) || p == "net/http" || p == "net"
	}, purity.NetworkOrStorage)
}
