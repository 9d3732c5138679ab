package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/testenv"
)

// buildEmulator compiles the command into a temporary directory.
func buildEmulator(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "snowgate-emulator")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startEmulator runs the binary and returns the URL it printed.
func startEmulator(t testing.TB, bin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	p, addr := startEmulatorProc(t, bin, args...)
	return p.Cmd, addr
}

// startEmulatorProc is startEmulator for a test that waits for the exit.
func startEmulatorProc(t testing.TB, bin string, args ...string) (*testenv.Piped, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if !testing.Verbose() {
		cmd.Stderr = nil
	}
	p := testenv.StartPiped(t, cmd)
	// Runs before StartPiped's own cleanup: SIGTERM first, so the emulator
	// removes its temporary directory.
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM) })
	line := p.Line(t, 60*time.Second, func(string) bool { return true })
	addr, found := strings.CutPrefix(line, "listening on ")
	if !found {
		t.Fatalf("first line %q, want \"listening on URL\"", line)
	}
	return p, addr
}

func TestCommand(t *testing.T) {
	if os.Getenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION") == "" {
		t.Setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
	}
	bin := buildEmulator(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pubFile := filepath.Join(dir, "key.pub")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "queries.jsonl")
	p, base := startEmulatorProc(t, bin, "--listen", "127.0.0.1:0", "--account", "demo",
		"--user", "alice=pw1", "--public-key", "svc="+pubFile, "--pat", "bob=pat1",
		"--query-log", logFile, "--fault", "query,status=503,count=1")
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" {
		t.Fatalf("printed address %q", base)
	}
	pk8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dsns := map[string]string{
		"password": fmt.Sprintf("alice:pw1@%s?account=demo&protocol=http&disableTelemetry=true", u.Host),
		"key pair": fmt.Sprintf("svc@%s?account=demo&protocol=http&disableTelemetry=true&authenticator=SNOWFLAKE_JWT&privateKey=%s",
			u.Host, base64.URLEncoding.EncodeToString(pk8)),
		"pat": fmt.Sprintf("bob@%s?account=demo&protocol=http&disableTelemetry=true&authenticator=PROGRAMMATIC_ACCESS_TOKEN&token=pat1", u.Host),
	}
	for name, dsn := range dsns {
		t.Run(name, func(t *testing.T) {
			db, err := sql.Open("snowflake", dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var n int
			if err := db.QueryRowContext(ctx, "SELECT 40 + 2").Scan(&n); err != nil || n != 42 {
				t.Fatalf("query: %d, %v", n, err)
			}
		})
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t, 60*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != len(dsns) {
		t.Fatalf("query log has %d lines, want %d:\n%s", len(lines), len(dsns), data)
	}
	var entry struct {
		RequestID, QueryID, SQLText string
	}
	if err := json.Unmarshal([]byte(lines[0]), &entry); err != nil || entry.SQLText != "SELECT 40 + 2" || entry.QueryID == "" || entry.RequestID == "" {
		t.Fatalf("query log entry %q: %v", lines[0], err)
	}
}

func TestBadFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing account", []string{"--listen", "127.0.0.1:0"}, "account"},
		{"bad user", []string{"--account", "a", "--user", "nopass"}, "NAME=VALUE"},
		{"bad fault", []string{"--account", "a", "--fault", "query,bogus"}, "unknown option"},
		{"cert without key", []string{"--account", "a", "--tls-cert", "x.pem"}, "go together"},
		{"missing key file", []string{"--account", "a", "--public-key", "u=/nonexistent.pem"}, "public-key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newRootCmd()
			cmd.SetArgs(tc.args)
			cmd.SetOut(new(strings.Builder))
			cmd.SetErr(new(strings.Builder))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestCommandTLS(t *testing.T) {
	bin := buildEmulator(t)
	ca, err := emulatortest.NewCA([]string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var chain []byte
	for _, der := range ca.Leaf.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, base := startEmulator(t, bin, "--listen", "127.0.0.1:0", "--account", "demo", "--user", "alice=pw1",
		"--tls-cert", certFile, "--tls-key", keyFile)
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" {
		t.Fatalf("printed address %q", base)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}, Timeout: time.Minute}
	body := `{"data":{"ACCOUNT_NAME":"demo","LOGIN_NAME":"alice","PASSWORD":"pw1"}}`
	resp, err := client.Post("https://localhost:"+u.Port()+"/session/v1/login-request", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("login over TLS: %v", err)
	}
	defer resp.Body.Close()
	var env struct {
		Success bool
		Data    struct{ Token string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || !env.Success || env.Data.Token == "" {
		t.Fatalf("login reply: %v %+v", err, env)
	}
}
