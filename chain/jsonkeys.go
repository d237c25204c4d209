package chain

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

// checkJSONKeys refuses, in raw (already decoded into a value of type t),
// a key given twice in one object (encoding/json keeps the last) and, in an
// object decoded into a struct, a key that is not exactly a field's JSON
// name (encoding/json folds case). A wallet or any other parser reading
// the same bytes would see other values than the ones hashed here.
// internal/httpapi applies the same rule to API bodies; chain cannot
// import it (no net/http here).
func checkJSONKeys(raw []byte, t reflect.Type) error {
	return walkJSONKeys(json.NewDecoder(bytes.NewReader(raw)), t, "")
}

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// keyCheckType is what a value decoded into t is checked as: nil (only
// duplicate keys) for an interface or a type that decodes itself.
func keyCheckType(t reflect.Type) reflect.Type {
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

func structJSONFields(t reflect.Type) map[string]reflect.Type {
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

func walkJSONKeys(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	t = keyCheckType(t)
	switch d {
	case '{':
		var fields map[string]reflect.Type
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = structJSONFields(t)
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
				return fmt.Errorf("field %s appears twice", where)
			}
			seen[k] = true
			ft := elem
			if fields != nil {
				var ok bool
				if ft, ok = fields[k]; !ok {
					for name := range fields {
						if strings.EqualFold(name, k) {
							return fmt.Errorf("field %s is spelled %q", where, name)
						}
					}
					return fmt.Errorf("unknown field %s", where)
				}
			}
			if err := walkJSONKeys(dec, ft, where); err != nil {
				return err
			}
		}
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walkJSONKeys(dec, elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	default:
		return errors.New("unexpected closing delimiter")
	}
	_, err = dec.Token() // the closing delimiter
	return err
}
