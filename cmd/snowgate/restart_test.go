package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// The restart tests run `snowgate run` as TestRunDaemon does and keep an
// agent busy in the agents' cgroup while the daemon is replaced: TLS
// connects to the account host, DNS look-ups, and gosnowflake queries on one
// pooled connection. Not one connect may be refused, and every query and
// look-up must succeed.

const (
	restartAgentEnv = "SNOWGATE_RESTART_TEST_AGENT"
	restartAccount  = "acme.snowflakecomputing.com"
	restartSnowIP   = "203.0.113.10"
	restartAdmin    = "127.0.0.1:9464" // inside the private namespace
	restartProxy    = "169.254.77.1"
)

// restartReport is what the agent saw.
type restartReport struct {
	Connects, Refused, ConnectErrors int64
	Lookups, LookupErrors            int64
	Queries, QueryErrors             int64
	// Errors are the first few error texts, for the failure message.
	Errors []string
}

// TestRestartAgentProcess is not a test: it is the agent of the restart
// tests. It prints "ready" after its first successful query, works until
// its stdin closes, then prints its restartReport as JSON. It skips
// otherwise.
func TestRestartAgentProcess(t *testing.T) {
	dsn := os.Getenv(restartAgentEnv)
	if dsn == "" {
		t.Skip("helper process for the restart tests")
	}
	var (
		rep   restartReport
		mu    sync.Mutex
		errsN atomic.Int64
	)
	note := func(counter *int64, err error) {
		mu.Lock()
		defer mu.Unlock()
		*counter++
		if errsN.Add(1) <= 10 {
			rep.Errors = append(rep.Errors, err.Error())
		}
	}
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(os.Getenv("SSL_CERT_FILE"))
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		fmt.Fprintln(os.Stderr, "gateway CA:", err)
		os.Exit(2)
	}
	db, err := sql.Open("snowflake", dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	query := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var v string
		if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&v); err != nil {
			return err
		}
		if v != "1" {
			return fmt.Errorf("SELECT 1 returned %q", v)
		}
		return nil
	}
	if err := query(); err != nil {
		fmt.Fprintln(os.Stderr, "first query:", err)
		os.Exit(1)
	}
	fmt.Println("ready")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	loop := func(every time.Duration, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(every):
				}
				f()
			}
		}()
	}
	// TLS connects, as a driver opens them: the redirect sends them to
	// the gateway's listener.
	loop(10*time.Millisecond, func() {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Minute},
			Config: &tls.Config{ServerName: restartAccount, RootCAs: pool, NextProtos: []string{"http/1.1"}}}
		c, err := d.Dial("tcp4", net.JoinHostPort(restartSnowIP, "443"))
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			note(&rep.Refused, err)
		case err != nil:
			note(&rep.ConnectErrors, err)
		default:
			c.Close()
		}
		mu.Lock()
		rep.Connects++
		mu.Unlock()
	})
	// DNS: the redirect sends port 53 to the gateway's forwarder.
	loop(20*time.Millisecond, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r := &net.Resolver{PreferGo: true}
		ips, err := r.LookupNetIP(ctx, "ip4", restartAccount)
		if err == nil && (len(ips) != 1 || ips[0] != netip.MustParseAddr(restartSnowIP)) {
			err = fmt.Errorf("look-up returned %v", ips)
		}
		if err != nil {
			note(&rep.LookupErrors, err)
		}
		mu.Lock()
		rep.Lookups++
		mu.Unlock()
	})
	loop(20*time.Millisecond, func() {
		if err := query(); err != nil {
			note(&rep.QueryErrors, err)
		}
		mu.Lock()
		rep.Queries++
		mu.Unlock()
	})
	_, _ = io.Copy(io.Discard, os.Stdin)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
	os.Exit(0)
}

// restartEnv is one daemon configuration in a private network namespace,
// with the emulator upstream and a test cgroup for agents.
type restartEnv struct {
	bin, cfgFile, certFile, pinDir, dir string
	// dsn is the agent's: the account host, a workload token.
	dsn  string
	cg   *testenv.Cgroup
	ns   *testenv.Netns
	http *http.Client
}

func newRestartEnv(t *testing.T) *restartEnv {
	t.Helper()
	testenv.RequireRoot(t)
	e := &restartEnv{dir: t.TempDir()}
	// The daemon runs from a path of its own, so a test can replace the
	// file there as a package upgrade does.
	built := buildSnowgate(t)
	e.bin = filepath.Join(e.dir, "bin", "snowgate")
	if err := os.MkdirAll(filepath.Dir(e.bin), 0o755); err != nil {
		t.Fatal(err)
	}
	installBinary(t, built, e.bin)
	s := e.setUp(t, "snowgate-restarttest-")
	tok := oidctest.GitHub("snowgate", "acme", "1", "app", "2")
	tok.Lifetime = 30 * time.Minute
	e.dsn = restartAccount + ":443/?" + workloadTokenParams(s.issuer.Sign(t, tok))
	// The state directory exists, as systemd's StateDirectory= makes it.
	if err := os.MkdirAll(filepath.Join(e.dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	e.writeConfig(t, s, fmt.Sprintf(`  # Sessions continue across restarts: saved at exit and before a
  # hand-over, loaded at start.
  state_file: %s
  sessions:
    state_file: %s
`, filepath.Join(e.dir, "state", "identity.json"), filepath.Join(e.dir, "state", "sessions.json")),
		"restart-rule", fmt.Sprintf(`recording:
  dir: %s
`, filepath.Join(e.dir, "recordings")))
	return e
}

// daemonSetUp is what restartEnv.setUp made besides the fields of the
// environment.
type daemonSetUp struct {
	caKey, svcKeyFile string
	upstream          *emulatortest.Instance
	issuer            *oidctest.Issuer
}

// setUp makes what every daemon of these tests needs, in e.dir with e.bin
// set: the gateway CA, the agents' cgroup, the namespace, a pin directory
// named pinPrefix and a random suffix, the service user's key pair, the
// emulator upstream in the namespace (the service user's key registered),
// a workload token issuer, and the admin HTTP client into the namespace.
func (e *restartEnv) setUp(t *testing.T, pinPrefix string) *daemonSetUp {
	t.Helper()
	s := &daemonSetUp{caKey: filepath.Join(e.dir, "ca.key"), svcKeyFile: filepath.Join(e.dir, "svc.p8")}
	e.certFile = filepath.Join(e.dir, "ca.pem")
	if out, err := runSnowgate(t, e.bin, "ca", "init", "--cert", e.certFile, "--key", s.caKey); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	e.cg = testenv.NewCgroup(t)
	e.ns = testenv.NewNetns(t)
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatal(err)
	}
	e.pinDir = filepath.Join("/sys/fs/bpf", pinPrefix+hex.EncodeToString(suffix[:]))
	t.Cleanup(func() { _ = redirect.Uninstall(e.pinDir) })
	// The gateway logs in with its own key pair; the agent presents a CI
	// workload token from a test issuer.
	svcKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(svcKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.svcKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.ns.Do(func() error {
		s.upstream = emulatortest.Start(t, emulator.Config{Account: "acme", PublicKeys: map[string]crypto.PublicKey{"SVC": &svcKey.PublicKey}})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.issuer = oidctest.Start(t)
	e.http = e.ns.HTTPClient(5 * time.Second)
	return s
}

// workloadTokenParams are the DSN parameters of an agent that logs in to
// the acme account with the workload token tok.
func workloadTokenParams(tok string) string {
	v := url.Values{}
	v.Set("account", "acme")
	v.Set("authenticator", "WORKLOAD_IDENTITY")
	v.Set("workloadIdentityProvider", "OIDC")
	v.Set("token", tok)
	v.Set("loginTimeout", "120")
	return v.Encode()
}

// writeConfig writes e.cfgFile: the redirect, CA, DNS and account sections
// of s, the identity stage with identity (its own lines, indented two
// spaces) before s's issuer, one rule for the agents' token named rule,
// then recording (the recording section and what follows it) and the admin
// listener.
func (e *restartEnv) writeConfig(t *testing.T, s *daemonSetUp, identity, rule, recording string) {
	t.Helper()
	cfg := fmt.Sprintf(`intercept:
  cgroup: %[1]s
  proxy_address: %[2]s
ca:
  cert_file: %[3]s
  key_file: %[4]s
dns:
  upstreams: ["127.0.0.1:1"]
  static:
    %[5]s: [%[6]s]
    ocsp.snowflakecomputing.com: [%[6]s]
accounts:
  acme:
    host: %[5]s
    upstream: %[7]s
    upstream_ca_file: %[8]s
    credential: {type: keypair, user: SVC, private_key_file: %[9]s}
identity:
%[12]s  issuers:
    - name: ci
      issuer: %[10]s
      audiences: [snowgate]
      keys: {source: jwks_file, file: %[11]s}
rules:
  - name: %[13]s
    match: {issuer: ci, claims: {repository: acme/app}}
    account: acme
    snowflake: {role: R}
%[14]sadmin:
  listen: %[15]s
`, e.cg.Path, restartProxy, e.certFile, s.caKey, restartAccount, restartSnowIP, s.upstream.URL, s.upstream.CAFile, s.svcKeyFile,
		s.issuer.URL, s.issuer.WriteJWKSFile(t), identity, rule, recording, restartAdmin)
	e.cfgFile = filepath.Join(e.dir, "snowgate.yaml")
	if err := os.WriteFile(e.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// installBinary copies src to dst through a rename, as a package manager
// replaces a binary: a running process keeps its old file.
func installBinary(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// startDaemon starts `snowgate run` in the namespace. Its output goes to a
// file: a successor daemon inherits it and may outlive this process. prefix,
// when set, is the command it runs under (a shell that sets LISTEN_PID).
func (e *restartEnv) startDaemon(t *testing.T, name string, extra []*os.File, env []string) *daemonProc {
	t.Helper()
	args := []string{e.bin, "run", "--config", e.cfgFile, "--pin-dir", e.pinDir}
	if len(extra) > 0 {
		// systemd sets LISTEN_PID to the service's pid after fork; a shell
		// that execs does the same.
		args = append([]string{"sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`}, args...)
	}
	cmd := testenv.Command(t, testenv.Proc{Netns: e.ns, Root: true}, args[0], args[1:]...)
	logFile := filepath.Join(e.dir, name+".log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.ExtraFiles = extra
	cmd.Env = append(os.Environ(), env...)
	return startDaemonProc(t, cmd, logFile)
}

// waitHealthy polls /healthz until it answers ok. d, when not nil, is the
// daemon expected to answer: its exit fails the test.
func (e *restartEnv) waitHealthy(t *testing.T, d *daemonProc) {
	t.Helper()
	waitAdmin(t, d, e.http, "http://"+restartAdmin+"/healthz", func(code int, _ string) bool { return code == http.StatusOK })
}

// waitExit waits for a daemon this test started to exit with status 0.
func waitExit(t *testing.T, d *daemonProc, what string) {
	t.Helper()
	if err := d.waitExited(t, what); err != nil {
		t.Fatalf("%s: exit %v\n%s", what, err, d.logs())
	}
}

// agent is the restart agent running in the agents' cgroup.
type agent struct {
	p *testenv.Piped
}

func (e *restartEnv) startAgent(t *testing.T) *agent {
	t.Helper()
	cmd := e.agentCommand(t, "TestRestartAgentProcess", restartAgentEnv+"="+e.dsn)
	a := &agent{p: testenv.StartPiped(t, cmd)}
	if line := a.line(t); line != "ready" {
		t.Fatalf("agent did not get ready: %q", line)
	}
	return a
}

// agentCommand is the test binary re-executed as the helper process test
// in the agents' cgroup and the namespace, trusting the gateway CA, with
// env added to its environment.
func (e *restartEnv) agentCommand(t *testing.T, test string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := testenv.Command(t, testenv.Proc{Cgroup: e.cg, Netns: e.ns, Root: true},
		os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = testenv.DriverEnv(t, e.certFile, env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// line reads the agent's next line that is not test-framework noise.
func (a *agent) line(t *testing.T) string {
	t.Helper()
	return a.p.Line(t, 3*time.Minute, func(s string) bool {
		s = strings.TrimSpace(s)
		return s == "ready" || strings.HasPrefix(s, "{")
	})
}

// finish stops the agent and checks its report: work was done, and not one
// connect was refused, not one connect, look-up or query failed.
func (a *agent) finish(t *testing.T) restartReport {
	t.Helper()
	a.p.Stdin().Close()
	line := a.line(t)
	var r restartReport
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("agent report %q: %v", line, err)
	}
	t.Logf("agent: %d connects (%d refused, %d failed), %d look-ups (%d failed), %d queries (%d failed)",
		r.Connects, r.Refused, r.ConnectErrors, r.Lookups, r.LookupErrors, r.Queries, r.QueryErrors)
	if r.Refused != 0 || r.ConnectErrors != 0 || r.LookupErrors != 0 || r.QueryErrors != 0 {
		t.Errorf("the agent saw failures across the restart: %+v", r)
	}
	if r.Connects < 20 || r.Lookups < 10 || r.Queries < 5 {
		t.Errorf("the agent did too little work to prove anything: %+v", r)
	}
	return r
}

var newPIDLine = regexp.MustCompile(`hand-over complete.* new_pid=(\d+)`)

// handOver sends SIGHUP to pid and returns the successor's pid from the log
// once the old daemon has said so.
func handOver(t *testing.T, pid int, logFile string) int {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, _ := os.ReadFile(logFile)
		for _, m := range newPIDLine.FindAllStringSubmatch(string(b), -1) {
			n, _ := strconv.Atoi(m[1])
			if n != pid && n != 0 {
				// Only a successor of this pid counts: earlier
				// hand-overs are in the same file.
				if ppid(n) == pid || !alive(pid) {
					return n
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hand-over from pid %d within 3 minutes:\n%s", pid, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil && !zombie(pid) }

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func ppid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// waitGone waits until pid has exited (it is not this test's child).
func waitGone(t *testing.T, pid int, logFile string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for alive(pid) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("pid %d still running after 2 minutes:\n%s", pid, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killLater makes sure a daemon the test does not own is gone at the end.
func killLater(t *testing.T, pid int) {
	t.Cleanup(func() {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// TestRestartHandover replaces a running daemon twice with SIGHUP while an
// agent keeps connecting, resolving and querying. Before the first, the
// binary on disk is replaced (an upgrade): the successor runs the new file.
// Every connect is accepted, every look-up and query answered. A last
// SIGHUP whose successor fails to start leaves the daemon serving.
func TestRestartHandover(t *testing.T) {
	e := newRestartEnv(t)
	d := e.startDaemon(t, "daemon", nil, nil)
	e.waitHealthy(t, d)
	a := e.startAgent(t)
	time.Sleep(time.Second)

	// The upgrade: a new file at the daemon's path.
	installBinary(t, e.bin, e.bin)
	oldPID := d.cmd.Process.Pid
	pid := handOver(t, oldPID, d.log)
	killLater(t, pid)
	waitExit(t, d, "the old daemon after the hand-over")
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err != nil || exe != e.bin {
		t.Errorf("the new daemon runs %q (%v), want the upgraded %s", exe, err, e.bin)
	}
	e.waitHealthy(t, nil)
	time.Sleep(time.Second)

	// A second hand-over, from the daemon that was itself handed the
	// sockets.
	pid2 := handOver(t, pid, d.log)
	killLater(t, pid2)
	waitGone(t, pid, d.log)
	e.waitHealthy(t, nil)
	time.Sleep(time.Second)

	a.finish(t)
	if !redirect.Installed(e.pinDir) {
		t.Error("no redirect pinned after the hand-overs")
	}

	// A successor that cannot start (here a configuration it refuses)
	// leaves the running daemon in charge.
	good, err := os.ReadFile(e.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.cfgFile, append(good, "no_such_section: 1\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid2, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 2*time.Minute, func() bool { return strings.Contains(d.logs(), "hand-over failed") }, "the failed hand-over to be logged")
	if !alive(pid2) {
		t.Fatalf("the daemon exited after a failed hand-over:\n%s", d.logs())
	}
	e.waitHealthy(t, nil)

	if err := syscall.Kill(pid2, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid2, d.log)
	if logs := d.logs(); !strings.Contains(logs, "listening sockets inherited") {
		t.Errorf("no daemon reported inherited sockets:\n%s", logs)
	}
}

// TestRestartSocketActivation holds the listening sockets as systemd does
// for snowgate.socket, starts the daemon with them (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES), stops it and starts a new one while an agent keeps
// working: connects made while no daemon runs wait in the backlog.
func TestRestartSocketActivation(t *testing.T) {
	e := newRestartEnv(t)
	var files []*os.File
	err := e.ns.Do(func() error {
		if err := redirect.EnsureHostAddress(netip.MustParseAddr(restartProxy)); err != nil {
			return err
		}
		gw, err := net.Listen("tcp4", restartProxy+":443")
		if err != nil {
			return err
		}
		udp, err := net.ListenPacket("udp4", restartProxy+":53")
		if err != nil {
			return err
		}
		tcp, err := net.Listen("tcp4", restartProxy+":53")
		if err != nil {
			return err
		}
		admin, err := net.Listen("tcp4", restartAdmin)
		if err != nil {
			return err
		}
		for _, s := range []interface{ File() (*os.File, error) }{gw.(*net.TCPListener), udp.(*net.UDPConn), tcp.(*net.TCPListener), admin.(*net.TCPListener)} {
			f, err := s.File()
			if err != nil {
				return err
			}
			files = append(files, f)
		}
		// The files hold the sockets from here on, as systemd does.
		gw.Close()
		udp.Close()
		tcp.Close()
		admin.Close()
		return nil
	})
	if err != nil {
		t.Fatalf("bind the sockets in the namespace: %v", err)
	}
	t.Cleanup(func() { closeAll(files) })
	env := []string{"LISTEN_FDS=4", "LISTEN_FDNAMES=gateway:dns:dns:admin"}

	d1 := e.startDaemon(t, "daemon1", files, env)
	e.waitHealthy(t, d1)
	if !strings.Contains(d1.logs(), "listening sockets inherited") {
		t.Fatalf("the daemon did not take the sockets:\n%s", d1.logs())
	}
	a := e.startAgent(t)
	time.Sleep(time.Second)

	// systemctl restart: stop, then start with the same sockets.
	if err := d1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, d1, "the first daemon after SIGTERM")
	d2 := e.startDaemon(t, "daemon2", files, env)
	e.waitHealthy(t, d2)
	time.Sleep(time.Second)

	a.finish(t)
	if err := d2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, d2, "the second daemon after SIGTERM")
}
