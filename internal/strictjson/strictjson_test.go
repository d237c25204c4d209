package strictjson

import (
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"testing"
)

type inner struct {
	Value string `json:"value"`
}

type outer struct {
	ChainID uint64            `json:"chain_id"`
	Inner   inner             `json:"inner"`
	List    []inner           `json:"list"`
	Any     json.RawMessage   `json:"any"`
	Map     map[string]string `json:"map"`
}

func TestCheckKeys(t *testing.T) {
	typ := reflect.TypeFor[outer]()
	ok := `{"chain_id":1,"inner":{"value":"a"},"list":[{"value":"b"}],"any":{"x":1,"X":2},"map":{"a":"1","A":"2"}}`
	if err := CheckKeys([]byte(ok), typ); err != nil {
		t.Fatalf("clean body: %v", err)
	}
	cases := map[string]struct {
		body string
		path string
		p    Problem
	}{
		"duplicate top":     {`{"chain_id":5,"chain_id":1}`, `"chain_id"`, Duplicate},
		"case folded":       {`{"Chain_ID":1}`, `"Chain_ID"`, Misspelled},
		"nested misspelled": {`{"inner":{"VALUE":"a"}}`, `"inner"."VALUE"`, Misspelled},
		"in a list":         {`{"list":[{"value":"a"},{"value":"a","value":"b"}]}`, `"list"[1]."value"`, Duplicate},
		"raw duplicate":     {`{"any":{"x":1,"x":2}}`, `"any"."x"`, Duplicate},
		"map duplicate":     {`{"map":{"a":"1","a":"2"}}`, `"map"."a"`, Duplicate},
		"unknown":           {`{"extra":1}`, `"extra"`, Unknown},
	}
	for name, c := range cases {
		var ke *KeyError
		err := CheckKeys([]byte(c.body), typ)
		if !errors.As(err, &ke) || ke.Path != c.path || ke.Problem != c.p {
			t.Errorf("%s: %v, want %v at %s", name, err, c.p, c.path)
		}
	}
}

// The pure packages import this one: it must stay on the standard
// library's encoding and text packages.
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	allowed := map[string]bool{"bytes": true, "encoding": true, "encoding/json": true, "errors": true, "fmt": true, "reflect": true, "strconv": true, "strings": true}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "strictjson.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if !allowed[p] {
			t.Errorf("strictjson imports %s", p)
		}
	}
}
