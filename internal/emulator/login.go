package emulator

import (
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// loginRequest is the body of /session/v1/login-request.
type loginRequest struct {
	Data loginData `json:"data"`
}

// loginData holds the login fields the emulator reads; others are ignored.
type loginData struct {
	ClientAppID       string         `json:"CLIENT_APP_ID"`
	AccountName       string         `json:"ACCOUNT_NAME"`
	LoginName         string         `json:"LOGIN_NAME"`
	Password          string         `json:"PASSWORD"`
	Authenticator     string         `json:"AUTHENTICATOR"`
	Token             string         `json:"TOKEN"`
	SessionParameters map[string]any `json:"SESSION_PARAMETERS"`
	ClientEnvironment map[string]any `json:"CLIENT_ENVIRONMENT"`
}

// loginError is a refused login: HTTP 200, success false, SQLState 08004.
func loginError(code, msg string) *snowflake.Error {
	return &snowflake.Error{Code: code, SQLState: snowflake.SQLStateLoginFailed, Message: msg}
}

var errBadCredentials = loginError(snowflake.CodeBadCredentials, "Incorrect username or password was specified.")

// handleLogin serves POST /session/v1/login-request.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if e := s.decodeJSON(r, &req); e != nil {
		s.writeError(w, e)
		return
	}
	d := &req.Data
	if d.AccountName != "" && !strings.EqualFold(accountPart(d.AccountName), accountPart(s.cfg.Account)) {
		s.writeError(w, loginError(snowflake.CodeBadCredentials, fmt.Sprintf("Account %q does not exist or is not authorized.", d.AccountName)))
		return
	}
	user, e := s.authenticate(d)
	if e != nil {
		s.log.Info("login refused", "user", d.LoginName, "authenticator", d.Authenticator, "code", e.Code)
		s.writeError(w, e)
		return
	}
	q := r.URL.Query()
	eng := s.engine.NewSession(user, firstNonEmpty(q.Get("roleName"), "PUBLIC"), q.Get("warehouse"), q.Get("databaseName"), q.Get("schemaName"))
	if eng.Database != "" && eng.Schema == "" {
		eng.Schema = "PUBLIC"
	}
	if eng.Params == nil {
		eng.Params = map[string]string{}
	}
	for k, v := range d.SessionParameters {
		eng.Params[strings.ToUpper(k)] = paramString(v)
	}
	sess := s.sessions.create(user, d.ClientAppID, eng)
	token, master, validST, validMT := s.sessions.tokens(sess)
	s.log.Info("login", "user", user, "session", sess.id, "client", d.ClientAppID)
	s.writeOK(w, map[string]any{
		"token":                   token,
		"masterToken":             master,
		"validityInSeconds":       validST,
		"masterValidityInSeconds": validMT,
		"sessionId":               sess.id,
		"serverVersion":           ServerVersion,
		"displayUserName":         user,
		"firstLogin":              false,
		"healthCheckInterval":     45,
		"newClientForUpgrade":     nil,
		"idToken":                 nil,
		"mfaToken":                nil,
		"parameters":              s.loginParameters(eng.Params),
		"sessionInfo": map[string]any{
			"databaseName":  nullIfEmpty(eng.Database),
			"schemaName":    nullIfEmpty(eng.Schema),
			"warehouseName": nullIfEmpty(eng.Warehouse),
			"roleName":      eng.Role,
		},
	})
}

// ServerVersion is the Snowflake version the emulator reports.
const ServerVersion = "9.0.0-snowgate-emulator"

// authenticate checks the credentials of a login and returns the user.
func (s *Server) authenticate(d *loginData) (string, *snowflake.Error) {
	auth := strings.ToUpper(d.Authenticator)
	if auth == "" && d.Token != "" && d.Password == "" {
		// OAUTH_CLIENT_CREDENTIALS / AUTHORIZATION_CODE: no AUTHENTICATOR,
		// just the token (protocol notes §3.2).
		auth = "OAUTH"
	}
	switch auth {
	case "", "SNOWFLAKE", "USERNAME_PASSWORD_MFA":
		user, want, ok := lookupUser(s.cfg.Users, d.LoginName)
		if !ok || d.Password == "" || subtle.ConstantTimeCompare([]byte(want), []byte(d.Password)) != 1 {
			return "", errBadCredentials
		}
		return user, nil
	case "SNOWFLAKE_JWT":
		return s.verifyJWT(d.Token, d.LoginName)
	case "PROGRAMMATIC_ACCESS_TOKEN":
		user, want, ok := lookupUser(s.cfg.PATs, d.LoginName)
		if !ok || d.Token == "" || subtle.ConstantTimeCompare([]byte(want), []byte(d.Token)) != 1 {
			return "", loginError(snowflake.CodeBadCredentials, "Programmatic access token is invalid.")
		}
		return user, nil
	case "OAUTH":
		for tok, user := range s.cfg.OAuthTokens {
			if d.Token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(d.Token)) == 1 {
				if d.LoginName != "" && !strings.EqualFold(d.LoginName, user) {
					break
				}
				return user, nil
			}
		}
		e := loginError(snowflake.CodeOAuthInvalid, "Invalid OAuth access token. ")
		return "", e
	}
	return "", loginError(snowflake.CodeBadCredentials, fmt.Sprintf("Authenticator %q is not supported by this account.", d.Authenticator))
}

// lookupUser finds a user case-insensitively, as Snowflake login names are.
func lookupUser(m map[string]string, name string) (user, secret string, ok bool) {
	if name == "" {
		return "", "", false
	}
	if v, ok := m[name]; ok {
		return name, v, true
	}
	for u, v := range m {
		if strings.EqualFold(u, name) {
			return u, v, true
		}
	}
	return "", "", false
}

// accountPart is the account as key-pair JWTs name it: upper-cased and cut
// at the first dot (region, cloud and privatelink dropped).
func accountPart(account string) string {
	a, _, _ := strings.Cut(account, ".")
	return strings.ToUpper(a)
}

// jwtClaims are the claims Snowflake reads from a key-pair JWT. Go sends
// iat/exp in seconds, Node in milliseconds. go-jose decodes with its own
// JSON package, so the times are float64 (exact for both).
type jwtClaims struct {
	Issuer  string  `json:"iss"`
	Subject string  `json:"sub"`
	IAT     float64 `json:"iat"`
	EXP     float64 `json:"exp"`
}

// MaxJWTLifetime is the longest exp - iat the emulator accepts, as Snowflake
// documents for key-pair JWTs.
const MaxJWTLifetime = time.Hour

// PublicKeyFingerprint is Snowflake's fingerprint of an RSA public key:
// "SHA256:" + base64 of the SHA-256 of its SubjectPublicKeyInfo DER.
func PublicKeyFingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return "SHA256:" + base64.StdEncoding.EncodeToString(sum[:]), nil
}

var errJWT = loginError(snowflake.CodeJWTInvalid, "JWT token is invalid.")

// verifyJWT checks a SNOWFLAKE_JWT login token: RS256 signed by the
// registered key of the user it names, iss/sub of the form
// ACCOUNT.USER.SHA256:<fingerprint> / ACCOUNT.USER, and a current lifetime.
func (s *Server) verifyJWT(token, loginName string) (string, *snowflake.Error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return "", errJWT
	}
	var unverified jwtClaims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return "", errJWT
	}
	account, userPart, ok := strings.Cut(unverified.Subject, ".")
	if !ok || account != accountPart(s.cfg.Account) || userPart == "" {
		return "", errJWT
	}
	var user string
	var pub crypto.PublicKey
	for u, k := range s.cfg.PublicKeys {
		if strings.ToUpper(u) == userPart {
			user, pub = u, k
		}
	}
	if pub == nil || (loginName != "" && !strings.EqualFold(loginName, user)) {
		return "", errJWT
	}
	var claims jwtClaims
	if err := tok.Claims(pub, &claims); err != nil {
		return "", errJWT
	}
	fp, err := PublicKeyFingerprint(pub)
	if err != nil {
		return "", errJWT
	}
	if claims.Subject != account+"."+userPart || claims.Issuer != claims.Subject+"."+fp {
		return "", errJWT
	}
	iat, exp := claimTime(claims.IAT), claimTime(claims.EXP)
	now := time.Now()
	const skew = 2 * time.Minute
	if !exp.After(now) || iat.After(now.Add(skew)) || exp.Sub(iat) > MaxJWTLifetime+skew {
		return "", errJWT
	}
	return user, nil
}

// claimTime reads a NumericDate in seconds, or in milliseconds as Node sends.
func claimTime(v float64) time.Time {
	if v > 100_000_000_000 { // milliseconds
		return time.UnixMilli(int64(v))
	}
	return time.Unix(int64(v), 0)
}

// loginParameters are the session parameters of a login reply. The drivers
// read a few of them (protocol notes §3.5); values the client set at login
// are echoed.
func (s *Server) loginParameters(sessionParams map[string]string) []map[string]any {
	return parameterList(loginParameterDefaults, sessionParams)
}

// queryParameters are the parameters a query reply carries. snowflake-sdk
// formats dates, times, timestamps and binary columns with them and fails on
// such columns when they are missing, so every reply names them.
func queryParameters(sessionParams map[string]string) []map[string]any {
	return parameterList(queryParameterDefaults, sessionParams)
}

// parameter is one default of a parameter list.
type parameter struct {
	name  string
	value any
}

var loginParameterDefaults = append([]parameter{
	{"CLIENT_PREFETCH_THREADS", 4},
	{"CLIENT_RESULT_CHUNK_SIZE", 160},
	{"CLIENT_SESSION_KEEP_ALIVE", false},
	{"CLIENT_SESSION_KEEP_ALIVE_HEARTBEAT_FREQUENCY", 3600},
	// High so array binds never take the stage path.
	{"CLIENT_STAGE_ARRAY_BINDING_THRESHOLD", 1000000000},
	{"QUERY_CONTEXT_CACHE_SIZE", 5},
	{"JS_TREAT_INTEGER_AS_BIGINT", false},
	{"JS_DRIVER_DISABLE_OCSP_FOR_NON_SF_ENDPOINTS", true},
	{"CLIENT_TIMESTAMP_TYPE_MAPPING", "TIMESTAMP_LTZ"},
}, queryParameterDefaults...)

var queryParameterDefaults = []parameter{
	{"TIMEZONE", "UTC"},
	{"TIMESTAMP_OUTPUT_FORMAT", "YYYY-MM-DD HH24:MI:SS.FF3 TZHTZM"},
	{"TIMESTAMP_NTZ_OUTPUT_FORMAT", "YYYY-MM-DD HH24:MI:SS.FF3"},
	{"TIMESTAMP_LTZ_OUTPUT_FORMAT", ""},
	{"TIMESTAMP_TZ_OUTPUT_FORMAT", ""},
	{"DATE_OUTPUT_FORMAT", "YYYY-MM-DD"},
	{"TIME_OUTPUT_FORMAT", "HH24:MI:SS"},
	{"BINARY_OUTPUT_FORMAT", "HEX"},
}

// parameterList renders defaults as a reply's parameter list, with the
// values the session set in their place.
func parameterList(defaults []parameter, sessionParams map[string]string) []map[string]any {
	out := make([]map[string]any, 0, len(defaults))
	for _, d := range defaults {
		v := d.value
		if sv, ok := sessionParams[d.name]; ok {
			v = sv
			if b, ok := v.(string); ok && (strings.EqualFold(b, "true") || strings.EqualFold(b, "false")) {
				v = strings.EqualFold(b, "true")
			}
		}
		out = append(out, map[string]any{"name": d.name, "value": v})
	}
	return out
}

// paramString renders a session parameter value as the engine stores it.
func paramString(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case nil:
		return ""
	case bool:
		if t {
			return "true"
		}
		return "false"
	case json.Number:
		return t.String()
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func nullIfEmpty(v string) any {
	if v == "" {
		return nil
	}
	return v
}
