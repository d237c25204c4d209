package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
)

func init() {
	register(&Command{
		Name:    "keys",
		Summary: "threshold keys on the coordinator: create, list, show, reshare",
		Run:     runKeys,
	})
}

func runKeys(ctx context.Context, env *Env, args []string) error {
	sub, rest, err := Subcommand("keys", args, "create", "list", "show", "reshare")
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		return keysCreate(ctx, env, rest)
	case "list":
		return keysList(ctx, env, rest)
	case "show":
		return keysShow(ctx, env, rest)
	default:
		return keysReshare(ctx, env, rest)
	}
}

// committeeFlag collects --member PEER_ID:ROLE flags.
type committeeFlag []api.CommitteeMember

func (c *committeeFlag) String() string { return fmt.Sprint(len(*c)) }

func (c *committeeFlag) Set(s string) error {
	id, role, ok := strings.Cut(s, ":")
	if !ok || id == "" {
		return fmt.Errorf("%q: want PEER_ID:ROLE", s)
	}
	r, err := ids.ParseRole(role)
	if err != nil {
		return err
	}
	*c = append(*c, api.CommitteeMember{ID: ids.MemberID(id), Role: r})
	return nil
}

func keysCreate(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "keys create", "keys create --member PEER_ID:ROLE ... --threshold T [--wait]")
	rf := addRESTFlags(fs)
	var members committeeFlag
	fs.Var(&members, "member", "a committee member, PEER_ID:ROLE (repeat)")
	threshold := fs.Int("threshold", -1, "t: any t+1 members sign")
	wait := fs.Bool("wait", true, "wait until the key exists, printing progress")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(members) == 0 || *threshold < 0 || fs.NArg() > 0 {
		return Usagef("keys create needs --member (one per committee member) and --threshold")
	}
	cl, err := rf.client(env, client.Options{})
	if err != nil {
		return err
	}
	op, err := cl.CreateKey(ctx, api.CreateKey{Committee: members, Threshold: *threshold})
	if err != nil {
		return err
	}
	return finishOp(ctx, env, cl, op, *wait, *rf.json)
}

// finishOp waits for a key operation if asked and prints it.
func finishOp(ctx context.Context, env *Env, cl *client.Client, op *api.Operation, wait, asJSON bool) error {
	if wait {
		last := ""
		var err error
		op, err = cl.WaitOperation(ctx, op.ID, time.Second, func(o *api.Operation) {
			if asJSON {
				return
			}
			line := o.Phase
			for m, p := range o.Progress {
				line += fmt.Sprintf("; %s: %s", m, p)
			}
			if line != last && o.State == api.OpRunning {
				fmt.Fprintf(env.Stderr, "%s %s: %s\n", o.Kind, o.ID, line)
				last = line
			}
		})
		if err != nil {
			return err
		}
	}
	if asJSON {
		return PrintJSON(env.Stdout, op)
	}
	fmt.Fprintf(env.Stdout, "operation %s (%s): %s\n", op.ID, op.Kind, op.State)
	if op.Key != nil {
		printKey(env.Stdout, *op.Key)
	}
	if len(op.Unconfirmed) > 0 {
		fmt.Fprintf(env.Stdout, "unconfirmed: %v (old shares kept until they confirm)\n", op.Unconfirmed)
	}
	if op.State == api.OpFailed {
		return fmt.Errorf("%s failed: %s", op.Kind, op.Error)
	}
	return nil
}

func printKey(w io.Writer, k api.Key) {
	fmt.Fprintf(w, "key %s\n  address        %s\n  public key     %s\n  threshold      %d of %d (any %d sign)\n  guardian floor %d\n  generation     %d\n",
		k.ID, k.Address.Hex(), k.PublicKey, k.Threshold, len(k.Committee.Members), k.Threshold+1, k.GuardianFloor, k.Generation)
	for _, m := range k.Committee.Members {
		fmt.Fprintf(w, "  member         %s %s\n", m.Role, m.ID)
	}
}

func keysList(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "keys list", "keys list")
	rf := addRESTFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cl, err := rf.client(env, client.Options{})
	if err != nil {
		return err
	}
	keys, err := cl.Keys(ctx)
	if err != nil {
		return err
	}
	if *rf.json {
		return PrintJSON(env.Stdout, api.Keys{Keys: keys})
	}
	if len(keys) == 0 {
		fmt.Fprintln(env.Stdout, "no keys")
	}
	for _, k := range keys {
		fmt.Fprintf(env.Stdout, "%s  %d-of-%d  guardian floor %d  generation %d\n", k.Address.Hex(), k.Threshold+1, len(k.Committee.Members), k.GuardianFloor, k.Generation)
	}
	return nil
}

func keyArg(pos []string, name string) (ids.KeyID, error) {
	if len(pos) != 1 {
		return ids.KeyID{}, Usagef("%s needs one key (key:0x… or an address)", name)
	}
	k, err := ids.ParseKeyID(pos[0])
	if err != nil {
		return ids.KeyID{}, Usagef("%v", err)
	}
	return k, nil
}

func keysShow(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "keys show", "keys show KEY")
	rf := addRESTFlags(fs)
	pos, err := parseAll(fs, args)
	if err != nil {
		return err
	}
	k, err := keyArg(pos, "keys show")
	if err != nil {
		return err
	}
	cl, err := rf.client(env, client.Options{})
	if err != nil {
		return err
	}
	key, err := cl.Key(ctx, k)
	if err != nil {
		return err
	}
	if *rf.json {
		return PrintJSON(env.Stdout, key)
	}
	printKey(env.Stdout, *key)
	return nil
}

func keysReshare(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "keys reshare", "keys reshare KEY --member PEER_ID:ROLE ... --threshold T --authorization FILE [--wait]")
	rf := addRESTFlags(fs)
	var members committeeFlag
	fs.Var(&members, "member", "a member of the new committee, PEER_ID:ROLE (repeat)")
	threshold := fs.Int("threshold", -1, "the new threshold t")
	authFile := fs.String("authorization", "", "the guardians' signed reshare authorisation (JSON, as custos guardian writes it; - for stdin)")
	wait := fs.Bool("wait", true, "wait until the reshare ends")
	pos, err := parseAll(fs, args)
	if err != nil {
		return err
	}
	k, err := keyArg(pos, "keys reshare")
	if err != nil {
		return err
	}
	if len(members) == 0 || *threshold < 0 || *authFile == "" {
		return Usagef("keys reshare needs --member, --threshold and --authorization")
	}
	var raw []byte
	if *authFile == "-" {
		raw, err = io.ReadAll(io.LimitReader(env.Stdin, 1<<20))
	} else {
		raw, err = os.ReadFile(*authFile)
	}
	if err != nil {
		return fmt.Errorf("authorization: %w", err)
	}
	var auth api.Reshare
	if err := httpapi.DecodeBytes(raw, &auth); err != nil {
		return fmt.Errorf("authorization %s: %w", *authFile, err)
	}
	cl, err := rf.client(env, client.Options{})
	if err != nil {
		return err
	}
	op, err := cl.Reshare(ctx, k, api.ReshareKey{Committee: members, Threshold: *threshold, Authorization: auth})
	if err != nil {
		return err
	}
	return finishOp(ctx, env, cl, op, *wait, *rf.json)
}
