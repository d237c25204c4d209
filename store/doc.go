// Package store is the encrypted, durable storage of a Custos node or
// coordinator, over github.com/dgraph-io/badger/v4: key shares, the
// pre-parameter pool, used session ids, the request and session journal,
// approvals, policy documents, grants and state, the budget ledger, and a
// hash-chained audit log.
//
// Everything is encrypted at rest twice over: badger encrypts its files with
// the 32-byte data key (AES-256, data keys rotated weekly under it), and each
// value is sealed with XChaCha20-Poly1305 under a subkey, with its storage
// key as associated data, so a value moved to another key or altered is
// refused with ErrCorrupt naming the key. The data key comes from a
// KeySource: a file, an environment variable, or a passphrase through
// Argon2id. Without it Open fails with ErrSealed; with another key it fails
// with ErrWrongKey.
//
// Every write is committed synchronously (SyncWrites): a call that returned
// has its effect on disk.
package store
