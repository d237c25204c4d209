package admin

import (
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// DescribePayload fills what a guardian is shown of a payload, from the
// payload the node parsed itself from the agent's signed bytes: chain,
// kind, digest, destination, value in wei and ether, method and selector,
// and each token movement, in token units where pol declares the token
// (pol may be nil). The caller adds the request's id, agent, key, tier,
// rule and times.
func DescribePayload(pol *policy.Policy, p *chain.Payload) PendingRequest {
	var out PendingRequest
	if cid := p.ChainID(); cid != nil && cid.IsUint64() {
		out.ChainID = cid.Uint64()
	}
	out.Kind = p.Kind().String()
	d := p.Digest()
	out.Digest = common.Hash(d)
	out.Summary = p.Describe()
	out.Payload = p.Bytes()
	tokens := tokensOf(pol)
	var spends []chain.Spend
	if tx := p.Tx(); tx != nil {
		if tx.To != nil {
			to := *tx.To
			out.To = &to
		}
		v := tx.Value
		if v == nil {
			v = new(big.Int)
		}
		out.Value = v.String()
		out.ValueEther = chain.FormatUnits(v, 18)
		if tx.Call != nil {
			out.Selector = hexutil.Encode(tx.Call.Selector[:])
			out.Method = tx.Call.Method
		} else if len(tx.Data) >= 4 {
			out.Selector = hexutil.Encode(tx.Data[:4])
		}
		spends = tx.Spends
	}
	if td := p.Typed(); td != nil {
		out.Method = td.PrimaryType
		if td.VerifyingContract != (common.Address{}) {
			vc := td.VerifyingContract
			out.To = &vc
		}
		spends = td.Spends
	}
	for _, s := range spends {
		if s.IsNative() {
			continue
		}
		m := TokenMove{Token: s.Token, Kind: s.Kind.String()}
		if s.Amount != nil {
			m.Raw = s.Amount.String()
		}
		if s.To != (common.Address{}) {
			to := s.To
			m.Recipient = &to
		}
		if t, ok := tokens[s.Token]; ok {
			m.Symbol = t.symbol
			if s.Amount != nil {
				m.Amount = chain.FormatUnits(s.Amount, t.decimals)
			}
		}
		if s.Unlimited {
			m.Amount = "unlimited"
		}
		out.Tokens = append(out.Tokens, m)
	}
	return out
}

type tokenInfo struct {
	symbol   string
	decimals int
}

func tokensOf(pol *policy.Policy) map[common.Address]tokenInfo {
	out := map[common.Address]tokenInfo{}
	if pol == nil || pol.Document() == nil {
		return out
	}
	for sym, t := range pol.Document().Tokens {
		if common.IsHexAddress(t.Address) {
			out[common.HexToAddress(t.Address)] = tokenInfo{symbol: sym, decimals: t.Decimals}
		}
	}
	return out
}

// CheckPending decodes p.Payload itself and checks that the request's
// digest and description are those of these bytes: what a guardian's tool
// runs before it signs, so that a node cannot show its human one thing and
// have them approve the digest of another. Token symbols and units are the
// node's policy's and are checked only against the base-unit amounts.
func CheckPending(p *PendingRequest) error {
	if len(p.Payload) == 0 {
		return errors.New("the node sent no payload bytes to check its description against")
	}
	var kind chain.Kind
	for _, k := range []chain.Kind{chain.KindTransaction, chain.KindTypedData, chain.KindPersonalMessage} {
		if k.String() == p.Kind {
			kind = k
		}
	}
	if kind == 0 {
		return fmt.Errorf("unknown payload kind %q", p.Kind)
	}
	payload, err := chain.Parse(kind, new(big.Int).SetUint64(p.ChainID), p.Payload)
	if err != nil {
		return fmt.Errorf("the payload bytes do not decode: %w", err)
	}
	own := DescribePayload(nil, payload)
	var bad []string
	diff := func(what, node, mine string) {
		if node != mine {
			bad = append(bad, fmt.Sprintf("%s: the node says %q, the bytes say %q", what, node, mine))
		}
	}
	diff("digest", p.Digest.Hex(), own.Digest.Hex())
	diff("chain", fmt.Sprint(p.ChainID), fmt.Sprint(own.ChainID))
	diff("to", addrText(p.To), addrText(own.To))
	diff("value", p.Value, own.Value)
	diff("value in ether", p.ValueEther, own.ValueEther)
	diff("method", p.Method, own.Method)
	diff("selector", p.Selector, own.Selector)
	diff("summary", p.Summary, own.Summary)
	if len(p.Tokens) != len(own.Tokens) {
		bad = append(bad, fmt.Sprintf("token movements: the node shows %d, the bytes make %d", len(p.Tokens), len(own.Tokens)))
	} else {
		for i := range own.Tokens {
			n, m := p.Tokens[i], own.Tokens[i]
			diff(fmt.Sprintf("token movement %d", i+1), n.Token.Hex()+" "+n.Kind+" "+n.Raw+" to "+addrText(n.Recipient), m.Token.Hex()+" "+m.Kind+" "+m.Raw+" to "+addrText(m.Recipient))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("the request's description does not match its payload bytes: %s", strings.Join(bad, "; "))
	}
	return nil
}

func addrText(a *common.Address) string {
	if a == nil {
		return ""
	}
	return a.Hex()
}
