package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/testenv"
)

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

	d := startDaemonProc(t, testenv.Command(t, testenv.Proc{Netns: ns, Root: true}, bin, "run", "--config", cfgFile, "--pin-dir", pinDir), "")
	waitAdmin(t, d, ns.HTTPClient(10*time.Second), "http://"+admin+"/healthz", func(code int, body string) bool {
		return code == http.StatusOK && strings.TrimSpace(body) == "ok"
	})
	if !redirect.Installed(pinDir) {
		t.Fatalf("the daemon is healthy but no redirect is pinned in %s", pinDir)
	}

	// An agent: the real driver in the agents' cgroup, connecting to the
	// account's own name on 443, trusting the gateway CA.
	agent := testenv.Command(t, testenv.Proc{Cgroup: cg, Netns: ns, Root: true},
		os.Args[0], "-test.run=^TestRunClientProcess$", "-test.count=1")
	agent.Env = testenv.DriverEnv(t, certFile, runClientEnv+"=acme.snowflakecomputing.com:443/?"+url.Values{
		"account": {"acme"}, "authenticator": {"WORKLOAD_IDENTITY"}, "workloadIdentityProvider": {"OIDC"},
		"token": {token}, "loginTimeout": {"120"},
	}.Encode())
	agentOut, err := agent.CombinedOutput()
	if err != nil || !strings.Contains(string(agentOut), "result=1") {
		t.Fatalf("agent query through snowgate run: %v\n%s\ndaemon:\n%s", err, agentOut, d.logs())
	}
	if b, err := os.ReadFile(exchangeLog); err != nil || !strings.Contains(string(b), `"kind":"query-request"`) {
		t.Errorf("recording.exchange_log holds no query exchange (err %v)", err)
	}

	if err := d.stop(t); err != nil {
		t.Fatalf("snowgate run after SIGTERM: %v\n%s", err, d.logs())
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
