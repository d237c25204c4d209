package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// LoadOrCreateIdentity returns the node key stored at path, creating a new
// Ed25519 key there (mode 0600) on first start. The file holds the key in
// libp2p's protobuf encoding. A file that cannot be parsed, holds another key
// type or can be read by group or others is an error: it is never replaced,
// because the key is the node's member id.
func LoadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	removeStaleTemps(filepath.Dir(path))
	key, err := LoadIdentity(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key, _, err = crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("p2p: generate identity: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("p2p: encode identity: %w", err)
	}
	if err := writeNew(path, raw); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process created it first: use that one.
			return LoadIdentity(path)
		}
		return nil, err
	}
	return key, nil
}

// LoadIdentity reads the node key at path; see LoadOrCreateIdentity.
func LoadIdentity(path string) (crypto.PrivKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("p2p: open identity %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("p2p: identity %s is accessible by group or others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("p2p: read identity %s: %w", path, err)
	}
	key, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("p2p: identity %s is corrupted: %w", path, err)
	}
	if key.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("p2p: identity %s holds a %s key, want Ed25519", path, key.Type())
	}
	return key, nil
}

// staleTempAge is how old a temporary identity file must be to be taken for
// the leftover of a crash rather than another process creating the key now.
const staleTempAge = time.Minute

// removeStaleTemps deletes temporary files that a crash during key creation
// left in dir: each may hold a private key.
func removeStaleTemps(dir string) {
	tmps, _ := filepath.Glob(filepath.Join(dir, ".identity-*"))
	for _, t := range tmps {
		fi, err := os.Lstat(t)
		if err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > staleTempAge {
			os.Remove(t)
		}
	}
}

// writeNew writes data to path atomically and only if path does not exist:
// a crash leaves either no file or a complete one.
func writeNew(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("p2p: create identity dir %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".identity-*")
	if err != nil {
		return fmt.Errorf("p2p: create identity %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("p2p: create identity %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("p2p: write identity %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("p2p: write identity %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("p2p: write identity %s: %w", path, err)
	}
	// Link fails if path exists, so a concurrent creator is never overwritten.
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("p2p: create identity %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
