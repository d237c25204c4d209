package p2p

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
)

// fileRegistry is a durable SessionRegistry for the tests: one id per line
// in a file, synced before Claim returns. A new fileRegistry on the same
// file is the registry of a restarted node.
type fileRegistry struct {
	mu   sync.Mutex
	path string
	used map[ids.SessionID]bool
}

func openFileRegistry(t *testing.T, path string) *fileRegistry {
	t.Helper()
	r := &fileRegistry{path: path, used: make(map[ids.SessionID]bool)}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return r
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, err := ids.ParseSessionID(sc.Text())
		if err != nil {
			t.Fatal(err)
		}
		r.used[id] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *fileRegistry) Claim(_ context.Context, id ids.SessionID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.used[id] {
		return fmt.Errorf("file registry: %s: %w", id, ErrSessionReused)
	}
	f, err := os.OpenFile(r.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, id); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	r.used[id] = true
	return nil
}

func TestMemorySessionRegistry(t *testing.T) {
	r := NewMemorySessionRegistry()
	id := ids.NewSessionID()
	if err := r.Claim(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if err := r.Claim(context.Background(), id); !errors.Is(err, ErrSessionReused) {
		t.Fatalf("got %v, want ErrSessionReused", err)
	}
	if err := r.Claim(context.Background(), ids.NewSessionID()); err != nil {
		t.Fatal(err)
	}
}

// A session id used before a restart is refused after it: the node claims
// every id in the durable registry it is given.
func TestSessionIDRefusedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sessions")
	c := newClusterEach(t, dir, 2, tcpLoopback, func(i int, cfg *Config) {
		if i == 0 {
			cfg.Sessions = openFileRegistry(t, path)
		}
	})
	defer c.close()
	a := c.nodes[0]
	sid := ids.NewSessionID()
	conns := openAll(t, c, sid)
	if err := conns[1].Send(context.Background(), a.Self(), []byte("first run")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[0], 10*time.Second); string(m.Payload) != "first run" {
		t.Fatalf("got %q", m.Payload)
	}
	for _, conn := range conns {
		conn.Close(nil)
	}
	if _, err := a.Open(context.Background(), sid, c.ids()); err == nil {
		t.Fatal("reopened an ended session")
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	c.start(t, 0, func(cfg *Config) { cfg.Sessions = openFileRegistry(t, path) })
	a = c.nodes[0]
	if _, err := a.Open(context.Background(), sid, c.ids()); !errors.Is(err, ErrSessionReused) {
		t.Fatalf("after restart: got %v, want ErrSessionReused", err)
	}
	// A fresh id still opens, and works.
	conns = openAll(t, c, ids.NewSessionID())
	if err := conns[1].Send(context.Background(), a.Self(), []byte("second run")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, conns[0], 10*time.Second); string(m.Payload) != "second run" {
		t.Fatalf("got %q", m.Payload)
	}
}

func TestConfigNeedsSessionRegistry(t *testing.T) {
	key, _ := testKey(t)
	if _, err := New(Config{Identity: key}); err == nil {
		t.Fatal("started without a session registry")
	}
}
