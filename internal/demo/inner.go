package demo

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/snowflakedb/gosnowflake"
	"github.com/vishvananda/netlink"

	"github.com/snowgate/snowgate/internal/certs"
	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/redirect"
)

// RunInner is the demo inside its own network namespace (`snowgate demo
// inner`, started by Run).
func RunInner(ctx context.Context, opts Options) (err error) {
	if err := opts.defaults(); err != nil {
		return err
	}
	steps := 9
	if len(opts.Run) > 0 {
		steps = 8
	}
	pinDir := filepath.Join(redirect.DefaultPinDir+"-demo", strconv.Itoa(os.Getpid()))
	n := newNarrator(opts.Out, steps)
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	gosnowflake.GetLogger().SetOutput(io.Discard)

	n.step("preparing a private network namespace, a state directory and the agents' cgroup")
	if err := loopbackUp(); err != nil {
		return err
	}
	dir := opts.StateDir
	if dir == "" {
		dir, err = os.MkdirTemp("", "snowgate-demo-")
		if err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
		cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	} else if dir, err = filepath.Abs(dir); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	st, err := newStage(dir)
	if err != nil {
		return err
	}
	n.info("state directory %s", dir)
	cgRoot, err := redirect.FindCgroup2()
	if err != nil {
		return err
	}
	demoCg := filepath.Join(cgRoot, fmt.Sprintf("snowgate-demo-%d", os.Getpid()))
	agentsCg := filepath.Join(demoCg, "agents")
	if err := os.MkdirAll(agentsCg, 0o755); err != nil {
		return fmt.Errorf("create the agents' cgroup: %w", err)
	}
	cleanups = append(cleanups, func() { removeCgroup(agentsCg); removeCgroup(demoCg) })
	n.info("agents' cgroup %s", agentsCg)

	n.step("starting the Snowflake emulator (account %q) as the upstream", demoAccount)
	emu, upstream, caFile, err := startEmulator(st)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { emu.close() })
	n.info("serving https://%s (its own CA: %s)", upstream, filepath.Base(caFile))
	if err := seed(ctx, st, upstream); err != nil {
		return err
	}
	n.info("platform admin created DEMO_DB.PUBLIC.ORDERS with 3 rows (directly, outside the agents' cgroup)")

	n.step("starting the gateway: snowgate run (eBPF redirect on the agents' cgroup)")
	ca, err := certs.InitCA(st.path("ca.pem"), st.path("ca.key"), certs.CAOptions{PermittedDomains: []string{"snowflakecomputing.com"}})
	if err != nil {
		return fmt.Errorf("gateway CA: %w", err)
	}
	n.info("gateway CA %s, name-constrained to snowflakecomputing.com", ca)
	_, port, _ := net.SplitHostPort(upstream)
	cfgPath := st.path("snowgate.yaml")
	if err := writeFile(cfgPath, []byte(demoConfig(st, agentsCg, "https://localhost:"+port, caFile, atoi(port)))); err != nil {
		return err
	}
	d, err := startDaemon(ctx, opts.Binary, cfgPath, pinDir, st.path("snowgate.log"))
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() {
		d.stop()
		_ = redirect.Uninstall(pinDir)
		os.Remove(filepath.Dir(pinDir))
	})
	n.info("ready: gateway %s:443, DNS %s:53, admin http://%s (log: %s)", proxyAddr, proxyAddr, adminAddr, filepath.Base(st.path("snowgate.log")))

	token, err := st.mintToken()
	if err != nil {
		return err
	}
	env := append(os.Environ(), AgentEnv(token, st.path("ca.pem"))...)
	if len(opts.Run) > 0 {
		n.step("running %q in the agents' cgroup", strings.Join(opts.Run, " "))
		n.info("environment: SNOWFLAKE_ACCOUNT=%s SNOWFLAKE_HOST=%s SNOWFLAKE_AUTHENTICATOR=WORKLOAD_IDENTITY SNOWFLAKE_TOKEN=<fresh workload token>", demoAccount, demoHost)
		n.info("             SSL_CERT_FILE=NODE_EXTRA_CA_CERTS=REQUESTS_CA_BUNDLE=%s", st.path("ca.pem"))
		cmd := exec.CommandContext(ctx, opts.Run[0], opts.Run[1:]...)
		cmd.Env = env
		cmd.Stdin = os.Stdin
		pw := &prefixWriter{n: n, prefix: "    cmd │ "}
		cmd.Stdout, cmd.Stderr = pw, pw
		runErr := runInCgroup(cmd, agentsCg)
		pw.flush()
		if runErr != nil {
			n.info("the command failed: %v", runErr)
		}
		if err := finish(ctx, n, opts.Binary, cfgPath, pinDir, d); err != nil {
			return err
		}
		if runErr != nil {
			return fmt.Errorf("%s: %w", opts.Run[0], runErr)
		}
		return nil
	}

	n.step("the agent connects to %s with gosnowflake, unchanged", demoHost)
	cmd := exec.CommandContext(ctx, opts.Binary, "demo", "agent", "--rows", strconv.Itoa(opts.Rows))
	cmd.Env = append(env, envDirect+"="+upstream)
	pw := &prefixWriter{n: n, prefix: "    agent │ "}
	cmd.Stdout, cmd.Stderr = pw, pw
	reviewCtx, stopReview := context.WithCancel(ctx)
	reviewed := make(chan error, 1)
	go func() { reviewed <- review(reviewCtx, n, opts.Binary, cfgPath) }()
	agentErr := runInCgroup(cmd, agentsCg)
	pw.flush()
	stopReview()
	if err := <-reviewed; err != nil && agentErr == nil {
		agentErr = err
	}
	if agentErr != nil {
		n.info("the agent failed: %v", agentErr)
		n.info("gateway log: %s", d.tail(20))
		return fmt.Errorf("agent: %w", agentErr)
	}
	n.step("what reached the emulator (\"Snowflake\"), as the service user")
	for _, e := range emu.srv.QueryLog() {
		n.info("%s  %-8s %s", e.Time.Format("15:04:05.000"), e.User, firstLine(e.SQL))
	}
	return finish(ctx, n, opts.Binary, cfgPath, pinDir, d)
}

// finish shows the metrics, stops the gateway (which seals the sessions) and
// shows the recorded sessions, their replay and their verification.
func finish(ctx context.Context, n *narrator, bin, cfgPath, pinDir string, d *daemon) error {
	n.step("key metrics from http://%s/metrics", adminAddr)
	metrics, err := scrape(ctx, "http://"+adminAddr+"/metrics")
	if err != nil {
		return err
	}
	n.block(metrics)

	n.step("stopping the gateway: sessions are sealed; the redirect stays pinned (agents fail closed) until uninstalled")
	if err := d.stop(); err != nil {
		return err
	}
	n.info("snowgate run exited cleanly")

	n.step("the recorded sessions: snowgate sessions list, replay, verify")
	out, err := snowgate(ctx, bin, "sessions", "list", "--config", cfgPath)
	if err != nil {
		return err
	}
	n.block(out)
	ids, err := sessionIDs(ctx, bin, cfgPath)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return errors.New("no session was recorded")
	}
	for _, id := range ids {
		out, err := snowgate(ctx, bin, "sessions", "replay", id, "--config", cfgPath, "--speed", "0")
		if err != nil {
			return err
		}
		n.info("replay of %s:", id)
		n.block(out)
		out, err = snowgate(ctx, bin, "sessions", "verify", id, "--config", cfgPath)
		if err != nil {
			return fmt.Errorf("verify %s: %w\n%s", id, err, out)
		}
		n.info("verify %s:", id)
		n.block(out)
	}

	n.step("removing the demo: snowgate uninstall (the redirect), the cgroup, the namespace")
	out, err = snowgate(ctx, bin, "uninstall", "--pin-dir", pinDir)
	if err != nil {
		return err
	}
	n.block(out)
	n.info("'snowgate sessions list --config %s' reads the recordings again when --state-dir kept them", cfgPath)
	return nil
}

// review plays the reviewer: it watches the approval queue and approves each
// pending request, with a reason, through the CLI a reviewer uses.
func review(ctx context.Context, n *narrator, bin, cfgPath string) error {
	seen := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(300 * time.Millisecond):
		}
		ids, err := pendingApprovals(ctx, bin, cfgPath)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, id := range ids {
			if seen[id] {
				continue
			}
			seen[id] = true
			out, err := snowgate(ctx, bin, "approvals", "show", id, "--config", cfgPath)
			if err != nil {
				return err
			}
			n.info("reviewer %s sees approval request %s:", reviewer, id)
			n.block(out)
			n.info("reviewer %s approves %s: snowgate approvals approve %s --reason 'a one-row fix is fine'", reviewer, id, id)
			if _, err := snowgate(ctx, bin, "approvals", "approve", id, "--config", cfgPath, "--reason", "a one-row fix is fine"); err != nil {
				return err
			}
		}
	}
}

// snowgate runs the CLI and returns its output.
func snowgate(ctx context.Context, bin string, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(cctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("snowgate %s: %w: %s", strings.Join(args[:min(2, len(args))], " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// runInCgroup starts cmd straight into the cgroup (clone3 with
// CLONE_INTO_CGROUP, so it never runs a moment outside) and waits.
func runInCgroup(cmd *exec.Cmd, cgroup string) error {
	f, err := os.Open(cgroup)
	if err != nil {
		return fmt.Errorf("open cgroup: %w", err)
	}
	defer f.Close()
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd()), Pdeathsig: syscall.SIGKILL}
	return cmd.Run()
}

func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// removeCgroup kills what is left in a cgroup and removes it.
func removeCgroup(path string) {
	_ = os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
	for i := 0; i < 50; i++ {
		if err := os.Remove(path); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// demoEmulator is the emulator serving over TLS on loopback.
type demoEmulator struct {
	srv *emulator.Server
	hs  *http.Server
}

func (e *demoEmulator) close() {
	_ = e.hs.Close()
	_ = e.srv.Close()
}

// startEmulator serves the emulator on 127.0.0.1 over TLS with a CA of its
// own, knowing the gateway's service user by its public key and a platform
// admin by password. It returns the address and the CA file.
func startEmulator(st *stage) (*demoEmulator, string, string, error) {
	ca, err := emulatortest.NewCA([]string{"localhost", "127.0.0.1"})
	if err != nil {
		return nil, "", "", fmt.Errorf("emulator CA: %w", err)
	}
	caFile := st.path("emulator-ca.pem")
	if err := writeFile(caFile, ca.CertPEM); err != nil {
		return nil, "", "", err
	}
	srv, err := emulator.New(emulator.Config{
		Account:      demoAccount,
		Users:        map[string]string{adminUser: st.adminPassword},
		PublicKeys:   map[string]crypto.PublicKey{serviceUser: &st.svcKey.PublicKey},
		QueryLogFile: st.path("emulator-queries.jsonl"),
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, "", "", fmt.Errorf("start emulator: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return nil, "", "", fmt.Errorf("listen for the emulator: %w", err)
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{ca.Leaf}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = hs.ServeTLS(ln, "", "") }()
	return &demoEmulator{srv: srv, hs: hs}, ln.Addr().String(), caFile, nil
}

// seed creates the demo's data as the platform admin, straight to the
// emulator (this process is outside the agents' cgroup).
func seed(ctx context.Context, st *stage, upstream string) error {
	_, port, _ := net.SplitHostPort(upstream)
	pool, err := certPool(st.path("emulator-ca.pem"))
	if err != nil {
		return err
	}
	_ = gosnowflake.RegisterTLSConfig("snowgate-demo-emulator", &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	q := url.Values{
		"account": {demoAccount}, "protocol": {"https"}, "tlsConfigName": {"snowgate-demo-emulator"},
		"disableOCSPChecks": {"true"}, "certRevocationCheckMode": {"ADVISORY"},
		"crlAllowCertificatesWithoutCrlURL": {"true"}, "crlOnDiskCacheDisabled": {"true"},
		"disableTelemetry": {"true"},
	}
	dsn := fmt.Sprintf("%s:%s@localhost:%s/?%s", adminUser, url.QueryEscape(st.adminPassword), port, q.Encode())
	db, err := sql.Open("snowflake", dsn)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("seed: log in: %w", err)
	}
	defer conn.Close()
	for _, s := range []string{
		"CREATE DATABASE IF NOT EXISTS DEMO_DB",
		"USE DATABASE DEMO_DB",
		"CREATE OR REPLACE TABLE ORDERS (ID NUMBER, CUSTOMER VARCHAR, AMOUNT NUMBER(10,2))",
		"INSERT INTO ORDERS (ID, CUSTOMER, AMOUNT) VALUES (1, 'acme', 120.50), (2, 'globex', 99.99), (3, 'initech', 15.00)",
	} {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("seed: %s: %w", s, err)
		}
	}
	return nil
}

// daemon is the `snowgate run` child.
type daemon struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	err    error
}

func startDaemon(ctx context.Context, bin, cfgPath, pinDir, logPath string) (*daemon, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("gateway log: %w", err)
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--pin-dir", pinDir)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start snowgate run: %w", err)
	}
	d := &daemon{cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { d.err = cmd.Wait(); lf.Close(); close(d.exited) }()
	deadline := time.Now().Add(90 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-d.exited:
			return nil, fmt.Errorf("snowgate run exited (%v):\n%s", d.err, d.tail(30))
		case <-ctx.Done():
			d.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := client.Get("http://" + adminAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d, nil
			}
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("snowgate run not ready after 90s:\n%s", d.tail(30))
		}
	}
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 30 s).
func (d *daemon) stop() error {
	select {
	case <-d.exited:
		return d.exitErr()
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("snowgate run did not stop on SIGTERM:\n%s", d.tail(30))
	}
	return d.exitErr()
}

func (d *daemon) exitErr() error {
	if d.err != nil {
		return fmt.Errorf("snowgate run: %w:\n%s", d.err, d.tail(30))
	}
	return nil
}

// tail returns the last lines of the daemon's log.
func (d *daemon) tail(lines int) string {
	b, err := os.ReadFile(d.log)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// scrape returns the key lines of the gateway's metrics: snowgate's own
// families with non-zero values.
func scrape(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("metrics: %s", resp.Status)
	}
	var keep []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !keyMetric(line) {
			continue
		}
		keep = append(keep, line)
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	return strings.Join(keep, "\n"), nil
}

// keyMetric keeps the lines a network admin looks at first: decisions,
// logins, queries, approvals, recordings, the redirect's refusals, and
// degraded kernel features; not zeros, latency buckets or per-endpoint
// byte counts.
func keyMetric(line string) bool {
	switch {
	case !strings.HasPrefix(line, "snowgate_"), strings.HasSuffix(line, " 0"):
		return false
	case strings.Contains(line, "_seconds"), strings.Contains(line, "_bytes_total{endpoint"),
		strings.HasPrefix(line, "snowgate_requests_total"), strings.HasPrefix(line, "snowgate_build_info"):
		return false
	case strings.HasPrefix(line, "snowgate_kernel_feature_info"):
		return strings.Contains(line, `state="degraded"`) || strings.Contains(line, `state="missing"`)
	}
	return true
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
