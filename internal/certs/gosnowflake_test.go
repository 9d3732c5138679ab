package certs

import (
	"context"
	"crypto/tls"
	"database/sql"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/snowflakedb/gosnowflake" // registers the "snowflake" driver

	"github.com/snowgate/snowgate/internal/snowflake"
)

// The real gosnowflake driver connects, in fail-open and fail-closed OCSP
// mode, to a TLS server presenting minted leaves, with the CA in its system
// trust (SSL_CERT_FILE) and the OCSP cache-server URL answered by the
// responder, as the gateway's port-80 listener answers it. The driver runs in
// a child process of the test binary, so its trust store, HOME and OCSP cache
// start clean and nothing is written outside the test's directory.

const driverChildEnv = "SNOWGATE_CERTS_DRIVER_DSN"

// TestGosnowflakeDriverChild is the child: it is skipped unless the parent
// test started it.
func TestGosnowflakeDriverChild(t *testing.T) {
	dsn := os.Getenv(driverChildEnv)
	if dsn == "" {
		t.Skip("run by TestGosnowflakeOCSP in a child process")
	}
	db, err := sql.Open("snowflake", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var one string
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		fmt.Println("DRIVER-ERROR:", err)
		t.Fatal(err)
	}
	if one != "1" {
		t.Fatalf("SELECT 1 gave %q", one)
	}
}

// fakeAccount answers just enough of the protocol for a login and SELECT 1,
// routed by the snowflake package's router.
type fakeAccount struct {
	unknown atomic.Int32
}

func (a *fakeAccount) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	w.Header().Set("Content-Type", "application/json")
	switch snowflake.Route(r.Method, r.URL).Kind {
	case snowflake.KindLogin:
		_, _ = io.WriteString(w, `{"data":{"masterToken":"m","token":"s","validityInSeconds":3600,"masterValidityInSeconds":14400,`+
			`"sessionId":1172562260498,"parameters":[{"name":"TIMEZONE","value":"UTC"}],"sessionInfo":{}},"code":null,"message":null,"success":true}`)
	case snowflake.KindQueryRequest:
		_, _ = io.WriteString(w, `{"data":{"parameters":[],"rowtype":[{"name":"1","database":"","schema":"","table":"","nullable":false,`+
			`"length":null,"type":"fixed","scale":0,"precision":1,"byteLength":null,"collation":null}],"rowset":[["1"]],"total":1,"returned":1,`+
			`"queryId":"01ba13b4-0104-e9fd-0000-0111029ca00e","statementTypeId":4096,"queryResultFormat":"json"},"code":null,"message":null,"success":true}`)
	case snowflake.KindLogout, snowflake.KindTelemetry, snowflake.KindHeartbeat:
		_, _ = io.WriteString(w, `{"data":null,"code":null,"message":null,"success":true}`)
	default:
		a.unknown.Add(1)
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	}
}

// countingResponder counts the OCSP requests and cache look-ups it serves.
type countingResponder struct {
	mu            sync.Mutex
	r             *Responder
	ocsp, lookups atomic.Int32
}

func (c *countingResponder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if snowflake.Route(r.Method, r.URL).Kind != snowflake.KindOCSP {
		http.NotFound(w, r)
		return
	}
	if r.URL.Path == snowflake.OCSPCacheServerPath {
		c.lookups.Add(1)
	} else {
		c.ocsp.Add(1)
	}
	c.mu.Lock()
	resp := c.r
	c.mu.Unlock()
	resp.ServeHTTP(w, r)
}

// driverFixture is a TLS "account" on loopback presenting leaves of the
// current minter, and the responder (and cache server) over plain HTTP.
type driverFixture struct {
	ca      *CA
	caFile  string
	port    int
	httpURL string
	account *fakeAccount
	resp    *countingResponder

	mu     sync.Mutex
	minter *Minter
}

func newDriverFixture(t *testing.T) *driverFixture {
	t.Helper()
	f := &driverFixture{ca: newTestCA(t, "localhost"), account: &fakeAccount{}, resp: &countingResponder{}}
	f.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f.caFile, f.ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	httpSrv := httptest.NewServer(f.resp)
	t.Cleanup(httpSrv.Close)
	f.httpURL = httpSrv.URL
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsSrv := &httptest.Server{Listener: ln, Config: &http.Server{
		Handler: f.account, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0), // the refusals of the failing cases
	}}
	tlsSrv.TLS = &tls.Config{
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			f.mu.Lock()
			m := f.minter
			f.mu.Unlock()
			return m.GetCertificate(h)
		},
	}
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	f.port = ln.Addr().(*net.TCPAddr).Port
	return f
}

// use switches to a fresh minter (with or without an AIA OCSP URL) and
// responder, and zeroes the counters.
func (f *driverFixture) use(t *testing.T, withOCSP bool) {
	t.Helper()
	opts := MinterOptions{}
	if withOCSP {
		opts.OCSPURL = f.httpURL + "/_snowgate/ocsp"
	}
	m, err := NewMinter(f.ca, opts)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResponder(f.ca, m, ResponderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.minter = m
	f.mu.Unlock()
	f.resp.set(r)
}

func (c *countingResponder) set(r *Responder) {
	c.mu.Lock()
	c.r = r
	c.mu.Unlock()
	c.ocsp.Store(0)
	c.lookups.Store(0)
}

func TestGosnowflakeOCSP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real driver in a child process")
	}
	f := newDriverFixture(t)
	tests := []struct {
		name      string
		ocspURL   bool
		failOpen  bool
		wantErr   string
		wantOCSPs bool
	}{
		{"fail-closed, AIA and responder", true, false, "", true},
		{"fail-open, AIA and responder", true, true, "", true},
		{"fail-open, no AIA", false, true, "", false},
		{"fail-closed, no AIA: the driver refuses", false, false, "269004", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.use(t, tt.ocspURL)
			home := t.TempDir()
			dsn := fmt.Sprintf("u:p@localhost:%d/?account=acme&protocol=https&disableTelemetry=true&ocspFailOpen=%v&loginTimeout=20", f.port, tt.failOpen)
			cmd := exec.Command(os.Args[0], "-test.run=^TestGosnowflakeDriverChild$", "-test.count=1", "-test.v")
			cmd.Env = []string{
				driverChildEnv + "=" + dsn,
				"HOME=" + home,
				"PATH=" + os.Getenv("PATH"),
				"SSL_CERT_FILE=" + f.caFile,
				"SSL_CERT_DIR=" + filepath.Join(home, "no-certs"),
				"SF_OCSP_RESPONSE_CACHE_DIR=" + home,
				"SF_OCSP_RESPONSE_CACHE_SERVER_URL=" + f.httpURL + snowflake.OCSPCacheServerPath,
				"SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true",
			}
			out, err := cmd.CombinedOutput()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(string(out), tt.wantErr) {
					t.Fatalf("driver did not fail with %s: %v\n%s", tt.wantErr, err, tail(out))
				}
				return
			}
			if err != nil || !strings.Contains(string(out), "--- PASS: TestGosnowflakeDriverChild") {
				t.Fatalf("driver failed: %v\n%s", err, tail(out))
			}
			if got := f.resp.ocsp.Load() > 0; got != tt.wantOCSPs {
				t.Fatalf("OCSP requests: %d", f.resp.ocsp.Load())
			}
			if f.account.unknown.Load() != 0 {
				t.Fatalf("%d driver requests the router did not know", f.account.unknown.Load())
			}
		})
	}
}

func tail(b []byte) string {
	const n = 3000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
