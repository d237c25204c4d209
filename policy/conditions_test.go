package policy

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// conditionFields are the document fields each entry of the conditions
// table reads, in table order.
func conditionFields() [][]string {
	out := make([][]string, len(conditions))
	for i, c := range conditions {
		out[i] = c.fields
		if c.fields == nil {
			out[i] = []string{c.name}
		}
	}
	return out
}

// schemaConditions are the condition fields of a rule in the document
// schema: every field of When (a field of domain as domain.NAME) and the
// rule's budget.
func schemaConditions(t *testing.T) []string {
	t.Helper()
	var out []string
	var walk func(typ reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				t.Fatalf("field %s%s has no yaml name", prefix, f.Name)
			}
			if ft := f.Type; ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct {
				walk(ft.Elem(), prefix+name+".")
				continue
			}
			out = append(out, prefix+name)
		}
	}
	walk(reflect.TypeOf(When{}), "")
	return append(out, "budget")
}

// TestConditionsCoverSchema: every condition a document can state has
// exactly one compiler in the conditions table, and the table reads no
// field the schema does not have. A field added to When without an entry
// in the table fails here.
func TestConditionsCoverSchema(t *testing.T) {
	owner := map[string]string{}
	for i, fields := range conditionFields() {
		for _, f := range fields {
			if other, dup := owner[f]; dup {
				t.Errorf("field %s is compiled by both %s and %s", f, other, conditions[i].name)
			}
			owner[f] = conditions[i].name
		}
	}
	schema := map[string]bool{}
	for _, f := range schemaConditions(t) {
		schema[f] = true
		if _, ok := owner[f]; !ok {
			t.Errorf("condition %s of the document schema has no compiler in the conditions table", f)
		}
	}
	for f, c := range owner {
		if !schema[f] {
			t.Errorf("compiler %s reads %s, which is not a condition of the document schema", c, f)
		}
	}
	names := map[string]bool{}
	for _, c := range conditions {
		if names[c.name] {
			t.Errorf("two entries named %s", c.name)
		}
		names[c.name] = true
	}
}

// TestConditionsDocumentedOrder: the conditions table of docs/policy.md
// lists the conditions in the order of the conditions table (its
// evaluation order), followed by the safety narrowing and the budget.
func TestConditionsDocumentedOrder(t *testing.T) {
	src, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	_, text, ok := strings.Cut(string(src), "| condition | holds when |\n|---|---|\n")
	if !ok {
		t.Fatal("docs/policy.md has no conditions table")
	}
	text, _, _ = strings.Cut(text, "\n\n")
	row := regexp.MustCompile("^\\| `([a-z_]+)` \\|")
	var documented []string
	for _, line := range strings.Split(text, "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("conditions table row %q does not start with a condition", line)
		}
		documented = append(documented, m[1])
	}
	// The documentation has one row for domain and none for the two
	// entries that are not fields of when.
	var want []string
	for _, fields := range conditionFields() {
		for _, f := range fields {
			f, _, _ = strings.Cut(f, ".")
			if f == "budget" || (len(want) > 0 && want[len(want)-1] == f) {
				continue
			}
			want = append(want, f)
		}
	}
	if strings.Join(documented, " ") != strings.Join(want, " ") {
		t.Errorf("docs/policy.md lists the conditions as\n  %s\nthe conditions table has\n  %s", strings.Join(documented, " "), strings.Join(want, " "))
	}
	if n := len(conditions); conditions[n-2].name != "implicit" || conditions[n-1].name != "budget" {
		t.Errorf("the table ends with %s, %s; docs/policy.md says the safety narrowing, then the budget", conditions[n-2].name, conditions[n-1].name)
	}
}

// TestConditionsEvaluateInTableOrder compiles a rule with every condition
// and requires its checks in table order, each entry present: the table's
// position is the order of evaluation, with nothing re-sorting it.
func TestConditionsEvaluateInTableOrder(t *testing.T) {
	env := &ddEnv{}
	p, err := ParseAndCompile([]byte(env.expand(`version: 1
guardians: {alice: "{{alice}}"}
quorum: 1
tiers: [{name: hot, signers: [agent, policy]}]
tokens:
  USDC: {address: "{{usdc}}", decimals: 6}
rules:
  - id: every-condition
    when:
      kind: [transaction, typed_data]
      chain: 1
      agent: bot
      key: "{{hot}}"
      call: transfer
      selector: "0xa9059cbb"
      args: {to: "{{vendor1}}"}
      token: $USDC
      domain: {name: USD Coin, chain: [1, none], contract: "{{usdc}}"}
      primary_type: Permit
      message_prefix: hello
      grant: false
      to: "{{usdc}}"
      not_to: "{{blocked}}"
      recipient: "{{vendor1}}"
      not_recipient: "{{stranger}}"
      delegate: "{{safe-delegate}}"
      value_max: 1 ether
      amount_max: 100 USDC
      gas_max: 100000
      fee_max: 100 gwei
      tip_max: 2 gwei
    budget: {window: 24h, amount: 1000 USDC}
    tier: hot
  - id: calldata-none
    when: {calldata: none}
    deny: true
`)))
	if err != nil {
		t.Fatal(err)
	}
	index := map[string]int{}
	for i, c := range conditions {
		index[c.name] = i
	}
	seen := map[int]bool{}
	for _, r := range p.rules {
		last := -1
		for _, c := range r.conds {
			name := strings.TrimPrefix(c.name, "default_")
			if strings.HasPrefix(name, "args.") {
				name = "args"
			}
			i, ok := index[name]
			if !ok {
				t.Fatalf("rule %s: check %s belongs to no entry of the conditions table", r.id, c.name)
			}
			if i < last {
				t.Errorf("rule %s: check %s runs after %s", r.id, c.name, conditions[last].name)
			}
			last, seen[i] = i, true
		}
	}
	for i, c := range conditions {
		if !seen[i] {
			t.Errorf("no rule has a check of %s", c.name)
		}
	}
}
