package chain

import (
	"go/parser"
	gotoken "go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Package chain is pure go-ethereum glue: it must not reach for the
// network, the database or HTTP itself, and nothing it depends on may
// bring in libp2p or badger. go-ethereum packages it uses may depend on
// net/http; only direct imports are checked for that.
func TestChainImportsNoNetworkOrStorage(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := gotoken.NewFileSet()
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
			if forbiddenDep(path) || path == "net/http" || path == "net" || strings.HasPrefix(path, "github.com/custos-wallet/custos/") && path != "github.com/custos-wallet/custos/internal/strictjson" {
				t.Errorf("%s imports %s", f, path)
			}
		}
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if forbiddenDep(dep) {
			t.Errorf("chain depends on %s", dep)
		}
	}
}

func forbiddenDep(path string) bool {
	return strings.Contains(path, "libp2p") || strings.Contains(path, "dgraph-io/badger")
}
