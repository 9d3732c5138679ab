package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/testenv"
)

const metricsClientEnv = "SNOWGATE_METRICS_TEST_CLIENT"

// metricsRows is the size of the agent's large result: with the emulator's
// pages of 10 inline rows and 100-row chunks it comes back in chunks.
const metricsRows = 1000

// TestMetricsClientProcess is not a test: it is the agent of
// TestMetricsEndToEnd, run in the agents' cgroup. It looks up the OCSP cache
// on port 80, logs in with gosnowflake, reads a small and a chunked result,
// then tries two bypasses (QUIC to 443, TLS to a foreign name), which must
// fail. It skips otherwise.
func TestMetricsClientProcess(t *testing.T) {
	dsn := os.Getenv(metricsClientEnv)
	if dsn == "" {
		t.Skip("helper process for TestMetricsEndToEnd")
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	hc := &http.Client{Timeout: time.Minute}
	resp, err := hc.Get("http://acme.snowflakecomputing.com/ocsp_response_cache.json")
	if err != nil {
		fail("OCSP cache look-up: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	db, err := sql.Open("snowflake", dsn)
	if err != nil {
		fail("open: %v", err)
	}
	defer db.Close()
	var one string
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		fail("SELECT 1: %v", err)
	}
	rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT seq4() AS n FROM TABLE(GENERATOR(ROWCOUNT => %d))", metricsRows))
	if err != nil {
		fail("generator query: %v", err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		fail("generator rows: %v", err)
	}
	rows.Close()

	// QUIC to 443 is refused by the redirect (sendmsg4).
	if u, err := net.Dial("udp4", "203.0.113.10:443"); err == nil {
		if _, err := u.Write([]byte("quic initial")); err == nil {
			fail("UDP to 443 was sent; the redirect should refuse it")
		}
		u.Close()
	}
	// TLS to a foreign name is refused by the gateway (other_tls: deny).
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 30 * time.Second}, Config: &tls.Config{ServerName: "example.com"}}
	if c, err := d.DialContext(ctx, "tcp", "203.0.113.10:443"); err == nil {
		c.Close()
		fail("TLS to example.com through the redirect succeeded; the gateway should refuse it")
	}
	fmt.Printf("one=%s rows=%d\n", one, n)
	os.Exit(0)
}

// scrape is one /metrics read: every sample by family.
type scrape map[string]*dto.MetricFamily

// sum adds the samples of family whose labels include match (counters,
// gauges, and histogram sample counts).
func (s scrape) sum(family string, match map[string]string) (float64, bool) {
	mf, ok := s[family]
	if !ok {
		return 0, false
	}
	var total float64
	found := false
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		for k, v := range match {
			if labels[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total, found
}

// TestMetricsEndToEnd runs `snowgate run`, drives an agent through it (a
// login, queries, chunks, an OCSP look-up, two bypass attempts) and checks
// that every family moved as the traffic says it should, that /metrics is
// promlint-clean, and that /readyz follows the redirect's state.
func TestMetricsEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipping the daemon end-to-end test in -short mode")
	}
	bin := buildSnowgate(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if out, err := runSnowgate(t, bin, "ca", "init", "--cert", certFile, "--key", keyFile); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	cg := testenv.NewCgroup(t)
	ns := testenv.NewNetns(t)
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatal(err)
	}
	pinDir := filepath.Join("/sys/fs/bpf", "snowgate-metricstest-"+hex.EncodeToString(suffix[:]))
	t.Cleanup(func() { _ = redirect.Uninstall(pinDir) })
	var inst *emulatortest.Instance
	if err := ns.Do(func() error {
		inst = emulatortest.Start(t, emulator.Config{
			Account:    "acme",
			Users:      map[string]string{"SVC": "pw-metrics-test-1234"},
			InlineRows: 10,
			ChunkRows:  100,
		})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("pw-metrics-test-1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The agent's CI token, from a local issuer whose keys the daemon
	// reads from a file (it runs in its own network namespace).
	issuer := oidctest.Start(t)
	jwksFile := issuer.WriteJWKSFile(t)
	token := issuer.Sign(t, oidctest.GitHub("snowgate", "acme", "1001", "app", "456789"))
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
  - name: metrics-rule
    match: {issuer: "%s", claims: {repository: acme/app}}
    account: acme
    snowflake: {user: SVC, role: R}
recording:
  dir: %s
admin:
  listen: %s
`, cg.Path, certFile, keyFile, inst.URL, inst.CAFile, pwFile, issuer.URL, jwksFile, issuer.URL, filepath.Join(dir, "recordings"), admin)
	cfgFile := filepath.Join(dir, "snowgate.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	d := startDaemonProc(t, testenv.Command(t, testenv.Proc{Netns: ns, Root: true}, bin, "run", "--config", cfgFile, "--pin-dir", pinDir), "")
	client := ns.HTTPClient(30 * time.Second)
	get := func(path string) (int, string, error) {
		resp, err := client.Get("http://" + admin + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	waitAdmin(t, d, client, "http://"+admin+"/readyz", func(code int, body string) bool {
		return code == http.StatusOK && strings.TrimSpace(body) == "ready"
	})
	read := func() (scrape, string) {
		t.Helper()
		code, body, err := get("/metrics")
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /metrics: status %d, err %v\n%s", code, err, body)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("parse /metrics: %v\n%s", err, body)
		}
		return scrape(mfs), body
	}
	before, _ := read()

	agent := testenv.Command(t, testenv.Proc{Cgroup: cg, Netns: ns, Root: true},
		os.Args[0], "-test.run=^TestMetricsClientProcess$", "-test.count=1")
	agent.Env = testenv.DriverEnv(t, certFile, metricsClientEnv+"=acme.snowflakecomputing.com:443/?"+url.Values{
		"account": {"acme"}, "authenticator": {"WORKLOAD_IDENTITY"}, "workloadIdentityProvider": {"OIDC"},
		"token": {token}, "loginTimeout": {"120"},
	}.Encode())
	agentOut, err := agent.CombinedOutput()
	if err != nil || !strings.Contains(string(agentOut), fmt.Sprintf("one=1 rows=%d", metricsRows)) {
		t.Fatalf("agent through snowgate run: %v\n%s\ndaemon:\n%s", err, agentOut, d.logs())
	}

	// Observers run after each reply: the last exchange may land a moment
	// after the agent exits, so wait for the counts to settle.
	var after scrape
	var body string
	deadline := time.Now().Add(time.Minute)
	for {
		after, body = read()
		q, _ := after.sum("snowgate_queries_total", nil)
		c, _ := after.sum("snowgate_chunk_streams_total", map[string]string{"result": "streamed"})
		if q >= 2 && c >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	type lbl = map[string]string
	grew := []struct {
		family string
		labels lbl
	}{
		{"snowgate_connections_total", lbl{"decision": "intercepted"}},
		{"snowgate_connections_total", lbl{"decision": "refused", "reason": "server_name"}},
		{"snowgate_connections_accepted_total", nil},
		{"snowgate_ocsp_requests_total", nil},
		{"snowgate_redirect_redirected_total", lbl{"family": "ipv4"}},
		{"snowgate_redirect_refused_total", lbl{"reason": "quic"}},
		{"snowgate_redirect_dns_redirected_total", nil},
		{"snowgate_redirect_tuples_recorded_total", nil},
		{"snowgate_logins_total", lbl{"result": "succeeded", "rule": "metrics-rule"}},
		{"snowgate_queries_total", nil},
		{"snowgate_requests_total", lbl{"endpoint": "query-request", "code": "200"}},
		{"snowgate_request_duration_seconds", lbl{"endpoint": "query-request"}},
		{"snowgate_upstream_request_duration_seconds", lbl{"endpoint": "login"}},
		{"snowgate_upstream_request_duration_seconds", lbl{"endpoint": "query-request"}},
		{"snowgate_upstream_request_duration_seconds", lbl{"endpoint": "chunk"}},
		{"snowgate_request_body_bytes_total", lbl{"endpoint": "query-request"}},
		{"snowgate_response_body_bytes_total", lbl{"endpoint": "query-request"}},
		{"snowgate_response_body_bytes_total", lbl{"endpoint": "chunk"}},
		{"snowgate_chunk_streams_total", lbl{"result": "streamed"}},
	}
	for _, g := range grew {
		b, _ := before.sum(g.family, g.labels)
		a, ok := after.sum(g.family, g.labels)
		if !ok || a <= b {
			t.Errorf("%s%v did not grow: before %v, after %v (present %v)", g.family, g.labels, b, a, ok)
		}
	}
	// At least what the agent did (a driver may retry on a slow machine),
	// and nothing it did not do.
	for _, c := range []struct {
		family   string
		labels   lbl
		min, max float64
	}{
		{"snowgate_logins_total", nil, 1, 2},
		{"snowgate_logins_total", lbl{"result": "refused"}, 0, 0},
		{"snowgate_queries_total", nil, 2, 4},
		{"snowgate_chunk_streams_total", nil, metricsRows / 100, 2 * metricsRows / 100},
		{"snowgate_chunk_streams_total", lbl{"result": "refused"}, 0, 0},
		{"snowgate_connections_total", lbl{"decision": "refused", "reason": "not_redirected"}, 0, 0},
		{"snowgate_connections_total", lbl{"decision": "refused", "reason": "server_name"}, 1, 1},
		{"snowgate_redirect_refused_total", lbl{"reason": "quic"}, 1, 1},
	} {
		b, _ := before.sum(c.family, c.labels)
		a, _ := after.sum(c.family, c.labels)
		if d := a - b; d < c.min || d > c.max {
			t.Errorf("%s%v moved by %v, want %v to %v", c.family, c.labels, d, c.min, c.max)
		}
	}
	for _, present := range []struct {
		family string
		labels lbl
		value  float64
	}{
		// The agent logged in once and exited without logging out: its
		// session is still live in the gateway's store.
		{"snowgate_sessions_active", nil, 1},
		{"snowgate_redirect_installed", nil, 1},
		{"snowgate_requests_in_progress", nil, 0},
		{"snowgate_build_info", nil, 1},
		{"snowgate_kernel_feature_info", lbl{"feature": "snowgate programs pass the verifier", "state": "ok"}, 1},
	} {
		if v, ok := after.sum(present.family, present.labels); !ok || v != present.value {
			t.Errorf("%s%v = %v (present %v), want %v", present.family, present.labels, v, ok, present.value)
		}
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// /readyz follows the redirect: once it is removed, the daemon is not
	// ready (its agents would go direct), and it says why.
	if out, err := runSnowgate(t, bin, "uninstall", "--pin-dir", pinDir, "--keep-interface"); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	code, rbody, err := get("/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(rbody, "redirect not in force") {
		t.Errorf("/readyz with the redirect removed: status %d, %q, err %v; want 503 naming the redirect", code, rbody, err)
	}
	if code, _, err := get("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz: status %d, err %v; the process is alive", code, err)
	}

	if err := d.stop(t); err != nil {
		t.Fatalf("snowgate run after SIGTERM: %v\n%s", err, d.logs())
	}
}

// stageHook stands for a later stage's hook: it observes exchanges, keeps
// a session count and has a family of its own.
type stageHook struct{ families *prometheus.CounterVec }

func (stageHook) Observe(*gateway.Exchange)             {}
func (stageHook) ActiveSessions() int                   { return 7 }
func (h stageHook) Describe(ch chan<- *prometheus.Desc) { h.families.Describe(ch) }
func (h stageHook) Collect(ch chan<- prometheus.Metric) { h.families.Collect(ch) }
func (stageHook) RecordedBytes() uint64                 { return 42 }
func (stageHook) RecordingErrors() uint64               { return 0 }

// TestWireMetricsHooks: wireMetrics finds the stages' figures on their
// hooks, registers their own families once, adds its observer, and /readyz
// says why a daemon that has not started is not ready.
func TestWireMetricsHooks(t *testing.T) {
	hook := stageHook{families: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "snowgate_stage_things_total", Help: "Things a stage did."}, []string{"kind"})}
	hook.families.WithLabelValues("x").Add(3)
	d := &daemon{cfg: &config.Config{}, log: slog.Default(), admin: adminMux()}
	// The same hook twice (an observer and a recorder) registers once.
	d.gw.Observers = []gateway.Observer{hook, hook}
	if err := d.wireMetrics(context.Background()); err != nil {
		t.Fatalf("wireMetrics: %v", err)
	}
	if n := len(d.gw.Observers); n != 3 {
		t.Fatalf("%d observers after wireMetrics, want the 2 hooks and the metrics observer", n)
	}
	srv := httptest.NewServer(d.admin)
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	for _, want := range []string{`snowgate_stage_things_total{kind="x"} 3`, "snowgate_sessions_active 7", "snowgate_recording_bytes_total 42", "snowgate_build_info"} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/metrics (status %d) lacks %q", code, want)
		}
	}
	// Families of a stage that is not running are absent.
	if strings.Contains(body, "snowgate_approvals_pending") || strings.Contains(body, "snowgate_connections_total") {
		t.Errorf("/metrics reports families with no source:\n%s", body)
	}
	code, body = get("/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "gateway not serving") || !strings.Contains(body, "redirect not installed") {
		t.Errorf("/readyz before start: %d %q", code, body)
	}
	// A cancelled daemon says it is stopping.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if p := d.notReady(ctx); !slices.Contains(p, "stopping") {
		t.Errorf("notReady after cancel: %v", p)
	}
}
