package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/ethclient"
	gethrpc "github.com/ethereum/go-ethereum/rpc"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied by New to a zero Config field.
const (
	DefaultListen        = "127.0.0.1:8546"
	DefaultMaxBodyBytes  = 5 << 20 // go-ethereum's own HTTP body limit
	DefaultMaxBatchItems = 100     // go-ethereum's default batch limit
	DefaultClientVersion = "Custos/agent"
	// DefaultMaxResponseBytes bounds the answer to one batch, as
	// go-ethereum's BatchResponseMaxSize does.
	DefaultMaxResponseBytes = 25 << 20
)

// ExternalSignerVersion is what account_version returns: the version of
// clef's external API whose methods and answers this package serves.
const ExternalSignerVersion = "6.1.0"

// ErrRemoteListen refuses a listen address that is not loopback: the
// endpoint signs for whoever reaches it.
var ErrRemoteListen = errors.New("rpc: listen address is not loopback")

// Config configures an endpoint.
type Config struct {
	// Upstream is the URL of the Ethereum node that every method the
	// endpoint does not serve itself goes to, and that transactions are
	// filled from and broadcast to.
	Upstream string
	// Wallet signs. Required.
	Wallet Wallet
	// Listen is the host:port Start listens on; the host must be a
	// loopback address or "localhost". Port 0 picks a free port.
	Listen string

	// MaxBodyBytes bounds a request body; larger is refused with 413.
	MaxBodyBytes int64
	// MaxBatchItems bounds the calls in one batch; a larger batch is
	// answered with one "batch too large" error, as go-ethereum does.
	MaxBatchItems int
	// MaxResponseBytes bounds the answer to one batch.
	MaxResponseBytes int

	// SignTransactionObject makes eth_signTransaction return go-ethereum's
	// {raw, tx} object instead of the raw transaction as hex.
	SignTransactionObject bool
	// ClientVersion is what web3_clientVersion returns.
	ClientVersion string
	// AllowedOrigins lists browser origins whose requests are served;
	// requests with any other Origin header are refused, so a web page
	// cannot use the wallet of the machine it is shown on.
	AllowedOrigins []string

	// Registerer, if set, receives the endpoint's Prometheus metrics.
	Registerer prometheus.Registerer

	Logger *slog.Logger
}

// Server is the JSON-RPC endpoint. It is an http.Handler; Start also
// listens.
type Server struct {
	cfg      Config
	wallet   Wallet
	log      *slog.Logger
	upstream *gethrpc.Client
	eth      *ethclient.Client
	chainID  *big.Int
	local    *gethrpc.Server
	nonces   *nonces
	metrics  *metrics

	// Set by Start.
	http     *http.Server
	url      string
	serveErr chan error
	close    sync.Once
}

// New dials the upstream node, reads its chain id (kept for the endpoint's
// life: a node does not change chains) and sets up the wallet's methods.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Wallet == nil {
		return nil, errors.New("rpc: config has no wallet")
	}
	if cfg.Upstream == "" {
		return nil, errors.New("rpc: config has no upstream URL")
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxBatchItems == 0 {
		cfg.MaxBatchItems = DefaultMaxBatchItems
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.ClientVersion == "" {
		cfg.ClientVersion = DefaultClientVersion
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	up, err := gethrpc.DialOptions(ctx, cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("rpc: dial upstream %s: %w", cfg.Upstream, err)
	}
	eth := ethclient.NewClient(up)
	id, err := eth.ChainID(ctx)
	if err != nil {
		up.Close()
		return nil, fmt.Errorf("rpc: upstream %s chain id: %w", cfg.Upstream, err)
	}
	s := &Server{
		cfg:      cfg,
		wallet:   cfg.Wallet,
		log:      cfg.Logger,
		upstream: up,
		eth:      eth,
		chainID:  id,
		local:    gethrpc.NewServer(),
		nonces:   newNonces(),
		metrics:  m,
	}
	s.local.SetBatchLimits(cfg.MaxBatchItems, cfg.MaxResponseBytes)
	// The dispatcher has applied MaxBodyBytes to the client's body; the
	// batch it passes on is that body's calls with shorter ids.
	s.local.SetHTTPBodyLimit(int(2*cfg.MaxBodyBytes) + 1<<10)
	for _, svc := range []struct {
		name string
		api  any
	}{
		{"eth", &ethAPI{s}},
		{"personal", &personalAPI{s}},
		{"wallet", &walletAPI{s}},
		{"account", &accountAPI{s}},
		{"web3", &web3API{s}},
		{"rpc", &modulesAPI{s}},
	} {
		if err := s.local.RegisterName(svc.name, svc.api); err != nil {
			s.local.Stop()
			up.Close()
			return nil, fmt.Errorf("rpc: register %s: %w", svc.name, err)
		}
	}
	return s, nil
}

// ChainID returns the upstream chain's id.
func (s *Server) ChainID() *big.Int { return new(big.Int).Set(s.chainID) }

// Start creates an endpoint with New and serves it over HTTP on
// cfg.Listen, which must be loopback.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if err := checkLoopback(cfg.Listen); err != nil {
		return nil, err
	}
	s, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("rpc: listen on %s: %w", cfg.Listen, err)
	}
	s.url = "http://" + ln.Addr().String()
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	s.serveErr = make(chan error, 1)
	go func() { s.serveErr <- s.http.Serve(ln) }()
	s.log.Info("agent json-rpc endpoint listening", "url", s.url, "upstream", cfg.Upstream, "chain", s.chainID)
	return s, nil
}

// Run starts an endpoint and serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	s, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return s.Close()
	case err := <-s.serveErr:
		s.Close()
		return fmt.Errorf("rpc: serve: %w", err)
	}
}

// URL is the endpoint's HTTP URL, with the port actually bound; empty
// unless Start made the server.
func (s *Server) URL() string { return s.url }

// Close stops serving (waiting for requests in flight when Start made the
// server) and closes the upstream connection. It is safe to call more than
// once.
func (s *Server) Close() error {
	var err error
	s.close.Do(func() {
		if s.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = s.http.Shutdown(ctx)
			cancel()
			if err != nil {
				s.http.Close()
			}
		}
		s.local.Stop()
		s.upstream.Close()
	})
	return err
}

// checkLoopback refuses a listen address whose host is not loopback.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("rpc: listen address %q: %w", addr, err)
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("%w: %q", ErrRemoteListen, addr)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
