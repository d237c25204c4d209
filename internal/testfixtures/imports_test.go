package testfixtures

import (
	"os/exec"
	"strings"
	"testing"
)

const self = "github.com/custos-wallet/custos/internal/testfixtures"

// The fixtures hold public Paillier secrets: no package that can end up
// in a binary may depend on this one. Test files may (go list leaves test
// imports out of Deps); the generator under this directory may, since it
// writes the fixtures.
func TestNoPackageImportsFixtures(t *testing.T) {
	out, err := exec.Command("go", "list", "-e", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", "github.com/custos-wallet/custos/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if bad := importersOf(string(out), self); len(bad) > 0 {
		t.Fatalf("non-test packages depend on %s: %v", self, bad)
	}
}

// importersOf returns the packages in list (lines of an import path and
// its dependencies) that depend on pkg, other than pkg and the packages
// under it.
func importersOf(list, pkg string) []string {
	var bad []string
	n := 0
	for line := range strings.Lines(list) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		n++
		if fields[0] == pkg || strings.HasPrefix(fields[0], pkg+"/") {
			continue
		}
		for _, dep := range fields[1:] {
			if dep == pkg {
				bad = append(bad, fields[0])
				break
			}
		}
	}
	if n == 0 {
		return []string{"(go list listed no packages)"}
	}
	return bad
}

func TestImportersOf(t *testing.T) {
	list := "example.com/a fmt " + self + "\nexample.com/b fmt\n" + self + "/gen " + self + "\n" + self + " embed\n"
	if got := importersOf(list, self); len(got) != 1 || got[0] != "example.com/a" {
		t.Fatalf("got %v, want [example.com/a]", got)
	}
	if got := importersOf("", self); len(got) != 1 {
		t.Fatalf("empty listing passed: %v", got)
	}
}
