package policy

import (
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Errors about approvals and reshare authorisations.
var (
	ErrApproval      = errors.New("policy: approval refused")
	ErrAuthorization = errors.New("policy: reshare authorisation refused")
)

// Approval is a guardian's consent to one signing request. It binds
// everything that makes the request what it is: the request id, the digest
// that will be signed, the chain, the key and an expiry, so it can approve
// nothing else. Nodes use each approval once (their stores remember it).
type Approval struct {
	RequestID ids.RequestID
	Digest    common.Hash
	ChainID   *big.Int
	Key       common.Address
	// Issued is when the guardian approved: a tier's delay runs from it,
	// so it is signed (an unsigned time could be moved back by anyone).
	Issued time.Time
	Expiry time.Time
}

// TypedData is what the guardian signs for the wallet wallet.
func (a Approval) TypedData(wallet common.Hash) apitypes.TypedData {
	return typedData(wallet, "Approval", apitypes.TypedDataMessage{
		"requestId": string(a.RequestID),
		"digest":    a.Digest.Hex(),
		"chainId":   bigOrZero(a.ChainID),
		"key":       a.Key.Hex(),
		"issued":    unix(a.Issued),
		"expiry":    unix(a.Expiry),
	})
}

// Denial is a guardian's refusal of a signing request, which ends it.
type Denial struct {
	RequestID ids.RequestID
	Digest    common.Hash
	Reason    string
	Issued    time.Time
}

// TypedData is what the guardian signs for the wallet wallet.
func (d Denial) TypedData(wallet common.Hash) apitypes.TypedData {
	return typedData(wallet, "Denial", apitypes.TypedDataMessage{
		"requestId": string(d.RequestID),
		"digest":    d.Digest.Hex(),
		"reason":    d.Reason,
		"issued":    unix(d.Issued),
	})
}

// SignedApproval is an approval with its guardian's signature.
type SignedApproval struct {
	Approval  Approval
	Signature []byte
}

// SignedDenial is a denial with its guardian's signature.
type SignedDenial struct {
	Denial    Denial
	Signature []byte
}

func bigOrZero(b *big.Int) *big.Int {
	if b == nil {
		return new(big.Int)
	}
	return b
}

// ApprovalTarget is what a set of approvals must approve: the request as
// the verifying node itself computed it.
type ApprovalTarget struct {
	RequestID ids.RequestID
	Digest    common.Hash
	ChainID   *big.Int
	Key       common.Address
}

// VerifyApprovals checks approvals for target at now against tier and
// returns the distinct guardians who approved, in the order given. Each
// approval must be signed by a guardian of p and bind target's request id,
// digest, chain id and key, and be unexpired; any that fails refuses the
// whole set (a forged approval is an attack to report, not noise). At least
// tier.Approvals distinct guardians must approve, and tier.Delay must have
// passed since the moment that many had: the delay runs from the
// tier.Approvals-th distinct guardian's approval, so one guardian who dates
// its own approval back cannot shorten it for the others.
func (p *Policy) VerifyApprovals(target ApprovalTarget, approvals []SignedApproval, tier TierSpec, now time.Time) ([]common.Address, error) {
	if len(approvals) > MaxSignatures {
		return nil, fmt.Errorf("%w: %d approvals, at most %d", ErrApproval, len(approvals), MaxSignatures)
	}
	var out []common.Address
	issued := map[common.Address]time.Time{}
	for i, sa := range approvals {
		a := sa.Approval
		switch {
		case a.RequestID != target.RequestID:
			return nil, fmt.Errorf("%w: approval %d is for request %s, not %s", ErrApproval, i, a.RequestID, target.RequestID)
		case a.Digest != target.Digest:
			return nil, fmt.Errorf("%w: approval %d is for digest %s, not %s", ErrApproval, i, a.Digest.Hex(), target.Digest.Hex())
		case a.ChainID == nil || target.ChainID == nil || a.ChainID.Cmp(target.ChainID) != 0:
			return nil, fmt.Errorf("%w: approval %d is for chain %v, not %v", ErrApproval, i, a.ChainID, target.ChainID)
		case a.Key != target.Key:
			return nil, fmt.Errorf("%w: approval %d is for key %s, not %s", ErrApproval, i, a.Key.Hex(), target.Key.Hex())
		case !now.Before(a.Expiry):
			return nil, fmt.Errorf("%w: approval %d expired at %s", ErrApproval, i, a.Expiry.UTC().Format(time.RFC3339))
		}
		signers, err := p.guardianSigners(a.TypedData(p.wallet), [][]byte{sa.Signature})
		if err != nil {
			return nil, errorf("%w: approval %d: %w", ErrApproval, i, err)
		}
		g := signers[0]
		if t, ok := issued[g]; !ok || a.Issued.Before(t) {
			issued[g] = a.Issued
		}
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	need := tier.Approvals
	if len(out) < need {
		return out, fmt.Errorf("%w: %d distinct guardian approvals, tier %s needs %d", ErrApproval, len(out), tier.Name, need)
	}
	if tier.Delay > 0 && need > 0 {
		times := make([]time.Time, 0, len(issued))
		for _, t := range issued {
			times = append(times, t)
		}
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		if ready := signedTime(times[need-1]).Add(tier.Delay); now.Before(ready) {
			return out, fmt.Errorf("%w: tier %s has a delay of %s after its %d approvals; signing may start at %s", ErrApproval, tier.Name, tier.Delay, need, fmtTime(ready))
		}
	}
	return out, nil
}

// VerifyDenial checks a guardian's denial of target.
func (p *Policy) VerifyDenial(target ApprovalTarget, d SignedDenial) (common.Address, error) {
	if d.Denial.RequestID != target.RequestID || d.Denial.Digest != target.Digest {
		return common.Address{}, fmt.Errorf("%w: denial is for request %s digest %s", ErrApproval, d.Denial.RequestID, d.Denial.Digest.Hex())
	}
	signers, err := p.guardianSigners(d.Denial.TypedData(p.wallet), [][]byte{d.Signature})
	if err != nil {
		return common.Address{}, errorf("%w: denial: %w", ErrApproval, err)
	}
	return signers[0], nil
}

// ReshareAuthorization is the guardian quorum's consent to move a key from
// one committee to another. Committees are written as "member:role"
// entries sorted by member, so a guardian's wallet shows exactly who will
// hold the key; every old member checks it before it deals.
type ReshareAuthorization struct {
	Key common.Address
	// Generation is the key's current generation; the reshare makes the
	// next one. It keeps an authorisation from being replayed later.
	Generation   uint32
	OldMembers   []string
	OldThreshold int
	NewMembers   []string
	NewThreshold int
	Expiry       time.Time
}

// CommitteeEntry is the form of one committee member in an authorisation.
func CommitteeEntry(member string, role ids.Role) string { return member + ":" + string(role) }

// TypedData is what each guardian signs for the wallet wallet.
func (r ReshareAuthorization) TypedData(wallet common.Hash) apitypes.TypedData {
	strs := func(ss []string) []interface{} {
		out := make([]interface{}, len(ss))
		for i, s := range ss {
			out[i] = s
		}
		return out
	}
	return typedData(wallet, "Reshare", apitypes.TypedDataMessage{
		"key":          r.Key.Hex(),
		"generation":   big.NewInt(int64(r.Generation)),
		"oldMembers":   strs(r.OldMembers),
		"oldThreshold": big.NewInt(int64(r.OldThreshold)),
		"newMembers":   strs(r.NewMembers),
		"newThreshold": big.NewInt(int64(r.NewThreshold)),
		"expiry":       unix(r.Expiry),
	})
}

// SignedReshare is an authorisation with guardian signatures.
type SignedReshare struct {
	Authorization ReshareAuthorization
	Signatures    [][]byte
}

// VerifyReshare checks that want (the reshare as the verifying old member
// itself understands it) is what the guardian quorum signed, unexpired at
// now.
func (p *Policy) VerifyReshare(want ReshareAuthorization, s SignedReshare, now time.Time) error {
	got := s.Authorization
	if err := sameReshare(want, got); err != nil {
		return errorf("%w: %v", ErrAuthorization, err)
	}
	if !now.Before(got.Expiry) {
		return fmt.Errorf("%w: expired at %s", ErrAuthorization, got.Expiry.UTC().Format(time.RFC3339))
	}
	signers, err := p.guardianSigners(got.TypedData(p.wallet), s.Signatures)
	if err != nil {
		return errorf("%w: %w", ErrAuthorization, err)
	}
	if len(signers) < p.doc.Quorum {
		return errorf("%w: %w: %d of %d guardians signed", ErrAuthorization, ErrQuorum, len(signers), p.doc.Quorum)
	}
	return nil
}

func sameReshare(want, got ReshareAuthorization) error {
	for _, ms := range [][]string{want.OldMembers, want.NewMembers, got.OldMembers, got.NewMembers} {
		if !slices.IsSorted(ms) {
			return fmt.Errorf("committee entries are not sorted")
		}
	}
	switch {
	case want.Key != got.Key:
		return fmt.Errorf("authorises key %s, not %s", got.Key.Hex(), want.Key.Hex())
	case want.Generation != got.Generation:
		return fmt.Errorf("authorises generation %d, the key is at %d", got.Generation, want.Generation)
	case !slices.Equal(want.OldMembers, got.OldMembers) || want.OldThreshold != got.OldThreshold:
		return fmt.Errorf("authorises old committee %d of [%s], not %d of [%s]", got.OldThreshold+1, strings.Join(got.OldMembers, " "), want.OldThreshold+1, strings.Join(want.OldMembers, " "))
	case !slices.Equal(want.NewMembers, got.NewMembers) || want.NewThreshold != got.NewThreshold:
		return fmt.Errorf("authorises new committee %d of [%s], not %d of [%s]", got.NewThreshold+1, strings.Join(got.NewMembers, " "), want.NewThreshold+1, strings.Join(want.NewMembers, " "))
	}
	return nil
}
