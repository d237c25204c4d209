package policy

import (
	"fmt"

	"github.com/custos-wallet/custos/chain"
)

// compileImplicit adds to an allowing rule the narrowing that a careless
// rule must not be able to skip (docs/policy.md, "Safety narrowing"). It
// reads what the conditions before it in the table resolved: the selectors
// the rule lists, whether domain.chain allows none, and the to and
// domain.contract sets.
func compileImplicit(b *ruleBuild) error {
	if b.deny {
		return nil
	}
	w, p := b.w, b.p
	hasTo, hasRecipient, hasDelegate := len(w.To) > 0, len(w.Recipient) > 0, len(w.Delegate) > 0
	// Conditions about what typed data moves say nothing about typed
	// data nobody decoded, unless the rule names its type and contract.
	aboutAssets := hasRecipient || len(w.NotRecipient) > 0 || len(w.Token) > 0 || w.AmountMax != ""
	namesTyped := len(w.PrimaryType) > 0 && w.Domain != nil && len(w.Domain.Contract) > 0
	// A grant rule defers scope to the grant, which the engine has
	// already checked: destinations, selectors and recipients.
	underGrant := w.Grant != nil && *w.Grant
	explicitSels, chainless, toSet, contractSet := b.explicitSels, b.chainless, b.toSet, b.contractSet
	b.add("implicit", func(c *evalCtx) (bool, string) {
		if c.req.Kind == KindTransaction {
			tx := c.req.Tx
			if len(tx.Authorizations) > 0 && !hasDelegate {
				return false, fmt.Sprintf("EIP-7702 authorization delegates to %s and the rule names no delegate", shortAddr(tx.Authorizations[0].Delegate))
			}
			if tx.Call != nil && !tx.Call.Known() && !hasTo && !underGrant {
				if tx.To == nil {
					return false, "contract creation and the rule names no destination"
				}
				return false, fmt.Sprintf("calldata with unknown selector 0x%x to %s and the rule names no destination", tx.Call.Selector, shortAddr(*tx.To))
			}
			// A token contract (or Permit2) moves that token by methods
			// this package does not decode (transferAndCall, ERC-777
			// send, setApprovalForAll, multicall...): naming the
			// contract is not enough, the rule must list the selector.
			if tx.Call != nil && !tx.Call.Known() && tx.To != nil && !underGrant && !explicitSels[tx.Call.Selector] {
				if t, ok := p.tokenAddr[*tx.To]; ok {
					return false, fmt.Sprintf("calldata with undecoded selector 0x%x to token %s and the rule does not list the selector", tx.Call.Selector, t.symbol)
				}
				if *tx.To == chain.Permit2Address {
					return false, fmt.Sprintf("calldata with undecoded selector 0x%x to Permit2 and the rule does not list the selector", tx.Call.Selector)
				}
			}
		}
		if c.req.Kind == KindTypedData {
			td := c.req.Typed
			if td.ChainID == nil && !chainless {
				return false, "typed data without a domain chain id and the rule does not allow it (domain.chain: none)"
			}
			if td.VerifyingContract == c.req.Key && !(toSet != nil && toSet.has(c.req.Key)) && !(contractSet != nil && contractSet.has(c.req.Key)) {
				return false, fmt.Sprintf("typed data verified by the key's own account %s and the rule does not name it", shortAddr(c.req.Key))
			}
			if !td.Decoded && aboutAssets && !namesTyped {
				return false, fmt.Sprintf("typed data %s is not decoded, so its recipients and amounts are unknown; the rule would need primary_type and domain.contract", td.PrimaryType)
			}
		}
		if !hasRecipient && !underGrant {
			for _, sp := range c.spends {
				if !sp.IsNative() {
					return false, fmt.Sprintf("%s of %s to %s and the rule names no recipient", sp.Kind, p.formatSpendAmount(sp), shortAddr(sp.To))
				}
			}
		}
		return true, ""
	})
	return nil
}
