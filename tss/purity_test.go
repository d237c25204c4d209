package tss

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The engine is pure logic over a Transport: it must not reach for the
// network, the database or HTTP itself.
func TestEngineImportsNoNetworkOrStorage(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if forbiddenImport(path) || path == "net/http" || path == "net" {
				t.Errorf("%s imports %s", f, path)
			}
		}
	}
	// Nothing it depends on may bring in libp2p or badger either.
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if forbiddenImport(dep) {
			t.Errorf("tss depends on %s", dep)
		}
	}
}

func forbiddenImport(path string) bool {
	return strings.Contains(path, "libp2p") || strings.Contains(path, "dgraph-io/badger")
}
