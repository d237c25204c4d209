// Package strictjson checks what encoding/json lets through: a key given
// twice in one object (encoding/json keeps the last) and, in an object
// decoded into a struct, a key that matches a field only after case folding.
// A body an agent signs, or typed data a guardian's wallet shows, must mean
// one thing to every parser that reads the same bytes, not only to Go's.
// It imports nothing but the standard library's encoding, so the pure
// packages (chain) and the HTTP shell share it.
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Problem is what is wrong with a key.
type Problem uint8

// The problems CheckKeys reports.
const (
	Duplicate  Problem = iota + 1 // the key appears twice in one object
	Unknown                       // no field has this name
	Misspelled                    // a field has this name in another case
)

// KeyError names a refused key by its path, for example `"a"."b"[2]."c"`.
type KeyError struct {
	Path    string
	Problem Problem
	// Want is the field's spelling, for Misspelled.
	Want string
}

func (e *KeyError) Error() string {
	switch e.Problem {
	case Duplicate:
		return fmt.Sprintf("field %s appears twice", e.Path)
	case Misspelled:
		return fmt.Sprintf("unknown field %s (the field is spelled %q)", e.Path, e.Want)
	}
	return fmt.Sprintf("unknown field %s", e.Path)
}

// CheckKeys walks raw, which has already decoded into a value of type t,
// and refuses duplicate keys anywhere and, in objects decoded into structs,
// any key that is not exactly a field's JSON name. Interfaces, maps and
// types that decode themselves are checked for duplicates only. The error
// is a *KeyError, or a syntax error for input encoding/json would not have
// decoded either.
func CheckKeys(raw []byte, t reflect.Type) error {
	return walk(json.NewDecoder(bytes.NewReader(raw)), t, "")
}

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// checkedAs is what a value decoded into t is checked as: nil (duplicate
// keys only) for an interface or a type that decodes itself.
func checkedAs(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() == reflect.Interface {
		return nil
	}
	if p := reflect.PointerTo(t); p.Implements(jsonUnmarshalerType) || p.Implements(textUnmarshalerType) {
		return nil
	}
	return t
}

// fields maps the JSON names of a struct's fields, promoted ones included,
// to their types.
func fields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for _, f := range reflect.VisibleFields(t) {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if (f.Anonymous && name == "" && ft.Kind() == reflect.Struct) || !f.IsExported() {
			continue // promoted fields are listed on their own
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func walk(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	t = checkedAs(t)
	switch d {
	case '{':
		var fs map[string]reflect.Type
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fs = fields(t)
		} else if t != nil && t.Kind() == reflect.Map {
			elem = t.Elem()
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			k, _ := tok.(string)
			where := strconv.Quote(k)
			if path != "" {
				where = path + "." + where
			}
			if seen[k] {
				return &KeyError{Path: where, Problem: Duplicate}
			}
			seen[k] = true
			ft := elem
			if fs != nil {
				var ok bool
				if ft, ok = fs[k]; !ok {
					for name := range fs {
						if strings.EqualFold(name, k) {
							return &KeyError{Path: where, Problem: Misspelled, Want: name}
						}
					}
					return &KeyError{Path: where, Problem: Unknown}
				}
			}
			if err := walk(dec, ft, where); err != nil {
				return err
			}
		}
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walk(dec, elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	default:
		return errors.New("unexpected closing delimiter")
	}
	_, err = dec.Token() // the closing delimiter
	return err
}
