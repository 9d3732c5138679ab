package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// handler serves the requests of one client connection. It is the choke
// point: every request and its response pass through ServeHTTP, are
// classified, forwarded, rewritten where needed and recorded.
type handler struct {
	g        *Gateway
	host     string // the SNI name; "" on plain HTTP
	workload Workload
	log      *slog.Logger
	tls      bool
}

// hopHeaders are connection-level headers that never cross the proxy.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func copyHeader(dst, src http.Header, skip ...string) {
	for k, v := range src {
		dst[k] = append([]string(nil), v...)
	}
	for _, f := range src["Connection"] {
		for _, name := range strings.Split(f, ",") {
			dst.Del(strings.TrimSpace(name))
		}
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
	for _, h := range skip {
		dst.Del(h)
	}
}

// owner binds rewritten chunk URLs to the account host and the workload's
// cgroup: chunk GETs carry no token, so this is what a fetch can prove.
func (h *handler) owner() string {
	return h.host + "/" + strconv.FormatUint(h.workload.CgroupID, 10)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ep := snowflake.Route(r.Method, r.URL)
	x := Exchange{
		Start:    time.Now(),
		Kind:     ep.Kind.String(),
		Host:     h.host,
		Workload: h.workload,
		Method:   r.Method,
		Path:     r.URL.Path,
	}
	defer func() {
		x.Duration = time.Since(x.Start)
		h.g.observe(&x)
	}()
	reqHost := hostOnly(r.Host)
	if !h.tls {
		// Plain HTTP: only the OCSP answers, for Snowflake names.
		x.Host = reqHost
		if ep.Kind != snowflake.KindOCSP || h.g.cfg.Responder == nil || !(h.g.isSnowflake(reqHost) || (h.g.cfg.OCSPHost != "" && reqHost == hostOnly(h.g.cfg.OCSPHost))) {
			x.Status, x.Error = http.StatusNotFound, "plain HTTP is served only for OCSP on Snowflake names"
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		h.g.Stats.OCSP.Add(1)
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		sw := &statusWriter{ResponseWriter: w}
		h.g.cfg.Responder.ServeHTTP(sw, r)
		x.Status, x.ResponseSize = sw.status(), sw.n
		return
	}
	if reqHost != h.host {
		x.Status, x.Error = http.StatusMisdirectedRequest, fmt.Sprintf("Host %q does not match the server name", reqHost)
		h.fail(w, x.Status, x.Error)
		return
	}
	switch ep.Kind {
	case snowflake.KindUnknown:
		x.Status, x.Error = http.StatusNotFound, "not a Snowflake endpoint"
		h.fail(w, x.Status, x.Error)
	case snowflake.KindOCSP:
		if h.g.cfg.Responder == nil {
			x.Status, x.Error = http.StatusNotFound, "no OCSP responder"
			h.fail(w, x.Status, x.Error)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		sw := &statusWriter{ResponseWriter: w}
		h.g.cfg.Responder.ServeHTTP(sw, r)
		x.Status, x.ResponseSize = sw.status(), sw.n
	case snowflake.KindChunk:
		h.chunk(w, r, ep, &x)
	default:
		h.api(w, r, ep, &x)
	}
}

// fail answers with a Snowflake-shaped error, so drivers report the reason.
func (h *handler) fail(w http.ResponseWriter, status int, msg string) {
	_ = snowflake.WriteError(w, refusal(status, msg))
}

// clientRequest is an API request as the client sent it, body decoded.
type clientRequest struct {
	Method string
	// URI is the request URI (path and query) sent upstream unchanged.
	URI    string
	Header http.Header
	// Body is the decoded body; Gzipped says how it came (and goes).
	Body    []byte
	Gzipped bool
	// Wire is the body as it came; forwarded as it is when no hook
	// changed Body.
	Wire []byte
}

// reply is an API reply ready for the client: the body is plain JSON.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// api serves one API request: decode, then forward (credential hook,
// statement screen, upstream, chunk rewrite, credential hook back), then
// respond (commit to the recorder, release to the client).
func (h *handler) api(w http.ResponseWriter, r *http.Request, ep snowflake.Endpoint, x *Exchange) {
	up := h.g.upstreamFor(h.host)
	x.Account = up.account
	x.RequestHeader = r.Header.Clone()
	x.RequestID = r.URL.Query().Get("requestId")
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(h.g.cfg.BodyTimeout))
	body, err := snowflake.ReadBody(r.Body, r.Header.Get("Content-Encoding"), h.g.cfg.RequestLimits)
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, snowflake.ErrBodyTooLarge) || errors.Is(err, snowflake.ErrDecodedTooLarge) {
			status = http.StatusRequestEntityTooLarge
			// Drain a bounded amount more, so a client still sending
			// reads the reply instead of a reset.
			_ = rc.SetReadDeadline(time.Now().Add(h.g.cfg.BodyTimeout))
			_, _ = io.CopyN(io.Discard, r.Body, 8<<20)
			_ = rc.SetReadDeadline(time.Time{})
		}
		x.Status, x.Error = status, "request body: "+err.Error()
		h.log.Warn("refused request body", "kind", x.Kind, "err", err)
		w.Header().Set("Connection", "close")
		h.fail(w, status, x.Error)
		return
	}
	x.RequestBody = body.Plain
	req := &clientRequest{Method: r.Method, URI: r.URL.RequestURI(), Header: r.Header, Body: body.Plain, Gzipped: body.Gzipped, Wire: body.Wire}
	call := &Call{Kind: ep.Kind, Account: up.account, Host: h.host, Workload: h.workload, RequestID: x.RequestID}
	release, err := h.g.admit(call)
	if err != nil {
		h.refuse(w, x, err)
		return
	}
	defer release()
	if err := h.g.charge(call, int64(len(body.Plain))); err != nil {
		h.refuse(w, x, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.g.cfg.UpstreamTimeout)
	defer cancel()
	rep, err := h.forward(ctx, call, req, x, true)
	x.Principal = call.Principal
	if err != nil {
		h.refuse(w, x, err)
		return
	}
	h.respond(ctx, w, rep, x)
}

// forward sends one client request upstream through the hooks and returns
// the reply for the client. With screen set the statement policy sees the
// request first and may answer instead (a held query resumes with screen
// unset). An error is a refusal: a *snowflake.Error is sent as it is.
func (h *handler) forward(ctx context.Context, call *Call, req *clientRequest, x *Exchange, screen bool) (*reply, error) {
	up := h.g.upstreamFor(h.host)
	out, err := http.NewRequestWithContext(ctx, req.Method, up.baseURL+req.URI, nil)
	if err != nil {
		return nil, refusal(http.StatusBadRequest, "request: "+err.Error())
	}
	copyHeader(out.Header, req.Header, "Content-Length", "Content-Encoding", "Accept-Encoding", "Host")
	out.Header.Set("Accept-Encoding", "gzip")
	send, err := h.g.creds.Outbound(ctx, call, out, req.Body)
	if err != nil {
		return nil, err
	}
	if screen {
		if rep, err := h.screen(ctx, call, req, send, x); rep != nil || err != nil {
			return rep, err
		}
	}
	if len(send) > 0 || req.Method == http.MethodPost {
		wire := req.Wire
		if !sameBytes(send, req.Body) || wire == nil {
			if wire, err = snowflake.Encode(send, req.Gzipped); err != nil {
				return nil, refusal(http.StatusInternalServerError, "encode request: "+err.Error())
			}
		}
		enc := ""
		if req.Gzipped {
			enc = "gzip"
		}
		snowflake.SetRequestBody(out, wire, enc)
	}
	t0 := time.Now()
	resp, err := h.roundTrip(up, call, out)
	if err != nil {
		x.UpstreamDuration += time.Since(t0)
		h.log.Warn("upstream request failed", "kind", x.Kind, "account", up.account, "err", err)
		x.Error = "upstream: " + err.Error()
		return nil, refusal(http.StatusBadGateway, "upstream unavailable")
	}
	defer resp.Body.Close()
	got, err := snowflake.ReadBody(resp.Body, resp.Header.Get("Content-Encoding"), h.g.cfg.ReplyLimits)
	x.UpstreamDuration += time.Since(t0)
	if err != nil {
		h.log.Warn("upstream reply unreadable", "kind", x.Kind, "err", err)
		x.Error = "upstream reply: " + err.Error()
		return nil, refusal(http.StatusBadGateway, "upstream reply unreadable")
	}
	if err := h.g.charge(call, int64(len(got.Plain))); err != nil {
		return nil, err
	}
	plain := got.Plain
	if resp.StatusCode == http.StatusOK && (call.Kind == snowflake.KindQueryRequest || call.Kind == snowflake.KindQueryResult) && mayHaveChunks(plain) {
		plain, err = h.rewriteChunks(plain, call.Principal)
		if err != nil {
			// A reply whose chunks cannot be routed through the gateway
			// must not reach the client.
			h.log.Error("chunk URL rewrite failed", "err", err)
			x.Error = err.Error()
			return nil, refusal(http.StatusBadGateway, "result could not be rewritten")
		}
	}
	plain, err = h.g.creds.Inbound(ctx, call, resp.StatusCode, plain)
	if err != nil {
		return nil, err
	}
	hdr := make(http.Header)
	copyHeader(hdr, resp.Header, "Content-Length", "Content-Encoding")
	return &reply{Status: resp.StatusCode, Header: hdr, Body: plain}, nil
}

// respond commits the exchange to the recorder and only then releases the
// reply to the client; a reply that cannot be recorded is refused.
func (h *handler) respond(ctx context.Context, w http.ResponseWriter, rep *reply, x *Exchange) {
	x.Status, x.ResponseHeader, x.ResponseBody = rep.Status, rep.Header, rep.Body
	if err := h.g.commit(context.WithoutCancel(ctx), x); err != nil {
		h.log.Error("recording failed: reply withheld", "kind", x.Kind, "err", err)
		h.refuse(w, x, err)
		x.ResponseBody = nil
		return
	}
	for k, v := range rep.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(rep.Body)))
	w.WriteHeader(rep.Status)
	n, _ := w.Write(rep.Body)
	x.ResponseSize = int64(n)
}

// mayHaveChunks reports whether a reply may list chunk URLs to rewrite:
// replies without a "chunks" key (written plainly, or with a \u escape that
// could spell it) skip the parse.
func mayHaveChunks(plain []byte) bool {
	return bytes.Contains(plain, []byte(`"chunks"`)) || bytes.Contains(plain, []byte(`\u`))
}

// sameBytes reports whether a and b are the same slice (a hook returned the
// body it was given).
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// refusal is a Snowflake-shaped refusal by the gateway itself.
func refusal(status int, msg string) *snowflake.Error {
	return &snowflake.Error{
		Code:       snowflake.CodeBadRequest,
		SQLState:   snowflake.SQLStateConnection,
		Message:    "snowgate: " + msg,
		HTTPStatus: status,
	}
}

// refuse answers a request the gateway refused.
func (h *handler) refuse(w http.ResponseWriter, x *Exchange, err error) {
	var se *snowflake.Error
	if !errors.As(err, &se) {
		se = &snowflake.Error{Code: snowflake.CodeBadRequest, SQLState: snowflake.SQLStateGeneral, Message: "snowgate: request refused"}
	}
	x.Status = se.Status()
	if x.Error == "" {
		x.Error = err.Error()
	}
	_ = snowflake.WriteError(w, se)
}

// rewriteChunks points every chunk URL of a query or result reply at the
// gateway, naming p's session in them (p may be nil: observe-only). A
// reply that is not a query reply passes unchanged.
func (h *handler) rewriteChunks(plain []byte, p *Principal) ([]byte, error) {
	q, err := snowflake.ParseQueryResponse(plain)
	if err != nil {
		return plain, nil
	}
	session := ""
	if p != nil {
		session = p.SessionID
	}
	n, err := h.g.cfg.Chunks.RewriteReply(q, h.host, h.owner(), session)
	if err != nil {
		return nil, fmt.Errorf("rewrite chunk URLs: %w", err)
	}
	if n == 0 {
		return plain, nil
	}
	return q.Body.Bytes(), nil
}

// redactURLError drops the URL (a presigned bearer link) from a transport
// error.
func redactURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return errors.New("request failed")
}

func hostOnly(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// statusWriter remembers the status and size of a reply.
type statusWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.n += int64(n)
	return n, err
}

func (s *statusWriter) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
