package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"go.uber.org/goleak"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
)

func TestMain(m *testing.M) {
	// go-log, imported by tss-lib, starts a goroutine when it loads.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/ipfs/go-log/writer.(*MirrorWriter).logRoutine"))
}

// fastArgon2 keeps passphrase tests quick; nodes use DefaultArgon2.
var fastArgon2 = Options{Argon2: Argon2Params{Time: 1, Memory: 64, Threads: 1}}

// newKeyFile writes a random hex key, mode 0600, and returns its source.
func newKeyFile(t *testing.T) KeySource {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.key")
	if err := os.WriteFile(path, []byte(hex.EncodeToString(randomKey(t))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return KeyFile(path)
}

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, keyLen)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// openTest opens a store in dir and closes it at the end of the test.
func openTest(t *testing.T, dir string, key KeySource) *Store {
	t.Helper()
	s, err := Open(dir, key, fastArgon2)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func reopen(t *testing.T, s *Store, key KeySource) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return openTest(t, s.Dir(), key)
}

func TestOpenWithoutKeyIsSealed(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Passphrase([]byte("correct horse")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CUSTOS_TEST_UNSET_KEY", "")
	cases := map[string]struct {
		dir string
		key KeySource
	}{
		"no source":        {t.TempDir(), nil},
		"missing file":     {t.TempDir(), KeyFile(filepath.Join(t.TempDir(), "absent.key"))},
		"unset variable":   {t.TempDir(), KeyEnv("CUSTOS_TEST_UNSET_KEY")},
		"empty passphrase": {dir, Passphrase(nil)},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := Open(c.dir, c.key, fastArgon2)
			if !errors.Is(err, ErrSealed) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("open: %v, want %v", err, ErrSealed)
			}
		})
	}
	t.Run("passphrase parameters lost", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, keyParamsFile)); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, Passphrase([]byte("correct horse")), fastArgon2)
		if !errors.Is(err, ErrSealed) {
			t.Fatalf("open: %v, want %v", err, ErrSealed)
		}
	})
}

func TestWrongKeyNamed(t *testing.T) {
	envA, envB := hex.EncodeToString(randomKey(t)), hex.EncodeToString(randomKey(t))
	sources := map[string]func(t *testing.T) (right, wrong KeySource){
		"file": func(t *testing.T) (KeySource, KeySource) { return newKeyFile(t), newKeyFile(t) },
		"environment": func(t *testing.T) (KeySource, KeySource) {
			t.Setenv("CUSTOS_TEST_KEY_A", envA)
			t.Setenv("CUSTOS_TEST_KEY_B", envB)
			return KeyEnv("CUSTOS_TEST_KEY_A"), KeyEnv("CUSTOS_TEST_KEY_B")
		},
		"passphrase": func(t *testing.T) (KeySource, KeySource) {
			return Passphrase([]byte("correct horse")), Passphrase([]byte("battery staple"))
		},
	}
	for name, src := range sources {
		for _, verifier := range []bool{true, false} {
			label := name + "/verifier"
			if !verifier {
				label = name + "/badger"
			}
			t.Run(label, func(t *testing.T) {
				right, wrong := src(t)
				dir := t.TempDir()
				s := openTest(t, dir, right)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if !verifier {
					// Without the verifier, the check of badger's key
					// registry must still name a wrong key.
					if err := os.Remove(filepath.Join(dir, keyCheckFile)); err != nil {
						t.Fatal(err)
					}
				}
				_, err := Open(dir, wrong, fastArgon2)
				if !errors.Is(err, ErrWrongKey) {
					t.Fatalf("open with the wrong key: %v, want %v", err, ErrWrongKey)
				}
				if strings.Contains(strings.ToLower(err.Error()), "corrupt") {
					t.Fatalf("wrong key reported as corruption: %v", err)
				}
				s = openTest(t, dir, right)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(filepath.Join(dir, keyCheckFile)); err != nil {
					t.Fatalf("verifier not restored on open with the right key: %v", err)
				}
			})
		}
	}
}

func TestKeyFileChecks(t *testing.T) {
	dir := t.TempDir()
	raw := randomKey(t)
	rawPath := filepath.Join(t.TempDir(), "raw.key")
	hexPath := filepath.Join(t.TempDir(), "hex.key")
	if err := os.WriteFile(rawPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hexPath, []byte(" 0x"+hex.EncodeToString(raw)+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, dir, KeyFile(rawPath))
	s = reopen(t, s, KeyFile(hexPath))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(rawPath, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, KeyFile(rawPath), Options{})
		if !errors.Is(err, ErrKeyInsecure) {
			t.Errorf("key file mode %04o: %v, want %v", mode, err, ErrKeyInsecure)
		}
	}

	secret := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd" // 31 bytes
	bad := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(bad, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.TempDir(), KeyFile(bad), Options{})
	if !errors.Is(err, ErrKeyFormat) {
		t.Fatalf("short key: %v, want %v", err, ErrKeyFormat)
	}
	if strings.Contains(err.Error(), secret[:16]) {
		t.Fatalf("error quotes the key: %v", err)
	}
}

func TestPassphraseParametersWrittenOnce(t *testing.T) {
	dir := t.TempDir()
	pass := Passphrase([]byte("correct horse"))
	s := openTest(t, dir, pass)
	before, err := os.ReadFile(filepath.Join(dir, keyParamsFile))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, keyParamsFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key parameters mode %04o", fi.Mode().Perm())
	}
	// Other parameters in Options do not change an existing store's.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, pass, Options{Argon2: Argon2Params{Time: 2, Memory: 128, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(dir, keyParamsFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Fatalf("key parameters rewritten:\n%s\n%s", before, after)
	}
}

func TestClosedStoreIsSealed(t *testing.T) {
	s := openTest(t, t.TempDir(), newKeyFile(t))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	ctx := context.Background()
	calls := map[string]error{
		"view":           s.view(ctx, func(*badgerTxn) error { return nil }),
		"claim":          s.SessionIDs().Claim(ctx, ids.NewSessionID()),
		"reserve":        s.Ledger().Reserve(ctx, policy.Reservation{ID: "r1"}),
		"consume":        s.ConsumeApproval(ctx, common.Hash{1}, "r1"),
		"take preparams": func() error { _, err := s.TakePreParams(ctx); return err }(),
		"append audit":   func() error { _, err := s.AppendAudit(ctx, Entry{Kind: AuditRequest}); return err }(),
		"verify audit":   func() error { _, err := s.VerifyAudit(ctx); return err }(),
	}
	for name, err := range calls {
		if !errors.Is(err, ErrSealed) {
			t.Errorf("%s after close: %v, want %v", name, err, ErrSealed)
		}
	}
}

func TestValueBoundToItsKey(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir(), newKeyFile(t))
	a, b := []byte("grant/a"), []byte("grant/b")
	if err := s.update(ctx, func(txn *badgerTxn) error { return s.putJSON(txn, recGrant, a, "alpha") }); err != nil {
		t.Fatal(err)
	}
	// Copy the raw value of a under b, through badger itself.
	if err := s.update(ctx, func(txn *badgerTxn) error {
		it, err := txn.Get(a)
		if err != nil {
			return err
		}
		v, err := it.ValueCopy(nil)
		if err != nil {
			return err
		}
		return txn.Set(b, v)
	}); err != nil {
		t.Fatal(err)
	}
	var got string
	err := s.view(ctx, func(txn *badgerTxn) error { return s.getJSON(txn, recGrant, b, &got) })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"grant/b"`) {
		t.Fatalf("moved value: %v, want %v naming grant/b", err, ErrCorrupt)
	}
	// Read as another record type, it is refused by its frame.
	err = s.view(ctx, func(txn *badgerTxn) error { return s.getJSON(txn, recShare, a, &got) })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("value read as another record type: %v, want %v", err, ErrCorrupt)
	}
	// One flipped bit is named too.
	if err := s.update(ctx, func(txn *badgerTxn) error {
		it, err := txn.Get(a)
		if err != nil {
			return err
		}
		v, err := it.ValueCopy(nil)
		if err != nil {
			return err
		}
		v[len(v)-1] ^= 1
		return txn.Set(a, v)
	}); err != nil {
		t.Fatal(err)
	}
	err = s.view(ctx, func(txn *badgerTxn) error { return s.getJSON(txn, recGrant, a, &got) })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"grant/a"`) {
		t.Fatalf("altered value: %v, want %v naming grant/a", err, ErrCorrupt)
	}
}

// lines collects log records.
type lines struct {
	mu   sync.Mutex
	recs []string
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	l.recs = append(l.recs, line)
	return nil
}
func (l *lines) WithAttrs(as []slog.Attr) slog.Handler { return &withAttrs{l, as} }
func (l *lines) WithGroup(string) slog.Handler         { return l }

type withAttrs struct {
	*lines
	as []slog.Attr
}

func (w *withAttrs) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(w.as...)
	return w.lines.Handle(ctx, r)
}

func TestBadgerLogsThroughSlog(t *testing.T) {
	var l lines
	s, err := Open(t.TempDir(), newKeyFile(t), Options{Logger: slog.New(&l)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	found := false
	for _, r := range l.recs {
		if strings.Contains(r, "component=badger") {
			found = true
			if !strings.HasPrefix(r, "DEBUG ") || strings.HasSuffix(r, "\n") {
				t.Errorf("badger line %q: want debug level, no trailing newline", r)
			}
		}
	}
	if !found {
		t.Fatalf("no badger line reached the logger: %q", l.recs)
	}
}

func TestMustExist(t *testing.T) {
	key := newKeyFile(t)
	dir := filepath.Join(t.TempDir(), "data")
	_, err := Open(dir, key, Options{MustExist: true})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("open of no store: %v, want %v", err, ErrNotFound)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused open created %s: %v", dir, err)
	}
	s := openTest(t, dir, key)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, key, Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A crash while the key check or the key parameters are written must not
// leave a half-written file that keeps the store from ever opening again.
func TestCrashWritingKeyFilesLeavesNoHalfFile(t *testing.T) {
	for _, c := range []struct {
		name string
		file string
		key  func(t *testing.T) KeySource
	}{
		{"key check", keyCheckFile, newKeyFile},
		{"key parameters", keyParamsFile, func(*testing.T) KeySource { return Passphrase([]byte("correct horse")) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			key := c.key(t)
			crash := errors.New("crash mid-write")
			saved := writeData
			writeData = func(f *os.File, b []byte) error {
				if filepath.Base(f.Name()) != c.file+".tmp" && filepath.Base(f.Name()) != c.file {
					return saved(f, b)
				}
				f.Write(b[:len(b)/2])
				return crash
			}
			_, err := Open(dir, key, fastArgon2)
			writeData = saved
			if !errors.Is(err, crash) {
				t.Fatalf("open with a crash writing %s: %v", c.file, err)
			}
			s := openTest(t, dir, key)
			if _, _, err := s.AuditHead(t.Context()); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, c.file+".tmp")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("temporary file left: %v", err)
			}
		})
	}
}
