package appliance

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/testenv"
)

// binDir holds the binaries the tests build, one per version.
var (
	binDir   string
	binMu    sync.Mutex
	binBuilt = map[string]string{}
)

func TestMain(m *testing.M) {
	var err error
	binDir, err = os.MkdirTemp("", "snowgate-appliance-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// buildSnowgate builds the binary with version v, once per test binary.
func buildSnowgate(t *testing.T, v string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if bin, ok := binBuilt[v]; ok {
		return bin
	}
	bin := filepath.Join(binDir, v, "snowgate")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+v, "-o", bin, "../cmd/snowgate")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	binBuilt[v] = bin
	return bin
}

// run runs a script and returns its output; want says whether it must
// succeed.
func run(t *testing.T, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tree is a snapshot of a directory: every path with its mode, owner and
// content hash.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("%v %d:%d", info.Mode(), st.Uid, st.Gid)
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			v += " " + hex.EncodeToString(h[:8])
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, "-"+k)
		} else if v != w {
			d = append(d, fmt.Sprintf("~%s (%s → %s)", k, v, w))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "+"+k)
		}
	}
	return d
}

// selfSignedPEM is a certificate standing for the system's roots.
func selfSignedPEM(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestInstallLifecycle installs, reinstalls, upgrades and uninstalls the
// appliance below a scratch root with a scratch cgroup tree, the way an
// operator runs the scripts, and checks the files, their owners and modes
// at each step.
func TestInstallLifecycle(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	if testing.Short() {
		t.Skip("builds the binary twice; skipped in -short mode")
	}
	v1, v2 := buildSnowgate(t, "v1.0.0-test"), buildSnowgate(t, "v1.1.0-test")
	root, cg := t.TempDir(), t.TempDir()
	// What a runner machine has: a system trust store with its bundle, a
	// GitHub runner unit and directory, docker.
	systemRoot := selfSignedPEM(t, "System Root CA")
	writeFile(t, root+"/etc/ssl/certs/ca-certificates.crt", string(systemRoot), 0o644)
	if err := os.MkdirAll(root+"/usr/local/share/ca-certificates", 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, root+"/etc/systemd/system/actions.runner.acme-app.r1.service", "[Service]\nExecStart=/home/runner/run.sh\n", 0o644)
	writeFile(t, root+"/usr/lib/systemd/system/docker.service", "[Service]\nExecStart=/usr/bin/dockerd -H fd://\n", 0o644)
	runnerDir := root + "/home/runner/actions-runner"
	writeFile(t, runnerDir+"/.env", "LANG=C.UTF-8\n", 0o600)

	args := []string{"--root", root, "--cgroup-root", cg, "--runner-dir", runnerDir}
	out := run(t, "install.sh", append(args, "--bin", v1)...)
	for _, want := range []string{"created user snowgate", "installed /etc/snowgate/snowgate.yaml", "snowgate doctor",
		"no systemd driven here"} {
		if !strings.Contains(out, want) {
			t.Errorf("install output lacks %q:\n%s", want, out)
		}
	}
	// doctor runs against the scratch root: the trust it set up checks out.
	for _, want := range []string{"ok    CA trust (Go)", "ok    CA trust (Node)", "ok    CA trust (Python)", "ok    CA key", "ok    configuration"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}

	uid := ""
	for _, line := range strings.Split(read(t, root+"/etc/passwd"), "\n") {
		if f := strings.Split(line, ":"); len(f) > 3 && f[0] == "snowgate" {
			uid = f[2]
		}
	}
	if uid == "" {
		t.Fatalf("no snowgate user in the scratch /etc/passwd")
	}
	files := []struct {
		path  string
		mode  os.FileMode
		owner string // "root" or "snowgate"
	}{
		{"usr/bin/snowgate", 0o755, "root"},
		{"usr/lib/systemd/system/snowgate.service", 0o644, "root"},
		{"usr/lib/systemd/system/snowgate.socket", 0o644, "root"},
		{"usr/lib/systemd/system/agents.slice", 0o644, "root"},
		{"usr/lib/sysusers.d/snowgate.conf", 0o644, "root"},
		{"usr/lib/tmpfiles.d/snowgate.conf", 0o644, "root"},
		{"usr/share/snowgate/snowgate.yaml", 0o644, "root"},
		{"usr/share/snowgate/grafana-dashboard.json", 0o644, "root"},
		{"usr/share/snowgate/uninstall.sh", 0o755, "root"},
		{"etc/snowgate/snowgate.yaml", 0o640, "root"},
		{"etc/snowgate/ca.pem", 0o644, "root"},
		{"etc/snowgate/ca.key", 0o600, "snowgate"},
		{"etc/snowgate/ca-bundle.pem", 0o644, "root"},
		{"etc/snowgate/runner.env", 0o644, "root"},
		{"usr/local/share/ca-certificates/snowgate.crt", 0o644, "root"},
		{"etc/systemd/system/actions.runner.acme-app.r1.service.d/snowgate.conf", 0o644, "root"},
		{"etc/systemd/system/docker.service.d/snowgate.conf", 0o644, "root"},
		{"etc/credstore/snowgate", fs.ModeDir | 0o700, "root"},
		{"var/lib/snowgate", fs.ModeDir | 0o700, "snowgate"},
		{"var/log/snowgate", fs.ModeDir | 0o750, "snowgate"},
	}
	for _, f := range files {
		info, err := os.Stat(filepath.Join(root, f.path))
		if err != nil {
			t.Errorf("after install: %v", err)
			continue
		}
		if info.Mode() != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, info.Mode(), f.mode)
		}
		owner := fmt.Sprint(info.Sys().(*syscall.Stat_t).Uid)
		if want := map[string]string{"root": "0", "snowgate": uid}[f.owner]; owner != want {
			t.Errorf("%s: owner uid %s, want %s (%s)", f.path, owner, want, f.owner)
		}
	}
	if _, err := os.Stat(root + "/etc/systemd/system/gitlab-runner.service.d"); err == nil {
		t.Error("a gitlab-runner drop-in was installed with no gitlab-runner unit")
	}
	if info, err := os.Stat(cg + "/agents.slice"); err != nil || !info.IsDir() {
		t.Errorf("agents.slice not created below the cgroup root: %v", err)
	}
	cfg, err := config.Load(root + "/etc/snowgate/snowgate.yaml")
	if err != nil {
		t.Fatalf("installed configuration: %v", err)
	}
	if cfg.Intercept.Cgroup != cg+"/agents.slice" {
		t.Errorf("intercept.cgroup = %q, want %q", cfg.Intercept.Cgroup, cg+"/agents.slice")
	}
	caPEM := read(t, root+"/etc/snowgate/ca.pem")
	if read(t, root+"/usr/local/share/ca-certificates/snowgate.crt") != caPEM {
		t.Error("the trust store's snowgate.crt is not the gateway CA")
	}
	bundle := read(t, root+"/etc/snowgate/ca-bundle.pem")
	if !strings.Contains(bundle, caPEM) || !strings.Contains(bundle, string(systemRoot)) {
		t.Error("ca-bundle.pem lacks the gateway CA or the system roots")
	}
	env := read(t, root+"/etc/snowgate/runner.env")
	for _, want := range []string{"SSL_CERT_FILE=/etc/snowgate/ca-bundle.pem", "REQUESTS_CA_BUNDLE=/etc/snowgate/ca-bundle.pem", "NODE_EXTRA_CA_CERTS=/etc/snowgate/ca.pem"} {
		if !strings.Contains(env, want) {
			t.Errorf("runner.env lacks %s:\n%s", want, env)
		}
	}
	dotenv := read(t, runnerDir+"/.env")
	if !strings.HasPrefix(dotenv, "LANG=C.UTF-8\n") || !strings.Contains(dotenv, "NODE_EXTRA_CA_CERTS=/etc/snowgate/ca.pem") {
		t.Errorf("runner .env:\n%s", dotenv)
	}
	if dropin := read(t, root+"/etc/systemd/system/docker.service.d/snowgate.conf"); !strings.Contains(dropin, "--cgroup-parent=agents.slice") {
		t.Errorf("docker drop-in:\n%s", dropin)
	}

	// Reinstall: nothing changes.
	before := tree(t, root)
	out = run(t, "install.sh", append(args, "--bin", v1, "--no-doctor")...)
	if d := diffTrees(before, tree(t, root)); len(d) > 0 {
		t.Errorf("reinstall changed the tree: %v\n%s", d, out)
	}
	if !strings.Contains(out, "kept /etc/snowgate/snowgate.yaml") {
		t.Errorf("reinstall output:\n%s", out)
	}

	// Upgrade: the operator's configuration and credentials, the CA and
	// the recordings stay; the binary is the new one.
	cfgFile := root + "/etc/snowgate/snowgate.yaml"
	edited := read(t, cfgFile) + "# edited by the operator\n"
	writeFile(t, cfgFile, edited, 0o640)
	writeFile(t, root+"/etc/credstore/snowgate/acme.p8", "key material\n", 0o600)
	writeFile(t, root+"/var/lib/snowgate/recordings/s1.rec", "evidence", 0o600)
	out = run(t, "install.sh", append(args, "--bin", v2, "--no-doctor")...)
	if !strings.Contains(out, "updated /usr/bin/snowgate") {
		t.Errorf("upgrade output does not report the new binary:\n%s", out)
	}
	if v, err := exec.Command(root+"/usr/bin/snowgate", "--version").Output(); err != nil || !strings.Contains(string(v), "v1.1.0-test") {
		t.Errorf("after upgrade: snowgate --version = %q, %v", v, err)
	}
	if read(t, cfgFile) != edited {
		t.Error("the upgrade overwrote the operator's configuration")
	}
	if read(t, root+"/etc/snowgate/ca.pem") != caPEM {
		t.Error("the upgrade replaced the CA the runners trust")
	}
	if n := strings.Count(read(t, runnerDir+"/.env"), "# BEGIN snowgate"); n != 1 {
		t.Errorf("runner .env has %d snowgate blocks after the upgrade", n)
	}

	// Uninstall: everything installed goes, what the operator needs stays.
	uargs := []string{"--root", root, "--cgroup-root", cg, "--runner-dir", runnerDir}
	out = run(t, "uninstall.sh", uargs...)
	for _, gone := range []string{"usr/bin/snowgate", "usr/lib/systemd/system/snowgate.service", "usr/lib/systemd/system/snowgate.socket",
		"usr/lib/systemd/system/agents.slice", "usr/lib/sysusers.d/snowgate.conf", "usr/lib/tmpfiles.d/snowgate.conf",
		"usr/share/snowgate", "usr/share/doc/snowgate", "etc/snowgate/runner.env", "etc/snowgate/ca-bundle.pem",
		"usr/local/share/ca-certificates/snowgate.crt", "etc/systemd/system/actions.runner.acme-app.r1.service.d",
		"etc/systemd/system/docker.service.d"} {
		if _, err := os.Stat(filepath.Join(root, gone)); err == nil {
			t.Errorf("after uninstall %s remains", gone)
		}
	}
	if _, err := os.Stat(cg + "/agents.slice"); err == nil {
		t.Error("after uninstall agents.slice remains below the cgroup root")
	}
	for _, kept := range []string{"etc/snowgate/snowgate.yaml", "etc/snowgate/ca.pem", "etc/snowgate/ca.key",
		"etc/credstore/snowgate/acme.p8", "var/lib/snowgate/recordings/s1.rec",
		"etc/systemd/system/actions.runner.acme-app.r1.service", "usr/lib/systemd/system/docker.service"} {
		if _, err := os.Stat(filepath.Join(root, kept)); err != nil {
			t.Errorf("uninstall without --purge removed %s", kept)
		}
	}
	if got := read(t, runnerDir+"/.env"); got != "LANG=C.UTF-8\n" {
		t.Errorf("runner .env after uninstall: %q", got)
	}
	if !strings.Contains(out, "kept /var/lib/snowgate") {
		t.Errorf("uninstall output does not say what it kept:\n%s", out)
	}

	// Again: nothing left to do, and it says done.
	before = tree(t, root)
	out = run(t, "uninstall.sh", uargs...)
	if d := diffTrees(before, tree(t, root)); len(d) > 0 || !strings.Contains(out, "done") {
		t.Errorf("second uninstall changed %v:\n%s", d, out)
	}

	// Purge: configuration, CA, credentials, recordings and the user go.
	run(t, "uninstall.sh", append(uargs, "--purge")...)
	for _, gone := range []string{"etc/snowgate", "etc/credstore", "var/lib/snowgate", "var/log/snowgate"} {
		if _, err := os.Stat(filepath.Join(root, gone)); err == nil {
			t.Errorf("after --purge %s remains", gone)
		}
	}
	for _, db := range []string{"passwd", "group"} {
		if strings.Contains(read(t, root+"/etc/"+db), "snowgate:") {
			t.Errorf("after --purge /etc/%s still names snowgate", db)
		}
	}
	// What the machine had before stays.
	for _, kept := range []string{"etc/ssl/certs/ca-certificates.crt", "home/runner/actions-runner/.env"} {
		if _, err := os.Stat(filepath.Join(root, kept)); err != nil {
			t.Errorf("--purge removed %s, which was not snowgate's", kept)
		}
	}
}

// TestUnitsVerify runs systemd-analyze verify on the units and drop-ins,
// with the binaries they start replaced by stand-ins (verify checks that
// ExecStart= names an executable).
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: unit verification skipped")
	}
	dir := t.TempDir()
	stand := filepath.Join(dir, "bin")
	if err := os.MkdirAll(stand, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"snowgate", "dockerd", "runsvc.sh", "gitlab-runner"} {
		writeFile(t, filepath.Join(stand, name), "#!/bin/sh\nexit 0\n", 0o755)
	}
	subst := strings.NewReplacer("/usr/bin/snowgate", stand+"/snowgate", "/usr/bin/dockerd", stand+"/dockerd")
	for _, u := range []string{"snowgate.service", "snowgate.socket", "agents.slice"} {
		writeFile(t, filepath.Join(dir, u), subst.Replace(read(t, "../systemd/"+u)), 0o644)
	}
	// The units the drop-ins extend, as their packages ship them.
	hosts := map[string]struct{ unit, dropin string }{
		"actions.runner.acme-app.r1.service": {"[Unit]\nDescription=GitHub Actions Runner\n[Service]\nExecStart=" + stand + "/runsvc.sh\n", "github-runner.conf"},
		"gitlab-runner.service":              {"[Unit]\nDescription=GitLab Runner\n[Service]\nExecStart=" + stand + "/gitlab-runner run\n", "gitlab-runner.conf"},
		"docker.service":                     {"[Unit]\nDescription=Docker\n[Service]\nExecStart=" + stand + "/dockerd -H fd://\n", "docker.conf"},
	}
	units := []string{"snowgate.service", "snowgate.socket", "agents.slice"}
	for name, h := range hosts {
		writeFile(t, filepath.Join(dir, name), h.unit, 0o644)
		writeFile(t, filepath.Join(dir, name+".d", "snowgate.conf"), subst.Replace(read(t, "../systemd/drop-ins/"+h.dropin)), 0o644)
		units = append(units, name)
	}
	var paths []string
	for _, u := range units {
		paths = append(paths, filepath.Join(dir, u))
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, paths...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	// Units the host lacks (network-online.target is always there) may be
	// named in Before=/After=; those are not errors. Anything else is.
	var problems []string
	for _, line := range strings.Split(out.String(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			problems = append(problems, line)
		}
	}
	if err != nil || len(problems) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, strings.Join(problems, "\n"))
	}
}

// TestScriptsParse checks both scripts parse and answer --help, and that
// shellcheck (when installed) finds nothing in them or the package's
// maintainer scripts.
func TestScriptsParse(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	for _, s := range []string{"install.sh", "uninstall.sh"} {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
		out, err := exec.Command("bash", s, "--help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--root DIR") {
			t.Errorf("%s --help: %v\n%s", s, err, out)
		}
	}
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Log("shellcheck not installed: scripts parsed, not linted")
		return
	}
	if out, err := exec.Command(sc, "install.sh", "uninstall.sh").CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
	if out, err := exec.Command(sc, "-s", "sh", "deb/postinst", "deb/prerm", "deb/postrm").CombinedOutput(); err != nil {
		t.Errorf("shellcheck (maintainer scripts): %v\n%s", err, out)
	}
}

// TestPackageLayout lays the files out as appliance/nfpm.yaml packages them
// and runs the maintainer scripts' steps (install.sh --package, then
// uninstall.sh --package) from where the package puts them.
func TestPackageLayout(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	if testing.Short() {
		t.Skip("builds the binary; skipped in -short mode")
	}
	var pkg struct {
		Contents []struct {
			Src      string `yaml:"src"`
			Dst      string `yaml:"dst"`
			FileInfo struct {
				Mode os.FileMode `yaml:"mode"`
			} `yaml:"file_info"`
		} `yaml:"contents"`
		Scripts map[string]string `yaml:"scripts"`
	}
	if err := yaml.Unmarshal([]byte(read(t, "nfpm.yaml")), &pkg); err != nil {
		t.Fatalf("nfpm.yaml: %v", err)
	}
	bin := buildSnowgate(t, "v1.0.0-test")
	root, cg := t.TempDir(), t.TempDir()
	for _, c := range pkg.Contents {
		src := filepath.Join("..", c.Src)
		if c.Src == "bin/snowgate" {
			src = bin
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("nfpm.yaml names %s: %v", c.Src, err)
		}
		mode := c.FileInfo.Mode
		if mode == 0 {
			mode = 0o644
		}
		writeFile(t, filepath.Join(root, c.Dst), string(b), mode)
	}
	for name, script := range pkg.Scripts {
		if out, err := exec.Command("sh", "-n", filepath.Join("..", script)).CombinedOutput(); err != nil {
			t.Errorf("%s script %s: %v\n%s", name, script, err, out)
		}
	}
	share := root + "/usr/share/snowgate"
	out := run(t, share+"/install.sh", "--package", "--root", root, "--cgroup-root", cg, "--no-doctor")
	if strings.Contains(out, "installed /usr/bin/snowgate") {
		t.Errorf("--package copied files the package owns:\n%s", out)
	}
	for _, f := range []string{"etc/snowgate/snowgate.yaml", "etc/snowgate/ca.pem", "etc/snowgate/ca.key", "etc/snowgate/runner.env", "var/lib/snowgate"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("after install.sh --package: %v", err)
		}
	}
	run(t, share+"/uninstall.sh", "--package", "--root", root, "--cgroup-root", cg)
	if _, err := os.Stat(root + "/etc/snowgate/runner.env"); err == nil {
		t.Error("uninstall.sh --package left runner.env")
	}
	// The package's own files are dpkg's to remove.
	if _, err := os.Stat(root + "/usr/bin/snowgate"); err != nil {
		t.Errorf("uninstall.sh --package removed a packaged file: %v", err)
	}
}
