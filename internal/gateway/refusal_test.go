package gateway_test

import (
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
)

// clientHelloBytes returns the first flight of a real TLS client for sni.
func clientHelloBytes(t *testing.T, sni string) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	go func() {
		tc := tls.Client(c1, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		_ = tc.Handshake()
		c1.Close()
	}()
	_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16<<10)
	n, err := c2.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	return buf[:n]
}

// TestRefusalsAndBadInput checks that the gateway refuses what it must,
// answers bad input with a clear error, and keeps serving: after all of it,
// the driver still logs in and queries.
func TestRefusalsAndBadInput(t *testing.T) {
	f := newFixture(t, fixtureOptions{ReadHeaderTimeout: 5 * time.Second})
	a := f.startAgent(t)
	snow := netip.AddrPortFrom(testenv.SnowflakeAddr, 443).String()
	other := "198.51.100.7:443"
	hello := clientHelloBytes(t, testHost)

	cases := []struct {
		name string
		cmd  clientCmd
		// wantErr is a substring of the client's error ("" = no error);
		// wantStatus the HTTP status when the exchange completes.
		wantErr    string
		wantStatus int
		check      func(t *testing.T, r clientReply)
	}{
		{name: "foreign SNI to a Snowflake address", cmd: clientCmd{Op: "https", Addr: snow, SNI: "example.com", Method: "GET", Path: "/"}, wantErr: "EOF"},
		{name: "foreign SNI elsewhere, deny", cmd: clientCmd{Op: "https", Addr: other, SNI: "example.com", Method: "GET", Path: "/"}, wantErr: "EOF"},
		{name: "no SNI", cmd: clientCmd{Op: "https", Addr: snow, Method: "GET", Path: "/"}, wantErr: "EOF"},
		{name: "garbage instead of a ClientHello", cmd: clientCmd{Op: "raw", Addr: snow, Hex: hex.EncodeToString([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))},
			check: func(t *testing.T, r clientReply) {
				if r.Received != 0 {
					t.Errorf("got %d bytes back, want the connection closed", r.Received)
				}
			}},
		{name: "truncated ClientHello", cmd: clientCmd{Op: "raw", Addr: snow, Hex: hex.EncodeToString(hello[:len(hello)/2])},
			check: func(t *testing.T, r clientReply) {
				if r.Received != 0 {
					t.Errorf("got %d bytes back, want the connection closed", r.Received)
				}
			}},
		{name: "slow-loris ClientHello", cmd: clientCmd{Op: "raw", Addr: snow, Hex: hex.EncodeToString(hello[:len(hello)/2]), Hold: true},
			check: func(t *testing.T, r clientReply) {
				// The gateway gives up on the hello (its peek deadline)
				// and closes; the client's own 60 s deadline is not hit.
				if r.Received != 0 || r.Err != "" {
					t.Errorf("received %d bytes, error %q; want the gateway to close", r.Received, r.Err)
				}
			}},
		{name: "slow-loris request head", cmd: clientCmd{Op: "tls-hold", Addr: snow, SNI: testHost},
			check: func(t *testing.T, r clientReply) {
				// The gateway's header deadline ends it, not the
				// client's own 60 s deadline.
				if strings.Contains(r.Err, "timeout") {
					t.Errorf("the gateway kept the connection: %s", r.Err)
				}
			}},
		{name: "unknown chunk id", cmd: clientCmd{Op: "https", Addr: snow, SNI: testHost, Method: "GET", Path: snowflake.ChunkPathPrefix + "AAAAAAAAAAAAAAAAAAAAAA"}, wantStatus: 404},
		{name: "not a Snowflake endpoint", cmd: clientCmd{Op: "https", Addr: snow, SNI: testHost, Method: "GET", Path: "/etc/passwd"}, wantStatus: 404},
		{name: "oversized body", cmd: clientCmd{Op: "https", Addr: snow, SNI: testHost, Method: "POST", Path: "/queries/v1/query-request?requestId=x", BodySize: 2 << 20}, wantStatus: 413,
			check: func(t *testing.T, r clientReply) {
				if !strings.Contains(r.Body, `"success":false`) || !strings.Contains(r.Body, snowflake.CodeBadRequest) {
					t.Errorf("body %q is not a Snowflake-shaped error", r.Body)
				}
			}},
		// About 100 KB on the wire, under the 1 MiB wire cap, inflating
		// to 100 MiB, beyond the decoded cap: refused once the cap is
		// reached, never inflated whole.
		{name: "gzip bomb", cmd: clientCmd{Op: "https", Addr: snow, SNI: testHost, Method: "POST", Path: "/queries/v1/query-request?requestId=x", BodySize: 100 << 20, Gzip: true}, wantStatus: 413,
			check: func(t *testing.T, r clientReply) {
				if !strings.Contains(r.Body, `"success":false`) || !strings.Contains(r.Body, "gunzip body: more than") {
					t.Errorf("body %q is not a Snowflake-shaped decoded-size error", r.Body)
				}
			}},
		// 100 MB declared and streamed: refused after the cap plus a
		// bounded drain, long before the client has sent it all.
		{name: "100 MB body", cmd: clientCmd{Op: "https", Addr: snow, SNI: testHost, Method: "POST", Path: "/session/v1/login-request?requestId=x", BodySize: 100 << 20, Stream: true}, wantStatus: 413,
			check: func(t *testing.T, r clientReply) {
				if !strings.Contains(r.Body, `"success":false`) || !strings.Contains(r.Body, snowflake.CodeBadRequest) {
					t.Errorf("body %q is not a Snowflake-shaped error", r.Body)
				}
				t.Logf("the client sent %d bytes before the refusal", r.Sent)
				if r.Sent >= 50<<20 {
					t.Errorf("the client sent %d bytes before the refusal, want the gateway to stop reading early", r.Sent)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := a.do(t, tc.cmd)
			switch {
			case tc.wantErr != "":
				if !strings.Contains(r.Err, tc.wantErr) {
					t.Errorf("error %q, want one containing %q (status %d)", r.Err, tc.wantErr, r.Status)
				}
			case tc.cmd.Op == "https":
				if r.Err != "" {
					t.Fatalf("exchange failed: %s", r.Err)
				}
				if r.Status != tc.wantStatus {
					t.Errorf("status %d, want %d (%s)", r.Status, tc.wantStatus, r.Body)
				}
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
	if n := f.gw.Stats.BadHello.Load(); n < 3 {
		t.Errorf("BadHello = %d, want at least 3", n)
	}
	if n := f.gw.Stats.Refused.Load(); n < 3 {
		t.Errorf("Refused = %d, want at least 3", n)
	}

	t.Run("direct connection to the gateway port", func(t *testing.T) {
		before := f.gw.Stats.NotRedirected.Load()
		var c net.Conn
		err := f.ns.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp4", f.proxy.String(), 10*time.Second)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, _ = c.Write(hello)
		b, err := io.ReadAll(c)
		if len(b) != 0 {
			t.Errorf("got %d bytes from the gateway, want none (err %v)", len(b), err)
		}
		if f.gw.Stats.NotRedirected.Load() <= before {
			t.Error("the gateway did not count the refusal")
		}
	})

	t.Run("slow-loris crowd", func(t *testing.T) {
		// Many idle half-open connections, half stuck before the
		// ClientHello ends, half stuck in a request head: a good client
		// still logs in and queries meanwhile, and the gateway's own
		// deadlines close every one of them.
		const crowd = 60
		r := a.do(t, clientCmd{Op: "loris-open", Addr: snow, SNI: testHost, Hex: hex.EncodeToString(hello), Count: crowd})
		if r.Err != "" || r.Count != crowd {
			t.Fatalf("opened %d of %d slow connections: %s", r.Count, crowd, r.Err)
		}
		good := f.startAgent(t)
		if r := good.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
			t.Fatalf("login beside the slow connections: %s", r.Err)
		}
		if r := good.do(t, clientCmd{Op: "query", SQL: "SELECT 2"}); r.Err != "" || len(r.Rows) != 1 || r.Rows[0][0] != "2" {
			t.Fatalf("SELECT 2 beside the slow connections = %v, %s", r.Rows, r.Err)
		}
		w := a.do(t, clientCmd{Op: "loris-wait"})
		if w.Closed != crowd || w.Timeouts != 0 {
			t.Errorf("the gateway closed %d of %d slow connections, %d were still open at the client's 2-minute deadline", w.Closed, crowd, w.Timeouts)
		}
	})

	t.Run("still serving", func(t *testing.T) {
		if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
			t.Fatalf("login after bad input: %s", r.Err)
		}
		r := a.do(t, clientCmd{Op: "query", SQL: "SELECT 1"})
		if r.Err != "" || len(r.Rows) != 1 || r.Rows[0][0] != "1" {
			t.Fatalf("SELECT 1 = %v, %s", r.Rows, r.Err)
		}
	})
}
