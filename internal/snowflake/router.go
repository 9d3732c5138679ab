package snowflake

import (
	"net/http"
	"net/url"
	"strings"
)

// Kind names an endpoint of the Snowflake REST protocol as the drivers use
// it (protocol notes §2.1), plus the gateway's own chunk and OCSP paths.
type Kind int

// The endpoint kinds. KindUnknown is the zero value: a gateway refuses it.
const (
	KindUnknown Kind = iota
	// KindLogin is POST /session/v1/login-request.
	KindLogin
	// KindTokenRequest is POST /session/token-request (session renewal).
	KindTokenRequest
	// KindHeartbeat is POST /session/heartbeat.
	KindHeartbeat
	// KindLogout is POST /session?delete=true.
	KindLogout
	// KindQueryRequest is POST /queries/v1/query-request.
	KindQueryRequest
	// KindQueryResult is GET /queries/<qid>/result.
	KindQueryResult
	// KindMonitoring is GET /monitoring/queries/<qid>.
	KindMonitoring
	// KindAbortByRequestID is POST /queries/v1/abort-request (body names the requestId).
	KindAbortByRequestID
	// KindAbortByQueryID is POST /queries/<qid>/abort-request (Node only).
	KindAbortByQueryID
	// KindTelemetry is POST /telemetry/send.
	KindTelemetry
	// KindAuthenticatorRequest is POST /session/authenticator-request (browser and Okta SSO).
	KindAuthenticatorRequest
	// KindChunk is GET ChunkPathPrefix<id>: a result chunk whose URL the gateway rewrote.
	KindChunk
	// KindOCSP is an OCSP request to the gateway's responder (GET or POST under
	// OCSPPathPrefix), or a driver's OCSP cache-server look-up (GET
	// /ocsp_response_cache.json, GET /retry/…).
	KindOCSP
)

var kindNames = [...]string{
	KindUnknown:              "unknown",
	KindLogin:                "login",
	KindTokenRequest:         "token-request",
	KindHeartbeat:            "heartbeat",
	KindLogout:               "logout",
	KindQueryRequest:         "query-request",
	KindQueryResult:          "query-result",
	KindMonitoring:           "monitoring",
	KindAbortByRequestID:     "abort-by-request-id",
	KindAbortByQueryID:       "abort-by-query-id",
	KindTelemetry:            "telemetry",
	KindAuthenticatorRequest: "authenticator-request",
	KindChunk:                "chunk",
	KindOCSP:                 "ocsp",
}

// String returns a short stable name, fit for logs and metric labels.
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "unknown"
	}
	return kindNames[k]
}

// NeedsSession reports whether requests of kind k carry a session (or, for
// TokenRequest, master) token in Authorization.
func (k Kind) NeedsSession() bool {
	switch k {
	case KindTokenRequest, KindHeartbeat, KindLogout, KindQueryRequest, KindQueryResult, KindMonitoring,
		KindAbortByRequestID, KindAbortByQueryID, KindTelemetry:
		return true
	}
	return false
}

// Paths the gateway serves itself.
const (
	// ChunkPathPrefix is the path under which rewritten chunk URLs point at
	// the gateway; the opaque chunk id follows it.
	ChunkPathPrefix = "/_snowgate/chunk/"
	// OCSPPathPrefix is the path of the gateway's OCSP responder; GET
	// requests append the base64 request (RFC 6960 appendix A).
	OCSPPathPrefix = "/_snowgate/ocsp"
	// OCSPCacheServerPath is the drivers' OCSP cache-server file.
	OCSPCacheServerPath = "/ocsp_response_cache.json"
)

// maxIDLen bounds query and chunk ids; real query ids are 36 characters.
const maxIDLen = 128

// Endpoint is a classified request.
type Endpoint struct {
	Kind Kind
	// QueryID is the query id in the path of QueryResult, Monitoring and
	// AbortByQueryID requests.
	QueryID string
	// ChunkID is the opaque id of a Chunk request.
	ChunkID string
}

// Route classifies a request by method and URL. It is strict: paths must be
// exactly as the drivers send them (no trailing slash, no dot segments, ids
// of safe characters only, escaped characters only in an OCSP GET), and
// anything else is KindUnknown, which a gateway refuses rather than forwards.
func Route(method string, u *url.URL) Endpoint {
	if u == nil || u.Opaque != "" {
		return Endpoint{}
	}
	p := u.Path
	if u.RawPath != "" {
		// Escaped characters belong only in an OCSP GET, whose base64
		// request snowflake-sdk URL-encodes ('/' as %2F).
		if method == http.MethodGet && (strings.HasPrefix(p, OCSPPathPrefix+"/") || strings.HasPrefix(p, "/retry/")) {
			return Endpoint{Kind: KindOCSP}
		}
		return Endpoint{}
	}
	switch p {
	case "/session/v1/login-request":
		return only(method, http.MethodPost, KindLogin)
	case "/session/token-request":
		return only(method, http.MethodPost, KindTokenRequest)
	case "/session/heartbeat":
		return only(method, http.MethodPost, KindHeartbeat)
	case "/session":
		if u.Query().Get("delete") == "true" {
			return only(method, http.MethodPost, KindLogout)
		}
		return Endpoint{}
	case "/session/authenticator-request":
		return only(method, http.MethodPost, KindAuthenticatorRequest)
	case "/queries/v1/query-request":
		return only(method, http.MethodPost, KindQueryRequest)
	case "/queries/v1/abort-request":
		return only(method, http.MethodPost, KindAbortByRequestID)
	case "/telemetry/send":
		return only(method, http.MethodPost, KindTelemetry)
	case OCSPCacheServerPath:
		return only(method, http.MethodGet, KindOCSP)
	case OCSPPathPrefix, OCSPPathPrefix + "/":
		return only(method, http.MethodPost, KindOCSP)
	}
	switch {
	case strings.HasPrefix(p, "/queries/"):
		qid, rest, ok := strings.Cut(p[len("/queries/"):], "/")
		if !ok || !validID(qid) {
			return Endpoint{}
		}
		switch rest {
		case "result":
			e := only(method, http.MethodGet, KindQueryResult)
			if e.Kind != KindUnknown {
				e.QueryID = qid
			}
			return e
		case "abort-request":
			e := only(method, http.MethodPost, KindAbortByQueryID)
			if e.Kind != KindUnknown {
				e.QueryID = qid
			}
			return e
		}
	case strings.HasPrefix(p, "/monitoring/queries/"):
		qid := p[len("/monitoring/queries/"):]
		if validID(qid) && method == http.MethodGet {
			return Endpoint{Kind: KindMonitoring, QueryID: qid}
		}
	case strings.HasPrefix(p, ChunkPathPrefix):
		id := p[len(ChunkPathPrefix):]
		if validID(id) && method == http.MethodGet {
			return Endpoint{Kind: KindChunk, ChunkID: id}
		}
	case strings.HasPrefix(p, OCSPPathPrefix+"/"):
		// GET with the base64 request in the path; '/' and '+' are base64
		// characters, so the rest of the path is not checked here.
		if method == http.MethodGet {
			return Endpoint{Kind: KindOCSP}
		}
	case strings.HasPrefix(p, "/retry/"):
		// gosnowflake's privatelink OCSP retry proxy: /retry/<responder>/<b64>.
		if method == http.MethodGet {
			return Endpoint{Kind: KindOCSP}
		}
	}
	return Endpoint{}
}

func only(method, want string, k Kind) Endpoint {
	if method != want {
		return Endpoint{}
	}
	return Endpoint{Kind: k}
}

// validID accepts the characters of Snowflake query ids (hex and dashes) and
// of the gateway's base64url chunk ids.
func validID(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
