package p2p

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestLockedSuffix keeps the one meaning of the Locked suffix in this
// package: a method of *Node called with n.mu held. Every such method must
// be a *Node method, and every call of one must come from another Locked
// method or from a function that locks the same node's mu before the call.
func TestLockedSuffix(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			locked := strings.HasSuffix(fn.Name.Name, "Locked")
			if locked && !isNodeMethod(fn) {
				t.Errorf("%s: %s ends in Locked but is not a method of *Node", fset.Position(fn.Pos()), fn.Name.Name)
			}
			// Where the function locks mu, by receiver expression.
			locks := map[string]token.Pos{}
			ast.Inspect(fn.Body, func(x ast.Node) bool {
				call, ok := x.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if inner, ok := sel.X.(*ast.SelectorExpr); ok && sel.Sel.Name == "Lock" && inner.Sel.Name == "mu" {
					if _, seen := locks[exprString(inner.X)]; !seen {
						locks[exprString(inner.X)] = call.Pos()
					}
				}
				return true
			})
			ast.Inspect(fn.Body, func(x ast.Node) bool {
				call, ok := x.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Locked") {
					return true
				}
				checked++
				if locked {
					return true
				}
				if at, ok := locks[exprString(sel.X)]; !ok || at > call.Pos() {
					t.Errorf("%s: %s calls %s without locking %s.mu first", fset.Position(call.Pos()), fn.Name.Name, sel.Sel.Name, exprString(sel.X))
				}
				return true
			})
		}
	}
	if checked == 0 {
		t.Fatal("no call of a Locked method found: the check looks at nothing")
	}
}

func isNodeMethod(fn *ast.FuncDecl) bool {
	if fn.Recv == nil || len(fn.Recv.List) != 1 {
		return false
	}
	star, ok := fn.Recv.List[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	id, ok := star.X.(*ast.Ident)
	return ok && id.Name == "Node"
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	}
	return "?"
}
