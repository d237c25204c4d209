package x402

import (
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/ethereum/go-ethereum/common"
)

// ErrRefused: the Chooser refused every offered requirement.
var ErrRefused = errors.New("x402: payment refused")

// Chooser picks the requirement to pay from those offered, or refuses with
// an error. It must return one of reqs unchanged: the client pays the
// offered requirement with the returned Index and refuses anything else.
type Chooser func(reqs []Requirement) (Requirement, error)

// RefuseAll is the default Chooser: it pays nothing.
func RefuseAll(reqs []Requirement) (Requirement, error) {
	return Requirement{}, fmt.Errorf("%w: no chooser configured", ErrRefused)
}

// Limits are what Cap allows. Empty lists allow nothing.
type Limits struct {
	// Max is the largest amount, in atomic units of the asset, one payment
	// may have. Amounts of different assets are compared as plain integers,
	// so list assets of the same decimals (USDC on several chains).
	Max *big.Int
	// Payees are the allowed payTo addresses.
	Payees []common.Address
	// Assets are the allowed token contracts.
	Assets []common.Address
	// Networks are the allowed CAIP-2 networks, such as "eip155:8453".
	Networks []string
}

// Cap returns a Chooser that picks the cheapest offered requirement within
// l (the first offered among equals) and refuses, naming every offer's
// reason, when none is.
func Cap(l Limits) Chooser {
	return func(reqs []Requirement) (Requirement, error) {
		var best *Requirement
		var why []string
		for i := range reqs {
			r := &reqs[i]
			if err := l.allows(*r); err != nil {
				why = append(why, fmt.Sprintf("accepts[%d]: %v", r.Index, err))
				continue
			}
			if best == nil || r.Amount.Cmp(best.Amount) < 0 {
				best = r
			}
		}
		if best == nil {
			return Requirement{}, fmt.Errorf("%w: %s", ErrRefused, strings.Join(why, "; "))
		}
		return *best, nil
	}
}

func (l Limits) allows(r Requirement) error {
	switch {
	case !slices.Contains(l.Networks, r.Network):
		return fmt.Errorf("network %s is not allowed", r.Network)
	case !slices.Contains(l.Assets, r.Asset):
		return fmt.Errorf("asset %s is not allowed", r.Asset.Hex())
	case !slices.Contains(l.Payees, r.PayTo):
		return fmt.Errorf("payee %s is not allowed", r.PayTo.Hex())
	case l.Max == nil:
		return errors.New("no cap set")
	case r.Amount.Cmp(l.Max) > 0:
		return fmt.Errorf("amount %s is over the cap %s", r.Amount, l.Max)
	}
	return nil
}
