package policy

import (
	"fmt"
	"strings"
)

// errPrefix starts the text of every error of this package, once.
const errPrefix = "policy: "

// errorf makes an error of this package: errPrefix, then format. Errors
// among args that are this package's own (their text starts with
// errPrefix, as every sentinel's does) read without their prefix, so no
// text says "policy:" twice; errors.Is and errors.As still find them.
func errorf(format string, args ...any) error {
	return fmt.Errorf(errPrefix+format, unprefixedArgs(args)...)
}

// wrapf is errorf without the prefix, for an error that a caller in this
// package wraps in one of its own.
func wrapf(format string, args ...any) error {
	return fmt.Errorf(format, unprefixedArgs(args)...)
}

func unprefixedArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if err, ok := a.(error); ok && strings.HasPrefix(err.Error(), errPrefix) {
			a = unprefixed{err}
		}
		out[i] = a
	}
	return out
}

// unprefixed is an error of this package inside another: its text without
// errPrefix.
type unprefixed struct{ err error }

func (u unprefixed) Error() string { return strings.TrimPrefix(u.err.Error(), errPrefix) }
func (u unprefixed) Unwrap() error { return u.err }
