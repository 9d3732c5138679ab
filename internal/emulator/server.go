// Package emulator serves the Snowflake client REST protocol over HTTP or
// HTTPS, faithfully enough that the unmodified gosnowflake and snowflake-sdk
// drivers cannot tell it from the service for everything the gateway
// touches: the login variants, session renewal, queries (through the
// SQLite-backed sqlengine), multi-statement, async execution and long polls,
// cancellation, result chunks on a separate presigned "storage" host, PUT/GET
// through a LOCAL_FS stage, and fault knobs for reliability tests.
//
// Besides the Go API (Server.Faults, Server.QueryLog), a running emulator
// exposes its knobs over HTTP on the account host:
//
//	POST /__emulator/faults    {"faults":[{"endpoint":"query","status":503,"count":2},
//	                                       {"endpoint":"chunk","latency":"250ms"},
//	                                       {"endpoint":"query","reset":true,"after":true,"count":1}],
//	                            "clear":false,"expireSessions":false,"expireMasters":false}
//	GET  /__emulator/faults    the installed faults
//	GET  /__emulator/querylog  every executed statement (JSON array of QueryLogEntry)
//
// Endpoint names are the Endpoint* constants ("*" matches all). Result
// chunks are served under /__storage/ and only on the host name they were
// signed for (Config.StorageURL), with the SSE-C headers of the reply's
// chunkHeaders, as cloud storage would.
package emulator

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/snowgate/snowgate/internal/emulator/sqlengine"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// Config configures a Server. Zero values get the defaults documented on
// each field.
type Config struct {
	// Account is the account name, e.g. "demo"; required.
	Account string
	// Users maps user names to passwords.
	Users map[string]string
	// PublicKeys maps user names to the RSA public key of key-pair login.
	PublicKeys map[string]crypto.PublicKey
	// PATs maps user names to programmatic access tokens.
	PATs map[string]string
	// OAuthTokens maps OAuth access tokens to the user they log in.
	OAuthTokens map[string]string
	// SessionTTL and MasterTTL are the validities of session and master
	// tokens; defaults 1h and 4h.
	SessionTTL, MasterTTL time.Duration
	// StorageURL is the base URL chunk links use (scheme://host[:port], no
	// path). Its host name must differ from the account host: API requests
	// that arrive for it are refused, as cloud storage would. Empty: the host the
	// request came to, with 127.0.0.1 and localhost swapped.
	StorageURL string
	// Dir holds chunk and stage files; "" means a temporary directory that
	// Close removes.
	Dir string
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger

	// DatabasePath is the SQLite file of the engine; "" means in memory.
	DatabasePath string
	// QueryWait is how long a synchronous query-request waits for its
	// statement before answering 333333 (default 45s).
	QueryWait time.Duration
	// ResultWait is how long GET /queries/<id>/result long-polls (default 45s).
	ResultWait time.Duration
	// InlineRows and ChunkRows size result pages; 0 means resultset's defaults.
	InlineRows, ChunkRows int
	// ChunkURLTTL is how long a presigned chunk URL stays valid (default 6h).
	ChunkURLTTL time.Duration
	// ResultTTL is how long results (and their chunk files) are kept after
	// the query finished (default 1h); logout removes them earlier.
	ResultTTL time.Duration
	// MaxResultBytes bounds the chunk files on disk; the oldest results are
	// evicted beyond it (default 2 GiB).
	MaxResultBytes int64
	// MaxBodyBytes caps request bodies (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// QueryLogFile, if set, receives every executed statement as a JSON line.
	QueryLogFile string
	// DisableAdmin turns off the /__emulator/ admin endpoints.
	DisableAdmin bool
	// DisableCompression sends JSON replies uncompressed even to clients
	// that accept gzip.
	DisableCompression bool
}

// Server is a Snowflake-protocol emulator. Create it with New, serve
// Handler, and Close it.
type Server struct {
	cfg      Config
	log      *slog.Logger
	engine   *sqlengine.Engine
	sessions *sessionStore
	faults   *Faults
	queries  *queryStore
	qlog     *queryLog
	dir      string
	tempDir  bool
	maxBody  int64
	signKey  []byte
	storage  *url.URL // nil: derived per request

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the janitor
	execWG sync.WaitGroup // running statements
	once   sync.Once
}

// New validates cfg and returns a Server with its engine open.
func New(cfg Config) (*Server, error) {
	if cfg.Account == "" {
		return nil, errors.New("emulator: Config.Account is required")
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = time.Hour
	}
	if cfg.MasterTTL == 0 {
		cfg.MasterTTL = 4 * time.Hour
	}
	if cfg.QueryWait == 0 {
		cfg.QueryWait = 45 * time.Second
	}
	if cfg.ResultWait == 0 {
		cfg.ResultWait = 45 * time.Second
	}
	if cfg.ChunkURLTTL == 0 {
		cfg.ChunkURLTTL = 6 * time.Hour
	}
	if cfg.ResultTTL == 0 {
		cfg.ResultTTL = time.Hour
	}
	if cfg.MaxResultBytes == 0 {
		cfg.MaxResultBytes = 2 << 30
	}
	s := &Server{cfg: cfg, log: cfg.Logger, maxBody: cfg.MaxBodyBytes}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if cfg.StorageURL != "" {
		u, err := url.Parse(cfg.StorageURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("emulator: StorageURL %q is not an http(s) base URL without a path", cfg.StorageURL)
		}
		if strings.EqualFold(u.Hostname(), cfg.Account+".snowflakecomputing.com") {
			return nil, fmt.Errorf("emulator: StorageURL host %q must differ from the account host", u.Hostname())
		}
		s.storage = u
	}
	s.signKey = make([]byte, 32)
	if _, err := rand.Read(s.signKey); err != nil {
		return nil, fmt.Errorf("emulator: signing key: %w", err)
	}
	s.dir = cfg.Dir
	if s.dir == "" {
		d, err := os.MkdirTemp("", "snowgate-emulator-")
		if err != nil {
			return nil, fmt.Errorf("emulator: temp dir: %w", err)
		}
		s.dir, s.tempDir = d, true
	}
	for _, sub := range []string{"results", "stages"} {
		if err := os.MkdirAll(s.dir+"/"+sub, 0o700); err != nil {
			s.cleanupDir()
			return nil, fmt.Errorf("emulator: %w", err)
		}
	}
	eng, err := sqlengine.Open(sqlengine.Options{Path: cfg.DatabasePath})
	if err != nil {
		s.cleanupDir()
		return nil, fmt.Errorf("emulator: open engine: %w", err)
	}
	s.engine = eng
	s.qlog, err = newQueryLog(cfg.QueryLogFile)
	if err != nil {
		_ = eng.Close()
		s.cleanupDir()
		return nil, fmt.Errorf("emulator: %w", err)
	}
	s.sessions = newSessionStore(cfg.SessionTTL, cfg.MasterTTL)
	s.faults = &Faults{s: s}
	s.queries = newQueryStore()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.janitor()
	return s, nil
}

func (s *Server) cleanupDir() {
	if s.tempDir {
		_ = os.RemoveAll(s.dir)
	}
}

// Close cancels running statements, removes result files (and the
// temporary directory) and closes the engine.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		// Cancelled statements return promptly; bound the wait anyway so a
		// stuck one cannot hang Close.
		stopped := make(chan struct{})
		go func() { s.execWG.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			s.log.Warn("statements still running at close")
		}
		s.wg.Wait()
		for _, q := range s.queries.removeAll() {
			q.removeFiles()
		}
		err = errors.Join(s.engine.Close(), s.qlog.close())
		s.cleanupDir()
	})
	return err
}

// Faults returns the fault knobs.
func (s *Server) Faults() *Faults { return s.faults }

// Dir returns the directory holding chunk and stage files.
func (s *Server) Dir() string { return s.dir }

// Handler serves the account API and the storage endpoint. Storage requests
// are routed by path prefix and must come to the storage host name their
// presigned URL was signed for.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("handler panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
			s.writeError(w, &snowflake.Error{Code: "000603", SQLState: snowflake.SQLStateGeneral, Message: "Internal error.", HTTPStatus: http.StatusInternalServerError})
		}
	}()
	w.Header().Set("Server", "SF-LB")
	path := r.URL.Path
	if strings.HasPrefix(path, adminPrefix) && !s.cfg.DisableAdmin {
		s.serveAdmin(w, r)
		return
	}
	endpoint := endpointOf(path)
	if endpoint != EndpointChunk && !s.cfg.DisableCompression && acceptsGzip(r) {
		gw := &gzipWriter{ResponseWriter: w}
		defer gw.finish()
		w = gw
	}
	s.log.Debug("request", "method", r.Method, "path", path, "endpoint", endpoint, "host", r.Host)
	if endpoint != EndpointChunk && s.storage != nil && strings.EqualFold(hostOnly(r.Host), s.storage.Hostname()) && !strings.EqualFold(s.storage.Hostname(), hostOnly(s.cfg.Account+".snowflakecomputing.com")) {
		storageError(w, http.StatusForbidden, "AccessDenied", "The storage host does not serve the Snowflake API.")
		return
	}
	s.applyFaults(endpoint, w, r, func(w http.ResponseWriter, r *http.Request) { s.route(endpoint, w, r) })
}

// route dispatches one request after the fault knobs.
func (s *Server) route(endpoint string, w http.ResponseWriter, r *http.Request) {
	method := map[string]string{
		EndpointLogin: http.MethodPost, EndpointToken: http.MethodPost, EndpointHeartbeat: http.MethodPost,
		EndpointLogout: http.MethodPost, EndpointQuery: http.MethodPost, EndpointAbort: http.MethodPost,
		EndpointTelemetry: http.MethodPost, EndpointResult: http.MethodGet, EndpointMonitoring: http.MethodGet,
		EndpointChunk: http.MethodGet,
	}[endpoint]
	if endpoint == EndpointOther || (endpoint == EndpointLogout && r.URL.Query().Get("delete") != "true") {
		s.writeError(w, &snowflake.Error{Code: snowflake.CodeBadRequest, SQLState: snowflake.SQLStateGeneral,
			Message: fmt.Sprintf("Unknown endpoint %s %s.", r.Method, r.URL.Path), HTTPStatus: http.StatusNotFound})
		return
	}
	if r.Method != method && !(endpoint == EndpointChunk && r.Method == http.MethodHead) {
		w.Header().Set("Allow", method)
		s.writeError(w, &snowflake.Error{Code: snowflake.CodeBadRequest, SQLState: snowflake.SQLStateGeneral,
			Message: fmt.Sprintf("Method %s not allowed on %s.", r.Method, r.URL.Path), HTTPStatus: http.StatusMethodNotAllowed})
		return
	}
	switch endpoint {
	case EndpointLogin:
		s.handleLogin(w, r)
		return
	case EndpointToken:
		s.handleRenew(w, r)
		return
	case EndpointChunk:
		s.handleChunk(w, r)
		return
	}
	sess, e := s.authSession(r, endpoint == EndpointTelemetry || endpoint == EndpointLogout)
	if e != nil {
		s.writeError(w, e)
		return
	}
	switch endpoint {
	case EndpointHeartbeat:
		s.writeOK(w, nil)
	case EndpointTelemetry:
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, s.maxBody))
		_ = snowflake.WriteJSON(w, http.StatusOK, snowflake.OK("Log Received"))
	case EndpointLogout:
		s.endSession(sess)
		s.writeOK(w, nil)
	case EndpointQuery:
		s.handleQuery(w, r, sess)
	case EndpointResult:
		s.handleResult(w, r, sess)
	case EndpointMonitoring:
		s.handleMonitoring(w, r, sess)
	case EndpointAbort:
		s.handleAbort(w, r, sess)
	}
}

// authSession resolves the session token of the Authorization header.
// lenient accepts an expired token (telemetry, logout).
func (s *Server) authSession(r *http.Request, lenient bool) (*session, *snowflake.Error) {
	token, ok := parseAuthorization(r.Header.Get("Authorization"))
	if !ok {
		return nil, &snowflake.Error{Code: snowflake.CodeSessionInvalid, SQLState: snowflake.SQLStateConnection,
			Message: "Authorization header is missing or not a Snowflake token.", HTTPStatus: http.StatusUnauthorized}
	}
	sess, state := s.sessions.lookup(token)
	switch {
	case state == tokenUnknown:
		return nil, &snowflake.Error{Code: snowflake.CodeSessionInvalid, SQLState: snowflake.SQLStateConnection,
			Message: "Session token is invalid. User must login again."}
	case state == tokenExpired && !lenient:
		return nil, &snowflake.Error{Code: snowflake.CodeSessionExpired, SQLState: snowflake.SQLStateConnection,
			Message: "Authentication token has expired.  The user must authenticate again."}
	}
	return sess, nil
}

// parseAuthorization extracts the token of `Snowflake Token="…"`.
func parseAuthorization(h string) (string, bool) {
	const prefix = `Snowflake Token="`
	if len(h) <= len(prefix)+1 || !strings.EqualFold(h[:len(prefix)], prefix) || !strings.HasSuffix(h, `"`) {
		return "", false
	}
	tok := h[len(prefix) : len(h)-1]
	if tok == "" || strings.ContainsAny(tok, "\" ") {
		return "", false
	}
	return tok, true
}

// renewRequest is the body of /session/token-request.
type renewRequest struct {
	OldSessionToken string `json:"oldSessionToken"`
	RequestType     string `json:"requestType"`
}

// handleRenew serves POST /session/token-request with the master token.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	master, ok := parseAuthorization(r.Header.Get("Authorization"))
	if !ok {
		s.writeError(w, &snowflake.Error{Code: snowflake.CodeSessionInvalid, SQLState: snowflake.SQLStateConnection,
			Message: "Authorization header is missing or not a Snowflake token.", HTTPStatus: http.StatusUnauthorized})
		return
	}
	var req renewRequest
	if e := s.decodeJSON(r, &req); e != nil {
		s.writeError(w, e)
		return
	}
	if !strings.EqualFold(req.RequestType, "RENEW") {
		s.writeError(w, badRequest(http.StatusBadRequest, fmt.Sprintf("unsupported requestType %q", req.RequestType)))
		return
	}
	sess, state := s.sessions.renew(master, req.OldSessionToken)
	switch state {
	case tokenUnknown:
		s.writeError(w, &snowflake.Error{Code: snowflake.CodeSessionInvalid, SQLState: snowflake.SQLStateConnection,
			Message: "Session token is invalid. User must login again."})
		return
	case tokenExpired:
		s.writeError(w, &snowflake.Error{Code: snowflake.CodeMasterExpired, SQLState: snowflake.SQLStateConnection,
			Message: "Master token has expired. The user must authenticate again."})
		return
	}
	token, mt, validST, validMT := s.sessions.tokens(sess)
	s.log.Info("session renewed", "session", sess.id)
	s.writeOK(w, map[string]any{
		"sessionToken":        token,
		"validityInSecondsST": validST,
		"masterToken":         mt,
		"validityInSecondsMT": validMT,
		"sessionId":           sess.id,
	})
}

// endSession logs a session out: running statements are cancelled and its
// results and chunk files removed.
func (s *Server) endSession(sess *session) {
	s.sessions.remove(sess)
	for _, q := range s.queries.removeSession(sess.id) {
		q.cancel()
		q.removeFiles()
	}
	s.log.Info("session closed", "session", sess.id)
}

// janitor removes expired results and dead sessions.
func (s *Server) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		for _, sess := range s.sessions.stale(10 * time.Minute) {
			s.endSession(sess)
		}
		for _, q := range s.queries.expire(time.Now().Add(-s.cfg.ResultTTL), s.cfg.MaxResultBytes) {
			q.removeFiles()
		}
	}
}

func (s *Server) writeOK(w http.ResponseWriter, data any) {
	if err := snowflake.WriteJSON(w, http.StatusOK, snowflake.OK(data)); err != nil {
		s.log.Debug("write reply", "err", err)
	}
}

func (s *Server) writeError(w http.ResponseWriter, e *snowflake.Error) {
	if err := snowflake.WriteError(w, e); err != nil {
		s.log.Debug("write error reply", "err", err)
	}
}

// hostOnly strips the port of a Host header value.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// Admin endpoints.
const adminPrefix = "/__emulator/"

// adminFaults is the body of POST /__emulator/faults.
type adminFaults struct {
	Clear          bool    `json:"clear"`
	Faults         []Fault `json:"faults"`
	ExpireSessions bool    `json:"expireSessions"`
	ExpireMasters  bool    `json:"expireMasters"`
}

// serveAdmin serves the fault knobs and the query log over HTTP:
// GET/POST /__emulator/faults, GET /__emulator/querylog.
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == adminPrefix+"faults" && r.Method == http.MethodGet:
		_ = snowflake.WriteJSON(w, http.StatusOK, map[string]any{"faults": s.faults.List()})
	case r.URL.Path == adminPrefix+"faults" && r.Method == http.MethodPost:
		var req adminFaults
		if e := s.decodeJSON(r, &req); e != nil {
			s.writeError(w, e)
			return
		}
		if req.Clear {
			s.faults.Clear()
		}
		for _, f := range req.Faults {
			if f.Endpoint == "" {
				s.writeError(w, badRequest(http.StatusBadRequest, "fault without endpoint"))
				return
			}
			s.faults.Add(f)
		}
		if req.ExpireMasters {
			s.faults.ExpireMasters()
		} else if req.ExpireSessions {
			s.faults.ExpireSessions()
		}
		_ = snowflake.WriteJSON(w, http.StatusOK, map[string]any{"faults": s.faults.List()})
	case r.URL.Path == adminPrefix+"querylog" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.QueryLog())
	default:
		s.writeError(w, &snowflake.Error{Code: snowflake.CodeBadRequest, SQLState: snowflake.SQLStateGeneral,
			Message: "Unknown admin endpoint.", HTTPStatus: http.StatusNotFound})
	}
}

// Running returns how many statements are executing right now.
func (s *Server) Running() int {
	s.queries.mu.Lock()
	defer s.queries.mu.Unlock()
	n := 0
	for _, q := range s.queries.byID {
		if !q.finished() {
			n++
		}
	}
	return n
}

// Sessions returns how many sessions are logged in.
func (s *Server) Sessions() int { return len(s.sessions.all()) }
