package store

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"golang.org/x/crypto/argon2"
)

// keyLen is the length of the data key: badger's AES-256 master key.
const keyLen = 32

// KeySource yields the store's 32-byte data key. A source that has no key
// (a missing file, an unset variable, an empty passphrase) fails with an
// error wrapping ErrSealed.
type KeySource interface {
	// dataKey returns the key for the store in dir; create is true when
	// the store is being created, so a source that keeps parameters beside
	// the data (a passphrase) may write them.
	dataKey(dir string, create bool, opts Options) ([]byte, error)
	// Describe names the source for logs and errors, never its secret.
	Describe() string
}

// KeyFile reads the key from a file holding 32 raw bytes or 64 hex digits
// (surrounding white space ignored). The file must not be readable or
// writable by group or others.
func KeyFile(path string) KeySource { return keyFile{path: path} }

type keyFile struct{ path string }

func (k keyFile) Describe() string { return "key file " + k.path }

func (k keyFile) dataKey(string, bool, Options) ([]byte, error) {
	fi, err := os.Stat(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrSealed, k.Describe())
	}
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", k.Describe(), err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; it must be 0600 or stricter", ErrKeyInsecure, k.Describe(), fi.Mode().Perm())
	}
	b, err := os.ReadFile(k.path)
	if err != nil {
		return nil, fmt.Errorf("store: read %s: %w", k.Describe(), err)
	}
	if len(b) == keyLen {
		return b, nil
	}
	key, err := decodeHexKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.Describe(), err)
	}
	return key, nil
}

// KeyEnv reads the key, 64 hex digits, from the environment variable name.
func KeyEnv(name string) KeySource { return keyEnv{name: name} }

type keyEnv struct{ name string }

func (k keyEnv) Describe() string { return "environment variable " + k.name }

func (k keyEnv) dataKey(string, bool, Options) ([]byte, error) {
	v, ok := os.LookupEnv(k.name)
	if !ok || strings.TrimSpace(v) == "" {
		return nil, fmt.Errorf("%w: %s is not set", ErrSealed, k.Describe())
	}
	key, err := decodeHexKey(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.Describe(), err)
	}
	return key, nil
}

func decodeHexKey(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "0x")
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != keyLen {
		// The text could be (part of) a key: never quote it.
		return nil, fmt.Errorf("%w: want %d raw bytes or %d hex digits", ErrKeyFormat, keyLen, 2*keyLen)
	}
	return b, nil
}

// Passphrase derives the key from a passphrase with Argon2id. The salt and
// the Argon2 parameters are written once, when the store is created, to
// keyparams.json in the store's directory (Options.Argon2 chooses them).
func Passphrase(p []byte) KeySource { return passphrase{p: bytes.Clone(p)} }

type passphrase struct{ p []byte }

func (passphrase) Describe() string { return "passphrase" }

// Argon2Params are the Argon2id parameters of a passphrase-derived key.
type Argon2Params struct {
	Time    uint32 `json:"time"`
	Memory  uint32 `json:"memory_kib"`
	Threads uint8  `json:"threads"`
}

// DefaultArgon2 follows RFC 9106's second recommended option (64 MiB, three
// passes), with two lanes for the two cores a node is expected to have.
var DefaultArgon2 = Argon2Params{Time: 3, Memory: 64 << 10, Threads: 2}

// validate bounds parameters read from disk, so that a tampered file can
// neither make the derivation trivial by accident nor exhaust memory.
func (a Argon2Params) validate() error {
	if a.Time < 1 || a.Time > 64 || a.Threads < 1 || a.Memory < 8*uint32(a.Threads) || a.Memory > 4<<20 {
		return fmt.Errorf("argon2 parameters out of range (time %d, memory %d KiB, threads %d)", a.Time, a.Memory, a.Threads)
	}
	return nil
}

const (
	keyParamsFile   = "keyparams.json"
	keyParamsFormat = "custos-keyparams/1"
)

type keyParams struct {
	Format string `json:"format"`
	KDF    string `json:"kdf"`
	Salt   string `json:"salt"`
	Argon2Params
}

func (k passphrase) dataKey(dir string, create bool, opts Options) ([]byte, error) {
	if len(k.p) == 0 {
		return nil, fmt.Errorf("%w: the passphrase is empty", ErrSealed)
	}
	path := filepath.Join(dir, keyParamsFile)
	var kp keyParams
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return nil, fmt.Errorf("store: passphrase salt: %w", err)
		}
		kp = keyParams{Format: keyParamsFormat, KDF: "argon2id", Salt: hex.EncodeToString(salt), Argon2Params: opts.Argon2}
		if kp.Argon2Params == (Argon2Params{}) {
			kp.Argon2Params = DefaultArgon2
		}
		if err := kp.validate(); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		out, err := json.MarshalIndent(kp, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("store: encode key parameters: %w", err)
		}
		if err := writeFileSync(path, append(out, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("store: write key parameters: %w", err)
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s is missing, so the passphrase cannot be turned into the key", ErrSealed, path)
	case err != nil:
		return nil, fmt.Errorf("store: read key parameters: %w", err)
	default:
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&kp); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", path, err)
		}
		if kp.Format != keyParamsFormat || kp.KDF != "argon2id" {
			return nil, fmt.Errorf("store: %s: format %q kdf %q, want %q argon2id", path, kp.Format, kp.KDF, keyParamsFormat)
		}
		if err := kp.validate(); err != nil {
			return nil, fmt.Errorf("store: %s: %w", path, err)
		}
	}
	salt, err := hex.DecodeString(kp.Salt)
	if err != nil || len(salt) < 16 {
		return nil, fmt.Errorf("store: %s: salt is not 16 or more hex bytes", path)
	}
	key := argon2.IDKey(k.p, salt, kp.Time, kp.Memory, kp.Threads, keyLen)
	// Argon2's 64 MiB would otherwise stay resident long after the open
	// (measured: +65 MB RSS), against a node budget of 100 MB.
	debug.FreeOSMemory()
	return key, nil
}

// writeFileSync writes a new file and syncs it and its directory, so that a
// file written at creation survives a crash together with the data. The
// bytes go to a temporary file first and are linked into place only once
// synced: a crash mid-write leaves no half-written file under path (a
// truncated key check or key parameter file would keep the store from
// opening), and an existing file is never replaced.
func writeFileSync(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err // left by a crash
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := writeData(f, b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeData writes b to f; tests replace it to stop a write half-way, as a
// crash would.
var writeData = func(f *os.File, b []byte) error {
	_, err := f.Write(b)
	return err
}
