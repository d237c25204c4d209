package policy

import "fmt"

// ApplyDocument replaces the current policy with a signed document. The
// document must carry exactly the next version and name the current
// document's hash in replaces. A quorum of the current guardians (and of
// the new document's own guardians, if it changes them) may make any
// change; a single current guardian may only tighten (see docs/policy.md).
func (e *Engine) ApplyDocument(sd SignedDocument) error {
	if err := checkSignatureCount(sd.Signatures); err != nil {
		return errorf("apply document: %w", err)
	}
	np, err := ParseAndCompile(sd.Source)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	cur := e.policy
	if np.Version() <= cur.Version() {
		return fmt.Errorf("%w: version %d is not newer than current version %d", ErrRollback, np.Version(), cur.Version())
	}
	if np.doc.Replaces != cur.hash.Hex() {
		return fmt.Errorf("%w: it replaces %q, the current document is %s", ErrRollback, np.doc.Replaces, cur.hash.Hex())
	}
	// Versions grow one at a time: a jump (to 2^64-1, say) would leave no
	// version for the next document, locking the policy for good.
	if np.Version() != cur.Version()+1 {
		return fmt.Errorf("%w: version %d does not follow current version %d", ErrRollback, np.Version(), cur.Version())
	}
	np.wallet = cur.wallet
	td := DocumentTypedData(np.wallet, np.doc)
	signers, err := cur.guardianSigners(td, sd.Signatures)
	if err != nil {
		return errorf("apply document v%d: %w", np.Version(), err)
	}
	if len(signers) == 0 {
		return errorf("apply document v%d: %w: none", np.Version(), ErrQuorum)
	}
	if len(signers) >= cur.doc.Quorum {
		if !sameGuardians(cur, np) {
			own, err := np.guardianSigners(td, sd.Signatures)
			if err != nil || len(own) < np.doc.Quorum {
				return errorf("apply document v%d: %w of the new guardian set (%d needed)", np.Version(), ErrQuorum, np.doc.Quorum)
			}
		}
		e.policy = np
		return nil
	}
	if err := checkTightening(cur, np); err != nil {
		return errorf("apply document v%d: %d of %d guardian signatures suffice only to tighten: %w", np.Version(), len(signers), cur.doc.Quorum, err)
	}
	e.policy = np
	return nil
}
