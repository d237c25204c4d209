package dev

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/coordinator"
	"github.com/custos-wallet/custos/node"
)

func composeVolumes(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range append([]string{ServiceCoordinator}, ComposeMembers...) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestComposeInit: compose init lays out every volume with configurations
// that load and name each other by compose DNS names, makes new secrets
// each time, and changes nothing when run again.
func TestComposeInit(t *testing.T) {
	dir, out := composeVolumes(t), t.TempDir()
	made, err := ComposeInit(ComposeInitOptions{Dir: dir, Out: out})
	if err != nil || !made {
		t.Fatalf("first init: %v, %v", made, err)
	}
	var cl ComposeCluster
	b, err := os.ReadFile(filepath.Join(out, ComposeClusterFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cl); err != nil {
		t.Fatal(err)
	}
	for _, name := range ComposeMembers {
		cfg, err := node.LoadConfig(filepath.Join(dir, name, node.ConfigFile), nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(cfg.Members) != len(ComposeMembers) {
			t.Fatalf("%s lists %d members, want %d (agent-2 included)", name, len(cfg.Members), len(ComposeMembers))
		}
		for _, m := range cfg.Members {
			if !strings.HasPrefix(m.Addrs[0], "/dns4/") {
				t.Fatalf("%s: member address %s is not a DNS name", name, m.Addrs[0])
			}
		}
		if cfg.Coordinators[0].PeerID != cl.Coordinator || cfg.Coordinators[0].Addrs[0] != "/dns4/coordinator/tcp/4100" {
			t.Fatalf("%s: coordinator %+v", name, cfg.Coordinators)
		}
	}
	if _, err := coordinator.LoadConfig(filepath.Join(dir, ServiceCoordinator, "coordinator.yaml"), nil); err != nil {
		t.Fatalf("coordinator: %v", err)
	}
	for _, f := range []string{"agent.json", "policy.json", "policy.yaml"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatalf("operator copy: %v", err)
		}
	}
	for _, g := range []string{NameGuardian1, NameGuardian2} {
		for _, f := range []string{"keystore.json", "password"} {
			if _, err := os.Stat(filepath.Join(dir, g, f)); err != nil {
				t.Fatalf("%s: %v", g, err)
			}
		}
	}
	key1, _ := os.ReadFile(filepath.Join(dir, NamePolicy, "store.key"))

	made, err = ComposeInit(ComposeInitOptions{Dir: dir, Out: out})
	if err != nil || made {
		t.Fatalf("second init: %v, %v", made, err)
	}
	if key2, _ := os.ReadFile(filepath.Join(dir, NamePolicy, "store.key")); string(key2) != string(key1) {
		t.Fatal("a second init replaced a store key")
	}

	// Another cluster gets other secrets.
	dir2 := composeVolumes(t)
	if _, err := ComposeInit(ComposeInitOptions{Dir: dir2}); err != nil {
		t.Fatal(err)
	}
	if key3, _ := os.ReadFile(filepath.Join(dir2, NamePolicy, "store.key")); string(key3) == string(key1) {
		t.Fatal("two clusters share a store key")
	}

	// A volume half laid out is refused, and nothing is written.
	dir3 := composeVolumes(t)
	if err := os.WriteFile(filepath.Join(dir3, NameAgent, "stray"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ComposeInit(ComposeInitOptions{Dir: dir3}); err == nil || !strings.Contains(err.Error(), "volume of agent") {
		t.Fatalf("half laid out: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir3, NamePolicy)); len(ents) != 0 {
		t.Fatalf("refused init wrote %d files", len(ents))
	}
}
