package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests prove the harness itself with the real driver against small
// servers that only record what reached them and refuse the login; the
// driver's conversations with a real Snowflake-protocol server are proved in
// internal/emulator (node_test.go) and the gateway tests.

// loginRecorder is a TLS server that records login requests and refuses them
// with Snowflake's wrong-password reply.
type loginRecorder struct {
	srv    *httptest.Server
	caFile string

	mu       sync.Mutex
	requests []recordedRequest
}

type recordedRequest struct {
	Path      string
	TLS       bool
	UserAgent string
	Body      map[string]any
}

func newLoginRecorder(t *testing.T) *loginRecorder {
	t.Helper()
	return newLoginRecorderOn(t, nil)
}

// newLoginRecorderOn serves on l (nil: a loopback port of the test's own
// network namespace).
func newLoginRecorderOn(t *testing.T, l net.Listener) *loginRecorder {
	t.Helper()
	caPEM, leaf := testCA(t)
	lr := &loginRecorder{}
	lr.srv = httptest.NewUnstartedServer(http.HandlerFunc(lr.serve))
	if l != nil {
		lr.srv.Listener.Close()
		lr.srv.Listener = l
	}
	lr.srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}}
	lr.srv.StartTLS()
	t.Cleanup(lr.srv.Close)
	lr.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(lr.caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return lr
}

func (lr *loginRecorder) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var body map[string]any
	json.Unmarshal(b, &body)
	lr.mu.Lock()
	lr.requests = append(lr.requests, recordedRequest{Path: r.URL.Path, TLS: r.TLS != nil, UserAgent: r.UserAgent(), Body: body})
	lr.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"data":{"nextAction":"RETRY_LOGIN","authnMethod":"PASSWORD"},"code":"390100","message":"Incorrect username or password was specified.","success":false,"headers":null}`)
}

func (lr *loginRecorder) recorded() []recordedRequest {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return append([]recordedRequest(nil), lr.requests...)
}

// testCA returns a CA certificate (PEM) and a leaf for 127.0.0.1 it signed.
// The driver's OCSP walk needs a real chain: a self-signed leaf would leave
// it nothing to check.
func testCA(t *testing.T) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "snowgate harness test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
}

func closedPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// ciToken is an unsigned JWT with the iss and sub claims the driver checks
// before a WORKLOAD_IDENTITY login (it verifies no signature).
const ciToken = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9." +
	"eyJpc3MiOiJodHRwczovL3Rva2VuLmV4YW1wbGUiLCJzdWIiOiJyZXBvOmFjbWUvcGlwZWxpbmVzIiwiYXVkIjoic25vd2dhdGUifQ." +
	"c2lnbmF0dXJl"

func TestNodeClientLoginOverTLS(t *testing.T) {
	lr := newLoginRecorder(t)
	for _, tc := range []struct {
		name    string
		trustCA bool
		conn    NodeConnection
		env     []string
		// wantCode and wantMessage describe the connect error; wantData the
		// login body fields the server must have seen (nil: no request).
		wantCode    string
		wantMessage string
		wantData    map[string]any
	}{
		{
			// Without the CA the driver must refuse the server (and never
			// fall back to an insecure connection).
			name:        "untrusted CA",
			conn:        NodeConnection{Username: "alice", Password: "wrong"},
			wantMessage: "certificate",
		},
		{
			// With NODE_EXTRA_CA_CERTS the login reaches the server over TLS
			// and its refusal comes back as a structured Snowflake error.
			name:     "password",
			trustCA:  true,
			conn:     NodeConnection{Username: "alice", Password: "wrong"},
			wantCode: "390100",
			wantData: map[string]any{"LOGIN_NAME": "alice", "PASSWORD": "wrong", "AUTHENTICATOR": "SNOWFLAKE", "ACCOUNT_NAME": "harness"},
		},
		{
			name:     "programmatic access token",
			trustCA:  true,
			conn:     NodeConnection{Authenticator: "PROGRAMMATIC_ACCESS_TOKEN", Username: "bob", Token: "pat-1"},
			wantCode: "390100",
			wantData: map[string]any{"LOGIN_NAME": "bob", "TOKEN": "pat-1", "AUTHENTICATOR": "PROGRAMMATIC_ACCESS_TOKEN"},
		},
		{
			// The driver allows workload identity only for Snowflake hosts.
			name:        "workload identity, host not allowed",
			trustCA:     true,
			conn:        NodeConnection{Authenticator: "WORKLOAD_IDENTITY", WorkloadIdentityProvider: "OIDC", Token: ciToken},
			wantMessage: "recognized Snowflake host",
		},
		{
			name:     "workload identity",
			trustCA:  true,
			conn:     NodeConnection{Authenticator: "WORKLOAD_IDENTITY", WorkloadIdentityProvider: "OIDC", Token: ciToken},
			env:      []string{"SNOWFLAKE_WIF_ALLOWED_HOST_SUFFIXES=127.0.0.1"},
			wantCode: "390100",
			wantData: map[string]any{"AUTHENTICATOR": "WORKLOAD_IDENTITY", "PROVIDER": "OIDC", "TOKEN": ciToken},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(lr.recorded())
			c := NewNodeClient(t)
			if tc.trustCA {
				c.CAFile = lr.caFile
			}
			c.Env = tc.env
			conn := tc.conn
			conn.Account, conn.AccessURL = "harness", lr.srv.URL
			conn.Extra = map[string]any{"sfRetryMaxLoginRetries": 0}
			res, err := c.Run(testContext(t), NodeConnect(conn), NodeExecute("SELECT 1"))
			if err != nil {
				t.Fatalf("harness: %v", err)
			}
			if len(res) != 2 {
				t.Fatalf("got %d results, want 2", len(res))
			}
			if r := res[0]; r.OK || r.Error == nil {
				t.Fatalf("connect succeeded against a server that refuses every login: %+v", r)
			}
			e := res[0].Error
			if tc.wantCode != "" && e.Code != tc.wantCode {
				t.Errorf("connect error code %q, want %q (%v)", e.Code, tc.wantCode, e)
			}
			if tc.wantMessage != "" && !strings.Contains(e.Message+" "+e.Cause, tc.wantMessage) {
				t.Errorf("connect error %v does not say %q", e, tc.wantMessage)
			}
			if ex := res[1]; ex.OK || ex.Error == nil || ex.Error.Code != "HARNESS_NOT_CONNECTED" {
				t.Errorf("execute after a failed connect: %+v, want HARNESS_NOT_CONNECTED", ex)
			}
			got := lr.recorded()[before:]
			if tc.wantData == nil {
				if len(got) != 0 {
					t.Fatalf("the server received %d requests, want none", len(got))
				}
				return
			}
			if len(got) == 0 {
				t.Fatal("the login never reached the server")
			}
			r := got[0]
			if r.Path != "/session/v1/login-request" || !r.TLS || !strings.HasPrefix(r.UserAgent, "JavaScript/") {
				t.Errorf("unexpected login request: %+v", r)
			}
			data, _ := r.Body["data"].(map[string]any)
			for k, want := range tc.wantData {
				if data[k] != want {
					t.Errorf("login data %s = %v, want %v", k, data[k], want)
				}
			}
		})
	}
}

func TestNodeClientStructuredFailures(t *testing.T) {
	// A server that accepts the login and never answers: the driver hangs,
	// and the harness must turn that into a HARNESS_TIMEOUT result.
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })

	for _, tc := range []struct {
		name     string
		steps    []NodeStep
		wantOps  []string
		wantCode []string
	}{
		{
			name: "connection refused",
			steps: []NodeStep{
				NodeConnect(NodeConnection{Account: "harness", AccessURL: closedPortURL(t), Username: "u", Password: "p",
					Extra: map[string]any{"sfRetryMaxLoginRetries": 0}}),
				NodeDestroy(),
			},
			wantOps:  []string{"connect", "destroy"},
			wantCode: []string{"401001", ""},
		},
		{
			name:     "unknown op",
			steps:    []NodeStep{{Op: "bogus"}, NodeSleep(10 * time.Millisecond)},
			wantOps:  []string{"bogus", "sleep"},
			wantCode: []string{"HARNESS_BAD_STEP", ""},
		},
		{
			name: "hung server",
			steps: []NodeStep{
				func() NodeStep {
					s := NodeConnect(NodeConnection{Account: "harness", AccessURL: hang.URL, Username: "u", Password: "p"})
					s.TimeoutMS = 3000
					return s
				}(),
			},
			wantOps:  []string{"connect"},
			wantCode: []string{"HARNESS_TIMEOUT"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewNodeClient(t)
			res, err := c.Run(testContext(t), tc.steps...)
			// A timed-out step ends the client with exit status 3; that is the
			// documented outcome, every other run must exit cleanly.
			if err != nil && !(tc.name == "hung server" && strings.Contains(err.Error(), "exit status 3")) {
				t.Fatalf("harness: %v", err)
			}
			if len(res) != len(tc.wantOps) {
				t.Fatalf("got %d results, want %d: %+v", len(res), len(tc.wantOps), res)
			}
			for i, r := range res {
				if r.Step != i || r.Op != tc.wantOps[i] {
					t.Errorf("result %d is step %d op %q, want step %d op %q", i, r.Step, r.Op, i, tc.wantOps[i])
				}
				if tc.wantCode[i] == "" {
					if r.Err() != nil {
						t.Errorf("step %d: %v", i, r.Err())
					}
					continue
				}
				if r.OK || r.Error == nil || r.Error.Code != tc.wantCode[i] {
					t.Errorf("step %d: %+v, want error code %s", i, r, tc.wantCode[i])
				}
			}
		})
	}
}

func TestNodeClientSessionAsNobody(t *testing.T) {
	RequireRoot(t)
	lr := newLoginRecorder(t)
	c := NewNodeClient(t)
	c.CAFile = lr.caFile
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	s, err := c.Start(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	// One step at a time over the same process.
	for i, user := range []string{"first", "second"} {
		r, err := s.Do(NodeConnect(NodeConnection{Account: "harness", AccessURL: lr.srv.URL, Username: user, Password: "x",
			Extra: map[string]any{"sfRetryMaxLoginRetries": 0}}))
		if err != nil {
			t.Fatalf("harness: %v", err)
		}
		if r.Step != i || r.Error == nil || r.Error.Code != "390100" {
			t.Fatalf("connect %d as nobody: %+v", i, r)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	var users []string
	for _, r := range lr.recorded() {
		if data, ok := r.Body["data"].(map[string]any); ok {
			users = append(users, data["LOGIN_NAME"].(string))
		}
	}
	if strings.Join(users, ",") != "first,second" {
		t.Errorf("logins seen by the server: %v, want first,second", users)
	}
	st, err := os.Stat(c.HomeDir)
	if err != nil {
		t.Fatal(err)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 65534 {
		t.Errorf("client home owned by uid %d, want 65534", uid)
	}
}

// TestNodeRowsDigest checks the Go digest against the framing it documents
// and against client.js's own RowDigest on the same rows.
func TestNodeRowsDigest(t *testing.T) {
	c := NewNodeClient(t)
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		name  string
		rows  [][]*string
		input string
	}{
		{name: "empty", rows: nil, input: ""},
		{name: "one row", rows: [][]*string{{s("0"), s("abc")}}, input: "1:0,3:abc;"},
		{name: "null and empty differ", rows: [][]*string{{nil, s("")}}, input: "-,0:;"},
		{name: "separators inside values", rows: [][]*string{{s("a,b;c")}, {s("-")}}, input: "5:a,b;c;1:-;"},
		{name: "bytes not runes", rows: [][]*string{{s("é\u2028")}}, input: "5:é\u2028;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum := sha256.Sum256([]byte(tc.input))
			want := hex.EncodeToString(sum[:])
			if got := NodeRowsDigest(tc.rows); got != want {
				t.Errorf("NodeRowsDigest = %s, want sha256(%q) = %s", got, tc.input, want)
			}
			rowsJSON, err := json.Marshal(append([][]*string{}, tc.rows...))
			if err != nil {
				t.Fatal(err)
			}
			js := `const {RowDigest} = require(process.argv[1]);
const d = new RowDigest(0);
for (const r of JSON.parse(process.argv[2])) d.add(r);
process.stdout.write(d.result().sha256);`
			cmd := exec.Command(c.node, "-e", js, c.script, string(rowsJSON))
			cmd.Env = c.Environ(t.TempDir())
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("client.js RowDigest: %v", err)
			}
			if string(out) != want {
				t.Errorf("client.js RowDigest = %s, want %s", out, want)
			}
		})
	}
}

// TestNodeClientPrefix runs the client under a command prefix, here in a new
// network namespace of its own: the test's loopback server is then out of
// reach, which proves the prefix really wraps the driver.
func TestNodeClientPrefix(t *testing.T) {
	RequireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) not found: %v", err)
	}
	lr := newLoginRecorder(t)
	for _, tc := range []struct {
		name      string
		prefix    []string
		wantLogin bool
	}{
		{name: "host network", prefix: nil, wantLogin: true},
		{name: "own network namespace", prefix: []string{unshare, "--net"}, wantLogin: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(lr.recorded())
			c := NewNodeClient(t)
			c.CAFile = lr.caFile
			c.Prefix = tc.prefix
			res, err := c.Run(testContext(t), NodeConnect(NodeConnection{Account: "harness", AccessURL: lr.srv.URL, Username: "u", Password: "p",
				Extra: map[string]any{"sfRetryMaxLoginRetries": 0}}))
			if err != nil {
				t.Fatalf("harness: %v", err)
			}
			e := res[0].Error
			if e == nil {
				t.Fatalf("connect succeeded: %+v", res[0])
			}
			reached := len(lr.recorded()) > before
			if reached != tc.wantLogin {
				t.Fatalf("login reached the server: %v, want %v (client error %v)", reached, tc.wantLogin, e)
			}
			if !tc.wantLogin && e.Code != "401001" {
				t.Errorf("error %v, want a network error (401001)", e)
			}
		})
	}
}

// TestNodeClientProc runs the driver the way the gateway tests run agents:
// as nobody, in a cgroup and a network namespace of the test's own, here
// reaching a server that listens inside that namespace.
func TestNodeClientProc(t *testing.T) {
	RequireRoot(t)
	ns := NewNetns(t)
	cg := NewCgroup(t)
	l, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lr := newLoginRecorderOn(t, l)
	c := NewNodeClient(t)
	c.CAFile = lr.caFile
	c.Proc = &Proc{Cgroup: cg, Netns: ns}
	s, err := c.Start(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Do(NodeConnect(NodeConnection{Account: "harness", AccessURL: lr.srv.URL, Username: "agent", Password: "x",
		Extra: map[string]any{"sfRetryMaxLoginRetries": 0}}))
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	if r.Error == nil || r.Error.Code != "390100" {
		t.Fatalf("connect inside the namespace: %+v, want the server's 390100", r)
	}
	if got := lr.recorded(); len(got) != 1 || !got[0].TLS {
		t.Fatalf("server saw %+v, want one TLS login", got)
	}
	// The process is still running (its stdin is open): check where and as
	// whom it runs.
	pid := s.cmd.Process.Pid
	if p, err := CgroupOfPID(pid); err != nil || p != cg.Path {
		t.Errorf("client in cgroup %q (%v), want %q", p, err, cg.Path)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "Uid:") && strings.Fields(line)[1] != "65534" {
			t.Errorf("client runs with %s, want uid 65534", line)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
