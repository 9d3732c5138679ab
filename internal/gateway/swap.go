package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snowgate/snowgate/internal/audit"
	"github.com/snowgate/snowgate/internal/identity"
	"github.com/snowgate/snowgate/internal/session"
	"github.com/snowgate/snowgate/internal/snowflake"
	credential "github.com/snowgate/snowgate/internal/upstream"
)

// SwapAccount is what the credential swap needs to log in to one account.
type SwapAccount struct {
	// Credential is the gateway's own credential for the account.
	Credential *credential.Credential
	// Name is the Snowflake account name sent as ACCOUNT_NAME and used in
	// key-pair JWTs (ORGNAME-ACCOUNTNAME or the locator). Empty: the first
	// label of the account host.
	Name string
}

// SwapConfig configures a Swap.
type SwapConfig struct {
	// Authorizer verifies workload tokens, picks the rule and keeps the
	// admissions (binding and continuation). Required.
	Authorizer *identity.Authorizer
	// Accounts are the gateway's credentials by configured account name
	// (Call.Account). Required for every account a non-observe rule names.
	Accounts map[string]SwapAccount
	// Store keeps the sessions; nil: a store with the defaults.
	Store *session.Store
	// RenewBefore renews the upstream session token this long before the
	// expiry Snowflake announced; default one minute.
	RenewBefore time.Duration
	// Audit receives login.success, login.failure and token.refused
	// events; nil discards them.
	Audit *audit.Logger
	// Logger receives operator messages and a line per audited event
	// (message "audit"); default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// SessionFile, when set, is where SaveSessions writes the sessions
	// and where a gateway token this gateway does not know is looked up
	// again (a predecessor that handed over may have saved it since).
	SessionFile string
}

// Swap is the Credentials of the identity stage (issue: workload identity
// and credential swap). At login it verifies the workload token the driver
// presents (WORKLOAD_IDENTITY with provider OIDC, or OAUTH), matches an
// identity rule, rewrites the login for the gateway's own credential and the
// rule's role, warehouse, database, schema and query tag, and hands the
// driver opaque gateway tokens bound to its cgroup and uid. On every later
// request it maps the gateway token back to the real one and drops any
// Authorization it did not issue. It renews the upstream session itself and
// logs in again upstream when Snowflake ends it, so the driver never sees
// 390112, 390114, 390104 or 390111. Logout ends both sessions.
type Swap struct {
	cfg   SwapConfig
	log   *slog.Logger
	store *session.Store

	auditLog atomic.Pointer[audit.Logger]

	reloadMu   sync.Mutex
	reloadSeen time.Time // mtime of the session file last loaded

	mu      sync.Mutex
	pending map[*Call]*pendingCall
}

// SetAudit makes the swap emit its audit events to l (the daemon's audit
// trail, which a later stage may create); nil discards them.
func (s *Swap) SetAudit(l *audit.Logger) { s.auditLog.Store(l) }

// sessionState is what the gateway keeps with each session (session.Data).
type sessionState struct {
	principal *Principal
	// relogin is the upstream login as sent, without its secret; nil for
	// observe-only sessions (the gateway holds no credential for them).
	relogin *reloginTemplate
}

// reloginTemplate is enough to log in upstream again for a session whose
// Snowflake session ended: the login request with its secrets removed, and
// whom to log in as.
type reloginTemplate struct {
	uri        string // path and query of the login request
	body       []byte // the rewritten login body without TOKEN/PASSWORD
	accountKey string // the configured account name (Call.Account)
	account    SwapAccount
	host       string
	user       string
}

// pendingCall carries what Outbound learned to the Inbound of the same call.
type pendingCall struct {
	// stop releases the clean-up tied to the call's context.
	stop func() bool
	// login
	principal *Principal
	relogin   *reloginTemplate
	decision  *identity.Decision
	// session requests
	sess *session.Session
	gen  uint64
	// resend: the upstream request as sent (body plain JSON).
	method string
	url    *url.URL
	header http.Header
	body   []byte
}

// NewSwap returns the credential swap for cfg.
func NewSwap(cfg SwapConfig) (*Swap, error) {
	if cfg.Authorizer == nil || cfg.Authorizer.Verifier == nil || cfg.Authorizer.Rules == nil || cfg.Authorizer.Admissions == nil {
		return nil, errors.New("credential swap: an authorizer with verifier, rules and admissions is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RenewBefore <= 0 {
		cfg.RenewBefore = time.Minute
	}
	if cfg.Store == nil {
		cfg.Store = session.NewStore(session.Options{Now: cfg.Now})
	}
	s := &Swap{cfg: cfg, log: cfg.Logger, store: cfg.Store, pending: map[*Call]*pendingCall{}}
	s.auditLog.Store(cfg.Audit)
	return s, nil
}

// Store returns the session store (for status and tests).
func (s *Swap) Store() *session.Store { return s.store }

// SessionPrincipal implements SessionPrincipals.
func (s *Swap) SessionPrincipal(id string) *Principal {
	if id == "" {
		return nil
	}
	sess := s.store.Get(id)
	if sess == nil || sess.Ended() {
		return nil
	}
	st, ok := sess.Data.(*sessionState)
	if !ok {
		return nil
	}
	return st.principal
}

// Outbound implements Credentials.
func (s *Swap) Outbound(ctx context.Context, c *Call, out *http.Request, body []byte) ([]byte, error) {
	presented := out.Header.Get("Authorization")
	// Only a real token mapped from a gateway token goes upstream.
	out.Header.Del("Authorization")
	switch {
	case c.Kind == snowflake.KindLogin:
		return s.login(ctx, c, out, body)
	case c.Kind.NeedsSession():
		return s.mapSession(ctx, c, out, body, presented)
	case c.Kind == snowflake.KindAuthenticatorRequest:
		s.audit("login_refused", c, slog.String("reason", "authenticator_refused"), slog.String("authenticator", "SSO"))
		return nil, loginRefusal("browser and Okta single sign-on are not accepted: " + acceptedLogins)
	}
	return body, nil
}

// acceptedLogins tells a refused driver how to log in.
const acceptedLogins = "log in with authenticator=WORKLOAD_IDENTITY, workloadIdentityProvider=OIDC and your CI job's OIDC token (or authenticator=OAUTH with that token)"

// loginRefusal is a refused login as Snowflake words one: HTTP 200,
// success false, 390100, SQL state 08004. The drivers surface the message.
func loginRefusal(msg string) *snowflake.Error {
	return &snowflake.Error{Code: snowflake.CodeBadCredentials, SQLState: snowflake.SQLStateLoginFailed, Message: "snowgate: " + msg}
}

// sessionRefusal refuses a request whose gateway token is not valid here.
func sessionRefusal(msg string) *snowflake.Error {
	return &snowflake.Error{Code: snowflake.CodeBadRequest, SQLState: snowflake.SQLStateConnection, Message: "snowgate: " + msg, HTTPStatus: http.StatusUnauthorized}
}

// upstreamRefusal is a failure of the gateway's own exchange with Snowflake.
func upstreamRefusal(msg string) *snowflake.Error {
	return &snowflake.Error{Code: snowflake.CodeBadRequest, SQLState: snowflake.SQLStateConnection, Message: "snowgate: " + msg, HTTPStatus: http.StatusBadGateway}
}

func binding(c *Call) identity.Binding {
	return identity.Binding{CgroupID: c.Workload.CgroupID, UID: c.Workload.UID}
}

// login verifies the workload token of a login request and rewrites the
// request for the gateway's credential and the rule's grant.
func (s *Swap) login(ctx context.Context, c *Call, out *http.Request, body []byte) ([]byte, error) {
	lr, err := snowflake.ParseLoginRequest(body)
	if err != nil {
		s.audit("login_refused", c, slog.String("reason", "malformed_login"))
		return nil, loginRefusal("the login request could not be read")
	}
	auth := strings.ToUpper(lr.Authenticator)
	switch {
	case auth == "WORKLOAD_IDENTITY" && strings.EqualFold(lr.Provider, "OIDC"):
	case auth == "OAUTH":
	default:
		shown := auth
		switch {
		case auth == "" && lr.Data.Has("PASSWORD"), auth == "SNOWFLAKE", auth == "USERNAME_PASSWORD_MFA":
			shown = "password"
		case auth == "WORKLOAD_IDENTITY":
			shown = "WORKLOAD_IDENTITY with provider " + strings.ToUpper(lr.Provider)
		case auth == "":
			shown = "this"
		}
		s.audit("login_refused", c, slog.String("reason", "authenticator_refused"), slog.String("authenticator", shown))
		return nil, loginRefusal(shown + " logins are not accepted: " + acceptedLogins)
	}
	if lr.Token == "" {
		s.audit("login_refused", c, slog.String("reason", "no_token"), slog.String("authenticator", auth))
		return nil, loginRefusal("the login carries no token: " + acceptedLogins)
	}
	dec, err := s.cfg.Authorizer.Authorize(ctx, lr.Token, binding(c))
	if err != nil {
		reason := identity.ReasonOf(err)
		if reason == "" {
			reason = "error"
		}
		attrs := []any{slog.String("reason", string(reason)), slog.String("authenticator", auth), slog.String("detail", err.Error())}
		var ie *identity.Error
		if errors.As(err, &ie) && ie.Issuer != "" {
			attrs = append(attrs, slog.String("issuer", ie.Issuer))
		}
		s.audit("login_refused", c, attrs...)
		return nil, loginRefusal("workload token refused: " + string(reason))
	}
	rule := dec.Rule
	if rule.Account != c.Account {
		s.audit("login_refused", c, slog.String("reason", "account_mismatch"), slog.String("rule", rule.Name), slog.String("rule_account", rule.Account))
		return nil, loginRefusal("workload token refused: no_matching_rule for this account")
	}
	id := dec.Identity
	p := &Principal{
		Issuer:        id.Issuer,
		IssuerName:    id.IssuerName,
		Subject:       id.Subject,
		TokenID:       id.ID,
		Authenticator: auth,
		Continuation:  dec.Continuation,
		CgroupID:      c.Workload.CgroupID,
		UID:           c.Workload.UID,
		Claims:        auditClaims(id.Claims),
		Rule:          rule.Name,
		Account:       c.Account,
		ObserveOnly:   rule.ObserveOnly,
		ClientApp:     lr.ClientAppID,
		ClientVersion: strings.Trim(string(lr.ClientAppVersion), `"`),
	}
	pc := &pendingCall{principal: p, decision: dec}
	if rule.ObserveOnly {
		// The client's own login goes upstream; Snowflake authenticates
		// the token itself. The context is what the client asked for.
		q := out.URL.Query()
		p.User, p.Role, p.Warehouse, p.Database, p.Schema = lr.LoginName, q.Get("roleName"), q.Get("warehouse"), q.Get("databaseName"), q.Get("schemaName")
		s.stash(ctx, c, pc)
		return body, nil
	}
	acct, ok := s.cfg.Accounts[c.Account]
	if !ok || acct.Credential == nil {
		s.log.Error("no gateway credential for the account of a rule", "account", c.Account, "rule", rule.Name)
		s.audit("login_refused", c, slog.String("reason", "no_credential"), slog.String("rule", rule.Name))
		return nil, loginRefusal("the gateway holds no credential for this account")
	}
	if acct.Name == "" {
		acct.Name, _, _ = strings.Cut(c.Host, ".")
	}
	g := rule.Grant
	user := g.User
	if user == "" {
		user = acct.Credential.User
	}
	p.User, p.Role, p.Warehouse, p.Database, p.Schema = user, g.Role, g.Warehouse, g.Database, g.Schema
	p.QueryTag = g.ExpandQueryTag(id.Claims)

	// The client's choice of context is replaced by the rule's.
	q := out.URL.Query()
	for _, kv := range [][2]string{{"roleName", g.Role}, {"warehouse", g.Warehouse}, {"databaseName", g.Database}, {"schemaName", g.Schema}} {
		if kv[1] == "" {
			q.Del(kv[0])
		} else {
			q.Set(kv[0], kv[1])
		}
	}
	out.URL.RawQuery = q.Encode()
	lr.ClearSecrets()
	lr.Data.Delete("LOGIN_NAME")
	if err := grantSessionParameters(lr, p.QueryTag); err != nil {
		s.audit("login_refused", c, slog.String("reason", "malformed_login"))
		return nil, loginRefusal("the login request's session parameters could not be read")
	}
	if err := lr.Data.Set("ACCOUNT_NAME", acct.Name); err != nil {
		return nil, fmt.Errorf("rewrite login: %w", err)
	}
	pc.relogin = &reloginTemplate{uri: out.URL.RequestURI(), body: lr.Body.Bytes(), accountKey: c.Account, account: acct, host: c.Host, user: user}
	send, err := pc.relogin.withCredential(s.cfg.Now())
	if err != nil {
		s.log.Error("gateway credential unusable", "account", c.Account, "err", err)
		return nil, loginRefusal("the gateway's credential for this account is unusable")
	}
	s.stash(ctx, c, pc)
	return send, nil
}

// withCredential returns the login body with the gateway's credential set:
// a key-pair JWT is minted for this very attempt.
func (t *reloginTemplate) withCredential(now time.Time) ([]byte, error) {
	lr, err := snowflake.ParseLoginRequest(t.body)
	if err != nil {
		return nil, fmt.Errorf("login template: %w", err)
	}
	login, err := t.account.Credential.Login(t.account.Name, t.host, t.user, now)
	if err != nil {
		return nil, fmt.Errorf("gateway credential: %w", err)
	}
	set := [][2]string{{"LOGIN_NAME", login.LoginName}, {"AUTHENTICATOR", login.Authenticator}}
	if !login.Token.IsZero() {
		set = append(set, [2]string{"TOKEN", login.Token.Reveal()})
	}
	if !login.Password.IsZero() {
		set = append(set, [2]string{"PASSWORD", login.Password.Reveal()})
	}
	for _, kv := range set {
		if err := lr.Data.Set(kv[0], kv[1]); err != nil {
			return nil, fmt.Errorf("login template: %w", err)
		}
	}
	return lr.Body.Bytes(), nil
}

// grantSessionParameters drops the session parameters by which a client
// could pick another context at login and sets the rule's query tag.
func grantSessionParameters(lr *snowflake.LoginRequest, queryTag string) error {
	sp, err := lr.SessionParameters()
	if err != nil {
		return err
	}
	if sp == nil {
		if queryTag == "" {
			return nil
		}
		sp = snowflake.NewObject()
	}
	for _, k := range sp.Keys() {
		switch strings.ToUpper(k) {
		case "ROLE", "WAREHOUSE", "DATABASE", "SCHEMA", "SECONDARY_ROLES", "QUERY_TAG":
			sp.Delete(k)
		}
	}
	if queryTag != "" {
		if err := sp.Set("QUERY_TAG", queryTag); err != nil {
			return err
		}
	}
	return lr.Data.Set("SESSION_PARAMETERS", sp)
}

// auditClaims are the claims kept in the Principal: every scalar or list
// claim except personal data and nonces.
func auditClaims(claims map[string]any) map[string]any {
	out := make(map[string]any, len(claims))
	for k, v := range claims {
		switch strings.ToLower(k) {
		case "email", "user_email", "nonce", "at_hash", "c_hash":
			continue
		}
		if _, obj := v.(map[string]any); obj {
			continue
		}
		out[k] = v
	}
	return out
}

// stash keeps what Inbound needs until the call's context ends, so calls
// that never come back (the upstream failed, the policy answered) leave
// nothing behind.
func (s *Swap) stash(ctx context.Context, c *Call, p *pendingCall) {
	s.mu.Lock()
	if old := s.pending[c]; old != nil && old.stop != nil {
		old.stop()
	}
	s.pending[c] = p
	s.mu.Unlock()
	p.stop = context.AfterFunc(ctx, func() {
		s.mu.Lock()
		if s.pending[c] == p {
			delete(s.pending, c)
		}
		s.mu.Unlock()
	})
}

func (s *Swap) take(c *Call) *pendingCall {
	s.mu.Lock()
	p := s.pending[c]
	delete(s.pending, c)
	s.mu.Unlock()
	if p != nil && p.stop != nil {
		p.stop()
	}
	return p
}

// parseAuthorization returns the token of `Snowflake Token="…"`.
func parseAuthorization(v string) string {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Snowflake") {
		return ""
	}
	rest = strings.TrimSpace(rest)
	tok, ok := strings.CutPrefix(rest, "Token=")
	if !ok {
		return ""
	}
	return strings.Trim(tok, `"`)
}

// authorization formats a real token for the Authorization header.
func authorization(tok string) string { return `Snowflake Token="` + tok + `"` }

// mapSession maps the gateway token of a request that carries one to the
// real token, after checking it is presented from the session's workload.
func (s *Swap) mapSession(ctx context.Context, c *Call, out *http.Request, body []byte, presented string) ([]byte, error) {
	kind := session.KindSession
	if c.Kind == snowflake.KindTokenRequest {
		kind = session.KindMaster
	}
	tok := parseAuthorization(presented)
	b := session.Binding(binding(c))
	sess, err := s.store.Lookup(tok, kind, b)
	if errors.Is(err, session.ErrUnknown) && session.IsHandle(tok) && s.cfg.SessionFile != "" {
		sess, err = s.awaitSaved(ctx, tok, kind, b)
	}
	if err != nil {
		switch {
		case errors.Is(err, session.ErrBinding):
			s.audit("token_replay", c, slog.String("reason", "binding_mismatch"), slog.String("detail", err.Error()))
			return nil, sessionRefusal("this session token belongs to another workload")
		case presented == "":
			return nil, sessionRefusal("no session token: log in through the gateway first")
		case !session.IsHandle(tok):
			s.audit("token_refused", c, slog.String("reason", "not_issued_by_gateway"))
			return nil, sessionRefusal("this token was not issued by the gateway: log in through the gateway")
		}
		s.audit("token_refused", c, slog.String("reason", "unknown_session"))
		return nil, sessionRefusal("the session is unknown to the gateway or has ended: log in again")
	}
	st := sess.Data.(*sessionState)
	c.Principal = st.principal
	tokens, gen := sess.Tokens()
	if kind == session.KindSession && c.Kind != snowflake.KindLogout && st.relogin != nil && s.expiring(tokens) {
		// Renew ahead of Snowflake's announced expiry, so the request
		// does not meet 390112 at all.
		if t, err := s.renewUpstream(ctx, c, sess, gen, out.URL); err == nil {
			tokens = t
		} else {
			s.log.Warn("upstream renewal before expiry failed; trying the request anyway", "session", sess.ID, "err", err)
		}
		_, gen = sess.Tokens()
	}
	pc := &pendingCall{sess: sess, gen: gen}
	if c.Kind == snowflake.KindTokenRequest {
		rr, err := snowflake.ParseRenewRequest(body)
		if err != nil {
			return nil, refusal(http.StatusBadRequest, "token request: "+err.Error())
		}
		if old, err := s.store.Lookup(rr.OldSessionToken, session.KindSession, b); err != nil || old != sess {
			s.audit("token_refused", c, slog.String("reason", "renewal_token_mismatch"))
			return nil, sessionRefusal("the token request does not name this session's token")
		}
		if err := rr.SetOldSessionToken(tokens.Session.Reveal()); err != nil {
			return nil, refusal(http.StatusBadRequest, "token request: "+err.Error())
		}
		body = rr.Body.Bytes()
		out.Header.Set("Authorization", authorization(tokens.Master.Reveal()))
	} else {
		out.Header.Set("Authorization", authorization(tokens.Session.Reveal()))
	}
	pc.method, pc.url, pc.header, pc.body = out.Method, out.URL, out.Header.Clone(), body
	s.stash(ctx, c, pc)
	return body, nil
}

// expiring reports whether the session token is within RenewBefore of the
// expiry Snowflake announced.
func (s *Swap) expiring(t session.Tokens) bool {
	return !t.SessionExpiry.IsZero() && !s.cfg.Now().Add(s.cfg.RenewBefore).Before(t.SessionExpiry)
}

// Inbound implements Credentials.
func (s *Swap) Inbound(ctx context.Context, c *Call, status int, body []byte) ([]byte, error) {
	pc := s.take(c)
	if pc == nil {
		return body, nil
	}
	if c.Kind == snowflake.KindLogin {
		return s.loginReply(c, pc, status, body)
	}
	if pc.sess == nil {
		return body, nil
	}
	code := expiryCode(status, body)
	switch c.Kind {
	case snowflake.KindLogout:
		s.store.End(pc.sess)
		s.audit("logout", c, slog.String("session", pc.sess.ID))
		if code != "" {
			// The upstream session was gone already: for the driver the
			// logout succeeded.
			return []byte(`{"data":null,"code":null,"message":null,"success":true}`), nil
		}
		return body, nil
	case snowflake.KindTokenRequest:
		return s.renewReply(ctx, c, pc, status, body, code)
	}
	if code == "" {
		return body, nil
	}
	return s.recover(ctx, c, pc, code)
}

// expiryCode returns the session-expiry code of a reply (390112, 390114,
// 390104 or 390111), or "".
func expiryCode(status int, body []byte) string {
	if status != http.StatusOK && status != http.StatusUnauthorized {
		return ""
	}
	env, err := snowflake.ParseEnvelope(body)
	if err != nil || env.Success {
		return ""
	}
	switch env.Code {
	case snowflake.CodeSessionExpired, snowflake.CodeMasterExpired, snowflake.CodeSessionInvalid, snowflake.CodeSessionGone:
		return env.Code
	}
	return ""
}

// loginReply swaps the tokens of a successful upstream login for gateway
// tokens bound to the workload.
func (s *Swap) loginReply(c *Call, pc *pendingCall, status int, body []byte) ([]byte, error) {
	if status != http.StatusOK {
		s.log.Warn("upstream login failed", "status", status, "account", c.Account, "rule", pc.principal.Rule)
		return nil, upstreamRefusal(fmt.Sprintf("the gateway's login to Snowflake failed (HTTP %d)", status))
	}
	lr, err := snowflake.ParseLoginResponse(body)
	if err != nil {
		return nil, upstreamRefusal("the login reply could not be read")
	}
	if !lr.Success {
		s.log.Warn("upstream login refused the gateway's credential", "code", lr.Code, "message", lr.Message, "account", c.Account, "rule", pc.principal.Rule)
		s.audit("login_refused", c, slog.String("reason", "upstream_refused"), slog.String("code", lr.Code), slog.String("rule", pc.principal.Rule))
		return nil, loginRefusal(fmt.Sprintf("Snowflake refused the gateway's login (%s): %s", lr.Code, lr.Message))
	}
	if lr.Token == "" {
		return nil, upstreamRefusal("the login reply carries no session token")
	}
	now := s.cfg.Now()
	tokens := replyTokens(lr, now)
	p := pc.principal
	p.LoggedIn = now
	st := &sessionState{principal: p, relogin: pc.relogin}
	sess, sh, mh, err := s.store.Create(session.Binding(binding(c)), tokens, st)
	if err != nil {
		s.log.Error("session store refused a session", "err", err)
		return nil, upstreamRefusal("the gateway cannot open more sessions")
	}
	p.SessionID = sess.ID
	if err := lr.ReplaceTokens(sh, mh); err != nil {
		s.store.End(sess)
		return nil, upstreamRefusal("the login reply could not be rewritten")
	}
	for _, k := range []string{"idToken", "mfaToken"} {
		if lr.Data.Has(k) && !lr.Data.IsNull(k) {
			_ = lr.Data.Set(k, nil)
		}
	}
	c.Principal = p
	s.audit("login", c, slog.String("session", sess.ID), slog.Bool("continuation", p.Continuation), slog.Bool("observe_only", p.ObserveOnly),
		slog.String("user", p.User), slog.String("role", p.Role), slog.String("warehouse", p.Warehouse))
	return lr.Body.Bytes(), nil
}

// replyTokens reads the real tokens of a login or renewal reply.
func replyTokens(lr *snowflake.LoginResponse, now time.Time) session.Tokens {
	t := session.Tokens{Session: credential.NewSecret(lr.Token), Master: credential.NewSecret(lr.MasterToken), SnowflakeID: lr.SessionID.String()}
	if v, err := lr.Validity.Int64(); err == nil && v > 0 {
		t.SessionExpiry = now.Add(time.Duration(v) * time.Second)
	}
	if v, err := lr.MasterValidity.Int64(); err == nil && v > 0 {
		t.MasterExpiry = now.Add(time.Duration(v) * time.Second)
	}
	return t
}

// renewReply handles the reply to a renewal the driver asked for: the new
// real tokens are kept, the driver gets new gateway tokens.
func (s *Swap) renewReply(ctx context.Context, c *Call, pc *pendingCall, status int, body []byte, code string) ([]byte, error) {
	sess := pc.sess
	var tokens session.Tokens
	if code != "" || status != http.StatusOK {
		// The master token is gone too: log in again upstream.
		t, err := s.relogin(ctx, c, sess, pc.gen, pc.url)
		if err != nil {
			return nil, upstreamRefusal("the session could not be renewed: " + err.Error())
		}
		tokens = t
	} else {
		lr, err := snowflake.ParseLoginResponse(body)
		if err != nil || !lr.Success || lr.Token == "" {
			return body, nil
		}
		tokens = replyTokens(lr, s.cfg.Now())
		sess.SetTokens(tokens)
	}
	sh, mh, err := s.store.Rehandle(sess)
	if err != nil {
		return nil, sessionRefusal("the session ended")
	}
	reply := map[string]any{
		"sessionToken": sh, "masterToken": mh, "sessionId": json.Number(tokens.SnowflakeID),
		"validityInSecondsST": secondsUntil(tokens.SessionExpiry, s.cfg.Now()), "validityInSecondsMT": secondsUntil(tokens.MasterExpiry, s.cfg.Now()),
	}
	if tokens.SnowflakeID == "" {
		delete(reply, "sessionId")
	}
	out, err := json.Marshal(snowflake.OK(reply))
	if err != nil {
		return nil, fmt.Errorf("renewal reply: %w", err)
	}
	return out, nil
}

func secondsUntil(t, now time.Time) int64 {
	if t.IsZero() {
		return 3600
	}
	return max(int64(t.Sub(now)/time.Second), 1)
}

// recover handles a request Snowflake answered with a session-expiry code:
// renew (390112) or log in again upstream (390114, 390104, 390111, or a
// failed renewal), then send the request again with the new token and
// return that reply. The driver never sees the code.
func (s *Swap) recover(ctx context.Context, c *Call, pc *pendingCall, code string) ([]byte, error) {
	sess := pc.sess
	st := sess.Data.(*sessionState)
	if st.relogin == nil {
		// Observe-only: the gateway holds no credential for this session.
		s.store.End(sess)
		return nil, sessionRefusal("the Snowflake session ended (" + code + "): log in again")
	}
	var tokens session.Tokens
	var err error
	if code == snowflake.CodeSessionExpired {
		tokens, err = s.renewUpstream(ctx, c, sess, pc.gen, pc.url)
	}
	if code != snowflake.CodeSessionExpired || err != nil {
		_, gen := sess.Tokens()
		tokens, err = s.relogin(ctx, c, sess, gen, pc.url)
	}
	if err != nil {
		s.log.Warn("upstream session could not be recovered", "session", sess.ID, "code", code, "err", err)
		return nil, upstreamRefusal("the Snowflake session could not be renewed")
	}
	h := handlerFrom(ctx)
	if h == nil {
		return nil, upstreamRefusal("the Snowflake session was renewed: retry")
	}
	pc.header.Set("Authorization", authorization(tokens.Session.Reveal()))
	status, plain, err := s.send(ctx, h, c, pc.method, pc.url, pc.header, pc.body)
	if err != nil {
		return nil, upstreamRefusal("upstream unavailable")
	}
	if status != http.StatusOK || expiryCode(status, plain) != "" {
		return nil, upstreamRefusal(fmt.Sprintf("the request failed after the session was renewed (HTTP %d)", status))
	}
	if c.Kind == snowflake.KindQueryRequest || c.Kind == snowflake.KindQueryResult {
		if plain, err = h.rewriteChunks(plain, c.Principal); err != nil {
			return nil, upstreamRefusal("result could not be rewritten")
		}
	}
	return plain, nil
}

// handlerFrom finds the connection's handler from a request context: the
// hooks run inside its ServeHTTP, whose server is in the context. It is how
// the swap reaches the account's upstream transport and the chunk table to
// send a request again after renewing.
func handlerFrom(ctx context.Context) *handler {
	srv, _ := ctx.Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		return nil
	}
	h, _ := srv.Handler.(*handler)
	return h
}

// send makes one upstream API exchange for the swap itself (renewal,
// re-login, a request sent again) and returns the decoded reply.
func (s *Swap) send(ctx context.Context, h *handler, c *Call, method string, u *url.URL, header http.Header, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return 0, nil, fmt.Errorf("request: %w", err)
	}
	for k, v := range header {
		req.Header[k] = append([]string(nil), v...)
	}
	req.Header.Del("Content-Encoding")
	req.Header.Del("Content-Length")
	req.Header.Set("Accept-Encoding", "gzip")
	if len(body) > 0 || method == http.MethodPost {
		snowflake.SetRequestBody(req, body, "")
	}
	up := h.g.upstreamFor(h.host)
	resp, err := h.roundTrip(up, &Call{Kind: c.Kind, Account: c.Account, Host: c.Host, Workload: c.Workload, Principal: c.Principal}, req)
	if err != nil {
		return 0, nil, fmt.Errorf("upstream: %w", redactURLError(err))
	}
	defer resp.Body.Close()
	got, err := snowflake.ReadBody(resp.Body, resp.Header.Get("Content-Encoding"), h.g.cfg.ReplyLimits)
	if err != nil {
		return 0, nil, fmt.Errorf("upstream reply: %w", err)
	}
	return resp.StatusCode, got.Plain, nil
}

// renewUpstream renews the session's upstream token with its master token,
// once for all concurrent callers that saw generation gen.
func (s *Swap) renewUpstream(ctx context.Context, c *Call, sess *session.Session, gen uint64, base *url.URL) (session.Tokens, error) {
	h := handlerFrom(ctx)
	if h == nil {
		return session.Tokens{}, errors.New("no upstream to renew with")
	}
	return sess.Renew(gen, func(old session.Tokens) (session.Tokens, error) {
		u := &url.URL{Scheme: base.Scheme, Host: base.Host, Path: "/session/token-request"}
		q := url.Values{}
		q.Set("requestId", newUUID())
		q.Set("request_guid", newUUID())
		u.RawQuery = q.Encode()
		hdr := http.Header{}
		hdr.Set("Content-Type", "application/json")
		hdr.Set("Accept", "application/json")
		hdr.Set("Authorization", authorization(old.Master.Reveal()))
		body, _ := json.Marshal(map[string]string{"oldSessionToken": old.Session.Reveal(), "requestType": "RENEW"})
		status, plain, err := s.send(ctx, h, &Call{Kind: snowflake.KindTokenRequest, Account: c.Account, Host: c.Host, Workload: c.Workload, Principal: c.Principal}, http.MethodPost, u, hdr, body)
		if err != nil {
			return session.Tokens{}, err
		}
		lr, err := snowflake.ParseLoginResponse(plain)
		if err != nil || status != http.StatusOK {
			return session.Tokens{}, fmt.Errorf("renewal: HTTP %d", status)
		}
		if !lr.Success || lr.Token == "" {
			return session.Tokens{}, fmt.Errorf("renewal refused: %s", lr.Code)
		}
		t := replyTokens(lr, s.cfg.Now())
		if t.Master.IsZero() {
			t.Master, t.MasterExpiry = old.Master, old.MasterExpiry
		}
		s.audit("renewed", c, slog.String("session", sess.ID))
		return t, nil
	})
}

// relogin opens a new upstream session for sess with the gateway's
// credential (a fresh key-pair JWT) and the same login as at first, when
// Snowflake ended the old one. The workload's gateway tokens stay valid.
func (s *Swap) relogin(ctx context.Context, c *Call, sess *session.Session, gen uint64, base *url.URL) (session.Tokens, error) {
	h := handlerFrom(ctx)
	st := sess.Data.(*sessionState)
	if h == nil || st.relogin == nil {
		return session.Tokens{}, errors.New("no upstream to log in with")
	}
	return sess.Renew(gen, func(session.Tokens) (session.Tokens, error) {
		u, err := url.Parse(base.Scheme + "://" + base.Host + st.relogin.uri)
		if err != nil {
			return session.Tokens{}, fmt.Errorf("login URL: %w", err)
		}
		q := u.Query()
		q.Set("requestId", newUUID())
		q.Set("request_guid", newUUID())
		u.RawQuery = q.Encode()
		body, err := st.relogin.withCredential(s.cfg.Now())
		if err != nil {
			return session.Tokens{}, err
		}
		hdr := http.Header{}
		hdr.Set("Content-Type", "application/json")
		hdr.Set("Accept", "application/json")
		status, plain, err := s.send(ctx, h, &Call{Kind: snowflake.KindLogin, Account: c.Account, Host: c.Host, Workload: c.Workload, Principal: c.Principal}, http.MethodPost, u, hdr, body)
		if err != nil {
			return session.Tokens{}, err
		}
		lr, err := snowflake.ParseLoginResponse(plain)
		if err != nil || status != http.StatusOK {
			return session.Tokens{}, fmt.Errorf("login: HTTP %d", status)
		}
		if !lr.Success || lr.Token == "" {
			return session.Tokens{}, fmt.Errorf("login refused: %s", lr.Code)
		}
		s.audit("relogin", c, slog.String("session", sess.ID))
		return replyTokens(lr, s.cfg.Now()), nil
	})
}

// newUUID returns a random (version 4) UUID, as the drivers send in
// requestId and request_guid.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// audit records one event of the identity stage for the workload of c and
// (when known) its identity: a log line (message "audit") for the operator
// and, for logins and refused tokens, an audit event (login.success,
// login.failure, token.refused). Neither ever carries a token.
func (s *Swap) audit(event string, c *Call, attrs ...any) {
	base := []any{
		slog.String("event", event),
		slog.String("account", c.Account),
		slog.Uint64("cgroup", c.Workload.CgroupID),
		slog.Uint64("uid", uint64(c.Workload.UID)),
		slog.Uint64("pid", uint64(c.Workload.PID)),
	}
	if c.Workload.Comm != "" {
		base = append(base, slog.String("comm", c.Workload.Comm))
	}
	p := c.Principal
	if p != nil {
		base = append(base, slog.String("issuer", p.IssuerName), slog.String("subject", p.Subject), slog.String("rule", p.Rule))
	}
	s.log.Info("audit", append(base, attrs...)...)

	var typ audit.Type
	outcome := "refused"
	switch event {
	case "login":
		typ, outcome = audit.LoginSuccess, "ok"
	case "login_refused":
		typ = audit.LoginFailure
	case "token_replay", "token_refused":
		typ = TokenRefused
	default:
		return
	}
	e := audit.Event{
		Type: typ, Outcome: outcome, Account: c.Account, Host: c.Host, RequestID: c.RequestID,
		Workload: &audit.Workload{CgroupID: c.Workload.CgroupID, PID: c.Workload.PID, UID: c.Workload.UID, Comm: c.Workload.Comm},
		Detail:   map[string]any{"event": event},
	}
	if p != nil {
		e.SessionID, e.Issuer, e.Subject, e.Claims, e.Rule, e.User, e.Role = p.SessionID, p.Issuer, p.Subject, p.Claims, p.Rule, p.User, p.Role
		if p.Continuation {
			e.Detail["continuation"] = true
		}
	}
	for _, a := range attrs {
		at, ok := a.(slog.Attr)
		if !ok {
			continue
		}
		switch at.Key {
		case "reason":
			e.Reason = at.Value.String()
		case "issuer":
			e.Detail["issuer_name"] = at.Value.Any()
		case "rule":
			e.Rule = at.Value.String()
		default:
			e.Detail[at.Key] = at.Value.Any()
		}
	}
	s.auditLog.Load().Emit(e)
}

// TokenRefused is the audit event of a request whose gateway token was
// refused: not issued by the gateway, of an ended session, or presented
// from another workload than the one that logged in (detail.event
// token_replay).
const TokenRefused audit.Type = "token.refused"

// savedState is a session's sessionState as SaveSessions writes it.
type savedState struct {
	Principal *Principal    `json:"principal"`
	Relogin   *savedRelogin `json:"relogin,omitempty"`
}

// savedRelogin is a reloginTemplate without its credential, which is
// looked up again by account name when loaded.
type savedRelogin struct {
	URI     string `json:"uri"`
	Body    []byte `json:"body"`
	Account string `json:"account"`
	Host    string `json:"host"`
	User    string `json:"user"`
}

// SaveSessions writes the live sessions to file (mode 0600): the real
// tokens, the bindings, the principals and what a re-login needs, never a
// gateway token or a credential. A successor gateway loads them, so agents'
// sessions survive a restart or a hand-over.
func (s *Swap) SaveSessions(file string) error {
	return s.store.SaveFile(file, func(d any) (json.RawMessage, error) {
		st, ok := d.(*sessionState)
		if !ok {
			return nil, fmt.Errorf("session data is %T", d)
		}
		out := savedState{Principal: st.principal}
		if t := st.relogin; t != nil {
			out.Relogin = &savedRelogin{URI: t.uri, Body: t.body, Account: t.accountKey, Host: t.host, User: t.user}
		}
		return json.Marshal(out)
	})
}

// LoadSessions adds the sessions saved in file (see SaveSessions) and
// returns how many. Sessions of accounts the gateway no longer has a
// credential for are skipped.
func (s *Swap) LoadSessions(file string) (int, error) {
	return s.store.LoadFile(file, func(m json.RawMessage) (any, error) {
		var in savedState
		dec := json.NewDecoder(bytes.NewReader(m))
		dec.UseNumber() // claims keep their numbers as verified
		if err := dec.Decode(&in); err != nil {
			return nil, err
		}
		if in.Principal == nil {
			return nil, errors.New("no principal")
		}
		st := &sessionState{principal: in.Principal}
		if r := in.Relogin; r != nil {
			acct, ok := s.cfg.Accounts[r.Account]
			if !ok || acct.Credential == nil {
				return nil, fmt.Errorf("no credential for account %q", r.Account)
			}
			if acct.Name == "" {
				acct.Name, _, _ = strings.Cut(r.Host, ".")
			}
			st.relogin = &reloginTemplate{uri: r.URI, body: r.Body, accountKey: r.Account, account: acct, host: r.Host, user: r.User}
		}
		return st, nil
	})
}

// handoverWait is how long a gateway token this gateway does not know waits
// for the session file to change: during a hand-over the predecessor saves
// its sessions only once it has closed its connections, and the drivers
// reconnect to the successor at once.
const handoverWait = 3 * time.Second

// awaitSaved looks tok up again each time SessionFile changes, for up to
// handoverWait.
func (s *Swap) awaitSaved(ctx context.Context, tok string, kind session.Kind, b session.Binding) (*session.Session, error) {
	deadline := time.NewTimer(handoverWait)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.reloadSessions() {
			sess, err := s.store.Lookup(tok, kind, b)
			if !errors.Is(err, session.ErrUnknown) {
				return sess, err
			}
		}
		select {
		case <-ctx.Done():
			return nil, session.ErrUnknown
		case <-deadline.C:
			return s.store.Lookup(tok, kind, b)
		case <-tick.C:
		}
	}
}

// reloadSessions loads SessionFile again if it changed since the last
// load, and reports whether it added sessions.
func (s *Swap) reloadSessions() bool {
	if s.cfg.SessionFile == "" {
		return false
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	fi, err := os.Stat(s.cfg.SessionFile)
	if err != nil || !fi.ModTime().After(s.reloadSeen) {
		return false
	}
	s.reloadSeen = fi.ModTime()
	n, err := s.LoadSessions(s.cfg.SessionFile)
	if err != nil {
		s.log.Warn("session file unreadable", "file", s.cfg.SessionFile, "err", err)
		return false
	}
	if n > 0 {
		s.log.Info("sessions loaded", "file", s.cfg.SessionFile, "sessions", n)
	}
	return n > 0
}
