package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

func init() {
	register(&Command{
		Name:    "policy",
		Summary: "show the policy in force, or dry-run a request against it (show, dry-run)",
		Run:     runPolicy,
	})
}

func runPolicy(ctx context.Context, env *Env, args []string) error {
	sub, rest, err := Subcommand("policy", args, "show", "dry-run")
	if err != nil {
		return err
	}
	if sub == "show" {
		return policyShow(ctx, env, rest)
	}
	return policyDryRun(ctx, env, rest)
}

func policyShow(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "policy show", "policy show [--credential FILE | --token TOKEN] [--source] [--json]")
	rf := addRESTFlags(fs)
	credFile := fs.String("credential", "", "read as this agent (credential file) instead of with an operator token")
	source := fs.Bool("source", false, "print only the document's YAML source, byte for byte as the guardians signed it")
	if pos, err := parseAll(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return Usagef("policy show takes no arguments, got %q", pos)
	}
	var opts client.Options
	if *credFile != "" {
		cred, err := LoadCredential(*credFile)
		if err != nil {
			return err
		}
		opts.Agent = cred
	}
	cl, err := rf.client(env, opts)
	if err != nil {
		return err
	}
	p, err := cl.Policy(ctx)
	if err != nil {
		return err
	}
	switch {
	case *rf.json:
		return PrintJSON(env.Stdout, p)
	case *source:
		_, err := io.WriteString(env.Stdout, p.Document.Source)
		return err
	}
	w := env.Stdout
	fmt.Fprintf(w, "policy version %d\n  hash       %s\n  wallet id  %s\n  signatures %d\n", p.Version, p.Hash.Hex(), p.WalletID.Hex(), len(p.Document.Signatures))
	doc, err := policy.ParseDocument([]byte(p.Document.Source))
	if err != nil {
		return fmt.Errorf("the served document does not parse: %w", err)
	}
	fmt.Fprintf(w, "  guardians  %d (quorum %d)\n  agents     %d\n", len(doc.Guardians), doc.Quorum, len(doc.Agents))
	fmt.Fprintln(w, "tiers:")
	for _, t := range doc.Tiers {
		js, _ := json.Marshal(t)
		fmt.Fprintf(w, "  %s\n", js)
	}
	fmt.Fprintln(w, "rules (in evaluation order):")
	for _, r := range doc.Rules {
		verdict := "tier " + r.Tier
		switch {
		case r.Deny:
			verdict = "deny"
		case r.Allow:
			verdict = "allow"
		}
		when, _ := json.Marshal(r.When)
		fmt.Fprintf(w, "  %-24s %-14s %s", r.ID, verdict, when)
		if r.Budget != nil {
			b, _ := json.Marshal(r.Budget)
			fmt.Fprintf(w, " budget %s", b)
		}
		fmt.Fprintln(w)
		if r.Description != "" {
			fmt.Fprintf(w, "  %-24s %s\n", "", r.Description)
		}
	}
	fmt.Fprintln(w, "(custos policy show --source prints the signed document itself)")
	return nil
}

func policyDryRun(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "policy dry-run", "policy dry-run --credential FILE --key KEY --chain-id N (--tx HEX | --message TEXT | --message-hex HEX | --typed-data FILE) [--from ADDRESS] [--json]")
	rf := addRESTFlags(fs)
	credFile := fs.String("credential", "", "the agent credential file (the dry run is evaluated for this agent)")
	key := fs.String("key", "", "the key that would sign (key:0x… or its address)")
	chainID := fs.Uint64("chain-id", 0, "the chain id")
	txHex := fs.String("tx", "", "an unsigned transaction, 0x-hex of its binary form")
	msg := fs.String("message", "", "a personal message (text)")
	msgHex := fs.String("message-hex", "", "a personal message (0x-hex)")
	typed := fs.String("typed-data", "", "a file holding eth_signTypedData_v4 JSON (- for stdin)")
	from := fs.String("from", "", "the address you expect to sign as")
	if pos, err := parseAll(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return Usagef("policy dry-run takes no arguments, got %q", pos)
	}
	if *credFile == "" || *key == "" || *chainID == 0 {
		return Usagef("policy dry-run needs --credential, --key and --chain-id")
	}
	k, err := ids.ParseKeyID(*key)
	if err != nil {
		return Usagef("--key: %v", err)
	}
	req := api.SignRequest{Key: k, ChainID: *chainID, IdempotencyKey: "dry-run-" + newToken()[:16], Expiry: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}
	n := 0
	for _, s := range []string{*txHex, *msg, *msgHex, *typed} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return Usagef("give exactly one of --tx, --message, --message-hex, --typed-data")
	}
	switch {
	case *txHex != "":
		if _, err := hexutil.Decode(strings.TrimSpace(*txHex)); err != nil {
			return Usagef("--tx: %v", err)
		}
		req.Kind, req.Payload = "transaction", []byte(strconv.Quote(strings.TrimSpace(*txHex)))
	case *msg != "":
		req.Kind, req.Payload = "personal_message", []byte(strconv.Quote(hexutil.Encode([]byte(*msg))))
	case *msgHex != "":
		if _, err := hexutil.Decode(*msgHex); err != nil {
			return Usagef("--message-hex: %v", err)
		}
		req.Kind, req.Payload = "personal_message", []byte(strconv.Quote(*msgHex))
	default:
		var b []byte
		if *typed == "-" {
			b, err = io.ReadAll(io.LimitReader(env.Stdin, api.MaxSignRequestBody))
		} else {
			b, err = os.ReadFile(*typed)
		}
		if err != nil {
			return err
		}
		var v json.RawMessage
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("typed data %s: %w", *typed, err)
		}
		req.Kind, req.Payload = "typed_data", v
	}
	if *from != "" {
		a, err := ids.ParseAddress(*from)
		if err != nil {
			return Usagef("--from: %v", err)
		}
		req.From = &a
	}
	if _, err := api.ParseSignRequest(mustJSON(req), time.Now()); err != nil {
		return err
	}
	cred, err := LoadCredential(*credFile)
	if err != nil {
		return err
	}
	cl, err := rf.client(env, client.Options{Agent: cred})
	if err != nil {
		return err
	}
	d, err := dryRun(ctx, cl, cred, req)
	if err != nil {
		return err
	}
	if *rf.json {
		return PrintJSON(env.Stdout, d)
	}
	printDryRun(env.Stdout, d)
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// dryRun signs req for the signing endpoint (as a node expects it) and
// asks for its evaluation without signing.
func dryRun(ctx context.Context, cl *client.Client, cred *agentauth.Credential, req api.SignRequest) (*api.DryRun, error) {
	s := cred.Sign(api.SignRequestMethod, api.SignRequestPath, mustJSON(req), time.Now())
	return cl.DryRun(ctx, s)
}

// printDryRun prints a decision and its rule trace for people.
func printDryRun(w io.Writer, d *api.DryRun) {
	dec := d.Decision
	switch dec.Verdict {
	case "deny":
		fmt.Fprintf(w, "deny: rule %q: %s\n", dec.RuleID, dec.Reason)
	default:
		fmt.Fprintf(w, "allowed: tier %s by rule %q: %s\n", dec.Tier, dec.RuleID, dec.Reason)
		if len(dec.Roles) > 0 {
			fmt.Fprintf(w, "  signers   %v\n", dec.Roles)
		}
		if dec.Approvals > 0 {
			fmt.Fprintf(w, "  approvals %d guardian approval(s) needed\n", dec.Approvals)
		}
		if dec.Delay != "" {
			fmt.Fprintf(w, "  delay     %s\n", dec.Delay)
		}
	}
	fmt.Fprintf(w, "  digest    %s\n  policy    version %d %s\n", d.Digest.Hex(), dec.PolicyVersion, dec.PolicyHash.Hex())
	for _, st := range d.Trace {
		mark := "skip"
		if st.Matched {
			mark = "match"
		}
		fmt.Fprintf(w, "  %-5s %s: %s\n", mark, st.Rule, st.Detail)
	}
	for _, b := range d.Budgets {
		fmt.Fprintf(w, "  budget    %s\n", describeBudget(b))
	}
}

// describeBudget is one budget bucket for people: ether in ether, a
// token in its base units (the policy names its decimals, not the dry
// run).
func describeBudget(b api.BudgetLeft) string {
	asset, dec := "ETH", 18
	if b.Asset != "native" {
		asset, dec = b.Asset+" (base units)", 0
	}
	units := func(s string) string {
		v, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return s
		}
		return chain.FormatUnits(v, dec)
	}
	var parts []string
	if b.Limit != "" {
		parts = append(parts, fmt.Sprintf("%s of %s %s left (%s used)", units(b.Left), units(b.Limit), asset, units(b.Used)))
	}
	if b.CountLimit > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d requests used", b.CountUsed, b.CountLimit))
	}
	if len(parts) == 0 {
		parts = append(parts, fmt.Sprintf("%s %s used", units(b.Used), asset))
	}
	s := fmt.Sprintf("rule %q: %s", b.Rule, strings.Join(parts, ", "))
	if b.Window != "" {
		s += " per " + b.Window
	}
	return s
}
