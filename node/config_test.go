package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
)

const peerA = "12D3KooWAJ7pqfR9ua8jj7YqJ3cK6ib8SkJ2dEpDHkkyQ1ZBMVcD"

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = `role: policy
data_dir: data
identity_file: identity.key
listen: [/ip4/127.0.0.1/tcp/4001]
members:
  - {peer_id: ` + peerA + `, addrs: [/ip4/127.0.0.1/tcp/4002], role: agent}
store_key: {file: store.key}
genesis: {hash: "0x1111111111111111111111111111111111111111111111111111111111111111"}
`

func TestLoadConfig(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, goodConfig), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.parsed.role != ids.RolePolicy || c.Pool.Target != 2 || !filepath.IsAbs(c.path(c.DataDir)) {
		t.Fatalf("config: %+v", c)
	}
	if c.parsed.memberRoles[peerA] != ids.RoleAgent {
		t.Fatalf("member roles: %v", c.parsed.memberRoles)
	}
}

func TestLoadConfigRefusesUnknownKeys(t *testing.T) {
	for name, body := range map[string]string{
		"top level": goodConfig + "listen_addrs: [/ip4/0.0.0.0/tcp/1]\n",
		"nested":    strings.Replace(goodConfig, "store_key: {file: store.key}", "store_key: {file: store.key, fiel: x}", 1),
		"member":    strings.Replace(goodConfig, "role: agent}", "role: agent, weight: 2}", 1),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, body), nil)
			if err == nil {
				t.Fatal("an unknown key was accepted")
			}
			t.Log(err)
		})
	}
}

func TestLoadConfigRefusesBadValues(t *testing.T) {
	for name, c := range map[string]struct{ from, to, want string }{
		"role":                     {"role: policy", "role: auditor", "role"},
		"agent on policy":          {"role: policy", "role: policy\nagent: bot", "agent"},
		"agent role without agent": {"role: policy", "role: agent", "agent"},
		"two key sources":          {"store_key: {file: store.key}", "store_key: {file: store.key, env: K}", "store_key"},
		"no genesis":               {`genesis: {hash: "0x1111111111111111111111111111111111111111111111111111111111111111"}`, "", "genesis"},
		"bad peer id":              {peerA, "12D3nope", "members[0]"},
		"member role":              {"role: agent}", "role: boss}", "members[0]"},
		"tcp admin without token":  {"role: policy\n", "role: policy\nadmin: {tcp: 127.0.0.1:7000}\n", "admin"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, strings.Replace(goodConfig, c.from, c.to, 1)), nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming %q", err, c.want)
			}
			t.Log(err)
		})
	}
}

func TestLoadConfigEnvOverrides(t *testing.T) {
	env := map[string]string{
		EnvRole:       "agent",
		EnvAgent:      "bot",
		EnvListen:     "/ip4/127.0.0.1/tcp/5001, /ip4/127.0.0.1/udp/5001/quic-v1",
		EnvKeyEnv:     "MY_STORE_KEY",
		EnvPoolTarget: "5",
		EnvLogLevel:   "debug",
	}
	c, err := LoadConfig(writeConfig(t, goodConfig), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.parsed.role != ids.RoleAgent || c.parsed.agent != "bot" || len(c.Listen) != 2 || c.Listen[1] != "/ip4/127.0.0.1/udp/5001/quic-v1" {
		t.Fatalf("overrides not applied: %+v", c)
	}
	if c.StoreKey != (StoreKeyConfig{Env: "MY_STORE_KEY"}) || c.Pool.Target != 5 {
		t.Fatalf("store key or pool override not applied: %+v %+v", c.StoreKey, c.Pool)
	}
	env[EnvPoolTarget] = "many"
	if _, err := LoadConfig(writeConfig(t, goodConfig), func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), EnvPoolTarget) {
		t.Fatalf("bad override: %v", err)
	}
}

func TestInitThenStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	_, path, err := Init(dir, InitOptions{Role: ids.RoleGuardian, Guardian: common.HexToAddress("0xA11CE00000000000000000000000000000000000"), Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"identity.key", "store.key", ConfigFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s has mode %v", f, fi.Mode())
		}
	}
	if _, _, err := Init(dir, InitOptions{Role: ids.RolePolicy}); err == nil {
		t.Fatal("init replaced an existing node")
	}
	// The starter configuration pins no genesis yet: refused until it does.
	if _, err := LoadConfig(path, nil); err == nil || !strings.Contains(err.Error(), "genesis") {
		t.Fatalf("starter configuration without a genesis pin: %v", err)
	}
	c, err := LoadConfig(path, func(k string) string {
		if k == EnvGenesisHash {
			return "0x2222222222222222222222222222222222222222222222222222222222222222"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(c, Options{Generate: func(ctx context.Context) (*tss.PreParams, error) { <-ctx.Done(); return nil, ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	if n.Role() != ids.RoleGuardian || string(n.Self()) != c.Members[0].PeerID {
		t.Fatalf("node %s %s", n.Self(), n.Role())
	}
	// Run serves the admin API on the unix socket init configured (0600).
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	cl, err := admin.NewClient(n.AdminAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	var st *admin.Status
	for i := 0; i < 200; i++ { // until the socket is up
		if st, err = cl.Status(ctx); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("admin status: %v", err)
	}
	if st.Role != ids.RoleGuardian || st.Member != n.Self() {
		t.Fatalf("admin status: %+v", st)
	}
	fi, err := os.Stat(filepath.Join(dir, "admin.sock"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v %v", fi, err)
	}
	if err := cl.Health(ctx); err == nil {
		t.Fatal("healthy without a policy")
	}
	cl.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.Admin = AdminConfig{}
	// Without its key the store stays sealed and the node refuses to start.
	os.Remove(filepath.Join(dir, "store.key"))
	if _, err := New(c, Options{}); !errors.Is(err, store.ErrSealed) {
		t.Fatalf("start without the store key: %v, want store: sealed", err)
	}
	// With another key it is named as the wrong key.
	if err := os.WriteFile(filepath.Join(dir, "store.key"), []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(c, Options{}); !errors.Is(err, store.ErrWrongKey) {
		t.Fatalf("start with another key: %v, want the wrong-key error", err)
	}
}

func TestPassphraseKeySourceAndRoleMismatch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	_, path, err := Init(dir, InitOptions{Role: ids.RolePolicy, Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		GenesisHash: common.HexToHash("0x2222222222222222222222222222222222222222222222222222222222222222")})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{EnvPassphraseEnv: "CUSTOS_PASSPHRASE", "CUSTOS_PASSPHRASE": "correct horse battery staple"}
	getenv := func(k string) string { return env[k] }
	c, err := LoadConfig(path, getenv)
	if err != nil {
		t.Fatal(err)
	}
	c.Admin = AdminConfig{}
	idle := func(ctx context.Context) (*tss.PreParams, error) { <-ctx.Done(); return nil, ctx.Err() }
	n, err := New(c, Options{Getenv: getenv, Generate: idle})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	if _, err := os.Stat(filepath.Join(dir, "data", "keyparams.json")); err != nil {
		t.Fatalf("the passphrase's salt and parameters are not beside the data: %v", err)
	}
	env["CUSTOS_PASSPHRASE"] = ""
	if _, err := New(c, Options{Getenv: getenv, Generate: idle}); !errors.Is(err, store.ErrSealed) {
		t.Fatalf("start without the passphrase: %v", err)
	}
	env["CUSTOS_PASSPHRASE"] = "wrong"
	if _, err := New(c, Options{Getenv: getenv, Generate: idle}); !errors.Is(err, store.ErrWrongKey) {
		t.Fatalf("start with a wrong passphrase: %v", err)
	}
	// A configuration whose member list has this node in another role.
	env["CUSTOS_PASSPHRASE"] = "correct horse battery staple"
	c.Members[0].Role = "agent"
	c.parsed = nil
	if _, err := New(c, Options{Getenv: getenv, Generate: idle}); err == nil || !strings.Contains(err.Error(), "role") {
		t.Fatalf("start with its own member entry in another role: %v", err)
	}
}
