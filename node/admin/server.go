package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Prefix is the path under which the admin API lives.
const Prefix = "/admin/v1/"

// MaxBody bounds a request body: an unfreeze with a few hundred
// signatures fits.
const MaxBody = 64 << 10

// MaxAuditPage bounds the entries one audit query returns; DefaultAuditPage
// is what a query without limit gets.
const (
	MaxAuditPage     = 10000
	DefaultAuditPage = 1000
)

// CodeRefused is the error code of a Backend's refusal.
const CodeRefused = "refused"

// Config configures the admin server.
type Config struct {
	// Addr is where to listen: "unix:///path/admin.sock" (a socket made
	// with SocketMode; whoever can open the file may administer the node)
	// or "http://host:port" (TCP; every request needs the bearer token).
	Addr string
	// TokenFile holds the bearer token (one line, at least 32 characters,
	// readable by its owner only). Required for TCP; for a unix socket it
	// adds the token check to the file permissions.
	TokenFile string
	// SocketMode is the unix socket's file mode; zero means 0600. Bits for
	// others are refused.
	SocketMode os.FileMode
	// Gatherer serves /metrics; nil means prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// Registerer, if set, gets the admin API's own request counter.
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// AllowRemote lets a TCP address be other than loopback. The API is
	// plain HTTP: off loopback its token crosses the network in clear, so
	// only a network of its own (a container's, a VPN's) should carry it.
	AllowRemote bool
}

// Server is the admin API over a Backend: an http.Handler, and the helpers
// to listen on the configured address and serve until a context ends.
type Server struct {
	backend Backend
	cfg     Config
	log     *slog.Logger
	token   []byte // sha256 of the token, nil without one
	mux     *http.ServeMux
	calls   *prometheus.CounterVec
}

// NewServer makes the admin server for b. It reads the token file now, so
// a missing or weak token is an error at start, not at the first request.
func NewServer(b Backend, cfg Config) (*Server, error) {
	if b == nil {
		return nil, errors.New("admin: no backend")
	}
	network, where, err := ParseAddr(cfg.Addr)
	if err != nil {
		return nil, err
	}
	if network == "tcp" && !cfg.AllowRemote && !loopback(where) {
		return nil, fmt.Errorf("admin: %s is not a loopback address; the admin API is plain HTTP and its token would cross the network in clear (use a unix socket, 127.0.0.1, or allow remote access explicitly)", cfg.Addr)
	}
	s := &Server{backend: b, cfg: cfg, log: cfg.Log, mux: http.NewServeMux()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.SocketMode&0o007 != 0 {
		return nil, fmt.Errorf("admin: socket mode %#o lets any local user administer the node", cfg.SocketMode)
	}
	switch {
	case cfg.TokenFile != "":
		tok, err := ReadTokenFile(cfg.TokenFile)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256([]byte(tok))
		s.token = sum[:]
	case network == "tcp":
		return nil, fmt.Errorf("admin: address %s is TCP and needs a token file", cfg.Addr)
	}
	s.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custos_admin_requests_total",
		Help: "Admin API requests by route and status class.",
	}, []string{"route", "status"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.calls); err != nil {
			// A server made again in the same process (a restart) counts on.
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("admin: register metrics: %w", err)
			}
			cv, ok := are.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				return nil, fmt.Errorf("admin: register metrics: %w", err)
			}
			s.calls = cv
		}
	}
	g := cfg.Gatherer
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	s.route("/healthz", http.MethodGet, s.healthz)
	s.mux.Handle("/metrics", s.count("metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{})))
	s.route(Prefix+"pending", http.MethodGet, s.pending)
	s.route(Prefix+"pending/{id}", http.MethodGet, s.pendingOne)
	s.route(Prefix+"approvals", http.MethodPost, s.approve)
	s.route(Prefix+"denials", http.MethodPost, s.deny)
	s.route(Prefix+"freezes", http.MethodPost, s.freeze)
	s.route(Prefix+"unfreezes", http.MethodPost, s.unfreeze)
	s.route(Prefix+"wallet", http.MethodGet, s.wallet)
	s.route(Prefix+"audit", http.MethodGet, s.audit)
	s.route(Prefix+"audit/verify", http.MethodGet, s.verifyAudit)
	s.route(Prefix+"status", http.MethodGet, s.status)
	s.mux.Handle("/", httpapi.Wrap(s.log, func(w http.ResponseWriter, r *http.Request) error {
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such endpoint %s", r.URL.Path)
	}))
	return s, nil
}

func (s *Server) route(path, method string, h httpapi.Handler) {
	name := strings.TrimPrefix(path, Prefix)
	s.mux.Handle(path, s.count(name, httpapi.Wrap(s.log, func(w http.ResponseWriter, r *http.Request) error {
		if r.Method != method {
			w.Header().Set("Allow", method)
			return httpapi.Errorf(http.StatusMethodNotAllowed, httpapi.CodeMethod, "%s %s: use %s", r.Method, r.URL.Path, method)
		}
		return h(w, r)
	})))
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (s *Server) count(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		s.calls.WithLabelValues(route, strconv.Itoa(sw.status/100)+"xx").Inc()
	})
}

// ServeHTTP checks the token, when there is one, and serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.token != nil && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="custos-admin"`)
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "missing or wrong bearer token"))
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const scheme = "Bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return false
	}
	// Hashing first makes the comparison's time independent of the
	// token's length as well as its content.
	sum := sha256.Sum256([]byte(strings.TrimSpace(h[len(scheme):])))
	return subtle.ConstantTimeCompare(sum[:], s.token) == 1
}

// Listen opens the configured address. A unix socket is created with its
// mode already set (made in a private directory, then renamed into
// place), so there is no moment at which others could connect; a stale
// socket nobody listens on is replaced, anything else at the path is
// refused.
func (s *Server) Listen() (net.Listener, error) {
	network, where, err := ParseAddr(s.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if network == "tcp" {
		ln, err := net.Listen("tcp", where)
		if err != nil {
			return nil, fmt.Errorf("admin: listen on %s: %w", where, err)
		}
		return ln, nil
	}
	mode := s.cfg.SocketMode
	if mode == 0 {
		mode = 0o600
	}
	return listenUnix(where, mode)
}

// Serve serves on ln until ctx ends, then shuts down.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := httpapi.Server("", s, s.log)
	err := httpapi.Serve(ctx, srv, ln, 5*time.Second)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Run listens on the configured address and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := s.Listen()
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// maxSocketPath is the longest unix socket path Linux binds (sun_path
// less its terminating zero).
const maxSocketPath = 107

func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	path = filepath.Clean(path)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("admin: socket path %s is %d bytes; a unix socket path has at most %d", path, len(path), maxSocketPath)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin: %s is in use by another process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin: remove stale socket %s: %w", path, err)
		}
	}
	parent := filepath.Dir(path)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("admin: socket directory for %s: %w", path, err)
	}
	dir, err := os.MkdirTemp(parent, ".as")
	if err != nil {
		return nil, fmt.Errorf("admin: socket directory for %s: %w", path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	if len(tmp) > maxSocketPath {
		return nil, fmt.Errorf("admin: socket path %s is too long to be made beside itself (%s is %d bytes, at most %d): choose a shorter path", path, tmp, len(tmp), maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: chmod socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: place socket at %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: socket at %s: %w", path, err)
	}
	return &unixListener{UnixListener: ln, path: path, file: fi}, nil
}

// unixListener removes its socket file when closed, unless another
// server's socket has replaced it since.
type unixListener struct {
	*net.UnixListener
	path string
	file os.FileInfo
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.file) {
		os.Remove(l.path)
	}
	return err
}

// ParseAddr splits an admin address into a network ("unix" or "tcp") and
// where: "unix:///run/custos/admin.sock" (or "unix:relative.sock"),
// "http://127.0.0.1:7070".
func ParseAddr(addr string) (network, where string, err error) {
	switch {
	case addr == "":
		return "", "", errors.New("admin: no address (want unix:///path or http://host:port)")
	case strings.HasPrefix(addr, "unix://"):
		where = strings.TrimPrefix(addr, "unix://")
	case strings.HasPrefix(addr, "unix:"):
		where = strings.TrimPrefix(addr, "unix:")
	case strings.HasPrefix(addr, "http://"):
		u, err := url.Parse(addr)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return "", "", fmt.Errorf("admin: address %q: want http://host:port", addr)
		}
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return "", "", fmt.Errorf("admin: address %q: want http://host:port", addr)
		}
		return "tcp", u.Host, nil
	default:
		return "", "", fmt.Errorf("admin: address %q: want unix:///path or http://host:port", addr)
	}
	if where == "" {
		return "", "", fmt.Errorf("admin: address %q names no socket path", addr)
	}
	return "unix", where, nil
}

// loopback reports whether hostport names this machine only.
func loopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// MinToken is the shortest token ReadTokenFile accepts.
const MinToken = 32

// ReadTokenFile reads a bearer token: the file's one line, at least
// MinToken characters, in a file that group and others cannot read.
func ReadTokenFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("admin: token file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("admin: token file %s has mode %#o: make it readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	}
	b, err := readSmall(path, 4<<10)
	if err != nil {
		return "", fmt.Errorf("admin: token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("admin: token file %s holds more than one line or word", path)
	}
	if len(tok) < MinToken {
		return "", fmt.Errorf("admin: token in %s is %d characters, want at least %d", path, len(tok), MinToken)
	}
	return tok, nil
}

// WriteTokenFile writes a new random token to path with mode 0600,
// refusing to replace an existing file, and returns it.
func WriteTokenFile(path string) (string, error) {
	tok := randomToken()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("admin: token file: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("admin: write token file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("admin: write token file: %w", err)
	}
	return tok, nil
}

// The handlers.

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	if err := s.backend.Ready(r.Context()); err != nil {
		return httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "not ready: %v", err)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// PendingList is the answer of GET pending.
type PendingList struct {
	Pending []PendingRequest `json:"pending"`
}

func (s *Server) pending(w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	list, err := s.backend.Pending(r.Context())
	if err != nil {
		return backendError(err)
	}
	if list == nil {
		list = []PendingRequest{}
	}
	httpapi.WriteJSON(w, http.StatusOK, PendingList{Pending: list})
	return nil
}

func (s *Server) pendingOne(w http.ResponseWriter, r *http.Request) error {
	id, err := ids.ParseRequestID(r.PathValue("id"))
	if err != nil {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "request id %q: %v", r.PathValue("id"), err)
	}
	p, err := s.backend.PendingRequest(r.Context(), id)
	if errors.Is(err, ErrNotFound) {
		return &httpapi.Error{Status: http.StatusNotFound, Code: httpapi.CodeNotFound, Message: "no pending request " + string(id), RequestID: string(id)}
	}
	if err != nil {
		return backendError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, p)
	return nil
}

func (s *Server) approve(w http.ResponseWriter, r *http.Request) error {
	var a api.Approval
	if err := decodeBody(w, r, &a); err != nil {
		return err
	}
	if err := checkApproval(a); err != nil {
		return err
	}
	res, err := s.backend.Approve(r.Context(), a)
	if err != nil {
		return withRequest(backendError(err), a.RequestID)
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) deny(w http.ResponseWriter, r *http.Request) error {
	var d api.Denial
	if err := decodeBody(w, r, &d); err != nil {
		return err
	}
	if err := checkDenial(d); err != nil {
		return err
	}
	res, err := s.backend.Deny(r.Context(), d)
	if err != nil {
		return withRequest(backendError(err), d.RequestID)
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) freeze(w http.ResponseWriter, r *http.Request) error {
	var f api.Freeze
	if err := decodeBody(w, r, &f); err != nil {
		return err
	}
	if err := checkFreeze(f); err != nil {
		return err
	}
	res, err := s.backend.Freeze(r.Context(), f)
	if err != nil {
		return backendError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) unfreeze(w http.ResponseWriter, r *http.Request) error {
	var u api.Unfreeze
	if err := decodeBody(w, r, &u); err != nil {
		return err
	}
	if err := checkUnfreeze(u); err != nil {
		return err
	}
	res, err := s.backend.Unfreeze(r.Context(), u)
	if err != nil {
		return backendError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) wallet(w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	res, err := s.backend.Wallet(r.Context())
	if err != nil {
		return backendError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

// AuditPage is the answer of GET audit: the entries, and Next, the seq to
// ask from for more (zero when there is nothing more).
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	Next    uint64       `json:"next,omitempty"`
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	for k := range q {
		if k != "from" && k != "to" && k != "limit" {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "unknown query parameter %q (want from, to, limit)", k)
		}
	}
	from, err := queryUint(q, "from", 1)
	if err != nil {
		return err
	}
	to, err := queryUint(q, "to", 0)
	if err != nil {
		return err
	}
	limit, err := queryUint(q, "limit", DefaultAuditPage)
	if err != nil {
		return err
	}
	if from == 0 {
		from = 1
	}
	if limit == 0 || limit > MaxAuditPage {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "limit %d: want 1 to %d", limit, MaxAuditPage)
	}
	if to != 0 && to < from {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "to %d is before from %d", to, from)
	}
	last := from + limit - 1
	if to == 0 || to > last {
		to = last
	}
	entries, err := s.backend.Audit(r.Context(), from, to)
	if err != nil {
		return backendError(err)
	}
	page := AuditPage{Entries: make([]AuditEntry, len(entries))}
	for i, e := range entries {
		page.Entries[i] = AuditEntry{Entry: e, Summary: e.Describe()}
	}
	if uint64(len(entries)) == limit && limit > 0 {
		page.Next = entries[len(entries)-1].Seq + 1
	}
	httpapi.WriteJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	check, err := CheckOf(s.backend.VerifyAudit(r.Context()))
	if err != nil {
		return backendError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, check)
	return nil
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	st, err := s.backend.Status(r.Context())
	if err != nil {
		return backendError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
	return nil
}

// decodeBody reads a JSON body strictly, within MaxBody.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any) error {
	if err := noQuery(r); err != nil {
		return err
	}
	body, err := httpapi.ReadBody(w, r, MaxBody)
	if err != nil {
		return err
	}
	return httpapi.Decode(r, body, dst)
}

func noQuery(r *http.Request) error {
	if r.URL.RawQuery != "" {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "%s takes no query parameters", r.URL.Path)
	}
	return nil
}

func queryUint(q url.Values, name string, def uint64) (uint64, error) {
	vs, ok := q[name]
	if !ok {
		return def, nil
	}
	if len(vs) != 1 {
		return 0, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "query parameter %s given %d times", name, len(vs))
	}
	v, err := strconv.ParseUint(vs[0], 10, 64)
	if err != nil {
		return 0, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "query parameter %s=%q is not a non-negative integer", name, vs[0])
	}
	return v, nil
}

// backendError maps what a Backend returned to an API error: a *Refused to
// 422 (409 for a conflict) with its rule and reason, ErrNotFound to 404,
// anything else to a 500 that reveals nothing (logged by the shell).
func backendError(err error) error {
	var ref *Refused
	var ae *httpapi.Error
	switch {
	case errors.As(err, &ref):
		status := http.StatusUnprocessableEntity
		if ref.Conflict {
			status = http.StatusConflict
		}
		return &httpapi.Error{Status: status, Code: CodeRefused, Message: ref.Error(), Data: RefusalData{Rule: ref.Rule, Reason: ref.Reason, Conflict: ref.Conflict}}
	case errors.Is(err, ErrNotFound):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "%v", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "%v", err)
	case errors.As(err, &ae):
		return ae
	}
	return err
}

func withRequest(err error, id ids.RequestID) error {
	var ae *httpapi.Error
	if errors.As(err, &ae) && ae.RequestID == "" {
		ae.RequestID = string(id)
	}
	return err
}

// RefusalData is the error data of a refusal.
type RefusalData struct {
	Rule     string `json:"rule"`
	Reason   string `json:"reason"`
	Conflict bool   `json:"conflict,omitempty"`
}
