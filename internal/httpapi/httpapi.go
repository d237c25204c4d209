// Package httpapi is the shell shared by Custos's HTTP servers (the
// coordinator's REST API, a node's admin API, the agent sidecar): strict
// JSON decoding with a body limit checked before anything is allocated,
// structured errors, per-credential rate limits answered with 429 and
// Retry-After, and servers with timeouts. Handlers return an error; the
// shell writes it.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/custos-wallet/custos/internal/strictjson"
	"golang.org/x/time/rate"
)

// Error codes of the API, stable for clients to branch on.
const (
	CodeBadRequest   = "bad_request"
	CodeMalformed    = "malformed_json"
	CodeUnknownField = "unknown_field"
	CodeTooLarge     = "body_too_large"
	CodeMediaType    = "unsupported_media_type"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeMethod       = "method_not_allowed"
	CodeConflict     = "conflict"
	CodeRateLimited  = "rate_limited"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
)

// Error is an API error: an HTTP status, a stable code, a message for a
// person, and the signing request it concerns, if any.
type Error struct {
	Status    int    `json:"-"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter time.Duration `json:"-"`
	// Data carries structured details (a policy decision, say).
	Data any `json:"data,omitempty"`
}

func (e *Error) Error() string {
	if e.RequestID != "" {
		return fmt.Sprintf("%s: %s (request %s)", e.Code, e.Message, e.RequestID)
	}
	return e.Code + ": " + e.Message
}

// Errorf returns an *Error with status, code and a formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Handler is an HTTP handler that returns an error instead of writing it.
type Handler func(w http.ResponseWriter, r *http.Request) error

// Wrap turns h into an http.Handler. An *Error is written as it is; any
// other error is logged and answered with a 500 that reveals nothing; a
// panic is recovered into a 500 as well, so a bug in one handler never takes
// the daemon down.
func Wrap(log *slog.Logger, h Handler) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("http handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p))
				WriteError(w, Errorf(http.StatusInternalServerError, CodeInternal, "internal error"))
			}
		}()
		if err := h(w, r); err != nil {
			var ae *Error
			if !errors.As(err, &ae) {
				log.Error("http handler failed", "method", r.Method, "path", r.URL.Path, "err", err)
				ae = Errorf(http.StatusInternalServerError, CodeInternal, "internal error")
			}
			WriteError(w, ae)
		}
	})
}

// WriteError writes e as a JSON error response.
func WriteError(w http.ResponseWriter, e *Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	status := e.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	WriteJSON(w, status, ErrorBody{Error: e})
}

// WriteJSON writes v as the JSON body with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encode response"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// ReadBody reads the whole body of r, refusing more than limit bytes with
// a 413 before reading past the limit.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "body of %d bytes exceeds the limit of %d", r.ContentLength, limit)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "body exceeds the limit of %d bytes", limit)
		}
		return nil, Errorf(http.StatusBadRequest, CodeBadRequest, "read body: %v", err)
	}
	return b, nil
}

// Decode parses body as exactly one JSON value into dst, refusing unknown
// fields, trailing data and a content type other than JSON. The error
// names what was wrong and where.
func Decode(r *http.Request, body []byte, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return Errorf(http.StatusUnsupportedMediaType, CodeMediaType, "content type %q: want application/json", ct)
		}
	}
	return DecodeBytes(body, dst)
}

// DecodeBytes is Decode without the request: strict JSON into dst. Beyond
// what encoding/json refuses, it refuses a key given twice in one object
// (encoding/json keeps the last) and a field name in another case than
// dst's (encoding/json folds case): a body an agent signs must mean one
// thing to every parser that reads it, not only to this one.
func DecodeBytes(body []byte, dst any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return Errorf(http.StatusBadRequest, CodeMalformed, "empty body: want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(body, dec, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Errorf(http.StatusBadRequest, CodeMalformed, "trailing data after the JSON value at byte %d", dec.InputOffset())
	}
	return checkKeys(body, reflect.TypeOf(dst))
}

// checkKeys refuses what strictjson refuses (duplicate keys, case-folded
// field names) as API errors.
func checkKeys(body []byte, t reflect.Type) error {
	err := strictjson.CheckKeys(body, t)
	var ke *strictjson.KeyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ke) && ke.Problem == strictjson.Duplicate:
		return Errorf(http.StatusBadRequest, CodeMalformed, "%v", ke)
	case errors.As(err, &ke):
		return Errorf(http.StatusBadRequest, CodeUnknownField, "%v", ke)
	}
	return Errorf(http.StatusBadRequest, CodeMalformed, "malformed JSON: %v", err)
}

func decodeError(body []byte, dec *json.Decoder, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return Errorf(http.StatusBadRequest, CodeMalformed, "malformed JSON at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(top level)"
		}
		return Errorf(http.StatusBadRequest, CodeMalformed, "field %s: got JSON %s, want %s", field, typ.Value, typ.Type)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(http.StatusBadRequest, CodeMalformed, "malformed JSON: body ends early at byte %d", len(body))
	}
	const unknown = "json: unknown field "
	if s := err.Error(); len(s) > len(unknown) && s[:len(unknown)] == unknown {
		return Errorf(http.StatusBadRequest, CodeUnknownField, "unknown field %s", s[len(unknown):])
	}
	return Errorf(http.StatusBadRequest, CodeMalformed, "malformed JSON: %v", err)
}

// Limiter rate-limits per credential (an agent id, an operator name, a
// remote address): a token bucket each, with idle buckets forgotten, and
// at most MaxKeys remembered so a flood of new names cannot grow memory.
type Limiter struct {
	rate  rate.Limit
	burst int
	now   func() time.Time

	mu sync.Mutex
	// guarded by mu
	buckets map[string]*bucket
	sweep   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

// MaxKeys bounds the credentials a Limiter tracks at once.
const MaxKeys = 1 << 16

// NewLimiter allows perSecond requests per credential with bursts of burst.
func NewLimiter(perSecond float64, burst int) *Limiter {
	return &Limiter{rate: rate.Limit(perSecond), burst: burst, now: time.Now, buckets: map[string]*bucket{}}
}

// Allow takes one token for key, or returns a 429 *Error whose RetryAfter
// says when the next token comes.
func (l *Limiter) Allow(key string) error {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.sweep) {
		for k, b := range l.buckets {
			if now.Sub(b.last) > time.Minute && b.lim.TokensAt(now) >= float64(l.burst) {
				delete(l.buckets, k)
			}
		}
		l.sweep = now.Add(time.Minute)
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= MaxKeys {
			return &Error{Status: http.StatusTooManyRequests, Code: CodeRateLimited, Message: "too many distinct credentials; retry later", RetryAfter: time.Second}
		}
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[key] = b
	}
	b.last = now
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); !res.OK() || d > 0 {
		res.CancelAt(now)
		if !res.OK() || d <= 0 {
			d = time.Second
		}
		return &Error{Status: http.StatusTooManyRequests, Code: CodeRateLimited, Message: fmt.Sprintf("rate limit of %g requests per second exceeded for %s", float64(l.rate), key), RetryAfter: d}
	}
	return nil
}

// Server returns an http.Server for h with timeouts fit for an API that
// answers promptly (long waits are bounded by the handler's own context).
func Server(addr string, h http.Handler, log *slog.Logger) *http.Server {
	var el *slog.Logger = log
	if el == nil {
		el = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(el.Handler(), slog.LevelWarn),
	}
}

// Serve runs srv on ln until ctx is done, then shuts it down, giving open
// requests up to grace to finish.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
