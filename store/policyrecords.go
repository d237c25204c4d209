package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
)

// ErrApprovalUsed: an approval consumed before.
var ErrApprovalUsed = errors.New("store: approval already used")

var approvalPrefix = []byte("approval/")

func approvalKey(id common.Hash) []byte {
	return append(append([]byte(nil), approvalPrefix...), id.Hex()...)
}

type consumedApproval struct {
	RequestID ids.RequestID `json:"request_id"`
	Consumed  time.Time     `json:"consumed"`
}

// ConsumeApproval marks the approval id (the EIP-712 hash of what the
// guardian signed, so another signature over the same approval is the same
// approval) as used for request, committed and synced before it returns. It
// fails with an error wrapping ErrApprovalUsed the second time, also after
// a restart.
func (s *Store) ConsumeApproval(ctx context.Context, id common.Hash, request ids.RequestID) error {
	key := approvalKey(id)
	err := s.update(ctx, func(txn *badgerTxn) error {
		var old consumedApproval
		err := s.getJSON(txn, recApproval, key, &old)
		if err == nil {
			return fmt.Errorf("%w (by request %s at %s)", ErrApprovalUsed, old.RequestID, old.Consumed.Format(time.RFC3339))
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		return s.putJSON(txn, recApproval, key, consumedApproval{RequestID: request, Consumed: time.Now().UTC()})
	})
	if err != nil {
		return fmt.Errorf("store: consume approval %s: %w", id.Hex(), err)
	}
	return nil
}

// ApprovalUsed reports whether approval id was consumed.
func (s *Store) ApprovalUsed(ctx context.Context, id common.Hash) (bool, error) {
	var used bool
	err := s.view(ctx, func(txn *badgerTxn) error {
		var err error
		used, err = exists(txn, approvalKey(id))
		return err
	})
	return used, err
}

// PolicyDocument is a signed policy document as stored: its version and hash
// as the caller computed them on verification.
type PolicyDocument struct {
	Version uint64                `json:"version"`
	Hash    common.Hash           `json:"hash"`
	Signed  policy.SignedDocument `json:"signed"`
	Stored  time.Time             `json:"stored"`
}

var (
	policyDocPrefix     = []byte("policydoc/h/")
	policyVersionPrefix = []byte("policydoc/v/")
)

func policyDocKey(h common.Hash) []byte {
	return append(append([]byte(nil), policyDocPrefix...), h.Hex()...)
}

func policyVersionKey(v uint64) []byte { return fmt.Appendf(nil, "%s%020d", policyVersionPrefix, v) }

// PutPolicyDocument stores a verified document under its hash and version.
// Storing the same document again is harmless; another document under a
// stored hash or version fails with ErrExists.
func (s *Store) PutPolicyDocument(ctx context.Context, d PolicyDocument) error {
	if d.Hash == (common.Hash{}) {
		return errors.New("store: put policy document: the hash is zero")
	}
	d.Stored = time.Now().UTC()
	err := s.update(ctx, func(txn *badgerTxn) error {
		var old PolicyDocument
		err := s.getJSON(txn, recPolicyDoc, policyDocKey(d.Hash), &old)
		if err == nil {
			if old.Version != d.Version || !bytes.Equal(old.Signed.Source, d.Signed.Source) {
				return fmt.Errorf("%w: another document under hash %s", ErrExists, d.Hash.Hex())
			}
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		var h common.Hash
		err = s.getJSON(txn, recPolicyDocVersion, policyVersionKey(d.Version), &h)
		if err == nil {
			return fmt.Errorf("%w: version %d is document %s", ErrExists, d.Version, h.Hex())
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := s.putJSON(txn, recPolicyDocVersion, policyVersionKey(d.Version), d.Hash); err != nil {
			return err
		}
		return s.putJSON(txn, recPolicyDoc, policyDocKey(d.Hash), d)
	})
	if err != nil {
		return fmt.Errorf("store: put policy document version %d: %w", d.Version, err)
	}
	return nil
}

// PolicyDocumentByHash returns the document with hash h.
func (s *Store) PolicyDocumentByHash(ctx context.Context, h common.Hash) (PolicyDocument, error) {
	var d PolicyDocument
	err := s.view(ctx, func(txn *badgerTxn) error { return s.getJSON(txn, recPolicyDoc, policyDocKey(h), &d) })
	if err != nil {
		return PolicyDocument{}, fmt.Errorf("store: policy document %s: %w", h.Hex(), err)
	}
	return d, nil
}

// PolicyDocumentByVersion returns the document of version v.
func (s *Store) PolicyDocumentByVersion(ctx context.Context, v uint64) (PolicyDocument, error) {
	var d PolicyDocument
	err := s.view(ctx, func(txn *badgerTxn) error {
		var h common.Hash
		if err := s.getJSON(txn, recPolicyDocVersion, policyVersionKey(v), &h); err != nil {
			return err
		}
		return s.getJSON(txn, recPolicyDoc, policyDocKey(h), &d)
	})
	if err != nil {
		return PolicyDocument{}, fmt.Errorf("store: policy document version %d: %w", v, err)
	}
	return d, nil
}

// LatestPolicyDocument returns the document with the highest version.
func (s *Store) LatestPolicyDocument(ctx context.Context) (PolicyDocument, error) {
	var d PolicyDocument
	err := s.view(ctx, func(txn *badgerTxn) error {
		opts := badgerKeysOnly(policyVersionPrefix)
		opts.Reverse = true
		it := txn.NewIterator(opts)
		defer it.Close()
		// In reverse, Seek goes to the last key at or before its argument.
		it.Seek(append(append([]byte(nil), policyVersionPrefix...), 0xff))
		if !it.ValidForPrefix(policyVersionPrefix) {
			return fmt.Errorf("%w: no policy document", ErrNotFound)
		}
		var h common.Hash
		if err := s.getJSON(txn, recPolicyDocVersion, it.Item().KeyCopy(nil), &h); err != nil {
			return err
		}
		return s.getJSON(txn, recPolicyDoc, policyDocKey(h), &d)
	})
	if err != nil {
		return PolicyDocument{}, fmt.Errorf("store: latest policy document: %w", err)
	}
	return d, nil
}

var grantPrefix = []byte("grant/")

func grantKey(id string) []byte { return append(append([]byte(nil), grantPrefix...), id...) }

// PutGrant stores a signed session grant under its id; a different grant
// under a stored id fails with ErrExists.
func (s *Store) PutGrant(ctx context.Context, g policy.SignedGrant) error {
	id := g.Grant.ID
	if id == "" {
		return errors.New("store: put grant: the grant id is empty")
	}
	err := s.update(ctx, func(txn *badgerTxn) error {
		var old policy.SignedGrant
		err := s.getJSON(txn, recGrant, grantKey(id), &old)
		if err == nil {
			if !bytes.Equal(old.Signature, g.Signature) {
				return fmt.Errorf("%w: another grant with id %s", ErrExists, id)
			}
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		return s.putJSON(txn, recGrant, grantKey(id), g)
	})
	if err != nil {
		return fmt.Errorf("store: put grant %s: %w", id, err)
	}
	return nil
}

// Grant returns the grant id.
func (s *Store) Grant(ctx context.Context, id string) (policy.SignedGrant, error) {
	var g policy.SignedGrant
	err := s.view(ctx, func(txn *badgerTxn) error { return s.getJSON(txn, recGrant, grantKey(id), &g) })
	if err != nil {
		return policy.SignedGrant{}, fmt.Errorf("store: grant %s: %w", id, err)
	}
	return g, nil
}

// Grants returns every stored grant, in id order.
func (s *Store) Grants(ctx context.Context) ([]policy.SignedGrant, error) {
	var out []policy.SignedGrant
	err := s.view(ctx, func(txn *badgerTxn) error {
		return s.scan(txn, recGrant, grantPrefix, func(key, plain []byte) error {
			var g policy.SignedGrant
			if err := jsonUnmarshal(key, plain, &g); err != nil {
				return err
			}
			out = append(out, g)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list grants: %w", err)
	}
	return out, nil
}

var policyStateKey = []byte("policystate")

// SavePolicyState stores a snapshot of the policy engine's state unless the
// stored one has the same or a higher Seq: a snapshot never replaces a newer
// one, whatever order concurrent Exports arrive in. It reports whether st
// was stored.
func (s *Store) SavePolicyState(ctx context.Context, st policy.State) (bool, error) {
	saved := false
	err := s.update(ctx, func(txn *badgerTxn) error {
		saved = false
		var old policy.State
		err := s.getJSON(txn, recPolicyState, policyStateKey, &old)
		if err == nil && old.Seq >= st.Seq {
			return nil
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		saved = true
		return s.putJSON(txn, recPolicyState, policyStateKey, st)
	})
	if err != nil {
		return false, fmt.Errorf("store: save policy state seq %d: %w", st.Seq, err)
	}
	return saved, nil
}

// PolicyState returns the stored snapshot; found is false when there is
// none yet.
func (s *Store) PolicyState(ctx context.Context) (st policy.State, found bool, err error) {
	err = s.view(ctx, func(txn *badgerTxn) error {
		err := s.getJSON(txn, recPolicyState, policyStateKey, &st)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return policy.State{}, false, fmt.Errorf("store: policy state: %w", err)
	}
	return st, found, nil
}
