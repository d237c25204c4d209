package policy

import (
	"fmt"

	"github.com/ethereum/go-ethereum/common"
)

// ruleSet is one resolved address condition of a rule. A rule matches more
// as a positive set grows (to, recipient, token, ...) and less as a negative
// one grows (not_to, not_recipient).
type ruleSet struct {
	cond string
	neg  bool
	set  map[common.Address]struct{}
}

// ruleShape is the canonical form of a rule without its limits, verdict,
// description or addresses: two versions of a rule with the same shape
// differ only in what the tightening check compares one by one (limits,
// budget amounts, tier, and address conditions as resolved sets in
// rule.sets).
func ruleShape(rd *RuleDoc) (string, error) {
	w := &rd.When
	shape := *rd
	shape.When.ValueMax, shape.When.AmountMax, shape.When.GasMax, shape.When.FeeMax, shape.When.TipMax = "", "", "", "", ""
	// Address conditions are compared as resolved sets (rule.sets); the
	// shape keeps only which of them the rule has.
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
		return "", fmt.Errorf("encode rule shape: %w", err)
	}
	return string(sb), nil
}
