package gateway_test

// End-to-end proofs of the identity stage: the real gosnowflake driver in
// the agents' cgroup logs in with a CI workload token through the real
// redirect; the gateway verifies it, logs in to the emulator with its own
// key pair and hands back gateway tokens bound to the cgroup.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/audit"
	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/identity"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
	"github.com/snowgate/snowgate/internal/upstream"
)

const (
	idClientEnv  = "SNOWGATE_IDENTITY_TEST_CLIENT"
	svcUser      = "SVC_AGENT"
	ruleRole     = "AGENT_RO"
	ruleWH       = "AGENT_WH"
	ownerID      = "1001"
	repoID       = "456789"
	testAudience = "snowgate"
)

// identityFixture is the data path with the credential swap in place: a
// local OIDC issuer, a GitHub-shaped rule and the gateway's key pair, which
// is the only credential the emulator knows.
type identityFixture struct {
	*fixture
	issuer *oidctest.Issuer
	swap   *gateway.Swap
	logs   *auditLog
	// events holds the audit trail's JSON lines.
	events *auditLog
	// oauthToken is the token of identityOptions.ObserveOnly.
	oauthToken string
}

// auditLog keeps the swap's log lines.
type auditLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *auditLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, string(b))
	l.mu.Unlock()
	return len(b), nil
}

// find returns the audit lines containing every one of subs.
func (l *auditLog) find(subs ...string) []string {
	return l.grep(append([]string{"msg=audit"}, subs...)...)
}

// grep returns the lines containing every one of subs.
func (l *auditLog) grep(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for _, line := range l.lines {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// identityOptions vary the identity fixture.
type identityOptions struct {
	// ContinuationMax is the issuer's continuation window (nil: default).
	ContinuationMax *time.Duration
	// ObserveOnly makes the rule observe-only; the fixture then mints a
	// token the emulator also accepts as an OAuth access token of testUser
	// (Snowflake checking the client's own token), in f.oauthToken.
	ObserveOnly bool
	// RenewBefore is the swap's renewal margin (zero: its default).
	RenewBefore time.Duration
	// Now is the identity stage's clock (nil: time.Now); the gateway's
	// upstream logins keep the real time, which the emulator checks.
	Now func() time.Time
}

func newIdentityFixture(t *testing.T, o identityOptions) *identityFixture {
	t.Helper()
	testenv.RequireRoot(t)
	is := oidctest.Start(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := upstream.NewKeyPairCredential(svcUser, key, 0)
	if err != nil {
		t.Fatal(err)
	}
	issuers := []identity.IssuerConfig{{
		Name:           "github",
		Issuer:         is.URL,
		Audiences:      []string{testAudience},
		Keys:           identity.KeySource{Source: identity.SourceDiscovery},
		RequiredClaims: []string{"repository_owner_id"},
		Tenant:         map[string]string{"repository_owner_id": ownerID},
		Continuation:   identity.Continuation{Max: o.ContinuationMax},
	}}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	v, err := identity.NewVerifier(issuers, identity.Options{HTTPClient: is.Client, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	rules, _, err := identity.CompileRules([]identity.RuleConfig{{
		Name:        "app-main",
		Issuer:      "github",
		Claims:      map[string][]string{"repository_id": {repoID}, "ref": {"refs/heads/main"}},
		Account:     testAccount,
		Grant:       identity.Grant{User: svcUser, Role: ruleRole, Warehouse: ruleWH, QueryTag: "snowgate:{{repository}}:{{run_id}}"},
		ObserveOnly: o.ObserveOnly,
	}}, issuers)
	if err != nil {
		t.Fatal(err)
	}
	logs, events := &auditLog{}, &auditLog{}
	trail, err := audit.New(audit.Options{Writers: []io.Writer{events}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trail.Close() })
	swap, err := gateway.NewSwap(gateway.SwapConfig{
		Audit:       trail,
		RenewBefore: o.RenewBefore,
		Authorizer:  &identity.Authorizer{Verifier: v, Rules: rules, Admissions: identity.NewAdmissions(0), Now: now},
		Accounts:    map[string]gateway.SwapAccount{testAccount: {Credential: cred}},
		Logger:      slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var oauthToken string
	var oauth map[string]string
	if o.ObserveOnly {
		oauthToken = is.Sign(t, oidctest.GitHub(testAudience, "acme", ownerID, "app", repoID))
		oauth = map[string]string{oauthToken: testUser}
	}
	f := newFixture(t, fixtureOptions{
		Credentials: swap,
		PublicKeys:  map[string]crypto.PublicKey{svcUser: &key.PublicKey},
		OAuthTokens: oauth,
	})
	return &identityFixture{fixture: f, issuer: is, swap: swap, logs: logs, events: events, oauthToken: oauthToken}
}

// token mints a GitHub-shaped token the rule admits.
func (f *identityFixture) token(t *testing.T, edit func(*oidctest.Token)) string {
	t.Helper()
	tok := oidctest.GitHub(testAudience, "acme", ownerID, "app", repoID)
	if edit != nil {
		edit(&tok)
	}
	return f.issuer.Sign(t, tok)
}

// wifDSN is what an unchanged agent configures: no user, no secret of
// Snowflake, just its CI token; it asks for a role and warehouse of its own,
// which the gateway replaces with the rule's.
func wifDSN(token string) string {
	v := url.Values{}
	v.Set("account", testAccount)
	v.Set("authenticator", "WORKLOAD_IDENTITY")
	v.Set("workloadIdentityProvider", "OIDC")
	v.Set("token", token)
	v.Set("role", "ACCOUNTADMIN")
	v.Set("warehouse", "HUGE_WH")
	v.Set("loginTimeout", "120")
	return fmt.Sprintf("%s:443/?%s", testHost, v.Encode())
}

// TestWorkloadIdentityLogin: gosnowflake logs in with WORKLOAD_IDENTITY/OIDC
// and lands in the rule's user, role and warehouse; the emulator knows only
// the gateway's key; no Snowflake token ever reaches the agent; a gateway
// token copied to another cgroup is refused there; logout ends the session.
func TestWorkloadIdentityLogin(t *testing.T) {
	f := newIdentityFixture(t, identityOptions{})
	cgA, cgB := f.cg.Child(t, "job-a"), f.cg.Child(t, "job-b")
	a := f.startIdentityAgent(t, cgA)
	r := a.do(t, idCmd{Op: "open", DSN: wifDSN(f.token(t, nil))})
	if r.Err != "" {
		t.Fatalf("login: %s", r.Err)
	}
	if !strings.HasPrefix(r.SessionToken, "snowgate-s1.") {
		t.Fatalf("the driver got session token %q, want a gateway token", r.SessionToken)
	}
	r = a.do(t, idCmd{Op: "query", SQL: "SELECT CURRENT_USER(), CURRENT_ROLE(), CURRENT_WAREHOUSE()"})
	if r.Err != "" || len(r.Rows) != 1 {
		t.Fatalf("query: %v %s", r.Rows, r.Err)
	}
	if got, want := r.Rows[0], []string{svcUser, ruleRole, ruleWH}; !equalFold(got, want) {
		t.Errorf("CURRENT_USER, ROLE, WAREHOUSE = %v, want %v", got, want)
	}

	// The Principal every later exchange carries.
	var p *gateway.Principal
	for _, x := range f.sink.snapshot() {
		if x.Kind == snowflake.KindQueryRequest.String() && x.Principal != nil {
			p = x.Principal
		}
	}
	if p == nil {
		t.Fatal("no query exchange carries a Principal")
	}
	if p.Rule != "app-main" || p.User != svcUser || p.Role != ruleRole || p.Issuer != f.issuer.URL || p.IssuerName != "github" ||
		p.Subject != "repo:acme/app:ref:refs/heads/main" || p.CgroupID != cgA.ID || p.SessionID == "" || p.Authenticator != "WORKLOAD_IDENTITY" ||
		p.ClientApp != "Go" || p.LoggedIn.IsZero() || p.Claims["repository_id"] != repoID || p.QueryTag != "snowgate:acme/app:9876543210" {
		t.Errorf("principal %+v", p)
	}

	// The same gateway token from another cgroup (a job next door) is
	// refused, and audited; from its own cgroup it works.
	b := f.startIdentityAgent(t, cgB)
	rb := b.do(t, idCmd{Op: "replay", Auth: r0(t, a).SessionToken})
	if rb.Status == http.StatusOK || !strings.Contains(rb.Body, "another workload") {
		t.Errorf("replay from another cgroup: HTTP %d %s", rb.Status, rb.Body)
	}
	if len(f.logs.find("event=token_replay")) == 0 || len(f.events.grep(`"type":"token.refused"`, `"event":"token_replay"`)) != 1 {
		t.Error("no audit line or event for the replay")
	}
	if n := len(f.events.grep(`"type":"login.success"`, `"rule":"app-main"`, `"user":"SVC_AGENT"`, `"role":"AGENT_RO"`)); n != 1 {
		t.Errorf("%d login.success audit events, want 1", n)
	}
	ra := a.do(t, idCmd{Op: "replay", Auth: r0(t, a).SessionToken})
	if ra.Status != http.StatusOK || !strings.Contains(ra.Body, `"success":true`) {
		t.Errorf("the same token from its own cgroup: HTTP %d %s", ra.Status, ra.Body)
	}
	// A token the gateway did not issue is not forwarded.
	rf := a.do(t, idCmd{Op: "replay", Auth: "ver:1-emu-st:forged"})
	if rf.Status == http.StatusOK || !strings.Contains(rf.Body, "not issued by the gateway") {
		t.Errorf("foreign token: HTTP %d %s", rf.Status, rf.Body)
	}

	// Nothing the agent received carries a Snowflake token or the
	// gateway's JWT.
	bodies := a.do(t, idCmd{Op: "responses"}).Bodies
	if len(bodies) < 3 {
		t.Fatalf("the agent recorded %d responses", len(bodies))
	}
	for _, body := range bodies {
		for _, secret := range []string{"emu-st:", "emu-mt:", "SHA256:"} {
			if strings.Contains(body, secret) {
				t.Errorf("a response to the agent contains %q: %.300s", secret, body)
			}
		}
	}
	for _, x := range f.sink.snapshot() {
		for _, secret := range []string{"emu-st:", "emu-mt:"} {
			if bytes.Contains(x.ResponseBody, []byte(secret)) {
				t.Errorf("%s reply to the agent contains %q", x.Kind, secret)
			}
		}
	}

	// Logout ends both sessions: the gateway token stops working.
	if r := a.do(t, idCmd{Op: "close"}); r.Err != "" {
		t.Fatalf("close: %s", r.Err)
	}
	if n := f.swap.Store().Len(); n != 0 {
		t.Errorf("%d gateway sessions after logout", n)
	}
	if f.inst.Server.Sessions() != 0 {
		t.Errorf("%d emulator sessions after logout", f.inst.Server.Sessions())
	}
}

// r0 returns the first login the agent recorded.
func r0(t *testing.T, a *idAgent) idReply {
	t.Helper()
	if a.login.SessionToken == "" {
		t.Fatal("the agent has not logged in")
	}
	return a.login
}

func equalFold(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.EqualFold(got[i], want[i]) {
			return false
		}
	}
	return true
}

// TestUpstreamRenewalHidden: when Snowflake expires the session (390112) or
// the master token too (390114), the gateway renews or logs in again
// upstream itself; the driver's queries keep working and it never sees
// either code.
func TestUpstreamRenewalHidden(t *testing.T) {
	f := newIdentityFixture(t, identityOptions{})
	a := f.startIdentityAgent(t, f.cg)
	if r := a.do(t, idCmd{Op: "open", DSN: wifDSN(f.token(t, nil))}); r.Err != "" {
		t.Fatalf("login: %s", r.Err)
	}
	steps := []struct {
		name   string
		expire func()
	}{
		{"session expired (390112)", f.inst.Server.Faults().ExpireSessions},
		{"master expired too (390114)", func() { f.inst.Server.Faults().ExpireSessions(); f.inst.Server.Faults().ExpireMasters() }},
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.expire()
			r := a.do(t, idCmd{Op: "query", SQL: fmt.Sprintf("SELECT %d, CURRENT_ROLE()", i)})
			if r.Err != "" || len(r.Rows) != 1 || r.Rows[0][0] != fmt.Sprint(i) || !strings.EqualFold(r.Rows[0][1], ruleRole) {
				t.Fatalf("query after expiry: %v %s", r.Rows, r.Err)
			}
		})
	}
	for _, body := range a.do(t, idCmd{Op: "responses"}).Bodies {
		for _, code := range []string{snowflake.CodeSessionExpired, snowflake.CodeMasterExpired, snowflake.CodeSessionInvalid, snowflake.CodeSessionGone} {
			if strings.Contains(body, `"code":"`+code+`"`) {
				t.Errorf("the agent saw %s: %.300s", code, body)
			}
		}
	}
	if len(f.logs.find("event=renewed")) == 0 || len(f.logs.find("event=relogin")) == 0 {
		t.Error("no audit lines for the renewal and the re-login")
	}
}

// snapshot returns the exchanges seen so far.
func (s *memorySink) snapshot() []gateway.Exchange {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]gateway.Exchange(nil), s.xs...)
}

// idCmd is one command to the identity client process.
type idCmd struct {
	Op   string `json:"op"`
	DSN  string `json:"dsn,omitempty"`
	SQL  string `json:"sql,omitempty"`
	Auth string `json:"auth,omitempty"`
}

// idReply is its answer.
type idReply struct {
	Err  string     `json:"err,omitempty"`
	Code int        `json:"code,omitempty"`
	Rows [][]string `json:"rows,omitempty"`
	// SessionToken is the token the driver got from its last login.
	SessionToken string `json:"session_token,omitempty"`
	// Bodies are all response bodies the client received ("responses").
	Bodies []string `json:"bodies,omitempty"`
	Status int      `json:"status,omitempty"`
	Body   string   `json:"body,omitempty"`
}

// idAgent is a running identity client process.
type idAgent struct {
	p     *testenv.Piped
	login idReply
}

func (f *identityFixture) startIdentityAgent(t *testing.T, cg *testenv.Cgroup) *idAgent {
	t.Helper()
	cmd := testenv.Command(t, testenv.Proc{Cgroup: cg, Netns: f.ns, Root: true}, os.Args[0], "-test.run=^TestIdentityClientProcess$", "-test.count=1")
	cmd.Env = testenv.DriverEnv(t, f.caFile, idClientEnv+"=1")
	return &idAgent{p: startPipedProc(t, cmd)}
}

// do sends one command and waits (generously) for the reply; a successful
// login is kept as the agent's.
func (a *idAgent) do(t *testing.T, c idCmd) idReply {
	t.Helper()
	var r idReply
	a.p.Call(t, c, &r, 4*time.Minute)
	if c.Op == "open" && r.Err == "" {
		a.login = r
	}
	return r
}

// TestIdentityClientProcess is not a test: it is the client process of the
// identity end-to-end tests, the real gosnowflake driver with a transport
// that keeps every response it receives. It skips otherwise.
func TestIdentityClientProcess(t *testing.T) {
	if os.Getenv(idClientEnv) != "1" {
		t.Skip("helper process for the identity end-to-end tests")
	}
	c := &idClient{rec: &recordingTransport{base: &http.Transport{Proxy: nil, ForceAttemptHTTP2: false}}}
	err := testenv.ServePiped(os.Stdin, os.Stdout, func(cmd idCmd, err error) idReply {
		if err != nil {
			return idReply{Err: err.Error()}
		}
		return c.run(cmd)
	})
	if err != nil {
		os.Exit(3)
	}
	c.close()
	os.Exit(0)
}

type idClient struct {
	rec  *recordingTransport
	db   *sql.DB
	conn *sql.Conn
}

func (c *idClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.db.Close()
		c.conn, c.db = nil, nil
	}
}

// idErr is errReply's error and Snowflake error code as an idReply.
func idErr(err error) idReply {
	r := errReply(err)
	return idReply{Err: r.Err, Code: r.Code}
}

func (c *idClient) run(cmd idCmd) idReply {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	switch cmd.Op {
	case "open":
		cfg, err := gosnowflake.ParseDSN(cmd.DSN)
		if err != nil {
			return idErr(err)
		}
		cfg.Transporter = c.rec
		db := sql.OpenDB(gosnowflake.NewConnector(gosnowflake.SnowflakeDriver{}, *cfg))
		conn, err := db.Conn(ctx)
		if err == nil {
			err = conn.PingContext(ctx)
		}
		if err != nil {
			db.Close()
			return idErr(err)
		}
		c.close()
		c.db, c.conn = db, conn
		return idReply{SessionToken: c.rec.lastSessionToken()}
	case "query":
		rows, err := c.conn.QueryContext(ctx, cmd.SQL)
		if err != nil {
			return idErr(err)
		}
		defer rows.Close()
		var r idReply
		cols, _ := rows.Columns()
		for rows.Next() {
			cells := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range cells {
				ptrs[i] = &cells[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return idErr(err)
			}
			row := make([]string, len(cols))
			for i, cell := range cells {
				row[i] = cell.String
			}
			r.Rows = append(r.Rows, row)
		}
		if err := rows.Err(); err != nil {
			return idErr(err)
		}
		return r
	case "replay":
		return replay(ctx, cmd.Auth)
	case "responses":
		return idReply{Bodies: c.rec.all()}
	case "close":
		c.close()
		return idReply{}
	}
	return idReply{Err: "unknown op " + cmd.Op}
}

// replay sends one query request with the given token, as a process that
// copied it would.
func replay(ctx context.Context, token string) idReply {
	tr := &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{ServerName: testHost}}
	defer tr.CloseIdleConnections()
	var id [16]byte
	_, _ = rand.Read(id[:])
	body := `{"sqlText":"SELECT 1","asyncExec":false,"sequenceId":1,"querySubmissionTime":1}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+testHost+"/queries/v1/query-request?requestId="+hex.EncodeToString(id[:]), strings.NewReader(body))
	if err != nil {
		return idErr(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/snowflake")
	req.Header.Set("Authorization", `Snowflake Token="`+token+`"`)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return idErr(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return idReply{Status: resp.StatusCode, Body: string(b)}
}

// recordingTransport keeps the body of every response, decompressed.
type recordingTransport struct {
	base   http.RoundTripper
	mu     sync.Mutex
	bodies []string
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	plain := b
	if len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b {
		if zr, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
			if p, err := io.ReadAll(zr); err == nil {
				plain = p
			}
		}
	}
	rt.mu.Lock()
	rt.bodies = append(rt.bodies, string(plain))
	rt.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

func (rt *recordingTransport) all() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return append([]string(nil), rt.bodies...)
}

// lastSessionToken returns data.token of the last login reply received.
func (rt *recordingTransport) lastSessionToken() string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for i := len(rt.bodies) - 1; i >= 0; i-- {
		var v struct {
			Data struct {
				Token       string `json:"token"`
				MasterToken string `json:"masterToken"`
			} `json:"data"`
		}
		if json.Unmarshal([]byte(rt.bodies[i]), &v) == nil && v.Data.Token != "" && v.Data.MasterToken != "" {
			return v.Data.Token
		}
	}
	return ""
}

// TestWorkloadIdentityRefusals: every token the gateway must refuse gets a
// Snowflake-shaped login error the driver surfaces (390100, naming the
// reason) and an audit line; none reaches Snowflake.
func TestWorkloadIdentityRefusals(t *testing.T) {
	f := newIdentityFixture(t, identityOptions{})
	a := f.startIdentityAgent(t, f.cg)
	now := time.Now()
	valid := f.token(t, nil)
	tests := []struct {
		name   string
		dsn    string
		reason string
	}{
		{"expired", wifDSN(f.token(t, func(tk *oidctest.Token) { tk.Now = now.Add(-20 * time.Minute) })), "expired"},
		{"not yet valid", wifDSN(f.token(t, func(tk *oidctest.Token) { tk.NotBefore = now.Add(10 * time.Minute) })), "not_yet_valid"},
		{"wrong audience", wifDSN(f.token(t, func(tk *oidctest.Token) { tk.Audience = []string{"snowflakecomputing.com"} })), "wrong_audience"},
		{"wrong issuer", wifDSN(f.token(t, func(tk *oidctest.Token) { tk.Issuer = "https://token.actions.githubusercontent.com" })), "unknown_issuer"},
		{"unknown key", wifDSN(f.token(t, func(tk *oidctest.Token) { tk.KeyID = "rotated-away" })), "unknown_key"},
		{"alg none", wifDSN(craftToken(t, map[string]any{"alg": "none", "typ": "JWT"}, f.issuer.Claims(oidctest.GitHub(testAudience, "acme", ownerID, "app", repoID)), nil)), "alg_none"},
		{"HS256 signed with the public key", wifDSN(hs256WithPublicKey(t, f.issuer)), "alg_symmetric"},
		{"tampered payload", wifDSN(tamper(t, valid, "repository_id", "999999")), "bad_signature"},
		{"oversized", wifDSN(f.token(t, func(tk *oidctest.Token) { tk.Claims["pad"] = strings.Repeat("x", identity.MaxTokenSize) })), "oversized"},
		{"no matching rule", wifDSN(f.token(t, func(tk *oidctest.Token) { tk.Claims["ref"] = "refs/heads/feature" })), "no_matching_rule"},
		{"other tenant", wifDSN(f.token(t, func(tk *oidctest.Token) { tk.Claims["repository_owner_id"] = "666" })), "tenant_mismatch"},
		{"password login", dsn(), "authenticator_refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.logs.find("event=login_refused", "reason="+tc.reason))
			r := a.do(t, idCmd{Op: "open", DSN: tc.dsn})
			if r.Err == "" {
				t.Fatal("login succeeded")
			}
			if r.Code != 390100 || !strings.Contains(r.Err, "snowgate:") {
				t.Errorf("driver error %d %q, want 390100 from snowgate", r.Code, r.Err)
			}
			if tc.reason != "authenticator_refused" && !strings.Contains(r.Err, tc.reason) {
				t.Errorf("driver error %q does not name %s", r.Err, tc.reason)
			}
			if tc.reason == "authenticator_refused" && !strings.Contains(r.Err, "WORKLOAD_IDENTITY") {
				t.Errorf("driver error %q does not say which authenticator to use", r.Err)
			}
			if after := len(f.logs.find("event=login_refused", "reason="+tc.reason)); after != before+1 {
				t.Errorf("%d new audit lines with reason %s, want 1", after-before, tc.reason)
			}
			if n := len(f.events.grep(`"type":"login.failure"`, `"outcome":"refused"`, `"reason":"`+tc.reason+`"`, `"cgroup_id":`)); n != 1 {
				t.Errorf("%d login.failure audit events with reason %s, want 1", n, tc.reason)
			}
		})
	}
	if n := f.inst.Server.Sessions(); n != 0 {
		t.Errorf("the emulator opened %d sessions for refused logins", n)
	}
	for _, line := range f.logs.find() {
		if strings.Contains(line, valid[:40]) {
			t.Errorf("an audit line carries the token: %s", line)
		}
	}
}

// TestNodeWorkloadIdentity: the unchanged Node snowflake-sdk logs in with
// its WORKLOAD_IDENTITY (OIDC) and its OAUTH option through the gateway and
// lands in the rule's user and role.
func TestNodeWorkloadIdentity(t *testing.T) {
	f := newIdentityFixture(t, identityOptions{})
	for _, conn := range []testenv.NodeConnection{
		{Account: testAccount, Authenticator: "WORKLOAD_IDENTITY", WorkloadIdentityProvider: "OIDC", Token: f.token(t, nil), Role: "ACCOUNTADMIN"},
		{Account: testAccount, Authenticator: "OAUTH", Token: f.token(t, nil), Role: "ACCOUNTADMIN"},
	} {
		t.Run(conn.Authenticator, func(t *testing.T) {
			c := testenv.NewNodeClient(t)
			c.CAFile = f.caFile
			c.Proc = &testenv.Proc{Cgroup: f.cg, Netns: f.ns, Root: true}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			res, err := c.Run(ctx,
				testenv.NodeConnect(conn),
				testenv.NodeExecute("SELECT CURRENT_USER(), CURRENT_ROLE()"),
				testenv.NodeDestroy(),
			)
			if err != nil {
				t.Fatalf("node client: %v", err)
			}
			for _, r := range res {
				if err := r.Err(); err != nil {
					t.Fatalf("step %d (%s): %v", r.Step, r.Op, err)
				}
			}
			if len(res) < 2 || len(res[1].Rows) != 1 || fmt.Sprint(res[1].Rows[0]) != fmt.Sprint([]any{svcUser, ruleRole}) {
				t.Fatalf("CURRENT_USER, CURRENT_ROLE: %+v", res)
			}
		})
	}
	for _, x := range f.sink.snapshot() {
		for _, secret := range []string{"emu-st:", "emu-mt:"} {
			if bytes.Contains(x.ResponseBody, []byte(secret)) {
				t.Errorf("%s reply to the agent contains %q", x.Kind, secret)
			}
		}
	}
	if n := f.swap.Store().Len(); n != 0 {
		t.Errorf("%d gateway sessions after destroy", n)
	}
}

// craftToken assembles a compact JWS from a header and claims; sign gets
// the signing input and returns the signature (nil: empty signature).
func craftToken(t *testing.T, header, claims map[string]any, sign func([]byte) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := b64(h) + "." + b64(c)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// hs256WithPublicKey is the algorithm-confusion attack: an HS256 token
// whose HMAC key is the issuer's public key in PEM.
func hs256WithPublicKey(t *testing.T, is *oidctest.Issuer) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&is.PrivateKey().PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	key := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	claims := is.Claims(oidctest.GitHub(testAudience, "acme", ownerID, "app", repoID))
	return craftToken(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": is.KeyID()}, claims, func(in []byte) []byte {
		m := hmac.New(sha256.New, key)
		m.Write(in)
		return m.Sum(nil)
	})
}

// tamper changes one claim of a signed token and keeps its signature.
func tamper(t *testing.T, tok, claim, value string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	claims[claim] = value
	b, _ := json.Marshal(claims)
	parts[1] = b64(b)
	return strings.Join(parts, ".")
}

// TestContinuationWindow: a pooled driver logs in again with its CI token
// after the token expired. The gateway admits that from the same cgroup
// within the issuer's continuation window (the token was verified fresh
// there before), refuses it from another cgroup, and refuses it once the
// window has passed (workload-identity.md §10).
func TestContinuationWindow(t *testing.T) {
	window := 30 * time.Minute
	clk := &testClock{}
	f := newIdentityFixture(t, identityOptions{ContinuationMax: &window, Now: clk.Now})
	cgA, cgB := f.cg.Child(t, "job-a"), f.cg.Child(t, "job-b")
	tok := f.token(t, func(tk *oidctest.Token) { tk.Lifetime = 5 * time.Minute })
	dsnTok := wifDSN(tok)
	a := f.startIdentityAgent(t, cgA)
	b := f.startIdentityAgent(t, cgB)
	steps := []struct {
		name      string
		advance   time.Duration
		agent     *idAgent
		wantErr   string // "" for success
		wantAudit []string
	}{
		{"fresh", 0, a, "", []string{"event=login", "continuation=false"}},
		{"expired, same cgroup", 10 * time.Minute, a, "", []string{"event=login", "continuation=true"}},
		{"expired, other cgroup", 0, b, "replay", []string{"event=login_refused", "reason=replay"}},
		{"past the window", window, a, "expired", []string{"event=login_refused", "reason=continuation_expired"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			clk.Add(s.advance)
			before := len(f.logs.find(s.wantAudit...))
			r := s.agent.do(t, idCmd{Op: "open", DSN: dsnTok})
			switch {
			case s.wantErr == "" && r.Err != "":
				t.Fatalf("login: %s", r.Err)
			case s.wantErr != "" && !strings.Contains(r.Err, s.wantErr):
				t.Fatalf("login error %q, want %q", r.Err, s.wantErr)
			}
			if after := len(f.logs.find(s.wantAudit...)); after != before+1 {
				t.Errorf("%d new audit lines with %v, want 1", after-before, s.wantAudit)
			}
			if s.wantErr == "" {
				r := s.agent.do(t, idCmd{Op: "query", SQL: "SELECT CURRENT_ROLE()"})
				if r.Err != "" || len(r.Rows) != 1 || !strings.EqualFold(r.Rows[0][0], ruleRole) {
					t.Fatalf("query: %v %s", r.Rows, r.Err)
				}
			}
		})
	}
	var sawContinuation bool
	for _, x := range f.sink.snapshot() {
		if x.Principal != nil && x.Principal.Continuation {
			sawContinuation = true
		}
	}
	if !sawContinuation {
		t.Error("no exchange carries a Principal marked as continuation")
	}
}

// TestObserveOnlyRule: a rule marked observe_only verifies and records the
// identity but forwards the client's own login, which Snowflake itself
// authenticates; the client's context stays, and the tokens it gets are
// still gateway tokens bound to its cgroup.
func TestObserveOnlyRule(t *testing.T) {
	f := newIdentityFixture(t, identityOptions{ObserveOnly: true})
	a := f.startIdentityAgent(t, f.cg)
	v := url.Values{}
	v.Set("account", testAccount)
	v.Set("authenticator", "OAUTH")
	v.Set("token", f.oauthToken)
	v.Set("role", "CLIENT_ROLE")
	v.Set("loginTimeout", "120")
	r := a.do(t, idCmd{Op: "open", DSN: fmt.Sprintf("%s:443/?%s", testHost, v.Encode())})
	if r.Err != "" {
		t.Fatalf("login: %s", r.Err)
	}
	if !strings.HasPrefix(r.SessionToken, "snowgate-s1.") {
		t.Fatalf("session token %q, want a gateway token", r.SessionToken)
	}
	r = a.do(t, idCmd{Op: "query", SQL: "SELECT CURRENT_USER(), CURRENT_ROLE()"})
	if r.Err != "" || len(r.Rows) != 1 || !equalFold(r.Rows[0], []string{testUser, "CLIENT_ROLE"}) {
		t.Fatalf("CURRENT_USER, CURRENT_ROLE = %v (%s), want the client's own", r.Rows, r.Err)
	}
	var p *gateway.Principal
	for _, x := range f.sink.snapshot() {
		if x.Kind == snowflake.KindQueryRequest.String() && x.Principal != nil {
			p = x.Principal
		}
	}
	if p == nil || !p.ObserveOnly || p.Rule != "app-main" || p.Authenticator != "OAUTH" || p.Role != "CLIENT_ROLE" {
		t.Fatalf("principal %+v", p)
	}
	for _, body := range a.do(t, idCmd{Op: "responses"}).Bodies {
		if strings.Contains(body, "emu-st:") || strings.Contains(body, "emu-mt:") {
			t.Fatalf("a Snowflake token reaches the agent: %.200s", body)
		}
	}
}

// TestRenewBeforeExpiry: the gateway renews the upstream session ahead of
// the expiry Snowflake announced, before the request goes out, so the
// request never meets 390112 (here the margin covers the whole validity,
// so every request renews first).
func TestRenewBeforeExpiry(t *testing.T) {
	f := newIdentityFixture(t, identityOptions{RenewBefore: 2 * time.Hour})
	a := f.startIdentityAgent(t, f.cg)
	if r := a.do(t, idCmd{Op: "open", DSN: wifDSN(f.token(t, nil))}); r.Err != "" {
		t.Fatalf("login: %s", r.Err)
	}
	before := len(f.logs.find("event=renewed"))
	for i := range 3 {
		r := a.do(t, idCmd{Op: "query", SQL: fmt.Sprintf("SELECT %d", i)})
		if r.Err != "" || len(r.Rows) != 1 || r.Rows[0][0] != fmt.Sprint(i) {
			t.Fatalf("query %d: %v %s", i, r.Rows, r.Err)
		}
	}
	if n := len(f.logs.find("event=renewed")) - before; n < 3 {
		t.Errorf("%d renewals ahead of expiry, want one per request", n)
	}
	if n := f.inst.Server.Faults().Hits(emulator.EndpointToken); n < 3 {
		t.Errorf("the emulator saw %d token requests", n)
	}
}
