package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

// AuditKind says what an audit entry records.
type AuditKind string

// The kinds of audit entries. A node appends one for every request it sees,
// the decision it makes (with the rule id), every approval it accepts or
// refuses, every session outcome and every signature it helps produce.
const (
	AuditRequest   AuditKind = "request"   // a request seen (Fields: digest, key, chain, agent, ...)
	AuditDecision  AuditKind = "decision"  // a policy decision; Decision and RuleID set
	AuditApproval  AuditKind = "approval"  // a guardian approval or denial, accepted or refused
	AuditSession   AuditKind = "session"   // a session's outcome (Fields: session, quorum, culprits)
	AuditSignature AuditKind = "signature" // a signature produced (Fields: digest, signature)
	AuditKey       AuditKind = "key"       // a key created, reshared or deleted
	AuditPolicy    AuditKind = "policy"    // a policy document, grant, freeze or unfreeze applied
)

// Entry is one audit log entry. Seq, PrevHash and Hash are assigned by
// AppendAudit.
type Entry struct {
	Seq       uint64            `json:"seq"`
	Time      time.Time         `json:"time"`
	Kind      AuditKind         `json:"kind"`
	RequestID ids.RequestID     `json:"request_id,omitempty"`
	Decision  string            `json:"decision,omitempty"`
	RuleID    string            `json:"rule_id,omitempty"`
	Fields    map[string]string `json:"fields,omitempty"`
	PrevHash  common.Hash       `json:"prev_hash"`
	Hash      common.Hash       `json:"hash"`
}

// AuditFormat is the version tag hashed into every entry.
const AuditFormat = "custos-audit/1"

// ComputeHash returns the entry's hash: SHA-256 over AuditFormat, Seq and
// Time (Unix nanoseconds) as 8-byte big-endian integers, then Kind,
// RequestID, Decision, RuleID, the number of fields and each field's key and
// value in key order, every string preceded by its length as an 8-byte
// big-endian integer, and last the 32-byte PrevHash. Anyone holding the
// entries can recompute the chain.
func (e Entry) ComputeHash() common.Hash {
	h := sha256.New()
	var n [8]byte
	u64 := func(v uint64) {
		binary.BigEndian.PutUint64(n[:], v)
		h.Write(n[:])
	}
	str := func(s string) {
		u64(uint64(len(s)))
		h.Write([]byte(s))
	}
	str(AuditFormat)
	u64(e.Seq)
	u64(uint64(e.Time.UnixNano()))
	str(string(e.Kind))
	str(string(e.RequestID))
	str(e.Decision)
	str(e.RuleID)
	u64(uint64(len(e.Fields)))
	for _, k := range slices.Sorted(maps.Keys(e.Fields)) {
		str(k)
		str(e.Fields[k])
	}
	h.Write(e.PrevHash[:])
	return common.BytesToHash(h.Sum(nil))
}

// Describe renders the entry for logs and CLI output.
func (e Entry) Describe() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "#%d %s %s", e.Seq, e.Time.UTC().Format(time.RFC3339Nano), e.Kind)
	if e.RequestID != "" {
		fmt.Fprintf(&b, " request %s", e.RequestID)
	}
	if e.Decision != "" {
		fmt.Fprintf(&b, " %s", e.Decision)
	}
	if e.RuleID != "" {
		fmt.Fprintf(&b, " rule %q", e.RuleID)
	}
	for _, k := range slices.Sorted(maps.Keys(e.Fields)) {
		fmt.Fprintf(&b, " %s=%s", k, e.Fields[k])
	}
	return b.String()
}

// ErrAuditBroken: the audit chain failed verification; the error is an
// *AuditError naming the first bad entry.
var ErrAuditBroken = errors.New("store: audit chain broken")

// AuditError names the first entry at which the audit chain fails.
type AuditError struct {
	Seq     uint64
	Problem string
	Err     error // the underlying error, if any
}

func (e *AuditError) Error() string {
	s := fmt.Sprintf("store: audit entry %d: %s", e.Seq, e.Problem)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap lets errors.Is find ErrAuditBroken and the cause.
func (e *AuditError) Unwrap() []error { return []error{ErrAuditBroken, e.Err} }

var (
	auditEntryPrefix = []byte("audit/e/")
	auditHeadKey     = []byte("audit/head")
	auditReqPrefix   = []byte("audit/r/")
)

func auditEntryKey(seq uint64) []byte { return fmt.Appendf(nil, "%s%020d", auditEntryPrefix, seq) }

func auditReqKey(id ids.RequestID, seq uint64) []byte {
	return fmt.Appendf(nil, "%s%s/%020d", auditReqPrefix, id, seq)
}

// parseSeq reads the 20-digit sequence number that ends a key after prefix.
func parseSeq(key, prefix []byte) (uint64, bool) {
	rest := key[len(prefix):]
	if len(rest) != 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(rest), 10, 64)
	return v, err == nil
}

type auditHead struct {
	Seq  uint64      `json:"seq"`
	Hash common.Hash `json:"hash"`
}

// AppendAudit appends e to the audit log, assigning its Seq, PrevHash and
// Hash (and Time, if zero), and returns it as stored. Appends are
// serialised; the entry and the new head are committed in one synced
// transaction.
func (s *Store) AppendAudit(ctx context.Context, e Entry) (Entry, error) {
	e, err := prepareEntry(e)
	if err != nil {
		return Entry{}, err
	}
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	var out Entry
	err = s.update(ctx, func(txn *badgerTxn) error {
		var err error
		out, err = s.appendAuditTxn(txn, e)
		return err
	})
	if err != nil {
		return Entry{}, fmt.Errorf("store: append audit entry: %w", err)
	}
	return out, nil
}

// prepareEntry checks an entry to append and fixes its time and fields.
func prepareEntry(e Entry) (Entry, error) {
	if e.Kind == "" {
		return Entry{}, errors.New("store: append audit entry: kind is empty")
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC().Round(0)
	e.Fields = maps.Clone(e.Fields)
	return e, nil
}

// appendAuditTxn appends e (its Time set) in txn; the caller holds
// auditMu until txn commits.
func (s *Store) appendAuditTxn(txn *badgerTxn, e Entry) (Entry, error) {
	var head auditHead
	if err := s.getJSON(txn, recAuditHead, auditHeadKey, &head); err != nil && !errors.Is(err, ErrNotFound) {
		return Entry{}, err
	}
	out := e
	out.Seq = head.Seq + 1
	out.PrevHash = head.Hash
	out.Hash = out.ComputeHash()
	if err := s.putJSON(txn, recAudit, auditEntryKey(out.Seq), out); err != nil {
		return Entry{}, err
	}
	if out.RequestID != "" {
		if err := s.set(txn, recAuditByRequest, auditReqKey(out.RequestID, out.Seq), nil); err != nil {
			return Entry{}, err
		}
	}
	return out, s.putJSON(txn, recAuditHead, auditHeadKey, auditHead{Seq: out.Seq, Hash: out.Hash})
}

// AuditHead returns the sequence number and hash of the last entry (zero for
// an empty log): what an operator records elsewhere to anchor the chain.
func (s *Store) AuditHead(ctx context.Context) (uint64, common.Hash, error) {
	var head auditHead
	err := s.view(ctx, func(txn *badgerTxn) error {
		err := s.getJSON(txn, recAuditHead, auditHeadKey, &head)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	})
	return head.Seq, head.Hash, err
}

// VerifyAudit checks the whole chain: entries numbered 1, 2, ... without a
// gap, each intact and stored under its own number, each hash recomputed,
// each linked to the hash of the one before, and the last one matching the
// head. It returns how many entries passed and, at the first bad entry, an
// *AuditError naming it.
func (s *Store) VerifyAudit(ctx context.Context) (int, error) {
	n := 0
	err := s.view(ctx, func(txn *badgerTxn) error {
		var head auditHead
		if err := s.getJSON(txn, recAuditHead, auditHeadKey, &head); err != nil && !errors.Is(err, ErrNotFound) {
			return &AuditError{Problem: "head record unreadable", Err: err}
		}
		var prev common.Hash
		want := uint64(1)
		it := txn.NewIterator(badgerIteratorOptions(auditEntryPrefix))
		defer it.Close()
		for it.Seek(auditEntryPrefix); it.ValidForPrefix(auditEntryPrefix); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			key := it.Item().KeyCopy(nil)
			seq, ok := parseSeq(key, auditEntryPrefix)
			if !ok {
				return &AuditError{Seq: want, Problem: fmt.Sprintf("stray key %q in the log", key)}
			}
			if seq != want {
				return &AuditError{Seq: want, Problem: fmt.Sprintf("missing (the next stored entry is %d)", seq)}
			}
			val, err := it.Item().ValueCopy(nil)
			if err != nil {
				return &AuditError{Seq: seq, Problem: "unreadable", Err: err}
			}
			plain, err := s.open(recAudit, key, val)
			if err != nil {
				return &AuditError{Seq: seq, Problem: "value altered", Err: err}
			}
			var e Entry
			if err := json.Unmarshal(plain, &e); err != nil {
				return &AuditError{Seq: seq, Problem: "undecodable", Err: err}
			}
			switch {
			case e.Seq != seq:
				return &AuditError{Seq: seq, Problem: fmt.Sprintf("holds entry %d", e.Seq)}
			case e.PrevHash != prev:
				return &AuditError{Seq: seq, Problem: fmt.Sprintf("previous hash %s does not match entry %d's hash %s", e.PrevHash.Hex(), seq-1, prev.Hex())}
			case e.ComputeHash() != e.Hash:
				return &AuditError{Seq: seq, Problem: fmt.Sprintf("contents do not match its hash %s", e.Hash.Hex())}
			}
			prev = e.Hash
			want++
			n++
		}
		last := want - 1
		switch {
		case head.Seq > last:
			return &AuditError{Seq: want, Problem: fmt.Sprintf("missing (the head is at entry %d)", head.Seq)}
		case head.Seq < last:
			return &AuditError{Seq: head.Seq + 1, Problem: fmt.Sprintf("beyond the head (at entry %d)", head.Seq)}
		case head.Hash != prev:
			return &AuditError{Seq: last, Problem: fmt.Sprintf("hash %s does not match the head's %s", prev.Hex(), head.Hash.Hex())}
		}
		return nil
	})
	return n, err
}

// AuditRange returns the entries with from <= seq <= to, in order; to 0
// means to the end.
func (s *Store) AuditRange(ctx context.Context, from, to uint64) ([]Entry, error) {
	var out []Entry
	err := s.view(ctx, func(txn *badgerTxn) error {
		it := txn.NewIterator(badgerIteratorOptions(auditEntryPrefix))
		defer it.Close()
		for it.Seek(auditEntryKey(max(from, 1))); it.ValidForPrefix(auditEntryPrefix); it.Next() {
			key := it.Item().KeyCopy(nil)
			seq, ok := parseSeq(key, auditEntryPrefix)
			if !ok || (to != 0 && seq > to) {
				break
			}
			val, err := it.Item().ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("store: read %q: %w", key, err)
			}
			plain, err := s.open(recAudit, key, val)
			if err != nil {
				return err
			}
			var e Entry
			if err := json.Unmarshal(plain, &e); err != nil {
				return fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: audit range %d..%d: %w", from, to, err)
	}
	return out, nil
}

// AuditByRequest returns the entries of one request, in order.
func (s *Store) AuditByRequest(ctx context.Context, id ids.RequestID) ([]Entry, error) {
	prefix := fmt.Appendf(nil, "%s%s/", auditReqPrefix, id)
	var out []Entry
	err := s.view(ctx, func(txn *badgerTxn) error {
		return s.scan(txn, recAuditByRequest, prefix, func(key, _ []byte) error {
			seq, ok := parseSeq(key, prefix)
			if !ok {
				return nil // a longer request id that shares this prefix
			}
			var e Entry
			if err := s.getJSON(txn, recAudit, auditEntryKey(seq), &e); err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: audit of request %s: %w", id, err)
	}
	return out, nil
}
