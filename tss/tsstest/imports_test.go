package tsstest

import (
	"testing"

	"github.com/custos-wallet/custos/internal/purity"
)

// The in-process network delivers whatever a test's filter makes of a
// message and authenticates nobody: only tests may use it.
func TestNoProductionPackageImportsTsstest(t *testing.T) {
	purity.NotImported(t, "github.com/custos-wallet/custos/tss/tsstest")
}
