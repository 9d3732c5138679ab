package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
)

// Kinds of planted secrets. A file may be documented to hold one kind (the
// session state file holds the real Snowflake tokens); everything else
// must hold none.
const (
	kindCredential = "gateway credential"     // key, JWT, PAT, password
	kindSnowflake  = "snowflake session"      // real session and master tokens
	kindWorkload   = "workload token"         // the agents' CI tokens
	kindGateway    = "gateway token"          // opaque tokens the gateway issues
	kindStorage    = "storage secret"         // presigned URL signatures, SSE-C keys, qrmk
	kindReviewer   = "reviewer token"         // the approvals API's bearer tokens
	kindAgentTried = "agent-supplied secret"  // what an agent sent and was refused with
	kindSQL        = "credential in SQL text" // PASSWORD = '…' in a statement
	// kindOwnKey is a private key block of unknown origin: only the
	// recording seal key's own file may hold one.
	kindOwnKey = "private key block"
	// kindJWT is any JWT: no output has a reason to carry one whole.
	kindJWT = "JWT"
)

// plantedSecret is one value that must not appear in any output.
type plantedSecret struct {
	name, kind, value string
}

// secretSet collects planted and captured secrets; safe for concurrent use
// (the emulator's handler adds to it while the daemon talks to it).
type secretSet struct {
	mu   sync.Mutex
	list []plantedSecret
	seen map[string]bool
}

// add records value as a secret. Values shorter than 12 bytes are too
// short to scan for without false alarms, and no secret here is that short.
func (s *secretSet) add(name, kind, value string) {
	value = strings.TrimSpace(value)
	if len(value) < 12 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	if s.seen[value] {
		return
	}
	s.seen[value] = true
	s.list = append(s.list, plantedSecret{name: name, kind: kind, value: value})
}

// addJWT records a JWT whole and its signature part, which is secret on
// its own (with the claims it forges nothing, but it is the token's proof).
func (s *secretSet) addJWT(name, kind, tok string) {
	s.add(name, kind, tok)
	if parts := strings.Split(tok, "."); len(parts) == 3 {
		s.add(name+" (signature part)", kind, parts[2])
	}
}

// addPEMKey records a PEM private key: every line of its base64 body and
// the body joined (the base64 DER), so a partial print is caught too.
func (s *secretSet) addPEMKey(name, kind string, pemBytes []byte) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return
	}
	s.add(name+" (base64 DER)", kind, base64.StdEncoding.EncodeToString(block.Bytes))
	s.add(name+" (raw-url base64 DER)", kind, base64.RawURLEncoding.EncodeToString(block.Bytes))
	for i, line := range strings.Split(string(pemBytes), "\n") {
		if len(line) >= 40 && !strings.HasPrefix(line, "-----") {
			s.add(fmt.Sprintf("%s (PEM line %d)", name, i), kind, line)
		}
	}
}

func (s *secretSet) snapshot() []plantedSecret {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]plantedSecret(nil), s.list...)
}

// tokenPatterns find secrets nobody captured: the emulator's session and
// master tokens carry a recognisable prefix, and a PEM private key block is
// never an output.
var tokenPatterns = []struct {
	name, kind string
	re         *regexp.Regexp
}{
	{"an emulator session or master token", kindSnowflake, regexp.MustCompile(`ver:1-emu-(?:st|mt):[A-Za-z0-9_-]{16,}`)},
	{"a PEM private key", kindOwnKey, regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----`)},
	{"a JWT", kindJWT, regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}`)},
}

// secretLeak is one secret found in one output.
type secretLeak struct {
	where, secret, kind, form, context string
}

func (l secretLeak) String() string {
	return fmt.Sprintf("%s: %s [%s] appears (%s) in: %s", l.where, l.secret, l.kind, l.form, l.context)
}

// secretForms are the forms a secret can take in an output: as is, escaped
// in a URL query, escaped in a JSON string, in base64 (Basic auth, binary
// fields).
func secretForms(v string) map[string]string {
	forms := map[string]string{"verbatim": v}
	if q := url.QueryEscape(v); q != v {
		forms["URL-escaped"] = q
	}
	if b, err := json.Marshal(v); err == nil {
		if j := string(b[1 : len(b)-1]); j != v {
			forms["JSON-escaped"] = j
		}
	}
	forms["base64"] = base64.StdEncoding.EncodeToString([]byte(v))
	return forms
}

// scanSecrets returns every planted secret (in any of its encodings) and
// every token pattern found in data, except the kinds allowed there. The
// context shows the surroundings with the secret itself masked, so the
// report never prints a secret either.
func scanSecrets(secrets []plantedSecret, where string, data []byte, allowed ...string) []secretLeak {
	ok := map[string]bool{}
	for _, k := range allowed {
		ok[k] = true
	}
	var found []secretLeak
	for _, s := range secrets {
		if ok[s.kind] {
			continue
		}
		for form, enc := range secretForms(s.value) {
			if i := bytes.Index(data, []byte(enc)); i >= 0 {
				found = append(found, secretLeak{where: where, secret: s.name, kind: s.kind, form: form, context: maskedContext(data, i, len(enc))})
				break
			}
		}
	}
	for _, p := range tokenPatterns {
		if ok[p.kind] {
			continue
		}
		if loc := p.re.FindIndex(data); loc != nil {
			found = append(found, secretLeak{where: where, secret: p.name, kind: p.kind, form: "pattern", context: maskedContext(data, loc[0], loc[1]-loc[0])})
		}
	}
	return found
}

// maskedContext is up to 80 bytes either side of data[i:i+n], with that span
// replaced by <SECRET> and non-printable bytes by '.'.
func maskedContext(data []byte, i, n int) string {
	lo, hi := max(0, i-80), min(len(data), i+n+80)
	clean := func(b []byte) string {
		return strings.Map(func(r rune) rune {
			if r < 0x20 || r > 0x7e {
				return '.'
			}
			return r
		}, string(b))
	}
	return clean(data[lo:i]) + "<SECRET>" + clean(data[i+n:hi])
}

// TestSecretScanner proves the scanner of TestSecretsNeverLeak can fail: a
// planted secret written to a file in each of the forms an output can
// carry it is found, a file without it is clean, an allowed kind is not
// reported, and the pattern catches an uncaptured emulator token.
func TestSecretScanner(t *testing.T) {
	var s secretSet
	s.addJWT("workload token", kindWorkload, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmFjbWUvYXBwIn0.c2lnbmF0dXJlLXBhcnQtb2YtdGhlLXRva2Vu")
	s.add("PAT", kindCredential, "pat+secret/value=with-escapes")
	s.add("session token", kindSnowflake, "ver:1-hint:secret-session-token")
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		allowed []string
		want    []string // names of the secrets found
	}{
		{"clean", `{"msg":"login ok","token":"[REDACTED]"}`, nil, nil},
		{"verbatim in a log line", `level=INFO msg=login token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmFjbWUvYXBwIn0.c2lnbmF0dXJlLXBhcnQtb2YtdGhlLXRva2Vu`, nil, []string{"workload token", "workload token (signature part)", "a JWT"}},
		{"signature part alone", `sig c2lnbmF0dXJlLXBhcnQtb2YtdGhlLXRva2Vu`, nil, []string{"workload token (signature part)"}},
		{"URL-escaped in a query", `GET /x?t=pat%2Bsecret%2Fvalue%3Dwith-escapes`, nil, []string{"PAT"}},
		{"base64 in a header", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("pat+secret/value=with-escapes")), nil, []string{"PAT"}},
		{"allowed kind", `{"token":"ver:1-hint:secret-session-token"}`, []string{kindSnowflake}, nil},
		{"emulator token pattern", `{"masterToken":"ver:1-emu-mt:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`, nil, []string{"an emulator session or master token"}},
		{"private key block", "-----BEGIN PRIVATE KEY-----\nMII...", nil, []string{"a PEM private key"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range scanSecrets(s.snapshot(), f, b, tc.allowed...) {
				got = append(got, l.secret)
				if strings.Contains(l.String(), "c2lnbmF0dXJlLXBhcnQtb2YtdGhlLXRva2Vu") || strings.Contains(l.String(), "pat+secret") {
					t.Errorf("the report prints the secret: %s", l)
				}
			}
			sort.Strings(got)
			want := append([]string(nil), tc.want...)
			sort.Strings(want)
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("found %q, want %q", got, want)
			}
		})
	}
}

// TestRedactionHelpers is a table of the recording package's redaction
// helpers on the shapes the gateway meets on the wire: Snowflake's
// Authorization header, login and renew bodies, presigned chunk URLs (S3's
// and the emulator's), SSE-C chunk headers. TestRedaction in
// internal/recording covers whole records; this covers the helpers one by
// one, as the audit, the exchange log and the replay call them.
func TestRedactionHelpers(t *testing.T) {
	const s = "S3KR1T-value-0123456789"
	tests := []struct {
		name string
		fn   func(string) string
		in   string
		keep string
		// gap, when set, describes a known gap reported to the package's
		// owner: the case is skipped while the secret survives.
		gap string
	}{
		{"Snowflake authorization header", recording.RedactText, `Snowflake Token="` + s + `"`, "Snowflake Token=", ""},
		{"bearer header", recording.RedactText, "Bearer " + s, "Bearer", ""},
		{"login body", recording.RedactText, `{"data":{"LOGIN_NAME":"SVC","TOKEN":"` + s + `","PASSWORD":"` + s + `"}}`, "LOGIN_NAME", ""},
		{"login response", recording.RedactText, `{"data":{"token":"` + s + `","masterToken":"` + s + `","validityInSeconds":3600}}`, "3600", ""},
		{"renew body", recording.RedactText, `{"oldSessionToken":"` + s + `","requestType":"RENEW"}`, "RENEW", ""},
		{"S3 presigned URL", recording.RedactURL, "https://b.s3.amazonaws.com/r/0?X-Amz-Signature=" + s + "&X-Amz-Credential=" + s + "&X-Amz-Expires=60", "X-Amz-Expires=60", ""},
		{"emulator presigned URL", recording.RedactURL, "https://127.0.0.1:4443/__storage/q/0?X-Sg-Expires=1700000000&X-Sg-Signature=" + s, "X-Sg-Expires=1700000000", ""},
		{"URL in an error message", recording.RedactText, "Get \"https://b.s3.amazonaws.com/r/0?X-Amz-Signature=" + s + "\": EOF", "EOF", ""},
		{"SQL password", recording.RedactSQL, "ALTER USER bob SET PASSWORD = '" + s + "'", "ALTER USER bob", ""},
		{"SSE-C header object", func(v string) string { return string(recording.RedactJSON(json.RawMessage(v))) },
			`{"x-amz-server-side-encryption-customer-algorithm":"AES256","x-amz-server-side-encryption-customer-key":"` + s + `","x-amz-server-side-encryption-customer-key-md5":"` + s + `"}`, "AES256", ""},
		{"nested token key", func(v string) string { return string(recording.RedactJSON(json.RawMessage(v))) },
			`{"data":{"sessionToken":"` + s + `","qrmk":"` + s + `","rowset":[["1"]]}}`, "rowset", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.fn(tc.in)
			if strings.Contains(got, "S3KR1T") {
				if tc.gap != "" {
					t.Skipf("known gap, reported to its owner: %s", tc.gap)
				}
				t.Errorf("secret survived: %q", got)
			}
			if !strings.Contains(got, tc.keep) {
				t.Errorf("%q was lost: %q", tc.keep, got)
			}
		})
	}
	for _, k := range []string{"Authorization", "token", "masterToken", "sessionToken", "oldSessionToken", "PASSWORD", "qrmk",
		"x-amz-server-side-encryption-customer-key", "x-amz-server-side-encryption-customer-key-md5", "Cookie"} {
		if !recording.IsSecretKey(k) {
			t.Errorf("IsSecretKey(%q) = false", k)
		}
	}
	for _, k := range []string{"rowset", "sqlText", "x-amz-server-side-encryption-customer-algorithm", "queryId"} {
		if recording.IsSecretKey(k) {
			t.Errorf("IsSecretKey(%q) = true", k)
		}
	}
}

// capturingEmulator wraps the emulator's handler and records every secret
// that crosses it: the credentials the gateway logs in with (its key-pair
// JWT, PAT, password), the session and master tokens the emulator issues,
// presigned chunk URL signatures, SSE-C keys and result master keys. This
// is the upstream side of the gateway, the one place those values can be
// observed without trusting the gateway.
type capturingEmulator struct {
	account string
	next    http.Handler
	secrets *secretSet
	// before, if set, sees each API request (body decoded) before the
	// emulator does: a test injects faults with it.
	before func(r *http.Request, body []byte)
}

func (c *capturingEmulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if snowflake.IsGzip(body) {
		if plain, err := snowflake.Gunzip(body, 1<<30); err == nil {
			body = plain
		}
	}
	where := c.account + " upstream " + r.URL.Path
	c.fromJSON(where+" request", body)
	for k, vs := range r.Header {
		for _, v := range vs {
			if strings.EqualFold(k, "Authorization") {
				v = strings.TrimSuffix(strings.TrimPrefix(v, `Snowflake Token="`), `"`)
			}
			if recording.IsSecretKey(k) {
				c.secrets.add(where+" header "+k, kindOfKey(k), v)
			}
		}
	}
	c.fromURL(where+" URL", r.URL.RawQuery)
	if c.before != nil {
		c.before(r, body)
	}
	if strings.HasPrefix(r.URL.Path, "/__storage/") {
		c.next.ServeHTTP(w, r)
		return
	}
	tw := &teeWriter{ResponseWriter: w}
	c.next.ServeHTTP(tw, r)
	out := tw.buf.Bytes()
	if snowflake.IsGzip(out) {
		if plain, err := snowflake.Gunzip(out, 1<<30); err == nil {
			out = plain
		}
	}
	c.fromJSON(where+" response", out)
}

// kindOfKey sorts a captured secret by the key it was found under.
func kindOfKey(k string) string {
	switch k = strings.ToLower(k); {
	case k == "password", k == "passcode", k == "privatekey", k == "private_key":
		return kindCredential
	case strings.Contains(k, "token"), k == "authorization":
		return kindSnowflake
	}
	return kindStorage
}

func (c *capturingEmulator) fromJSON(where string, doc []byte) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return
	}
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				walk(k, x)
			}
		case []any:
			for _, x := range t {
				walk(key, x)
			}
		case string:
			if recording.IsSecretKey(key) {
				kind := kindOfKey(key)
				if strings.EqualFold(key, "token") && strings.Count(t, ".") == 2 {
					// The key-pair login's JWT, minted by the gateway.
					c.secrets.addJWT(where+" "+key+" (key-pair JWT)", kindCredential, t)
					return
				}
				if strings.Contains(where, "login-request request") && strings.EqualFold(key, "token") {
					kind = kindCredential // a PAT
				}
				c.secrets.add(where+" "+key, kind, t)
				return
			}
			if i := strings.IndexByte(t, '?'); i >= 0 && strings.Contains(t, "://") {
				c.fromURL(where+" "+key, t[i+1:])
			}
		}
	}
	walk("", v)
}

// fromURL records the signature and credential parameters of a query.
func (c *capturingEmulator) fromURL(where, rawQuery string) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return
	}
	for k, vs := range q {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "signature") || strings.Contains(lk, "credential") || strings.Contains(lk, "token") || lk == "sig" {
			for _, v := range vs {
				c.secrets.add(where+" "+k, kindStorage, v)
			}
		}
	}
}

// teeWriter keeps a copy of a reply's body.
type teeWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (t *teeWriter) Write(p []byte) (int, error) {
	t.buf.Write(p)
	return t.ResponseWriter.Write(p)
}

func (t *teeWriter) Flush() {
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// startCapturingEmulator serves an emulator for account inside ns (on
// 127.0.0.1 there), over TLS with a CA of its own, with chunk URLs on the
// storage host 127.0.0.1 as emulatortest does. It returns the API URL and
// the CA file.
func startCapturingEmulator(t *testing.T, ns *testenv.Netns, cfg emulator.Config, secrets *secretSet, before func(*emulator.Server, *http.Request, []byte)) (string, string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	cfg.StorageURL = "https://127.0.0.1:" + port
	cfg.DisableCompression = true
	srv, err := emulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := emulatortest.NewCA([]string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), cfg.Account+"-emulator-ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	ce := &capturingEmulator{account: cfg.Account, next: srv.Handler(), secrets: secrets}
	if before != nil {
		ce.before = func(r *http.Request, body []byte) { before(srv, r, body) }
	}
	hs := &http.Server{Handler: ce, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		_ = hs.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.Leaf}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}))
	}()
	t.Cleanup(func() { _ = hs.Close(); _ = srv.Close() })
	return "https://localhost:" + port, caFile
}

const secretsAgentEnv = "SNOWGATE_SECRETS_TEST_AGENT"

// secretHex is n random bytes in hex: the unguessable part of a planted
// secret.
func secretHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newPKCS8Key returns a fresh RSA key, its PKCS#8 DER and PEM.
func newPKCS8Key(t *testing.T) (*rsa.PrivateKey, []byte, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// querySep is the separator before one more query parameter of path.
func querySep(path string) string {
	if strings.Contains(path, "?") {
		return "&"
	}
	return "?"
}

// secretsAgentSpec is what TestSecretsAgentProcess does.
type secretsAgentSpec struct {
	// Tokens are the workload tokens per account host.
	Tokens map[string]string `json:"tokens"`
	// Refused is a token signed for another audience.
	Refused string `json:"refused"`
	// AgentPassword is a password the agent tries to log in with.
	AgentPassword string `json:"agent_password"`
	// ForeignIssuer is a token from an issuer the gateway does not trust,
	// tried with authenticator=OAUTH.
	ForeignIssuer string `json:"foreign_issuer"`
	// AgentKey is a PKCS#8 key (raw-URL base64 DER) the agent tries a
	// key-pair login with.
	AgentKey string `json:"agent_key"`
	// AgentPAT is a PAT the agent tries to log in with.
	AgentPAT string `json:"agent_pat"`
	// SQLPassword goes into an ALTER USER the policy refuses.
	SQLPassword string `json:"sql_password"`
	// Failing are account hosts whose upstream refuses the gateway's
	// credential: the agent's login there must fail, and the error it gets
	// is scanned.
	Failing []string `json:"failing"`
	// Out receives the gateway tokens the agent was given, as JSON lines.
	Out string `json:"out"`
}

// TestSecretsAgentProcess is not a test: it is the agent of
// TestSecretsNeverLeak, run in the agents' cgroup. It logs in raw to each
// account (so it sees the gateway's opaque tokens and reports them to the
// test through a file), queries and renews with them, then drives the
// unchanged gosnowflake driver through a read, a chunked read, a DML held
// for approval, refused statements (one carrying a password) and refused
// logins, printing every error the driver got. It skips otherwise.
func TestSecretsAgentProcess(t *testing.T) {
	raw := os.Getenv(secretsAgentEnv)
	if raw == "" {
		t.Skip("helper process for TestSecretsNeverLeak")
	}
	var spec secretsAgentSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := os.OpenFile(spec.Out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fail("%v", err)
	}
	defer out.Close()
	report := func(name, value string) {
		b, _ := json.Marshal(map[string]string{"name": name, "value": value})
		fmt.Fprintf(out, "%s\n", b)
	}
	hc := &http.Client{Timeout: time.Minute}
	post := func(host, path, auth string, body any) (map[string]any, error) {
		b, _ := json.Marshal(body)
		var rid [8]byte
		_, _ = rand.Read(rid[:])
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+host+path+querySep(path)+"requestId="+hex.EncodeToString(rid[:]), bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/snowflake")
		if auth != "" {
			req.Header.Set("Authorization", `Snowflake Token="`+auth+`"`)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if strings.Contains(path, "login-request") || strings.Contains(path, "token-request") {
			// These bodies carry the tokens the test learns from the file.
			fmt.Printf("raw %s %s: status %d\n", host, path, resp.StatusCode)
		} else {
			fmt.Printf("raw %s %s: status %d body %s\n", host, path, resp.StatusCode, rb)
		}
		var m map[string]any
		if err := json.Unmarshal(rb, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return m, nil
	}
	str := func(m map[string]any, k string) string {
		d, _ := m["data"].(map[string]any)
		s, _ := d[k].(string)
		return s
	}
	hosts := make([]string, 0, len(spec.Tokens))
	for h := range spec.Tokens {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, host := range hosts {
		account := strings.ToUpper(strings.SplitN(host, ".", 2)[0])
		m, err := post(host, "/session/v1/login-request", "", map[string]any{"data": map[string]any{
			"ACCOUNT_NAME": account, "AUTHENTICATOR": "WORKLOAD_IDENTITY", "PROVIDER": "OIDC",
			"TOKEN": spec.Tokens[host], "CLIENT_APP_ID": "Go", "CLIENT_APP_VERSION": "1.19.1",
		}})
		if err != nil {
			fail("raw login to %s: %v", host, err)
		}
		tok, master := str(m, "token"), str(m, "masterToken")
		if slices.Contains(spec.Failing, host) {
			if tok != "" {
				fail("login to %s succeeded; its upstream refuses the gateway's credential", host)
			}
			fmt.Printf("login to %s refused: %v\n", host, m["message"])
			continue
		}
		if tok == "" || master == "" {
			fail("raw login to %s: no tokens", host)
		}
		report(host+" gateway session token", tok)
		report(host+" gateway master token", master)
		if _, err := post(host, "/queries/v1/query-request", tok, map[string]any{"sqlText": "SELECT 1", "sequenceId": 1}); err != nil {
			fail("raw query on %s: %v", host, err)
		}
		m, err = post(host, "/session/token-request", master, map[string]any{"oldSessionToken": tok, "requestType": "RENEW"})
		if err != nil {
			fail("raw renew on %s: %v", host, err)
		}
		if renewed := str(m, "sessionToken"); renewed != "" {
			report(host+" renewed gateway session token", renewed)
			tok = renewed
		}
		// A stale token after the renewal: its error must not echo it.
		_, _ = post(host, "/queries/v1/query-request", "stale-"+tok, map[string]any{"sqlText": "SELECT 2", "sequenceId": 2})
		_, _ = post(host, "/session?delete=true", tok, map[string]any{})
	}

	dsn := func(host string, params url.Values) string {
		v := url.Values{"account": {strings.SplitN(host, ".", 2)[0]}, "loginTimeout": {"120"}, "disableTelemetry": {"true"}}
		for k, x := range params {
			v[k] = x
		}
		return host + ":443/?" + v.Encode()
	}
	acme := "acme.snowflakecomputing.com"
	db, err := sql.Open("snowflake", dsn(acme, url.Values{
		"authenticator": {"WORKLOAD_IDENTITY"}, "workloadIdentityProvider": {"OIDC"}, "token": {spec.Tokens[acme]},
	}))
	if err != nil {
		fail("open: %v", err)
	}
	defer db.Close()
	var one string
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		fail("SELECT 1: %v", err)
	}
	rows, err := db.QueryContext(ctx, "SELECT seq4() AS n FROM TABLE(GENERATOR(ROWCOUNT => 1000))")
	if err != nil {
		fail("generator: %v", err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		fail("generator rows: %v", err)
	}
	rows.Close()
	fmt.Printf("one=%s rows=%d\n", one, n)
	for _, q := range []string{
		"INSERT INTO SECRETS_DB.PUBLIC.T (A) VALUES (1)",
		"ALTER USER BOB SET PASSWORD = '" + spec.SQLPassword + "'",
		"DROP TABLE SECRETS_DB.PUBLIC.T",
	} {
		_, err := db.ExecContext(ctx, q)
		fmt.Printf("statement %.30q: error %v\n", q, err)
	}
	for name, conn := range map[string]string{
		"password login":          "SVC_PW:" + url.QueryEscape(spec.AgentPassword) + "@" + dsn(acme, nil),
		"foreign-audience token":  dsn(acme, url.Values{"authenticator": {"WORKLOAD_IDENTITY"}, "workloadIdentityProvider": {"OIDC"}, "token": {spec.Refused}}),
		"untrusted issuer, OAUTH": dsn(acme, url.Values{"authenticator": {"OAUTH"}, "token": {spec.ForeignIssuer}}),
		"agent's own key pair":    "SVC_KP@" + dsn(acme, url.Values{"authenticator": {"SNOWFLAKE_JWT"}, "privateKey": {spec.AgentKey}}),
		"agent's own PAT":         "SVC_PAT@" + dsn(acme, url.Values{"authenticator": {"PROGRAMMATIC_ACCESS_TOKEN"}, "token": {spec.AgentPAT}}),
	} {
		bad, err := sql.Open("snowflake", conn)
		if err == nil {
			err = bad.PingContext(ctx)
			bad.Close()
		}
		if err == nil {
			fail("%s was admitted", name)
		}
		fmt.Printf("%s refused: %v\n", name, err)
	}
	os.Exit(0)
}

// TestSecretsNeverLeak runs `snowgate run` with a known set of secrets
// and scans every output for them: the product promise that secrets never
// appear in logs, recordings or errors. The daemon fronts four emulated
// accounts: one per credential type (key pair, PAT, password) and one
// whose upstream refuses the gateway's password. Agents in the agents'
// cgroup (raw HTTP, gosnowflake, the Node snowflake-sdk) log in with
// workload tokens, read inline and chunked results, renew, run into an
// upstream session expiry and failed chunk downloads, have a DML approved
// by a reviewer through the CLI, and get statements and logins refused.
// Secrets come from three places: planted (keys, PAT, passwords, workload
// and reviewer tokens, what agents try), captured on the emulators' side
// (the gateway's key-pair JWTs, real session and master tokens, chunk
// signatures, SSE-C keys) and reported by the agent (the gateway's opaque
// tokens); patterns catch any JWT, private key block or emulator token
// besides. Outputs scanned: the daemon's log, every file the daemon wrote
// (exchange log, audit log, approvals store, state files, raw recordings),
// each recording through `sessions show|replay|verify|export --format
// jsonl|pcap`, /metrics, the approvals CLI and API, and everything the
// drivers printed. The session state file may hold the real Snowflake
// tokens (documented) and must be 0600, as must the identity state file
// and the seal key.
func TestSecretsNeverLeak(t *testing.T) {
	testenv.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipping the daemon end-to-end test in -short mode")
	}
	bin := buildSnowgate(t)
	dir := t.TempDir()   // the daemon's files: everything here is scanned
	vault := t.TempDir() // the test's own files and the credential files
	secrets := &secretSet{}
	certFile, keyFile := filepath.Join(vault, "ca.pem"), filepath.Join(vault, "ca.key")
	if out, err := runSnowgate(t, bin, "ca", "init", "--cert", certFile, "--key", keyFile); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	caKey, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	secrets.addPEMKey("gateway CA key", kindCredential, caKey)

	// The gateway's credentials, one account each.
	svcKey, _, keyPEM := newPKCS8Key(t)
	secrets.addPEMKey("service user private key", kindCredential, keyPEM)
	pat := "pat-" + secretHex(24)
	password := "pw-" + secretHex(16)
	secrets.add("PAT", kindCredential, pat)
	secrets.add("service user password", kindCredential, password)
	reviewerToken := "rev-" + secretHex(20)
	wrongReviewer := "rev-" + secretHex(20)
	secrets.add("reviewer token", kindReviewer, reviewerToken)
	secrets.add("a wrong reviewer token", kindReviewer, wrongReviewer)
	agentPassword := "agentpw-" + secretHex(12)
	sqlPassword := "sqlpw-" + secretHex(12)
	secrets.add("password an agent tried", kindAgentTried, agentPassword)
	secrets.add("password in an ALTER USER", kindSQL, sqlPassword)
	files := map[string][]byte{
		"svc.p8": keyPEM, "svc.pat": []byte(pat + "\n"), "svc.password": []byte(password + "\n"),
		"reviewers": []byte("alice@test " + reviewerToken + "\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(vault, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	cg := testenv.NewCgroup(t)
	ns := testenv.NewNetns(t)
	pinDir := filepath.Join("/sys/fs/bpf", "snowgate-secretstest-"+secretHex(6))
	t.Cleanup(func() { _ = redirect.Uninstall(pinDir) })
	// Right before the chunked read, acme's sessions expire: the renewal
	// path (the real master token at work) must not leak either; nor the
	// failed chunk downloads.
	var expireDone sync.Once
	var acmeFaults *emulator.Faults
	expireOnce := func(srv *emulator.Server, r *http.Request, body []byte) {
		if strings.Contains(r.URL.Path, "query-request") && bytes.Contains(body, []byte("GENERATOR")) {
			expireDone.Do(func() {
				srv.Faults().ExpireSessions()
				// And two chunk downloads fail: the error paths of
				// presigned URLs must not leak their signatures.
				srv.Faults().FailWith(emulator.EndpointChunk, http.StatusServiceUnavailable, 1)
				srv.Faults().ResetMidBody(emulator.EndpointChunk, 64, 1)
				acmeFaults = srv.Faults()
			})
		}
	}
	acmeURL, acmeCA := startCapturingEmulator(t, ns, emulator.Config{Account: "acme",
		PublicKeys: map[string]crypto.PublicKey{"SVC_KP": &svcKey.PublicKey}, InlineRows: 10, ChunkRows: 100}, secrets, expireOnce)
	betaURL, betaCA := startCapturingEmulator(t, ns, emulator.Config{Account: "beta", PATs: map[string]string{"SVC_PAT": pat}}, secrets, nil)
	gammaURL, gammaCA := startCapturingEmulator(t, ns, emulator.Config{Account: "gamma", Users: map[string]string{"SVC_PW": password}}, secrets, nil)
	// delta's gateway password is wrong: the upstream refuses it, and that
	// error path must not carry the password either.
	wrongPassword := "pw-wrong-" + secretHex(16)
	secrets.add("service user password refused upstream", kindCredential, wrongPassword)
	if err := os.WriteFile(filepath.Join(vault, "svc-delta.password"), []byte(wrongPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deltaURL, deltaCA := startCapturingEmulator(t, ns, emulator.Config{Account: "delta", Users: map[string]string{"SVC_PW": "pw-right-" + secretHex(16)}}, secrets, nil)

	issuer := oidctest.Start(t)
	jwksFile := issuer.WriteJWKSFile(t)
	tokens := map[string]string{}
	for _, a := range []string{"acme", "beta", "gamma", "delta"} {
		tok := issuer.Sign(t, oidctest.GitHub("snowgate", "acme", "1001", a, "4567"))
		tokens[a+".snowflakecomputing.com"] = tok
		secrets.addJWT("workload token for "+a, kindWorkload, tok)
	}
	refused := issuer.Sign(t, oidctest.GitHub("not-snowgate", "acme", "1001", "acme", "4567"))
	secrets.addJWT("workload token for another audience", kindAgentTried, refused)
	foreign := oidctest.Start(t).Sign(t, oidctest.GitHub("snowgate", "acme", "1001", "acme", "4567"))
	secrets.addJWT("token of an untrusted issuer", kindAgentTried, foreign)
	_, agentDER, agentPEM := newPKCS8Key(t)
	secrets.addPEMKey("the agent's own private key", kindAgentTried, agentPEM)
	agentPAT := "agentpat-" + secretHex(20)
	secrets.add("a PAT an agent tried", kindAgentTried, agentPAT)

	const admin = "127.0.0.1:9464" // inside the private namespace
	identityState := filepath.Join(dir, "identity-state.json")
	sessionState := filepath.Join(dir, "sessions.json")
	exchangeLog := filepath.Join(dir, "exchanges.jsonl")
	auditLog := filepath.Join(dir, "audit.jsonl")
	// The recording seal key: documented to be created at first start,
	// 0600, in the recording directory by default.
	signingKey := filepath.Join(dir, "recordings", "signing-key.pem")
	cfg := fmt.Sprintf(`intercept:
  cgroup: %[1]s
ca:
  cert_file: %[2]s
  key_file: %[3]s
dns:
  upstreams: ["127.0.0.1:1"]
  static:
    acme.snowflakecomputing.com: [203.0.113.10]
    beta.snowflakecomputing.com: [203.0.113.10]
    gamma.snowflakecomputing.com: [203.0.113.10]
    delta.snowflakecomputing.com: [203.0.113.10]
accounts:
  acme:
    host: acme.snowflakecomputing.com
    upstream: %[4]s
    upstream_ca_file: %[5]s
    credential: {type: keypair, user: SVC_KP, private_key_file: %[6]s}
  beta:
    host: beta.snowflakecomputing.com
    upstream: %[7]s
    upstream_ca_file: %[8]s
    credential: {type: pat, user: SVC_PAT, token_file: %[9]s}
  gamma:
    host: gamma.snowflakecomputing.com
    upstream: %[10]s
    upstream_ca_file: %[11]s
    credential: {type: password, user: SVC_PW, password_file: %[12]s}
  delta:
    host: delta.snowflakecomputing.com
    upstream: %[23]s
    upstream_ca_file: %[24]s
    credential: {type: password, user: SVC_PW, password_file: %[25]s}
identity:
  issuers:
    - issuer: %[13]s
      audiences: [snowgate]
      keys: {source: jwks_file, file: %[14]s}
  state_file: %[15]s
  sessions:
    state_file: %[16]s
rules:
  - name: acme-agents
    match: {issuer: "%[13]s", claims: {repository: acme/acme}}
    account: acme
    snowflake: {role: R}
    statements: {read: allow, dml: approve, ddl: deny, privileged: deny}
  - name: beta-agents
    match: {issuer: "%[13]s", claims: {repository: acme/beta}}
    account: beta
    snowflake: {role: R}
  - name: gamma-agents
    match: {issuer: "%[13]s", claims: {repository: acme/gamma}}
    account: gamma
    snowflake: {role: R}
  - name: delta-agents
    match: {issuer: "%[13]s", claims: {repository: acme/delta}}
    account: delta
    snowflake: {role: R}
recording:
  dir: %[17]s
  exchange_log: %[18]s
  audit: {file: %[19]s}
approvals:
  timeout: 3m
  store: {sqlite: %[20]s}
  reviewers: {token_file: %[21]s}
admin:
  listen: %[22]s
`, cg.Path, certFile, keyFile,
		acmeURL, acmeCA, filepath.Join(vault, "svc.p8"),
		betaURL, betaCA, filepath.Join(vault, "svc.pat"),
		gammaURL, gammaCA, filepath.Join(vault, "svc.password"),
		issuer.URL, jwksFile, identityState, sessionState,
		filepath.Join(dir, "recordings"), exchangeLog, auditLog,
		filepath.Join(dir, "approvals.db"), filepath.Join(vault, "reviewers"), admin,
		deltaURL, deltaCA, filepath.Join(vault, "svc-delta.password"))
	cfgFile := filepath.Join(vault, "snowgate.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	// outputs are the texts to scan besides the daemon's files.
	var outMu sync.Mutex
	outputs := map[string][]byte{}
	keep := func(name string, b []byte) {
		outMu.Lock()
		defer outMu.Unlock()
		outputs[name] = append(outputs[name], b...)
	}
	cli := func(args ...string) (string, error) {
		cmd := testenv.Command(t, testenv.Proc{Netns: ns, Root: true}, bin, args...)
		out, err := cmd.CombinedOutput()
		keep("snowgate "+strings.Join(args[:min(2, len(args))], " "), out)
		return string(out), err
	}

	d := startDaemonProc(t, testenv.Command(t, testenv.Proc{Netns: ns, Root: true}, bin, "--log-level", "debug", "run", "--config", cfgFile, "--pin-dir", pinDir), "")
	client := ns.HTTPClient(30 * time.Second)
	get := func(path, bearer string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+admin+path, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitAdmin(t, d, client, "http://"+admin+"/readyz", func(code int, _ string) bool { return code == http.StatusOK })

	// The reviewer approves what the agent's DML waits for, through the CLI.
	stopReview := make(chan struct{})
	reviewDone := make(chan int)
	go func() {
		approved := 0
		seen := map[string]bool{}
		defer func() { reviewDone <- approved }()
		for {
			select {
			case <-stopReview:
				return
			case <-time.After(500 * time.Millisecond):
			}
			out, err := cli("approvals", "list", "--json", "--config", cfgFile)
			if err != nil {
				continue
			}
			var list []struct{ ID, State string }
			if json.Unmarshal([]byte(out), &list) != nil {
				continue
			}
			for _, r := range list {
				if r.State != "pending" || seen[r.ID] {
					continue
				}
				seen[r.ID] = true
				_, _ = cli("approvals", "show", r.ID, "--config", cfgFile)
				if _, err := cli("approvals", "approve", r.ID, "--reason", "fine", "--config", cfgFile); err == nil {
					approved++
				}
			}
		}
	}()

	agentFile := filepath.Join(vault, "agent-tokens.jsonl")
	spec, _ := json.Marshal(secretsAgentSpec{Tokens: tokens, Failing: []string{"delta.snowflakecomputing.com"}, Refused: refused,
		ForeignIssuer: foreign, AgentKey: base64.RawURLEncoding.EncodeToString(agentDER), AgentPAT: agentPAT, AgentPassword: agentPassword, SQLPassword: sqlPassword, Out: agentFile})
	agent := testenv.Command(t, testenv.Proc{Cgroup: cg, Netns: ns, Root: true},
		os.Args[0], "-test.run=^TestSecretsAgentProcess$", "-test.count=1")
	agent.Env = testenv.DriverEnv(t, certFile, secretsAgentEnv+"="+string(spec))
	agentOut, agentErr := agent.CombinedOutput()
	close(stopReview)
	approved := <-reviewDone
	keep("agent output (driver errors)", agentOut)
	if agentErr != nil || !strings.Contains(string(agentOut), "one=1 rows=1000") {
		t.Fatalf("agent: %v\n%s\ndaemon:\n%s", agentErr, agentOut, d.logs())
	}
	expireDone.Do(func() {})
	if acmeFaults == nil {
		t.Errorf("acme's sessions were never expired: the renewal path was not exercised")
	} else if n := acmeFaults.Injected(emulator.EndpointChunk); n == 0 {
		t.Errorf("no chunk download fault was injected: the chunk error paths were not exercised")
	}
	if approved == 0 {
		t.Errorf("no approval request was approved; the DML path was not exercised:\n%s", agentOut)
	}
	if b, err := os.ReadFile(agentFile); err != nil {
		t.Fatalf("the agent reported no gateway tokens: %v", err)
	} else {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var kv map[string]string
			if json.Unmarshal([]byte(line), &kv) == nil {
				secrets.add(kv["name"], kindGateway, kv["value"])
			}
		}
	}

	// The unchanged Node driver: a chunked read, a refused statement and
	// refused logins; its results, errors and log lines are scanned too.
	for _, conn := range []testenv.NodeConnection{
		{Account: "acme", Authenticator: "WORKLOAD_IDENTITY", WorkloadIdentityProvider: "OIDC", Token: tokens["acme.snowflakecomputing.com"]},
		{Account: "acme", Username: "SVC_PW", Password: agentPassword},
		{Account: "acme", Authenticator: "OAUTH", Token: foreign},
	} {
		node := testenv.NewNodeClient(t)
		node.CAFile = certFile
		node.Proc = &testenv.Proc{Cgroup: cg, Netns: ns, Root: true}
		var stderr testenv.SyncBuffer
		node.Stderr = &stderr
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		res, err := node.Run(ctx,
			testenv.NodeConnect(conn),
			testenv.NodeExecute("SELECT seq4() AS n FROM TABLE(GENERATOR(ROWCOUNT => 1000))"),
			testenv.NodeExecute("DROP TABLE SECRETS_DB.PUBLIC.T"),
			testenv.NodeDestroy(),
		)
		cancel()
		b, _ := json.Marshal(res)
		name := "node client " + cmp.Or(conn.Authenticator, "password")
		keep(name, append(b, stderr.String()...))
		if err != nil {
			keep(name, []byte(err.Error()))
		}
		if conn.Token == tokens["acme.snowflakecomputing.com"] && (err != nil || len(res) < 2 || res[1].Err() != nil || len(res[1].Rows) != 1000) {
			t.Errorf("node client: %v, results %.2000s", err, b)
		}
	}

	// The approvals API, as a reviewer and with a wrong token.
	for _, c := range []struct{ path, bearer string }{
		{"/approvals?state=approved", reviewerToken}, {"/approvals?state=pending", wrongReviewer}, {"/approvals", ""},
	} {
		code, body := get(c.path, c.bearer)
		keep(fmt.Sprintf("approvals API GET %s (status %d)", c.path, code), []byte(body))
	}
	if code, body := get("/metrics", ""); code != http.StatusOK {
		t.Errorf("GET /metrics: %d %s", code, body)
	} else {
		keep("/metrics", []byte(body))
	}
	_, _ = cli("approvals", "list", "--state", "all", "--config", cfgFile)

	if err := d.stop(t); err != nil {
		t.Errorf("snowgate run after SIGTERM: %v", err)
	}
	keep("daemon log", []byte(d.logs()))
	t.Logf("daemon log:\n%s", d.logs())

	// Every recording, through every reader an auditor has.
	list, err := cli("sessions", "list", "--json", "--config", cfgFile)
	if err != nil {
		t.Fatalf("sessions list: %v\n%s", err, list)
	}
	var sessions []map[string]any
	for dec := json.NewDecoder(strings.NewReader(list)); dec.More(); {
		var s map[string]any
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("sessions list --json: %v\n%s", err, list)
		}
		sessions = append(sessions, s)
	}
	if len(sessions) == 0 {
		t.Fatalf("sessions list --json: no session\n%s", list)
	}
	for _, s := range sessions {
		id, _ := s["id"].(string)
		if id == "" {
			id, _ = s["session"].(string)
		}
		if id == "" {
			t.Errorf("a session without id: %v", s)
			continue
		}
		for _, args := range [][]string{
			{"sessions", "show", id}, {"sessions", "replay", id, "--speed", "0", "--max-rows", "0"}, {"sessions", "verify", id},
			{"sessions", "export", id, "--format", "jsonl"}, {"sessions", "export", id, "--format", "pcap"},
		} {
			out, err := cli(append(args, "--config", cfgFile)...)
			if err != nil {
				t.Errorf("snowgate %s: %v\n%.2000s", strings.Join(args, " "), err, out)
			}
			keep("snowgate "+strings.Join(args, " "), []byte(out))
		}
	}

	all := secrets.snapshot()
	count := map[string]int{}
	for _, s := range all {
		count[s.kind]++
	}
	t.Logf("scanning for %d secrets: %v", len(all), count)
	for _, s := range all {
		t.Logf("secret: %s [%s], %d bytes", s.name, s.kind, len(s.value))
	}
	for _, kind := range []string{kindCredential, kindSnowflake, kindWorkload, kindGateway, kindStorage, kindReviewer} {
		if count[kind] == 0 {
			t.Errorf("no %s was planted or captured: the scan would prove nothing about it", kind)
		}
	}
	var leaks []secretLeak
	for name, b := range outputs {
		t.Logf("scanned output %s (%d bytes)", name, len(b))
		leaks = append(leaks, scanSecrets(all, name, b)...)
	}
	// The files the daemon wrote. The session state file is documented to
	// hold the real Snowflake tokens; it must then be 0600.
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var allowed []string
		switch path {
		case sessionState:
			allowed = []string{kindSnowflake}
		case signingKey:
			allowed = []string{kindOwnKey}
		}
		rel, _ := filepath.Rel(dir, path)
		fi, _ := d.Info()
		t.Logf("scanned %s (%d bytes, mode %v)", rel, len(b), fi.Mode().Perm())
		leaks = append(leaks, scanSecrets(all, rel, b, allowed...)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{identityState, sessionState, signingKey} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Logf("%s: %v", filepath.Base(f), err)
			continue
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v; a state file must be 0600", filepath.Base(f), fi.Mode().Perm())
		}
	}
	for _, f := range []string{exchangeLog, auditLog} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Errorf("%s was not written (%v): the scan would prove nothing about it", filepath.Base(f), err)
		}
	}
	sort.Slice(leaks, func(i, j int) bool { return leaks[i].where+leaks[i].secret < leaks[j].where+leaks[j].secret })
	reportLeaks(t, leaks, true)
}

// knownLeaks are leaks found by TestSecretsNeverLeak and reported to the
// owner of the code, not yet fixed. Each is its own sub-test, skipped while
// the leak is there (saying exactly what leaks) and passing once it is
// gone; every other leak fails the test.
var knownLeaks = []struct {
	name, where, kind, detail string
}{}

// reportLeaks fails the test for each leak, except those of knownLeaks,
// which are reported by their own skipped sub-tests. With all, every known
// leak gets its sub-test (passing once the leak is gone); otherwise only
// those found.
func reportLeaks(t *testing.T, leaks []secretLeak, all bool) {
	t.Helper()
	matched := make([][]secretLeak, len(knownLeaks))
	for _, l := range leaks {
		known := false
		for i, k := range knownLeaks {
			if l.where == k.where && l.kind == k.kind {
				matched[i] = append(matched[i], l)
				known = true
				break
			}
		}
		if !known {
			t.Errorf("LEAK %s", l)
		}
	}
	for i, k := range knownLeaks {
		if !all && len(matched[i]) == 0 {
			continue
		}
		t.Run("known leak/"+k.name, func(t *testing.T) {
			if len(matched[i]) == 0 {
				t.Logf("no longer leaks: remove this entry of knownLeaks")
				return
			}
			for _, l := range matched[i] {
				t.Logf("LEAK %s", l)
			}
			t.Skipf("known leak, reported to its owner: %s", k.detail)
		})
	}
}

// TestSecretsDemo runs `snowgate demo` (the whole path a newcomer sees:
// emulator, workload token, daemon, gosnowflake agent with reads, an
// approved DML, a refused DDL, bypass attempts, recordings, the approvals
// CLI) and scans its narration, every file of its state directory and
// every recording read back through `snowgate sessions` for the demo's
// secrets: the service user's key, the gateway CA's key, the reviewer's
// token, and by pattern any JWT (the agent's workload token, the gateway's
// key-pair JWTs) and any real session or master token of the emulator.
func TestSecretsDemo(t *testing.T) {
	testenv.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipping the demo in -short mode")
	}
	bin := buildSnowgate(t)
	state := filepath.Join(t.TempDir(), "state")
	out, err := runSnowgate(t, bin, "demo", "--rows", "2000", "--state-dir", state)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"approved and run", "refused: error 003001", "[9/9"} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's output lacks %q: the path it scans was not all run", want)
		}
	}
	secrets := &secretSet{}
	// The files that hold the demo's secrets: their content is what the
	// scan looks for; they are checked for their mode, not scanned.
	vaults := map[string]func([]byte){
		"service-user.p8": func(b []byte) { secrets.addPEMKey("service user private key", kindCredential, b) },
		"ca.key":          func(b []byte) { secrets.addPEMKey("gateway CA key", kindCredential, b) },
		"reviewer.token":  func(b []byte) { secrets.add("reviewer token", kindReviewer, string(b)) },
	}
	for name, add := range vaults {
		p := filepath.Join(state, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		add(b)
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v; want 0600", name, fi.Mode().Perm())
		}
	}
	all := secrets.snapshot()
	leaks := scanSecrets(all, "demo output", []byte(out))
	cfgFile := filepath.Join(state, "snowgate.yaml")
	signingKey := filepath.Join(state, "recordings", "signing-key.pem")
	err = filepath.WalkDir(state, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(state, path)
		if vaults[rel] != nil {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var allowed []string
		if path == signingKey {
			allowed = []string{kindOwnKey}
		}
		leaks = append(leaks, scanSecrets(all, rel, b, allowed...)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	list, err := runSnowgate(t, bin, "sessions", "list", "--json", "--config", cfgFile)
	if err != nil {
		t.Fatalf("sessions list: %v\n%s", err, list)
	}
	leaks = append(leaks, scanSecrets(all, "sessions list", []byte(list))...)
	n := 0
	for dec := json.NewDecoder(strings.NewReader(list)); dec.More(); n++ {
		var s struct{ Session string }
		if err := dec.Decode(&s); err != nil || s.Session == "" {
			t.Fatalf("sessions list --json: %v\n%s", err, list)
		}
		for _, args := range [][]string{
			{"sessions", "show", s.Session}, {"sessions", "replay", s.Session, "--speed", "0", "--max-rows", "0"},
			{"sessions", "export", s.Session, "--format", "jsonl"}, {"sessions", "export", s.Session, "--format", "pcap"},
		} {
			out, err := runSnowgate(t, bin, append(args, "--config", cfgFile)...)
			if err != nil {
				t.Errorf("snowgate %s: %v\n%.2000s", strings.Join(args, " "), err, out)
			}
			leaks = append(leaks, scanSecrets(all, "snowgate "+strings.Join(args, " "), []byte(out))...)
		}
	}
	if n == 0 {
		t.Fatalf("the demo recorded no session:\n%s", list)
	}
	t.Logf("scanned the demo's output, %d recorded sessions and its state directory for %d secrets and the token patterns", n, len(all))
	reportLeaks(t, leaks, false)
}

// TestSecretsInConfigErrors gives `snowgate run` and `snowgate doctor`
// secret files they must refuse (a key file holding something else, a
// corrupt key, loose permissions, a secret written inline in the YAML) and checks that the refusal
// names the problem without echoing the secret.
func TestSecretsInConfigErrors(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildSnowgate(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if out, err := runSnowgate(t, bin, "ca", "init", "--cert", certFile, "--key", keyFile); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	garbage := make([]byte, 600)
	_, _ = rand.Read(garbage)
	corrupt := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: garbage})
	_, _, goodPEM := newPKCS8Key(t)
	notAKey := "sk-live-" + secretHex(24)
	loosePAT := "pat-loose-" + secretHex(24)
	inline := "pw-inline-" + secretHex(16)

	cg := testenv.NewCgroup(t)
	ns := testenv.NewNetns(t)
	issuer := oidctest.Start(t)
	jwksFile := issuer.WriteJWKSFile(t)
	tests := []struct {
		name   string
		file   []byte      // the secret file's content
		mode   os.FileMode // its mode
		cred   string      // the account's credential (FILE: the file's path)
		extra  string      // more configuration (FILE: the file's path)
		secret func(*secretSet)
	}{
		{"key file holding a token", []byte(notAKey + "\n"), 0o600, "{type: keypair, user: SVC, private_key_file: FILE}", "",
			func(s *secretSet) { s.add("not a key", kindCredential, notAKey) }},
		{"corrupt PKCS#8 key", corrupt, 0o600, "{type: keypair, user: SVC, private_key_file: FILE}", "",
			func(s *secretSet) { s.addPEMKey("corrupt key", kindCredential, corrupt) }},
		{"key file readable by others", goodPEM, 0o644, "{type: keypair, user: SVC, private_key_file: FILE}", "",
			func(s *secretSet) { s.addPEMKey("world-readable key", kindCredential, goodPEM) }},
		{"PAT file readable by others", []byte(loosePAT + "\n"), 0o644, "{type: pat, user: SVC, token_file: FILE}", "",
			func(s *secretSet) { s.add("world-readable PAT", kindCredential, loosePAT) }},
		{"password inline in the YAML", []byte("unused\n"), 0o600, "{type: password, user: SVC, password: " + inline + "}", "",
			func(s *secretSet) { s.add("inline password", kindCredential, inline) }},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			secretFile := filepath.Join(dir, fmt.Sprintf("secret-%d", i))
			if err := os.WriteFile(secretFile, tc.file, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(secretFile, tc.mode); err != nil {
				t.Fatal(err)
			}
			cfg := fmt.Sprintf(`intercept:
  cgroup: %s
ca:
  cert_file: %s
  key_file: %s
dns:
  upstreams: ["127.0.0.1:1"]
accounts:
  acme:
    host: acme.snowflakecomputing.com
    upstream: https://localhost:1
    credential: %s
identity:
  issuers:
    - issuer: %s
      audiences: [snowgate]
      keys: {source: jwks_file, file: %s}
rules:
  - name: r
    match: {issuer: "%s", claims: {repository: acme/app}}
    account: acme
    snowflake: {role: R}
recording:
  dir: %s
admin:
  listen: 127.0.0.1:9464
%s`, cg.Path, certFile, keyFile, strings.ReplaceAll(tc.cred, "FILE", secretFile), issuer.URL, jwksFile, issuer.URL,
				filepath.Join(dir, fmt.Sprintf("recordings-%d", i)), strings.ReplaceAll(tc.extra, "FILE", secretFile))
			cfgFile := filepath.Join(dir, fmt.Sprintf("snowgate-%d.yaml", i))
			if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			secrets := &secretSet{}
			tc.secret(secrets)
			pinDir := filepath.Join("/sys/fs/bpf", "snowgate-secretscfg-"+secretHex(6))
			t.Cleanup(func() { _ = redirect.Uninstall(pinDir) })
			run := testenv.Command(t, testenv.Proc{Netns: ns, Root: true}, bin, "--log-level", "debug", "run", "--config", cfgFile, "--pin-dir", pinDir)
			var out testenv.SyncBuffer
			run.Stdout, run.Stderr = &out, &out
			if err := run.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- run.Wait() }()
			select {
			case err := <-done:
				if err == nil {
					t.Errorf("snowgate run accepted the configuration:\n%s", out.String())
				}
			case <-time.After(90 * time.Second):
				_ = run.Process.Kill()
				<-done
				t.Errorf("snowgate run did not refuse the configuration within 90s:\n%s", out.String())
			}
			leaks := scanSecrets(secrets.snapshot(), "snowgate run", []byte(out.String()))
			doctor, _ := runSnowgate(t, bin, "doctor", "--config", cfgFile, "--pin-dir", pinDir)
			leaks = append(leaks, scanSecrets(secrets.snapshot(), "snowgate doctor", []byte(doctor))...)
			t.Logf("snowgate run said: %s", strings.TrimSpace(out.String()))
			reportLeaks(t, leaks, false)
		})
	}
}
