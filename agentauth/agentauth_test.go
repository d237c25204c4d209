package agentauth

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/ids"
)

func newCred(t *testing.T, agent ids.AgentID) *Credential {
	t.Helper()
	c, err := NewCredential(agent)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignVerify(t *testing.T) {
	bot := newCred(t, "bot")
	other := newCred(t, "other")
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"to":"0x01","value":"1"}`)
	s := bot.Sign("POST", "/v1/requests", body, now)
	if err := s.Verify(bot.Public()); err != nil {
		t.Fatalf("verify own signature: %v", err)
	}
	// Every field is covered: change one, and the signature fails.
	tamper := map[string]func(*Signed){
		"agent":     func(s *Signed) { s.Agent = "other" },
		"method":    func(s *Signed) { s.Method = "PUT" },
		"path":      func(s *Signed) { s.Path = "/v1/keys" },
		"body":      func(s *Signed) { s.Body = bytes.Replace(s.Body, []byte(`"1"`), []byte(`"9"`), 1) },
		"timestamp": func(s *Signed) { s.Timestamp++ },
		"nonce":     func(s *Signed) { s.Nonce = strings.Repeat("0", 32) },
	}
	for name, f := range tamper {
		c := s
		c.Body = bytes.Clone(s.Body)
		f(&c)
		if err := c.Verify(bot.Public()); !errors.Is(err, ErrBadSig) {
			t.Errorf("tampered %s: %v, want ErrBadSig", name, err)
		}
	}
	if err := s.Verify(other.Public()); !errors.Is(err, ErrBadSig) {
		t.Errorf("verified under another agent's key: %v", err)
	}
	for name, f := range map[string]func(*Signed){
		"short signature": func(s *Signed) { s.Signature = s.Signature[:10] },
		"bad nonce":       func(s *Signed) { s.Nonce = "xyz" },
		"bad agent":       func(s *Signed) { s.Agent = "bot\nPOST" },
		"newline in path": func(s *Signed) { s.Path = "/v1\n/x" },
		"oversize body":   func(s *Signed) { s.Body = make([]byte, MaxBody+1) },
	} {
		c := s
		f(&c)
		if err := c.Verify(bot.Public()); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestVerifierFreshnessAndReplay(t *testing.T) {
	bot := newCred(t, "bot")
	v := &Verifier{Lookup: func(a ids.AgentID) ed25519.PublicKey {
		if a == "bot" {
			return bot.Public()
		}
		return nil
	}, Skew: time.Minute}
	now := time.Unix(1_800_000_000, 0)
	s := bot.Sign("POST", "/v1/requests", []byte("{}"), now)
	if err := v.Verify(s, now.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(s, now.Add(20*time.Second)); !errors.Is(err, ErrReplayed) {
		t.Errorf("replay: %v, want ErrReplayed", err)
	}
	// After the window the nonce is forgotten, and the request is stale.
	if err := v.Verify(s, now.Add(2*time.Minute)); !errors.Is(err, ErrStale) {
		t.Errorf("replay after the window: %v, want ErrStale", err)
	}
	if len(v.seen) != 0 {
		t.Errorf("%d nonces kept past the window", len(v.seen))
	}
	if err := v.Verify(bot.Sign("GET", "/v1/keys", nil, now.Add(-2*time.Minute)), now); !errors.Is(err, ErrStale) {
		t.Errorf("old timestamp: %v", err)
	}
	if err := v.Verify(bot.Sign("GET", "/v1/keys", nil, now.Add(2*time.Minute)), now); !errors.Is(err, ErrStale) {
		t.Errorf("future timestamp: %v", err)
	}
	stranger := newCred(t, "stranger")
	if err := v.Verify(stranger.Sign("GET", "/v1/keys", nil, now), now); !errors.Is(err, ErrUnknown) {
		t.Errorf("unregistered agent: %v", err)
	}
}

func TestHTTPRoundTrip(t *testing.T) {
	bot := newCred(t, "bot")
	body := []byte(`{"a":1}`)
	req := httptest.NewRequest("POST", "http://coordinator/v1/requests?wait=5s", bytes.NewReader(body))
	bot.SignHTTP(req, body, time.Now())
	s, err := FromHTTP(req, body)
	if err != nil {
		t.Fatal(err)
	}
	if s.Path != "/v1/requests?wait=5s" {
		t.Errorf("path %q", s.Path)
	}
	if err := s.Verify(bot.Public()); err != nil {
		t.Fatal(err)
	}
	if _, err := FromHTTP(httptest.NewRequest("GET", "/v1/keys", nil), nil); !errors.Is(err, ErrMissing) {
		t.Errorf("unsigned: %v", err)
	}
	bad := httptest.NewRequest("GET", "/v1/keys", nil)
	bad.Header = http.Header{HeaderAgent: {"bot"}, HeaderTimestamp: {"soon"}}
	if _, err := FromHTTP(bad, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad timestamp: %v", err)
	}
}

func TestKeysAndRedaction(t *testing.T) {
	bot := newCred(t, "bot")
	txt := FormatPublicKey(bot.Public())
	k, err := ParsePublicKey(txt)
	if err != nil || !k.Equal(bot.Public()) {
		t.Fatalf("ParsePublicKey(%s) = %x, %v", txt, k, err)
	}
	for _, s := range []string{"", "0x00", txt[2:], "ed25519:" + txt[2:], "0x" + strings.Repeat("zz", 32)} {
		if _, err := ParsePublicKey(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParsePublicKey(%q) = %v", s, err)
		}
	}
	again, err := CredentialFromSeed("bot", bot.Seed())
	if err != nil || !again.Public().Equal(bot.Public()) {
		t.Fatalf("CredentialFromSeed: %v", err)
	}
	seedHex := strings.TrimPrefix(FormatPublicKey(bot.Seed()), "0x")
	for _, s := range []string{bot.String(), bot.GoString()} {
		if strings.Contains(s, seedHex) || !strings.Contains(s, "redacted") {
			t.Errorf("credential text %q leaks or does not redact", s)
		}
	}
	if _, err := NewCredential("bad agent"); err == nil {
		t.Error("credential for an invalid agent id")
	}
}

// A node verifies with the key of its own guardian-signed policy: the
// message it checks there is the one the agent signed.
func TestVerifyAgainstPolicyRegistry(t *testing.T) {
	bot := newCred(t, "bot")
	s := bot.Sign("POST", "/v1/requests", []byte("{}"), time.Now())
	if !ed25519.Verify(bot.Public(), s.Message(), s.Signature) {
		t.Fatal("Message() is not what was signed")
	}
	s.Body = []byte(`{"x":1}`)
	if ed25519.Verify(bot.Public(), s.Message(), s.Signature) {
		t.Fatal("Message() ignores the body")
	}
}

// One compromised agent flooding signed requests fills its own share of
// the replay memory, not everyone's: the others still get in, and its
// share frees once its nonces leave the window.
func TestVerifierBoundsEachAgent(t *testing.T) {
	bot, other := newCred(t, "bot"), newCred(t, "other")
	v := &Verifier{Lookup: func(a ids.AgentID) ed25519.PublicKey {
		switch a {
		case "bot":
			return bot.Public()
		case "other":
			return other.Public()
		}
		return nil
	}, Skew: time.Minute, PerAgent: 3}
	now := time.Unix(1_800_000_000, 0)
	for i := range 3 {
		if err := v.Verify(bot.Sign("POST", "/v1/requests", nil, now), now); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if err := v.Verify(bot.Sign("POST", "/v1/requests", nil, now), now); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "bot") {
		t.Errorf("fourth request of bot: %v, want ErrBusy naming bot", err)
	}
	if err := v.Verify(other.Sign("POST", "/v1/requests", nil, now), now); err != nil {
		t.Errorf("other agent locked out by bot's flood: %v", err)
	}
	later := now.Add(2*time.Minute + time.Second)
	if err := v.Verify(bot.Sign("POST", "/v1/requests", nil, later), later); err != nil {
		t.Errorf("bot after its nonces left the window: %v", err)
	}
	if v.byAgent["bot"] != 1 || len(v.byAgent) != 1 {
		t.Errorf("per-agent counts %v, want only bot's fresh nonce", v.byAgent)
	}
}
