package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common"
)

func init() {
	register(&Command{
		Name:    "guardian",
		Summary: "a guardian's queue and decisions: pending, show, approve, deny, freeze, unfreeze, wallet, keystore",
		Run:     runGuardian,
	})
}

// guardianNow is the clock the guardian commands sign with; tests leave it.
var guardianNow = time.Now

const guardianUsage = `guardian <pending|show|approve|deny|freeze|unfreeze|keystore> [flags]

  pending                         the requests waiting for this node's guardian
  show <request-id>               one of them, in full
  approve <request-id>            sign and submit an approval (EIP-712, keystore account)
  deny <request-id> --reason R    sign and submit a denial
  freeze --target T --reason R    freeze all, agent:<id> or key:<address> at once
  unfreeze --target T             lift a freeze; needs the guardian quorum:
                                  --sign-only prints this guardian's signature for another,
                                  who passes it with --add-signature and submits
  wallet                          what guardians sign against: wallet id, policy, guardians,
                                  quorum, active freezes (with the ids an unfreeze names)
  keystore new|show               make or check a keystore file

The node's admin address comes from --admin (unix:///path or http://host:port,
default $CUSTOS_ADMIN) with --token-file for TCP (default $CUSTOS_ADMIN_TOKEN_FILE).`

func runGuardian(ctx context.Context, env *Env, args []string) error {
	sub, rest, err := Subcommand("guardian", args, "pending", "show", "approve", "deny", "freeze", "unfreeze", "wallet", "keystore", "help")
	if err != nil {
		return err
	}
	switch sub {
	case "pending":
		return guardianPending(ctx, env, rest)
	case "show":
		return guardianShow(ctx, env, rest)
	case "approve":
		return guardianApprove(ctx, env, rest)
	case "deny":
		return guardianDeny(ctx, env, rest)
	case "freeze":
		return guardianFreeze(ctx, env, rest)
	case "unfreeze":
		return guardianUnfreeze(ctx, env, rest)
	case "wallet":
		return guardianWallet(ctx, env, rest)
	case "keystore":
		return guardianKeystore(ctx, env, rest)
	}
	fmt.Fprintf(env.Stdout, "Usage: custos %s\n", guardianUsage)
	return nil
}

// adminFlags are the flags that reach a node's admin API.
type adminFlags struct {
	addr      string
	tokenFile string
	json      bool
}

func (a *adminFlags) register(fs *flag.FlagSet, env *Env) {
	fs.StringVar(&a.addr, "admin", env.Getenv("CUSTOS_ADMIN"), "the node's admin address: unix:///path/admin.sock or http://host:port")
	fs.StringVar(&a.tokenFile, "token-file", env.Getenv("CUSTOS_ADMIN_TOKEN_FILE"), "file with the admin bearer token (needed for http://)")
	fs.BoolVar(&a.json, "json", false, "print JSON")
}

func (a *adminFlags) client() (*admin.Client, error) {
	if a.addr == "" {
		return nil, Usagef("no admin address: pass --admin unix:///path/admin.sock or http://host:port (or set CUSTOS_ADMIN)")
	}
	return admin.NewClientTokenFile(a.addr, a.tokenFile)
}

// signerFlags are the flags that unlock the guardian's identity account.
type signerFlags struct {
	keystore     string
	passwordFile string
	yes          bool
}

func (s *signerFlags) register(fs *flag.FlagSet, env *Env) {
	fs.StringVar(&s.keystore, "keystore", env.Getenv("CUSTOS_GUARDIAN_KEYSTORE"), "the guardian identity's go-ethereum keystore file")
	fs.StringVar(&s.passwordFile, "password-file", env.Getenv("CUSTOS_GUARDIAN_PASSWORD_FILE"), "file holding the keystore's password")
	fs.BoolVar(&s.yes, "yes", false, "do not ask for confirmation")
}

func (s *signerFlags) open() (*admin.Guardian, error) {
	if s.keystore == "" || s.passwordFile == "" {
		return nil, Usagef("signing needs --keystore FILE and --password-file FILE")
	}
	pw, err := admin.ReadPassword(s.passwordFile)
	if err != nil {
		return nil, err
	}
	return admin.OpenKeystore(s.keystore, pw)
}

// parseArgs parses flags placed before or after the positional
// arguments, and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, Usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func oneRequestID(args []string, what string) (ids.RequestID, error) {
	if len(args) != 1 {
		return "", Usagef("%s needs exactly one request id (custos guardian pending lists them)", what)
	}
	id, err := ids.ParseRequestID(args[0])
	if err != nil {
		return "", Usagef("request id %q: %v", args[0], err)
	}
	return id, nil
}

// confirm asks the human, unless yes; anything but y or yes declines.
func confirm(env *Env, yes bool, question string) error {
	if yes {
		return nil
	}
	fmt.Fprintf(env.Stderr, "%s [y/N] ", question)
	line, err := bufio.NewReader(env.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read confirmation: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("not confirmed: nothing signed (answer y, or pass --yes)")
}

// explain adds to an admin API error what the guardian can do about it.
func explain(err error) error {
	if r, ok := admin.IsRefused(err); ok {
		return fmt.Errorf("the node refused it (%s): %s", r.Rule, r.Reason)
	}
	var ae *httpapi.Error
	if errors.As(err, &ae) && ae.Code == httpapi.CodeUnauthorized {
		return fmt.Errorf("%v: pass the node's admin token with --token-file", err)
	}
	return err
}

// warnIfNotGuardian tells the human early that the nodes will refuse what
// this account signs; the nodes decide, so it only warns.
func warnIfNotGuardian(env *Env, w *admin.Wallet, g *admin.Guardian) {
	for _, a := range w.Guardians {
		if a == g.Address() {
			return
		}
	}
	fmt.Fprintf(env.Stderr, "Warning: %s is not a guardian of this wallet's policy v%d; the nodes will refuse its signature.\n", g.Address().Hex(), w.PolicyVersion)
}

// checkPending decodes the payload bytes the node sent and refuses to
// approve when the node's description or digest is not theirs. A node
// that sends no bytes gets a warning: its human then relies on its word.
func checkPending(env *Env, p *admin.PendingRequest) error {
	err := admin.CheckPending(p)
	switch {
	case err == nil:
		return nil
	case len(p.Payload) == 0:
		fmt.Fprintf(env.Stderr, "Warning: %v; the details above are the node's word.\n", err)
		return nil
	}
	return fmt.Errorf("not signing: %w", err)
}

// maxReason is the longest reason the admin API takes.
const maxReason = 1024

func guardianWallet(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "guardian wallet", "guardian wallet [--admin ADDR] [--json]")
	var af adminFlags
	af.register(fs, env)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return Usagef("wallet takes no arguments")
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	defer c.Close()
	w, err := c.Wallet(ctx)
	if err != nil {
		return explain(err)
	}
	if af.json {
		return PrintJSON(env.Stdout, w)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "wallet id\t%s\n", w.WalletID.Hex())
	fmt.Fprintf(tw, "policy\tv%d %s\n", w.PolicyVersion, w.PolicyHash.Hex())
	fmt.Fprintf(tw, "EIP-712 domain\tname %q, version %q, salt %s\n", w.Domain.Name, w.Domain.Version, w.Domain.Salt)
	var gs []string
	for _, a := range w.Guardians {
		gs = append(gs, a.Hex())
	}
	fmt.Fprintf(tw, "guardians\t%s\n", strings.Join(gs, ", "))
	fmt.Fprintf(tw, "quorum\t%d\n", w.Quorum)
	if w.Guardian != nil {
		fmt.Fprintf(tw, "this node's guardian\t%s\n", w.Guardian.Hex())
	}
	for _, f := range w.Freezes {
		by := "the circuit breaker"
		if f.By != (common.Address{}) {
			by = f.By.Hex()
		}
		fmt.Fprintf(tw, "frozen\t%s since %s by %s: %s (freeze %s)\n", f.Target, f.At.UTC().Format(time.RFC3339), by, f.Reason, f.ID.Hex())
	}
	return tw.Flush()
}

func guardianPending(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "guardian pending", "guardian pending [--admin ADDR] [--json]")
	var af adminFlags
	af.register(fs, env)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return Usagef("pending takes no arguments")
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.Pending(ctx)
	if err != nil {
		return explain(err)
	}
	if af.json {
		return PrintJSON(env.Stdout, admin.PendingList{Pending: list})
	}
	if len(list) == 0 {
		fmt.Fprintln(env.Stdout, "Nothing is waiting for you.")
		return nil
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST\tTIER\tRULE\tEXPIRES\tWHAT")
	for _, p := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.RequestID, p.Tier, p.RuleID, until(p.Expiry), p.Summary)
	}
	return tw.Flush()
}

func until(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(guardianNow()).Round(time.Second)
	if d <= 0 {
		return "expired"
	}
	return "in " + d.String()
}

func guardianShow(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "guardian show", "guardian show <request-id> [--admin ADDR] [--json]")
	var af adminFlags
	af.register(fs, env)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	id, err := oneRequestID(pos, "show")
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := c.PendingRequest(ctx, id)
	if err != nil {
		return explain(err)
	}
	if af.json {
		return PrintJSON(env.Stdout, p)
	}
	writePending(env.Stdout, p)
	return nil
}

// writePending shows a request the way a guardian must read it before
// signing: everything the approval binds, and what the payload does.
func writePending(w io.Writer, p *admin.PendingRequest) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("request", string(p.RequestID))
	row("agent", string(p.Agent))
	row("chain", fmt.Sprint(p.ChainID))
	row("from (key)", p.Key.Hex())
	row("kind", p.Kind)
	typed := p.Kind == chain.KindTypedData.String()
	if p.To != nil {
		if typed {
			row("verifying contract", p.To.Hex())
		} else {
			row("to", p.To.Hex())
		}
	}
	if p.Value != "" {
		row("value", p.ValueEther+" ether ("+p.Value+" wei)")
	}
	switch {
	case typed && p.Method != "":
		row("primary type", p.Method)
	case p.Method != "" || p.Selector != "":
		row("method", strings.TrimSpace(p.Method+" "+p.Selector))
	}
	for _, t := range p.Tokens {
		amt := t.Raw + " base units of " + t.Token.Hex()
		if t.Symbol != "" && t.Amount != "" {
			amt = t.Amount + " " + t.Symbol + " (" + t.Token.Hex() + ")"
		}
		if t.Recipient != nil {
			amt += " to " + t.Recipient.Hex()
		}
		row("token "+t.Kind, amt)
	}
	row("summary", p.Summary)
	tier := p.Tier
	if p.Approvals > 0 {
		tier += fmt.Sprintf(" (%d approval(s) needed", p.Approvals)
		if p.Delay > 0 {
			tier += ", delay " + time.Duration(p.Delay).String()
		}
		tier += ")"
	}
	row("tier", tier)
	rule := p.RuleID
	if p.Reason != "" {
		rule += ": " + p.Reason
	}
	row("rule", rule)
	if len(p.ApprovedBy) > 0 {
		var s []string
		for _, a := range p.ApprovedBy {
			s = append(s, a.Hex())
		}
		row("approved by", strings.Join(s, ", "))
	}
	row("digest", p.Digest.Hex())
	if !p.Expiry.IsZero() {
		row("expires", p.Expiry.UTC().Format(time.RFC3339)+" ("+until(p.Expiry)+")")
	}
	tw.Flush()
}

func guardianApprove(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "guardian approve", "guardian approve <request-id> --keystore FILE --password-file FILE [--expiry 1h] [--yes] [--json]")
	var af adminFlags
	var sf signerFlags
	af.register(fs, env)
	sf.register(fs, env)
	expiry := fs.Duration("expiry", time.Hour, "how long the approval is good for (never beyond the request's expiry)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	id, err := oneRequestID(pos, "approve")
	if err != nil {
		return err
	}
	if *expiry <= 0 {
		return Usagef("--expiry %s: must be positive", *expiry)
	}
	g, err := sf.open()
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	defer c.Close()
	p, wallet, err := pendingAndWallet(ctx, c, id)
	if err != nil {
		return err
	}
	writePending(env.Stderr, p)
	if err := checkPending(env, p); err != nil {
		return err
	}
	warnIfNotGuardian(env, wallet, g)
	if err := confirm(env, sf.yes, fmt.Sprintf("Approve this request as %s?", g.Address().Hex())); err != nil {
		return err
	}
	a, err := g.Approve(wallet.WalletID, p, guardianNow(), *expiry)
	if err != nil {
		return err
	}
	res, err := c.Approve(ctx, a)
	if err != nil {
		return explain(err)
	}
	if af.json {
		return PrintJSON(env.Stdout, struct {
			Approval api.Approval    `json:"approval"`
			Delivery *admin.Delivery `json:"delivery"`
		}{a, res})
	}
	fmt.Fprintf(env.Stdout, "Approved %s as %s, good until %s.\n", id, g.Address().Hex(), a.Expiry.UTC().Format(time.RFC3339))
	writeDelivery(env.Stdout, res)
	return nil
}

func pendingAndWallet(ctx context.Context, c *admin.Client, id ids.RequestID) (*admin.PendingRequest, *admin.Wallet, error) {
	p, err := c.PendingRequest(ctx, id)
	if err != nil {
		return nil, nil, explain(err)
	}
	w, err := c.Wallet(ctx)
	if err != nil {
		return nil, nil, explain(err)
	}
	return p, w, nil
}

func writeDelivery(w io.Writer, d *admin.Delivery) {
	if len(d.Forwarded) > 0 {
		fmt.Fprintf(w, "Forwarded to %s.\n", joinMembers(d.Forwarded))
	} else {
		fmt.Fprintln(w, "Forwarded to no coordinator yet.")
	}
	for _, f := range d.Failed {
		fmt.Fprintf(w, "Not delivered to %s: %s\n", f.Member, f.Error)
	}
}

func joinMembers(ms []ids.MemberID) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}

func guardianDeny(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "guardian deny", "guardian deny <request-id> --reason R --keystore FILE --password-file FILE [--yes] [--json]")
	var af adminFlags
	var sf signerFlags
	af.register(fs, env)
	sf.register(fs, env)
	reason := fs.String("reason", "", "why, for the agent and the audit log")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	id, err := oneRequestID(pos, "deny")
	if err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return Usagef("deny needs --reason")
	}
	if len(*reason) > maxReason {
		return Usagef("--reason of %d bytes: at most %d", len(*reason), maxReason)
	}
	g, err := sf.open()
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	defer c.Close()
	p, wallet, err := pendingAndWallet(ctx, c, id)
	if err != nil {
		return err
	}
	writePending(env.Stderr, p)
	if err := admin.CheckPending(p); err != nil {
		fmt.Fprintf(env.Stderr, "Warning: %v\n", err)
	}
	warnIfNotGuardian(env, wallet, g)
	if err := confirm(env, sf.yes, fmt.Sprintf("Deny this request as %s?", g.Address().Hex())); err != nil {
		return err
	}
	d, err := g.Deny(wallet.WalletID, p, *reason, guardianNow())
	if err != nil {
		return err
	}
	res, err := c.Deny(ctx, d)
	if err != nil {
		return explain(err)
	}
	if af.json {
		return PrintJSON(env.Stdout, struct {
			Denial   api.Denial      `json:"denial"`
			Delivery *admin.Delivery `json:"delivery"`
		}{d, res})
	}
	fmt.Fprintf(env.Stdout, "Denied %s as %s: %s\n", id, g.Address().Hex(), *reason)
	writeDelivery(env.Stdout, res)
	return nil
}

// parseTarget takes a freeze target: all, agent:<id>, key:<address>, or
// a bare address for its key.
func parseTarget(s string) (policy.Target, error) {
	switch {
	case s == "":
		return "", Usagef("--target is needed: all, agent:<id> or key:<address>")
	case s == string(policy.TargetAll):
		return policy.TargetAll, nil
	case strings.HasPrefix(s, "agent:"):
		a, err := ids.ParseAgentID(strings.TrimPrefix(s, "agent:"))
		if err != nil {
			return "", Usagef("--target %q: %v", s, err)
		}
		return policy.AgentTarget(a), nil
	case strings.HasPrefix(s, "key:"), common.IsHexAddress(s):
		a, err := ids.ParseAddress(strings.TrimPrefix(s, "key:"))
		if err != nil {
			return "", Usagef("--target %q: %v", s, err)
		}
		return policy.KeyTarget(a), nil
	}
	return "", Usagef("--target %q: want all, agent:<id> or key:<address>", s)
}

func guardianFreeze(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "guardian freeze", "guardian freeze --target all|agent:<id>|key:<address> --reason R --keystore FILE --password-file FILE [--yes] [--json]")
	var af adminFlags
	var sf signerFlags
	af.register(fs, env)
	sf.register(fs, env)
	targetFlag := fs.String("target", "", "what to freeze: all, agent:<id> or key:<address>")
	reason := fs.String("reason", "", "why, for the other guardians and the audit log")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return Usagef("freeze takes no arguments; use --target")
	}
	target, err := parseTarget(*targetFlag)
	if err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return Usagef("freeze needs --reason")
	}
	if len(*reason) > maxReason {
		return Usagef("--reason of %d bytes: at most %d", len(*reason), maxReason)
	}
	g, err := sf.open()
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	defer c.Close()
	wallet, err := c.Wallet(ctx)
	if err != nil {
		return explain(err)
	}
	fmt.Fprintf(env.Stderr, "Freeze %s (%s): no signature on it until the guardian quorum unfreezes it.\n", target, *reason)
	warnIfNotGuardian(env, wallet, g)
	if err := confirm(env, sf.yes, fmt.Sprintf("Freeze as %s?", g.Address().Hex())); err != nil {
		return err
	}
	f, err := g.Freeze(wallet.WalletID, target, *reason, guardianNow())
	if err != nil {
		return err
	}
	res, err := c.Freeze(ctx, f)
	if err != nil {
		return explain(err)
	}
	if af.json {
		return PrintJSON(env.Stdout, struct {
			Freeze api.Freeze          `json:"freeze"`
			Result *admin.FreezeResult `json:"result"`
		}{f, res})
	}
	fmt.Fprintf(env.Stdout, "Froze %s; freeze id %s (an unfreeze names it).\n", target, res.ID.Hex())
	writeFreezeResult(env.Stdout, res)
	return nil
}

func writeFreezeResult(w io.Writer, r *admin.FreezeResult) {
	if r.Applied {
		fmt.Fprintln(w, "Applied by this node.")
	}
	if len(r.Acknowledged) > 0 {
		fmt.Fprintf(w, "Acknowledged by %s.\n", joinMembers(r.Acknowledged))
	}
	for _, f := range r.Failed {
		fmt.Fprintf(w, "Not acknowledged by %s: %s\n", f.Member, f.Error)
	}
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// readUnfreeze takes an unfreeze another guardian printed with --sign-only:
// the JSON itself, or the name of a file holding it.
func readUnfreeze(v string) (api.Unfreeze, error) {
	b := []byte(v)
	if !strings.HasPrefix(strings.TrimSpace(v), "{") {
		var err error
		if b, err = os.ReadFile(v); err != nil {
			return api.Unfreeze{}, fmt.Errorf("--add-signature %s: %w", v, err)
		}
	}
	var u api.Unfreeze
	if err := httpapi.DecodeBytes(b, &u); err != nil {
		return api.Unfreeze{}, fmt.Errorf("--add-signature %.40s: not the JSON of guardian unfreeze --sign-only: %v", v, err)
	}
	return u, nil
}

func guardianUnfreeze(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "guardian unfreeze", "guardian unfreeze --target T [--freeze ID] [--sign-only | --add-signature JSON|FILE ...] --keystore FILE --password-file FILE [--yes] [--json]")
	var af adminFlags
	var sf signerFlags
	af.register(fs, env)
	sf.register(fs, env)
	targetFlag := fs.String("target", "", "the frozen target: all, agent:<id> or key:<address> (taken from --add-signature if absent)")
	freezeFlag := fs.String("freeze", "", "the id of the freeze to lift (default: the target's current freeze)")
	signOnly := fs.Bool("sign-only", false, "print this guardian's signed unfreeze as JSON for another guardian instead of submitting")
	var adds stringList
	fs.Var(&adds, "add-signature", "another guardian's --sign-only output (JSON, or a file holding it); repeatable")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return Usagef("unfreeze takes no arguments; use --target")
	}
	var u api.Unfreeze
	for i, v := range adds {
		o, err := readUnfreeze(v)
		if err != nil {
			return err
		}
		if i == 0 {
			u = api.Unfreeze{Target: o.Target, Freeze: o.Freeze, Issued: o.Issued}
		} else if o.Target != u.Target || o.Freeze != u.Freeze || !o.Issued.Equal(u.Issued) {
			return fmt.Errorf("--add-signature %d is for another unfreeze (%s, freeze %s, issued %s) than the first (%s, freeze %s, issued %s)",
				i+1, o.Target, o.Freeze.Hex(), o.Issued.UTC().Format(time.RFC3339), u.Target, u.Freeze.Hex(), u.Issued.UTC().Format(time.RFC3339))
		}
		u.Signatures = append(u.Signatures, o.Signatures...)
	}
	if *targetFlag != "" || len(adds) == 0 {
		target, err := parseTarget(*targetFlag)
		if err != nil {
			return err
		}
		if len(adds) > 0 && target != u.Target {
			return fmt.Errorf("--target %s, but the added signatures unfreeze %s", target, u.Target)
		}
		u.Target = target
	}
	var freezeID common.Hash
	if *freezeFlag != "" {
		if freezeID, err = parseHash(*freezeFlag); err != nil {
			return Usagef("--freeze %q: %v", *freezeFlag, err)
		}
		if len(adds) > 0 && freezeID != u.Freeze {
			return fmt.Errorf("--freeze %s, but the added signatures lift freeze %s", freezeID.Hex(), u.Freeze.Hex())
		}
	}
	g, err := sf.open()
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	defer c.Close()
	wallet, err := c.Wallet(ctx)
	if err != nil {
		return explain(err)
	}
	var current *admin.ActiveFreeze
	for i := range wallet.Freezes {
		if policy.Target(wallet.Freezes[i].Target) == u.Target {
			current = &wallet.Freezes[i]
		}
	}
	if len(adds) == 0 {
		switch {
		case freezeID != (common.Hash{}):
		case current != nil:
			freezeID = current.ID
		default:
			return fmt.Errorf("%s is not frozen at this node (custos guardian unfreeze --freeze ID names a freeze explicitly)", u.Target)
		}
		u = admin.NewUnfreeze(u.Target, freezeID, guardianNow())
	}
	prior, err := admin.UnfreezeSigners(wallet.WalletID, u)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "Unfreeze %s, lifting freeze %s", u.Target, u.Freeze.Hex())
	if current != nil && current.ID == u.Freeze {
		by := "the circuit breaker"
		if current.By != (common.Address{}) {
			by = current.By.Hex()
		}
		fmt.Fprintf(env.Stderr, " (frozen by %s at %s: %s)", by, current.At.UTC().Format(time.RFC3339), current.Reason)
	}
	fmt.Fprintln(env.Stderr, ".")
	for _, a := range prior {
		fmt.Fprintf(env.Stderr, "Already signed by %s.\n", a.Hex())
	}
	warnIfNotGuardian(env, wallet, g)
	if err := confirm(env, sf.yes, fmt.Sprintf("Sign this unfreeze as %s?", g.Address().Hex())); err != nil {
		return err
	}
	u, err = g.SignUnfreeze(wallet.WalletID, u)
	if err != nil {
		return err
	}
	have := len(distinct(append(prior, g.Address())))
	if *signOnly {
		if err := PrintJSON(env.Stdout, u); err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "Signed: %d of the %d guardian signatures the quorum needs. Give this JSON to another guardian, who runs\n  custos guardian unfreeze --add-signature '<this JSON>' ...\n", have, wallet.Quorum)
		return nil
	}
	if have < wallet.Quorum {
		fmt.Fprintf(env.Stderr, "Warning: %d of the %d guardian signatures the quorum needs; the nodes will refuse it.\n", have, wallet.Quorum)
	}
	res, err := c.Unfreeze(ctx, u)
	if err != nil {
		err = explain(err)
		if have < wallet.Quorum {
			err = fmt.Errorf("%w\nAn unfreeze needs %d guardians' signatures and this one has %d: each other guardian runs custos guardian unfreeze --sign-only --target %s --freeze %s, and you pass each output with --add-signature",
				err, wallet.Quorum, have, u.Target, u.Freeze.Hex())
		}
		return err
	}
	if af.json {
		return PrintJSON(env.Stdout, struct {
			Unfreeze api.Unfreeze        `json:"unfreeze"`
			Result   *admin.FreezeResult `json:"result"`
		}{u, res})
	}
	fmt.Fprintf(env.Stdout, "Unfroze %s (freeze %s lifted), signed by %d guardians.\n", u.Target, u.Freeze.Hex(), have)
	writeFreezeResult(env.Stdout, res)
	return nil
}

func distinct(as []common.Address) []common.Address {
	seen := map[common.Address]bool{}
	var out []common.Address
	for _, a := range as {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

func parseHash(s string) (common.Hash, error) {
	var h common.Hash
	b, err := json.Marshal(s)
	if err != nil {
		return h, err
	}
	if err := h.UnmarshalJSON(b); err != nil {
		return h, errors.New("want 0x and 64 hex digits")
	}
	return h, nil
}

func guardianKeystore(_ context.Context, env *Env, args []string) error {
	sub, rest, err := Subcommand("guardian keystore", args, "new", "show")
	if err != nil {
		return err
	}
	fs := NewFlags(env, "guardian keystore "+sub, "guardian keystore "+sub+" --keystore FILE --password-file FILE [--json]")
	file := fs.String("keystore", "", "the keystore file")
	pwFile := fs.String("password-file", "", "file holding its password")
	light := fs.Bool("light", false, "new: cheap scrypt parameters (tests and demos only)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, rest)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return Usagef("keystore %s takes no arguments", sub)
	}
	if *file == "" || *pwFile == "" {
		return Usagef("keystore %s needs --keystore FILE and --password-file FILE", sub)
	}
	pw, err := admin.ReadPassword(*pwFile)
	if err != nil {
		return err
	}
	var g *admin.Guardian
	if sub == "new" {
		g, err = admin.NewKeystore(*file, pw, *light)
	} else {
		g, err = admin.OpenKeystore(*file, pw)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return PrintJSON(env.Stdout, map[string]string{"address": g.Address().Hex(), "keystore": *file})
	}
	if sub == "new" {
		fmt.Fprintf(env.Stdout, "Wrote %s for guardian account %s.\nPut this address in the policy's guardians.\n", *file, g.Address().Hex())
	} else {
		fmt.Fprintf(env.Stdout, "%s unlocks guardian account %s.\n", *file, g.Address().Hex())
	}
	return nil
}
