package clienthello

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"reflect"
	"testing"
	"time"
)

// testCert returns a self-signed certificate for name and a pool trusting it.
func testCert(t testing.TB, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// captureHello returns the bytes a crypto/tls client sends first with cfg.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	go func() {
		_ = tls.Client(c1, cfg).Handshake()
		c1.Close()
	}()
	var buf bytes.Buffer
	_ = c2.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := readHandshake(c2, &buf, DefaultMaxSize); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	return buf.Bytes()
}

// TestPeekRealClients peeks the hellos of real crypto/tls clients over TCP
// loopback, then completes the handshake and an echo through the replaying
// connection.
func TestPeekRealClients(t *testing.T) {
	const name = "acme-prod.snowflakecomputing.com"
	cert, pool := testCert(t, name)
	tests := []struct {
		name     string
		cfg      *tls.Config
		wantSNI  string
		wantALPN []string
		tls13    bool
	}{
		{"tls13 sni", &tls.Config{ServerName: name}, name, nil, true},
		{"tls12 only", &tls.Config{ServerName: name, MaxVersion: tls.VersionTLS12}, name, nil, false},
		{"alpn h2 and http/1.1", &tls.Config{ServerName: name, NextProtos: []string{"h2", "http/1.1"}}, name, []string{"h2", "http/1.1"}, true},
		{"upper-case sni", &tls.Config{ServerName: "ACME-PROD.snowflakecomputing.com"}, name, nil, true},
		{"no sni (ip)", &tls.Config{ServerName: "127.0.0.1", InsecureSkipVerify: true}, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			cfg := tt.cfg.Clone()
			if !cfg.InsecureSkipVerify {
				cfg.RootCAs = pool
			}
			done := make(chan error, 1)
			go func() {
				c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
				if err != nil {
					done <- err
					return
				}
				defer c.Close()
				if _, err := c.Write([]byte("ping")); err != nil {
					done <- err
					return
				}
				got := make([]byte, 4)
				_, err = io.ReadFull(c, got)
				if err == nil && string(got) != "pong" {
					err = errors.New("bad echo " + string(got))
				}
				done <- err
			}()
			raw, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			h, conn, err := Peek(raw, Options{Timeout: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if h.ServerName != tt.wantSNI || !reflect.DeepEqual(h.ALPN, tt.wantALPN) {
				t.Fatalf("SNI %q ALPN %q", h.ServerName, h.ALPN)
			}
			if has13 := len(h.SupportedVersions) > 0 && h.SupportedVersions[0] == tls.VersionTLS13; has13 != tt.tls13 {
				t.Fatalf("supported versions %x", h.SupportedVersions)
			}
			if h.ECH {
				t.Fatal("ECH reported")
			}
			srv := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
			if err := srv.Handshake(); err != nil {
				t.Fatalf("handshake over the replayed bytes: %v", err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("read %q %v", buf, err)
			}
			if _, err := srv.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("client: %v", err)
			}
		})
	}
}

func TestPeekBadInput(t *testing.T) {
	hello := captureHello(t, &tls.Config{ServerName: "a.snowflakecomputing.com"})
	// The same hello split into one record per 100 bytes of handshake.
	msg := hello[recordHeaderLen:]
	var fragmented []byte
	for len(msg) > 0 {
		n := min(100, len(msg))
		fragmented = append(fragmented, recordTypeHandshake, 3, 1, 0, byte(n))
		fragmented = append(fragmented, msg[:n]...)
		msg = msg[n:]
	}
	alert := []byte{0x15, 3, 3, 0, 2, 2, 40}
	bigRecord := []byte{recordTypeHandshake, 3, 1, 0x40, 0x01}
	hugeHello := []byte{recordTypeHandshake, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}
	serverHello := []byte{recordTypeHandshake, 3, 3, 0, 4, 2, 0, 0, 0}
	tests := []struct {
		name  string
		in    []byte
		err   error
		sni   string
		limit int
	}{
		{"fragmented records", fragmented, nil, "a.snowflakecomputing.com", 0},
		{"plain http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrNotTLS, "", 0},
		{"garbage", []byte("\x00\x01\x02\x03\x04\x05\x06"), ErrNotTLS, "", 0},
		{"one byte", []byte{0x42}, ErrNotTLS, "", 0},
		{"empty", nil, ErrTruncated, "", 0},
		{"alert first", alert, ErrNotTLS, "", 0},
		{"record over 2^14", bigRecord, ErrMalformed, "", 0},
		{"huge declared hello", hugeHello, ErrTooLarge, "", 0},
		{"server hello", serverHello, ErrNotClientHello, "", 0},
		{"over the size cap", hello, ErrTooLarge, "", 100},
		{"header only", hello[:5], ErrTruncated, "", 0},
		{"half a hello", hello[:len(hello)/2], ErrTruncated, "", 0},
		{"one byte short", hello[:len(hello)-1], ErrTruncated, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c1, c2 := net.Pipe()
			go func() {
				_, _ = c1.Write(tt.in)
				c1.Close()
			}()
			defer c2.Close()
			h, conn, err := Peek(c2, Options{MaxSize: tt.limit, Timeout: 30 * time.Second})
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if h.ServerName != tt.sni {
				t.Fatalf("SNI %q", h.ServerName)
			}
			// Whatever happened, the bytes read are replayed.
			got, _ := io.ReadAll(conn)
			if !bytes.Equal(got, tt.in) {
				t.Fatalf("replayed %d bytes of %d", len(got), len(tt.in))
			}
		})
	}
}

// TestPeekStalledClient: a client that sends part of a hello and stalls is
// cut off by the deadline, and the deadline is cleared afterwards.
func TestPeekStalledClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	// The bytes sit in the server's socket buffer before Peek starts.
	if _, err := client.Write([]byte{recordTypeHandshake, 3, 1}); err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	_, conn, err := Peek(server, Options{Timeout: 200 * time.Millisecond})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if got := conn.Peeked(); len(got) > 3 || !bytes.Equal(got, []byte{recordTypeHandshake, 3, 1}[:len(got)]) {
		t.Fatalf("peeked %x", got)
	}
	// The deadline is cleared: a later read waits for data again.
	go func() { _, _ = client.Write([]byte{0, 5}) }()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatalf("read after the peek: %v", err)
	}
}

func TestParseHandshakeMalformed(t *testing.T) {
	hello := captureHello(t, &tls.Config{ServerName: "a.snowflakecomputing.com", NextProtos: []string{"http/1.1"}})
	msg := hello[recordHeaderLen:]
	if h, err := ParseHandshake(msg); err != nil || h.ServerName != "a.snowflakecomputing.com" {
		t.Fatalf("%v %v", h, err)
	}
	sni := []byte("a.snowflakecomputing.com")
	idx := bytes.Index(msg, sni)
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(msg)) }
	tests := []struct {
		name string
		in   []byte
	}{
		{"bad host byte", mutate(func(b []byte) []byte { b[idx+1] = '/'; return b })},
		{"empty label", mutate(func(b []byte) []byte { b[idx] = '.'; return b })},
		{"trailing data", append(bytes.Clone(msg), 0)},
		{"short", msg[:10]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseHandshake(tt.in); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzParseRecords(f *testing.F) {
	for _, cfg := range []*tls.Config{
		{ServerName: "acme.snowflakecomputing.com"},
		{ServerName: "x.example", NextProtos: []string{"h2"}, MaxVersion: tls.VersionTLS12},
	} {
		f.Add(captureHello(f, cfg))
	}
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ParseRecords(in)
		if err != nil {
			if h != nil {
				t.Fatal("hello with error")
			}
			return
		}
		if err := validHostName([]byte(h.ServerName)); h.ServerName != "" && err != nil {
			t.Fatalf("accepted server name %q: %v", h.ServerName, err)
		}
	})
}
