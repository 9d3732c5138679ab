package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/testenv"
)

// The tests of this package run the whole appliance as an operator does:
// `snowgate run` with a configuration naming a test cgroup, in a private
// network namespace with the emulator as the account's upstream, and
// snowgate-load driving agents in child cgroups of that cgroup.

const (
	stackUser     = "alice"
	stackPassword = "pw-load-test-1234"
	stackHost     = "acme.snowflakecomputing.com"
	stackAdmin    = "127.0.0.1:9464" // inside the namespace
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
	s := l.b.String()
	if len(s) > 16<<10 {
		s = "…" + s[len(s)-16<<10:]
	}
	return s
}

// gctraceEnv names a file: the daemon then runs with GODEBUG=gctrace=1
// and its garbage collector's lines are appended there.
const gctraceEnv = "SNOWGATE_LOAD_GCTRACE"

// prefixTee writes everything to all, and the lines starting with prefix
// to match too.
type prefixTee struct {
	prefix string
	match  io.Writer
	all    io.Writer
	mu     sync.Mutex
	line   []byte
}

func (p *prefixTee) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for rest := b; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			p.line = append(p.line, rest...)
			break
		}
		p.line = append(p.line, rest[:i+1]...)
		rest = rest[i+1:]
		if bytes.HasPrefix(p.line, []byte(p.prefix)) {
			_, _ = p.match.Write(p.line)
		}
		p.line = p.line[:0]
	}
	return p.all.Write(b)
}

// recordResults is recording.results of the stack: full, unless
// SNOWGATE_LOAD_RECORD_RESULTS says otherwise (to tell the recorder's share
// of the gateway's memory from the rest).
func recordResults() string {
	if v := os.Getenv("SNOWGATE_LOAD_RECORD_RESULTS"); v != "" {
		return v
	}
	return "full"
}

// stack is the appliance on one machine.
type stack struct {
	dir, bin, load string
	cfgFile        string
	caFile         string
	pinDir         string
	ns             *testenv.Netns
	cg             *testenv.Cgroup
	inst           *emulatortest.Instance
	issuer         *oidctest.Issuer
	recDir         string
	reviewerFile   string
	pubFile        string
	// direct counts connections that reached the Snowflake address itself
	// rather than the gateway: the agents' traffic escaping the redirect.
	direct atomic.Int64
	client *http.Client
}

// goBuild builds the command at pkg into dir.
func goBuild(t testing.TB, dir, pkg, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

func newStack(t testing.TB) *stack {
	t.Helper()
	testenv.RequireRoot(t)
	s := &stack{dir: t.TempDir()}
	s.bin = goBuild(t, s.dir, "github.com/snowgate/snowgate/cmd/snowgate", "snowgate")
	s.load = goBuild(t, s.dir, "github.com/snowgate/snowgate/cmd/snowgate-load", "snowgate-load")
	s.caFile = filepath.Join(s.dir, "ca.pem")
	keyFile := filepath.Join(s.dir, "ca.key")
	if out, err := exec.Command(s.bin, "ca", "init", "--cert", s.caFile, "--key", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	s.cg = testenv.NewCgroup(t)
	s.ns = testenv.NewNetns(t)
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatal(err)
	}
	s.pinDir = filepath.Join("/sys/fs/bpf", "snowgate-loadtest-"+hex.EncodeToString(suffix[:]))
	t.Cleanup(func() { _ = redirect.Uninstall(s.pinDir) })

	svcKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// The emulator listens inside the namespace, where the daemon dials
	// it; the Snowflake address answers too, on 443, and counts: a
	// connection there is one that did not go through the gateway.
	var canary net.Listener
	if err := s.ns.Do(func() error {
		s.inst = emulatortest.Start(t, emulator.Config{Account: "acme",
			// alice is the direct baseline's login; SVC the gateway's.
			Users:      map[string]string{stackUser: stackPassword},
			PublicKeys: map[string]crypto.PublicKey{"SVC": &svcKey.PublicKey},
		})
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr(testenv.SnowflakeAddr.String() + "/32")
		if err := netlink.AddrAdd(lo, addr); err != nil {
			return fmt.Errorf("add %s: %w", addr, err)
		}
		canary, err = net.Listen("tcp4", net.JoinHostPort(testenv.SnowflakeAddr.String(), "443"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { canary.Close() })
	go func() {
		for {
			c, err := canary.Accept()
			if err != nil {
				return
			}
			s.direct.Add(1)
			t.Logf("DIRECT connection from %s to the Snowflake address", c.RemoteAddr())
			c.Close()
		}
	}()

	// The agents log in with workload tokens of a local issuer (its keys
	// from a file); the gateway logs in upstream with its own key pair.
	s.issuer = oidctest.Start(t)
	jwks := s.issuer.WriteJWKSFile(t)
	p8 := filepath.Join(s.dir, "svc.p8")
	der, err := x509.MarshalPKCS8PrivateKey(svcKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p8, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	s.recDir = filepath.Join(s.dir, "recordings")
	s.reviewerFile = filepath.Join(s.dir, "reviewers")
	if err := os.WriteFile(s.reviewerFile, []byte("load-reviewer rev-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signKey := filepath.Join(s.dir, "state", "signing-key.pem")
	s.pubFile = signKey + recording.PublicKeySuffix
	cfg := strings.NewReplacer(
		"{cgroup}", s.cg.Path, "{ca}", s.caFile, "{cakey}", keyFile, "{host}", stackHost,
		"{snowip}", testenv.SnowflakeAddr.String(), "{upstream}", s.inst.URL, "{upstreamca}", s.inst.CAFile,
		"{p8}", p8, "{issuer}", s.issuer.URL, "{jwks}", jwks, "{dir}", s.dir, "{rec}", s.recDir,
		"{signkey}", signKey, "{reviewers}", s.reviewerFile, "{admin}", stackAdmin,
		"{results}", recordResults(),
	).Replace(`intercept:
  cgroup: {cgroup}
ca:
  cert_file: {ca}
  key_file: {cakey}
dns:
  upstreams: ["127.0.0.1:1"]
  static:
    {host}: [{snowip}]
    ocsp.snowflakecomputing.com: [{snowip}]
accounts:
  acme:
    host: {host}
    upstream: {upstream}
    upstream_ca_file: {upstreamca}
    credential: {type: keypair, user: SVC, private_key_file: {p8}}
identity:
  issuers:
    - name: ci
      issuer: {issuer}
      audiences: [snowgate]
      keys: {source: jwks_file, file: {jwks}}
  # Sessions survive a restart, as on an appliance.
  state_file: {dir}/identity-state.json
  sessions: {state_file: {dir}/sessions.json}
rules:
  - name: load-rule
    match: {issuer: ci, claims: {repository: acme/app}}
    account: acme
    snowflake: {role: R}
    statements: {read: allow, dml: approve, ddl: allow}
recording:
  dir: {rec}
  signing_key_file: {signkey}
  results: {results}
approvals:
  reviewers: {token_file: {reviewers}}
admin:
  listen: {admin}
  profiling: true
`)
	s.cfgFile = filepath.Join(s.dir, "snowgate.yaml")
	if err := os.WriteFile(s.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.client = &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := s.ns.Do(func() error {
					var err error
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			}},
	}
	return s
}

// daemonProc is one running `snowgate run`.
type daemonProc struct {
	cmd    *exec.Cmd
	logs   lockedBuffer
	exited chan struct{}
	err    error
}

// startDaemon starts `snowgate run` and waits until it reports healthy.
// heapProfileEnv names a directory: BenchmarkLoad then saves the daemon's
// heap profile (after a collection) there every heapProfileEvery, as
// heap-<minutes>m.pb.gz, to compare with `go tool pprof -base`.
const heapProfileEnv = "SNOWGATE_LOAD_HEAPPROFILES"

// heapProfileEvery spaces the heap profiles.
const heapProfileEvery = 2 * time.Minute

// heapProfiles saves the daemon's heap profile to dir every
// heapProfileEvery until the returned stop is called.
func (s *stack) heapProfiles(t testing.TB, dir string) (stop func()) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		tick := time.NewTicker(heapProfileEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			resp, err := s.client.Get("http://" + stackAdmin + "/debug/pprof/heap?gc=1")
			if err != nil {
				t.Logf("heap profile: %v", err)
				continue
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Logf("heap profile: %d %v", resp.StatusCode, err)
				continue
			}
			name := filepath.Join(dir, fmt.Sprintf("heap-%02.0fm.pb.gz", time.Since(start).Minutes()))
			if err := os.WriteFile(name, b, 0o644); err != nil {
				t.Logf("heap profile: %v", err)
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (s *stack) startDaemon(t testing.TB) *daemonProc {
	t.Helper()
	d, err := s.tryStartDaemon(t)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// tryStartDaemon starts `snowgate run`; an error says why it is not
// healthy (its logs included).
func (s *stack) tryStartDaemon(t testing.TB) (*daemonProc, error) {
	t.Helper()
	d := &daemonProc{exited: make(chan struct{})}
	d.cmd = testenv.Command(t, testenv.Proc{Netns: s.ns, Root: true}, s.bin, "run", "--config", s.cfgFile, "--pin-dir", s.pinDir)
	d.cmd.Stdout, d.cmd.Stderr = &d.logs, &d.logs
	if path := os.Getenv(gctraceEnv); path != "" {
		// The runtime's line per garbage collection (live heap before,
		// after, goal) tells the heap from what RSS holds besides.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		d.cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
		d.cmd.Stderr = &prefixTee{prefix: "gc ", match: f, all: &d.logs}
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() { d.kill() })
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := s.client.Get("http://" + stackAdmin + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok" {
				return d, nil
			}
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("snowgate run exited early (%v):\n%s", d.err, d.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			d.kill()
			return nil, fmt.Errorf("no healthy /healthz within 2 minutes: %v\n%s", err, d.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the exit.
func (d *daemonProc) kill() {
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Kill()
	<-d.exited
}

// loadRun is a running snowgate-load.
type loadRun struct {
	cmd    *exec.Cmd
	out    lockedBuffer
	json   string
	exited chan struct{}
	err    error
}

// startLoad runs snowgate-load in the namespace: its workloads in child
// cgroups of the agents' cgroup, the direct baseline (if asked for) in the
// load generator's own cgroup, straight to the emulator.
func (s *stack) startLoad(t testing.TB, args ...string) *loadRun {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(stackPassword), 0o600); err != nil {
		t.Fatal(err)
	}
	// A fresh token per workload, as a CI job would hand its agent.
	tokDir := t.TempDir()
	for i := range 256 {
		tok := oidctest.GitHub("snowgate", "acme", "1", "app", "2")
		tok.Lifetime = time.Hour
		tok.Claims["run_id"] = strconv.Itoa(1000 + i)
		if err := os.WriteFile(filepath.Join(tokDir, "token-"+strconv.Itoa(i)), []byte(s.issuer.Sign(t, tok)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l := &loadRun{json: filepath.Join(t.TempDir(), "report.json"), exited: make(chan struct{})}
	all := append([]string{
		"--token-command", "cat " + filepath.Join(tokDir, "token-") + "$SNOWGATE_LOAD_WORKLOAD",
		"--cgroup", s.cg.Path, "--ca-file", s.caFile,
		"--account", "acme", "--host", stackHost, "--user", stackUser, "--password-file", pw,
		"--emulator-admin", s.inst.URL, "--emulator-ca-file", s.inst.CAFile,
		"--approvals-url", "http://" + stackAdmin, "--reviewer-token-file", s.reviewerFile,
		"--json", l.json,
	}, args...)
	l.cmd = testenv.Command(t, testenv.Proc{Netns: s.ns, Root: true}, s.load, all...)
	l.cmd.Stdout, l.cmd.Stderr = &l.out, &l.out
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { l.err = l.cmd.Wait(); close(l.exited) }()
	t.Cleanup(func() {
		select {
		case <-l.exited:
		default:
			_ = l.cmd.Process.Kill()
			<-l.exited
		}
	})
	return l
}

// wait waits for the load generator and returns its report.
func (l *loadRun) wait(t testing.TB, limit time.Duration) *report {
	t.Helper()
	select {
	case <-l.exited:
	case <-time.After(limit):
		_ = l.cmd.Process.Kill()
		<-l.exited
		t.Fatalf("snowgate-load did not finish within %v:\n%s", limit, l.out.String())
	}
	b, err := os.ReadFile(l.json)
	if err != nil {
		t.Fatalf("snowgate-load wrote no report (exit %v):\n%s", l.err, l.out.String())
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report: %v", err)
	}
	return &rep
}

// directLoadArgs make snowgate-load measure the emulator directly too.
func (s *stack) directLoadArgs() []string {
	return []string{"--direct-host", s.inst.Host, "--direct-port", strconv.Itoa(s.inst.Port), "--direct-ca-file", s.inst.CAFile}
}
