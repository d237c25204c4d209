package testfixtures

import (
	"testing"

	"github.com/custos-wallet/custos/internal/purity"
)

const self = "github.com/custos-wallet/custos/internal/testfixtures"

// The fixtures hold public Paillier secrets: no package that can end up
// in a binary may depend on this one. Test files may; the generator under
// this directory may, since it writes the fixtures.
func TestNoPackageImportsFixtures(t *testing.T) {
	purity.NotImported(t, self)
}

func TestImportersOf(t *testing.T) {
	list := "example.com/a fmt " + self + "\nexample.com/b fmt\n" + self + "/gen " + self + "\n" + self + " embed\n"
	if got := purity.ImportersOf(list, self); len(got) != 1 || got[0] != "example.com/a" {
		t.Fatalf("got %v, want [example.com/a]", got)
	}
	if got := purity.ImportersOf("", self); len(got) != 1 {
		t.Fatalf("empty listing passed: %v", got)
	}
}
