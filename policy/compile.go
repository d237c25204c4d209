package policy

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

// Policy is a compiled document: every reference resolved, every amount
// parsed, every rule turned into a list of checks. It is immutable and safe
// to share between goroutines.
type Policy struct {
	doc       *Document
	hash      common.Hash
	guardians map[common.Address]string
	tiers     []*TierSpec
	tierByKey map[string]*TierSpec
	agents    map[ids.AgentID]ed25519.PublicKey
	tokens    map[string]*tokenInfo
	tokenAddr map[common.Address]*tokenInfo
	lists     map[string]map[common.Address]struct{}
	rules     []*rule
	breaker   breakerConfig
	// feeMax and tipMax are the document's defaults for allowing rules that
	// set no fee_max or tip_max.
	feeMax, tipMax *big.Int
	// wallet is the wallet id that guardian signatures are bound to: the
	// genesis document's hash. VerifyDocument and ApplyDocument set it.
	wallet common.Hash
}

// Built-in defaults for the document's `defaults`: the fee caps of allowing
// rules that set none.
var (
	DefaultFeeMax = big.NewInt(500e9) // 500 gwei max fee (gas price) per gas
	DefaultTipMax = big.NewInt(50e9)  // 50 gwei priority fee per gas
)

type tokenInfo struct {
	symbol   string
	addr     common.Address
	decimals int
}

// addrSet is a resolved address condition; name is how reasons refer to it.
type addrSet struct {
	name string
	set  map[common.Address]struct{}
}

func (s *addrSet) has(a common.Address) bool { _, ok := s.set[a]; return ok }

// cond is one compiled check of a rule. name is what the trace calls it:
// its entry in the conditions table, args.NAME for one argument, and
// default_fee_max or default_tip_max for the document's default caps.
type cond struct {
	name  string
	check func(*evalCtx) (bool, string)
}

type rule struct {
	id      string
	verdict Verdict
	tier    *TierSpec
	conds   []cond // in evaluation order (the conditions table's)
	budget  *budget
	limits  ruleLimits
	shape   string // see ruleShape
	// sets are the resolved address conditions in compile order, compared
	// as sets by the tightening check.
	sets []ruleSet
}

func (r *rule) rank(p *Policy) int {
	switch r.verdict {
	case Deny:
		return len(p.tiers) + 1
	case Tier:
		return r.tier.Rank
	}
	return 0
}

type ruleLimits struct {
	valueMax, amountMax, gasMax, feeMax, tipMax *big.Int
}

type budget struct {
	window time.Duration
	value  *big.Int
	amount *big.Int
	token  *tokenInfo
	count  uint64
}

// Compile checks and compiles a document. Errors name the rule and the
// condition at fault.
func Compile(d *Document) (*Policy, error) {
	p := &Policy{
		doc:       d,
		hash:      d.Hash(),
		guardians: map[common.Address]string{},
		tierByKey: map[string]*TierSpec{},
		agents:    map[ids.AgentID]ed25519.PublicKey{},
		tokens:    map[string]*tokenInfo{},
		tokenAddr: map[common.Address]*tokenInfo{},
		lists:     map[string]map[common.Address]struct{}{},
	}
	if d.Version == 0 {
		return nil, errorf("compile: version must be at least 1")
	}
	if d.Replaces != "" && !isHash(d.Replaces) {
		return nil, errorf("compile: replaces %q is not a 32-byte hex hash", d.Replaces)
	}
	// Maps are read in sorted order throughout, so that every node compiles
	// a document the same way and fails on it with the same error.
	for _, name := range sortedKeys(d.Guardians) {
		addr, err := parseAddress(d.Guardians[name])
		if err != nil {
			return nil, errorf("compile: guardian %s: %w", name, err)
		}
		if other, dup := p.guardians[addr]; dup {
			return nil, errorf("compile: guardians %s and %s: address %s listed twice", other, name, addr.Hex())
		}
		p.guardians[addr] = name
	}
	if err := p.compileAgents(d); err != nil {
		return nil, errorf("compile: %w", err)
	}
	if len(d.Guardians) > MaxSignatures {
		return nil, errorf("compile: %d guardians, at most %d", len(d.Guardians), MaxSignatures)
	}
	if d.Quorum < 1 || d.Quorum > len(p.guardians) {
		return nil, errorf("compile: quorum %d of %d guardians", d.Quorum, len(p.guardians))
	}
	if len(d.Tiers) == 0 {
		return nil, errorf("compile: no tiers")
	}
	for i, t := range d.Tiers {
		ts := &TierSpec{Name: t.Name, Rank: i, Approvals: t.Approvals}
		if t.Name == "" || p.tierByKey[t.Name] != nil {
			return nil, errorf("compile: tier %d: missing or duplicate name %q", i, t.Name)
		}
		for _, s := range t.Signers {
			switch r := ids.Role(s); r {
			case ids.RoleAgent, ids.RolePolicy, ids.RoleGuardian:
				ts.Roles = append(ts.Roles, r)
			default:
				return nil, errorf("compile: tier %s: unknown role %q", t.Name, s)
			}
		}
		if t.Approvals < 0 || t.Approvals > len(p.guardians) {
			return nil, errorf("compile: tier %s: %d approvals of %d guardians", t.Name, t.Approvals, len(p.guardians))
		}
		if t.Approvals > 0 && !hasRole(ts.Roles, ids.RoleGuardian) {
			return nil, errorf("compile: tier %s: approvals without the guardian role", t.Name)
		}
		if t.Delay != "" {
			dl, err := time.ParseDuration(string(t.Delay))
			if err != nil || dl < 0 {
				return nil, errorf("compile: tier %s: delay %q", t.Name, t.Delay)
			}
			ts.Delay = dl
		}
		if ts.Delay > 0 && ts.Approvals == 0 {
			// The delay runs from the guardian approvals: without any it
			// would be a wait that nothing enforces.
			return nil, errorf("compile: tier %s: a delay without approvals", t.Name)
		}
		if i > 0 {
			// Rank is compared wherever "more demanding" is judged, so the
			// order of the list must be the order of what a tier demands.
			prev := p.tiers[i-1]
			for _, r := range prev.Roles {
				if !hasRole(ts.Roles, r) {
					return nil, errorf("compile: tier %s: drops role %s of the less demanding tier %s before it (tiers must be listed least demanding first)", t.Name, r, prev.Name)
				}
			}
			if ts.Approvals < prev.Approvals || ts.Delay < prev.Delay {
				return nil, errorf("compile: tier %s: fewer approvals or a shorter delay than tier %s before it (tiers must be listed least demanding first)", t.Name, prev.Name)
			}
		}
		p.tiers = append(p.tiers, ts)
		p.tierByKey[t.Name] = ts
	}
	for _, sym := range sortedKeys(d.Tokens) {
		t := d.Tokens[sym]
		a, err := parseAddress(t.Address)
		if err != nil {
			return nil, errorf("compile: token %s: %w", sym, err)
		}
		if t.Decimals < 0 || t.Decimals > 77 {
			return nil, errorf("compile: token %s: decimals %d", sym, t.Decimals)
		}
		if other, dup := p.tokenAddr[a]; dup {
			// One contract under two symbols would make amounts and
			// reasons depend on which symbol a node happened to read last.
			return nil, errorf("compile: tokens %s and %s: address %s declared twice", other.symbol, sym, a.Hex())
		}
		ti := &tokenInfo{symbol: sym, addr: a, decimals: t.Decimals}
		p.tokens[sym] = ti
		p.tokenAddr[ti.addr] = ti
	}
	for _, name := range sortedKeys(d.Lists) {
		entries := d.Lists[name]
		if _, ok := d.Tokens[name]; ok {
			// $NAME must mean one thing, or a change to the lists could
			// silently change what a rule refers to.
			return nil, errorf("compile: list %s has the name of a token", name)
		}
		set := map[common.Address]struct{}{}
		for _, e := range entries {
			a, err := p.addrOrToken(string(e))
			if err != nil {
				return nil, errorf("compile: list %s: %w", name, err)
			}
			set[a] = struct{}{}
		}
		p.lists[name] = set
	}
	p.feeMax, p.tipMax = DefaultFeeMax, DefaultTipMax
	if df := d.Defaults; df != nil {
		var err error
		if df.FeeMax != "" {
			if p.feeMax, err = p.nativeAmount(df.FeeMax); err != nil {
				return nil, errorf("compile: defaults: fee_max: %w", err)
			}
		}
		if df.TipMax != "" {
			if p.tipMax, err = p.nativeAmount(df.TipMax); err != nil {
				return nil, errorf("compile: defaults: tip_max: %w", err)
			}
		}
	}
	seen := map[string]bool{}
	for i := range d.Rules {
		rd := &d.Rules[i]
		if rd.ID == "" || seen[rd.ID] || isEngineRule(rd.ID) {
			return nil, errorf("compile: rule %d: missing, duplicate or reserved id %q", i, rd.ID)
		}
		seen[rd.ID] = true
		r, err := p.compileRule(rd)
		if err != nil {
			return nil, errorf("compile: rule %q: %w", rd.ID, err)
		}
		p.rules = append(p.rules, r)
	}
	bc, err := compileBreaker(d.Breaker)
	if err != nil {
		return nil, errorf("compile: breaker: %w", err)
	}
	p.breaker = bc
	return p, nil
}

// ParseAndCompile parses YAML and compiles it.
func ParseAndCompile(src []byte) (*Policy, error) {
	d, err := ParseDocument(src)
	if err != nil {
		return nil, err
	}
	return Compile(d)
}

// Hash returns the document's content hash.
func (p *Policy) Hash() common.Hash { return p.hash }

// Version returns the document's version.
func (p *Policy) Version() uint64 { return p.doc.Version }

// WalletID returns the wallet id that guardian signatures are bound to (the
// hash of the wallet's genesis document), or the zero hash for a policy
// compiled but not verified.
func (p *Policy) WalletID() common.Hash { return p.wallet }

// Document returns the source document. Callers must not modify it.
func (p *Policy) Document() *Document { return p.doc }

// Guardians returns the guardian identity accounts, sorted.
func (p *Policy) Guardians() []common.Address {
	out := make([]common.Address, 0, len(p.guardians))
	for a := range p.guardians {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cmp(out[j]) < 0 })
	return out
}

// Quorum returns the number of guardian signatures needed to loosen the
// policy or lift a freeze.
func (p *Policy) Quorum() int { return p.doc.Quorum }

// Tiers returns the tiers, least demanding first.
func (p *Policy) Tiers() []TierSpec {
	out := make([]TierSpec, len(p.tiers))
	for i, t := range p.tiers {
		out[i] = *t
	}
	return out
}

func isEngineRule(id string) bool {
	switch id {
	case RuleFreeze, RuleRequest, RuleGrant, RuleBreaker, RuleDefault, RuleBudget, RuleError:
		return true
	}
	return false
}

func isHash(s string) bool {
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	return err == nil && len(b) == 32 && strings.HasPrefix(s, "0x")
}

func hasRole(rs []ids.Role, r ids.Role) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

func (p *Policy) addrOrToken(s string) (common.Address, error) {
	if strings.HasPrefix(s, "$") {
		if t, ok := p.tokens[s[1:]]; ok {
			return t.addr, nil
		}
		return common.Address{}, fmt.Errorf("unknown token %s", s)
	}
	return parseAddress(s)
}

// parseAddress reads a 0x-prefixed hex address. Mixed case is an EIP-55
// checksum and must be right: a mistyped address must not compile into a
// different one.
func parseAddress(s string) (common.Address, error) {
	if !strings.HasPrefix(s, "0x") || !common.IsHexAddress(s) {
		return common.Address{}, fmt.Errorf("%q is not a 0x-prefixed address", s)
	}
	a := common.HexToAddress(s)
	if h := s[2:]; h != strings.ToLower(h) && h != strings.ToUpper(h) && a.Hex() != s {
		return common.Address{}, fmt.Errorf("%q has a wrong EIP-55 checksum (%s)", s, a.Hex())
	}
	return a, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// addrs resolves a list of addresses, $lists and $TOKENS.
func (p *Policy) addrs(l List) (*addrSet, error) {
	s := &addrSet{set: map[common.Address]struct{}{}}
	var names []string
	for _, e := range l {
		v := string(e)
		if strings.HasPrefix(v, "$") {
			if set, ok := p.lists[v[1:]]; ok {
				for a := range set {
					s.set[a] = struct{}{}
				}
				names = append(names, "list "+v[1:])
				continue
			}
			if t, ok := p.tokens[v[1:]]; ok {
				s.set[t.addr] = struct{}{}
				names = append(names, v[1:])
				continue
			}
			return nil, fmt.Errorf("unknown list %s", v)
		}
		a, err := p.addrOrToken(v)
		if err != nil {
			return nil, err
		}
		s.set[a] = struct{}{}
		names = append(names, shortAddr(a))
	}
	s.name = strings.Join(names, ", ")
	return s, nil
}

func (p *Policy) decimalsOf(sym string) (int, bool) {
	if t, ok := p.tokens[sym]; ok {
		return t.decimals, true
	}
	return 0, false
}

// nativeAmount parses an amount of ether.
func (p *Policy) nativeAmount(s Scalar) (*big.Int, error) {
	v, _, err := parseAmount(string(s), func(string) (int, bool) { return 0, false })
	return v, err
}

// tokenAmount parses an amount of token t: "100 USDC" or base units.
func (p *Policy) tokenAmount(s Scalar, t *tokenInfo) (*big.Int, error) {
	v, unit, err := parseAmount(string(s), p.decimalsOf)
	if err != nil {
		return nil, err
	}
	if unit != "" && unit != t.symbol {
		return nil, fmt.Errorf("amount %q is not in %s", s, t.symbol)
	}
	return v, nil
}

func (p *Policy) formatToken(v *big.Int, token common.Address) string {
	if t, ok := p.tokenAddr[token]; ok {
		return formatUnits(v, t.decimals) + " " + t.symbol
	}
	return v.String() + " units of " + shortAddr(token)
}

// compileRule compiles a rule's verdict, then each of its conditions by
// the compilers of the conditions table, in table order.
func (p *Policy) compileRule(rd *RuleDoc) (*rule, error) {
	r := &rule{id: rd.ID}
	n := 0
	if rd.Deny {
		r.verdict, n = Deny, n+1
	}
	if rd.Allow {
		r.verdict, r.tier, n = Allow, p.tiers[0], n+1
	}
	if rd.Tier != "" {
		t, ok := p.tierByKey[rd.Tier]
		if !ok {
			return nil, fmt.Errorf("unknown tier %q", rd.Tier)
		}
		r.verdict, r.tier, n = Tier, t, n+1
	}
	if n != 1 {
		return nil, fmt.Errorf("set exactly one of tier, allow, deny")
	}
	b := &ruleBuild{p: p, rd: rd, w: &rd.When, r: r, deny: r.verdict == Deny}
	for _, c := range conditions {
		if err := c.compile(b); err != nil {
			return nil, err
		}
	}
	shape, err := ruleShape(rd)
	if err != nil {
		return nil, err
	}
	r.shape = shape
	return r, nil
}

func (p *Policy) formatSpendAmount(sp chain.Spend) string {
	if sp.Unlimited {
		return "unlimited"
	}
	if sp.IsNative() {
		return formatEther(sp.Amount)
	}
	return p.formatToken(sp.Amount, sp.Token)
}
