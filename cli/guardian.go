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
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
)

func init() {
	register(&Command{
		Name:    "guardian",
		Summary: "a guardian's queue and decisions: pending, show, approve, deny, freeze, unfreeze, wallet, sign-policy, authorize-reshare, keystore",
		Run:     runGuardian,
	})
}

// guardianNow is the clock the guardian commands sign with; tests leave it.
var guardianNow = time.Now

const guardianUsage = `guardian <pending|show|approve|deny|freeze|unfreeze|wallet|sign-policy|authorize-reshare|keystore> [flags]

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
  sign-policy FILE                sign a policy document (YAML) for POST /v1/policy: --genesis for
                                  a wallet's first, --wallet ID or --admin for a replacement;
                                  --add-signature merges other guardians' outputs
  authorize-reshare               sign a reshare authorisation for custos keys reshare --authorization;
                                  --from-node takes the key's committee from the node (--admin)
  keystore new|show               make or check a keystore file

The node's admin address comes from --admin (unix:///path or http://host:port,
default $CUSTOS_ADMIN) with --token-file for TCP (default $CUSTOS_ADMIN_TOKEN_FILE).`

func runGuardian(ctx context.Context, env *Env, args []string) error {
	sub, rest, err := Subcommand("guardian", args, "pending", "show", "approve", "deny", "freeze", "unfreeze", "wallet", "sign-policy", "authorize-reshare", "keystore", "help")
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
	case "sign-policy":
		return guardianSignPolicy(ctx, env, rest)
	case "authorize-reshare":
		return guardianAuthorizeReshare(ctx, env, rest)
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

// maxSignedInput bounds what --add-signature and a policy file may hold:
// a document's source at its largest, JSON-escaped, with its signatures.
const maxSignedInput = 8 * policy.MaxDocumentSize

// readBounded reads a file of at most maxSignedInput bytes.
func readBounded(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSignedInput+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSignedInput {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, maxSignedInput)
	}
	return b, nil
}

// readSigned decodes another guardian's output for --add-signature: the
// JSON itself, or the name of a file holding it.
func readSigned(v, what string, into any) error {
	b := []byte(v)
	if !strings.HasPrefix(strings.TrimSpace(v), "{") {
		var err error
		if b, err = readBounded(v); err != nil {
			return fmt.Errorf("--add-signature %s: %w", v, err)
		}
	}
	if err := httpapi.DecodeBytes(b, into); err != nil {
		return fmt.Errorf("--add-signature %.40s: not the JSON of %s: %v", v, what, err)
	}
	return nil
}

// writeSigned prints v as JSON, or writes it to file: in full or not at
// all (a temporary file renamed into place), so a merge may name its
// input as its output.
func writeSigned(env *Env, file string, v any) error {
	if file == "" {
		return PrintJSON(env.Stdout, v)
	}
	var buf strings.Builder
	if err := PrintJSON(&buf, v); err != nil {
		return err
	}
	dir, base := filepath.Split(file)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-")
	if err != nil {
		return fmt.Errorf("--out %s: %w", file, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(buf.String()); err != nil {
		tmp.Close()
		return fmt.Errorf("--out %s: %w", file, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("--out %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("--out %s: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("--out %s: %w", file, err)
	}
	return nil
}

// firstDifference is the offset of the first byte where a and b differ.
func firstDifference(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// signedDocument is the --json report of sign-policy when the document
// itself goes to --out.
type signedDocument struct {
	Out      string           `json:"out"`
	Version  uint64           `json:"version"`
	Hash     common.Hash      `json:"hash"`
	WalletID common.Hash      `json:"wallet_id"`
	Genesis  bool             `json:"genesis"`
	Signers  []common.Address `json:"signers"`
	Quorum   int              `json:"quorum"`
}

func guardianSignPolicy(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "guardian sign-policy", "guardian sign-policy FILE --keystore FILE --password-file FILE (--genesis | --wallet ID | --admin ADDR) [--add-signature JSON|FILE ...] [--out FILE] [--yes] [--json]")
	var af adminFlags
	var sf signerFlags
	af.register(fs, env)
	sf.register(fs, env)
	genesis := fs.Bool("genesis", false, "the document is a wallet's first: it replaces nothing and its own hash is the wallet id")
	walletFlag := fs.String("wallet", "", "for a replacement: the wallet id it is signed for (custos guardian wallet shows it); without it, --admin asks the node")
	out := fs.String("out", "", "write the signed document's JSON to FILE (replaced whole) instead of printing it")
	var adds stringList
	fs.Var(&adds, "add-signature", "another guardian's sign-policy output for the same source (JSON, or a file holding it); repeatable")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return Usagef("sign-policy needs exactly one policy document (its YAML file)")
	}
	file := pos[0]
	src, err := readBounded(file)
	if err != nil {
		return fmt.Errorf("policy document: %w", err)
	}
	doc, err := policy.ParseDocument(src)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	pol, err := policy.Compile(doc)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}

	// The wallet id the signature binds: the document's own hash for a
	// genesis document, the current wallet's for a replacement.
	var (
		wallet  common.Hash
		current *admin.Wallet
	)
	switch {
	case doc.Replaces == "" && !*genesis:
		return Usagef("%s replaces nothing: it is the genesis document of a new wallet; pass --genesis if that is what you mean to sign", file)
	case doc.Replaces == "":
		wallet = pol.Hash()
		if *walletFlag != "" {
			w, err := parseHash(*walletFlag)
			if err != nil {
				return Usagef("--wallet %q: %v", *walletFlag, err)
			}
			if w != wallet {
				return Usagef("--wallet %s, but a genesis document is signed for its own hash %s", w.Hex(), wallet.Hex())
			}
		}
	case *genesis:
		return Usagef("--genesis, but %s replaces %s: a replacement is signed for the current wallet id (--wallet ID, or --admin to ask the node)", file, doc.Replaces)
	case *walletFlag != "":
		if wallet, err = parseHash(*walletFlag); err != nil {
			return Usagef("--wallet %q: %v", *walletFlag, err)
		}
	default:
		if af.addr == "" {
			return Usagef("%s replaces %s: pass the wallet id it is signed for with --wallet ID (custos guardian wallet shows it), or --admin ADDR to ask the node", file, doc.Replaces)
		}
		c, err := af.client()
		if err != nil {
			return err
		}
		defer c.Close()
		if current, err = c.Wallet(ctx); err != nil {
			return explain(err)
		}
		if doc.Replaces != current.PolicyHash.Hex() || doc.Version != current.PolicyVersion+1 {
			return fmt.Errorf("not signing: %s is version %d replacing %s, but the node's current policy is version %d %s, so the nodes would refuse it (write version %d with replaces: %s, or pass --wallet to sign regardless)",
				file, doc.Version, doc.Replaces, current.PolicyVersion, current.PolicyHash.Hex(), current.PolicyVersion+1, current.PolicyHash.Hex())
		}
		wallet = current.WalletID
	}

	pd := api.PolicyDocument{Source: string(src)}
	for i, v := range adds {
		var o api.PolicyDocument
		if err := readSigned(v, "guardian sign-policy", &o); err != nil {
			return err
		}
		if o.Source != pd.Source {
			return fmt.Errorf("--add-signature %d signs another source than %s (they differ from byte %d on): every guardian signs the same bytes", i+1, file, firstDifference(o.Source, pd.Source))
		}
		pd.Signatures = append(pd.Signatures, o.Signatures...)
	}
	if len(pd.Signatures) >= policy.MaxSignatures {
		return fmt.Errorf("--add-signature: %d signatures already; a document takes at most %d", len(pd.Signatures), policy.MaxSignatures)
	}
	prior, err := admin.DocumentSigners(wallet, pd)
	if err != nil {
		return fmt.Errorf("--add-signature: %w", err)
	}
	known := map[common.Address]bool{}
	for _, a := range pol.Guardians() {
		known[a] = true
	}
	if current != nil {
		for _, a := range current.Guardians {
			known[a] = true
		}
	}
	seen := map[common.Address]bool{}
	for i, a := range prior {
		if seen[a] {
			return fmt.Errorf("--add-signature: guardian %s signed twice (signature %d); each guardian signs once", a.Hex(), i+1)
		}
		seen[a] = true
		if !known[a] {
			hint := ""
			if current == nil && doc.Replaces != "" {
				hint = " (with --admin instead of --wallet, the current policy's guardians count too)"
			}
			return fmt.Errorf("--add-signature: signature %d recovers to %s, not a guardian of this document%s: signed for another wallet id than %s, or by another account; the nodes would refuse the whole set", i+1, a.Hex(), hint, wallet.Hex())
		}
	}

	g, err := sf.open()
	if err != nil {
		return err
	}
	me := g.Address()
	if seen[me] {
		return fmt.Errorf("not signing: %s has signed this document already", me.Hex())
	}
	inDoc := slices.Contains(pol.Guardians(), me)
	switch {
	case doc.Replaces == "" && !inDoc:
		return fmt.Errorf("not signing: %s is not a guardian of this genesis document; the nodes would refuse every signature with it", me.Hex())
	case current != nil && !slices.Contains(current.Guardians, me):
		return fmt.Errorf("not signing: %s is not a guardian of the current policy v%d; the nodes would refuse every signature with it", me.Hex(), current.PolicyVersion)
	}

	writeDocument(env.Stderr, file, pol, wallet, current, prior)
	if !inDoc {
		fmt.Fprintf(env.Stderr, "Warning: %s is not among this document's guardians; where a quorum changes the guardian set, the nodes refuse it unless every signer is a guardian of both sets.\n", me.Hex())
	}
	if err := confirm(env, sf.yes, fmt.Sprintf("Sign policy document v%d (%s) as %s?", doc.Version, pol.Hash().Hex(), me.Hex())); err != nil {
		return err
	}
	signed, err := g.SignDocument(wallet, pd)
	if err != nil {
		return err
	}
	signers := append(prior, me)
	quorum := pol.Quorum()
	if current != nil {
		quorum = current.Quorum
	}
	if *out != "" || !af.json {
		if err := writeSigned(env, *out, signed); err != nil {
			return err
		}
	}
	if *out != "" && af.json {
		return PrintJSON(env.Stdout, signedDocument{Out: *out, Version: doc.Version, Hash: pol.Hash(), WalletID: wallet, Genesis: doc.Replaces == "", Signers: signers, Quorum: quorum})
	}
	if *out == "" && af.json {
		return PrintJSON(env.Stdout, signed)
	}
	where := "the JSON above"
	if *out != "" {
		where = *out
		fmt.Fprintf(env.Stdout, "Wrote %s: policy document v%d signed by %d guardian(s).\n", *out, doc.Version, len(signers))
	}
	switch {
	case doc.Replaces == "" && len(signers) < quorum:
		fmt.Fprintf(env.Stderr, "Signed: %d of the %d guardian signatures its quorum needs. The next guardian runs\n  custos guardian sign-policy %s --genesis --add-signature <%s> ...\n", len(signers), quorum, file, where)
	case doc.Replaces == "":
		fmt.Fprintf(env.Stderr, "Signed by %d guardians, its quorum. The operator posts %s to the coordinator (POST /v1/policy) and pins hash %s (the wallet id) in every node's genesis.\n", len(signers), where, pol.Hash().Hex())
	case len(signers) < quorum:
		fmt.Fprintf(env.Stderr, "Signed: %d of the %d guardian signatures a loosening needs (one suffices where it only tightens). The next guardian adds theirs with --add-signature <%s>; then POST /v1/policy.\n", len(signers), quorum, where)
	default:
		fmt.Fprintf(env.Stderr, "Signed by %d guardians, the quorum. POST %s to the coordinator's /v1/policy.\n", len(signers), where)
	}
	return nil
}

// writeDocument shows a policy document the way a guardian must read it
// before signing: what it is, what it replaces, who governs it and what
// it allows.
func writeDocument(w io.Writer, file string, pol *policy.Policy, wallet common.Hash, current *admin.Wallet, signed []common.Address) {
	doc := pol.Document()
	names := map[common.Address]string{}
	for n, a := range doc.Guardians {
		names[common.HexToAddress(a)] = n
	}
	who := func(a common.Address) string {
		if n, ok := names[a]; ok {
			return n + " " + a.Hex()
		}
		return a.Hex()
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "policy document\t%s\n", file)
	fmt.Fprintf(tw, "version\t%d\n", doc.Version)
	fmt.Fprintf(tw, "hash\t%s\n", pol.Hash().Hex())
	if doc.Replaces == "" {
		fmt.Fprintf(tw, "replaces\tnothing: the genesis document of a new wallet\n")
		fmt.Fprintf(tw, "wallet id\t%s (its own hash)\n", wallet.Hex())
	} else {
		r := doc.Replaces
		if current != nil {
			r += fmt.Sprintf(" (the node's current policy v%d)", current.PolicyVersion)
		}
		fmt.Fprintf(tw, "replaces\t%s\n", r)
		fmt.Fprintf(tw, "wallet id\t%s\n", wallet.Hex())
	}
	var gs []string
	for _, a := range pol.Guardians() {
		gs = append(gs, who(a))
	}
	fmt.Fprintf(tw, "guardians\t%s\n", strings.Join(gs, ", "))
	if current != nil && !slices.Equal(current.Guardians, pol.Guardians()) {
		var cs []string
		for _, a := range current.Guardians {
			cs = append(cs, a.Hex())
		}
		fmt.Fprintf(tw, "\tCHANGED from the current %s\n", strings.Join(cs, ", "))
	}
	q := fmt.Sprintf("%d of %d", doc.Quorum, len(gs))
	if current != nil && current.Quorum != doc.Quorum {
		q += fmt.Sprintf(" (CHANGED from %d)", current.Quorum)
	}
	fmt.Fprintf(tw, "quorum\t%s\n", q)
	for i, t := range pol.Tiers() {
		k := ""
		if i == 0 {
			k = "tiers"
		}
		roles := make([]string, len(t.Roles))
		for j, r := range t.Roles {
			roles[j] = string(r)
		}
		d := fmt.Sprintf("%s: %s sign", t.Name, strings.Join(roles, "+"))
		if t.Approvals > 0 {
			d += fmt.Sprintf(", %d guardian approval(s)", t.Approvals)
		}
		if t.Delay > 0 {
			d += ", delay " + t.Delay.String()
		}
		fmt.Fprintf(tw, "%s\t%s\n", k, d)
	}
	agents := make([]string, 0, len(doc.Agents))
	for _, a := range pol.Agents() {
		agents = append(agents, string(a))
	}
	if len(agents) == 0 {
		agents = append(agents, "none")
	}
	fmt.Fprintf(tw, "agents\t%s\n", strings.Join(agents, ", "))
	fmt.Fprintf(tw, "rules\t%d (in order: %s)\n", len(doc.Rules), ruleIDs(doc.Rules))
	if doc.Breaker != nil {
		fmt.Fprintf(tw, "circuit breaker\ton\n")
	}
	for _, a := range signed {
		fmt.Fprintf(tw, "signed by\t%s\n", who(a))
	}
	tw.Flush()
}

func ruleIDs(rs []policy.RuleDoc) string {
	out := make([]string, len(rs))
	for i, r := range rs {
		v := "tier " + r.Tier
		switch {
		case r.Allow:
			v = "allow"
		case r.Deny:
			v = "deny"
		}
		out[i] = r.ID + " → " + v
	}
	if len(out) > 12 {
		out = append(out[:12], "…")
	}
	return strings.Join(out, ", ")
}

// memberList collects committee members written member:role, separated by
// commas or in repeated flags.
type memberList []tss.Member

func (l *memberList) String() string { return fmt.Sprint(len(*l)) }

func (l *memberList) Set(v string) error {
	for _, e := range strings.Split(v, ",") {
		m, err := parseEntry(strings.TrimSpace(e))
		if err != nil {
			return err
		}
		*l = append(*l, m)
	}
	return nil
}

// parseEntry reads one member:role entry (policy.CommitteeEntry's form).
func parseEntry(e string) (tss.Member, error) {
	id, role, ok := strings.Cut(e, ":")
	if !ok || id == "" || strings.Contains(role, ":") {
		return tss.Member{}, fmt.Errorf("%q: want member:role (the member's peer id and its role: agent, policy or guardian)", e)
	}
	r, err := ids.ParseRole(role)
	if err != nil {
		return tss.Member{}, fmt.Errorf("%q: %v", e, err)
	}
	return tss.Member{ID: ids.MemberID(id), Role: r}, nil
}

// entriesCommittee reads an authorisation's committee back, refusing
// entries that are malformed or not in the sorted form every old member
// compares.
func entriesCommittee(es []string, t int) (tss.Committee, error) {
	c := tss.Committee{Threshold: t}
	for _, e := range es {
		m, err := parseEntry(e)
		if err != nil {
			return tss.Committee{}, err
		}
		c.Members = append(c.Members, m)
	}
	if err := c.Validate(); err != nil {
		return tss.Committee{}, err
	}
	if !slices.Equal(es, admin.CommitteeEntries(c)) {
		return tss.Committee{}, errors.New("its committee entries are not sorted; every old member would refuse it")
	}
	return c, nil
}

// describeCommittee is "2-of-3: a:agent, b:policy, c:guardian (guardian
// floor 0)".
func describeCommittee(c tss.Committee) string {
	return fmt.Sprintf("%d-of-%d: %s (guardian floor %d)", c.Threshold+1, len(c.Members), strings.Join(admin.CommitteeEntries(c), ", "), c.GuardianFloor())
}

// differ says how two reshare authorisations differ, or "" if they do not.
func differ(a, b api.Reshare) string {
	switch {
	case a.Key != b.Key:
		return fmt.Sprintf("key %s, not %s", b.Key.Hex(), a.Key.Hex())
	case a.Generation != b.Generation:
		return fmt.Sprintf("generation %d, not %d", b.Generation, a.Generation)
	case !slices.Equal(a.OldMembers, b.OldMembers) || a.OldThreshold != b.OldThreshold:
		return fmt.Sprintf("old committee t=%d [%s], not t=%d [%s]", b.OldThreshold, strings.Join(b.OldMembers, " "), a.OldThreshold, strings.Join(a.OldMembers, " "))
	case !slices.Equal(a.NewMembers, b.NewMembers) || a.NewThreshold != b.NewThreshold:
		return fmt.Sprintf("new committee t=%d [%s], not t=%d [%s]", b.NewThreshold, strings.Join(b.NewMembers, " "), a.NewThreshold, strings.Join(a.NewMembers, " "))
	case !a.Expiry.Equal(b.Expiry):
		return fmt.Sprintf("expiry %s, not %s", b.Expiry.UTC().Format(time.RFC3339), a.Expiry.UTC().Format(time.RFC3339))
	}
	return ""
}

// signedReshare is the --json report of authorize-reshare when the
// authorisation itself goes to --out.
type signedReshare struct {
	Out      string           `json:"out"`
	Key      common.Address   `json:"key"`
	WalletID common.Hash      `json:"wallet_id"`
	Signers  []common.Address `json:"signers"`
	Quorum   int              `json:"quorum,omitempty"`
}

func guardianAuthorizeReshare(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "guardian authorize-reshare", "guardian authorize-reshare --key KEY --generation N --old member:role,... --old-threshold T --new member:role,... --new-threshold T [--expiry 24h] (--wallet ID | --admin ADDR) [--from-node] [--add-signature JSON|FILE ...] --keystore FILE --password-file FILE [--out FILE] [--yes] [--json]")
	var af adminFlags
	var sf signerFlags
	af.register(fs, env)
	sf.register(fs, env)
	keyFlag := fs.String("key", "", "the key to reshare (key:0x… or its address)")
	genFlag := fs.Int64("generation", -1, "the key's current generation (custos keys show prints it)")
	var oldFlag, newFlag memberList
	fs.Var(&oldFlag, "old", "the key's current committee: member:role entries, comma-separated or repeated")
	oldT := fs.Int("old-threshold", -1, "the current threshold t (any t+1 sign), as custos keys show prints it")
	fs.Var(&newFlag, "new", "the new committee: member:role entries, comma-separated or repeated")
	newT := fs.Int("new-threshold", -1, "the new threshold t (any t+1 sign), as custos keys reshare --threshold takes it")
	expiry := fs.Duration("expiry", 24*time.Hour, "how long the authorisation is good for")
	walletFlag := fs.String("wallet", "", "the wallet id it is signed for (custos guardian wallet shows it); without it, --admin asks the node")
	fromNode := fs.Bool("from-node", false, "take the key's generation and current committee from the node (--admin): the key named by --key, or its only key")
	out := fs.String("out", "", "write the signed authorisation's JSON to FILE (replaced whole) instead of printing it")
	var adds stringList
	fs.Var(&adds, "add-signature", "another guardian's authorize-reshare output for the same reshare (JSON, or a file holding it); repeatable")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return Usagef("authorize-reshare takes no arguments; use --key, --old, --new")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// What the other guardians signed, if any: every signature is over the
	// same authorisation.
	var (
		r     api.Reshare
		added bool
	)
	for i, v := range adds {
		var o api.Reshare
		if err := readSigned(v, "guardian authorize-reshare", &o); err != nil {
			return err
		}
		if i == 0 {
			r, added = o, true
			r.Signatures = nil
		} else if d := differ(r, o); d != "" {
			return fmt.Errorf("--add-signature %d authorises another reshare than the first: %s", i+1, d)
		}
		r.Signatures = append(r.Signatures, o.Signatures...)
	}
	if len(r.Signatures) >= policy.MaxSignatures {
		return fmt.Errorf("--add-signature: %d signatures already; an authorisation takes at most %d", len(r.Signatures), policy.MaxSignatures)
	}

	// The key: from --key, the added authorisation or the node.
	var key common.Address
	if *keyFlag != "" {
		k, err := ids.ParseKeyID(*keyFlag)
		if err != nil {
			return Usagef("--key %q: %v", *keyFlag, err)
		}
		key = k.Address()
		if added && key != r.Key {
			return fmt.Errorf("--key %s, but the added signatures authorise a reshare of %s", key.Hex(), r.Key.Hex())
		}
	} else if added {
		key = r.Key
	}

	var (
		c       *admin.Client
		current *admin.Wallet
	)
	if *fromNode || *walletFlag == "" {
		if af.addr == "" {
			if *fromNode {
				return Usagef("--from-node needs the node's admin address: --admin ADDR")
			}
			return Usagef("pass the wallet id the authorisation is signed for with --wallet ID (custos guardian wallet shows it), or --admin ADDR to ask the node")
		}
		if c, err = af.client(); err != nil {
			return err
		}
		defer c.Close()
		if current, err = c.Wallet(ctx); err != nil {
			return explain(err)
		}
	}
	var wallet common.Hash
	if *walletFlag != "" {
		if wallet, err = parseHash(*walletFlag); err != nil {
			return Usagef("--wallet %q: %v", *walletFlag, err)
		}
		if current != nil && current.WalletID != wallet {
			return fmt.Errorf("--wallet %s, but the node's wallet id is %s", wallet.Hex(), current.WalletID.Hex())
		}
	} else {
		wallet = current.WalletID
	}

	// The key's current committee: the node's view (--from-node), the
	// flags, or the added authorisation; any two given must agree.
	var old tss.Committee
	haveOld := false
	var gen uint32
	haveGen := false
	if *fromNode {
		st, err := c.Status(ctx)
		if err != nil {
			return explain(err)
		}
		info, err := pickKey(st.Keys, key, key != (common.Address{}))
		if err != nil {
			return err
		}
		key, old, haveOld, gen, haveGen = info.Address, info.Committee, true, info.Generation, true
		if added && key != r.Key {
			return fmt.Errorf("the node's key is %s, but the added signatures authorise a reshare of %s", key.Hex(), r.Key.Hex())
		}
	}
	if key == (common.Address{}) {
		return Usagef("authorize-reshare needs --key KEY (or --from-node, or --add-signature)")
	}
	if set["generation"] {
		if *genFlag < 0 || *genFlag > int64(^uint32(0)) {
			return Usagef("--generation %d: want 0 to %d", *genFlag, ^uint32(0))
		}
		if haveGen && uint32(*genFlag) != gen {
			return fmt.Errorf("--generation %d, but the node's key %s is at generation %d", *genFlag, key.Hex(), gen)
		}
		gen, haveGen = uint32(*genFlag), true
	}
	if added {
		if haveGen && r.Generation != gen {
			return fmt.Errorf("the added signatures authorise generation %d, but the key is at generation %d", r.Generation, gen)
		}
		gen, haveGen = r.Generation, true
	}
	if !haveGen {
		return Usagef("authorize-reshare needs --generation N (custos keys show prints it), or --from-node")
	}
	if len(oldFlag) > 0 || set["old-threshold"] {
		if len(oldFlag) == 0 || !set["old-threshold"] {
			return Usagef("--old and --old-threshold go together")
		}
		fc := tss.Committee{Members: oldFlag, Threshold: *oldT}
		if err := fc.Validate(); err != nil {
			return Usagef("--old: %v", err)
		}
		if haveOld && !fc.Equal(old) {
			return fmt.Errorf("--old %s, but the node's key %s has committee %s", describeCommittee(fc), key.Hex(), describeCommittee(old))
		}
		old, haveOld = fc, true
	}
	if added {
		ac, err := entriesCommittee(r.OldMembers, r.OldThreshold)
		if err != nil {
			return fmt.Errorf("--add-signature: old committee: %w", err)
		}
		if haveOld && !ac.Equal(old) {
			return fmt.Errorf("the added signatures authorise moving the key from %s, but its committee is %s", describeCommittee(ac), describeCommittee(old))
		}
		old, haveOld = ac, true
	}
	if !haveOld {
		return Usagef("authorize-reshare needs the key's current committee: --old member:role,... and --old-threshold T, or --from-node")
	}

	// The new committee: the flags or the added authorisation.
	var nc tss.Committee
	haveNew := false
	if len(newFlag) > 0 || set["new-threshold"] {
		if len(newFlag) == 0 || !set["new-threshold"] {
			return Usagef("--new and --new-threshold go together")
		}
		nc, haveNew = tss.Committee{Members: newFlag, Threshold: *newT}, true
		if err := nc.Validate(); err != nil {
			return Usagef("--new: %v", err)
		}
	}
	if added {
		ac, err := entriesCommittee(r.NewMembers, r.NewThreshold)
		if err != nil {
			return fmt.Errorf("--add-signature: new committee: %w", err)
		}
		if haveNew && !ac.Equal(nc) {
			return fmt.Errorf("--new %s, but the added signatures authorise %s", describeCommittee(nc), describeCommittee(ac))
		}
		nc, haveNew = ac, true
	}
	if !haveNew {
		return Usagef("authorize-reshare needs the new committee: --new member:role,... and --new-threshold T")
	}

	now := guardianNow()
	var exp time.Time
	switch {
	case added && set["expiry"]:
		return Usagef("--expiry: the expiry is the one the first guardian signed (%s)", r.Expiry.UTC().Format(time.RFC3339))
	case added:
		exp = r.Expiry
	case *expiry <= 0:
		return Usagef("--expiry %s: must be positive", *expiry)
	default:
		exp = now.Add(*expiry).Truncate(time.Second).UTC()
	}
	if !exp.After(now) {
		return fmt.Errorf("the authorisation expired at %s", exp.UTC().Format(time.RFC3339))
	}
	want := api.Reshare{
		Key: key, Generation: gen,
		OldMembers: admin.CommitteeEntries(old), OldThreshold: old.Threshold,
		NewMembers: admin.CommitteeEntries(nc), NewThreshold: nc.Threshold,
		Expiry: exp, Signatures: r.Signatures,
	}
	if added {
		if d := differ(want, r); d != "" {
			return fmt.Errorf("the added signatures authorise another reshare: %s", d)
		}
	}

	prior, err := admin.ReshareSigners(wallet, want)
	if err != nil {
		return fmt.Errorf("--add-signature: %w", err)
	}
	seen := map[common.Address]bool{}
	for i, a := range prior {
		if seen[a] {
			return fmt.Errorf("--add-signature: guardian %s signed twice (signature %d); each guardian signs once", a.Hex(), i+1)
		}
		seen[a] = true
		if current != nil && !slices.Contains(current.Guardians, a) {
			return fmt.Errorf("--add-signature: signature %d recovers to %s, not a guardian of the wallet (signed for another wallet id than %s, or by another account); the nodes would refuse the whole set", i+1, a.Hex(), wallet.Hex())
		}
	}
	g, err := sf.open()
	if err != nil {
		return err
	}
	me := g.Address()
	if seen[me] {
		return fmt.Errorf("not signing: %s has signed this authorisation already", me.Hex())
	}
	if current != nil && !slices.Contains(current.Guardians, me) {
		return fmt.Errorf("not signing: %s is not a guardian of the current policy v%d; the nodes would refuse every signature with it", me.Hex(), current.PolicyVersion)
	}

	writeReshare(env.Stderr, want, old, nc, wallet, prior)
	if err := confirm(env, sf.yes, fmt.Sprintf("Authorise this reshare as %s?", me.Hex())); err != nil {
		return err
	}
	signed, err := g.SignReshare(wallet, want)
	if err != nil {
		return err
	}
	signers := append(prior, me)
	quorum := 0
	if current != nil {
		quorum = current.Quorum
	}
	switch {
	case *out != "" && af.json:
		if err := writeSigned(env, *out, signed); err != nil {
			return err
		}
		return PrintJSON(env.Stdout, signedReshare{Out: *out, Key: key, WalletID: wallet, Signers: signers, Quorum: quorum})
	case *out != "":
		if err := writeSigned(env, *out, signed); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "Wrote %s: reshare of %s signed by %d guardian(s).\n", *out, key.Hex(), len(signers))
	default:
		if err := writeSigned(env, "", signed); err != nil {
			return err
		}
	}
	where := "<this JSON>"
	if *out != "" {
		where = *out
	}
	of := "the quorum's (custos guardian wallet shows it)"
	if quorum > 0 {
		of = fmt.Sprintf("%d", quorum)
	}
	var members []string
	for _, m := range nc.Canonical().Members {
		members = append(members, "--member "+string(m.ID)+":"+string(m.Role))
	}
	fmt.Fprintf(env.Stderr, "Signed: %d guardian signature(s) of the %s needed. Each other guardian runs\n  custos guardian authorize-reshare --add-signature %s [--from-node] ...\nand then the operator runs\n  custos keys reshare %s %s --threshold %d --authorization %s\n",
		len(signers), of, where, ids.KeyIDOf(key), strings.Join(members, " "), nc.Threshold, where)
	return nil
}

// pickKey finds key among the node's keys, or its only key when none is
// named.
func pickKey(keys []tss.KeyInfo, key common.Address, named bool) (tss.KeyInfo, error) {
	if named {
		for _, k := range keys {
			if k.Address == key {
				return k, nil
			}
		}
		return tss.KeyInfo{}, fmt.Errorf("the node holds no share of key %s (custos guardian authorize-reshare --from-node asks a node of the key's committee)", key.Hex())
	}
	switch len(keys) {
	case 1:
		return keys[0], nil
	case 0:
		return tss.KeyInfo{}, errors.New("the node holds no key")
	}
	var as []string
	for _, k := range keys {
		as = append(as, k.Address.Hex())
	}
	return tss.KeyInfo{}, Usagef("the node holds %d keys (%s): name one with --key", len(keys), strings.Join(as, ", "))
}

// writeReshare shows a reshare the way a guardian must read it before
// authorising it: who holds the key now, who will, and who leaves.
func writeReshare(w io.Writer, r api.Reshare, old, nc tss.Committee, wallet common.Hash, signed []common.Address) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "reshare of key\t%s\n", r.Key.Hex())
	fmt.Fprintf(tw, "generation\t%d (the reshare makes %d)\n", r.Generation, r.Generation+1)
	fmt.Fprintf(tw, "from\t%s\n", describeCommittee(old))
	fmt.Fprintf(tw, "to\t%s\n", describeCommittee(nc))
	oldE, newE := admin.CommitteeEntries(old), admin.CommitteeEntries(nc)
	for _, e := range oldE {
		if !slices.Contains(newE, e) {
			fmt.Fprintf(tw, "leaves\t%s\n", e)
		}
	}
	for _, e := range newE {
		if !slices.Contains(oldE, e) {
			fmt.Fprintf(tw, "joins\t%s\n", e)
		}
	}
	fmt.Fprintf(tw, "expires\t%s (%s)\n", r.Expiry.UTC().Format(time.RFC3339), until(r.Expiry))
	fmt.Fprintf(tw, "wallet id\t%s\n", wallet.Hex())
	for _, a := range signed {
		fmt.Fprintf(tw, "signed by\t%s\n", a.Hex())
	}
	tw.Flush()
}
