package policy

import (
	"encoding/hex"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
)

// condition compiles one condition of a rule into checks. Its position in
// conditions is its evaluation order.
type condition struct {
	// name is what traces and reasons call the condition: its field of
	// `when` (domain.name for a field of domain).
	name string
	// fields are the document fields the condition reads, when they are
	// not just name. The safety narrowing reads no field of its own.
	fields []string
	// compile adds the condition's checks to the rule, if its fields are
	// set; it may read what conditions before it in the table resolved.
	compile func(*ruleBuild) error
}

// conditions are the compilers of every rule condition, in evaluation
// order: conditions that say what a rule is about run before those that
// limit it, so that the nearest miss of a default deny names a useful rule.
// docs/policy.md lists them in this order. Adding a condition is adding
// its entry here (and its field to When).
var conditions = []condition{
	{name: "kind", compile: compileKind},
	{name: "chain", compile: compileChain},
	{name: "agent", compile: compileAgent},
	{name: "key", compile: compileKey},
	{name: "call", fields: []string{"call", "selector"}, compile: compileCall},
	{name: "args", compile: compileArgs},
	{name: "token", compile: compileToken},
	{name: "domain.name", compile: compileDomainName},
	{name: "domain.chain", compile: compileDomainChain},
	{name: "domain.contract", compile: compileDomainContract},
	{name: "primary_type", compile: compilePrimaryType},
	{name: "message_prefix", compile: compileMessagePrefix},
	{name: "grant", compile: compileGrant},
	{name: "to", compile: compileTo},
	{name: "not_to", compile: compileNotTo},
	{name: "recipient", compile: compileRecipient},
	{name: "not_recipient", compile: compileNotRecipient},
	{name: "delegate", compile: compileDelegate},
	{name: "calldata", compile: compileCalldata},
	{name: "value_max", compile: compileValueMax},
	{name: "amount_max", compile: compileAmountMax},
	{name: "gas_max", compile: compileGasMax},
	{name: "fee_max", compile: compileFeeMax},
	{name: "tip_max", compile: compileTipMax},
	{name: "implicit", fields: []string{}, compile: compileImplicit},
	{name: "budget", compile: compileRuleBudget},
}

// ruleBuild is one rule's compilation, passed to each condition compiler
// in table order.
type ruleBuild struct {
	p    *Policy
	rd   *RuleDoc
	w    *When
	r    *rule
	deny bool

	// Resolved by a condition for those after it.
	token        *tokenInfo       // token, when it names exactly one declared token
	explicitSels map[[4]byte]bool // selector: only these may reach a token contract undecoded
	chainless    bool             // domain.chain lists none
	toSet        *addrSet         // to
	contractSet  *addrSet         // domain.contract
}

func (b *ruleBuild) add(name string, check func(*evalCtx) (bool, string)) {
	b.r.conds = append(b.r.conds, cond{name, check})
}

// addrs resolves the address condition cond and records it for the
// tightening check; neg is set for a condition that matches less as its set
// grows.
func (b *ruleBuild) addrs(cond string, l List, neg bool) (*addrSet, error) {
	s, err := b.p.addrs(l)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cond, err)
	}
	b.r.sets = append(b.r.sets, ruleSet{cond, neg, s.set})
	return s, nil
}

// compileKind: explicit, or inferred from the conditions; deny rules
// default to every kind so that a deny list also covers typed data.
func compileKind(b *ruleBuild) error {
	w := b.w
	var mask uint8
	for _, k := range w.Kind {
		kk, err := parseKind(string(k))
		if err != nil {
			return err
		}
		mask |= kindMask(kk)
	}
	if mask == 0 {
		switch {
		case b.deny:
			mask = kindMask(KindTransaction, KindTypedData, KindPersonalMessage, KindRawDigest)
		case w.Domain != nil || len(w.PrimaryType) > 0:
			mask = kindMask(KindTypedData)
		case len(w.MessagePrefix) > 0:
			mask = kindMask(KindPersonalMessage)
		default:
			mask = kindMask(KindTransaction)
		}
	}
	b.add("kind", func(c *evalCtx) (bool, string) {
		if mask&(1<<c.req.Kind) != 0 {
			return true, ""
		}
		return false, fmt.Sprintf("payload kind %s is not covered by the rule", c.req.Kind)
	})
	return nil
}

func compileChain(b *ruleBuild) error {
	l := b.w.Chain
	if len(l) == 0 {
		return nil
	}
	set, err := chainSet(l)
	if err != nil {
		return fmt.Errorf("chain: %w", err)
	}
	b.add("chain", func(c *evalCtx) (bool, string) {
		if c.req.ChainID.IsUint64() && set[c.req.ChainID.Uint64()] {
			return true, ""
		}
		return false, fmt.Sprintf("chain %s is not in %s", c.req.ChainID, joinScalars(l))
	})
	return nil
}

func compileAgent(b *ruleBuild) error {
	l := b.w.Agent
	if len(l) == 0 {
		return nil
	}
	set := map[ids.AgentID]bool{}
	for _, a := range l {
		if _, ok := b.p.agents[ids.AgentID(a)]; len(b.p.agents) > 0 && !ok {
			return fmt.Errorf("agent: %s is not in the agent registry", a)
		}
		set[ids.AgentID(a)] = true
	}
	b.add("agent", func(c *evalCtx) (bool, string) {
		if set[c.req.Agent] {
			return true, ""
		}
		return false, fmt.Sprintf("agent %s is not in %s", c.req.Agent, joinScalars(l))
	})
	return nil
}

func compileKey(b *ruleBuild) error {
	if len(b.w.Key) == 0 {
		return nil
	}
	s, err := b.addrs("key", b.w.Key, false)
	if err != nil {
		return err
	}
	b.add("key", func(c *evalCtx) (bool, string) {
		if s.has(c.req.Key) {
			return true, ""
		}
		return false, fmt.Sprintf("key %s is not in %s", shortAddr(c.req.Key), s.name)
	})
	return nil
}

// compileCall: call names decoded methods, selector any 4-byte selectors;
// either makes one condition.
func compileCall(b *ruleBuild) error {
	w := b.w
	b.explicitSels = map[[4]byte]bool{}
	if len(w.Call) == 0 && len(w.Selector) == 0 {
		return nil
	}
	sels := map[[4]byte]bool{}
	var names []string
	for _, m := range w.Call {
		sel, ok := chain.MethodSelector(string(m))
		if !ok {
			return fmt.Errorf("call: unknown method %q (use selector)", m)
		}
		sels[sel] = true
		names = append(names, string(m))
	}
	for _, sv := range w.Selector {
		sel, err := parseSelector(string(sv))
		if err != nil {
			return fmt.Errorf("selector: %w", err)
		}
		sels[sel] = true
		b.explicitSels[sel] = true
		names = append(names, "0x"+hex.EncodeToString(sel[:]))
	}
	want := strings.Join(names, ", ")
	b.add("call", func(c *evalCtx) (bool, string) {
		if c.req.Kind != KindTransaction || c.req.Tx.Call == nil {
			return false, fmt.Sprintf("no calldata; the rule wants %s", want)
		}
		if sels[c.req.Tx.Call.Selector] {
			return true, ""
		}
		return false, fmt.Sprintf("selector 0x%x is not %s", c.req.Tx.Call.Selector, want)
	})
	return nil
}

// compileArgs makes one condition per argument, args.NAME, in name order.
func compileArgs(b *ruleBuild) error {
	names := make([]string, 0, len(b.w.Args))
	for n := range b.w.Args {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		s, err := b.addrs("args."+name, b.w.Args[name], false)
		if err != nil {
			return err
		}
		b.add("args."+name, func(c *evalCtx) (bool, string) {
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
	return nil
}

// compileToken: in an allowing rule every token moved is listed, in a deny
// rule any is. A token condition naming one declared token is the rule's
// token, which amount_max and the budget's amount count in.
func compileToken(b *ruleBuild) error {
	if len(b.w.Token) == 0 {
		return nil
	}
	s, err := b.addrs("token", b.w.Token, false)
	if err != nil {
		return err
	}
	if len(s.set) == 1 {
		for a := range s.set {
			b.token = b.p.tokenAddr[a]
		}
	}
	if b.deny {
		b.add("token", func(c *evalCtx) (bool, string) {
			for _, sp := range c.spends {
				if !sp.IsNative() && s.has(sp.Token) {
					return true, ""
				}
			}
			return false, fmt.Sprintf("no token spend is of %s", s.name)
		})
		return nil
	}
	b.add("token", func(c *evalCtx) (bool, string) {
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
	return nil
}

func compileDomainName(b *ruleBuild) error {
	if b.w.Domain == nil || len(b.w.Domain.Name) == 0 {
		return nil
	}
	l := b.w.Domain.Name
	names := map[string]bool{}
	for _, n := range l {
		names[string(n)] = true
	}
	b.add("domain.name", func(c *evalCtx) (bool, string) {
		if c.req.Kind == KindTypedData && names[c.req.Typed.DomainName] {
			return true, ""
		}
		return false, fmt.Sprintf("domain name %q is not %s", c.typedField(func(t *chain.Typed) string { return t.DomainName }), joinScalars(l))
	})
	return nil
}

// compileDomainChain: "none" matches a domain without a chain id, which
// the safety narrowing otherwise refuses in allowing rules.
func compileDomainChain(b *ruleBuild) error {
	if b.w.Domain == nil || len(b.w.Domain.Chain) == 0 {
		return nil
	}
	l := b.w.Domain.Chain
	var chains List
	for _, c := range l {
		if c == "none" {
			b.chainless = true
		} else {
			chains = append(chains, c)
		}
	}
	set, err := chainSet(chains)
	if err != nil {
		return fmt.Errorf("domain.chain: %w", err)
	}
	chainless := b.chainless
	b.add("domain.chain", func(c *evalCtx) (bool, string) {
		if c.req.Kind != KindTypedData {
			return false, "payload is not typed data"
		}
		id := c.req.Typed.ChainID
		if (id == nil && chainless) || (id != nil && id.IsUint64() && set[id.Uint64()]) {
			return true, ""
		}
		return false, fmt.Sprintf("domain chain id is not %s", joinScalars(l))
	})
	return nil
}

func compileDomainContract(b *ruleBuild) error {
	if b.w.Domain == nil || len(b.w.Domain.Contract) == 0 {
		return nil
	}
	s, err := b.addrs("domain.contract", b.w.Domain.Contract, false)
	if err != nil {
		return err
	}
	b.contractSet = s
	b.add("domain.contract", func(c *evalCtx) (bool, string) {
		if c.req.Kind == KindTypedData && s.has(c.req.Typed.VerifyingContract) {
			return true, ""
		}
		return false, fmt.Sprintf("verifying contract is not %s", s.name)
	})
	return nil
}

func compilePrimaryType(b *ruleBuild) error {
	l := b.w.PrimaryType
	if len(l) == 0 {
		return nil
	}
	set := map[string]bool{}
	for _, t := range l {
		set[string(t)] = true
	}
	b.add("primary_type", func(c *evalCtx) (bool, string) {
		if c.req.Kind == KindTypedData && set[c.req.Typed.PrimaryType] {
			return true, ""
		}
		return false, fmt.Sprintf("primary type %q is not %s", c.typedField(func(t *chain.Typed) string { return t.PrimaryType }), joinScalars(l))
	})
	return nil
}

func compileMessagePrefix(b *ruleBuild) error {
	l := b.w.MessagePrefix
	if len(l) == 0 {
		return nil
	}
	prefixes := make([]string, len(l))
	for i, m := range l {
		prefixes[i] = string(m)
	}
	b.add("message_prefix", func(c *evalCtx) (bool, string) {
		for _, pre := range prefixes {
			if c.req.Kind == KindPersonalMessage && strings.HasPrefix(string(c.req.Message), pre) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("message does not start with %s", joinScalars(l))
	})
	return nil
}

func compileGrant(b *ruleBuild) error {
	if b.w.Grant == nil {
		return nil
	}
	want := *b.w.Grant
	b.add("grant", func(c *evalCtx) (bool, string) {
		if (c.grant != nil) == want {
			return true, ""
		}
		if want {
			return false, "the rule needs a grant"
		}
		return false, "the rule does not apply to requests under a grant"
	})
	return nil
}

func compileTo(b *ruleBuild) error {
	if len(b.w.To) == 0 {
		return nil
	}
	s, err := b.addrs("to", b.w.To, false)
	if err != nil {
		return err
	}
	b.toSet = s
	b.add("to", func(c *evalCtx) (bool, string) {
		if !c.hasDest {
			return false, "request has no destination"
		}
		if s.has(c.dest) {
			return true, ""
		}
		return false, fmt.Sprintf("destination %s is not in %s", shortAddr(c.dest), s.name)
	})
	return nil
}

func compileNotTo(b *ruleBuild) error {
	if len(b.w.NotTo) == 0 {
		return nil
	}
	s, err := b.addrs("not_to", b.w.NotTo, true)
	if err != nil {
		return err
	}
	b.add("not_to", func(c *evalCtx) (bool, string) {
		if c.hasDest && s.has(c.dest) {
			return false, fmt.Sprintf("destination %s is in %s", shortAddr(c.dest), s.name)
		}
		return true, ""
	})
	return nil
}

// compileRecipient: in an allowing rule every recipient is listed, in a
// deny rule any is.
func compileRecipient(b *ruleBuild) error {
	if len(b.w.Recipient) == 0 {
		return nil
	}
	s, err := b.addrs("recipient", b.w.Recipient, false)
	if err != nil {
		return err
	}
	if b.deny {
		b.add("recipient", func(c *evalCtx) (bool, string) {
			for _, sp := range c.spends {
				if s.has(sp.To) {
					return true, ""
				}
			}
			return false, fmt.Sprintf("no recipient is in %s", s.name)
		})
		return nil
	}
	b.add("recipient", func(c *evalCtx) (bool, string) {
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
	return nil
}

func compileNotRecipient(b *ruleBuild) error {
	if len(b.w.NotRecipient) == 0 {
		return nil
	}
	s, err := b.addrs("not_recipient", b.w.NotRecipient, true)
	if err != nil {
		return err
	}
	b.add("not_recipient", func(c *evalCtx) (bool, string) {
		for _, sp := range c.spends {
			if s.has(sp.To) {
				return false, fmt.Sprintf("%s recipient %s is in %s", sp.Kind, shortAddr(sp.To), s.name)
			}
		}
		return true, ""
	})
	return nil
}

// compileDelegate: in an allowing rule every EIP-7702 delegate is listed,
// in a deny rule any is.
func compileDelegate(b *ruleBuild) error {
	if len(b.w.Delegate) == 0 {
		return nil
	}
	s, err := b.addrs("delegate", b.w.Delegate, false)
	if err != nil {
		return err
	}
	deny := b.deny
	b.add("delegate", func(c *evalCtx) (bool, string) {
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
	return nil
}

// compileCalldata: calldata is allowed only where a rule says so. A call
// condition names the methods, calldata: any allows whatever the other
// conditions allow; an allowing rule that says neither allows none. Grant
// rules defer to the grant's selectors.
func compileCalldata(b *ruleBuild) error {
	w := b.w
	namesCall := len(w.Call) > 0 || len(w.Selector) > 0 || len(w.Args) > 0
	switch w.Calldata {
	case "":
	case "any", "none":
		if namesCall {
			return fmt.Errorf("calldata: %s with call, selector or args (which already say what calldata may be)", w.Calldata)
		}
	default:
		return fmt.Errorf("calldata: %q (want any or none)", w.Calldata)
	}
	if !(w.Calldata == "none" || (w.Calldata == "" && !b.deny && !namesCall && !(w.Grant != nil && *w.Grant))) {
		return nil
	}
	b.add("calldata", func(c *evalCtx) (bool, string) {
		if c.req.Kind != KindTransaction || !hasCalldata(c.req.Tx) {
			return true, ""
		}
		tx := c.req.Tx
		if tx.To == nil {
			return false, "contract creation carries init code and the rule allows no calldata (it needs call, selector or calldata: any)"
		}
		return false, fmt.Sprintf("calldata 0x%x to %s and the rule allows no calldata (it needs call, selector or calldata: any)", tx.Data[:min(4, len(tx.Data))], shortAddr(*tx.To))
	})
	return nil
}

func compileValueMax(b *ruleBuild) error {
	if b.w.ValueMax == "" {
		return nil
	}
	v, err := b.p.nativeAmount(b.w.ValueMax)
	if err != nil {
		return fmt.Errorf("value_max: %w", err)
	}
	b.r.limits.valueMax = v
	b.add("value_max", func(c *evalCtx) (bool, string) {
		if val := c.req.nativeValue(); val.Cmp(v) > 0 {
			return false, fmt.Sprintf("value %s exceeds value_max %s", formatEther(val), formatEther(v))
		}
		return true, ""
	})
	return nil
}

// compileAmountMax counts in the rule's token (see compileToken).
func compileAmountMax(b *ruleBuild) error {
	if b.w.AmountMax == "" {
		return nil
	}
	t := b.token
	if t == nil {
		return fmt.Errorf("amount_max needs token to name exactly one declared token")
	}
	v, err := b.p.tokenAmount(b.w.AmountMax, t)
	if err != nil {
		return fmt.Errorf("amount_max: %w", err)
	}
	b.r.limits.amountMax = v
	p := b.p
	b.add("amount_max", func(c *evalCtx) (bool, string) {
		amt, unlimited := c.tokenTotal(t.addr)
		if unlimited {
			return false, fmt.Sprintf("amount unlimited exceeds amount_max %s", p.formatToken(v, t.addr))
		}
		if amt.Cmp(v) > 0 {
			return false, fmt.Sprintf("amount %s exceeds amount_max %s", p.formatToken(amt, t.addr), p.formatToken(v, t.addr))
		}
		return true, ""
	})
	return nil
}

func compileGasMax(b *ruleBuild) error {
	if b.w.GasMax == "" {
		return nil
	}
	g, err := strconv.ParseUint(string(b.w.GasMax), 10, 64)
	if err != nil {
		return fmt.Errorf("gas_max: %w", err)
	}
	b.r.limits.gasMax = new(big.Int).SetUint64(g)
	deny := b.deny
	b.add("gas_max", func(c *evalCtx) (bool, string) {
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
	return nil
}

func compileFeeMax(b *ruleBuild) error {
	return b.feeCap("fee_max", b.w.FeeMax, b.p.feeMax, &b.r.limits.feeMax, "max fee per gas",
		func(t *chain.Tx) *big.Int { return t.GasFeeCap })
}

func compileTipMax(b *ruleBuild) error {
	return b.feeCap("tip_max", b.w.TipMax, b.p.tipMax, &b.r.limits.tipMax, "priority fee per gas",
		func(t *chain.Tx) *big.Int { return t.TipCap() })
}

// feeCap compiles a per-gas fee limit: the rule's own (src), or for an
// allowing rule without one the document's default (def), named
// default_NAME, so fees are never unbounded.
func (b *ruleBuild) feeCap(name string, src Scalar, def *big.Int, dst **big.Int, label string, field func(*chain.Tx) *big.Int) error {
	cname, limit, v := name, name, def
	switch {
	case src != "":
		var err error
		if v, err = b.p.nativeAmount(src); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	case b.deny:
		return nil
	default:
		cname, limit = "default_"+name, "the policy's default "+name
	}
	*dst = v
	deny := b.deny
	b.add(cname, func(c *evalCtx) (bool, string) {
		if c.req.Kind != KindTransaction {
			return !deny, "payload is not a transaction"
		}
		if have := field(c.req.Tx); have != nil && have.Cmp(v) > 0 {
			return false, fmt.Sprintf("%s %s gwei exceeds %s %s gwei", label, formatUnits(have, 9), limit, formatUnits(v, 9))
		}
		return true, ""
	})
	return nil
}

// compileRuleBudget counts the budget's amount in the rule's token (see
// compileToken).
func compileRuleBudget(b *ruleBuild) error {
	if b.rd.Budget == nil {
		return nil
	}
	if b.deny {
		return fmt.Errorf("a deny rule has no budget")
	}
	bg, err := b.p.compileBudget(b.rd.Budget, b.token)
	if err != nil {
		return fmt.Errorf("budget: %w", err)
	}
	b.r.budget = bg
	id := b.r.id
	b.add("budget", func(c *evalCtx) (bool, string) { return c.checkBudget(id, bg) })
	return nil
}

func kindMask(ks ...Kind) uint8 {
	var m uint8
	for _, k := range ks {
		m |= 1 << k
	}
	return m
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
