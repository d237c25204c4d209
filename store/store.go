package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
	"github.com/dgraph-io/badger/v4"
	"golang.org/x/crypto/chacha20poly1305"
)

// Errors of the store.
var (
	// ErrSealed: the store has no key (none configured, or the file or
	// variable is missing), or it is closed. Every call fails with it.
	ErrSealed = errors.New("store: sealed")
	// ErrWrongKey: the key given is not the one the store was created
	// with.
	ErrWrongKey = errors.New("store: wrong encryption key")
	// ErrKeyInsecure: a key file that group or others can read or write.
	ErrKeyInsecure = errors.New("store: key file is accessible to others")
	// ErrKeyFormat: a key that is not 32 bytes or 64 hex digits.
	ErrKeyFormat = errors.New("store: malformed encryption key")
	// ErrCorrupt: a stored value that fails its authentication or framing.
	ErrCorrupt = errors.New("store: corrupt record")
	// ErrNotFound: no record under the key asked for.
	ErrNotFound = errors.New("store: not found")
)

// Options tunes a Store. The zero value suits a node.
type Options struct {
	// Logger receives badger's own log lines (at debug level for its info
	// and debug lines) and the store's; nil discards them.
	Logger *slog.Logger
	// Argon2 chooses the parameters of a passphrase-derived key when the
	// store is created (zero means DefaultArgon2); later opens use the
	// parameters stored beside the data.
	Argon2 Argon2Params
	// CacheSize is badger's block cache; the index cache gets half of it.
	// Zero means 8 MiB.
	CacheSize int64
	// MemTableSize bounds each of badger's two memtables. Zero means 8 MiB.
	MemTableSize int64
	// MustExist refuses to create a store: a node started with a mistyped
	// data directory must not come up empty.
	MustExist bool
}

// keyRotation is how often badger makes a new data key under the master
// key; older data keys stay readable.
const keyRotation = 7 * 24 * time.Hour

const (
	keyCheckFile   = "keycheck.json"
	keyCheckFormat = "custos-keycheck/1"
	keyCheckText   = "custos store key check v1"
	// formatVersion is the layout of the records; stored under metaFormat.
	formatVersion = 1
)

// Store is an encrypted badger database holding a node's or coordinator's
// records and audit log. It is safe for concurrent use.
type Store struct {
	// immutable after Open
	dir  string
	db   *badger.DB
	aead cipher.AEAD // XChaCha20-Poly1305: random 24-byte nonces need no counter
	log  *slog.Logger

	// mu is held for reading by every call and for writing by Close, so no
	// call runs on a closed database.
	mu     sync.RWMutex
	closed bool // guarded by mu

	auditMu sync.Mutex // serialises audit appends
	prepMu  sync.Mutex // serialises changes to the pre-parameter pool
	// ledgerMu makes a ledger reservation's check of every limit and its
	// writes one step: badger's conflict detection does not see a
	// concurrent insert into a range another transaction scanned.
	ledgerMu sync.Mutex
	// usageMu guards usage: per bucket read since the store opened, every
	// ledger record of it as committed, by record key. Writers change it
	// after their commit and before they release ledgerMu (order: ledgerMu,
	// then usageMu); a bucket is read from disk once, under usageMu.
	usageMu sync.Mutex
	usage   map[policy.Bucket]map[string]ledgerUse

	sharesMu sync.Mutex
	shares   map[string]*tss.Share // guarded by sharesMu: shares decoded from their records, by record key
	// shareDeletes counts DeleteShare calls (guarded by sharesMu), so a
	// read racing a delete does not keep the deleted share.
	shareDeletes uint64
}

// Open opens the store in dir, creating it (and the directory, mode 0700)
// when dir holds no database yet. It fails with ErrSealed when key yields no
// key, and with ErrWrongKey when the key is not the store's.
func Open(dir string, key KeySource, opts Options) (*Store, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: no key source configured", ErrSealed)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	exists, err := hasDatabase(dir)
	if err != nil {
		return nil, err
	}
	if !exists && opts.MustExist {
		return nil, fmt.Errorf("store: open %s: %w: no store there", dir, ErrNotFound)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	k, err := key.dataKey(dir, !exists, opts)
	if err != nil {
		return nil, err
	}
	checked, err := verifyKeyCheck(dir, k)
	if err != nil {
		return nil, fmt.Errorf("open store %s with %s: %w", dir, key.Describe(), err)
	}
	if err := checkKeyRegistry(dir, k); err != nil {
		return nil, fmt.Errorf("open store %s with %s: %w", dir, key.Describe(), err)
	}
	db, err := badger.Open(badgerOptions(dir, k, opts))
	if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
		return nil, fmt.Errorf("open store %s with %s: %w (badger: %v)", dir, key.Describe(), ErrWrongKey, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open badger in %s: %w", dir, err)
	}
	if !checked {
		// Written after badger accepted the key, so it never records a
		// wrong one.
		if err := writeKeyCheck(dir, k); err != nil {
			db.Close()
			return nil, fmt.Errorf("store: write key check: %w", err)
		}
	}
	a, err := chacha20poly1305.NewX(subkey(k, "custos/store/value/v1"))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: value cipher: %w", err)
	}
	s := &Store{dir: dir, db: db, aead: a, log: opts.Logger}
	if err := s.checkFormat(); err != nil {
		db.Close()
		return nil, err
	}
	s.log.Info("store open", "dir", dir, "created", !exists, "key", key.Describe())
	return s, nil
}

// Close flushes the store to disk and closes it; later calls fail with
// ErrSealed. Closing twice is harmless.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func badgerOptions(dir string, key []byte, opts Options) badger.Options {
	cache := opts.CacheSize
	if cache <= 0 {
		cache = 8 << 20
	}
	mem := opts.MemTableSize
	if mem <= 0 {
		mem = 8 << 20
	}
	return badger.DefaultOptions(dir).
		WithEncryptionKey(key).
		WithEncryptionKeyRotationDuration(keyRotation).
		WithBlockCacheSize(cache).
		WithIndexCacheSize(cache / 2).
		// Invariant 9: a commit is on disk before it returns.
		WithSyncWrites(true).
		WithMemTableSize(mem).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithMetricsEnabled(false).
		WithLogger(badgerLogger{l: opts.Logger.With("component", "badger")})
}

// hasDatabase reports whether dir already holds a badger database.
func hasDatabase(dir string) (bool, error) {
	for _, name := range []string{"KEYREGISTRY", "MANIFEST"} {
		_, err := os.Stat(filepath.Join(dir, name))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("store: %w", err)
		}
	}
	return false, nil
}

func subkey(key []byte, purpose string) []byte {
	k, err := hkdf.Key(sha256.New, key, nil, purpose, keyLen)
	if err != nil {
		panic(fmt.Sprintf("store: hkdf: %v", err)) // only for lengths beyond 255*32
	}
	return k
}

// checkKeyRegistry repeats badger's own key check on its KEYREGISTRY file
// (16-byte IV, then "Hello Badger" under AES-CTR with the master key) before
// badger opens: badger v4.9.6 leaks two goroutines when Open fails, and a
// node retrying with a wrong key must not accumulate them.
func checkKeyRegistry(dir string, key []byte) error {
	f, err := os.Open(filepath.Join(dir, badger.KeyRegistryFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	buf := make([]byte, aes.BlockSize+len(registrySanity))
	if _, err := io.ReadFull(f, buf); err != nil {
		return fmt.Errorf("store: read badger key registry: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	text := buf[aes.BlockSize:]
	cipher.NewCTR(block, buf[:aes.BlockSize]).XORKeyStream(text, text)
	if string(text) != registrySanity {
		return ErrWrongKey
	}
	return nil
}

// registrySanity is the text badger encrypts at the head of its key registry.
const registrySanity = "Hello Badger"

type keyCheck struct {
	Format string `json:"format"`
	MAC    string `json:"mac"`
}

func keyCheckMAC(key []byte) []byte {
	m := hmac.New(sha256.New, subkey(key, "custos/store/keycheck/v1"))
	m.Write([]byte(keyCheckText))
	return m.Sum(nil)
}

// verifyKeyCheck compares key with the verifier beside the data, naming a
// wrong key before badger is touched. It reports false when there is no
// verifier yet.
func verifyKeyCheck(dir string, key []byte) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, keyCheckFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: read key check: %w", err)
	}
	var kc keyCheck
	if err := json.Unmarshal(b, &kc); err != nil || kc.Format != keyCheckFormat {
		return false, fmt.Errorf("store: %s is malformed", keyCheckFile)
	}
	mac, err := hex.DecodeString(kc.MAC)
	if err != nil {
		return false, fmt.Errorf("store: %s is malformed", keyCheckFile)
	}
	if !hmac.Equal(mac, keyCheckMAC(key)) {
		return false, ErrWrongKey
	}
	return true, nil
}

func writeKeyCheck(dir string, key []byte) error {
	b, err := json.Marshal(keyCheck{Format: keyCheckFormat, MAC: hex.EncodeToString(keyCheckMAC(key))})
	if err != nil {
		return err
	}
	return writeFileSync(filepath.Join(dir, keyCheckFile), append(b, '\n'), 0o600)
}

// checkFormat writes the layout version into a new store and refuses a store
// of another version.
func (s *Store) checkFormat() error {
	return s.update(context.Background(), func(txn *badger.Txn) error {
		var v int
		err := s.getJSON(txn, recMeta, metaFormat, &v)
		if errors.Is(err, ErrNotFound) {
			return s.putJSON(txn, recMeta, metaFormat, formatVersion)
		}
		if err != nil {
			return err
		}
		if v != formatVersion {
			return fmt.Errorf("store: layout version %d, this build reads %d", v, formatVersion)
		}
		return nil
	})
}

// recordType tags each stored value, so a value read under the wrong kind
// of key is refused even before its authentication.
type recordType uint8

const (
	recMeta recordType = iota + 1
	recShare
	recPreParams
	recPreParamsTaken
	recSession
	recRequest
	recIdempotency
	recApproval
	recPolicyDoc
	recPolicyDocVersion
	recGrant
	recPolicyState
	recLedger
	recAudit
	recAuditHead
	recAuditByRequest
)

var recordNames = map[recordType]string{
	recMeta: "meta", recShare: "share", recPreParams: "preparams", recPreParamsTaken: "preparams-taken",
	recSession: "session", recRequest: "request", recIdempotency: "idempotency", recApproval: "approval",
	recPolicyDoc: "policy-document", recPolicyDocVersion: "policy-document-version", recGrant: "grant",
	recPolicyState: "policy-state", recLedger: "ledger", recAudit: "audit", recAuditHead: "audit-head",
	recAuditByRequest: "audit-by-request",
}

func (t recordType) String() string {
	if n, ok := recordNames[t]; ok {
		return n
	}
	return fmt.Sprintf("record-type-%d", uint8(t))
}

// frameVersion is the first byte of every stored value.
const frameVersion = 1

// seal frames and encrypts a value: version, record type, nonce, then the
// ciphertext, authenticated together with the storage key (as Vault's
// barrier binds the path), so a value copied under another key is refused.
func (s *Store) seal(rt recordType, key, plain []byte) []byte {
	ns := s.aead.NonceSize()
	out := make([]byte, 2+ns, 2+ns+len(plain)+s.aead.Overhead())
	out[0], out[1] = frameVersion, byte(rt)
	if _, err := rand.Read(out[2:]); err != nil {
		panic(fmt.Sprintf("store: read random nonce: %v", err))
	}
	return s.aead.Seal(out, out[2:2+ns], plain, additionalData(out[:2], key))
}

func additionalData(header, key []byte) []byte {
	ad := make([]byte, 0, 16+len(header)+len(key))
	ad = append(ad, "custos/store/v1\x00"...)
	ad = append(ad, header...)
	return append(ad, key...)
}

// open checks and decrypts a value stored under key.
func (s *Store) open(rt recordType, key, val []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(val) < 2+ns+s.aead.Overhead() {
		return nil, fmt.Errorf("%w: %q: value of %d bytes is too short", ErrCorrupt, key, len(val))
	}
	if val[0] != frameVersion {
		return nil, fmt.Errorf("%w: %q: frame version %d, want %d", ErrCorrupt, key, val[0], frameVersion)
	}
	if recordType(val[1]) != rt {
		return nil, fmt.Errorf("%w: %q: holds a %s record, want %s", ErrCorrupt, key, recordType(val[1]), rt)
	}
	plain, err := s.aead.Open(nil, val[2:2+ns], val[2+ns:], additionalData(val[:2], key))
	if err != nil {
		return nil, fmt.Errorf("%w: %q: value fails authentication (altered, or copied from another key)", ErrCorrupt, key)
	}
	return plain, nil
}

// get reads and opens the value under key; ErrNotFound if there is none.
func (s *Store) get(txn *badger.Txn, rt recordType, key []byte) ([]byte, error) {
	it, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("store: read %q: %w", key, err)
	}
	val, err := it.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("store: read %q: %w", key, err)
	}
	return s.open(rt, key, val)
}

func (s *Store) set(txn *badger.Txn, rt recordType, key, plain []byte) error {
	if err := txn.Set(key, s.seal(rt, key, plain)); err != nil {
		return fmt.Errorf("store: write %q: %w", key, err)
	}
	return nil
}

func (s *Store) getJSON(txn *badger.Txn, rt recordType, key []byte, v any) error {
	b, err := s.get(txn, rt, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %q: decode %s record: %v", ErrCorrupt, key, rt, err)
	}
	return nil
}

// jsonUnmarshal decodes a scanned value, naming its key if it cannot.
func jsonUnmarshal(key, plain []byte, v any) error {
	if err := json.Unmarshal(plain, v); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
	}
	return nil
}

func (s *Store) putJSON(txn *badger.Txn, rt recordType, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode %s record %q: %w", rt, key, err)
	}
	return s.set(txn, rt, key, b)
}

// exists reports whether key holds a value, without opening it.
func exists(txn *badger.Txn, key []byte) (bool, error) {
	_, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: read %q: %w", key, err)
	}
	return true, nil
}

// update runs fn in a read-write transaction and commits it (synced to
// disk), retrying on badger's conflict error: two concurrent check-and-set
// transactions on one key cannot both commit.
func (s *Store) update(ctx context.Context, fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrSealed
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		err := s.db.Update(fn)
		if errors.Is(err, badger.ErrConflict) && attempt < 100 {
			continue
		}
		return err
	}
}

// view runs fn in a read-only transaction.
func (s *Store) view(ctx context.Context, fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrSealed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return s.db.View(fn)
}

// scan calls fn with every key under prefix and its opened value, in key
// order.
func (s *Store) scan(txn *badger.Txn, rt recordType, prefix []byte, fn func(key, plain []byte) error) error {
	it := txn.NewIterator(badgerIteratorOptions(prefix))
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		key := it.Item().KeyCopy(nil)
		val, err := it.Item().ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("store: read %q: %w", key, err)
		}
		plain, err := s.open(rt, key, val)
		if err != nil {
			return err
		}
		if err := fn(key, plain); err != nil {
			return err
		}
	}
	return nil
}

// errStop ends a scan early; it never leaves the function that scans.
var errStop = errors.New("store: stop scan")

func badgerIteratorOptions(prefix []byte) badger.IteratorOptions {
	return badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 16}
}

func badgerKeysOnly(prefix []byte) badger.IteratorOptions {
	return badger.IteratorOptions{Prefix: prefix}
}

// Storage keys. Every record type lives under its own prefix.
var metaFormat = []byte("meta/format")

// badgerLogger sends badger's log lines to slog. Badger is chatty at info
// level (every compaction, every replay), so its info lines go to debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug, f, a) }

func (b badgerLogger) log(level slog.Level, f string, a []any) {
	if !b.l.Enabled(context.Background(), level) {
		return
	}
	b.l.Log(context.Background(), level, strings.TrimRight(fmt.Sprintf(f, a...), "\n"))
}

// badgerTxn is badger's transaction, named once for the record helpers.
type badgerTxn = badger.Txn
