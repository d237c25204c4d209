// Package purity is a test helper: it checks that a package's own files
// import nothing forbidden, and that nothing it depends on brings in what
// the pure packages (tss, chain, policy) must never reach for. Only tests
// import it.
package purity

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Check fails t for each non-test Go file in the current directory that
// imports a path for which direct reports true, and for each package in
// the dependency graph of patterns (default ".") for which deps reports
// true.
func Check(t testing.TB, direct, deps func(path string) bool, patterns ...string) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range file.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); direct(p) {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
	if len(patterns) == 0 {
		patterns = []string{"."}
	}
	out, err := exec.Command("go", append([]string{"list", "-deps"}, patterns...)...).Output()
	if err != nil {
		t.Fatalf("go list -deps %v: %v", patterns, err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if deps(dep) {
			t.Errorf("%v depends on %s", patterns, dep)
		}
	}
}

// NetworkOrStorage reports the libp2p and badger packages, which no pure
// package may reach even indirectly.
func NetworkOrStorage(path string) bool {
	return strings.Contains(path, "libp2p") || strings.Contains(path, "dgraph-io/badger")
}

// NotImported fails t if any package of the module other than pkg (and the
// packages under it) depends on pkg outside its tests: for test-support
// packages (fixtures, in-process networks) that must never end up in a
// binary. go list leaves test imports out of Deps, so tests may import pkg.
func NotImported(t testing.TB, pkg string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-e", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", "github.com/custos-wallet/custos/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if bad := ImportersOf(string(out), pkg); len(bad) > 0 {
		t.Fatalf("non-test packages depend on %s: %v", pkg, bad)
	}
}

// ImportersOf returns the packages in list (lines of an import path and
// its dependencies) that depend on pkg, other than pkg and the packages
// under it; an empty list is reported as an error line, so that a broken
// listing does not pass.
func ImportersOf(list, pkg string) []string {
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
