package policy

import (
	"crypto/ecdsa"
	"fmt"
	"math/big"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Grant lets an agent act within narrow bounds for a while, signed by
// one guardian. A request that presents a grant must stay inside it, and
// the rules must still allow it (typically with a `grant: true` rule).
type Grant struct {
	ID        string
	Agent     ids.AgentID
	Key       common.Address
	NotBefore time.Time
	Expiry    time.Time
	// ValuePerTx and ValueTotal cap ether; zero allows none.
	ValuePerTx, ValueTotal *big.Int
	// Token is the one ERC-20 the grant may move (zero: none), capped per
	// transaction and in total.
	Token                    common.Address
	AmountPerTx, AmountTotal *big.Int
	// Destinations are the only transaction destinations and recipients.
	Destinations []common.Address
	// Selectors are the only methods that may be called; none allows only
	// plain transfers without calldata.
	Selectors [][4]byte
	// MaxCount caps the number of requests over the grant's life.
	MaxCount uint64
	// ChainID, if set, is the only chain the grant covers.
	ChainID *big.Int
}

// SignedGrant is a grant with its guardian signature.
type SignedGrant struct {
	Grant     Grant
	Signature []byte
}

func orZero(v *big.Int) *big.Int {
	if v == nil {
		return new(big.Int)
	}
	return v
}

// TypedData is what the guardian signs for the wallet wallet. A chainId
// of 0 means every chain.
func (g *Grant) TypedData(wallet common.Hash) apitypes.TypedData {
	dests := make([]any, len(g.Destinations))
	for i, d := range g.Destinations {
		dests[i] = d.Hex()
	}
	sels := make([]any, len(g.Selectors))
	for i, s := range g.Selectors {
		sels[i] = hexutil.Encode(s[:])
	}
	return typedData(wallet, "Grant", apitypes.TypedDataMessage{
		"id":           g.ID,
		"agent":        string(g.Agent),
		"key":          g.Key.Hex(),
		"notBefore":    unix(g.NotBefore),
		"expiry":       unix(g.Expiry),
		"valuePerTx":   orZero(g.ValuePerTx),
		"valueTotal":   orZero(g.ValueTotal),
		"token":        g.Token.Hex(),
		"amountPerTx":  orZero(g.AmountPerTx),
		"amountTotal":  orZero(g.AmountTotal),
		"destinations": dests,
		"selectors":    sels,
		"maxCount":     new(big.Int).SetUint64(g.MaxCount),
		"chainId":      orZero(g.ChainID),
	})
}

// SignGrant signs g, a grant of the wallet wallet, with a guardian identity
// key.
func SignGrant(key *ecdsa.PrivateKey, wallet common.Hash, g Grant) (*SignedGrant, error) {
	sig, err := SignTypedData(key, g.TypedData(wallet))
	if err != nil {
		return nil, err
	}
	return &SignedGrant{Grant: g, Signature: sig}, nil
}

// checkGrant verifies the grant a request presents and that the request is
// inside it. It returns the ledger entries that track the grant's totals,
// or a reason for refusal.
func (e *Engine) checkGrant(p *Policy, c *evalCtx) ([]Entry, string) {
	sg := c.req.Grant
	g := &sg.Grant
	signer, err := RecoverTypedData(g.TypedData(p.wallet), sg.Signature)
	if err != nil {
		return nil, fmt.Sprintf("grant %s: %v", g.ID, err)
	}
	if _, ok := p.guardians[signer]; !ok {
		return nil, fmt.Sprintf("grant %s is signed by %s, who is not a guardian", g.ID, shortAddr(signer))
	}
	if r, ok := e.revocation(g.ID); ok {
		return nil, fmt.Sprintf("grant %s was revoked at %s", g.ID, r.Issued.UTC().Format(time.RFC3339))
	}
	now := c.req.Time
	if now.Before(g.NotBefore) {
		return nil, fmt.Sprintf("grant %s is not valid before %s", g.ID, g.NotBefore.UTC().Format(time.RFC3339))
	}
	if g.Expiry.Sub(g.NotBefore) > MaxWindow {
		// The ledger forgets records older than MaxWindow: a grant living
		// longer would find its totals reset.
		return nil, fmt.Sprintf("grant %s is valid for %s, longer than %s", g.ID, g.Expiry.Sub(g.NotBefore), MaxWindow)
	}
	if !now.Before(g.Expiry) {
		return nil, fmt.Sprintf("grant %s expired at %s", g.ID, g.Expiry.UTC().Format(time.RFC3339))
	}
	if g.Agent != c.req.Agent || g.Key != c.req.Key {
		return nil, fmt.Sprintf("grant %s is for agent %s and key %s", g.ID, g.Agent, shortAddr(g.Key))
	}
	if c.req.Kind != KindTransaction {
		return nil, fmt.Sprintf("grant %s covers transactions only, not %s", g.ID, c.req.Kind)
	}
	if g.ChainID != nil && g.ChainID.Sign() != 0 && g.ChainID.Cmp(c.req.ChainID) != 0 {
		return nil, fmt.Sprintf("grant %s is for chain %s, not chain %s", g.ID, g.ChainID, c.req.ChainID)
	}
	tx := c.req.Tx
	inDests := func(a common.Address) bool {
		for _, d := range g.Destinations {
			if d == a {
				return true
			}
		}
		return false
	}
	if !c.hasDest || !inDests(c.dest) {
		return nil, fmt.Sprintf("destination %s is outside grant %s", shortAddr(c.dest), g.ID)
	}
	if len(tx.Authorizations) > 0 {
		return nil, fmt.Sprintf("grant %s does not cover EIP-7702 authorizations", g.ID)
	}
	if tx.Call != nil {
		ok := false
		for _, s := range g.Selectors {
			ok = ok || s == tx.Call.Selector
		}
		if !ok {
			return nil, fmt.Sprintf("selector 0x%x is outside grant %s", tx.Call.Selector, g.ID)
		}
	}
	value := c.req.nativeValue()
	if value.Cmp(orZero(g.ValuePerTx)) > 0 {
		return nil, fmt.Sprintf("value %s exceeds grant %s per-transaction cap %s", formatEther(value), g.ID, formatEther(orZero(g.ValuePerTx)))
	}
	tokenAmt := new(big.Int)
	for _, sp := range c.spends {
		if sp.IsNative() {
			continue
		}
		if sp.Token != g.Token || g.Token == (common.Address{}) {
			return nil, fmt.Sprintf("token %s is outside grant %s", shortAddr(sp.Token), g.ID)
		}
		if !inDests(sp.To) {
			return nil, fmt.Sprintf("%s recipient %s is outside grant %s", sp.Kind, shortAddr(sp.To), g.ID)
		}
		if sp.Unlimited {
			return nil, fmt.Sprintf("unlimited %s exceeds grant %s", sp.Kind, g.ID)
		}
		tokenAmt.Add(tokenAmt, sp.Amount)
	}
	if tokenAmt.Cmp(orZero(g.AmountPerTx)) > 0 {
		return nil, fmt.Sprintf("amount %s exceeds grant %s per-transaction cap %s", p.formatToken(tokenAmt, g.Token), g.ID, p.formatToken(orZero(g.AmountPerTx), g.Token))
	}
	// The total counts the most the transaction can spend: its value and
	// its maximum gas fee.
	spent := new(big.Int).Add(value, c.req.maxFeeCost())
	entries := []Entry{{Bucket: GrantBucket(g.ID, AssetNative), Amount: spent, Count: 1, LimitAmount: orZero(g.ValueTotal), LimitCount: g.MaxCount}}
	if g.MaxCount == 0 {
		return nil, fmt.Sprintf("grant %s allows no requests", g.ID)
	}
	if tokenAmt.Sign() > 0 {
		entries = append(entries, Entry{Bucket: GrantBucket(g.ID, TokenAsset(g.Token)), Amount: tokenAmt, LimitAmount: orZero(g.AmountTotal)})
	}
	for i, en := range entries {
		u, err := c.usage(en.Bucket, 0)
		if err != nil {
			return nil, fmt.Sprintf("grant %s: %v", g.ID, err)
		}
		describe := func(v *big.Int) string {
			if i == 0 {
				return formatEther(v)
			}
			return p.formatToken(v, g.Token)
		}
		if new(big.Int).Add(u.Amount, en.Amount).Cmp(en.LimitAmount) > 0 {
			return nil, fmt.Sprintf("grant %s total cap reached: %s used + %s exceeds %s", g.ID, describe(u.Amount), describe(en.Amount), describe(en.LimitAmount))
		}
		if en.LimitCount > 0 && u.Count+en.Count > en.LimitCount {
			return nil, fmt.Sprintf("grant %s used %d of %d requests", g.ID, u.Count, en.LimitCount)
		}
	}
	return entries, ""
}
