package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/testfixtures"
	"github.com/custos-wallet/custos/node"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/common"
)

func fixtureFile(t *testing.T, dir string, i int) string {
	t.Helper()
	pp, err := testfixtures.PreParams(i)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(testfixtures.File{Warning: testfixtures.Warning, PreParams: *pp})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, filepath.Base(t.Name())+"-"+string(rune('a'+i))+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestImportPreParams(t *testing.T) {
	dir := t.TempDir()
	_, path, err := node.Init(filepath.Join(dir, "n"), node.InitOptions{Role: ids.RolePolicy, Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		GenesisHash: common.HexToHash("0x01")})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := node.LoadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f0, f1, f2 := fixtureFile(t, dir, 0), fixtureFile(t, dir, 1), fixtureFile(t, dir, 2)
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"pre_params": {"PaillierSK": 7}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	trunc := filepath.Join(dir, "trunc.json")
	b, _ := os.ReadFile(f2)
	if err := os.WriteFile(trunc, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(dir, "unknown.json")
	if err := os.WriteFile(unknown, []byte(`{"preparams": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}

	n, err := node.ImportPreParams(ctx, cfg, nil, []string{f0, f1})
	if err != nil || n != 2 {
		t.Fatalf("import two sets: %d, %v", n, err)
	}
	for _, c := range []struct {
		name  string
		files []string
		want  string
	}{
		{"again", []string{f2, f0}, f0 + ": store: pre-parameter set already held"},
		{"twice in one call", []string{f2, f2}, "the same set as set 0"},
		{"malformed", []string{f2, bad}, bad + ": not a pre-parameter file: malformed JSON"},
		{"truncated", []string{trunc}, trunc + ": not a pre-parameter file: malformed JSON"},
		{"unknown key", []string{unknown}, unknown + ": not a pre-parameter file: malformed JSON"},
		{"missing", []string{filepath.Join(dir, "none.json")}, "no such file"},
	} {
		_, err := node.ImportPreParams(ctx, cfg, nil, c.files)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "PaillierSK\": 7") {
			t.Errorf("%s: the error quotes the file: %v", c.name, err)
		}
	}
	// Nothing above changed the pool: f2 is still new to it.
	st, err := store.Open(filepath.Join(dir, "n", "data"), store.KeyFile(filepath.Join(dir, "n", "store.key")), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := st.CountPreParams(ctx); err != nil || c != 2 {
		t.Fatalf("pool after refusals: %d sets, %v", c, err)
	}
	// A set taken once (a key generation used it) is refused too.
	if _, err := st.TakePreParams(ctx); err != nil {
		t.Fatal(err)
	}
	st.Close()
	n, err = node.ImportPreParams(ctx, cfg, nil, []string{f2})
	if err != nil || n != 2 {
		t.Fatalf("import a third set: %d, %v", n, err)
	}
	_, err = node.ImportPreParams(ctx, cfg, nil, []string{f0})
	_, err1 := node.ImportPreParams(ctx, cfg, nil, []string{f1})
	taken := 0
	for _, e := range []error{err, err1} {
		if errors.Is(e, store.ErrPreParamsTaken) {
			taken++
		} else if !errors.Is(e, store.ErrPreParamsHeld) {
			t.Fatalf("re-import: %v", e)
		}
	}
	if taken != 1 {
		t.Fatalf("of the two sets imported first, one was taken: %d refused as taken", taken)
	}
}
