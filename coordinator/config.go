package coordinator

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/common"
	"github.com/goccy/go-yaml"
)

// Config is the coordinator's configuration file (YAML, strict: an
// unknown key is refused). Relative paths are relative to the file's
// directory. Environment variables override some fields (see LoadConfig).
//
//	data_dir: /var/lib/custos/coordinator
//	store_key: {file: store.key}
//	identity: identity.key
//	listen: [/ip4/0.0.0.0/tcp/4100]
//	http: {listen: 127.0.0.1:8080}
//	members:
//	  - {id: 12D3KooW..., role: agent, addrs: [/ip4/10.0.0.1/tcp/4001]}
//	operators:
//	  - {name: ops, token_file: ops.token}
//	chain: {rpc_url: http://127.0.0.1:8545, chain_id: 1}
//	policy: {genesis_hash: 0x...}
//	presign: {target: 2, interval: 10s}
type Config struct {
	DataDir string `yaml:"data_dir"`
	// Identity is the libp2p identity file (default identity.key in the
	// data directory); created on first start.
	StoreKey KeySource    `yaml:"store_key"`
	Identity string       `yaml:"identity"`
	Listen   []string     `yaml:"listen"`
	Members  []MemberConf `yaml:"members"`
	HTTP     HTTPConf     `yaml:"http"`
	// Operators hold the bearer tokens of operator actions: create a key,
	// start a reshare, propose a policy, read the audit log.
	Operators  []Operator  `yaml:"operators"`
	RateLimits RateLimits  `yaml:"rate_limits"`
	Chain      ChainConf   `yaml:"chain"`
	Policy     GenesisConf `yaml:"policy"`
	Timeouts   Timeouts    `yaml:"timeouts"`
	Presign    PresignConf `yaml:"presign"`
	LogLevel   string      `yaml:"log_level"`
	dir        string      // the configuration file's directory
	getenv     func(string) string
	checked    bool
	tokens     map[string]string // token → operator name, filled by check
}

// KeySource says where the store's encryption key comes from: exactly one
// of a file (32 bytes or 64 hex digits, mode 0600), an environment variable
// holding 64 hex digits, or an environment variable holding a passphrase
// (Argon2id).
type KeySource struct {
	File          string `yaml:"file"`
	Env           string `yaml:"env"`
	PassphraseEnv string `yaml:"passphrase_env"`
}

// MemberConf is one cluster node: its libp2p peer id, addresses and role.
type MemberConf struct {
	ID    string   `yaml:"id"`
	Addrs []string `yaml:"addrs"`
	Role  string   `yaml:"role"`
}

// HTTPConf is the REST API's listener.
type HTTPConf struct {
	Listen string `yaml:"listen"`
}

// Operator is one operator credential: a name (for logs and rate limits)
// and a bearer token, given inline or in a file.
type Operator struct {
	Name      string `yaml:"name"`
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
}

// Rate is a token bucket: requests per second and burst.
type Rate struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// RateLimits bound requests per credential: each agent, each operator,
// and each remote address for unauthenticated calls.
type RateLimits struct {
	Agent     Rate `yaml:"agent"`
	Operator  Rate `yaml:"operator"`
	Anonymous Rate `yaml:"anonymous"`
}

// ChainConf is the Ethereum node transactions are broadcast to. ChainID,
// if set, is the only chain id requests may name; with an RPC URL, the
// node's chain id must match it.
type ChainConf struct {
	RPCURL  string `yaml:"rpc_url"`
	ChainID uint64 `yaml:"chain_id"`
}

// GenesisConf pins the wallet's first policy document (policy.Genesis):
// its hash, or the guardian accounts and how many of them must sign it.
type GenesisConf struct {
	GenesisHash string   `yaml:"genesis_hash"`
	Guardians   []string `yaml:"guardians"`
	Quorum      int      `yaml:"quorum"`
}

// Timeouts of the coordinator's work.
type Timeouts struct {
	// Propose bounds one round of proposals (and one Start).
	Propose time.Duration `yaml:"propose"`
	// Session bounds one signing session after Start.
	Session time.Duration `yaml:"session"`
	// Keygen bounds a key generation or reshare, pre-parameter waits
	// included.
	Keygen time.Duration `yaml:"keygen"`
	// Probe bounds the status query that tells whether a member is
	// reachable.
	Probe time.Duration `yaml:"probe"`
	// Unreachable bounds how long a request being signed waits for the
	// members its tier needs when too few of them can be reached; then it
	// fails, naming the members it could not reach.
	Unreachable time.Duration `yaml:"unreachable"`
}

// PresignConf sizes the presignature pools: per key, for its hot-tier
// quorum, the coordinator keeps Target presignatures parked at the members
// (default DefaultPresignTarget; 0 turns presignatures off), filling them
// while no signing runs, at once after signing and every Interval.
type PresignConf struct {
	Target   *int          `yaml:"target"`
	Interval time.Duration `yaml:"interval"`
}

func (p PresignConf) target() int {
	if p.Target == nil {
		return DefaultPresignTarget
	}
	return *p.Target
}

// MaxPresignTarget is the largest pool a coordinator asks for: nodes hold
// at most 16 presignatures each, whatever the coordinators ask.
const MaxPresignTarget = 8

// Defaults.
const (
	DefaultPresignTarget   = 2
	DefaultPresignInterval = 10 * time.Second
	DefaultHTTPListen      = "127.0.0.1:8080"
	DefaultPropose         = 15 * time.Second
	DefaultSession         = 2 * time.Minute
	DefaultKeygen          = 15 * time.Minute
	DefaultProbe           = 3 * time.Second
	DefaultUnreachable     = 15 * time.Second
)

// The environment overrides, each named CUSTOS_COORDINATOR_ and the field.
const (
	EnvDataDir       = "CUSTOS_COORDINATOR_DATA_DIR"
	EnvHTTPListen    = "CUSTOS_COORDINATOR_HTTP_LISTEN"
	EnvChainRPCURL   = "CUSTOS_COORDINATOR_CHAIN_RPC_URL"
	EnvChainID       = "CUSTOS_COORDINATOR_CHAIN_ID"
	EnvLogLevel      = "CUSTOS_COORDINATOR_LOG_LEVEL"
	EnvStoreKeyFile  = "CUSTOS_COORDINATOR_STORE_KEY_FILE"
	EnvOperatorToken = "CUSTOS_COORDINATOR_OPERATOR_TOKEN" // adds an operator named "env"
)

// LoadConfig reads the configuration file at path, applies the
// environment overrides read through getenv (nil: none) and checks it.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("coordinator: read config: %w", err)
	}
	cfg, err := ParseConfig(b, filepath.Dir(path), getenv)
	if err != nil {
		return nil, fmt.Errorf("coordinator: config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses a configuration (relative paths are relative to dir),
// applies the environment overrides and checks it.
func ParseConfig(b []byte, dir string, getenv func(string) string) (*Config, error) {
	var cfg Config
	if err := yaml.UnmarshalWithOptions(b, &cfg, yaml.Strict()); err != nil {
		return nil, errors.New(yaml.FormatError(err, false, true))
	}
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if v := getenv(EnvDataDir); v != "" {
		cfg.DataDir = v
	}
	if v := getenv(EnvHTTPListen); v != "" {
		cfg.HTTP.Listen = v
	}
	if v := getenv(EnvChainRPCURL); v != "" {
		cfg.Chain.RPCURL = v
	}
	if v := getenv(EnvChainID); v != "" {
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a chain id", EnvChainID, v)
		}
		cfg.Chain.ChainID = id
	}
	if v := getenv(EnvLogLevel); v != "" {
		cfg.LogLevel = v
	}
	if v := getenv(EnvStoreKeyFile); v != "" {
		cfg.StoreKey = KeySource{File: v}
	}
	if v := getenv(EnvOperatorToken); v != "" {
		cfg.Operators = append(cfg.Operators, Operator{Name: "env", Token: v})
	}
	cfg.dir = dir
	cfg.getenv = getenv
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// minTokenLen keeps operator tokens out of guessing range.
const minTokenLen = 16

func (c *Config) check() error {
	if c.checked {
		return nil
	}
	if err := c.checkOnce(); err != nil {
		return err
	}
	c.checked = true
	return nil
}

func (c *Config) checkOnce() error {
	if c.DataDir == "" {
		return errors.New("data_dir is missing")
	}
	c.DataDir = c.path(c.DataDir)
	n := 0
	for _, s := range []string{c.StoreKey.File, c.StoreKey.Env, c.StoreKey.PassphraseEnv} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("store_key needs exactly one of file, env or passphrase_env")
	}
	if c.Identity == "" {
		c.Identity = filepath.Join(c.DataDir, "identity.key")
	}
	c.Identity = c.path(c.Identity)
	if len(c.Listen) == 0 {
		c.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	if len(c.Members) == 0 {
		return errors.New("members is empty: the coordinator needs the nodes it coordinates")
	}
	seen := map[string]bool{}
	for i, m := range c.Members {
		if _, err := p2p.ParseMember(m.ID, m.Addrs...); err != nil {
			return fmt.Errorf("members[%d]: %w", i, err)
		}
		if _, err := ids.ParseRole(m.Role); err != nil {
			return fmt.Errorf("members[%d] (%s): %w", i, m.ID, err)
		}
		if seen[m.ID] {
			return fmt.Errorf("members[%d]: %s listed twice", i, m.ID)
		}
		seen[m.ID] = true
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = DefaultHTTPListen
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		return fmt.Errorf("http.listen %q: %w", c.HTTP.Listen, err)
	}
	c.tokens = map[string]string{}
	names := map[string]bool{}
	for i, o := range c.Operators {
		if o.Name == "" {
			return fmt.Errorf("operators[%d]: name is missing", i)
		}
		if names[o.Name] {
			return fmt.Errorf("operators[%d]: name %q used twice", i, o.Name)
		}
		names[o.Name] = true
		tok := o.Token
		switch {
		case o.Token != "" && o.TokenFile != "":
			return fmt.Errorf("operators[%d] (%s): give token or token_file, not both", i, o.Name)
		case o.TokenFile != "":
			b, err := os.ReadFile(c.path(o.TokenFile))
			if err != nil {
				return fmt.Errorf("operators[%d] (%s): %w", i, o.Name, err)
			}
			tok = string(bytes.TrimSpace(b))
		}
		if len(tok) < minTokenLen {
			return fmt.Errorf("operators[%d] (%s): token is shorter than %d characters", i, o.Name, minTokenLen)
		}
		if _, dup := c.tokens[tok]; dup {
			return fmt.Errorf("operators[%d] (%s): token shared with another operator", i, o.Name)
		}
		c.tokens[tok] = o.Name
	}
	for _, r := range []*Rate{&c.RateLimits.Agent, &c.RateLimits.Operator, &c.RateLimits.Anonymous} {
		if r.PerSecond < 0 || r.Burst < 0 {
			return errors.New("rate_limits: negative rate or burst")
		}
	}
	if c.RateLimits.Agent.PerSecond == 0 {
		c.RateLimits.Agent = Rate{PerSecond: 5, Burst: 20}
	}
	if c.RateLimits.Operator.PerSecond == 0 {
		c.RateLimits.Operator = Rate{PerSecond: 10, Burst: 50}
	}
	if c.RateLimits.Anonymous.PerSecond == 0 {
		c.RateLimits.Anonymous = Rate{PerSecond: 5, Burst: 20}
	}
	for _, r := range []*Rate{&c.RateLimits.Agent, &c.RateLimits.Operator, &c.RateLimits.Anonymous} {
		if r.Burst == 0 {
			r.Burst = max(1, int(r.PerSecond))
		}
	}
	if _, err := c.genesis(); err != nil {
		return err
	}
	t := &c.Timeouts
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&t.Propose, DefaultPropose}, {&t.Session, DefaultSession}, {&t.Keygen, DefaultKeygen}, {&t.Probe, DefaultProbe}, {&t.Unreachable, DefaultUnreachable}} {
		if *d.v < 0 {
			return errors.New("timeouts: negative duration")
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if n := c.Presign.target(); n < 0 || n > MaxPresignTarget {
		return fmt.Errorf("presign.target %d: want 0 (off) to %d", n, MaxPresignTarget)
	}
	if c.Presign.Interval < 0 {
		return errors.New("presign.interval: negative duration")
	}
	if c.Presign.Interval == 0 {
		c.Presign.Interval = DefaultPresignInterval
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	return nil
}

func (c *Config) genesis() (policy.Genesis, error) {
	var g policy.Genesis
	p := c.Policy
	if p.GenesisHash != "" {
		b, err := decodeHash(p.GenesisHash)
		if err != nil {
			return g, fmt.Errorf("policy.genesis_hash: %w", err)
		}
		g.Hash = b
	}
	for i, s := range p.Guardians {
		a, err := ids.ParseAddress(s)
		if err != nil {
			return g, fmt.Errorf("policy.guardians[%d]: %w", i, err)
		}
		g.Guardians = append(g.Guardians, a)
	}
	g.Quorum = p.Quorum
	switch {
	case g.Hash == (common.Hash{}) && len(g.Guardians) == 0:
		return g, errors.New("policy: pin the genesis document (genesis_hash, or guardians and quorum)")
	case g.Hash == (common.Hash{}) && (g.Quorum < 1 || g.Quorum > len(g.Guardians)):
		return g, fmt.Errorf("policy.quorum %d: want 1 to %d guardians", g.Quorum, len(g.Guardians))
	}
	return g, nil
}

func decodeHash(s string) (common.Hash, error) {
	if !strings.HasPrefix(s, "0x") || len(s) != 66 {
		return common.Hash{}, fmt.Errorf("%q is not 0x and 64 hex digits", s)
	}
	var h common.Hash
	if err := h.UnmarshalText([]byte(s)); err != nil {
		return common.Hash{}, fmt.Errorf("%q: %w", s, err)
	}
	return h, nil
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", s)
}

// keySource returns the store key source the configuration names.
func (c *Config) keySource() store.KeySource {
	switch {
	case c.StoreKey.File != "":
		return store.KeyFile(c.path(c.StoreKey.File))
	case c.StoreKey.Env != "":
		return store.KeyEnv(c.StoreKey.Env)
	default:
		return store.Passphrase([]byte(c.getenv(c.StoreKey.PassphraseEnv)))
	}
}

// Level returns the configured log level.
func (c *Config) Level() slog.Level {
	l, _ := parseLevel(c.LogLevel)
	return l
}
