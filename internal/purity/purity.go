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
