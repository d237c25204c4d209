package coordinator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const baseConfig = `data_dir: data
store_key: {file: store.key}
members:
  - {id: 12D3KooWGzBnMUn4S4L7Xv7ZtPpmUuQuJr1Ak3RnhE3iG9e7EVc2, role: policy, addrs: [/ip4/127.0.0.1/tcp/4001]}
operators: [{name: ops, token: 0123456789abcdef0123}]
policy: {genesis_hash: "0x1111111111111111111111111111111111111111111111111111111111111111"}
`

// TestConfig checks strict parsing, defaults, the environment overrides
// and that each mistake is named.
func TestConfig(t *testing.T) {
	dir := t.TempDir()
	cfg, err := ParseConfig([]byte(baseConfig), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != filepath.Join(dir, "data") || cfg.Identity != filepath.Join(dir, "data", "identity.key") ||
		cfg.HTTP.Listen != DefaultHTTPListen || cfg.Timeouts.Propose != DefaultPropose || cfg.tokens["0123456789abcdef0123"] != "ops" {
		t.Fatalf("defaults: %+v", cfg)
	}
	env := map[string]string{EnvHTTPListen: "127.0.0.1:9999", EnvChainID: "5", EnvOperatorToken: "another-token-0123456789"}
	cfg, err = ParseConfig([]byte(baseConfig), dir, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen != "127.0.0.1:9999" || cfg.Chain.ChainID != 5 || cfg.tokens["another-token-0123456789"] != "env" {
		t.Fatalf("overrides: %+v", cfg)
	}
	if err := os.WriteFile(filepath.Join(dir, "ops.token"), []byte("from-a-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = ParseConfig([]byte(strings.Replace(baseConfig, "token: 0123456789abcdef0123", "token_file: ops.token", 1)+"timeouts: {session: 90s}\n"), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.tokens["from-a-file-0123456789"] != "ops" || cfg.Timeouts.Session != 90*time.Second {
		t.Fatalf("token file, durations: %+v", cfg)
	}
	for name, c := range map[string]struct{ text, want string }{
		"unknown key":         {baseConfig + "colour: blue\n", "colour"},
		"misspelt key":        {strings.Replace(baseConfig, "data_dir", "datadir", 1), "datadir"},
		"no data dir":         {strings.Replace(baseConfig, "data_dir: data\n", "", 1), "data_dir"},
		"two key sources":     {strings.Replace(baseConfig, "{file: store.key}", "{file: store.key, env: K}", 1), "exactly one"},
		"no members":          {strings.Replace(baseConfig, "  - {id: 12D3KooWGzBnMUn4S4L7Xv7ZtPpmUuQuJr1Ak3RnhE3iG9e7EVc2, role: policy, addrs: [/ip4/127.0.0.1/tcp/4001]}\n", "", 1) + "", "members"},
		"bad role":            {strings.Replace(baseConfig, "role: policy", "role: boss", 1), "boss"},
		"bad peer id":         {strings.Replace(baseConfig, "12D3KooWGzBnMUn4S4L7Xv7ZtPpmUuQuJr1Ak3RnhE3iG9e7EVc2", "nobody", 1), "members[0]"},
		"short token":         {strings.Replace(baseConfig, "0123456789abcdef0123", "short", 1), "shorter than"},
		"no genesis pin":      {strings.Replace(baseConfig, "policy: {genesis_hash: \"0x1111111111111111111111111111111111111111111111111111111111111111\"}\n", "", 1), "pin the genesis"},
		"bad genesis hash":    {strings.Replace(baseConfig, "0x1111111111111111111111111111111111111111111111111111111111111111", "0x11", 1), "genesis_hash"},
		"guardians no quorum": {strings.Replace(baseConfig, "{genesis_hash: \"0x1111111111111111111111111111111111111111111111111111111111111111\"}", "{guardians: [\"0x1111111111111111111111111111111111111111\"]}", 1), "quorum"},
		"bad log level":       {baseConfig + "log_level: loud\n", "log_level"},
		"bad duration":        {baseConfig + "timeouts: {propose: soon}\n", "soon"},
		"bad http listen":     {baseConfig + "http: {listen: nowhere}\n", "http.listen"},
	} {
		if _, err := ParseConfig([]byte(c.text), dir, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (want an error naming %q)", name, err, c.want)
		}
	}
}

// TestInitWritesLoadableConfig: init's configuration names what is missing
// and loads once it is filled in.
func TestInitWritesLoadableConfig(t *testing.T) {
	dir := t.TempDir()
	res, err := Init(dir, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Missing) != 2 {
		t.Fatalf("missing %v", res.Missing)
	}
	if _, err := LoadConfig(res.Config, nil); err == nil {
		t.Fatal("an unfilled starter configuration loaded")
	}
	if _, err := Init(dir, InitOptions{}); err == nil {
		t.Fatal("init overwrote a configuration")
	}
	dir2 := t.TempDir()
	res, err = Init(dir2, InitOptions{Members: []MemberConf{{ID: "12D3KooWGzBnMUn4S4L7Xv7ZtPpmUuQuJr1Ak3RnhE3iG9e7EVc2", Role: "policy", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}},
		GenesisHash: "0x1111111111111111111111111111111111111111111111111111111111111111"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(res.Config, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Identity != filepath.Join(dir2, "identity.key") || len(cfg.tokens) != 1 {
		t.Fatalf("loaded %+v", cfg)
	}
	for _, f := range []string{"store.key", "operator.token", "identity.key", "coordinator.yaml"} {
		fi, err := os.Stat(filepath.Join(dir2, f))
		if err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v %v", f, err, fi.Mode())
		}
	}
}
