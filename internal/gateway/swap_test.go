package gateway

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/identity"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
	"github.com/snowgate/snowgate/internal/session"
	"github.com/snowgate/snowgate/internal/snowflake"
	credential "github.com/snowgate/snowgate/internal/upstream"
)

func TestParseAuthorization(t *testing.T) {
	tests := []struct{ in, want string }{
		{`Snowflake Token="abc"`, "abc"},
		{`snowflake Token="abc"`, "abc"},
		{`Snowflake  Token="snowgate-s1.x"`, "snowgate-s1.x"},
		{`Bearer abc`, ""},
		{`Snowflake abc`, ""},
		{``, ""},
		{`Snowflake Token=`, ""},
	}
	for _, tc := range tests {
		if got := parseAuthorization(tc.in); got != tc.want {
			t.Errorf("parseAuthorization(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestExpiryCode(t *testing.T) {
	tests := []struct {
		status int
		body   string
		want   string
	}{
		{200, `{"data":null,"code":"390112","message":"expired","success":false}`, "390112"},
		{200, `{"data":null,"code":"390114","message":"expired","success":false}`, "390114"},
		{401, `{"data":null,"code":"390104","message":"login again","success":false}`, "390104"},
		{200, `{"data":null,"code":"390111","message":"gone","success":false}`, "390111"},
		{200, `{"data":null,"code":"001003","message":"syntax","success":false}`, ""},
		{200, `{"data":{},"code":null,"message":null,"success":true}`, ""},
		{503, `{"code":"390112","success":false}`, ""},
		{200, `not json`, ""},
	}
	for _, tc := range tests {
		if got := expiryCode(tc.status, []byte(tc.body)); got != tc.want {
			t.Errorf("expiryCode(%d, %s) = %q, want %q", tc.status, tc.body, got, tc.want)
		}
	}
}

func TestGrantSessionParameters(t *testing.T) {
	tests := []struct {
		name, data, tag string
		want            map[string]any // nil: no SESSION_PARAMETERS
	}{
		{"none, no tag", `{}`, "", nil},
		{"none, tag", `{}`, "t1", map[string]any{"QUERY_TAG": "t1"}},
		{"client context dropped", `{"SESSION_PARAMETERS":{"ROLE":"ACCOUNTADMIN","warehouse":"BIG","QUERY_TAG":"mine","CLIENT_SESSION_KEEP_ALIVE":true}}`, "t2",
			map[string]any{"QUERY_TAG": "t2", "CLIENT_SESSION_KEEP_ALIVE": true}},
		{"client tag dropped without a rule tag", `{"SESSION_PARAMETERS":{"QUERY_TAG":"mine"}}`, "", map[string]any{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lr, err := snowflake.ParseLoginRequest([]byte(`{"data":` + tc.data + `}`))
			if err != nil {
				t.Fatal(err)
			}
			if err := grantSessionParameters(lr, tc.tag); err != nil {
				t.Fatal(err)
			}
			var got struct {
				Data struct {
					SP map[string]any `json:"SESSION_PARAMETERS"`
				} `json:"data"`
			}
			if err := json.Unmarshal(lr.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if got.Data.SP != nil {
					t.Fatalf("SESSION_PARAMETERS %v, want none", got.Data.SP)
				}
				return
			}
			if len(got.Data.SP) != len(tc.want) {
				t.Fatalf("SESSION_PARAMETERS %v, want %v", got.Data.SP, tc.want)
			}
			for k, v := range tc.want {
				if got.Data.SP[k] != v {
					t.Fatalf("SESSION_PARAMETERS %v, want %v", got.Data.SP, tc.want)
				}
			}
		})
	}
}

// swapHarness is a Swap with a verifier on a local issuer's JWKS file (no
// network at verification) and a key-pair credential the emulator knows.
type swapHarness struct {
	swap   *Swap
	issuer *oidctest.Issuer
	inst   *emulatortest.Instance
}

func newSwapHarness(t testing.TB) *swapHarness {
	t.Helper()
	is := oidctest.Start(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := credential.NewKeyPairCredential("SVC", key, 0)
	if err != nil {
		t.Fatal(err)
	}
	issuers := []identity.IssuerConfig{{
		Name: "ci", Issuer: is.URL, Audiences: []string{"snowgate"},
		Keys: identity.KeySource{Source: identity.SourceJWKSFile, File: is.WriteJWKSFile(t)},
	}}
	v, err := identity.NewVerifier(issuers, identity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rules, _, err := identity.CompileRules([]identity.RuleConfig{{
		Name: "r", Issuer: "ci", Claims: map[string][]string{"repository": {"acme/app"}}, Account: "acme",
		Grant: identity.Grant{User: "SVC", Role: "R_RO", Database: "DB1", QueryTag: "tag:{{run_id}}"},
	}}, issuers)
	if err != nil {
		t.Fatal(err)
	}
	sw, err := NewSwap(SwapConfig{
		Authorizer: &identity.Authorizer{Verifier: v, Rules: rules, Admissions: identity.NewAdmissions(0)},
		Accounts:   map[string]SwapAccount{"acme": {Credential: cred, Name: "acme"}},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	inst := emulatortest.Start(t, emulator.Config{Account: "acme", PublicKeys: map[string]crypto.PublicKey{"SVC": &key.PublicKey}})
	return &swapHarness{swap: sw, issuer: is, inst: inst}
}

// wifLogin is a gosnowflake WORKLOAD_IDENTITY login body.
func wifLogin(token string) []byte {
	b, _ := json.Marshal(map[string]any{"data": map[string]any{
		"CLIENT_APP_ID": "Go", "CLIENT_APP_VERSION": "1.19.1", "SVN_REVISION": "", "ACCOUNT_NAME": "acme",
		"AUTHENTICATOR": "WORKLOAD_IDENTITY", "PROVIDER": "OIDC", "TOKEN": token,
		"SESSION_PARAMETERS": map[string]any{"CLIENT_VALIDATE_DEFAULT_PARAMETERS": true, "ROLE": "ACCOUNTADMIN"},
	}})
	return b
}

// exchange sends out with body to the emulator and returns the reply.
func (h *swapHarness) exchange(t *testing.T, out *http.Request, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(out.Method, h.inst.URL+out.URL.RequestURI(), strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = out.Header.Clone()
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.inst.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := snowflake.ReadBody(resp.Body, resp.Header.Get("Content-Encoding"), snowflake.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, got.Plain
}

// TestSwapAtTheChokePoint drives the swap's two hooks the way the handler
// does, against the emulator: the login is rewritten for the gateway's key
// pair and the rule's context, the reply carries gateway tokens, and later
// requests are mapped back only from the workload that logged in.
func TestSwapAtTheChokePoint(t *testing.T) {
	h := newSwapHarness(t)
	ctx := context.Background()
	ci := h.issuer.Sign(t, oidctest.Token{Audience: []string{"snowgate"}, Subject: "repo:acme/app", Claims: map[string]any{"repository": "acme/app", "run_id": "77"}})
	wl := Workload{CgroupID: 4242, UID: 1000}
	call := &Call{Kind: snowflake.KindLogin, Account: "acme", Host: "acme.snowflakecomputing.com", Workload: wl}
	out, _ := http.NewRequest(http.MethodPost, h.inst.URL+"/session/v1/login-request?roleName=ACCOUNTADMIN&warehouse=BIG&requestId=1", nil)
	out.Header.Set("Authorization", `Snowflake Token="smuggled"`)
	body, err := h.swap.Outbound(ctx, call, out, wifLogin(ci))
	if err != nil {
		t.Fatal(err)
	}
	lr, err := snowflake.ParseLoginRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	q := out.URL.Query()
	switch {
	case out.Header.Get("Authorization") != "":
		t.Error("the client's Authorization went upstream")
	case lr.Authenticator != "SNOWFLAKE_JWT" || lr.LoginName != "SVC" || lr.Provider != "" || lr.Token == "" || lr.Token == ci:
		t.Errorf("login data %s", body)
	case strings.Contains(string(body), ci) || strings.Contains(string(body), "ACCOUNTADMIN"):
		t.Errorf("the rewritten login keeps the CI token or the client's role: %s", body)
	case q.Get("roleName") != "R_RO" || q.Get("databaseName") != "DB1" || q.Has("warehouse") || q.Get("requestId") != "1":
		t.Errorf("login query %s", out.URL.RawQuery)
	case !strings.Contains(string(body), `"QUERY_TAG":"tag:77"`):
		t.Errorf("no query tag: %s", body)
	}
	status, reply := h.exchange(t, out, body)
	reply, err = h.swap.Inbound(ctx, call, status, reply)
	if err != nil {
		t.Fatalf("login reply: %v", err)
	}
	if strings.Contains(string(reply), "emu-st:") || strings.Contains(string(reply), "emu-mt:") {
		t.Fatalf("a Snowflake token reaches the client: %s", reply)
	}
	resp, err := snowflake.ParseLoginResponse(reply)
	if err != nil || !strings.HasPrefix(resp.Token, session.SessionPrefix) || !strings.HasPrefix(resp.MasterToken, session.MasterPrefix) {
		t.Fatalf("login reply %s (%v)", reply, err)
	}
	p := call.Principal
	if p == nil || p.Rule != "r" || p.User != "SVC" || p.Role != "R_RO" || p.SessionID == "" || p.CgroupID != 4242 || p.QueryTag != "tag:77" {
		t.Fatalf("principal %+v", p)
	}

	query := func(wl Workload, auth string) (*Call, *http.Request, []byte, error) {
		c := &Call{Kind: snowflake.KindQueryRequest, Account: "acme", Host: call.Host, Workload: wl}
		out, _ := http.NewRequest(http.MethodPost, h.inst.URL+"/queries/v1/query-request?requestId=q", nil)
		out.Header.Set("Authorization", `Snowflake Token="`+auth+`"`)
		b, err := h.swap.Outbound(ctx, c, out, []byte(`{"sqlText":"SELECT CURRENT_ROLE(), CURRENT_USER()","sequenceId":1}`))
		return c, out, b, err
	}
	tests := []struct {
		name string
		wl   Workload
		auth string
		want string // "" for success, else part of the refusal
	}{
		{"own workload", wl, resp.Token, ""},
		{"another cgroup", Workload{CgroupID: 4243, UID: 1000}, resp.Token, "another workload"},
		{"another uid", Workload{CgroupID: 4242, UID: 0}, resp.Token, "another workload"},
		{"master token as session token", wl, resp.MasterToken, "unknown to the gateway"},
		{"a Snowflake token", wl, "ver:1-emu-st:abc", "not issued by the gateway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, out, b, err := query(tc.wl, tc.auth)
			if tc.want != "" {
				var se *snowflake.Error
				if !errors.As(err, &se) || !strings.Contains(se.Message, tc.want) {
					t.Fatalf("error %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a := out.Header.Get("Authorization"); !strings.Contains(a, "emu-st:") {
				t.Fatalf("upstream Authorization %q is not the real token", a)
			}
			status, reply := h.exchange(t, out, b)
			if reply, err = h.swap.Inbound(ctx, c, status, reply); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(reply), `"finalRoleName":"R_RO"`) || c.Principal != p {
				t.Fatalf("query reply %s", reply)
			}
		})
	}

	// Logout ends the gateway session.
	c := &Call{Kind: snowflake.KindLogout, Account: "acme", Host: call.Host, Workload: wl}
	out, _ = http.NewRequest(http.MethodPost, h.inst.URL+"/session?delete=true", nil)
	out.Header.Set("Authorization", `Snowflake Token="`+resp.Token+`"`)
	b, err := h.swap.Outbound(ctx, c, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	status, reply = h.exchange(t, out, b)
	if _, err := h.swap.Inbound(ctx, c, status, reply); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := query(wl, resp.Token); err == nil {
		t.Fatal("the gateway token works after logout")
	}
	if h.swap.Store().Len() != 0 || h.inst.Server.Sessions() != 0 {
		t.Fatalf("%d gateway and %d emulator sessions after logout", h.swap.Store().Len(), h.inst.Server.Sessions())
	}
}

// FuzzSwapLogin feeds arbitrary login bodies (and tokens inside a
// well-formed body) to the swap's login decoder: it never panics, refuses
// with a Snowflake-shaped login error, and never echoes the token.
func FuzzSwapLogin(f *testing.F) {
	h := newSwapHarness(f)
	f.Add([]byte(`{"data":{"AUTHENTICATOR":"WORKLOAD_IDENTITY","PROVIDER":"OIDC","TOKEN":"a.b.c"}}`), "a.b.c")
	f.Add([]byte(`{"data":{"LOGIN_NAME":"u","PASSWORD":"p"}}`), "")
	f.Add([]byte(`{"data":{"AUTHENTICATOR":"OAUTH","TOKEN":"eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0."}}`), "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL3gifQ.c2ln")
	f.Add([]byte(`{"data":{"token":"x","TOKEN":"y"}}`), "")
	f.Add([]byte(`{"data":[]}`), "")
	f.Add([]byte(`{"data":{"AUTHENTICATOR":"WORKLOAD_IDENTITY","PROVIDER":"OIDC","TOKEN":"x","SESSION_PARAMETERS":[1]}}`), "")
	f.Add([]byte(`not json`), "")
	f.Fuzz(func(t *testing.T, body []byte, token string) {
		for _, b := range [][]byte{body, wifLogin(token)} {
			call := &Call{Kind: snowflake.KindLogin, Account: "acme", Host: "acme.snowflakecomputing.com", Workload: Workload{CgroupID: 1}}
			out, _ := http.NewRequest(http.MethodPost, "https://acme.snowflakecomputing.com/session/v1/login-request", nil)
			_, err := h.swap.Outbound(context.Background(), call, out, b)
			if err == nil {
				// Only a token signed by the test issuer passes, which
				// random input is not.
				t.Fatalf("login admitted: %q", b)
			}
			var se *snowflake.Error
			if !errors.As(err, &se) || se.Code != snowflake.CodeBadCredentials || se.Status() != http.StatusOK {
				t.Fatalf("refusal %v is not a Snowflake login error", err)
			}
			if len(token) >= 8 && strings.Contains(se.Message, token) {
				t.Fatalf("the refusal echoes the token: %s", se.Message)
			}
			if call.Principal != nil {
				t.Fatal("a refused login has a principal")
			}
		}
	})
}

// FuzzSessionToken: whatever Authorization a request carries, only the
// live session's own gateway token from its own workload is mapped to the
// real token; everything else is refused and nothing goes upstream.
func FuzzSessionToken(f *testing.F) {
	h := newSwapHarness(f)
	own := Workload{CgroupID: 7, UID: 1000}
	real := "ver:1-emu-st:real-session-token"
	_, sh, mh, err := h.swap.Store().Create(session.Binding{CgroupID: 7, UID: 1000},
		session.Tokens{Session: credential.NewSecret(real), Master: credential.NewSecret("ver:1-emu-mt:real-master")},
		&sessionState{principal: &Principal{Rule: "r"}})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{`Snowflake Token="` + sh + `"`, `Snowflake Token="` + mh + `"`, `Snowflake Token="` + real + `"`, sh, "", `Snowflake Token="snowgate-s1."`} {
		f.Add(s, uint64(7))
		f.Add(s, uint64(8))
	}
	f.Fuzz(func(t *testing.T, header string, cgroup uint64) {
		call := &Call{Kind: snowflake.KindQueryRequest, Account: "acme", Host: "acme.snowflakecomputing.com", Workload: Workload{CgroupID: cgroup, UID: 1000}}
		out, _ := http.NewRequest(http.MethodPost, "https://acme.snowflakecomputing.com/queries/v1/query-request", nil)
		out.Header.Set("Authorization", header)
		_, err := h.swap.Outbound(context.Background(), call, out, []byte(`{"sqlText":"SELECT 1"}`))
		got := out.Header.Get("Authorization")
		if err != nil {
			if got != "" {
				t.Fatalf("refused, yet Authorization %q goes upstream", got)
			}
			var se *snowflake.Error
			if !errors.As(err, &se) || strings.Contains(se.Message, real) {
				t.Fatalf("refusal %v", err)
			}
			return
		}
		if parseAuthorization(header) != sh || call.Workload != own {
			t.Fatalf("header %q from cgroup %d was accepted", header, cgroup)
		}
		if got != authorization(real) {
			t.Fatalf("upstream Authorization %q", got)
		}
	})
}

// login logs wl in through h's swap and returns the gateway tokens.
func (h *swapHarness) login(t *testing.T, sw *Swap, wl Workload) (sessionToken string) {
	t.Helper()
	ci := h.issuer.Sign(t, oidctest.Token{Audience: []string{"snowgate"}, Subject: "repo:acme/app", Claims: map[string]any{"repository": "acme/app", "run_id": 12345678901234567}})
	call := &Call{Kind: snowflake.KindLogin, Account: "acme", Host: "acme.snowflakecomputing.com", Workload: wl}
	out, _ := http.NewRequest(http.MethodPost, h.inst.URL+"/session/v1/login-request?requestId=1", nil)
	body, err := sw.Outbound(context.Background(), call, out, wifLogin(ci))
	if err != nil {
		t.Fatal(err)
	}
	status, reply := h.exchange(t, out, body)
	if reply, err = sw.Inbound(context.Background(), call, status, reply); err != nil {
		t.Fatal(err)
	}
	resp, err := snowflake.ParseLoginResponse(reply)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Token
}

// query runs SELECT CURRENT_ROLE() through sw with token from wl and
// returns the reply, or the refusal.
func (h *swapHarness) query(t *testing.T, sw *Swap, wl Workload, token string) ([]byte, error) {
	t.Helper()
	c := &Call{Kind: snowflake.KindQueryRequest, Account: "acme", Host: "acme.snowflakecomputing.com", Workload: wl}
	out, _ := http.NewRequest(http.MethodPost, h.inst.URL+"/queries/v1/query-request?requestId="+newUUID(), nil)
	out.Header.Set("Authorization", `Snowflake Token="`+token+`"`)
	b, err := sw.Outbound(context.Background(), c, out, []byte(`{"sqlText":"SELECT CURRENT_ROLE()","sequenceId":1}`))
	if err != nil {
		return nil, err
	}
	status, reply := h.exchange(t, out, b)
	return sw.Inbound(context.Background(), c, status, reply)
}

// TestSessionHandover: a successor gateway (a restart or a hand-over)
// serves the sessions its predecessor saved, from the same workload only,
// and picks up sessions saved after it started when it meets their tokens.
func TestSessionHandover(t *testing.T) {
	h := newSwapHarness(t)
	file := t.TempDir() + "/sessions.json"
	wl := Workload{CgroupID: 31, UID: 1000}
	tok := h.login(t, h.swap, wl)
	succ, err := NewSwap(SwapConfig{Authorizer: h.swap.cfg.Authorizer, Accounts: h.swap.cfg.Accounts, SessionFile: file,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// The successor started before the predecessor saved: it does not
	// know the token yet.
	if _, err := h.query(t, succ, wl, tok); err == nil {
		t.Fatal("an unknown token was accepted")
	}
	if err := h.swap.SaveSessions(file); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(file)
	if strings.Contains(string(raw), tok) {
		t.Fatal("the session file holds the gateway token")
	}
	reply, err := h.query(t, succ, wl, tok)
	if err != nil || !strings.Contains(string(reply), `"finalRoleName":"R_RO"`) {
		t.Fatalf("after the hand-over: %s %v", reply, err)
	}
	if _, err := h.query(t, succ, Workload{CgroupID: 32, UID: 1000}, tok); err == nil {
		t.Fatal("the handed-over token works from another cgroup")
	}
	// A session the predecessor saves while the successor already waits
	// on its token (the hand-over race) is found.
	tok2 := h.login(t, h.swap, wl)
	done := make(chan error, 1)
	go func() {
		_, err := h.query(t, succ, wl, tok2)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := h.swap.SaveSessions(file); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("a session saved during the wait: %v", err)
	}
	sess, err := succ.Store().Lookup(tok, session.KindSession, session.Binding{CgroupID: 31, UID: 1000})
	if err != nil {
		t.Fatal(err)
	}
	p := sess.Data.(*sessionState).principal
	if p.Rule != "r" || p.User != "SVC" || p.Claims["run_id"] != json.Number("12345678901234567") || sess.Data.(*sessionState).relogin == nil {
		t.Fatalf("principal after load %+v", p)
	}
}

// TestDriverRenewal: a renewal the driver asks for itself (POST
// /session/token-request with the master token and the old session token)
// is mapped to the real tokens, renewed upstream, and answered with fresh
// gateway tokens; the old ones stop working.
func TestDriverRenewal(t *testing.T) {
	h := newSwapHarness(t)
	wl := Workload{CgroupID: 51, UID: 1000}
	ctx := context.Background()
	call := &Call{Kind: snowflake.KindLogin, Account: "acme", Host: "acme.snowflakecomputing.com", Workload: wl}
	ci := h.issuer.Sign(t, oidctest.Token{Audience: []string{"snowgate"}, Subject: "s", Claims: map[string]any{"repository": "acme/app"}})
	out, _ := http.NewRequest(http.MethodPost, h.inst.URL+"/session/v1/login-request", nil)
	body, err := h.swap.Outbound(ctx, call, out, wifLogin(ci))
	if err != nil {
		t.Fatal(err)
	}
	status, reply := h.exchange(t, out, body)
	if reply, err = h.swap.Inbound(ctx, call, status, reply); err != nil {
		t.Fatal(err)
	}
	login, err := snowflake.ParseLoginResponse(reply)
	if err != nil {
		t.Fatal(err)
	}
	renew := func(master, old string) ([]byte, error) {
		c := &Call{Kind: snowflake.KindTokenRequest, Account: "acme", Host: call.Host, Workload: wl}
		out, _ := http.NewRequest(http.MethodPost, h.inst.URL+"/session/token-request?requestId="+newUUID(), nil)
		out.Header.Set("Authorization", `Snowflake Token="`+master+`"`)
		b, err := h.swap.Outbound(ctx, c, out, []byte(`{"oldSessionToken":"`+old+`","requestType":"RENEW"}`))
		if err != nil {
			return nil, err
		}
		if strings.Contains(string(b), old) || !strings.Contains(string(b), "emu-st:") {
			t.Fatalf("renewal body upstream %s", b)
		}
		status, reply := h.exchange(t, out, b)
		return h.swap.Inbound(ctx, c, status, reply)
	}
	if _, err := renew(login.Token, login.Token); err == nil {
		t.Fatal("a session token was accepted as the master token")
	}
	if _, err := renew(login.MasterToken, "snowgate-s1.other"); err == nil {
		t.Fatal("a renewal naming another session token was accepted")
	}
	reply, err = renew(login.MasterToken, login.Token)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(reply), "emu-") {
		t.Fatalf("a Snowflake token reaches the driver: %s", reply)
	}
	renewed, err := snowflake.ParseLoginResponse(reply)
	if err != nil || !renewed.Success || !strings.HasPrefix(renewed.Token, session.SessionPrefix) || renewed.Token == login.Token || !strings.HasPrefix(renewed.MasterToken, session.MasterPrefix) {
		t.Fatalf("renewal reply %s (%v)", reply, err)
	}
	if _, err := h.query(t, h.swap, wl, login.Token); err == nil {
		t.Fatal("the old gateway token works after the renewal")
	}
	if reply, err := h.query(t, h.swap, wl, renewed.Token); err != nil || !strings.Contains(string(reply), `"success":true`) {
		t.Fatalf("query with the renewed token: %s %v", reply, err)
	}
}

// TestPendingReleased: what Outbound keeps for Inbound is dropped when the
// call ends without a reply (upstream failure, policy refusal).
func TestPendingReleased(t *testing.T) {
	h := newSwapHarness(t)
	wl := Workload{CgroupID: 61, UID: 1000}
	tok := h.login(t, h.swap, wl)
	ctx, cancel := context.WithCancel(context.Background())
	c := &Call{Kind: snowflake.KindQueryRequest, Account: "acme", Host: "acme.snowflakecomputing.com", Workload: wl}
	out, _ := http.NewRequest(http.MethodPost, h.inst.URL+"/queries/v1/query-request", nil)
	out.Header.Set("Authorization", `Snowflake Token="`+tok+`"`)
	if _, err := h.swap.Outbound(ctx, c, out, []byte(`{"sqlText":"SELECT 1"}`)); err != nil {
		t.Fatal(err)
	}
	pending := func() int {
		h.swap.mu.Lock()
		defer h.swap.mu.Unlock()
		return len(h.swap.pending)
	}
	if pending() != 1 {
		t.Fatalf("%d pending calls, want 1", pending())
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for pending() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if pending() != 0 {
		t.Fatalf("%d pending calls after the call ended", pending())
	}
}
