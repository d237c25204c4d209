package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/store"
)

func init() {
	register(&Command{
		Name:    "audit",
		Summary: "check and read a node's hash-chained audit log: verify, show",
		Run:     runAudit,
	})
}

func runAudit(ctx context.Context, env *Env, args []string) error {
	sub, rest, err := Subcommand("audit", args, "verify", "show")
	if err != nil {
		return err
	}
	if sub == "verify" {
		return auditVerify(ctx, env, rest)
	}
	return auditShow(ctx, env, rest)
}

// storeFlags open a stopped node's store directly.
type storeFlags struct {
	dataDir        string
	keyFile        string
	keyEnv         string
	passphraseFile string
}

func (s *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.dataDir, "data-dir", "", "a stopped node's data directory (read offline)")
	fs.StringVar(&s.keyFile, "key-file", "", "with --data-dir: the store's key file")
	fs.StringVar(&s.keyEnv, "key-env", "", "with --data-dir: the environment variable holding the store's key")
	fs.StringVar(&s.passphraseFile, "passphrase-file", "", "with --data-dir: a file holding the store's passphrase")
}

func (s *storeFlags) open() (*store.Store, error) {
	var key store.KeySource
	n := 0
	if s.keyFile != "" {
		key, n = store.KeyFile(s.keyFile), n+1
	}
	if s.keyEnv != "" {
		key, n = store.KeyEnv(s.keyEnv), n+1
	}
	if s.passphraseFile != "" {
		pw, err := os.ReadFile(s.passphraseFile)
		if err != nil {
			return nil, fmt.Errorf("passphrase file: %w", err)
		}
		key, n = store.Passphrase(trimLineEnd(pw)), n+1
	}
	if n != 1 {
		return nil, Usagef("--data-dir needs exactly one of --key-file, --key-env, --passphrase-file")
	}
	st, err := store.Open(s.dataDir, key, store.Options{MustExist: true})
	switch {
	case err == nil:
		return st, nil
	case errors.Is(err, store.ErrWrongKey), errors.Is(err, store.ErrSealed), errors.Is(err, store.ErrKeyInsecure), errors.Is(err, store.ErrKeyFormat):
		return nil, fmt.Errorf("open %s: %w", s.dataDir, err)
	}
	return nil, fmt.Errorf("open %s: %w (a running node holds its data directory: use --admin for it)", s.dataDir, err)
}

func trimLineEnd(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// auditSource checks that one source is named: a data directory, or an
// admin address given on the command line or by CUSTOS_ADMIN.
func auditSource(fs *flag.FlagSet, sf *storeFlags, af *adminFlags) error {
	adminSet := false
	fs.Visit(func(f *flag.Flag) { adminSet = adminSet || f.Name == "admin" })
	if sf.dataDir != "" && !adminSet {
		af.addr = ""
	}
	switch {
	case sf.dataDir != "" && af.addr != "":
		return Usagef("give --data-dir (a stopped node) or --admin (a running node), not both")
	case sf.dataDir == "" && af.addr == "":
		return Usagef("give --data-dir DIR with its key (a stopped node) or --admin ADDR (a running node)")
	}
	return nil
}

func auditVerify(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "audit verify", "audit verify (--data-dir DIR --key-file F | --admin ADDR [--token-file F]) [--json]")
	var sf storeFlags
	var af adminFlags
	sf.register(fs)
	af.register(fs, env)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return Usagef("audit verify takes no arguments")
	}
	if err := auditSource(fs, &sf, &af); err != nil {
		return err
	}
	var check *admin.AuditCheck
	var where string
	if sf.dataDir != "" {
		st, err := sf.open()
		if err != nil {
			return err
		}
		defer st.Close()
		check, err = admin.CheckOf(st.VerifyAudit(ctx))
		if err != nil {
			return fmt.Errorf("verify the audit log in %s: %w", sf.dataDir, err)
		}
		where = sf.dataDir
	} else {
		c, err := af.client()
		if err != nil {
			return err
		}
		defer c.Close()
		if check, err = c.VerifyAudit(ctx); err != nil {
			return explain(err)
		}
		where = af.addr
	}
	if af.json {
		if err := PrintJSON(env.Stdout, check); err != nil {
			return err
		}
	} else if check.Valid {
		fmt.Fprintf(env.Stdout, "Audit chain of %s is intact: %d entries.\n", where, check.Entries)
	}
	if !check.Valid {
		return fmt.Errorf("audit chain of %s is broken at entry %d: %s (%d entries before it are intact)", where, check.FirstBad, check.Problem, check.Entries)
	}
	return nil
}

func auditShow(ctx context.Context, env *Env, args []string) error {
	fs := NewFlags(env, "audit show", "audit show (--data-dir DIR --key-file F | --admin ADDR [--token-file F]) [--from N] [--to N] [--limit N] [--json]")
	var sf storeFlags
	var af adminFlags
	sf.register(fs)
	af.register(fs, env)
	from := fs.Uint64("from", 1, "first entry")
	to := fs.Uint64("to", 0, "last entry (0: the end)")
	limit := fs.Int("limit", admin.DefaultAuditPage, fmt.Sprintf("at most this many entries (1 to %d)", admin.MaxAuditPage))
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return Usagef("audit show takes no arguments")
	}
	if err := auditSource(fs, &sf, &af); err != nil {
		return err
	}
	if *limit < 1 || *limit > admin.MaxAuditPage {
		return Usagef("--limit %d: want 1 to %d", *limit, admin.MaxAuditPage)
	}
	if *to != 0 && *to < *from {
		return Usagef("--to %d is before --from %d", *to, *from)
	}
	var page *admin.AuditPage
	if sf.dataDir != "" {
		st, err := sf.open()
		if err != nil {
			return err
		}
		defer st.Close()
		last := *from + uint64(*limit) - 1
		if *to == 0 || *to > last {
			*to = last
		}
		entries, err := st.AuditRange(ctx, *from, *to)
		if err != nil {
			return fmt.Errorf("read the audit log in %s: %w", sf.dataDir, err)
		}
		page = &admin.AuditPage{Entries: make([]admin.AuditEntry, len(entries))}
		for i, e := range entries {
			page.Entries[i] = admin.AuditEntry{Entry: e, Summary: e.Describe()}
		}
		if len(entries) == *limit {
			page.Next = entries[len(entries)-1].Seq + 1
		}
	} else {
		c, err := af.client()
		if err != nil {
			return err
		}
		defer c.Close()
		if page, err = c.Audit(ctx, *from, *to, *limit); err != nil {
			return explain(err)
		}
	}
	if af.json {
		return PrintJSON(env.Stdout, page)
	}
	writeAudit(env.Stdout, page)
	return nil
}

func writeAudit(w io.Writer, page *admin.AuditPage) {
	if len(page.Entries) == 0 {
		fmt.Fprintln(w, "No entries.")
		return
	}
	for _, e := range page.Entries {
		fmt.Fprintln(w, e.Summary)
	}
	if page.Next != 0 {
		fmt.Fprintf(w, "More from --from %d.\n", page.Next)
	}
}
