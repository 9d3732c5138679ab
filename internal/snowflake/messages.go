package snowflake

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// The messages below are views over an Object: typed fields for what the
// gateway reads, and the Object itself for rewriting, so every member the
// gateway does not know travels on unchanged. Fields are read with exact,
// case-sensitive names, as Snowflake reads them; case-ambiguous members are
// refused by ParseObject.

// LoginSecretFields are the members of a login request's data object that
// carry client-side credentials. A gateway that logs in upstream with its own
// credential clears them (protocol notes §10.5).
var LoginSecretFields = []string{
	"PASSWORD", "PASSCODE", "EXT_AUTHN_DUO_METHOD", "RAW_SAML_RESPONSE",
	"PROOF_KEY", "BROWSER_MODE_REDIRECT_PORT", "PROVIDER", "TOKEN",
}

// LoginRequest is the body of POST /session/v1/login-request.
type LoginRequest struct {
	// Body is the whole request; Data is its "data" member.
	Body, Data *Object

	AccountName   string
	LoginName     string
	Authenticator string // empty for gosnowflake's password login
	Provider      string // WORKLOAD_IDENTITY: OIDC, AWS, GCP, AZURE
	Token         string // JWT, OAuth, PAT or workload token
	ClientAppID   string
	// ClientAppVersion stays raw: some connectors send a number.
	ClientAppVersion json.RawMessage
}

// ParseLoginRequest parses a login request body.
func ParseLoginRequest(body []byte) (*LoginRequest, error) {
	o, err := ParseObject(body)
	if err != nil {
		return nil, fmt.Errorf("login request: %w", err)
	}
	data, err := o.Object("data")
	if err != nil {
		return nil, fmt.Errorf("login request: %w", err)
	}
	lr := &LoginRequest{Body: o, Data: data}
	for _, f := range []struct {
		key string
		dst *string
	}{
		{"ACCOUNT_NAME", &lr.AccountName},
		{"LOGIN_NAME", &lr.LoginName},
		{"AUTHENTICATOR", &lr.Authenticator},
		{"PROVIDER", &lr.Provider},
		{"TOKEN", &lr.Token},
		{"CLIENT_APP_ID", &lr.ClientAppID},
	} {
		if *f.dst, _, err = data.String(f.key); err != nil {
			return nil, fmt.Errorf("login request data: %w", err)
		}
	}
	lr.ClientAppVersion, _ = data.Raw("CLIENT_APP_VERSION")
	return lr, nil
}

// SessionParameters returns data.SESSION_PARAMETERS, or nil when absent.
func (lr *LoginRequest) SessionParameters() (*Object, error) {
	if lr.Data.IsNull("SESSION_PARAMETERS") {
		return nil, nil
	}
	return lr.Data.Object("SESSION_PARAMETERS")
}

// ClearSecrets deletes every member of LoginSecretFields from data.
func (lr *LoginRequest) ClearSecrets() {
	for _, k := range LoginSecretFields {
		lr.Data.Delete(k)
	}
}

// SetKeyPairLogin makes the request a key-pair login of user to account with
// jwt: TOKEN, AUTHENTICATOR, ACCOUNT_NAME and LOGIN_NAME are set, the client's
// credentials cleared, every other member kept.
func (lr *LoginRequest) SetKeyPairLogin(account, user, jwt string) error {
	lr.ClearSecrets()
	for _, kv := range [][2]string{
		{"ACCOUNT_NAME", account}, {"LOGIN_NAME", user},
		{"AUTHENTICATOR", "SNOWFLAKE_JWT"}, {"TOKEN", jwt},
	} {
		if err := lr.Data.Set(kv[0], kv[1]); err != nil {
			return fmt.Errorf("login request: %w", err)
		}
	}
	lr.AccountName, lr.LoginName, lr.Authenticator, lr.Token, lr.Provider = account, user, "SNOWFLAKE_JWT", jwt, ""
	return nil
}

// LoginQueryParams are the login URL's query parameters that pick the
// session's context. A gateway overrides them from policy.
var LoginQueryParams = []string{"databaseName", "schemaName", "warehouse", "roleName"}

// Envelope is the common head of every reply: success, code, message.
type Envelope struct {
	Body    *Object
	Success bool
	// Code is "" for a JSON null code.
	Code    string
	Message string
}

// ParseEnvelope parses a reply body and reads its envelope members.
func ParseEnvelope(body []byte) (*Envelope, error) {
	o, err := ParseObject(body)
	if err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	e := &Envelope{Body: o}
	if _, err := o.Decode("success", &e.Success); err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	if e.Code, _, err = o.String("code"); err != nil {
		// Some services send numeric codes; keep the digits.
		n, _, nerr := o.Number("code")
		if nerr != nil {
			return nil, fmt.Errorf("reply: %w", err)
		}
		e.Code = n.String()
	}
	if e.Message, _, err = o.String("message"); err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	return e, nil
}

// Data returns the reply's "data" object, or nil when it is absent or null.
func (e *Envelope) Data() (*Object, error) {
	if e.Body.IsNull("data") {
		return nil, nil
	}
	return e.Body.Object("data")
}

// LoginResponse is the reply to a login request (or a renewal: Node reads
// sessionToken and validityInSecondsST there).
type LoginResponse struct {
	*Envelope
	// Data is nil for a failed login without data.
	Data *Object

	Token       string // "token" (login) or "sessionToken" (renewal)
	MasterToken string
	// SessionID keeps its digits: it can exceed 2^53.
	SessionID json.Number
	// Validity in seconds of the session and master tokens.
	Validity, MasterValidity json.Number
}

// ParseLoginResponse parses the reply to a login or token request.
func ParseLoginResponse(body []byte) (*LoginResponse, error) {
	env, err := ParseEnvelope(body)
	if err != nil {
		return nil, fmt.Errorf("login reply: %w", err)
	}
	lr := &LoginResponse{Envelope: env}
	if lr.Data, err = env.Data(); err != nil || lr.Data == nil {
		if err != nil {
			return nil, fmt.Errorf("login reply: %w", err)
		}
		return lr, nil
	}
	d := lr.Data
	str := func(keys ...string) (string, error) {
		for _, k := range keys {
			s, ok, err := d.String(k)
			if err != nil || ok {
				return s, err
			}
		}
		return "", nil
	}
	num := func(keys ...string) (json.Number, error) {
		for _, k := range keys {
			n, ok, err := d.Number(k)
			if err != nil || ok {
				return n, err
			}
		}
		return "", nil
	}
	if lr.Token, err = str("token", "sessionToken"); err != nil {
		return nil, fmt.Errorf("login reply: %w", err)
	}
	if lr.MasterToken, err = str("masterToken"); err != nil {
		return nil, fmt.Errorf("login reply: %w", err)
	}
	if lr.SessionID, err = num("sessionId"); err != nil {
		return nil, fmt.Errorf("login reply: %w", err)
	}
	if lr.Validity, err = num("validityInSeconds", "validityInSecondsST"); err != nil {
		return nil, fmt.Errorf("login reply: %w", err)
	}
	if lr.MasterValidity, err = num("masterValidityInSeconds", "validityInSecondsMT"); err != nil {
		return nil, fmt.Errorf("login reply: %w", err)
	}
	return lr, nil
}

// ReplaceTokens replaces the session and master tokens wherever the reply
// carries them ("token" or "sessionToken", and "masterToken"), leaving every
// other member as it was. It is an error when the reply carries no session
// token: a gateway must not forward a login it could not rewrite.
func (lr *LoginResponse) ReplaceTokens(session, master string) error {
	if lr.Data == nil {
		return errors.New("login reply has no data to rewrite")
	}
	replaced := false
	for _, k := range []string{"token", "sessionToken"} {
		if lr.Data.Has(k) {
			if err := lr.Data.Set(k, session); err != nil {
				return fmt.Errorf("login reply: %w", err)
			}
			replaced = true
		}
	}
	if !replaced {
		return errors.New("login reply carries no session token")
	}
	if lr.Data.Has("masterToken") {
		if err := lr.Data.Set("masterToken", master); err != nil {
			return fmt.Errorf("login reply: %w", err)
		}
	}
	lr.Token, lr.MasterToken = session, master
	return nil
}

// RenewRequest is the body of POST /session/token-request.
type RenewRequest struct {
	Body            *Object
	OldSessionToken string
	RequestType     string
}

// ParseRenewRequest parses a token-request body.
func ParseRenewRequest(body []byte) (*RenewRequest, error) {
	o, err := ParseObject(body)
	if err != nil {
		return nil, fmt.Errorf("token request: %w", err)
	}
	r := &RenewRequest{Body: o}
	if r.OldSessionToken, _, err = o.String("oldSessionToken"); err != nil {
		return nil, fmt.Errorf("token request: %w", err)
	}
	if r.RequestType, _, err = o.String("requestType"); err != nil {
		return nil, fmt.Errorf("token request: %w", err)
	}
	return r, nil
}

// SetOldSessionToken replaces oldSessionToken.
func (r *RenewRequest) SetOldSessionToken(tok string) error {
	r.OldSessionToken = tok
	return r.Body.Set("oldSessionToken", tok)
}

// QueryRequest is the body of POST /queries/v1/query-request.
type QueryRequest struct {
	Body         *Object
	SQLText      string
	AsyncExec    bool
	DescribeOnly bool
	// SequenceID is absent ("") in Node's requests.
	SequenceID json.Number
	// BindStage is set for array binds uploaded to a stage.
	BindStage string
	// Parameters is nil when absent; Bindings is raw (nil when absent).
	Parameters *Object
	Bindings   json.RawMessage
}

// ParseQueryRequest parses a query-request body.
func ParseQueryRequest(body []byte) (*QueryRequest, error) {
	o, err := ParseObject(body)
	if err != nil {
		return nil, fmt.Errorf("query request: %w", err)
	}
	q := &QueryRequest{Body: o}
	if q.SQLText, _, err = o.String("sqlText"); err != nil {
		return nil, fmt.Errorf("query request: %w", err)
	}
	for _, f := range []struct {
		key string
		dst *bool
	}{{"asyncExec", &q.AsyncExec}, {"describeOnly", &q.DescribeOnly}} {
		if !o.IsNull(f.key) {
			if _, err := o.Decode(f.key, f.dst); err != nil {
				return nil, fmt.Errorf("query request: %w", err)
			}
		}
	}
	if q.SequenceID, _, err = o.Number("sequenceId"); err != nil {
		return nil, fmt.Errorf("query request: %w", err)
	}
	if q.BindStage, _, err = o.String("bindStage"); err != nil {
		return nil, fmt.Errorf("query request: %w", err)
	}
	if !o.IsNull("parameters") {
		if q.Parameters, err = o.Object("parameters"); err != nil {
			return nil, fmt.Errorf("query request: %w", err)
		}
	}
	if !o.IsNull("bindings") {
		q.Bindings, _ = o.Raw("bindings")
	}
	return q, nil
}

// AbortRequest is the body of POST /queries/v1/abort-request.
type AbortRequest struct {
	Body      *Object
	RequestID string
}

// ParseAbortRequest parses an abort-request body.
func ParseAbortRequest(body []byte) (*AbortRequest, error) {
	o, err := ParseObject(body)
	if err != nil {
		return nil, fmt.Errorf("abort request: %w", err)
	}
	a := &AbortRequest{Body: o}
	if a.RequestID, _, err = o.String("requestId"); err != nil {
		return nil, fmt.Errorf("abort request: %w", err)
	}
	return a, nil
}

// QueryResponse is the reply to a query request, a result poll or a
// by-id result fetch.
type QueryResponse struct {
	*Envelope
	// Data is nil when the reply has none.
	Data            *Object
	QueryID         string
	GetResultURL    string
	SQLState        string
	StatementTypeID json.Number
	// QueryResultFormat is "json" or "arrow".
	QueryResultFormat string
}

// ParseQueryResponse parses a query or result reply.
func ParseQueryResponse(body []byte) (*QueryResponse, error) {
	env, err := ParseEnvelope(body)
	if err != nil {
		return nil, fmt.Errorf("query reply: %w", err)
	}
	q := &QueryResponse{Envelope: env}
	if q.Data, err = env.Data(); err != nil {
		return nil, fmt.Errorf("query reply: %w", err)
	}
	if q.Data == nil {
		return q, nil
	}
	for _, f := range []struct {
		key string
		dst *string
	}{
		{"queryId", &q.QueryID}, {"getResultUrl", &q.GetResultURL},
		{"sqlState", &q.SQLState}, {"queryResultFormat", &q.QueryResultFormat},
	} {
		if *f.dst, _, err = q.Data.String(f.key); err != nil {
			return nil, fmt.Errorf("query reply data: %w", err)
		}
	}
	if q.StatementTypeID, _, err = q.Data.Number("statementTypeId"); err != nil {
		return nil, fmt.Errorf("query reply data: %w", err)
	}
	return q, nil
}

// InProgress reports whether the reply is one of the "still running" codes.
func (q *QueryResponse) InProgress() bool {
	return q.Code == CodeQueryInProgress || q.Code == CodeAsyncInProgress
}

// chunkArray is data.chunks of the reply, nil when it has none.
func (q *QueryResponse) chunkArray() (*Array, error) {
	if q.Data == nil || q.Data.IsNull("chunks") {
		return nil, nil
	}
	return q.Data.Array("chunks")
}

// ChunkCount is the number of data.chunks of the reply (0 when it has none
// or they cannot be read).
func (q *QueryResponse) ChunkCount() int {
	chunks, err := q.chunkArray()
	if err != nil || chunks == nil {
		return 0
	}
	return chunks.Len()
}

// RewriteChunkURLs calls rewrite for every data.chunks[].url of the reply and
// stores what it returns in its place. It returns the number of URLs
// rewritten; a reply without chunks gives 0. An error from rewrite stops the
// walk, and the reply must then not be forwarded.
func (q *QueryResponse) RewriteChunkURLs(rewrite func(index int, original string) (string, error)) (int, error) {
	chunks, err := q.chunkArray()
	if err != nil {
		return 0, fmt.Errorf("query reply data: %w", err)
	}
	if chunks == nil {
		return 0, nil
	}
	n := 0
	for i := 0; i < chunks.Len(); i++ {
		c, err := chunks.Object(i)
		if err != nil {
			return n, fmt.Errorf("query reply chunks: %w", err)
		}
		orig, ok, err := c.String("url")
		if err != nil {
			return n, fmt.Errorf("query reply chunk %d: %w", i, err)
		}
		if !ok {
			return n, fmt.Errorf("query reply chunk %d has no url", i)
		}
		repl, err := rewrite(i, orig)
		if err != nil {
			return n, fmt.Errorf("rewrite chunk %d url: %w", i, err)
		}
		if err := c.Set("url", repl); err != nil {
			return n, fmt.Errorf("query reply chunk %d: %w", i, err)
		}
		n++
	}
	return n, nil
}

// ChunkHeaders returns data.chunkHeaders (the SSE-C headers the drivers send
// with each chunk GET), or nil when absent.
func (q *QueryResponse) ChunkHeaders() (map[string]string, error) {
	if q.Data == nil || q.Data.IsNull("chunkHeaders") {
		return nil, nil
	}
	var h map[string]string
	if _, err := q.Data.Decode("chunkHeaders", &h); err != nil {
		return nil, fmt.Errorf("query reply data: %w", err)
	}
	return h, nil
}

// ChunkURL returns the URL under which the gateway serves chunk id to a
// driver connected to host ("name" or "name:port"): https, the account host,
// ChunkPathPrefix and the id. The drivers fetch it through the same
// transport, so it gets the same TLS and OCSP treatment as the API.
func ChunkURL(host, id string) string {
	u := url.URL{Scheme: "https", Host: host, Path: ChunkPathPrefix + id}
	return u.String()
}

// IsGatewayChunkURL reports whether s already points at a gateway chunk path,
// so a reply is never rewritten twice.
func IsGatewayChunkURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && strings.HasPrefix(u.Path, ChunkPathPrefix)
}
