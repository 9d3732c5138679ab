package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/certs"
	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/metrics"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/testenv"
)

func byName(checks []check) map[string]check {
	m := map[string]check{}
	for _, c := range checks {
		m[c.Name] = c
	}
	return m
}

func writeTestFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestDoctorSecrets: credential files readable by others, or owned by a
// stranger, fail with the command that fixes them.
func TestDoctorSecrets(t *testing.T) {
	testenv.RequireRoot(t) // the files must belong to root or another uid
	tests := []struct {
		name     string
		path     string // the configured path
		file     string // where the file is, below the root
		mode     os.FileMode
		uid      int
		want     checkState
		fixNames string
	}{
		{"key file 0600 root", "/etc/snowgate/acme.p8", "/etc/snowgate/acme.p8", 0o600, 0, checkOK, ""},
		{"key file 0600 snowgate", "/etc/snowgate/acme.p8", "/etc/snowgate/acme.p8", 0o600, 999, checkOK, ""},
		{"key file 0644", "/etc/snowgate/acme.p8", "/etc/snowgate/acme.p8", 0o644, 0, checkFail, "chmod 600"},
		{"key file 0640", "/etc/snowgate/acme.p8", "/etc/snowgate/acme.p8", 0o640, 999, checkFail, "chmod 600"},
		{"key file of a stranger", "/etc/snowgate/acme.p8", "/etc/snowgate/acme.p8", 0o600, 4242, checkFail, "chown snowgate:snowgate"},
		{"credential store, root", "$CREDENTIALS_DIRECTORY/snowflake_acme.p8", "/etc/credstore/snowgate/acme.p8", 0o600, 0, checkOK, ""},
		{"credential store, gateway user", "${CREDENTIALS_DIRECTORY}/snowflake_acme.p8", "/etc/credstore/snowgate/acme.p8", 0o600, 999, checkFail, "chown root:root"},
		{"credential store, group readable", "/run/credentials/snowgate.service/snowflake_acme.p8", "/etc/credstore/snowgate/acme.p8", 0o640, 0, checkFail, "chmod 600"},
		{"missing", "/etc/snowgate/none.p8", "", 0, 0, checkFail, "put the file in place"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTestFile(t, root+"/etc/passwd", "root:x:0:0::/root:/bin/sh\nsnowgate:x:999:999::/var/lib/snowgate:/usr/sbin/nologin\n", 0o644)
			writeTestFile(t, root+"/etc/snowgate/ca.key", "k", 0o600)
			if tt.file != "" {
				writeTestFile(t, root+tt.file, "secret", tt.mode)
				if err := os.Chown(root+tt.file, tt.uid, tt.uid); err != nil {
					t.Fatal(err)
				}
			}
			cfg := &config.Config{
				CA:       config.CA{KeyFile: "/etc/snowgate/ca.key"},
				Accounts: map[string]config.Account{"acme": {Credential: config.Credential{Type: "keypair", PrivateKeyFile: tt.path}}},
			}
			checks := byName(checkSecrets(func(p string) string { return filepath.Join(root, p) }, cfg))
			if c := checks["CA key"]; c.State != checkOK {
				t.Errorf("CA key: %+v", c)
			}
			c := checks["credential of account acme"]
			if c.State != tt.want || !strings.Contains(c.Fix, tt.fixNames) {
				t.Errorf("got %+v, want state %s with a fix naming %q", c, tt.want, tt.fixNames)
			}
			if tt.file != "" && c.State == checkOK && !strings.Contains(c.Detail, tt.file) {
				t.Errorf("detail %q does not name the file checked (%s)", c.Detail, tt.file)
			}
		})
	}
}

// TestDoctorTrust: each client's variable must lead to a file that holds
// the gateway CA.
func TestDoctorTrust(t *testing.T) {
	root := t.TempDir()
	at := func(p string) string { return filepath.Join(root, p) }
	ca, err := certs.InitCA(at("/etc/snowgate/ca.pem"), at("/etc/snowgate/ca.key"), certs.CAOptions{PermittedDomains: []string{"snowflakecomputing.com"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.NewCA(certs.CAOptions{PermittedDomains: []string{"snowflakecomputing.com"}})
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, at("/etc/snowgate/ca-bundle.pem"), string(other.CertPEM)+string(ca.CertPEM), 0o644)
	writeTestFile(t, at("/etc/snowgate/stale-bundle.pem"), string(other.CertPEM), 0o644)
	writeTestFile(t, at("/etc/ssl/certs/ca-certificates.crt"), string(other.CertPEM), 0o644)

	good := "SSL_CERT_FILE=/etc/snowgate/ca-bundle.pem\nREQUESTS_CA_BUNDLE=/etc/snowgate/ca-bundle.pem\nNODE_EXTRA_CA_CERTS=/etc/snowgate/ca.pem\n"
	tests := []struct {
		name string
		env  string // "" : no file
		want map[string]checkState
	}{
		{"as install.sh writes it", good, map[string]checkState{
			"gateway CA": checkOK, "CA trust (Go)": checkOK, "CA trust (Node)": checkOK, "CA trust (Python)": checkOK}},
		{"stale bundle", "# comment\nSSL_CERT_FILE=/etc/snowgate/stale-bundle.pem\nNODE_EXTRA_CA_CERTS=\"/etc/snowgate/ca.pem\"\n", map[string]checkState{
			"CA trust (Go)": checkFail, "CA trust (Node)": checkOK, "CA trust (Python)": checkFail}},
		{"no Node variable, Go falls back to a system bundle without the CA", "REQUESTS_CA_BUNDLE=/etc/snowgate/ca-bundle.pem\n", map[string]checkState{
			"CA trust (Go)": checkFail, "CA trust (Node)": checkFail, "CA trust (Python)": checkOK}},
		{"file missing", "NODE_EXTRA_CA_CERTS=/etc/snowgate/gone.pem\n", map[string]checkState{"CA trust (Node)": checkFail}},
		{"no environment file", "", map[string]checkState{"runner environment": checkFail}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			envFile := filepath.Join(t.TempDir(), "runner.env")
			if tt.env != "" {
				writeTestFile(t, envFile, tt.env, 0o644)
			}
			checks := byName(checkTrust(at, "/etc/snowgate/ca.pem", envFile))
			for name, want := range tt.want {
				c, ok := checks[name]
				if !ok || c.State != want {
					t.Errorf("%s: got %+v, want %s", name, c, want)
				}
				if ok && c.State == checkFail && c.Fix == "" {
					t.Errorf("%s fails without saying what to do", name)
				}
			}
		})
	}
}

// TestDoctorPlacementRules covers where the gateway, runners and dockerd
// must be, from process tables.
func TestDoctorPlacementRules(t *testing.T) {
	const cg2, agents = "/sys/fs/cgroup", "/sys/fs/cgroup/agents.slice"
	daemonJSON := filepath.Join(t.TempDir(), "daemon.json")
	writeTestFile(t, daemonJSON, `{"cgroup-parent": "agents.slice"}`, 0o644)
	tests := []struct {
		name       string
		procs      []proc
		daemonJSON string
		want       map[string]checkState
	}{
		{"all in place", []proc{
			{PID: 10, Comm: "snowgate", Cmdline: []string{"/usr/bin/snowgate", "run", "--config", "x"}, Cgroup: "/system.slice/snowgate.service"},
			{PID: 11, Comm: "Runner.Listener", Cgroup: "/agents.slice/actions.runner.acme.service"},
			{PID: 12, Comm: "dockerd", Cmdline: []string{"/usr/bin/dockerd", "--cgroup-parent=agents.slice"}, Cgroup: "/system.slice/docker.service"},
		}, "", map[string]checkState{"gateway's cgroup": checkOK, "runners' cgroup": checkOK, "docker containers' cgroup parent": checkOK}},
		{"gateway inside, runner outside, docker default", []proc{
			{PID: 10, Comm: "snowgate", Cmdline: []string{"snowgate", "run"}, Cgroup: "/agents.slice/x.scope"},
			{PID: 11, Comm: "gitlab-runner", Cgroup: "/system.slice/gitlab-runner.service"},
			{PID: 12, Comm: "dockerd", Cmdline: []string{"/usr/bin/dockerd", "-H", "fd://"}, Cgroup: "/system.slice/docker.service"},
		}, "", map[string]checkState{"gateway's cgroup": checkFail, "runners' cgroup": checkFail, "docker containers' cgroup parent": checkFail}},
		{"a sibling named like the slice is not inside it", []proc{
			{PID: 11, Comm: "Runner.Worker", Cgroup: "/agents.slice-other/job.scope"},
		}, "", map[string]checkState{"gateway's cgroup": checkWarn, "runners' cgroup": checkFail, "docker containers' cgroup parent": checkSkip}},
		{"docker parent from daemon.json", []proc{
			{PID: 12, Comm: "dockerd", Cmdline: []string{"/usr/bin/dockerd"}, Cgroup: "/system.slice/docker.service"},
		}, daemonJSON, map[string]checkState{"runners' cgroup": checkSkip, "docker containers' cgroup parent": checkOK}},
		{"doctor itself is not the gateway", []proc{
			{PID: 13, Comm: "snowgate", Cmdline: []string{"snowgate", "doctor"}, Cgroup: "/agents.slice/x.scope"},
		}, "", map[string]checkState{"gateway's cgroup": checkWarn}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dj := tt.daemonJSON
			if dj == "" {
				dj = filepath.Join(t.TempDir(), "none.json")
			}
			checks := byName(checkPlacement(tt.procs, cg2, agents, dj))
			for name, want := range tt.want {
				if c := checks[name]; c.State != want {
					t.Errorf("%s: got %+v, want %s", name, c, want)
				}
			}
		})
	}
}

// TestDoctorPlacementLive finds real runner processes by name in /proc and
// tells the one inside the agents' cgroup from the one outside.
func TestDoctorPlacementLive(t *testing.T) {
	testenv.RequireRoot(t)
	cg2 := testenv.NewCgroup(t)
	agents := cg2.Child(t, "agents.slice")
	elsewhere := cg2.Child(t, "system.slice")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	// A runner is recognised by its process name.
	runner := filepath.Join(t.TempDir(), "Runner.Listener")
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, runner, string(b), 0o755)
	start := func(cg *testenv.Cgroup) {
		cmd := testenv.Command(t, testenv.Proc{Cgroup: cg, Root: true}, runner, "300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	root, err := redirect.FindCgroup2()
	if err != nil {
		t.Fatal(err)
	}
	count := func(want checkState) check {
		deadline := time.Now().Add(time.Minute)
		for {
			c := byName(checkPlacement(scanProcs("/proc"), root, agents.Path, "/nonexistent"))["runners' cgroup"]
			if c.State == want || time.Now().After(deadline) {
				return c
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	start(agents)
	if c := count(checkOK); c.State != checkOK || !strings.Contains(c.Detail, "Runner.Listener") {
		t.Fatalf("runner inside the agents' cgroup: %+v", c)
	}
	start(elsewhere)
	if c := count(checkFail); c.State != checkFail || !strings.Contains(c.Detail, "system.slice") {
		t.Fatalf("runner outside the agents' cgroup: %+v", c)
	}
}

// TestDoctorMetrics probes a real metrics handler, a foreign server and a
// closed port.
func TestDoctorMetrics(t *testing.T) {
	m, err := metrics.New(metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ready := true
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready {
			http.Error(w, "not ready: redirect not installed", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	ours := httptest.NewServer(mux)
	defer ours.Close()
	foreign := httptest.NewServer(http.NotFoundHandler())
	defer foreign.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	tests := []struct {
		name          string
		listen        string
		ready         bool
		metrics, rdyz checkState
	}{
		{"serving and ready", host(ours), true, checkOK, checkOK},
		{"serving, not ready", host(ours), false, checkOK, checkFail},
		{"another program on the port", host(foreign), true, checkFail, checkSkip},
		{"nothing listening", closed, true, checkFail, checkSkip},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready = tt.ready
			checks := byName(checkMetrics(tt.listen))
			if c := checks["metrics endpoint"]; c.State != tt.metrics {
				t.Errorf("metrics endpoint: %+v, want %s", c, tt.metrics)
			}
			if c := checks["readiness"]; c.State != tt.rdyz {
				t.Errorf("readiness: %+v, want %s", c, tt.rdyz)
			}
		})
	}
}

// TestDoctorAgentsCgroup: the configured cgroup must exist on cgroup v2.
func TestDoctorAgentsCgroup(t *testing.T) {
	if c := checkAgentsCgroup(t.TempDir()); c.State != checkFail || !strings.Contains(c.Detail, "cgroup v2") {
		t.Errorf("a plain directory: %+v", c)
	}
	if c := checkAgentsCgroup("/nonexistent/agents.slice"); c.State != checkFail || c.Fix == "" {
		t.Errorf("a missing directory: %+v", c)
	}
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	if c := checkAgentsCgroup(cg.Path); c.State != checkOK {
		t.Errorf("a cgroup v2 directory: %+v", c)
	}
}

// TestDoctorSelectsInstallChecks: the install checks run for the installed
// appliance (its configuration present, the default pin directory) or when
// --config asks; a redirect elsewhere is checked alone.
func TestDoctorSelectsInstallChecks(t *testing.T) {
	present := filepath.Join(t.TempDir(), "snowgate.yaml")
	b, err := os.ReadFile("../../appliance/snowgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, present, string(b), 0o644)
	absent := filepath.Join(t.TempDir(), "none.yaml")
	pinDir := filepath.Join(t.TempDir(), "pins")
	tests := []struct {
		name string
		o    doctorOptions
		want string
	}{
		{"installed appliance", doctorOptions{configFile: present}, "installation (" + present + "):"},
		{"another redirect", doctorOptions{configFile: present, pinDirGiven: true}, "installation: not checked for the redirect in " + pinDir},
		{"asked for", doctorOptions{configFile: present, configGiven: true, pinDirGiven: true}, "installation (" + present + "):"},
		{"nothing installed", doctorOptions{configFile: absent}, "installation: no " + absent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.pinDir, o.runnerEnv, o.root = pinDir, filepath.Join(t.TempDir(), "runner.env"), "/"
			var out strings.Builder
			err := runDoctor(&out, o)
			if !strings.Contains(out.String(), tt.want) {
				t.Fatalf("doctor output lacks %q:\n%s", tt.want, out.String())
			}
			// The default configuration names nothing that exists here:
			// its install checks fail, and so does doctor.
			if strings.Contains(tt.want, "installation (") && err == nil {
				t.Errorf("doctor succeeded with failing install checks:\n%s", out.String())
			}
		})
	}
}
