package clienthello

import (
	"context"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestPeekOtherStacks peeks the ClientHellos of TLS stacks other than Go's:
// Node (OpenSSL, as snowflake-sdk uses it) and curl. Node is required by the
// project's driver tests; curl is skipped when absent.
func TestPeekOtherStacks(t *testing.T) {
	const name = "acme-prod.snowflakecomputing.com"
	tests := []struct {
		name     string
		required bool
		argv     func(port int) []string
		alpn     []string
	}{
		{"node tls.connect", true, func(port int) []string {
			return []string{"node", "-e", `const s = require('tls').connect({host: '127.0.0.1', port: ` + strconv.Itoa(port) +
				`, servername: '` + name + `', rejectUnauthorized: false}); s.on('error', () => {}); setTimeout(() => process.exit(0), 20000);`}
		}, nil},
		{"curl", false, func(port int) []string {
			return []string{"curl", "-sk", "--max-time", "20", "--resolve", name + ":" + strconv.Itoa(port) + ":127.0.0.1", "https://" + name + ":" + strconv.Itoa(port) + "/"}
		}, []string{"http/1.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := exec.LookPath(tt.argv(0)[0]); err != nil {
				if tt.required {
					t.Fatalf("%s not found: %v", tt.argv(0)[0], err)
				}
				t.Skipf("%s not installed", tt.argv(0)[0])
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			argv := tt.argv(ln.Addr().(*net.TCPAddr).Port)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			conn, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			h, _, err := Peek(conn, Options{Timeout: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if h.ServerName != name {
				t.Fatalf("SNI %q", h.ServerName)
			}
			for _, p := range tt.alpn {
				if !slices.Contains(h.ALPN, p) {
					t.Fatalf("ALPN %q lacks %q", h.ALPN, p)
				}
			}
		})
	}
}
