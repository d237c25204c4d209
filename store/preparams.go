package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/custos-wallet/custos/tss"
)

// ErrPreParamsTaken: a pre-parameter set that was taken once is offered to
// the store again.
var ErrPreParamsTaken = errors.New("store: pre-parameter set already taken")

var (
	preParamsPrefix = []byte("preparams/")
	preTakenPrefix  = []byte("preparams-taken/")
)

// preParamsID names a set by the hash of its serialised form; the hash of a
// secret reveals nothing of it.
func preParamsID(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

type storedPreParams struct {
	Added time.Time       `json:"added"`
	Set   json.RawMessage `json:"set"`
}

type takenPreParams struct {
	Taken time.Time `json:"taken"`
}

// PreParams returns the store as a tss.PreParamsStore for a tss.Pool. Save
// commits the new pool in one synced transaction before it returns, so a
// set the pool hands out is gone from disk first; a set removed once is
// remembered, and a Save that brings it back fails with ErrPreParamsTaken.
// A store serves one pool: two pools over one store could each hand out the
// same set, since Save replaces the whole pool rather than removing one set.
// TakePreParams has no such limit.
func (s *Store) PreParams() tss.PreParamsStore { return preParamsStore{s} }

type preParamsStore struct{ s *Store }

// Load implements tss.PreParamsStore.
func (p preParamsStore) Load(ctx context.Context) ([]*tss.PreParams, error) {
	var out []*tss.PreParams
	err := p.s.view(ctx, func(txn *badgerTxn) error {
		return p.s.scan(txn, recPreParams, preParamsPrefix, func(key, plain []byte) error {
			set, err := decodePreParams(key, plain)
			if err != nil {
				return err
			}
			out = append(out, set)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: load pre-parameters: %w", err)
	}
	return out, nil
}

func decodePreParams(key, plain []byte) (*tss.PreParams, error) {
	var sp storedPreParams
	if err := json.Unmarshal(plain, &sp); err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
	}
	defer clear(sp.Set)
	set, err := tss.UnmarshalPreParams(sp.Set)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
	}
	return set, nil
}

// Save implements tss.PreParamsStore: the stored pool becomes sets.
func (p preParamsStore) Save(ctx context.Context, sets []*tss.PreParams) error {
	s := p.s
	want := map[string][]byte{}
	for _, set := range sets {
		b, err := set.MarshalSecret()
		if err != nil {
			return fmt.Errorf("store: encode pre-parameters: %w", err)
		}
		want[preParamsID(b)] = b
	}
	defer func() {
		for _, b := range want {
			clear(b)
		}
	}()
	s.prepMu.Lock()
	defer s.prepMu.Unlock()
	now := time.Now().UTC()
	err := s.update(ctx, func(txn *badgerTxn) error {
		have := map[string]bool{}
		it := txn.NewIterator(badgerKeysOnly(preParamsPrefix))
		for it.Seek(preParamsPrefix); it.ValidForPrefix(preParamsPrefix); it.Next() {
			have[string(it.Item().Key()[len(preParamsPrefix):])] = true
		}
		it.Close()
		for id := range have {
			if _, keep := want[id]; !keep {
				if err := s.removePreParams(txn, id, now); err != nil {
					return err
				}
			}
		}
		for id, b := range want {
			if have[id] {
				continue
			}
			taken, err := exists(txn, append(preTakenPrefix, id...))
			if err != nil {
				return err
			}
			if taken {
				return fmt.Errorf("%w: %s", ErrPreParamsTaken, id[:16])
			}
			if err := s.putJSON(txn, recPreParams, append(preParamsPrefix, id...), storedPreParams{Added: now, Set: b}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: save pre-parameters: %w", err)
	}
	return nil
}

// removePreParams deletes a set and remembers that it was taken.
func (s *Store) removePreParams(txn *badgerTxn, id string, now time.Time) error {
	if err := txn.Delete(append(preParamsPrefix, id...)); err != nil {
		return fmt.Errorf("store: delete pre-parameters %s: %w", id[:16], err)
	}
	return s.putJSON(txn, recPreParamsTaken, append(preTakenPrefix, id...), takenPreParams{Taken: now})
}

// TakePreParams removes one stored set and returns it; the removal is
// committed and synced before it returns, so no restart can hand the set out
// again. It fails with ErrNotFound when the store holds none.
func (s *Store) TakePreParams(ctx context.Context) (*tss.PreParams, error) {
	s.prepMu.Lock()
	defer s.prepMu.Unlock()
	var set *tss.PreParams
	err := s.update(ctx, func(txn *badgerTxn) error {
		set = nil
		var key []byte
		err := s.scan(txn, recPreParams, preParamsPrefix, func(k, plain []byte) error {
			var err error
			if set, err = decodePreParams(k, plain); err != nil {
				return err
			}
			key = k
			return errStop
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		if set == nil {
			return fmt.Errorf("%w: no pre-parameters stored", ErrNotFound)
		}
		return s.removePreParams(txn, string(key[len(preParamsPrefix):]), time.Now().UTC())
	})
	if err != nil {
		return nil, fmt.Errorf("store: take pre-parameters: %w", err)
	}
	return set, nil
}

// CountPreParams is the number of sets stored.
func (s *Store) CountPreParams(ctx context.Context) (int, error) {
	n := 0
	err := s.view(ctx, func(txn *badgerTxn) error {
		it := txn.NewIterator(badgerKeysOnly(preParamsPrefix))
		defer it.Close()
		for it.Seek(preParamsPrefix); it.ValidForPrefix(preParamsPrefix); it.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// ErrPreParamsHeld: a pre-parameter set offered for import is in the store
// already.
var ErrPreParamsHeld = errors.New("store: pre-parameter set already held")

// ImportError says which of the sets given to ImportPreParams was refused.
type ImportError struct {
	Index int // into the sets given
	Err   error
}

func (e *ImportError) Error() string { return fmt.Sprintf("set %d: %v", e.Index, e.Err) }

func (e *ImportError) Unwrap() error { return e.Err }

// ImportPreParams adds sets made elsewhere to the stored pool, all of them
// or, on any refusal, none. It refuses a set the store holds already
// (ErrPreParamsHeld), one that was taken once (ErrPreParamsTaken), and a
// set given twice: pre-parameters are used once. Run it while no pool
// serves the store (the node is stopped): a running pool would not see the
// sets until it restarts.
func (s *Store) ImportPreParams(ctx context.Context, sets []*tss.PreParams) error {
	type entry struct {
		id string
		b  []byte
	}
	entries := make([]entry, 0, len(sets))
	defer func() {
		for _, e := range entries {
			clear(e.b)
		}
	}()
	first := map[string]int{}
	for i, set := range sets {
		b, err := set.MarshalSecret()
		if err != nil {
			return fmt.Errorf("store: import pre-parameters: %w", &ImportError{Index: i, Err: err})
		}
		id := preParamsID(b)
		entries = append(entries, entry{id, b})
		if j, dup := first[id]; dup {
			return fmt.Errorf("store: import pre-parameters: %w", &ImportError{Index: i, Err: fmt.Errorf("the same set as set %d", j)})
		}
		first[id] = i
	}
	s.prepMu.Lock()
	defer s.prepMu.Unlock()
	now := time.Now().UTC()
	err := s.update(ctx, func(txn *badgerTxn) error {
		for i, e := range entries {
			held, err := exists(txn, append(preParamsPrefix, e.id...))
			if err != nil {
				return err
			}
			if held {
				return &ImportError{Index: i, Err: fmt.Errorf("%w (%s)", ErrPreParamsHeld, e.id[:16])}
			}
			taken, err := exists(txn, append(preTakenPrefix, e.id...))
			if err != nil {
				return err
			}
			if taken {
				return &ImportError{Index: i, Err: fmt.Errorf("%w (%s)", ErrPreParamsTaken, e.id[:16])}
			}
			if err := s.putJSON(txn, recPreParams, append(preParamsPrefix, e.id...), storedPreParams{Added: now, Set: e.b}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: import pre-parameters: %w", err)
	}
	return nil
}
