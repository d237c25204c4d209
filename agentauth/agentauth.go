// Package agentauth signs and verifies what an agent asks for. An agent holds
// one Ed25519 credential; every request its sidecar sends the coordinator is
// signed over the method, the path, a hash of the body, a timestamp, a nonce
// and the agent's id. The coordinator checks freshness and replays; the
// signed request itself travels on to every node, which verifies the
// signature against the agent registry of its own guardian-signed policy, so
// neither the coordinator nor a node can put words in an agent's mouth.
package agentauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/ids"
)

// HTTP header names of a signed request.
const (
	HeaderAgent     = "Custos-Agent"
	HeaderTimestamp = "Custos-Timestamp"
	HeaderNonce     = "Custos-Nonce"
	HeaderSignature = "Custos-Signature"
)

// Errors of verification. Each is wrapped with what was wrong.
var (
	ErrMissing   = errors.New("agentauth: request is not signed")
	ErrMalformed = errors.New("agentauth: malformed signature fields")
	ErrBadSig    = errors.New("agentauth: signature does not verify")
	ErrStale     = errors.New("agentauth: timestamp outside the allowed window")
	ErrReplayed  = errors.New("agentauth: nonce already used")
	ErrUnknown   = errors.New("agentauth: unknown agent")
	ErrBusy      = errors.New("agentauth: too many requests in the replay window")
)

// MaxBody bounds the body a signed request may carry.
const MaxBody = 1 << 20

// Credential is an agent's Ed25519 key pair: the only secret of the agent
// side. It moves no funds on its own.
type Credential struct {
	agent ids.AgentID
	priv  ed25519.PrivateKey
}

// NewCredential makes a fresh credential for agent.
func NewCredential(agent ids.AgentID) (*Credential, error) {
	if _, err := ids.ParseAgentID(string(agent)); err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("agentauth: generate credential: %w", err)
	}
	return &Credential{agent: agent, priv: priv}, nil
}

// CredentialFromSeed rebuilds a credential from its 32-byte seed.
func CredentialFromSeed(agent ids.AgentID, seed []byte) (*Credential, error) {
	if _, err := ids.ParseAgentID(string(agent)); err != nil {
		return nil, err
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("agentauth: credential seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	return &Credential{agent: agent, priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// Agent returns the agent's id.
func (c *Credential) Agent() ids.AgentID { return c.agent }

// Public returns the public key a guardian enters in the agent registry.
func (c *Credential) Public() ed25519.PublicKey { return c.priv.Public().(ed25519.PublicKey) }

// Seed returns the private seed, for the credential file only.
func (c *Credential) Seed() []byte { return c.priv.Seed() }

// String redacts the secret.
func (c *Credential) String() string {
	return fmt.Sprintf("credential{agent %s, public %s, secret redacted}", c.agent, FormatPublicKey(c.Public()))
}

// GoString redacts the secret.
func (c *Credential) GoString() string { return c.String() }

// FormatPublicKey returns the text form of an agent public key, 0x and 64
// hex digits: the form of the policy document's agent registry.
func FormatPublicKey(k ed25519.PublicKey) string { return "0x" + hex.EncodeToString(k) }

// ParsePublicKey parses the text form of an agent public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok {
		return nil, fmt.Errorf("%w: public key %q lacks the 0x prefix", ErrMalformed, s)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key %q is not %d hex bytes", ErrMalformed, s, ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// Signed is a request as the agent signed it. It is what travels from the
// sidecar to the coordinator and, unchanged, from the coordinator to every
// node of the quorum.
type Signed struct {
	Agent     ids.AgentID `json:"agent"`
	Method    string      `json:"method"`
	Path      string      `json:"path"`
	Body      []byte      `json:"body"`
	Timestamp int64       `json:"timestamp"`
	Nonce     string      `json:"nonce"`
	Signature []byte      `json:"signature"`
}

const domain = "custos-agent-request/v1"

// message is the exact text signed: every field on its own line, the body
// by its SHA-256.
func message(agent ids.AgentID, method, path string, body []byte, ts int64, nonce string) []byte {
	h := sha256.Sum256(body)
	return fmt.Appendf(nil, "%s\n%s\n%s\n%s\n%s\n%d\n%s", domain, agent, method, path, hex.EncodeToString(h[:]), ts, nonce)
}

// Message returns the exact bytes the agent signed, for a verifier that
// holds the key elsewhere (policy.Policy.VerifyAgent).
func (s Signed) Message() []byte {
	return message(s.Agent, s.Method, s.Path, s.Body, s.Timestamp, s.Nonce)
}

// Sign signs a request made now.
func (c *Credential) Sign(method, path string, body []byte, now time.Time) Signed {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		panic(fmt.Sprintf("agentauth: read random nonce: %v", err))
	}
	s := Signed{Agent: c.agent, Method: method, Path: path, Body: body, Timestamp: now.Unix(), Nonce: hex.EncodeToString(n[:])}
	s.Signature = ed25519.Sign(c.priv, message(s.Agent, s.Method, s.Path, s.Body, s.Timestamp, s.Nonce))
	return s
}

// SignHTTP sets the signature headers on an outgoing request whose body is
// body (the caller sets the body itself).
func (c *Credential) SignHTTP(r *http.Request, body []byte, now time.Time) {
	s := c.Sign(r.Method, r.URL.RequestURI(), body, now)
	r.Header.Set(HeaderAgent, string(s.Agent))
	r.Header.Set(HeaderTimestamp, strconv.FormatInt(s.Timestamp, 10))
	r.Header.Set(HeaderNonce, s.Nonce)
	r.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(s.Signature))
}

// FromHTTP reads a signed request from an incoming HTTP request whose body
// the caller has already read (bounded) into body. It checks the form of
// the fields, not the signature.
func FromHTTP(r *http.Request, body []byte) (Signed, error) {
	agent := r.Header.Get(HeaderAgent)
	if agent == "" && r.Header.Get(HeaderSignature) == "" {
		return Signed{}, ErrMissing
	}
	s := Signed{Method: r.Method, Path: r.URL.RequestURI(), Body: body, Nonce: r.Header.Get(HeaderNonce)}
	a, err := ids.ParseAgentID(agent)
	if err != nil {
		return Signed{}, fmt.Errorf("%w: header %s: %v", ErrMalformed, HeaderAgent, err)
	}
	s.Agent = a
	if s.Timestamp, err = strconv.ParseInt(r.Header.Get(HeaderTimestamp), 10, 64); err != nil {
		return Signed{}, fmt.Errorf("%w: header %s is not a unix time in seconds", ErrMalformed, HeaderTimestamp)
	}
	if s.Signature, err = base64.StdEncoding.DecodeString(r.Header.Get(HeaderSignature)); err != nil {
		return Signed{}, fmt.Errorf("%w: header %s is not base64", ErrMalformed, HeaderSignature)
	}
	return s, s.checkForm()
}

func (s Signed) checkForm() error {
	if _, err := ids.ParseAgentID(string(s.Agent)); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(s.Nonce) != 32 {
		return fmt.Errorf("%w: nonce must be 32 hex digits", ErrMalformed)
	}
	if _, err := hex.DecodeString(s.Nonce); err != nil {
		return fmt.Errorf("%w: nonce must be 32 hex digits", ErrMalformed)
	}
	if len(s.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is %d bytes, want %d", ErrMalformed, len(s.Signature), ed25519.SignatureSize)
	}
	if len(s.Body) > MaxBody {
		return fmt.Errorf("%w: body of %d bytes exceeds %d", ErrMalformed, len(s.Body), MaxBody)
	}
	if s.Method == "" || !strings.HasPrefix(s.Path, "/") || strings.ContainsAny(s.Method+s.Path, "\n\r") {
		return fmt.Errorf("%w: method %q or path %q", ErrMalformed, s.Method, s.Path)
	}
	return nil
}

// Verify checks the signature with the agent's registered public key. It
// does not check freshness: a node verifies a request long after it was
// made (it may wait for a guardian), and the request's own expiry, inside
// the signed body, bounds that.
func (s Signed) Verify(pub ed25519.PublicKey) error {
	if err := s.checkForm(); err != nil {
		return err
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: agent %s has no valid public key", ErrUnknown, s.Agent)
	}
	if !ed25519.Verify(pub, message(s.Agent, s.Method, s.Path, s.Body, s.Timestamp, s.Nonce), s.Signature) {
		return fmt.Errorf("%w: agent %s, %s %s", ErrBadSig, s.Agent, s.Method, s.Path)
	}
	return nil
}

// Verifier is what the coordinator runs on each incoming request: the
// signature, a timestamp within Skew of now, and a nonce not seen before.
// Nonces are remembered until their timestamp leaves the window, so memory
// is bounded by the request rate times the window.
type Verifier struct {
	// Lookup returns the registered public key of an agent, or nil.
	Lookup func(ids.AgentID) ed25519.PublicKey
	// Skew is how far a timestamp may be from now, either way.
	Skew time.Duration
	// PerAgent bounds the nonces remembered for one agent (zero means
	// DefaultPerAgent), so that one agent, compromised, cannot fill the
	// memory shared by all and lock the others out.
	PerAgent int

	mu sync.Mutex
	// guarded by mu
	seen    map[string]time.Time // agent and nonce -> when to forget
	byAgent map[ids.AgentID]int  // nonces remembered per agent
	sweep   time.Time
}

// DefaultPerAgent is the per-agent bound when Verifier.PerAgent is zero:
// about 68 requests a second sustained over the default window, far above
// what any policy lets an agent sign.
const DefaultPerAgent = 1 << 14

// DefaultSkew is the timestamp window when Verifier.Skew is zero.
const DefaultSkew = 2 * time.Minute

// MaxRemembered bounds the nonces a Verifier holds; past it, requests are
// refused (fail closed) until old nonces leave the window.
const MaxRemembered = 1 << 18

// Verify checks s as received at now.
func (v *Verifier) Verify(s Signed, now time.Time) error {
	pub := v.Lookup(s.Agent)
	if pub == nil {
		return fmt.Errorf("%w: %s is not in the agent registry", ErrUnknown, s.Agent)
	}
	if err := s.Verify(pub); err != nil {
		return err
	}
	skew := v.Skew
	if skew <= 0 {
		skew = DefaultSkew
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen == nil {
		v.seen = make(map[string]time.Time)
		v.byAgent = make(map[ids.AgentID]int)
	}
	if now.After(v.sweep) {
		for k, until := range v.seen {
			if now.After(until) {
				delete(v.seen, k)
				a, _, _ := strings.Cut(k, "/")
				if v.byAgent[ids.AgentID(a)]--; v.byAgent[ids.AgentID(a)] <= 0 {
					delete(v.byAgent, ids.AgentID(a))
				}
			}
		}
		v.sweep = now.Add(skew / 4)
	}
	ts := time.Unix(s.Timestamp, 0)
	if ts.Before(now.Add(-skew)) || ts.After(now.Add(skew)) {
		return fmt.Errorf("%w: signed at %s, now %s, window %s", ErrStale, ts.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
	}
	key := string(s.Agent) + "/" + s.Nonce
	if _, dup := v.seen[key]; dup {
		return fmt.Errorf("%w: agent %s nonce %s", ErrReplayed, s.Agent, s.Nonce)
	}
	perAgent := v.PerAgent
	if perAgent <= 0 {
		perAgent = DefaultPerAgent
	}
	if n := v.byAgent[s.Agent]; n >= perAgent {
		return fmt.Errorf("%w: agent %s has %d nonces in the window", ErrBusy, s.Agent, n)
	}
	if len(v.seen) >= MaxRemembered {
		return fmt.Errorf("%w: %d nonces remembered", ErrBusy, len(v.seen))
	}
	v.seen[key] = ts.Add(skew)
	v.byAgent[s.Agent]++
	return nil
}
