package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/redirect"
)

// checkState is the outcome of one install check.
type checkState string

const (
	checkOK   checkState = "ok"
	checkFail checkState = "FAIL"
	checkWarn checkState = "warn"
	checkSkip checkState = "skip"
)

// check is one line of doctor's installation report.
type check struct {
	Name   string
	State  checkState
	Detail string
	// Fix says what to do; printed under a failing or warning line.
	Fix string
}

func printChecks(w io.Writer, checks []check) {
	width := 0
	for _, c := range checks {
		width = max(width, len(c.Name))
	}
	for _, c := range checks {
		fmt.Fprintf(w, "%-4s  %-*s  %s\n", c.State, width, c.Name, c.Detail)
		if c.Fix != "" && (c.State == checkFail || c.State == checkWarn) {
			fmt.Fprintf(w, "      %-*s  -> %s\n", width, "", c.Fix)
		}
	}
}

func failed(checks []check) int {
	n := 0
	for _, c := range checks {
		if c.State == checkFail {
			n++
		}
	}
	return n
}

// installChecks checks the installation o.configFile describes.
func installChecks(o doctorOptions) []check {
	cfg, err := config.Load(o.configFile)
	if err != nil {
		return []check{{Name: "configuration", State: checkFail, Detail: err.Error(),
			Fix: "fix the file (the message names the line and key); the default with every key documented is /usr/share/snowgate/snowgate.yaml"}}
	}
	at := func(p string) string { return filepath.Join(o.root, p) }
	checks := []check{{Name: "configuration", State: checkOK, Detail: o.configFile}}
	checks = append(checks, checkAgentsCgroup(cfg.Intercept.Cgroup))
	cg2, _ := redirect.FindCgroup2()
	procs := scanProcs("/proc")
	checks = append(checks, checkPlacement(procs, cg2, cfg.Intercept.Cgroup, at("/etc/docker/daemon.json"))...)
	checks = append(checks, checkPrograms(cfg.Intercept.Cgroup, o.pinDir))
	checks = append(checks, checkTrust(at, cfg.CA.CertFile, o.runnerEnv)...)
	checks = append(checks, checkSecrets(at, cfg)...)
	checks = append(checks, checkMetrics(cfg.Admin.Listen)...)
	return checks
}

// checkAgentsCgroup: the configured cgroup must be a cgroup v2 directory.
func checkAgentsCgroup(cg string) check {
	c := check{Name: "agents' cgroup"}
	var st unix.Statfs_t
	if err := unix.Statfs(cg, &st); err != nil {
		c.State, c.Detail = checkFail, cg+": "+err.Error()
		c.Fix = "start agents.slice (systemctl start agents.slice) or set intercept.cgroup to the cgroup v2 directory the runners live in"
		return c
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		c.State, c.Detail = checkFail, cg+" is not on a cgroup v2 file system"
		c.Fix = "set intercept.cgroup to a directory below the cgroup2 mount (" + cgroup2Hint() + ")"
		return c
	}
	c.State, c.Detail = checkOK, cg
	return c
}

func cgroup2Hint() string {
	if root, err := redirect.FindCgroup2(); err == nil {
		return root + "/agents.slice"
	}
	return "no cgroup2 mount found"
}

// proc is one process as /proc shows it.
type proc struct {
	PID     int
	Comm    string
	Cmdline []string
	// Cgroup is the cgroup v2 path relative to the hierarchy's root.
	Cgroup string
}

// scanProcs lists the processes under procRoot; ones that vanish while
// read are left out.
func scanProcs(procRoot string) []proc {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join(procRoot, e.Name())
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil {
			continue
		}
		cgb, err := os.ReadFile(filepath.Join(dir, "cgroup"))
		if err != nil {
			continue
		}
		p := proc{PID: pid, Comm: strings.TrimSpace(string(comm))}
		for _, line := range strings.Split(string(cgb), "\n") {
			if rest, ok := strings.CutPrefix(line, "0::"); ok {
				p.Cgroup = rest
			}
		}
		if cl, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			p.Cmdline = strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
		}
		out = append(out, p)
	}
	return out
}

// below reports whether cgroup (relative to the hierarchy) is the agents'
// cgroup or inside it.
func below(cgroup, agentsRel string) bool {
	return cgroup == agentsRel || strings.HasPrefix(cgroup, strings.TrimSuffix(agentsRel, "/")+"/")
}

// runnerComms are the process names of the CI runners whose jobs must run
// in the agents' cgroup.
var runnerComms = []string{"Runner.Listener", "Runner.Worker", "gitlab-runner"}

// checkPlacement checks where the runners, dockerd's containers and the
// gateway live relative to the agents' cgroup (absolute path agents, on
// the hierarchy mounted at cg2).
func checkPlacement(procs []proc, cg2, agents, dockerDaemonJSON string) []check {
	agentsRel := "/" + strings.TrimPrefix(strings.TrimPrefix(agents, cg2), "/")
	var out []check

	gw := check{Name: "gateway's cgroup"}
	for _, p := range procs {
		if p.Comm != "snowgate" || len(p.Cmdline) < 2 || p.Cmdline[1] != "run" {
			continue
		}
		if below(p.Cgroup, agentsRel) {
			gw.State, gw.Detail = checkFail, fmt.Sprintf("pid %d runs in %s, inside the agents' cgroup: its own traffic would be redirected to itself", p.PID, p.Cgroup)
			gw.Fix = "run the gateway from snowgate.service (system.slice), never below agents.slice"
			break
		}
		gw.State, gw.Detail = checkOK, fmt.Sprintf("pid %d in %s (outside the agents' cgroup)", p.PID, p.Cgroup)
	}
	if gw.State == "" {
		gw.State, gw.Detail = checkWarn, "no running gateway found"
		gw.Fix = "systemctl start snowgate; journalctl -u snowgate says why it stopped"
	}
	out = append(out, gw)

	runners := check{Name: "runners' cgroup"}
	var inside, outside []string
	for _, p := range procs {
		if !slices.Contains(runnerComms, p.Comm) {
			continue
		}
		desc := fmt.Sprintf("%s (pid %d) in %s", p.Comm, p.PID, p.Cgroup)
		if below(p.Cgroup, agentsRel) {
			inside = append(inside, desc)
		} else {
			outside = append(outside, desc)
		}
	}
	switch {
	case len(outside) > 0:
		runners.State, runners.Detail = checkFail, strings.Join(outside, ", ")+": outside "+agents+", its jobs are not redirected"
		runners.Fix = "install the runner drop-in (install.sh does, for units it finds) and restart the runner service between jobs"
	case len(inside) > 0:
		runners.State, runners.Detail = checkOK, strings.Join(inside, ", ")
	default:
		runners.State, runners.Detail = checkSkip, "no GitHub Actions or GitLab runner process found"
	}
	out = append(out, runners)

	docker := check{Name: "docker containers' cgroup parent"}
	parent := filepath.Base(agents)
	for _, p := range procs {
		if p.Comm != "dockerd" {
			continue
		}
		got := ""
		for i, a := range p.Cmdline {
			if v, ok := strings.CutPrefix(a, "--cgroup-parent="); ok {
				got = v
			} else if a == "--cgroup-parent" && i+1 < len(p.Cmdline) {
				got = p.Cmdline[i+1]
			}
		}
		if got == "" {
			if b, err := os.ReadFile(dockerDaemonJSON); err == nil {
				var dj struct {
					CgroupParent string `json:"cgroup-parent"`
				}
				if json.Unmarshal(b, &dj) == nil {
					got = dj.CgroupParent
				}
			}
		}
		if got == parent || got == agentsRel || strings.HasPrefix(got, strings.TrimSuffix(parent, ".slice")+"-") {
			docker.State, docker.Detail = checkOK, fmt.Sprintf("dockerd (pid %d) puts containers below %s", p.PID, got)
		} else {
			docker.State, docker.Detail = checkFail, fmt.Sprintf("dockerd (pid %d) has cgroup parent %q: containers escape the redirect", p.PID, got)
			docker.Fix = "install the docker drop-in (install.sh does) and restart docker between jobs"
		}
		break
	}
	if docker.State == "" {
		docker.State, docker.Detail = checkSkip, "dockerd not running"
	}
	return append(out, docker)
}

// checkPrograms lists the programs in force on the agents' cgroup.
func checkPrograms(cg, pinDir string) check {
	c := check{Name: "programs on the agents' cgroup"}
	if !redirect.Installed(pinDir) {
		c.State, c.Detail = checkFail, "the redirect is not installed (no pins in "+pinDir+")"
		c.Fix = "start the gateway (systemctl start snowgate): it installs the redirect"
		return c
	}
	st, err := redirect.QueryCgroup(cg, pinDir)
	if err != nil {
		c.State, c.Detail = checkFail, err.Error()
		c.Fix = "check intercept.cgroup names the cgroup the gateway attached to; restart snowgate"
		return c
	}
	var ours []string
	for _, p := range st.Programs {
		if p.Ours {
			ours = append(ours, p.Hook)
		}
	}
	if len(st.Missing) > 0 {
		c.State, c.Detail = checkFail, fmt.Sprintf("not in force: %v", st.Missing)
		c.Fix = "restart snowgate (it re-attaches); 'snowgate status' lists the effective programs"
		return c
	}
	c.State, c.Detail = checkOK, fmt.Sprintf("%d snowgate programs in force (%s)", len(ours), strings.Join(ours, ", "))
	return c
}

// readEnvFile parses KEY=VALUE lines (comments and blanks skipped).
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		env[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return env, sc.Err()
}

// holdsCert reports whether the PEM file holds cert.
func holdsCert(file string, cert *x509.Certificate) (bool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return false, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return false, nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil && c.Equal(cert) {
			return true, nil
		}
	}
}

// checkTrust: the runners' environment makes Go, Node and Python clients
// trust the gateway CA.
func checkTrust(at func(string) string, caFile, runnerEnv string) []check {
	b, err := os.ReadFile(at(caFile))
	var ca *x509.Certificate
	if err == nil {
		if blk, _ := pem.Decode(b); blk != nil {
			ca, err = x509.ParseCertificate(blk.Bytes)
		} else {
			err = fmt.Errorf("%s: no PEM certificate", at(caFile))
		}
	}
	if err != nil {
		return []check{{Name: "gateway CA", State: checkFail, Detail: err.Error(),
			Fix: "create it: snowgate ca init --config /etc/snowgate/snowgate.yaml (install.sh does)"}}
	}
	out := []check{{Name: "gateway CA", State: checkOK, Detail: fmt.Sprintf("%s (%s)", caFile, ca.Subject.CommonName)}}
	env, err := readEnvFile(runnerEnv)
	if err != nil {
		return append(out, check{Name: "runner environment", State: checkFail, Detail: err.Error(),
			Fix: "run install.sh again: it writes " + defaultRunnerEnv + ", which the runner drop-ins load"})
	}
	clients := []struct {
		name string
		vars []string
		// fallback is the file the client reads without the variables.
		fallback string
	}{
		{"CA trust (Go)", []string{"SSL_CERT_FILE"}, "/etc/ssl/certs/ca-certificates.crt"},
		{"CA trust (Node)", []string{"NODE_EXTRA_CA_CERTS"}, ""},
		{"CA trust (Python)", []string{"REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"}, ""},
	}
	for _, cl := range clients {
		c := check{Name: cl.name}
		file, via := cl.fallback, "system bundle "+cl.fallback
		for _, v := range cl.vars {
			if env[v] != "" {
				file, via = env[v], v+"="+env[v]
				break
			}
		}
		if file == "" {
			c.State, c.Detail = checkFail, fmt.Sprintf("%s sets none of %v", runnerEnv, cl.vars)
			c.Fix = "run install.sh again: it writes the variables into " + defaultRunnerEnv
			out = append(out, c)
			continue
		}
		ok, err := holdsCert(at(file), ca)
		switch {
		case err != nil:
			c.State, c.Detail = checkFail, via+": "+err.Error()
			c.Fix = "run install.sh again: it writes the CA bundle and the environment"
		case !ok:
			c.State, c.Detail = checkFail, via+" does not hold the gateway CA"
			c.Fix = "run install.sh again (the CA was re-created after the bundle was written)"
		default:
			c.State, c.Detail = checkOK, via+" holds the gateway CA"
		}
		out = append(out, c)
	}
	return out
}

// credstore is where the gateway's credentials live (LoadCredential=
// snowflake:/etc/credstore/snowgate in snowgate.service) and credPrefix
// what systemd names them in $CREDENTIALS_DIRECTORY.
const (
	credstore  = "/etc/credstore/snowgate"
	credPrefix = "snowflake_"
)

// checkSecrets: the CA key and the accounts' credential files are readable
// by their owner only. A file the daemon reads itself belongs to the
// gateway's user (or root, for a daemon run as root); a credential systemd
// hands in (LoadCredential=) is checked at its source in the credential
// store, which belongs to root.
func checkSecrets(at func(string) string, cfg *config.Config) []check {
	sgUID, hasUser := lookupUID(at("/etc/passwd"), "snowgate")
	secret := func(name, path string, fromStore bool) check {
		c := check{Name: name}
		want := map[uint32]string{0: "root"}
		fix := "chown snowgate:snowgate " + path + "; chmod 600 " + path
		if fromStore {
			fix = "chown root:root " + path + "; chmod 600 " + path
		} else if hasUser {
			want[sgUID] = "snowgate"
		}
		st, err := os.Stat(at(path))
		if err != nil {
			c.State, c.Detail = checkFail, path+": "+err.Error()
			c.Fix = "put the file in place; then " + fix
			if fromStore {
				c.Fix += " (systemd hands it to the gateway: LoadCredential= in snowgate.service)"
			}
			return c
		}
		owner, known := "", false
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			owner, known = want[sys.Uid]
			if !known {
				owner = "uid " + strconv.FormatUint(uint64(sys.Uid), 10)
			}
		}
		switch {
		case !st.Mode().IsRegular():
			c.State, c.Detail = checkFail, path+" is not a regular file"
			c.Fix = "put the secret in a regular file"
		case st.Mode().Perm()&0o077 != 0:
			c.State, c.Detail = checkFail, fmt.Sprintf("%s is mode %04o: others can read it", path, st.Mode().Perm())
			c.Fix = fix
		case !known:
			c.State, c.Detail = checkFail, fmt.Sprintf("%s belongs to %s", path, owner)
			c.Fix = fix
		default:
			c.State, c.Detail = checkOK, fmt.Sprintf("%s mode %04o, owner %s", path, st.Mode().Perm(), owner)
		}
		return c
	}
	out := []check{secret("CA key", cfg.CA.KeyFile, false)}
	names := make([]string, 0, len(cfg.Accounts))
	for n := range cfg.Accounts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cr := cfg.Accounts[n].Credential
		for _, f := range []string{cr.PrivateKeyFile, cr.TokenFile, cr.PasswordFile} {
			if f == "" {
				continue
			}
			if src, ok := credentialSource(f); ok {
				out = append(out, secret("credential of account "+n, src, true))
				continue
			}
			out = append(out, secret("credential of account "+n, f, false))
		}
	}
	return out
}

// credentialSource maps a credential path in systemd's credentials
// directory to its source in the credential store.
func credentialSource(path string) (string, bool) {
	for _, prefix := range []string{"$CREDENTIALS_DIRECTORY/", "${CREDENTIALS_DIRECTORY}/", "/run/credentials/snowgate.service/"} {
		if name, ok := strings.CutPrefix(path, prefix); ok {
			return filepath.Join(credstore, strings.TrimPrefix(name, credPrefix)), true
		}
	}
	return "", false
}

// lookupUID finds user's uid in a passwd file.
func lookupUID(passwd, user string) (uint32, bool) {
	b, err := os.ReadFile(passwd)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 2 && f[0] == user {
			if uid, err := strconv.ParseUint(f[2], 10, 32); err == nil {
				return uint32(uid), true
			}
		}
	}
	return 0, false
}

// checkMetrics: the admin listener serves /metrics and reports ready.
func checkMetrics(listen string) []check {
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (int, []byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen+path, nil)
		if err != nil {
			return 0, nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		return resp.StatusCode, b, err
	}
	m := check{Name: "metrics endpoint"}
	code, body, err := get("/metrics")
	switch {
	case err != nil:
		m.State, m.Detail = checkFail, err.Error()
		m.Fix = "is the gateway running? systemctl status snowgate; admin.listen is " + listen
	case code != http.StatusOK || !bytes.Contains(body, []byte("snowgate_build_info")):
		m.State, m.Detail = checkFail, fmt.Sprintf("http://%s/metrics answered %d without snowgate's metrics", listen, code)
		m.Fix = "another program holds " + listen + ": change admin.listen"
	default:
		m.State, m.Detail = checkOK, "http://"+listen+"/metrics"
	}
	ready := check{Name: "readiness"}
	if m.State != checkOK {
		ready.State, ready.Detail = checkSkip, "no metrics endpoint"
		return []check{m, ready}
	}
	code, body, err = get("/readyz")
	switch {
	case err != nil:
		ready.State, ready.Detail = checkFail, err.Error()
	case code != http.StatusOK:
		ready.State, ready.Detail = checkFail, strings.TrimSpace(string(body))
		ready.Fix = "journalctl -u snowgate says why; 'snowgate status' shows the redirect"
	default:
		ready.State, ready.Detail = checkOK, "http://"+listen+"/readyz: ready"
	}
	return []check{m, ready}
}
