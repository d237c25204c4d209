package ids

import (
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
)

func TestRoles(t *testing.T) {
	for _, r := range Roles {
		got, err := ParseRole(string(r))
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "Agent", "coordinator", "guardian "} {
		if _, err := ParseRole(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRole(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

func TestSessionIDText(t *testing.T) {
	id := NewSessionID()
	if id.IsZero() || id == NewSessionID() {
		t.Fatal("NewSessionID returned a zero or repeated id")
	}
	b, err := json.Marshal(id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), `"sess:`) {
		t.Errorf("json form %s lacks the sess: prefix", b)
	}
	var back SessionID
	if err := json.Unmarshal(b, &back); err != nil || back != id {
		t.Errorf("round trip: %v, %v", back, err)
	}
	for _, s := range []string{"", id.String()[5:], "sess:00", "key:" + id.String()[5:], "sess:" + strings.Repeat("zz", 16)} {
		if _, err := ParseSessionID(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSessionID(%q) = %v, want ErrInvalid", s, err)
		}
	}
	if id.Derive("proof") == id || id.Derive("proof") != id.Derive("proof") || id.Derive("a") == id.Derive("b") {
		t.Error("Derive is not a deterministic, label-separated function")
	}
}

func TestKeyIDText(t *testing.T) {
	a := common.HexToAddress("0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359")
	k := KeyIDOf(a)
	if got, want := k.String(), "key:0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	for _, s := range []string{
		k.String(),
		"key:" + strings.ToLower(a.Hex()),
		"key:0x" + strings.ToUpper(a.Hex()[2:]),
		a.Hex(),
	} {
		got, err := ParseKeyID(s)
		if err != nil || got != k {
			t.Errorf("ParseKeyID(%q) = %v, %v", s, got, err)
		}
	}
	bad := []string{
		"",
		"key:",
		"key:0x1234",
		"key:fB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
		"key:0xFb6916095ca1df60bB79Ce92cE3Ea74c37c5d359", // checksum broken by one letter
		"key:0xgB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
	}
	for _, s := range bad {
		if _, err := ParseKeyID(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseKeyID(%q) = %v, want ErrInvalid", s, err)
		}
	}
	b, _ := json.Marshal(map[string]KeyID{"key": k})
	var back map[string]KeyID
	if err := json.Unmarshal(b, &back); err != nil || back["key"] != k {
		t.Errorf("json round trip of %s: %v %v", b, back, err)
	}
}

func TestNames(t *testing.T) {
	for _, s := range []string{"bot", "agent-1", "a.b_c", "0x"} {
		if _, err := ParseAgentID(s); err != nil {
			t.Errorf("ParseAgentID(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "-bot", "bot 1", "bot\n", "bot/..", strings.Repeat("a", 65), "agent:bot"} {
		if _, err := ParseAgentID(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseAgentID(%q) = %v, want ErrInvalid", s, err)
		}
	}
	r := NewRequestID()
	if _, err := ParseRequestID(string(r)); err != nil || !strings.HasPrefix(string(r), "req:") || r == NewRequestID() {
		t.Errorf("NewRequestID() = %q: %v", r, err)
	}
	for _, s := range []string{"", "req:a b", "req:\x00", strings.Repeat("r", 129)} {
		if _, err := ParseRequestID(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRequestID(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

// The identifiers are imported by every package: they must stay a leaf.
func TestImportsAreALeaf(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range file.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, "github.com/custos-wallet/") || strings.Contains(p, "libp2p") || strings.Contains(p, "badger") || p == "net/http" {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
}
