package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	gethrpc "github.com/ethereum/go-ethereum/rpc"
)

// localMethods are the methods the endpoint answers itself; every other
// method goes upstream. TestLocalMethodsServed keeps it in step with the
// registered APIs.
var localMethods = map[string]bool{
	"eth_accounts":            true,
	"eth_requestAccounts":     true,
	"eth_chainId":             true,
	"eth_sendTransaction":     true,
	"eth_signTransaction":     true,
	"eth_sign":                true,
	"eth_signTypedData":       true,
	"eth_signTypedData_v4":    true,
	"personal_sign":           true,
	"wallet_sendTransaction":  true,
	"account_version":         true,
	"account_list":            true,
	"account_signTransaction": true,
	"account_signData":        true,
	"account_signTypedData":   true,
	"web3_clientVersion":      true,
	"rpc_modules":             true,
}

// walletOnly reports whether m is a wallet's method that the endpoint does
// not serve: it is refused here rather than sent to a node, which may hold
// keys of its own (a dev chain does) and must not be asked to sign instead.
func walletOnly(m string) bool {
	ns, name, _ := strings.Cut(m, "_")
	switch ns {
	case "personal", "account", "wallet":
		return true
	case "eth":
		return strings.HasPrefix(name, "sign") || name == "sendTransaction"
	}
	return false
}

// call is one element of a request, as read by the dispatcher.
type call struct {
	Version string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// answer is one element of the response.
type answer struct {
	Version string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *errorObject    `json:"error,omitempty"`
}

type errorObject struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

// JSON-RPC 2.0's codes for requests the dispatcher refuses itself.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
)

var nullID = json.RawMessage("null")

// ServeHTTP answers a JSON-RPC request or batch: wallet methods from the
// local server, the others with one batch to upstream, answers in the
// request's order with its ids.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if code, msg := s.refuse(r); code != 0 {
		http.Error(w, msg, code)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read request body", http.StatusBadRequest)
		return
	}
	body = bytes.TrimSpace(body)
	batch := len(body) > 0 && body[0] == '['
	var raws []json.RawMessage
	if batch {
		if err := json.Unmarshal(body, &raws); err != nil {
			s.write(w, false, []answer{errAnswer(nullID, codeParseError, "parse error: "+err.Error())})
			return
		}
		if len(raws) == 0 {
			s.write(w, false, []answer{errAnswer(nullID, codeInvalidRequest, "empty batch")})
			return
		}
	} else {
		raws = []json.RawMessage{body}
	}

	calls := make([]call, len(raws))
	answers := make([]answer, len(raws))
	valid := make([]bool, len(raws))
	for i, raw := range raws {
		if err := json.Unmarshal(raw, &calls[i]); err != nil {
			code := codeInvalidRequest
			if !json.Valid(raw) {
				code = codeParseError
			}
			answers[i] = errAnswer(nullID, code, "invalid request: "+err.Error())
			continue
		}
		c := &calls[i]
		id := c.ID
		if len(id) == 0 {
			id = nullID
		}
		switch {
		case c.Version != "2.0":
			answers[i] = errAnswer(id, codeInvalidRequest, `invalid request: "jsonrpc" is not "2.0"`)
		case c.Method == "":
			answers[i] = errAnswer(id, codeInvalidRequest, "invalid request: no method")
		default:
			valid[i] = true
		}
	}
	if batch && len(raws) > s.cfg.MaxBatchItems {
		// go-ethereum's answer to an oversize batch: one error, with the
		// id of the first call.
		id := nullID
		for i := range calls {
			if valid[i] && len(calls[i].ID) > 0 {
				id = calls[i].ID
				break
			}
		}
		s.metrics.calls.WithLabelValues(routeRefused).Add(float64(len(raws)))
		s.write(w, true, []answer{errAnswer(id, codeInvalidRequest, "batch too large")})
		return
	}

	var localIdx, upIdx []int
	var upElems []gethrpc.BatchElem
	for i := range calls {
		if !valid[i] {
			continue
		}
		args, err := splitParams(calls[i].Params)
		if err != nil {
			answers[i] = errAnswer(idOf(calls[i]), CodeInvalidParams, "invalid params: "+err.Error())
			continue
		}
		m := calls[i].Method
		switch {
		case localMethods[m]:
			localIdx = append(localIdx, i)
		case walletOnly(m):
			answers[i] = errAnswer(idOf(calls[i]), -32601, "the method "+m+" is not served by this wallet")
		default:
			upIdx = append(upIdx, i)
			upElems = append(upElems, gethrpc.BatchElem{Method: calls[i].Method, Args: args, Result: new(json.RawMessage)})
		}
	}
	s.metrics.calls.WithLabelValues(routeLocal).Add(float64(len(localIdx)))
	s.metrics.calls.WithLabelValues(routeUpstream).Add(float64(len(upIdx)))
	s.metrics.calls.WithLabelValues(routeRefused).Add(float64(len(calls) - len(localIdx) - len(upIdx)))
	ctx := r.Context()
	var wg sync.WaitGroup
	var upErr error
	if len(localIdx) > 0 {
		wg.Go(func() { s.serveLocal(ctx, calls, localIdx, answers) })
	}
	if len(upElems) > 0 {
		wg.Go(func() { upErr = s.upstream.BatchCallContext(ctx, upElems) })
	}
	wg.Wait()
	fillAnswers(answers, calls, upIdx, upElems, upErr, "upstream: ")

	// Notifications (calls without an id) get no answer.
	var out []answer
	for i, a := range answers {
		if valid[i] && len(calls[i].ID) == 0 {
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		w.WriteHeader(http.StatusOK)
		return
	}
	s.write(w, batch, out)
}

// serveLocal has the local server answer the calls at idx, as one batch
// over an in-memory HTTP exchange that carries the client's request context:
// a client that goes away cancels a signature it was waiting for.
func (s *Server) serveLocal(ctx context.Context, calls []call, idx []int, answers []answer) {
	sub := make([]call, len(idx))
	for j, i := range idx {
		sub[j] = call{Version: "2.0", ID: json.RawMessage(strconv.Itoa(j)), Method: calls[i].Method, Params: calls[i].Params}
	}
	fail := func(msg string) {
		for _, i := range idx {
			answers[i] = errAnswer(idOf(calls[i]), -32603, msg)
		}
	}
	body, err := json.Marshal(sub)
	if err != nil {
		fail("encode local batch: " + err.Error())
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost/", bytes.NewReader(body))
	if err != nil {
		fail("local request: " + err.Error())
		return
	}
	req.Header.Set("Content-Type", "application/json")
	rec := &memWriter{header: make(http.Header)}
	s.local.ServeHTTP(rec, req)
	var got []struct {
		ID     json.RawMessage `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int             `json:"code"`
			Message string          `json:"message"`
			Data    json.RawMessage `json:"data"`
		} `json:"error"`
	}
	if rec.status != 0 && rec.status != http.StatusOK {
		fail(fmt.Sprintf("local server: status %d: %s", rec.status, bytes.TrimSpace(rec.buf.Bytes())))
		return
	}
	if err := json.Unmarshal(rec.buf.Bytes(), &got); err != nil {
		fail("local server answer: " + err.Error())
		return
	}
	done := make([]bool, len(idx))
	for _, g := range got {
		j, err := strconv.Atoi(string(g.ID))
		if err != nil || j < 0 || j >= len(idx) || done[j] {
			continue
		}
		done[j] = true
		i := idx[j]
		a := answer{Version: "2.0", ID: idOf(calls[i]), Result: g.Result}
		if g.Error != nil {
			a.Result = nil
			a.Error = &errorObject{Code: g.Error.Code, Message: g.Error.Message}
			if len(g.Error.Data) > 0 {
				a.Error.Data = g.Error.Data
			}
		} else if len(a.Result) == 0 {
			a.Result = json.RawMessage("null")
		}
		answers[i] = a
	}
	for j, i := range idx {
		if !done[j] {
			answers[i] = errAnswer(idOf(calls[i]), -32603, "local server gave no answer")
		}
	}
}

// memWriter is the in-memory response of serveLocal.
type memWriter struct {
	header http.Header
	status int
	buf    bytes.Buffer
}

func (m *memWriter) Header() http.Header { return m.header }
func (m *memWriter) WriteHeader(code int) {
	if m.status == 0 {
		m.status = code
	}
}
func (m *memWriter) Write(b []byte) (int, error) { return m.buf.Write(b) }

// refuse returns an HTTP status and message for a request the endpoint
// does not serve at all, or 0.
func (s *Server) refuse(r *http.Request) (int, string) {
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "JSON-RPC takes POST"
	}
	// A loopback listener is reachable by a web page through DNS
	// rebinding, which only a check of the Host header stops.
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !isLoopbackHost(host) {
		return http.StatusForbidden, "host not allowed"
	}
	if o := r.Header.Get("Origin"); o != "" && !slices.Contains(s.cfg.AllowedOrigins, o) {
		return http.StatusForbidden, "origin not allowed"
	}
	// Content types a form or a no-cors fetch can send are refused, as
	// go-ethereum refuses them.
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/json" && mt != "application/json-rpc" && mt != "application/jsonrequest") {
		return http.StatusUnsupportedMediaType, "content type must be application/json"
	}
	return 0, ""
}

// splitParams turns positional params into arguments that marshal back to
// exactly what the client sent.
func splitParams(p json.RawMessage) ([]any, error) {
	p = bytes.TrimSpace(p)
	if len(p) == 0 || string(p) == "null" {
		return nil, nil
	}
	if p[0] != '[' {
		return nil, errors.New("params must be an array")
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(p, &raws); err != nil {
		return nil, err
	}
	args := make([]any, len(raws))
	for i, r := range raws {
		args[i] = r
	}
	return args, nil
}

func idOf(c call) json.RawMessage {
	if len(c.ID) == 0 {
		return nullID
	}
	return c.ID
}

func errAnswer(id json.RawMessage, code int, msg string) answer {
	return answer{Version: "2.0", ID: id, Error: &errorObject{Code: code, Message: msg}}
}

// fillAnswers writes the outcome of one sub-batch into answers. A failure
// of the whole batch (upstream unreachable, say) is every call's error.
func fillAnswers(answers []answer, calls []call, idx []int, elems []gethrpc.BatchElem, batchErr error, prefix string) {
	for j, i := range idx {
		id := idOf(calls[i])
		err := batchErr
		if err == nil {
			err = elems[j].Error
		}
		if err == nil {
			answers[i] = answer{Version: "2.0", ID: id, Result: *elems[j].Result.(*json.RawMessage)}
			if len(answers[i].Result) == 0 {
				answers[i].Result = json.RawMessage("null")
			}
			continue
		}
		e := &errorObject{Code: -32000, Message: prefix + err.Error()}
		var re gethrpc.Error
		if errors.As(err, &re) {
			e.Code, e.Message = re.ErrorCode(), err.Error()
		}
		var de gethrpc.DataError
		if errors.As(err, &de) {
			e.Data = de.ErrorData()
		}
		answers[i] = answer{Version: "2.0", ID: id, Error: e}
	}
}

func (s *Server) write(w http.ResponseWriter, batch bool, out []answer) {
	var v any = out
	if !batch {
		v = out[0]
	}
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}
