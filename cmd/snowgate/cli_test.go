package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/testenv"
)

// buildSnowgate compiles the command once per test binary, so the tests
// exercise the binary an operator runs, flags and exit codes included.
func buildSnowgate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "snowgate")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func runSnowgate(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestOperatorCommands walks doctor, status and uninstall through the life of
// a redirect: before install, installed, and after uninstall.
func TestOperatorCommands(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildSnowgate(t)
	cg := testenv.NewCgroup(t)
	var suffix [6]byte
	rand.Read(suffix[:])
	pinDir := filepath.Join("/sys/fs/bpf", "snowgate-clitest-"+hex.EncodeToString(suffix[:]))
	t.Cleanup(func() { redirect.Uninstall(pinDir) })

	out, err := runSnowgate(t, bin, "doctor", "--pin-dir", pinDir)
	if err != nil {
		t.Fatalf("doctor before install: %v\n%s", err, out)
	}
	for _, want := range []string{"cgroup v2 hierarchy", "snowgate programs pass the verifier", "redirect: not installed"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	// BPF LSM does not load on the CI machines: doctor must say so, not hide it.
	if _, err := os.Stat("/sys/kernel/security/lsm"); err == nil {
		if !strings.Contains(out, "BPF LSM") {
			t.Errorf("doctor output does not report BPF LSM:\n%s", out)
		}
	}

	if out, err := runSnowgate(t, bin, "status", "--pin-dir", pinDir); err == nil {
		t.Fatalf("status succeeded with nothing installed:\n%s", out)
	}

	self := testenv.SelfCgroup(t)
	r, err := redirect.Install(redirect.Config{
		Cgroup:          cg.Path,
		PinDir:          pinDir,
		Proxy:           netip.MustParseAddrPort("127.0.0.1:15443"),
		GatewayCgroupID: self.ID,
	})
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	r.Close() // the pins keep the redirect in force, as after a daemon crash

	out, err = runSnowgate(t, bin, "status", "--pin-dir", pinDir)
	if err != nil {
		t.Fatalf("status after install: %v\n%s", err, out)
	}
	for _, want := range []string{"connect4", "connect6", "redirected4"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out, err = runSnowgate(t, bin, "doctor", "--pin-dir", pinDir)
	if err != nil || !strings.Contains(out, "redirect: in force on "+cg.Path) {
		t.Fatalf("doctor after install (err %v) does not report the redirect in force:\n%s", err, out)
	}

	out, err = runSnowgate(t, bin, "uninstall", "--pin-dir", pinDir, "--keep-interface")
	if err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	if redirect.Installed(pinDir) {
		t.Fatalf("pins remain in %s after uninstall", pinDir)
	}
	out, err = runSnowgate(t, bin, "doctor", "--pin-dir", pinDir)
	if err != nil || !strings.Contains(out, "redirect: not installed") {
		t.Fatalf("doctor after uninstall (err %v):\n%s", err, out)
	}
}
