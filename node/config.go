package node

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/common"
	"github.com/goccy/go-yaml"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Config is a node's configuration file (YAML, strict: an unknown or
// misspelt key is refused). Relative paths are taken from the directory
// of the configuration file.
//
//	role: policy                 # agent, policy or guardian
//	agent: bot                   # role agent: the one agent it serves
//	guardian: 0xA11c…            # role guardian: its human's identity account
//	data_dir: ./data
//	identity_file: ./identity.key
//	listen: [/ip4/0.0.0.0/tcp/4001]
//	members:
//	  - {peer_id: 12D3…, addrs: [/ip4/10.0.0.2/tcp/4001], role: agent}
//	coordinators:
//	  - {peer_id: 12D3…, addrs: [/ip4/10.0.0.9/tcp/4001]}
//	admin: {socket: ./admin.sock}   # or {tcp: 127.0.0.1:7401, token_file: ./admin.token}
//	store_key: {file: ./store.key}  # or {env: NAME} or {passphrase_env: NAME}
//	genesis: {hash: 0x…}            # or {guardians: [0x…], quorum: 2}
//	pool: {target: 2, concurrency: 1}
//	log: {level: info, format: text}
type Config struct {
	Role         string          `yaml:"role"`
	Agent        string          `yaml:"agent,omitempty"`
	Guardian     string          `yaml:"guardian,omitempty"`
	DataDir      string          `yaml:"data_dir"`
	IdentityFile string          `yaml:"identity_file"`
	Listen       []string        `yaml:"listen"`
	Members      []PeerConfig    `yaml:"members"`
	Coordinators []PeerConfig    `yaml:"coordinators"`
	Admin        AdminConfig     `yaml:"admin"`
	StoreKey     StoreKeyConfig  `yaml:"store_key"`
	Genesis      GenesisConfig   `yaml:"genesis"`
	Pool         PoolConfig      `yaml:"pool"`
	Log          LogConfig       `yaml:"log"`
	Timeouts     TimeoutsConfig  `yaml:"timeouts,omitempty"`
	dir          string          // the configuration file's directory
	parsed       *parsedSettings // filled by Validate
}

// PeerConfig is one cluster member or coordinator.
type PeerConfig struct {
	PeerID string   `yaml:"peer_id"`
	Addrs  []string `yaml:"addrs"`
	// Role is a member's role; coordinators have none.
	Role string `yaml:"role,omitempty"`
}

// AdminConfig is the admin API's address: a unix socket (mode 0600, the
// file's permissions are the access control) or a TCP address with a
// bearer token read from a file. Both empty: no admin API.
type AdminConfig struct {
	Socket    string `yaml:"socket,omitempty"`
	TCP       string `yaml:"tcp,omitempty"`
	TokenFile string `yaml:"token_file,omitempty"`
}

// StoreKeyConfig names where the store's encryption key comes from:
// exactly one of a key file (0600, 64 hex digits), an environment variable
// holding the key, or an environment variable holding a passphrase
// (Argon2id, salt and parameters kept beside the data).
type StoreKeyConfig struct {
	File          string `yaml:"file,omitempty"`
	Env           string `yaml:"env,omitempty"`
	PassphraseEnv string `yaml:"passphrase_env,omitempty"`
}

// GenesisConfig pins the wallet's first policy document (policy.Genesis):
// its hash, or its guardians and quorum.
type GenesisConfig struct {
	Hash      string   `yaml:"hash,omitempty"`
	Guardians []string `yaml:"guardians,omitempty"`
	Quorum    int      `yaml:"quorum,omitempty"`
}

// PoolConfig sizes the pre-parameter pool. Generate false makes the node
// use only the sets imported into it (custos node import-preparams): a
// key generation waits for an import when the pool is empty.
type PoolConfig struct {
	Target      int   `yaml:"target"`
	Concurrency int   `yaml:"concurrency"`
	Generate    *bool `yaml:"generate,omitempty"`
}

// Generates says whether the node makes pre-parameters itself (the
// default).
func (p PoolConfig) Generates() bool { return p.Generate == nil || *p.Generate }

// LogConfig chooses the log level (debug, info, warn, error) and format
// (text, json).
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// TimeoutsConfig bounds sessions (Go durations, "5m").
type TimeoutsConfig struct {
	// Session bounds a signing session once started (default 2m).
	Session string `yaml:"session,omitempty"`
	// Keygen bounds a key generation or reshare once its pre-parameters
	// are in hand (default 10m).
	Keygen string `yaml:"keygen,omitempty"`
}

// parsedSettings are the typed forms Validate derives.
type parsedSettings struct {
	role         ids.Role
	agent        ids.AgentID
	guardian     common.Address
	members      []p2p.Member
	memberRoles  map[ids.MemberID]ids.Role
	coordinators []p2p.Member
	genesis      policy.Genesis
	key          store.KeySource
	logLevel     slog.Level
}

// The environment variables that override configuration keys. Lists are
// comma-separated.
const (
	EnvRole          = "CUSTOS_NODE_ROLE"                 // role
	EnvAgent         = "CUSTOS_NODE_AGENT"                // agent
	EnvGuardian      = "CUSTOS_NODE_GUARDIAN"             // guardian
	EnvDataDir       = "CUSTOS_NODE_DATA_DIR"             // data_dir
	EnvIdentityFile  = "CUSTOS_NODE_IDENTITY_FILE"        // identity_file
	EnvListen        = "CUSTOS_NODE_LISTEN"               // listen (comma-separated)
	EnvAdminSocket   = "CUSTOS_NODE_ADMIN_SOCKET"         // admin.socket
	EnvAdminTCP      = "CUSTOS_NODE_ADMIN_TCP"            // admin.tcp
	EnvAdminToken    = "CUSTOS_NODE_ADMIN_TOKEN_FILE"     // admin.token_file
	EnvKeyFile       = "CUSTOS_NODE_STORE_KEY_FILE"       // store_key.file (clears the other sources)
	EnvKeyEnv        = "CUSTOS_NODE_STORE_KEY_ENV"        // store_key.env (clears the other sources)
	EnvPassphraseEnv = "CUSTOS_NODE_STORE_PASSPHRASE_ENV" // store_key.passphrase_env (clears the other sources)
	EnvGenesisHash   = "CUSTOS_NODE_GENESIS_HASH"         // genesis.hash
	EnvPoolTarget    = "CUSTOS_NODE_POOL_TARGET"          // pool.target
	EnvPoolGenerate  = "CUSTOS_NODE_POOL_GENERATE"        // pool.generate (true or false)
	EnvLogLevel      = "CUSTOS_NODE_LOG_LEVEL"            // log.level
	EnvLogFormat     = "CUSTOS_NODE_LOG_FORMAT"           // log.format
)

// LoadConfig reads the configuration at path, applies the CUSTOS_NODE_*
// environment overrides (getenv nil: none) and validates the result.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node: read configuration: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalWithOptions(b, &c, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("node: configuration %s: %s", path, yaml.FormatError(err, false, true))
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("node: configuration %s: %w", path, err)
	}
	c.dir = dir
	if getenv != nil {
		if err := c.applyEnv(getenv); err != nil {
			return nil, fmt.Errorf("node: configuration %s: %w", path, err)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("node: configuration %s: %w", path, err)
	}
	return &c, nil
}

func (c *Config) applyEnv(getenv func(string) string) error {
	set := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	set(EnvRole, &c.Role)
	set(EnvAgent, &c.Agent)
	set(EnvGuardian, &c.Guardian)
	set(EnvDataDir, &c.DataDir)
	set(EnvIdentityFile, &c.IdentityFile)
	if v := getenv(EnvListen); v != "" {
		c.Listen = splitList(v)
	}
	set(EnvAdminSocket, &c.Admin.Socket)
	set(EnvAdminTCP, &c.Admin.TCP)
	set(EnvAdminToken, &c.Admin.TokenFile)
	if v := getenv(EnvKeyFile); v != "" {
		c.StoreKey = StoreKeyConfig{File: v}
	}
	if v := getenv(EnvKeyEnv); v != "" {
		c.StoreKey = StoreKeyConfig{Env: v}
	}
	if v := getenv(EnvPassphraseEnv); v != "" {
		c.StoreKey = StoreKeyConfig{PassphraseEnv: v}
	}
	set(EnvGenesisHash, &c.Genesis.Hash)
	if v := getenv(EnvPoolTarget); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%s=%q is not a number", EnvPoolTarget, v)
		}
		c.Pool.Target = n
	}
	if v := getenv(EnvPoolGenerate); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%s=%q is not true or false", EnvPoolGenerate, v)
		}
		c.Pool.Generate = &b
	}
	set(EnvLogLevel, &c.Log.Level)
	set(EnvLogFormat, &c.Log.Format)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// path resolves p against the configuration file's directory.
func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

// Validate checks the configuration and derives its typed forms; New
// calls it. Errors name the key at fault.
func (c *Config) Validate() error {
	var s parsedSettings
	role, err := ids.ParseRole(c.Role)
	if err != nil {
		return fmt.Errorf("role: %q is not agent, policy or guardian", c.Role)
	}
	s.role = role
	switch role {
	case ids.RoleAgent:
		a, err := ids.ParseAgentID(c.Agent)
		if err != nil {
			return fmt.Errorf("agent: a node of role agent names the agent it serves: %v", err)
		}
		s.agent = a
	default:
		if c.Agent != "" {
			return fmt.Errorf("agent: only a node of role agent serves an agent (role is %s)", role)
		}
	}
	switch role {
	case ids.RoleGuardian:
		a, err := ids.ParseAddress(c.Guardian)
		if err != nil {
			return fmt.Errorf("guardian: a node of role guardian names its guardian's identity account: %v", err)
		}
		s.guardian = a
	default:
		if c.Guardian != "" {
			return fmt.Errorf("guardian: only a node of role guardian has a guardian account (role is %s)", role)
		}
	}
	if c.DataDir == "" {
		return errors.New("data_dir is missing")
	}
	if c.IdentityFile == "" {
		return errors.New("identity_file is missing")
	}
	if len(c.Listen) == 0 {
		return errors.New("listen: at least one multiaddr is needed")
	}
	s.memberRoles = map[ids.MemberID]ids.Role{}
	seen := map[peer.ID]string{}
	for i, m := range c.Members {
		pm, err := p2p.ParseMember(m.PeerID, m.Addrs...)
		if err != nil {
			return fmt.Errorf("members[%d]: %v", i, err)
		}
		r, err := ids.ParseRole(m.Role)
		if err != nil {
			return fmt.Errorf("members[%d] (%s): role %q is not agent, policy or guardian", i, m.PeerID, m.Role)
		}
		if prev, dup := seen[pm.ID]; dup {
			return fmt.Errorf("members[%d]: peer %s is listed already as %s", i, pm.ID, prev)
		}
		seen[pm.ID] = "a member"
		s.members = append(s.members, pm)
		s.memberRoles[ids.MemberID(pm.ID.String())] = r
	}
	for i, m := range c.Coordinators {
		pm, err := p2p.ParseMember(m.PeerID, m.Addrs...)
		if err != nil {
			return fmt.Errorf("coordinators[%d]: %v", i, err)
		}
		if m.Role != "" {
			return fmt.Errorf("coordinators[%d] (%s): a coordinator has no role (it holds no share)", i, m.PeerID)
		}
		if prev, dup := seen[pm.ID]; dup {
			return fmt.Errorf("coordinators[%d]: peer %s is listed already as %s", i, pm.ID, prev)
		}
		seen[pm.ID] = "a coordinator"
		s.coordinators = append(s.coordinators, pm)
	}
	if c.Admin.Socket != "" && c.Admin.TCP != "" {
		return errors.New("admin: give socket or tcp, not both")
	}
	if c.Admin.TCP != "" && c.Admin.TokenFile == "" {
		return errors.New("admin: a tcp admin address needs token_file (a unix socket does not)")
	}
	n := 0
	for _, v := range []string{c.StoreKey.File, c.StoreKey.Env, c.StoreKey.PassphraseEnv} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("store_key: give exactly one of file, env and passphrase_env")
	}
	switch {
	case c.StoreKey.File != "":
		s.key = store.KeyFile(c.path(c.StoreKey.File))
	case c.StoreKey.Env != "":
		s.key = store.KeyEnv(c.StoreKey.Env)
	}
	if c.Genesis.Hash != "" {
		b, err := hexBytes(c.Genesis.Hash)
		if err != nil || len(b) != 32 {
			return fmt.Errorf("genesis.hash: %q is not a 0x-prefixed 32-byte hash", c.Genesis.Hash)
		}
		s.genesis.Hash = common.BytesToHash(b)
	}
	for i, g := range c.Genesis.Guardians {
		a, err := ids.ParseAddress(g)
		if err != nil {
			return fmt.Errorf("genesis.guardians[%d]: %v", i, err)
		}
		s.genesis.Guardians = append(s.genesis.Guardians, a)
	}
	s.genesis.Quorum = c.Genesis.Quorum
	if s.genesis.Hash == (common.Hash{}) && (len(s.genesis.Guardians) == 0 || s.genesis.Quorum < 1) {
		return errors.New("genesis: pin the first policy document by hash, or by guardians and a quorum of at least 1")
	}
	if c.Pool.Target < 0 || c.Pool.Concurrency < 0 {
		return errors.New("pool: target and concurrency cannot be negative")
	}
	if c.Pool.Target == 0 {
		c.Pool.Target = 2
	}
	if c.Pool.Concurrency == 0 {
		c.Pool.Concurrency = 1
	}
	switch strings.ToLower(c.Log.Level) {
	case "", "info":
		s.logLevel = slog.LevelInfo
	case "debug":
		s.logLevel = slog.LevelDebug
	case "warn":
		s.logLevel = slog.LevelWarn
	case "error":
		s.logLevel = slog.LevelError
	default:
		return fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not text or json", c.Log.Format)
	}
	for name, v := range map[string]string{"timeouts.session": c.Timeouts.Session, "timeouts.keygen": c.Timeouts.Keygen} {
		if v == "" {
			continue
		}
		if d, err := parseDuration(v); err != nil || d <= 0 {
			return fmt.Errorf("%s: %q is not a positive duration", name, v)
		}
	}
	c.parsed = &s
	return nil
}

func hexBytes(s string) ([]byte, error) {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok {
		return nil, errors.New("no 0x prefix")
	}
	return hex.DecodeString(h)
}

// keySource is the store's key source; a passphrase is read from its
// variable here, at start, and never kept in the configuration.
func (c *Config) keySource(getenv func(string) string) store.KeySource {
	if c.StoreKey.PassphraseEnv != "" {
		return store.Passphrase([]byte(getenv(c.StoreKey.PassphraseEnv)))
	}
	return c.parsed.key
}

// Logger makes the logger the configuration asks for, writing to w.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if c.parsed != nil {
		opts.Level = c.parsed.logLevel
	}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// InitOptions are the choices of `custos node init`.
type InitOptions struct {
	Role     ids.Role
	Agent    ids.AgentID    // role agent
	Guardian common.Address // role guardian
	// Listen defaults to /ip4/0.0.0.0/tcp/4001.
	Listen []string
	// GenesisHash pins the wallet's first policy document; zero writes a
	// placeholder the operator must fill in before the node starts.
	GenesisHash common.Hash
}

// ConfigFile is the name Init gives the configuration.
const ConfigFile = "node.yaml"

// Init writes a starter configuration in dir (node.yaml), a new libp2p
// identity (identity.key) and a new store key (store.key, 0600), and
// returns the configuration and its path. It refuses a directory that
// holds a configuration, identity or key already: each is made once.
func Init(dir string, opts InitOptions) (*Config, string, error) {
	if !opts.Role.Valid() {
		return nil, "", fmt.Errorf("node: init: role %q is not agent, policy or guardian", opts.Role)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("node: init: %w", err)
	}
	cfgPath := filepath.Join(dir, ConfigFile)
	idPath := filepath.Join(dir, "identity.key")
	keyPath := filepath.Join(dir, "store.key")
	for _, p := range []string{cfgPath, idPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return nil, "", fmt.Errorf("node: init: %s exists; init never replaces it", p)
		}
	}
	key, err := p2p.LoadOrCreateIdentity(idPath)
	if err != nil {
		return nil, "", fmt.Errorf("node: init: %w", err)
	}
	var sk [32]byte
	if _, err := rand.Read(sk[:]); err != nil {
		return nil, "", fmt.Errorf("node: init: store key: %w", err)
	}
	if err := writeNew(keyPath, []byte(hex.EncodeToString(sk[:])+"\n")); err != nil {
		return nil, "", fmt.Errorf("node: init: %w", err)
	}
	id, _ := peer.IDFromPrivateKey(key)
	listen := opts.Listen
	if len(listen) == 0 {
		listen = []string{"/ip4/0.0.0.0/tcp/4001"}
	}
	c := &Config{
		Role:         string(opts.Role),
		DataDir:      "data",
		IdentityFile: "identity.key",
		Listen:       listen,
		Members:      []PeerConfig{{PeerID: id.String(), Addrs: listen, Role: string(opts.Role)}},
		Admin:        AdminConfig{Socket: "admin.sock"},
		StoreKey:     StoreKeyConfig{File: "store.key"},
		Pool:         PoolConfig{Target: 2, Concurrency: 1},
		Log:          LogConfig{Level: "info", Format: "text"},
	}
	if opts.Role == ids.RoleAgent {
		c.Agent = string(opts.Agent)
	}
	if opts.Role == ids.RoleGuardian {
		c.Guardian = opts.Guardian.Hex()
	}
	genesis := "0x" + strings.Repeat("00", 32)
	if opts.GenesisHash != (common.Hash{}) {
		genesis = opts.GenesisHash.Hex()
	}
	c.Genesis = GenesisConfig{Hash: genesis}
	body, err := yaml.Marshal(c)
	if err != nil {
		return nil, "", fmt.Errorf("node: init: %w", err)
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Custos node %s (role %s), written by custos node init.\n", id, opts.Role)
	fmt.Fprintf(&buf, "# Add the other members and the coordinators, and pin the genesis policy hash.\n")
	buf.Write(body)
	if err := writeNew(cfgPath, buf.Bytes()); err != nil {
		return nil, "", fmt.Errorf("node: init: %w", err)
	}
	c.dir, _ = filepath.Abs(dir)
	return c, cfgPath, nil
}

func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
