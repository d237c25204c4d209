package rpc

import (
	"context"
	"fmt"

	"github.com/custos-wallet/custos/chain"
)

// Prepare checks and fills a as eth_sendTransaction would (from, chain
// id, fees and gas from upstream; the nonce, if left out, is the
// address's pending nonce upstream) and returns the unsigned transaction
// as a payload, without signing or reserving the nonce: what a dry run
// ("would this be allowed?") evaluates.
func (s *Server) Prepare(ctx context.Context, a TransactionArgs) (*chain.Payload, error) {
	from, err := s.check(ctx, &a)
	if err != nil {
		return nil, err
	}
	if err := s.fill(ctx, &a); err != nil {
		return nil, err
	}
	var nonce uint64
	if a.Nonce != nil {
		nonce = uint64(*a.Nonce)
	} else if nonce, err = s.eth.PendingNonceAt(ctx, from); err != nil {
		return nil, fmt.Errorf("upstream pending nonce of %s: %w", from.Hex(), err)
	}
	tx := s.unsigned(&a, nonce)
	raw, err := tx.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode transaction: %w", err)
	}
	p, err := chain.ParseTransaction(s.chainID, raw)
	if err != nil {
		return nil, invalidf("%w", err)
	}
	return p, nil
}
