package gateway

import (
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
		h.record(r.Context(), x)
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
	_ = snowflake.WriteError(w, &snowflake.Error{
		Code:       snowflake.CodeBadRequest,
		SQLState:   snowflake.SQLStateConnection,
		Message:    "snowgate: " + msg,
		HTTPStatus: status,
	})
}

func (h *handler) record(ctx context.Context, x Exchange) {
	if h.g.cfg.Sink == nil {
		return
	}
	if err := h.g.cfg.Sink.Record(context.WithoutCancel(ctx), x); err != nil {
		h.log.Error("recording an exchange failed", "kind", x.Kind, "err", err)
	}
}

// api forwards one API request upstream and its reply back.
func (h *handler) api(w http.ResponseWriter, r *http.Request, ep snowflake.Endpoint, x *Exchange) {
	up := h.g.upstreamFor(h.host)
	x.Account = up.account
	x.RequestHeader = r.Header.Clone()
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

	ctx, cancel := context.WithTimeout(r.Context(), h.g.cfg.UpstreamTimeout)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, r.Method, up.base.String()+r.URL.RequestURI(), nil)
	if err != nil {
		x.Status, x.Error = http.StatusBadRequest, "request: "+err.Error()
		h.fail(w, x.Status, x.Error)
		return
	}
	copyHeader(out.Header, r.Header, "Content-Length", "Content-Encoding", "Accept-Encoding", "Host")
	out.Header.Set("Accept-Encoding", "gzip")
	call := Call{Kind: ep.Kind, Account: up.account, Host: h.host, Workload: h.workload}
	send, err := h.g.creds.Outbound(ctx, call, out, body.Plain)
	if err != nil {
		h.refuse(w, x, err)
		return
	}
	if len(send) > 0 || r.Method == http.MethodPost {
		wire, err := snowflake.Encode(send, body.Gzipped)
		if err != nil {
			x.Status, x.Error = http.StatusInternalServerError, "encode request: "+err.Error()
			h.fail(w, x.Status, x.Error)
			return
		}
		enc := ""
		if body.Gzipped {
			enc = "gzip"
		}
		snowflake.SetRequestBody(out, wire, enc)
	}
	resp, err := up.transport.RoundTrip(out)
	if err != nil {
		x.Status, x.Error = http.StatusBadGateway, "upstream: "+err.Error()
		h.log.Warn("upstream request failed", "kind", x.Kind, "account", up.account, "err", err)
		h.fail(w, x.Status, "upstream unavailable")
		return
	}
	defer resp.Body.Close()
	reply, err := snowflake.ReadBody(resp.Body, resp.Header.Get("Content-Encoding"), h.g.cfg.ReplyLimits)
	if err != nil {
		x.Status, x.Error = http.StatusBadGateway, "upstream reply: "+err.Error()
		h.log.Warn("upstream reply unreadable", "kind", x.Kind, "err", err)
		h.fail(w, x.Status, "upstream reply unreadable")
		return
	}
	plain := reply.Plain
	if resp.StatusCode == http.StatusOK && (ep.Kind == snowflake.KindQueryRequest || ep.Kind == snowflake.KindQueryResult) {
		plain, err = h.rewriteChunks(plain)
		if err != nil {
			// A reply whose chunks cannot be routed through the gateway
			// must not reach the client.
			x.Status, x.Error = http.StatusBadGateway, err.Error()
			h.log.Error("chunk URL rewrite failed", "err", err)
			h.fail(w, x.Status, "result could not be rewritten")
			return
		}
	}
	plain, err = h.g.creds.Inbound(ctx, call, resp.StatusCode, plain)
	if err != nil {
		h.refuse(w, x, err)
		return
	}
	copyHeader(w.Header(), resp.Header, "Content-Length", "Content-Encoding")
	w.Header().Set("Content-Length", strconv.Itoa(len(plain)))
	w.WriteHeader(resp.StatusCode)
	n, _ := w.Write(plain)
	x.Status, x.ResponseHeader, x.ResponseBody, x.ResponseSize = resp.StatusCode, w.Header().Clone(), plain, int64(n)
}

// refuse answers a request the credential hook refused.
func (h *handler) refuse(w http.ResponseWriter, x *Exchange, err error) {
	var se *snowflake.Error
	if !errors.As(err, &se) {
		se = &snowflake.Error{Code: snowflake.CodeBadRequest, SQLState: snowflake.SQLStateGeneral, Message: "snowgate: request refused"}
	}
	x.Status, x.Error = se.Status(), err.Error()
	_ = snowflake.WriteError(w, se)
}

// rewriteChunks points every chunk URL of a query or result reply at the
// gateway. A reply that is not a query reply passes unchanged.
func (h *handler) rewriteChunks(plain []byte) ([]byte, error) {
	q, err := snowflake.ParseQueryResponse(plain)
	if err != nil {
		return plain, nil
	}
	n, err := h.g.cfg.Chunks.RewriteReply(q, h.host, h.owner())
	if err != nil {
		return nil, fmt.Errorf("rewrite chunk URLs: %w", err)
	}
	if n == 0 {
		return plain, nil
	}
	return q.Body.Bytes(), nil
}

// chunk streams one result chunk from its original presigned URL, with the
// client's SSE-C headers, and the reply's Content-Encoding unchanged.
func (h *handler) chunk(w http.ResponseWriter, r *http.Request, ep snowflake.Endpoint, x *Exchange) {
	x.ChunkID = ep.ChunkID
	ref, ok := h.g.cfg.Chunks.Lookup(ep.ChunkID, h.owner())
	if !ok {
		x.Status, x.Error = http.StatusNotFound, "chunk id not issued to this workload"
		h.log.Warn("refused chunk fetch", "reason", x.Error)
		http.Error(w, "unknown chunk", http.StatusNotFound)
		return
	}
	x.QueryID = ref.QueryID
	x.RequestHeader = r.Header.Clone()
	ctx, cancel := context.WithTimeout(r.Context(), h.g.cfg.UpstreamTimeout)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, http.MethodGet, ref.URL, nil)
	if err != nil {
		x.Status, x.Error = http.StatusBadGateway, "chunk URL unusable"
		http.Error(w, "bad chunk", http.StatusBadGateway)
		return
	}
	copyHeader(out.Header, r.Header, "Host", "Authorization", "Cookie", "Content-Length")
	for k, v := range ref.Headers {
		if out.Header.Get(k) == "" {
			out.Header.Set(k, v)
		}
	}
	resp, err := h.g.storage.RoundTrip(out)
	if err != nil {
		// The error text may hold the presigned URL: keep it out.
		x.Status, x.Error = http.StatusBadGateway, "chunk fetch failed"
		h.log.Warn("chunk fetch failed", "query", ref.QueryID, "index", ref.Index, "err", redactURLError(err))
		http.Error(w, "chunk fetch failed", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.g.cfg.UpstreamTimeout))
	n, err := io.Copy(w, resp.Body)
	x.Status, x.ResponseHeader, x.ResponseSize = resp.StatusCode, resp.Header.Clone(), n
	if err != nil {
		x.Error = "chunk stream broken"
	}
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
