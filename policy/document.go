package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/token"
)

// Bounds on a policy document's source, checked before it is parsed (and
// before any signature over it is), so that a small hostile document cannot
// make a node allocate without limit.
const (
	// MaxDocumentSize is the largest document source accepted, in bytes.
	MaxDocumentSize = 256 << 10
	// MaxDocumentDepth bounds the nesting of mappings and sequences; a
	// real document nests about six deep.
	MaxDocumentDepth = 16
)

// Document is the source form of a policy, as a guardian writes and reads it.
// Field by field it mirrors the YAML described in docs/policy.md. Its
// canonical encoding (Canonical) is what gets hashed and signed.
type Document struct {
	// Version must grow with every replacement.
	Version uint64 `yaml:"version" json:"version"`
	// Replaces is the hash of the document this one replaces; empty for the
	// first document of a wallet.
	Replaces string `yaml:"replaces,omitempty" json:"replaces,omitempty"`
	// Guardians maps a guardian's name to its identity account.
	Guardians map[string]string `yaml:"guardians" json:"guardians"`
	// Agents maps an agent id to its Ed25519 credential public key (0x
	// hex): every node verifies an agent's request signature with it.
	// Adding an agent (or changing its key) loosens, removing one tightens.
	Agents map[string]string `yaml:"agents,omitempty" json:"agents,omitempty"`
	// Quorum is how many distinct guardians must sign to loosen or unfreeze.
	Quorum int `yaml:"quorum" json:"quorum"`
	// Tiers, least demanding first.
	Tiers []TierDoc `yaml:"tiers" json:"tiers"`
	// Tokens maps a symbol to its contract and decimals.
	Tokens map[string]TokenDoc `yaml:"tokens,omitempty" json:"tokens,omitempty"`
	// Lists are named address lists that rules reference as $name.
	Lists map[string][]Scalar `yaml:"lists,omitempty" json:"lists,omitempty"`
	// Rules in evaluation order.
	Rules []RuleDoc `yaml:"rules" json:"rules"`
	// Breaker configures the circuit breaker; nil disables it.
	Breaker *BreakerDoc `yaml:"breaker,omitempty" json:"breaker,omitempty"`
	// Defaults are limits applied to allowing rules that set none.
	Defaults *DefaultsDoc `yaml:"defaults,omitempty" json:"defaults,omitempty"`
}

// DefaultsDoc holds the fee caps that apply to every allowing rule without
// its own fee_max or tip_max; unset fields take DefaultFeeMax and
// DefaultTipMax.
type DefaultsDoc struct {
	FeeMax Scalar `yaml:"fee_max,omitempty" json:"fee_max,omitempty"`
	TipMax Scalar `yaml:"tip_max,omitempty" json:"tip_max,omitempty"`
}

// TierDoc is the source form of a tier.
type TierDoc struct {
	Name string `yaml:"name" json:"name"`
	// Signers are the roles that must be in the quorum: agent, policy, guardian.
	Signers []string `yaml:"signers" json:"signers"`
	// Approvals is the number of distinct guardian approvals needed.
	Approvals int `yaml:"approvals,omitempty" json:"approvals,omitempty"`
	// Delay before signing, as a Go duration ("1h").
	Delay Scalar `yaml:"delay,omitempty" json:"delay,omitempty"`
}

// TokenDoc declares an ERC-20 token.
type TokenDoc struct {
	Address  string `yaml:"address" json:"address"`
	Decimals int    `yaml:"decimals" json:"decimals"`
}

// RuleDoc is the source form of a rule: conditions and a verdict. Exactly
// one of Tier, Allow and Deny is set.
type RuleDoc struct {
	ID          string     `yaml:"id" json:"id"`
	Description string     `yaml:"description,omitempty" json:"description,omitempty"`
	When        When       `yaml:"when" json:"when"`
	Budget      *BudgetDoc `yaml:"budget,omitempty" json:"budget,omitempty"`
	Tier        string     `yaml:"tier,omitempty" json:"tier,omitempty"`
	Allow       bool       `yaml:"allow,omitempty" json:"allow,omitempty"`
	Deny        bool       `yaml:"deny,omitempty" json:"deny,omitempty"`
}

// When holds a rule's conditions; all of them must hold for the rule to
// match. Lists accept a single value or a sequence; $name refers to a list
// (or, for token, to a token symbol). docs/policy.md describes each one.
type When struct {
	Kind         List            `yaml:"kind,omitempty" json:"kind,omitempty"`
	Chain        List            `yaml:"chain,omitempty" json:"chain,omitempty"`
	Agent        List            `yaml:"agent,omitempty" json:"agent,omitempty"`
	Key          List            `yaml:"key,omitempty" json:"key,omitempty"`
	To           List            `yaml:"to,omitempty" json:"to,omitempty"`
	NotTo        List            `yaml:"not_to,omitempty" json:"not_to,omitempty"`
	Recipient    List            `yaml:"recipient,omitempty" json:"recipient,omitempty"`
	NotRecipient List            `yaml:"not_recipient,omitempty" json:"not_recipient,omitempty"`
	Call         List            `yaml:"call,omitempty" json:"call,omitempty"`
	Selector     List            `yaml:"selector,omitempty" json:"selector,omitempty"`
	Args         map[string]List `yaml:"args,omitempty" json:"args,omitempty"`
	// Calldata is "any" (a transaction may carry any calldata) or "none"
	// (only transactions without calldata). An allowing rule without call,
	// selector, args or calldata: any matches only transactions without
	// calldata, so a rule written for payments never allows contract calls.
	Calldata      Scalar     `yaml:"calldata,omitempty" json:"calldata,omitempty"`
	Token         List       `yaml:"token,omitempty" json:"token,omitempty"`
	ValueMax      Scalar     `yaml:"value_max,omitempty" json:"value_max,omitempty"`
	AmountMax     Scalar     `yaml:"amount_max,omitempty" json:"amount_max,omitempty"`
	GasMax        Scalar     `yaml:"gas_max,omitempty" json:"gas_max,omitempty"`
	FeeMax        Scalar     `yaml:"fee_max,omitempty" json:"fee_max,omitempty"`
	TipMax        Scalar     `yaml:"tip_max,omitempty" json:"tip_max,omitempty"`
	Domain        *DomainDoc `yaml:"domain,omitempty" json:"domain,omitempty"`
	PrimaryType   List       `yaml:"primary_type,omitempty" json:"primary_type,omitempty"`
	Delegate      List       `yaml:"delegate,omitempty" json:"delegate,omitempty"`
	MessagePrefix List       `yaml:"message_prefix,omitempty" json:"message_prefix,omitempty"`
	Grant         *bool      `yaml:"grant,omitempty" json:"grant,omitempty"`
}

// DomainDoc constrains an EIP-712 domain.
type DomainDoc struct {
	Name     List `yaml:"name,omitempty" json:"name,omitempty"`
	Chain    List `yaml:"chain,omitempty" json:"chain,omitempty"`
	Contract List `yaml:"contract,omitempty" json:"contract,omitempty"`
}

// BudgetDoc is a rolling-window budget attached to a rule, tracked per
// agent, key and asset.
type BudgetDoc struct {
	Window Scalar `yaml:"window" json:"window"`
	Value  Scalar `yaml:"value,omitempty" json:"value,omitempty"`
	Amount Scalar `yaml:"amount,omitempty" json:"amount,omitempty"`
	Count  uint64 `yaml:"count,omitempty" json:"count,omitempty"`
}

// BreakerDoc configures the circuit breaker's detectors; a nil detector is
// off.
type BreakerDoc struct {
	Requests        *RateDoc    `yaml:"requests,omitempty" json:"requests,omitempty"`
	Denials         *RateDoc    `yaml:"denials,omitempty" json:"denials,omitempty"`
	NewDestinations *RateDoc    `yaml:"new_destinations,omitempty" json:"new_destinations,omitempty"`
	ValueOutlier    *OutlierDoc `yaml:"value_outlier,omitempty" json:"value_outlier,omitempty"`
}

// RateDoc trips when more than Max events happen within Window.
type RateDoc struct {
	Max    int    `yaml:"max" json:"max"`
	Window Scalar `yaml:"window" json:"window"`
}

// OutlierDoc trips when one request spends more than Factor times the median
// of the agent's last allowed spends of that asset, once it has MinHistory.
type OutlierDoc struct {
	Factor     int64 `yaml:"factor" json:"factor"`
	MinHistory int   `yaml:"min_history" json:"min_history"`
}

// Scalar is a YAML scalar kept as text, whatever YAML would have made of it.
type Scalar string

// UnmarshalYAML implements yaml.InterfaceUnmarshaler.
func (s *Scalar) UnmarshalYAML(unmarshal func(any) error) error {
	var v any
	if err := unmarshal(&v); err != nil {
		return err
	}
	switch x := v.(type) {
	case nil:
		*s = ""
	case string:
		*s = Scalar(x)
	case uint64:
		*s = Scalar(strconv.FormatUint(x, 10))
	case int64:
		*s = Scalar(strconv.FormatInt(x, 10))
	case int:
		*s = Scalar(strconv.Itoa(x))
	case bool:
		*s = Scalar(strconv.FormatBool(x))
	case float64:
		return fmt.Errorf("%v: write decimals with a unit, or quote them", x)
	default:
		return fmt.Errorf("expected a scalar, got %T", v)
	}
	return nil
}

// List is a YAML scalar or sequence of scalars.
type List []Scalar

// UnmarshalYAML implements yaml.InterfaceUnmarshaler.
func (l *List) UnmarshalYAML(unmarshal func(any) error) error {
	var many []Scalar
	if err := unmarshal(&many); err == nil {
		*l = many
		return nil
	}
	var one Scalar
	if err := unmarshal(&one); err != nil {
		return err
	}
	*l = List{one}
	return nil
}

// ParseDocument reads a policy document from YAML. Unknown fields are
// errors, so a misspelt condition cannot silently widen a rule. The source
// is checked first (see checkSource): size, nesting depth, and no anchors,
// aliases, merge keys, tags or fractional numbers.
func ParseDocument(src []byte) (*Document, error) {
	if err := checkSource(src); err != nil {
		return nil, errorf("parse document: %w", err)
	}
	var d Document
	if err := yaml.UnmarshalWithOptions(src, &d, yaml.DisallowUnknownField()); err != nil {
		return nil, errorf("parse document: %w", err)
	}
	return &d, nil
}

// Canonical returns the canonical encoding of d: JSON with struct fields in
// declaration order, map keys sorted and no insignificant whitespace. Two
// YAML texts that mean the same document have the same encoding.
func (d *Document) Canonical() []byte {
	b, err := json.Marshal(d)
	if err != nil {
		// Every field is a string, number, bool, slice or map of those.
		panic(fmt.Sprintf("policy: canonical encoding: %v", err))
	}
	return b
}

// Hash is the document's content hash and version identity: keccak256 of
// its canonical encoding.
func (d *Document) Hash() common.Hash { return crypto.Keccak256Hash(d.Canonical()) }

// checkSource bounds what parsing src can cost, and refuses YAML features
// whose meaning a guardian reading the text could miss. It tokenizes
// (linear in the size, nothing expanded) and refuses:
//   - a source larger than MaxDocumentSize, or not UTF-8;
//   - anchors, aliases, merge keys and explicit ("? ") keys: alias expansion is how a few hundred
//     bytes become gigabytes ("billion laughs"), and a signed document
//     gains nothing from them;
//   - tags (!!binary, !!float...), which change what a scalar means;
//   - directives, and document markers after content (a second document
//     would be text the signed meaning does not contain);
//   - numbers with a fraction or exponent, infinities and NaN: no field
//     takes one, and an integer field would truncate 1.9 to 1;
//   - nesting deeper than MaxDocumentDepth, counting flow brackets and
//     block indentation levels (compact "- - -" entries included), so the
//     recursive parser never goes deep.
func checkSource(src []byte) error {
	if len(src) > MaxDocumentSize {
		return fmt.Errorf("document of %d bytes exceeds %d", len(src), MaxDocumentSize)
	}
	if !utf8.Valid(src) {
		return fmt.Errorf("document is not UTF-8")
	}
	tokens := lexer.Tokenize(string(src))
	var (
		flow    int   // open flow collections
		block   []int // columns of the open block collections
		content bool  // a token other than a comment was seen
	)
	for i, tk := range tokens {
		at := func(what string) error {
			v := tk.Value
			if (tk.Type == token.AnchorType || tk.Type == token.AliasType) && i+1 < len(tokens) {
				v += tokens[i+1].Value // the name
			}
			return fmt.Errorf("line %d column %d: %s %q not allowed in a policy document", tk.Position.Line, tk.Position.Column, what, v)
		}
		switch tk.Type {
		case token.AnchorType:
			return at("anchor")
		case token.AliasType:
			return at("alias")
		case token.MergeKeyType:
			return at("merge key")
		case token.MappingKeyType:
			return at("explicit key")
		case token.TagType:
			return at("tag")
		case token.DirectiveType:
			return at("directive")
		case token.FloatType, token.InfinityType, token.NanType:
			return fmt.Errorf("line %d column %d: number %q has a fraction (write decimals with a unit, or quote them)", tk.Position.Line, tk.Position.Column, tk.Value)
		case token.DocumentHeaderType, token.DocumentEndType:
			if content {
				return at("document marker after content")
			}
		case token.SequenceStartType, token.MappingStartType:
			flow++
		case token.SequenceEndType, token.MappingEndType:
			if flow > 0 {
				flow--
			}
		}
		if flow == 0 && (tk.Type == token.SequenceEntryType || isBlockKey(tokens, i)) {
			// A block collection's entries share a column; a deeper one
			// starts further right.
			col := tk.Position.Column
			for len(block) > 0 && block[len(block)-1] > col {
				block = block[:len(block)-1]
			}
			if len(block) == 0 || block[len(block)-1] < col {
				block = append(block, col)
			}
		}
		if tk.Type != token.CommentType {
			content = true
		}
		if d := len(block) + flow; d > MaxDocumentDepth {
			return fmt.Errorf("line %d column %d: nesting deeper than %d", tk.Position.Line, tk.Position.Column, MaxDocumentDepth)
		}
	}
	return nil
}

// isBlockKey reports whether tokens[i] is a mapping key: the next token
// that is not a comment is a mapping value indicator.
func isBlockKey(tokens token.Tokens, i int) bool {
	if tokens[i].Type == token.MappingValueType || tokens[i].Type == token.CommentType {
		return false
	}
	for _, n := range tokens[i+1:] {
		if n.Type != token.CommentType {
			return n.Type == token.MappingValueType
		}
	}
	return false
}
