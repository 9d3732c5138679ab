package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/testenv"
)

// lockedBuffer collects a child's output from two pipes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const runClientEnv = "SNOWGATE_RUN_TEST_CLIENT"

// TestRunClientProcess is not a test: it is the agent of TestRunDaemon, the
// unchanged gosnowflake driver run in the agents' cgroup. It logs in with
// the DSN in its environment, runs SELECT 1 and prints the value. It skips
// otherwise.
func TestRunClientProcess(t *testing.T) {
	dsn := os.Getenv(runClientEnv)
	if dsn == "" {
		t.Skip("helper process for TestRunDaemon")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db, err := sql.Open("snowflake", dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer db.Close()
	var v string
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&v); err != nil {
		fmt.Fprintln(os.Stderr, "SELECT 1:", err)
		os.Exit(1)
	}
	fmt.Printf("result=%s\n", v)
	os.Exit(0)
}

// TestRunDaemon runs `snowgate run` as an operator does: the CA from
// `snowgate ca init`, a configuration naming a test cgroup, the daemon in a
// private network namespace (where it adds the proxy address and listens).
// It must report healthy, carry a gosnowflake query from the agents' cgroup
// to the emulator (inside the same namespace, trusted through
// upstream_ca_file), stop with exit status 0 on SIGTERM and leave the
// redirect pinned (fail closed) until `snowgate uninstall` removes it.
func TestRunDaemon(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildSnowgate(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")

	if out, err := runSnowgate(t, bin, "ca", "init", "--cert", certFile, "--key", keyFile); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	pemBefore, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runSnowgate(t, bin, "ca", "init", "--cert", certFile, "--key", keyFile)
	if err == nil || !strings.Contains(out, "already exists") {
		t.Fatalf("second ca init: err %v, output %q; want a refusal to overwrite", err, out)
	}
	if pemAfter, _ := os.ReadFile(certFile); !bytes.Equal(pemBefore, pemAfter) {
		t.Fatal("the second ca init changed the certificate")
	}

	cg := testenv.NewCgroup(t)
	ns := testenv.NewNetns(t)
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatal(err)
	}
	pinDir := filepath.Join("/sys/fs/bpf", "snowgate-runtest-"+hex.EncodeToString(suffix[:]))
	t.Cleanup(func() { _ = redirect.Uninstall(pinDir) })
	// The emulator listens inside the namespace, where the daemon dials it.
	var inst *emulatortest.Instance
	if err := ns.Do(func() error {
		inst = emulatortest.Start(t, emulator.Config{Account: "acme", Users: map[string]string{"alice": "pw-run-test-1234"}})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The gateway's own credential: the only one the emulator knows.
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("pw-run-test-1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The agent's CI token, from a local issuer whose keys the daemon reads
	// from a file (it runs in its own network namespace).
	issuer := oidctest.Start(t)
	jwksFile := issuer.WriteJWKSFile(t)
	token := issuer.Sign(t, oidctest.GitHub("snowgate", "acme", "1001", "app", "456789"))
	exchangeLog := filepath.Join(dir, "log", "exchanges.jsonl")
	const admin = "127.0.0.1:9464" // inside the private namespace
	cfg := fmt.Sprintf(`intercept:
  cgroup: %s
ca:
  cert_file: %s
  key_file: %s
dns:
  upstreams: ["127.0.0.1:1"]
  static:
    acme.snowflakecomputing.com: [203.0.113.10]
accounts:
  acme:
    host: acme.snowflakecomputing.com
    upstream: %s
    upstream_ca_file: %s
    credential: {type: password, user: SVC, password_file: %s}
identity:
  issuers:
    - issuer: %s
      audiences: [snowgate]
      keys: {source: jwks_file, file: %s}
rules:
  - name: r
    match: {issuer: "%s", claims: {repository: acme/app}}
    account: acme
    snowflake: {user: alice, role: R}
recording:
  dir: %s
  exchange_log: %s
admin:
  listen: %s
`, cg.Path, certFile, keyFile, inst.URL, inst.CAFile, pwFile, issuer.URL, jwksFile, issuer.URL, filepath.Join(dir, "recordings"), exchangeLog, admin)
	cfgFile := filepath.Join(dir, "snowgate.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := testenv.Command(t, testenv.Proc{Netns: ns, Root: true}, bin, "run", "--config", cfgFile, "--pin-dir", pinDir)
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited closes when the daemon has exited; waitErr is then its
	// status.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := ns.Do(func() error {
					var err error
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		},
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := client.Get("http://" + admin + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok" {
				break
			}
			err = fmt.Errorf("status %d, body %q", resp.StatusCode, body)
		}
		select {
		case <-exited:
			t.Fatalf("snowgate run exited early (%v):\n%s", waitErr, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no healthy /healthz within 2 minutes: %v\n%s", err, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !redirect.Installed(pinDir) {
		t.Fatalf("the daemon is healthy but no redirect is pinned in %s", pinDir)
	}

	// An agent: the real driver in the agents' cgroup, connecting to the
	// account's own name on 443, trusting the gateway CA.
	agent := testenv.Command(t, testenv.Proc{Cgroup: cg, Netns: ns, Root: true},
		os.Args[0], "-test.run=^TestRunClientProcess$", "-test.count=1")
	home := t.TempDir()
	agent.Env = append(os.Environ(),
		runClientEnv+"=acme.snowflakecomputing.com:443/?"+url.Values{
			"account": {"acme"}, "authenticator": {"WORKLOAD_IDENTITY"}, "workloadIdentityProvider": {"OIDC"},
			"token": {token}, "loginTimeout": {"120"},
		}.Encode(),
		"SSL_CERT_FILE="+certFile,
		"SSL_CERT_DIR="+home,
		"HOME="+home,
		"SF_OCSP_RESPONSE_CACHE_DIR="+home,
		"SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true",
	)
	agentOut, err := agent.CombinedOutput()
	if err != nil || !strings.Contains(string(agentOut), "result=1") {
		t.Fatalf("agent query through snowgate run: %v\n%s\ndaemon:\n%s", err, agentOut, logs.String())
	}
	if b, err := os.ReadFile(exchangeLog); err != nil || !strings.Contains(string(b), `"kind":"query-request"`) {
		t.Errorf("recording.exchange_log holds no query exchange (err %v)", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("snowgate run after SIGTERM: %v\n%s", waitErr, logs.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("snowgate run did not stop within 2 minutes of SIGTERM:\n%s", logs.String())
	}
	if !redirect.Installed(pinDir) {
		t.Fatal("the redirect was removed on exit; it must stay pinned so agents fail closed")
	}

	// --keep-interface: the host's own interface is none of this test's
	// business (the daemon's lived in the private namespace).
	if out, err := runSnowgate(t, bin, "uninstall", "--pin-dir", pinDir, "--keep-interface"); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	if redirect.Installed(pinDir) {
		t.Fatal("pins remain after snowgate uninstall")
	}
}
