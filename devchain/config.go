package devchain

import (
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"time"

	"github.com/ethereum/go-ethereum/params"
)

// Defaults applied by Start to a zero Config field.
const (
	DefaultListen   = "127.0.0.1:8545"
	DefaultChainID  = 1337
	DefaultAccounts = 10
	DefaultGasLimit = 60_000_000
)

// DefaultBalance is each dev account's starting balance: 10000 ether.
var DefaultBalance = new(big.Int).Mul(big.NewInt(10_000), big.NewInt(params.Ether))

// ErrRemoteListen refuses a listen address that is not loopback unless
// Config.AllowRemote is set: the dev chain serves its accounts' private keys.
var ErrRemoteListen = errors.New("devchain: listen address is not loopback")

// Config configures a dev chain. The zero value is a chain on
// 127.0.0.1:8545 with chain id 1337, ten accounts of 10000 ether each, blocks
// on demand and everything in memory.
type Config struct {
	// Listen is the HTTP JSON-RPC address, host:port. Port 0 picks a free
	// port; Chain.URL reports it. The host must be loopback (an IP address or
	// "localhost") unless AllowRemote is set.
	Listen string
	// AllowRemote permits a non-loopback Listen address, as a container
	// needs (0.0.0.0:8545). Anyone who reaches the port gets the dev keys.
	AllowRemote bool

	// ChainID is the EIP-155 chain id (and network id).
	ChainID uint64
	// Accounts is the number of prefunded dev accounts, 0 to Accounts-1.
	Accounts int
	// Balance is each dev account's starting balance in wei.
	Balance *big.Int
	// GasLimit is the block gas limit.
	GasLimit uint64

	// BlockPeriod, if not zero, seals a block every period (whole seconds,
	// as block timestamps are) instead of one as soon as a transaction
	// arrives. dev_mine works in both modes.
	BlockPeriod time.Duration

	// DataDir keeps the chain on disk across restarts; empty keeps it in
	// memory. A data directory belongs to the genesis it was created with:
	// reopening it with another chain id, account count or balance fails.
	DataDir string

	// Logger receives the dev chain's own logs and the node's p2p logs.
	// go-ethereum's internal packages log to its global root logger, which
	// this package leaves alone (see github.com/ethereum/go-ethereum/log).
	Logger *slog.Logger
}

// withDefaults fills zero fields and checks the rest.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.ChainID == 0 {
		cfg.ChainID = DefaultChainID
	}
	if cfg.Accounts == 0 {
		cfg.Accounts = DefaultAccounts
	}
	if cfg.Accounts < 0 {
		return cfg, fmt.Errorf("devchain: config: %d accounts", cfg.Accounts)
	}
	if cfg.Balance == nil {
		cfg.Balance = DefaultBalance
	}
	if cfg.Balance.Sign() < 0 {
		return cfg, fmt.Errorf("devchain: config: negative balance %s", cfg.Balance)
	}
	if cfg.GasLimit == 0 {
		cfg.GasLimit = DefaultGasLimit
	}
	if cfg.BlockPeriod < 0 || cfg.BlockPeriod%time.Second != 0 {
		return cfg, fmt.Errorf("devchain: config: block period %s is not a whole number of seconds", cfg.BlockPeriod)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// listenAddr splits Listen into the host and port the node takes, refusing
// a non-loopback host without AllowRemote.
func listenAddr(listen string, allowRemote bool) (string, int, error) {
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("devchain: listen %q: %w", listen, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("devchain: listen %q: bad port: %w", listen, err)
	}
	if !isLoopback(host) && !allowRemote {
		return "", 0, fmt.Errorf("devchain: listen %q: %w (set AllowRemote to serve other machines)", listen, ErrRemoteListen)
	}
	if host == "" {
		// The node disables HTTP on an empty host; ":8545" means every interface.
		host = "0.0.0.0"
	}
	return host, int(port), nil
}

// isLoopback reports whether host names only this machine. Other host names
// are not resolved: what they resolve to can change after the check.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
