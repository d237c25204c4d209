package policy

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/big"
	"sort"
	"strconv"
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

type cond struct {
	name  string
	check func(*evalCtx) (bool, string)
}

type rule struct {
	id      string
	verdict Verdict
	tier    *TierSpec
	conds   []cond
	budget  *budget
	limits  ruleLimits
	shape   string // canonical form without limits, verdict or addresses, for tightening
	// sets are the resolved address conditions in compile order, compared
	// as sets by the tightening check.
	sets []ruleSet
}

// ruleSet is one resolved address condition of a rule. A rule matches more
// as a positive set grows (to, recipient, token, ...) and less as a negative
// one grows (not_to, not_recipient).
type ruleSet struct {
	cond string
	neg  bool
	set  map[common.Address]struct{}
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
		return nil, fmt.Errorf("policy: compile: version must be at least 1")
	}
	if d.Replaces != "" && !isHash(d.Replaces) {
		return nil, fmt.Errorf("policy: compile: replaces %q is not a 32-byte hex hash", d.Replaces)
	}
	// Maps are read in sorted order throughout, so that every node compiles
	// a document the same way and fails on it with the same error.
	for _, name := range sortedKeys(d.Guardians) {
		addr, err := parseAddress(d.Guardians[name])
		if err != nil {
			return nil, fmt.Errorf("policy: compile: guardian %s: %w", name, err)
		}
		if other, dup := p.guardians[addr]; dup {
			return nil, fmt.Errorf("policy: compile: guardians %s and %s: address %s listed twice", other, name, addr.Hex())
		}
		p.guardians[addr] = name
	}
	if err := p.compileAgents(d); err != nil {
		return nil, fmt.Errorf("policy: compile: %w", err)
	}
	if len(d.Guardians) > MaxSignatures {
		return nil, fmt.Errorf("policy: compile: %d guardians, at most %d", len(d.Guardians), MaxSignatures)
	}
	if d.Quorum < 1 || d.Quorum > len(p.guardians) {
		return nil, fmt.Errorf("policy: compile: quorum %d of %d guardians", d.Quorum, len(p.guardians))
	}
	if len(d.Tiers) == 0 {
		return nil, fmt.Errorf("policy: compile: no tiers")
	}
	for i, t := range d.Tiers {
		ts := &TierSpec{Name: t.Name, Rank: i, Approvals: t.Approvals}
		if t.Name == "" || p.tierByKey[t.Name] != nil {
			return nil, fmt.Errorf("policy: compile: tier %d: missing or duplicate name %q", i, t.Name)
		}
		for _, s := range t.Signers {
			switch r := ids.Role(s); r {
			case ids.RoleAgent, ids.RolePolicy, ids.RoleGuardian:
				ts.Roles = append(ts.Roles, r)
			default:
				return nil, fmt.Errorf("policy: compile: tier %s: unknown role %q", t.Name, s)
			}
		}
		if t.Approvals < 0 || t.Approvals > len(p.guardians) {
			return nil, fmt.Errorf("policy: compile: tier %s: %d approvals of %d guardians", t.Name, t.Approvals, len(p.guardians))
		}
		if t.Approvals > 0 && !hasRole(ts.Roles, ids.RoleGuardian) {
			return nil, fmt.Errorf("policy: compile: tier %s: approvals without the guardian role", t.Name)
		}
		if t.Delay != "" {
			dl, err := time.ParseDuration(string(t.Delay))
			if err != nil || dl < 0 {
				return nil, fmt.Errorf("policy: compile: tier %s: delay %q", t.Name, t.Delay)
			}
			ts.Delay = dl
		}
		if ts.Delay > 0 && ts.Approvals == 0 {
			// The delay runs from the guardian approvals: without any it
			// would be a wait that nothing enforces.
			return nil, fmt.Errorf("policy: compile: tier %s: a delay without approvals", t.Name)
		}
		if i > 0 {
			// Rank is compared wherever "more demanding" is judged, so the
			// order of the list must be the order of what a tier demands.
			prev := p.tiers[i-1]
			for _, r := range prev.Roles {
				if !hasRole(ts.Roles, r) {
					return nil, fmt.Errorf("policy: compile: tier %s: drops role %s of the less demanding tier %s before it (tiers must be listed least demanding first)", t.Name, r, prev.Name)
				}
			}
			if ts.Approvals < prev.Approvals || ts.Delay < prev.Delay {
				return nil, fmt.Errorf("policy: compile: tier %s: fewer approvals or a shorter delay than tier %s before it (tiers must be listed least demanding first)", t.Name, prev.Name)
			}
		}
		p.tiers = append(p.tiers, ts)
		p.tierByKey[t.Name] = ts
	}
	for _, sym := range sortedKeys(d.Tokens) {
		t := d.Tokens[sym]
		a, err := parseAddress(t.Address)
		if err != nil {
			return nil, fmt.Errorf("policy: compile: token %s: %w", sym, err)
		}
		if t.Decimals < 0 || t.Decimals > 77 {
			return nil, fmt.Errorf("policy: compile: token %s: decimals %d", sym, t.Decimals)
		}
		if other, dup := p.tokenAddr[a]; dup {
			// One contract under two symbols would make amounts and
			// reasons depend on which symbol a node happened to read last.
			return nil, fmt.Errorf("policy: compile: tokens %s and %s: address %s declared twice", other.symbol, sym, a.Hex())
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
			return nil, fmt.Errorf("policy: compile: list %s has the name of a token", name)
		}
		set := map[common.Address]struct{}{}
		for _, e := range entries {
			a, err := p.addrOrToken(string(e))
			if err != nil {
				return nil, fmt.Errorf("policy: compile: list %s: %w", name, err)
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
				return nil, fmt.Errorf("policy: compile: defaults: fee_max: %w", err)
			}
		}
		if df.TipMax != "" {
			if p.tipMax, err = p.nativeAmount(df.TipMax); err != nil {
				return nil, fmt.Errorf("policy: compile: defaults: tip_max: %w", err)
			}
		}
	}
	seen := map[string]bool{}
	for i := range d.Rules {
		rd := &d.Rules[i]
		if rd.ID == "" || seen[rd.ID] || isEngineRule(rd.ID) {
			return nil, fmt.Errorf("policy: compile: rule %d: missing, duplicate or reserved id %q", i, rd.ID)
		}
		seen[rd.ID] = true
		r, err := p.compileRule(rd)
		if err != nil {
			return nil, fmt.Errorf("policy: compile: rule %q: %w", rd.ID, err)
		}
		p.rules = append(p.rules, r)
	}
	bc, err := compileBreaker(d.Breaker)
	if err != nil {
		return nil, fmt.Errorf("policy: compile: breaker: %w", err)
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

func kindMask(ks ...Kind) uint8 {
	var m uint8
	for _, k := range ks {
		m |= 1 << k
	}
	return m
}

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
	deny := r.verdict == Deny
	w := &rd.When
	add := func(name string, f func(*evalCtx) (bool, string)) { r.conds = append(r.conds, cond{name, f}) }
	var (
		chainless          bool     // domain.chain lists none
		toSet, contractSet *addrSet // for typed data verified by the key itself
	)

	// Kinds: explicit, or inferred from the conditions; deny rules default
	// to every kind so that a deny list also covers typed data.
	var mask uint8
	for _, k := range w.Kind {
		kk, err := parseKind(string(k))
		if err != nil {
			return nil, err
		}
		mask |= kindMask(kk)
	}
	if mask == 0 {
		switch {
		case deny:
			mask = kindMask(KindTransaction, KindTypedData, KindPersonalMessage, KindRawDigest)
		case w.Domain != nil || len(w.PrimaryType) > 0:
			mask = kindMask(KindTypedData)
		case len(w.MessagePrefix) > 0:
			mask = kindMask(KindPersonalMessage)
		default:
			mask = kindMask(KindTransaction)
		}
	}
	add("kind", func(c *evalCtx) (bool, string) {
		if mask&(1<<c.req.Kind) != 0 {
			return true, ""
		}
		return false, fmt.Sprintf("payload kind %s is not covered by the rule", c.req.Kind)
	})

	if len(w.Chain) > 0 {
		set, err := chainSet(w.Chain)
		if err != nil {
			return nil, fmt.Errorf("chain: %w", err)
		}
		add("chain", func(c *evalCtx) (bool, string) {
			if c.req.ChainID.IsUint64() && set[c.req.ChainID.Uint64()] {
				return true, ""
			}
			return false, fmt.Sprintf("chain %s is not in %s", c.req.ChainID, joinScalars(w.Chain))
		})
	}
	if len(w.Agent) > 0 {
		set := map[ids.AgentID]bool{}
		for _, a := range w.Agent {
			if _, ok := p.agents[ids.AgentID(a)]; len(p.agents) > 0 && !ok {
				return nil, fmt.Errorf("agent: %s is not in the agent registry", a)
			}
			set[ids.AgentID(a)] = true
		}
		add("agent", func(c *evalCtx) (bool, string) {
			if set[c.req.Agent] {
				return true, ""
			}
			return false, fmt.Sprintf("agent %s is not in %s", c.req.Agent, joinScalars(w.Agent))
		})
	}
	if len(w.Key) > 0 {
		s, err := p.addrs(w.Key)
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		r.sets = append(r.sets, ruleSet{"key", false, s.set})
		add("key", func(c *evalCtx) (bool, string) {
			if s.has(c.req.Key) {
				return true, ""
			}
			return false, fmt.Sprintf("key %s is not in %s", shortAddr(c.req.Key), s.name)
		})
	}
	if len(w.To) > 0 {
		s, err := p.addrs(w.To)
		if err != nil {
			return nil, fmt.Errorf("to: %w", err)
		}
		r.sets = append(r.sets, ruleSet{"to", false, s.set})
		toSet = s
		add("to", func(c *evalCtx) (bool, string) {
			if !c.hasDest {
				return false, "request has no destination"
			}
			if s.has(c.dest) {
				return true, ""
			}
			return false, fmt.Sprintf("destination %s is not in %s", shortAddr(c.dest), s.name)
		})
	}
	if len(w.NotTo) > 0 {
		s, err := p.addrs(w.NotTo)
		if err != nil {
			return nil, fmt.Errorf("not_to: %w", err)
		}
		r.sets = append(r.sets, ruleSet{"not_to", true, s.set})
		add("not_to", func(c *evalCtx) (bool, string) {
			if c.hasDest && s.has(c.dest) {
				return false, fmt.Sprintf("destination %s is in %s", shortAddr(c.dest), s.name)
			}
			return true, ""
		})
	}
	if len(w.Recipient) > 0 {
		s, err := p.addrs(w.Recipient)
		if err != nil {
			return nil, fmt.Errorf("recipient: %w", err)
		}
		r.sets = append(r.sets, ruleSet{"recipient", false, s.set})
		if deny {
			add("recipient", func(c *evalCtx) (bool, string) {
				for _, sp := range c.spends {
					if s.has(sp.To) {
						return true, ""
					}
				}
				return false, fmt.Sprintf("no recipient is in %s", s.name)
			})
		} else {
			add("recipient", func(c *evalCtx) (bool, string) {
				if c.req.Kind == KindTransaction && c.req.Tx.To == nil && c.req.nativeValue().Sign() > 0 {
					return false, "contract creation with value has no recipient to check"
				}
				for _, sp := range c.spends {
					if !s.has(sp.To) {
						return false, fmt.Sprintf("%s recipient %s is not in %s", sp.Kind, shortAddr(sp.To), s.name)
					}
				}
				return true, ""
			})
		}
	}
	if len(w.NotRecipient) > 0 {
		s, err := p.addrs(w.NotRecipient)
		if err != nil {
			return nil, fmt.Errorf("not_recipient: %w", err)
		}
		r.sets = append(r.sets, ruleSet{"not_recipient", true, s.set})
		add("not_recipient", func(c *evalCtx) (bool, string) {
			for _, sp := range c.spends {
				if s.has(sp.To) {
					return false, fmt.Sprintf("%s recipient %s is in %s", sp.Kind, shortAddr(sp.To), s.name)
				}
			}
			return true, ""
		})
	}
	// explicitSels are the selectors the rule lists with `selector`: only
	// those may reach a token contract undecoded.
	explicitSels := map[[4]byte]bool{}
	if len(w.Call) > 0 || len(w.Selector) > 0 {
		sels := map[[4]byte]bool{}
		var names []string
		for _, m := range w.Call {
			sel, ok := chain.MethodSelector(string(m))
			if !ok {
				return nil, fmt.Errorf("call: unknown method %q (use selector)", m)
			}
			sels[sel] = true
			names = append(names, string(m))
		}
		for _, sv := range w.Selector {
			sel, err := parseSelector(string(sv))
			if err != nil {
				return nil, fmt.Errorf("selector: %w", err)
			}
			sels[sel] = true
			explicitSels[sel] = true
			names = append(names, "0x"+hex.EncodeToString(sel[:]))
		}
		want := strings.Join(names, ", ")
		add("call", func(c *evalCtx) (bool, string) {
			if c.req.Kind != KindTransaction || c.req.Tx.Call == nil {
				return false, fmt.Sprintf("no calldata; the rule wants %s", want)
			}
			if sels[c.req.Tx.Call.Selector] {
				return true, ""
			}
			return false, fmt.Sprintf("selector 0x%x is not %s", c.req.Tx.Call.Selector, want)
		})
	}
	// Calldata is allowed only where a rule says so: a call condition
	// names the methods, calldata: any allows whatever the other
	// conditions allow. Grant rules defer to the grant's selectors.
	namesCall := len(w.Call) > 0 || len(w.Selector) > 0 || len(w.Args) > 0
	switch w.Calldata {
	case "":
	case "any", "none":
		if namesCall {
			return nil, fmt.Errorf("calldata: %s with call, selector or args (which already say what calldata may be)", w.Calldata)
		}
	default:
		return nil, fmt.Errorf("calldata: %q (want any or none)", w.Calldata)
	}
	if w.Calldata == "none" || (w.Calldata == "" && !deny && !namesCall && !(w.Grant != nil && *w.Grant)) {
		add("calldata", func(c *evalCtx) (bool, string) {
			if c.req.Kind != KindTransaction || !hasCalldata(c.req.Tx) {
				return true, ""
			}
			tx := c.req.Tx
			if tx.To == nil {
				return false, "contract creation carries init code and the rule allows no calldata (it needs call, selector or calldata: any)"
			}
			return false, fmt.Sprintf("calldata 0x%x to %s and the rule allows no calldata (it needs call, selector or calldata: any)", tx.Data[:min(4, len(tx.Data))], shortAddr(*tx.To))
		})
	}
	if len(w.Args) > 0 {
		names := make([]string, 0, len(w.Args))
		for n := range w.Args {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			s, err := p.addrs(w.Args[name])
			if err != nil {
				return nil, fmt.Errorf("args.%s: %w", name, err)
			}
			r.sets = append(r.sets, ruleSet{"args." + name, false, s.set})
			add("args."+name, func(c *evalCtx) (bool, string) {
				if c.req.Kind != KindTransaction || !c.req.Tx.Call.Known() {
					return false, fmt.Sprintf("argument %s: calldata is not a known method", name)
				}
				a, ok := c.req.Tx.Call.Arg(name)
				if !ok || a.Int != nil {
					return false, fmt.Sprintf("method %s has no address argument %s", c.req.Tx.Call.Method, name)
				}
				if s.has(a.Addr) {
					return true, ""
				}
				return false, fmt.Sprintf("argument %s %s is not in %s", name, shortAddr(a.Addr), s.name)
			})
		}
	}
	var ruleToken *tokenInfo
	if len(w.Token) > 0 {
		s, err := p.addrs(w.Token)
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		r.sets = append(r.sets, ruleSet{"token", false, s.set})
		if len(s.set) == 1 {
			for a := range s.set {
				ruleToken = p.tokenAddr[a]
			}
		}
		if deny {
			add("token", func(c *evalCtx) (bool, string) {
				for _, sp := range c.spends {
					if !sp.IsNative() && s.has(sp.Token) {
						return true, ""
					}
				}
				return false, fmt.Sprintf("no token spend is of %s", s.name)
			})
		} else {
			add("token", func(c *evalCtx) (bool, string) {
				n := 0
				for _, sp := range c.spends {
					if sp.IsNative() {
						continue
					}
					n++
					if !s.has(sp.Token) {
						return false, fmt.Sprintf("token %s is not %s", shortAddr(sp.Token), s.name)
					}
				}
				if n == 0 {
					return false, "request moves no token"
				}
				return true, ""
			})
		}
	}
	if w.ValueMax != "" {
		v, err := p.nativeAmount(w.ValueMax)
		if err != nil {
			return nil, fmt.Errorf("value_max: %w", err)
		}
		r.limits.valueMax = v
		add("value_max", func(c *evalCtx) (bool, string) {
			if val := c.req.nativeValue(); val.Cmp(v) > 0 {
				return false, fmt.Sprintf("value %s exceeds value_max %s", formatEther(val), formatEther(v))
			}
			return true, ""
		})
	}
	if w.AmountMax != "" {
		if ruleToken == nil {
			return nil, fmt.Errorf("amount_max needs token to name exactly one declared token")
		}
		t := ruleToken
		v, err := p.tokenAmount(w.AmountMax, t)
		if err != nil {
			return nil, fmt.Errorf("amount_max: %w", err)
		}
		r.limits.amountMax = v
		add("amount_max", func(c *evalCtx) (bool, string) {
			amt, unlimited := c.tokenTotal(t.addr)
			if unlimited {
				return false, fmt.Sprintf("amount unlimited exceeds amount_max %s", p.formatToken(v, t.addr))
			}
			if amt.Cmp(v) > 0 {
				return false, fmt.Sprintf("amount %s exceeds amount_max %s", p.formatToken(amt, t.addr), p.formatToken(v, t.addr))
			}
			return true, ""
		})
	}
	if w.GasMax != "" {
		g, err := strconv.ParseUint(string(w.GasMax), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("gas_max: %w", err)
		}
		r.limits.gasMax = new(big.Int).SetUint64(g)
		add("gas_max", func(c *evalCtx) (bool, string) {
			if c.req.Kind != KindTransaction {
				// A limit holds vacuously for an allowing rule; a deny rule
				// about gas is not about other payloads.
				return !deny, "payload is not a transaction"
			}
			if c.req.Tx.Gas > g {
				return false, fmt.Sprintf("gas limit %d exceeds gas_max %d", c.req.Tx.Gas, g)
			}
			return true, ""
		})
	}
	for _, f := range []struct {
		name  string
		src   Scalar
		def   *big.Int
		dst   **big.Int
		field func(*chain.Tx) *big.Int
		label string
	}{
		{"fee_max", w.FeeMax, p.feeMax, &r.limits.feeMax, func(t *chain.Tx) *big.Int { return t.GasFeeCap }, "max fee per gas"},
		{"tip_max", w.TipMax, p.tipMax, &r.limits.tipMax, func(t *chain.Tx) *big.Int { return t.TipCap() }, "priority fee per gas"},
	} {
		name, limit, v := f.name, f.name, f.def
		switch {
		case f.src != "":
			var err error
			if v, err = p.nativeAmount(f.src); err != nil {
				return nil, fmt.Errorf("%s: %w", f.name, err)
			}
		case deny:
			continue
		default:
			// An allowing rule without its own cap gets the document's
			// default, so fees are never unbounded.
			name, limit = "default_"+f.name, "the policy's default "+f.name
		}
		*f.dst = v
		add(name, func(c *evalCtx) (bool, string) {
			if c.req.Kind != KindTransaction {
				return !deny, "payload is not a transaction"
			}
			if have := f.field(c.req.Tx); have != nil && have.Cmp(v) > 0 {
				return false, fmt.Sprintf("%s %s gwei exceeds %s %s gwei", f.label, formatUnits(have, 9), limit, formatUnits(v, 9))
			}
			return true, ""
		})
	}
	if w.Domain != nil {
		dn := w.Domain
		if len(dn.Name) > 0 {
			names := map[string]bool{}
			for _, n := range dn.Name {
				names[string(n)] = true
			}
			add("domain.name", func(c *evalCtx) (bool, string) {
				if c.req.Kind == KindTypedData && names[c.req.Typed.DomainName] {
					return true, ""
				}
				return false, fmt.Sprintf("domain name %q is not %s", c.typedField(func(t *chain.Typed) string { return t.DomainName }), joinScalars(dn.Name))
			})
		}
		if len(dn.Chain) > 0 {
			// "none" matches a domain without a chain id, which is otherwise
			// refused by allowing rules.
			var ids List
			for _, c := range dn.Chain {
				if c == "none" {
					chainless = true
				} else {
					ids = append(ids, c)
				}
			}
			set, err := chainSet(ids)
			if err != nil {
				return nil, fmt.Errorf("domain.chain: %w", err)
			}
			add("domain.chain", func(c *evalCtx) (bool, string) {
				if c.req.Kind != KindTypedData {
					return false, "payload is not typed data"
				}
				id := c.req.Typed.ChainID
				if (id == nil && chainless) || (id != nil && id.IsUint64() && set[id.Uint64()]) {
					return true, ""
				}
				return false, fmt.Sprintf("domain chain id is not %s", joinScalars(dn.Chain))
			})
		}
		if len(dn.Contract) > 0 {
			s, err := p.addrs(dn.Contract)
			if err != nil {
				return nil, fmt.Errorf("domain.contract: %w", err)
			}
			r.sets = append(r.sets, ruleSet{"domain.contract", false, s.set})
			contractSet = s
			add("domain.contract", func(c *evalCtx) (bool, string) {
				if c.req.Kind == KindTypedData && s.has(c.req.Typed.VerifyingContract) {
					return true, ""
				}
				return false, fmt.Sprintf("verifying contract is not %s", s.name)
			})
		}
	}
	if len(w.PrimaryType) > 0 {
		set := map[string]bool{}
		for _, t := range w.PrimaryType {
			set[string(t)] = true
		}
		add("primary_type", func(c *evalCtx) (bool, string) {
			if c.req.Kind == KindTypedData && set[c.req.Typed.PrimaryType] {
				return true, ""
			}
			return false, fmt.Sprintf("primary type %q is not %s", c.typedField(func(t *chain.Typed) string { return t.PrimaryType }), joinScalars(w.PrimaryType))
		})
	}
	if len(w.Delegate) > 0 {
		s, err := p.addrs(w.Delegate)
		if err != nil {
			return nil, fmt.Errorf("delegate: %w", err)
		}
		r.sets = append(r.sets, ruleSet{"delegate", false, s.set})
		add("delegate", func(c *evalCtx) (bool, string) {
			if c.req.Kind != KindTransaction {
				return false, "payload is not a transaction"
			}
			if len(c.req.Tx.Authorizations) == 0 {
				return false, "transaction has no EIP-7702 authorization"
			}
			if deny {
				for _, a := range c.req.Tx.Authorizations {
					if s.has(a.Delegate) {
						return true, ""
					}
				}
				return false, fmt.Sprintf("no EIP-7702 delegate is in %s", s.name)
			}
			for _, a := range c.req.Tx.Authorizations {
				if !s.has(a.Delegate) {
					return false, fmt.Sprintf("EIP-7702 delegate %s is not in %s", shortAddr(a.Delegate), s.name)
				}
			}
			return true, ""
		})
	}
	if len(w.MessagePrefix) > 0 {
		prefixes := make([]string, len(w.MessagePrefix))
		for i, m := range w.MessagePrefix {
			prefixes[i] = string(m)
		}
		add("message_prefix", func(c *evalCtx) (bool, string) {
			for _, pre := range prefixes {
				if c.req.Kind == KindPersonalMessage && strings.HasPrefix(string(c.req.Message), pre) {
					return true, ""
				}
			}
			return false, fmt.Sprintf("message does not start with %s", joinScalars(w.MessagePrefix))
		})
	}
	if w.Grant != nil {
		want := *w.Grant
		add("grant", func(c *evalCtx) (bool, string) {
			if (c.grant != nil) == want {
				return true, ""
			}
			if want {
				return false, "the rule needs a grant"
			}
			return false, "the rule does not apply to requests under a grant"
		})
	}
	if !deny {
		// Implicit narrowing that a careless rule must not be able to skip.
		hasTo, hasRecipient, hasDelegate := len(w.To) > 0, len(w.Recipient) > 0, len(w.Delegate) > 0
		// Conditions about what typed data moves say nothing about typed
		// data nobody decoded, unless the rule names its type and contract.
		aboutAssets := hasRecipient || len(w.NotRecipient) > 0 || len(w.Token) > 0 || w.AmountMax != ""
		namesTyped := len(w.PrimaryType) > 0 && w.Domain != nil && len(w.Domain.Contract) > 0
		// A grant rule defers scope to the grant, which the engine has
		// already checked: destinations, selectors and recipients.
		underGrant := w.Grant != nil && *w.Grant
		add("implicit", func(c *evalCtx) (bool, string) {
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
	}
	if rd.Budget != nil {
		if deny {
			return nil, fmt.Errorf("a deny rule has no budget")
		}
		b, err := p.compileBudget(rd.Budget, ruleToken)
		if err != nil {
			return nil, fmt.Errorf("budget: %w", err)
		}
		r.budget = b
		id := r.id
		add("budget", func(c *evalCtx) (bool, string) { return c.checkBudget(id, b) })
	}
	// Conditions that say what a rule is about run before those that limit
	// it, so that the nearest miss of a default deny names a useful rule.
	sort.SliceStable(r.conds, func(i, j int) bool { return condOrder(r.conds[i].name) < condOrder(r.conds[j].name) })
	shape := *rd
	shape.When.ValueMax, shape.When.AmountMax, shape.When.GasMax, shape.When.FeeMax, shape.When.TipMax = "", "", "", "", ""
	// Address conditions are compared as resolved sets (r.sets); the shape
	// keeps only which of them the rule has.
	placeholder := func(l List) List {
		if len(l) == 0 {
			return nil
		}
		return List{"*"}
	}
	shape.When.Key, shape.When.To, shape.When.NotTo = placeholder(w.Key), placeholder(w.To), placeholder(w.NotTo)
	shape.When.Recipient, shape.When.NotRecipient = placeholder(w.Recipient), placeholder(w.NotRecipient)
	shape.When.Token, shape.When.Delegate = placeholder(w.Token), placeholder(w.Delegate)
	if w.Args != nil {
		shape.When.Args = map[string]List{}
		for n, l := range w.Args {
			shape.When.Args[n] = placeholder(l)
		}
	}
	if w.Domain != nil {
		dn := *w.Domain
		dn.Contract = placeholder(dn.Contract)
		shape.When.Domain = &dn
	}
	shape.Tier, shape.Allow, shape.Deny, shape.Description = "", false, false, ""
	if shape.Budget != nil {
		shape.Budget = &BudgetDoc{Window: rd.Budget.Window}
	}
	// The shape is compared as text by the tightening check: a shape that
	// cannot be encoded must fail the document, not compare equal to
	// another that cannot.
	sb, err := encodeJSON(shape)
	if err != nil {
		return nil, fmt.Errorf("encode rule shape: %w", err)
	}
	r.shape = string(sb)
	return r, nil
}

func (p *Policy) compileBudget(bd *BudgetDoc, t *tokenInfo) (*budget, error) {
	w, err := time.ParseDuration(string(bd.Window))
	if err != nil || w <= 0 || w > MaxWindow {
		return nil, fmt.Errorf("window %q (at most %s)", bd.Window, MaxWindow)
	}
	b := &budget{window: w, count: bd.Count}
	if bd.Value != "" {
		if b.value, err = p.nativeAmount(bd.Value); err != nil {
			return nil, fmt.Errorf("value: %w", err)
		}
	}
	if bd.Amount != "" {
		if t == nil {
			return nil, fmt.Errorf("amount needs token to name exactly one declared token")
		}
		b.token = t
		if b.amount, err = p.tokenAmount(bd.Amount, t); err != nil {
			return nil, fmt.Errorf("amount: %w", err)
		}
	}
	if b.value == nil && b.amount == nil && b.count == 0 {
		return nil, fmt.Errorf("no value, amount or count")
	}
	return b, nil
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

var condOrders = map[string]int{
	"kind": 0, "chain": 1, "agent": 2, "key": 3, "call": 4, "token": 6, "primary_type": 8,
	"message_prefix": 9, "grant": 10, "to": 11, "not_to": 12, "recipient": 13, "not_recipient": 14,
	"delegate": 15, "calldata": 16, "value_max": 17, "amount_max": 18, "gas_max": 19, "fee_max": 20, "tip_max": 21,
	"default_fee_max": 20, "default_tip_max": 21,
	"implicit": 22, "budget": 23,
}

func condOrder(name string) int {
	if o, ok := condOrders[name]; ok {
		return o
	}
	if strings.HasPrefix(name, "args.") {
		return 5
	}
	return 7 // domain.*
}

// hasCalldata reports whether tx calls code: any data, decoded or not.
func hasCalldata(tx *chain.Tx) bool { return tx.Call != nil || len(tx.Data) > 0 }

func chainSet(l List) (map[uint64]bool, error) {
	set := map[uint64]bool{}
	for _, c := range l {
		v, err := strconv.ParseUint(string(c), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a chain id", c)
		}
		set[v] = true
	}
	return set, nil
}

func parseSelector(s string) ([4]byte, error) {
	var sel [4]byte
	if !strings.HasPrefix(s, "0x") {
		// YAML reads an unquoted 0x12345678 as a number.
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return sel, fmt.Errorf("%q is not a 4-byte selector", s)
		}
		sel[0], sel[1], sel[2], sel[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		return sel, nil
	}
	b, err := hex.DecodeString(s[2:])
	if err != nil || len(b) != 4 {
		return sel, fmt.Errorf("%q is not a 4-byte selector", s)
	}
	copy(sel[:], b)
	return sel, nil
}

func joinScalars(l List) string {
	parts := make([]string, len(l))
	for i, s := range l {
		parts[i] = string(s)
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
