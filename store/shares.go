package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

// ErrExists: a record that is never overwritten is already there.
var ErrExists = errors.New("store: record exists")

var sharePrefix = []byte("share/")

// shareKey is "share/<key id>/<generation, 10 digits>": a key's generations
// sort in order under its prefix.
func shareKey(id ids.KeyID, gen uint32) []byte {
	return fmt.Appendf(nil, "%s%s/%010d", sharePrefix, id, gen)
}

func shareKeyPrefix(id ids.KeyID) []byte { return fmt.Appendf(nil, "%s%s/", sharePrefix, id) }

// PutShare stores a share under its key id and generation. A stored share
// is never overwritten (ErrExists): old generations stay until DeleteShare,
// so a reshare can keep the old share until the new committee has proved
// itself.
func (s *Store) PutShare(ctx context.Context, sh *tss.Share) error {
	k := sh.Key()
	b, err := sh.MarshalSecret()
	if err != nil {
		return fmt.Errorf("store: encode share of %s: %w", k.ID(), err)
	}
	defer clear(b)
	key := shareKey(k.ID(), k.Generation)
	err = s.update(ctx, func(txn *badgerTxn) error {
		ok, err := exists(txn, key)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("%w: %q", ErrExists, key)
		}
		return s.set(txn, recShare, key, b)
	})
	if err != nil {
		return fmt.Errorf("store: put share of %s generation %d: %w", k.ID(), k.Generation, err)
	}
	return nil
}

// shareReadHook, when set (by tests only), runs in Share between reading
// a record and keeping the share decoded from it.
var shareReadHook func()

// Share returns the share of key id in generation gen. A share record is
// never overwritten, so the share decoded from it is kept in memory until
// the record is deleted: every signing proposal and presign reads its
// key's share, and decrypting and decoding one costs about a millisecond.
// The share is immutable to its holders (its key description is copied
// out, and the engine copies its secret data before each session), so one
// decoded value serves every caller.
func (s *Store) Share(ctx context.Context, id ids.KeyID, gen uint32) (*tss.Share, error) {
	rec := string(shareKey(id, gen))
	s.sharesMu.Lock()
	sh, deletes := s.shares[rec], s.shareDeletes
	s.sharesMu.Unlock()
	if sh != nil {
		return sh, nil
	}
	err := s.view(ctx, func(txn *badgerTxn) error {
		b, err := s.get(txn, recShare, shareKey(id, gen))
		if err != nil {
			return err
		}
		defer clear(b)
		sh, err = tss.UnmarshalShare(b)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: share of %s generation %d: %w", id, gen, err)
	}
	if shareReadHook != nil {
		shareReadHook()
	}
	s.sharesMu.Lock()
	// A share deleted while it was read here is not put back: a deleted
	// share stays out of memory as well as off the disk.
	if s.shareDeletes == deletes {
		if s.shares == nil {
			s.shares = map[string]*tss.Share{}
		}
		s.shares[rec] = sh
	}
	s.sharesMu.Unlock()
	return sh, nil
}

// ShareGenerations lists the generations of key id this node holds a share
// of, oldest first.
func (s *Store) ShareGenerations(ctx context.Context, id ids.KeyID) ([]uint32, error) {
	prefix := shareKeyPrefix(id)
	var gens []uint32
	err := s.view(ctx, func(txn *badgerTxn) error {
		it := txn.NewIterator(badgerKeysOnly(prefix))
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			rest := string(it.Item().Key()[len(prefix):])
			g, err := strconv.ParseUint(rest, 10, 32)
			if err != nil || len(rest) != 10 {
				continue // a longer key id sharing this prefix cannot occur, but skip it
			}
			gens = append(gens, uint32(g))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: share generations of %s: %w", id, err)
	}
	return gens, nil
}

// LatestShare returns the share of key id with the highest generation.
func (s *Store) LatestShare(ctx context.Context, id ids.KeyID) (*tss.Share, error) {
	gens, err := s.ShareGenerations(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(gens) == 0 {
		return nil, fmt.Errorf("store: share of %s: %w", id, ErrNotFound)
	}
	return s.Share(ctx, id, gens[len(gens)-1])
}

// ShareKeys lists the public descriptions of the latest generation of every
// key this node holds a share of. A member answers it for every status
// query a coordinator makes before each signing session; the shares
// behind them are kept in memory once read (see Share).
func (s *Store) ShareKeys(ctx context.Context) ([]tss.KeyInfo, error) {
	type latest struct {
		id  ids.KeyID
		gen uint32
	}
	var keys []latest
	err := s.view(ctx, func(txn *badgerTxn) error {
		it := txn.NewIterator(badgerKeysOnly(sharePrefix))
		defer it.Close()
		for it.Seek(sharePrefix); it.ValidForPrefix(sharePrefix); it.Next() {
			k := string(it.Item().Key()[len(sharePrefix):])
			if len(k) < 11 {
				continue
			}
			id, err := ids.ParseKeyID(k[:len(k)-11])
			if err != nil {
				return fmt.Errorf("%w: share record %q: %v", ErrCorrupt, k, err)
			}
			gen, err := strconv.ParseUint(k[len(k)-10:], 10, 32)
			if err != nil {
				return fmt.Errorf("%w: share record %q: %v", ErrCorrupt, k, err)
			}
			// Generations sort in order (zero-padded): the last is the latest.
			if len(keys) > 0 && keys[len(keys)-1].id == id {
				keys[len(keys)-1].gen = uint32(gen)
			} else {
				keys = append(keys, latest{id, uint32(gen)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list shares: %w", err)
	}
	out := make([]tss.KeyInfo, 0, len(keys))
	for _, k := range keys {
		sh, err := s.Share(ctx, k.id, k.gen)
		if err != nil {
			return nil, err
		}
		out = append(out, sh.Key())
	}
	return out, nil
}

// DeleteShare removes the share of key id in generation gen, for good.
func (s *Store) DeleteShare(ctx context.Context, id ids.KeyID, gen uint32) error {
	key := shareKey(id, gen)
	err := s.update(ctx, func(txn *badgerTxn) error {
		ok, err := exists(txn, key)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %q", ErrNotFound, key)
		}
		return txn.Delete(key)
	})
	if err != nil {
		return fmt.Errorf("store: delete share of %s generation %d: %w", id, gen, err)
	}
	s.sharesMu.Lock()
	delete(s.shares, string(key))
	s.shareDeletes++
	s.sharesMu.Unlock()
	return nil
}
