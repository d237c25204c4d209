// Package cli is the custos command line: one file per subcommand, each
// registering itself here. cmd/custos only calls Main.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// Command is one subcommand: custos <name> [args].
type Command struct {
	Name    string
	Summary string // one line for the help listing
	Run     func(ctx context.Context, env *Env, args []string) error
}

var commands = map[string]*Command{}

func register(c *Command) {
	if _, dup := commands[c.Name]; dup {
		panic("cli: command " + c.Name + " registered twice")
	}
	commands[c.Name] = c
}

// Env is what a command may touch of the process, so tests run commands
// in-process with their own output and environment.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	Stdin  io.Reader
	Getenv func(string) string
}

// ProcessEnv is the real process's environment.
func ProcessEnv() *Env {
	return &Env{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin, Getenv: os.Getenv}
}

// UsageError is a mistake on the command line: Main prints it with the
// usage and exits 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef makes a UsageError.
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// Main runs the command line args (without the program name) and returns
// the exit code: 0, 1 for a failure, 2 for a usage error. SIGINT and
// SIGTERM cancel the command's context.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, ProcessEnv(), args)
}

// Run is Main with a context and environment of the caller's.
func Run(ctx context.Context, env *Env, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		help(env.Stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.Stderr, "custos: unknown command %q\n\n", args[0])
		help(env.Stderr)
		return 2
	}
	err := c.Run(ctx, env, args[1:])
	var ue *UsageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "custos %s: %s\n", c.Name, ue.Msg)
		return 2
	default:
		fmt.Fprintf(env.Stderr, "custos %s: %s\n", c.Name, err)
		return 1
	}
}

func help(w io.Writer) {
	fmt.Fprintln(w, "custos: threshold wallets for AI agents")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: custos <command> [flags]; custos <command> -h for a command's flags.")
	fmt.Fprintln(w)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].Summary)
	}
}

// NewFlags makes a flag set for "custos <name>" that reports errors
// instead of exiting, printing its usage to env.Stderr.
func NewFlags(env *Env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("custos "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: custos %s\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// Subcommand splits "custos <group> <sub> [args]": it returns sub and its
// args, or a usage error naming the choices.
func Subcommand(group string, args []string, subs ...string) (string, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "", nil, Usagef("%s needs a subcommand: %s", group, strings.Join(subs, ", "))
	}
	for _, s := range subs {
		if args[0] == s {
			return s, args[1:], nil
		}
	}
	return "", nil, Usagef("unknown %s subcommand %q (want %s)", group, args[0], strings.Join(subs, ", "))
}

// PrintJSON writes v indented, for --json output.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
