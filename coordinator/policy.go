package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// policyChainID is the journal record listing, in order, the versions of
// the documents the coordinator verified: the genesis first, then each
// replacement, so a restart verifies them again the way a node does.
const policyChainID ids.RequestID = "pol:chain"

// policyHolder keeps the latest guardian-signed policy the coordinator
// verified. The coordinator uses it for the agent registry (who may submit
// a request) and to check approvals, denials and freezes before it passes
// them on; every node verifies them again itself.
type policyHolder struct {
	genesis policy.Genesis
	st      *store.Store

	mu sync.Mutex
	// guarded by mu
	engine   *policy.Engine
	doc      store.PolicyDocument
	versions []uint64
}

func loadPolicy(ctx context.Context, st *store.Store, g policy.Genesis) (*policyHolder, error) {
	h := &policyHolder{genesis: g, st: st}
	rec, err := st.Request(ctx, policyChainID)
	if errors.Is(err, store.ErrNotFound) {
		return h, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	var versions []uint64
	if err := json.Unmarshal(rec.Body, &versions); err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	for _, v := range versions {
		d, err := st.PolicyDocumentByVersion(ctx, v)
		if err != nil {
			return nil, fmt.Errorf("load policy version %d: %w", v, err)
		}
		if _, err := h.applyLocked(d.Signed); err != nil {
			return nil, fmt.Errorf("verify stored policy version %d: %w", v, err)
		}
		h.doc = d
	}
	h.versions = versions
	return h, nil
}

// current returns the current policy, nil before the first document.
func (h *policyHolder) current() *policy.Policy {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.engine == nil {
		return nil
	}
	return h.engine.Policy()
}

// document returns the current stored document.
func (h *policyHolder) document() (store.PolicyDocument, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.doc, h.engine != nil
}

func (h *policyHolder) applyLocked(sd policy.SignedDocument) (*policy.Policy, error) {
	if h.engine == nil {
		p, err := policy.VerifyDocument(sd, h.genesis)
		if err != nil {
			return nil, err
		}
		h.engine = policy.NewEngine(p, policy.NewMemLedger())
		return p, nil
	}
	if err := h.engine.ApplyDocument(sd); err != nil {
		return nil, err
	}
	return h.engine.Policy(), nil
}

// accept verifies sd (against the genesis pin for the first document,
// as a replacement of the current one after), stores it and makes it
// current. The same document as the current one again is accepted as it
// is (to push it to members that missed it). fresh is false then.
func (h *policyHolder) accept(ctx context.Context, sd policy.SignedDocument, now time.Time) (doc store.PolicyDocument, fresh bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.engine != nil {
		p, err := policy.ParseAndCompile(sd.Source)
		if err == nil && p.Hash() == h.doc.Hash {
			return h.doc, false, nil
		}
	}
	p, err := h.applyLocked(sd)
	if err != nil {
		return store.PolicyDocument{}, false, err
	}
	d := store.PolicyDocument{Version: p.Version(), Hash: p.Hash(), Signed: sd, Stored: now}
	if err := h.st.PutPolicyDocument(ctx, d); err != nil {
		return store.PolicyDocument{}, false, fmt.Errorf("store policy: %w", err)
	}
	versions := append(slices.Clone(h.versions), d.Version)
	body, _ := json.Marshal(versions)
	if len(h.versions) == 0 {
		_, _, err = h.st.CreateRequest(ctx, store.RequestRecord{ID: policyChainID, State: "policy", Body: body, Created: now, Updated: now})
	} else {
		_, err = h.st.UpdateRequest(ctx, policyChainID, func(r *store.RequestRecord) error { r.Body = body; return nil })
	}
	if err != nil {
		return store.PolicyDocument{}, false, fmt.Errorf("store policy chain: %w", err)
	}
	h.versions = versions
	h.doc = d
	return d, true, nil
}

// guardianOf checks that sig over td is by a guardian of p.
func guardianOf(p *policy.Policy, td apitypes.TypedData, sig []byte) (common.Address, error) {
	a, err := policy.RecoverTypedData(td, sig)
	if err != nil {
		return common.Address{}, err
	}
	if !slices.Contains(p.Guardians(), a) {
		return common.Address{}, fmt.Errorf("signer %s is not a guardian of policy version %d", a, p.Version())
	}
	return a, nil
}

// checkFreeze checks that one guardian of p signed f.
func checkFreeze(p *policy.Policy, f policy.Freeze, sig []byte) error {
	if _, err := guardianOf(p, f.TypedData(p.WalletID()), sig); err != nil {
		return fmt.Errorf("freeze: %w", err)
	}
	return nil
}

// checkUnfreeze checks that at least the policy's quorum of distinct
// guardians signed u.
func checkUnfreeze(p *policy.Policy, u policy.Unfreeze, sigs [][]byte) error {
	seen := map[common.Address]bool{}
	for i, s := range sigs {
		a, err := guardianOf(p, u.TypedData(p.WalletID()), s)
		if err != nil {
			return fmt.Errorf("unfreeze signature %d: %w", i, err)
		}
		seen[a] = true
	}
	if len(seen) < p.Quorum() {
		return fmt.Errorf("unfreeze signed by %d distinct guardians, the policy needs %d", len(seen), p.Quorum())
	}
	return nil
}

// checkRevocation checks that one guardian of p signed r.
func checkRevocation(p *policy.Policy, r policy.Revocation, sig []byte) error {
	if _, err := guardianOf(p, r.TypedData(p.WalletID()), sig); err != nil {
		return fmt.Errorf("revocation of grant %s: %w", r.GrantID, err)
	}
	return nil
}
