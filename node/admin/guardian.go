package admin

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
)

// Guardian signs a guardian's decisions (approvals, denials, freezes,
// unfreezes) with the guardian's identity key, over exactly the policy
// package's EIP-712 typed data: what it signs is what every node verifies.
// The guardian CLI signs through it, and tests use it to act as the CLI
// does.
type Guardian struct {
	key *ecdsa.PrivateKey
}

// NewGuardian wraps an identity key.
func NewGuardian(key *ecdsa.PrivateKey) *Guardian { return &Guardian{key: key} }

// Address is the guardian's identity account.
func (g *Guardian) Address() common.Address { return crypto.PubkeyToAddress(g.key.PublicKey) }

// String names the account and never the key.
func (g *Guardian) String() string { return "guardian " + g.Address().Hex() }

// OpenKeystore decrypts a go-ethereum keystore file (the V3 JSON a geth
// account, Clef or many wallets export).
func OpenKeystore(file, password string) (*Guardian, error) {
	b, err := readSmall(file, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	k, err := keystore.DecryptKey(b, password)
	if err != nil {
		if errors.Is(err, keystore.ErrDecrypt) {
			return nil, fmt.Errorf("keystore %s: wrong password", file)
		}
		return nil, fmt.Errorf("keystore %s: %w", file, err)
	}
	return &Guardian{key: k.PrivateKey}, nil
}

// NewKeystore makes a new identity key and writes it, encrypted with
// password, as a keystore file at file (mode 0600, never replacing an
// existing file). Light uses scrypt parameters cheap enough for tests;
// real identities want the standard ones.
func NewKeystore(file, password string, light bool) (*Guardian, error) {
	key, err := crypto.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	return ImportKeystore(file, password, key, light)
}

// ImportKeystore writes key as a keystore file, as NewKeystore does.
func ImportKeystore(file, password string, key *ecdsa.PrivateKey, light bool) (*Guardian, error) {
	if password == "" {
		return nil, errors.New("keystore: empty password")
	}
	if _, err := os.Lstat(file); err == nil {
		return nil, fmt.Errorf("keystore: %s exists; not replacing it", file)
	}
	n, p := keystore.StandardScryptN, keystore.StandardScryptP
	if light {
		n, p = keystore.LightScryptN, keystore.LightScryptP
	}
	dir, err := os.MkdirTemp(filepath.Dir(file), ".keystore-")
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	defer os.RemoveAll(dir)
	ks := keystore.NewKeyStore(dir, n, p)
	acc, err := ks.ImportECDSA(key, password)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	// A hard link places the file only if nothing is at file yet.
	if err := os.Link(acc.URL.Path, file); err != nil {
		return nil, fmt.Errorf("keystore: write %s: %w", file, err)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	return &Guardian{key: key}, nil
}

// ReadPassword reads a password file: its content without the final line
// break.
func ReadPassword(file string) (string, error) {
	b, err := readSmall(file, 4<<10)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("password file %s is empty", file)
	}
	return pw, nil
}

// signedTime is t as the typed data carries it: whole seconds, UTC, so the
// JSON form says exactly what was signed.
func signedTime(t time.Time) time.Time { return time.Unix(t.Unix(), 0).UTC() }

// Approve signs an approval of p (as the guardian's node decoded it) for
// the wallet wallet, issued at now and valid for validFor, but never
// beyond the request's own expiry.
func (g *Guardian) Approve(wallet common.Hash, p *PendingRequest, now time.Time, validFor time.Duration) (api.Approval, error) {
	if validFor <= 0 {
		return api.Approval{}, fmt.Errorf("approve %s: expiry %s is not positive", p.RequestID, validFor)
	}
	issued := signedTime(now)
	expiry := signedTime(now.Add(validFor))
	if !p.Expiry.IsZero() {
		if !p.Expiry.After(now) {
			return api.Approval{}, fmt.Errorf("approve %s: the request expired at %s", p.RequestID, p.Expiry.UTC().Format(time.RFC3339))
		}
		if re := signedTime(p.Expiry); expiry.After(re) {
			expiry = re
		}
	}
	if !expiry.After(issued) {
		return api.Approval{}, fmt.Errorf("approve %s: the request expires within a second", p.RequestID)
	}
	// The tier's delay runs from the approval: one that expires before the
	// delay has passed can never be used.
	if d := time.Duration(p.Delay); d > 0 && !expiry.After(issued.Add(d)) {
		return api.Approval{}, fmt.Errorf("approve %s: the %s tier waits %s after approval, but this approval would expire %s after it is issued (a longer expiry, or the request's own expiry, is needed)",
			p.RequestID, p.Tier, d, expiry.Sub(issued))
	}
	a := api.Approval{RequestID: p.RequestID, Digest: p.Digest, ChainID: p.ChainID, Key: p.Key, Issued: issued, Expiry: expiry}
	sig, err := policy.SignTypedData(g.key, a.Policy().Approval.TypedData(wallet))
	if err != nil {
		return api.Approval{}, fmt.Errorf("approve %s: %w", p.RequestID, err)
	}
	a.Signature = sig
	return a, nil
}

// Deny signs a denial of p with reason.
func (g *Guardian) Deny(wallet common.Hash, p *PendingRequest, reason string, now time.Time) (api.Denial, error) {
	d := api.Denial{RequestID: p.RequestID, Digest: p.Digest, Reason: reason, Issued: signedTime(now)}
	sig, err := policy.SignTypedData(g.key, d.Policy().Denial.TypedData(wallet))
	if err != nil {
		return api.Denial{}, fmt.Errorf("deny %s: %w", p.RequestID, err)
	}
	d.Signature = sig
	return d, nil
}

// Freeze signs a freeze of target.
func (g *Guardian) Freeze(wallet common.Hash, target policy.Target, reason string, now time.Time) (api.Freeze, error) {
	f := api.Freeze{Target: target, Reason: reason, Issued: signedTime(now)}
	pf, _ := f.Policy()
	sig, err := policy.SignTypedData(g.key, pf.TypedData(wallet))
	if err != nil {
		return api.Freeze{}, fmt.Errorf("freeze %s: %w", target, err)
	}
	f.Signature = sig
	return f, nil
}

// NewUnfreeze is the unfreeze of the freeze id of target, issued at now,
// without signatures yet.
func NewUnfreeze(target policy.Target, freeze common.Hash, now time.Time) api.Unfreeze {
	return api.Unfreeze{Target: target, Freeze: freeze, Issued: signedTime(now)}
}

// SignUnfreeze adds the guardian's signature to u, which other guardians
// may have signed already (the same target, freeze and issued time). A
// second signature by the same guardian is refused: it would not count.
func (g *Guardian) SignUnfreeze(wallet common.Hash, u api.Unfreeze) (api.Unfreeze, error) {
	pu, _ := u.Policy()
	pu.Issued = signedTime(pu.Issued)
	td := pu.TypedData(wallet)
	me := g.Address()
	for i, s := range u.Signatures {
		if who, err := policy.RecoverTypedData(td, s); err == nil && who == me {
			return api.Unfreeze{}, fmt.Errorf("unfreeze %s: signature %d is already %s's", u.Target, i, me.Hex())
		}
	}
	sig, err := policy.SignTypedData(g.key, td)
	if err != nil {
		return api.Unfreeze{}, fmt.Errorf("unfreeze %s: %w", u.Target, err)
	}
	out := u
	out.Issued = pu.Issued
	out.Signatures = append(append([]hexutil.Bytes(nil), u.Signatures...), sig)
	return out, nil
}

// UnfreezeSigners recovers who signed u for the wallet wallet, in order; a
// signature that recovers to no account is an error naming it.
func UnfreezeSigners(wallet common.Hash, u api.Unfreeze) ([]common.Address, error) {
	pu, sigs := u.Policy()
	td := pu.TypedData(wallet)
	out := make([]common.Address, len(sigs))
	for i, s := range sigs {
		who, err := policy.RecoverTypedData(td, s)
		if err != nil {
			return nil, fmt.Errorf("unfreeze signature %d: %w", i, err)
		}
		out[i] = who
	}
	return out, nil
}

// FreezeID is the id of the freeze f makes for the wallet wallet, which an
// unfreeze names.
func FreezeID(wallet common.Hash, f api.Freeze) (common.Hash, error) {
	pf, _ := f.Policy()
	return pf.ID(wallet)
}

// readSmall reads a file of at most limit bytes: a keystore, a password or
// a token is small, and a path mistyped to something large is an error,
// not a read of it all.
func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// SignDocument adds the guardian's signature to d, a policy document of
// the wallet wallet, which other guardians may have signed already. For a
// genesis document wallet is the document's own hash. The source is
// parsed (with the policy package's bounds) to compute what is signed; a
// second signature by the same guardian is refused.
func (g *Guardian) SignDocument(wallet common.Hash, d api.PolicyDocument) (api.PolicyDocument, error) {
	doc, err := policy.ParseDocument([]byte(d.Source))
	if err != nil {
		return api.PolicyDocument{}, err
	}
	td := policy.DocumentTypedData(wallet, doc)
	me := g.Address()
	for i, s := range d.Signatures {
		if who, err := policy.RecoverTypedData(td, s); err == nil && who == me {
			return api.PolicyDocument{}, fmt.Errorf("policy document v%d: signature %d is already %s's", doc.Version, i, me.Hex())
		}
	}
	sig, err := policy.SignTypedData(g.key, td)
	if err != nil {
		return api.PolicyDocument{}, fmt.Errorf("policy document v%d: %w", doc.Version, err)
	}
	return api.PolicyDocument{Source: d.Source, Signatures: append(append([]hexutil.Bytes(nil), d.Signatures...), sig)}, nil
}

// DocumentSigners recovers who signed d for the wallet wallet, in order; a
// signature that recovers to no account is an error naming it.
func DocumentSigners(wallet common.Hash, d api.PolicyDocument) ([]common.Address, error) {
	doc, err := policy.ParseDocument([]byte(d.Source))
	if err != nil {
		return nil, err
	}
	td := policy.DocumentTypedData(wallet, doc)
	out := make([]common.Address, len(d.Signatures))
	for i, s := range d.Signatures {
		who, err := policy.RecoverTypedData(td, s)
		if err != nil {
			return nil, fmt.Errorf("policy document signature %d: %w", i, err)
		}
		out[i] = who
	}
	return out, nil
}

// SignReshare adds the guardian's signature to r, a reshare authorisation
// for the wallet wallet that other guardians may have signed already (the
// same key, generation, committees and expiry). Its expiry is taken in
// whole seconds, as the typed data carries it. A second signature by the
// same guardian is refused.
func (g *Guardian) SignReshare(wallet common.Hash, r api.Reshare) (api.Reshare, error) {
	r.Expiry = signedTime(r.Expiry)
	td := r.Policy().Authorization.TypedData(wallet)
	me := g.Address()
	for i, s := range r.Signatures {
		if who, err := policy.RecoverTypedData(td, s); err == nil && who == me {
			return api.Reshare{}, fmt.Errorf("reshare of %s: signature %d is already %s's", r.Key.Hex(), i, me.Hex())
		}
	}
	sig, err := policy.SignTypedData(g.key, td)
	if err != nil {
		return api.Reshare{}, fmt.Errorf("reshare of %s: %w", r.Key.Hex(), err)
	}
	out := r
	out.Signatures = append(append([]hexutil.Bytes(nil), r.Signatures...), sig)
	return out, nil
}

// ReshareSigners recovers who signed r for the wallet wallet, in order; a
// signature that recovers to no account is an error naming it.
func ReshareSigners(wallet common.Hash, r api.Reshare) ([]common.Address, error) {
	td := r.Policy().Authorization.TypedData(wallet)
	out := make([]common.Address, len(r.Signatures))
	for i, s := range r.Signatures {
		who, err := policy.RecoverTypedData(td, s)
		if err != nil {
			return nil, fmt.Errorf("reshare signature %d: %w", i, err)
		}
		out[i] = who
	}
	return out, nil
}

// CommitteeEntries is committee c in a reshare authorisation's form:
// policy.CommitteeEntry strings sorted as strings, exactly as every old
// member builds them from its own share before it compares.
func CommitteeEntries(c tss.Committee) []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = policy.CommitteeEntry(string(m.ID), m.Role)
	}
	sort.Strings(out)
	return out
}
