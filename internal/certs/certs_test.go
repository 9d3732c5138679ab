package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestCA(t testing.TB, domains ...string) *CA {
	t.Helper()
	ca, err := NewCA(CAOptions{PermittedDomains: domains})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCAFiles(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "private", "ca.key")
	ca, err := InitCA(certPath, keyPath, CAOptions{PermittedDomains: []string{"snowflakecomputing.com"}})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{certPath: 0o644, keyPath: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Fatalf("%s has mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
	if _, err := InitCA(certPath, keyPath, CAOptions{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("InitCA over existing files: %v", err)
	}
	loaded, err := LoadCA(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || !publicKeysEqual(loaded.key.Public(), ca.key.Public()) {
		t.Fatal("loaded CA differs")
	}
	if pub, ok := loaded.Cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("CA key %T", loaded.Cert.PublicKey)
	}
	if !loaded.Cert.PermittedDNSDomainsCritical || len(loaded.Cert.ExcludedIPRanges) != 2 {
		t.Fatal("name constraints lost")
	}
	keyPEM, _ := os.ReadFile(keyPath)
	if strings.Contains(loaded.String(), "PRIVATE") || strings.Contains(fmt.Sprintf("%v %+v", loaded, loaded), string(keyPEM[30:60])) {
		t.Fatal("String shows the key")
	}

	other := newTestCA(t)
	otherCert, otherKey := filepath.Join(dir, "other.pem"), filepath.Join(dir, "other.key")
	if err := other.WriteFiles(otherCert, otherKey); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(keyPath, link); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose.key")
	if err := os.WriteFile(loose, keyPEM, 0o640); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(loose, 0o640)
	garbage := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(garbage, []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cert, key, want string
	}{
		{"group-readable key", certPath, loose, "mode 0640"},
		{"symlinked key", certPath, link, "not a regular file"},
		{"key of another CA", certPath, otherKey, "does not belong"},
		{"missing key", certPath, filepath.Join(dir, "nope"), "no such file"},
		{"key as certificate", keyPath, keyPath, "no CERTIFICATE"},
		{"garbage key", certPath, garbage, "malformed private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadCA(tt.cert, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), string(keyPEM[30:60])) {
				t.Fatal("error shows key material")
			}
		})
	}
	if _, err := LoadCA(certPath, loose); !errors.Is(err, ErrKeyPermissions) {
		t.Fatalf("loose key: %v", err)
	}
}

// tlsServer serves minted leaves on loopback and echoes one line per
// connection.
func tlsServer(t *testing.T, m *Minter) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err == nil {
					_, _ = c.Write(buf)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestLeafHandshakes(t *testing.T) {
	ca := newTestCA(t, "snowflakecomputing.com", "snowflakecomputing.cn")
	m, err := NewMinter(ca, MinterOptions{OCSPURL: "http://169.254.77.1/_snowgate/ocsp", Domains: []string{"snowflakecomputing.com", "snowflakecomputing.cn"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := tlsServer(t, m)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tests := []struct {
		name       string
		serverName string // SNI sent
		verifyName string // name the client checks
		alpn       []string
		wantErr    string
	}{
		{"account host", "acme-prod.snowflakecomputing.com", "", nil, ""},
		{"region host", "xy12345.us-east-1.snowflakecomputing.com", "", nil, ""},
		{"privatelink host", "xy12345.us-east-1.privatelink.snowflakecomputing.com", "", nil, ""},
		{"china host", "xy12345.cn-north-1.snowflakecomputing.cn", "", nil, ""},
		{"upper-case sni", "ACME.snowflakecomputing.com", "", nil, ""},
		{"client offers h2 and http/1.1", "acme.snowflakecomputing.com", "", []string{"h2", "http/1.1"}, ""},
		{"leaf for another name", "acme.snowflakecomputing.com", "other.snowflakecomputing.com", nil, "certificate is valid for acme.snowflakecomputing.com"},
		{"foreign name", "example.com", "", nil, "remote error: tls"},
		{"no sni", "", "acme.snowflakecomputing.com", nil, "remote error: tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: roots, ServerName: tt.serverName, NextProtos: tt.alpn}
			if tt.verifyName != "" {
				// Send tt.serverName as SNI (or none) but verify tt.verifyName.
				cfg.InsecureSkipVerify = true
				cfg.VerifyConnection = func(cs tls.ConnectionState) error {
					opts := x509.VerifyOptions{DNSName: tt.verifyName, Roots: roots}
					_, err := cs.PeerCertificates[0].Verify(opts)
					return err
				}
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", addr, cfg)
			if tt.wantErr != "" {
				if err == nil {
					conn.Close()
					t.Fatal("handshake succeeded")
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cs := conn.ConnectionState()
			leaf := cs.PeerCertificates[0]
			want := strings.ToLower(tt.serverName)
			if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != want || len(leaf.IPAddresses) != 0 {
				t.Fatalf("SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
			}
			if len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != "http://169.254.77.1/_snowgate/ocsp" {
				t.Fatalf("OCSP server %v", leaf.OCSPServer)
			}
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life > DefaultLeafValidity+backdate {
				t.Fatalf("leaf lives %v", life)
			}
			if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() || leaf.IsCA {
				t.Fatalf("leaf key %T, CA %v", leaf.PublicKey, leaf.IsCA)
			}
			if tt.alpn != nil && cs.NegotiatedProtocol != "http/1.1" {
				t.Fatalf("ALPN %q", cs.NegotiatedProtocol)
			}
			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo %q %v", buf, err)
			}
		})
	}
}

// TestNameConstraints: even a leaf the CA key signs for a foreign name fails
// verification, so a stolen gateway key impersonates nothing else.
func TestNameConstraints(t *testing.T) {
	ca := newTestCA(t, "snowflakecomputing.com")
	m, err := NewMinter(ca, MinterOptions{}) // no domain check in the minter
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tests := []struct {
		name string
		ok   bool
	}{
		{"acme.snowflakecomputing.com", true},
		{"a.b.snowflakecomputing.com", true},
		{"snowflakecomputing.com.evil.example", false},
		{"evilsnowflakecomputing.com", false},
		{"accounts.google.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := m.Certificate(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Leaf.Verify(x509.VerifyOptions{DNSName: tt.name, Roots: roots})
			if (err == nil) != tt.ok {
				t.Fatalf("verify: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestMinterRefusesNames(t *testing.T) {
	m, err := NewMinter(newTestCA(t), MinterOptions{Domains: []string{"snowflakecomputing.com"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "10.0.0.1", "*.snowflakecomputing.com", "a..snowflakecomputing.com", "example.com", "x.snowflakecomputing.com.evil", "-a.snowflakecomputing.com", "a b.snowflakecomputing.com"} {
		if _, err := m.Certificate(name); err == nil {
			t.Errorf("minted for %q", name)
		}
	}
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Error("minted without SNI")
	}
}

func TestLeafCacheConcurrency(t *testing.T) {
	m, err := NewMinter(newTestCA(t), MinterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"a.snowflakecomputing.com", "b.snowflakecomputing.com", "c.snowflakecomputing.com"}
	const perName = 40
	got := make([][]*tls.Certificate, len(names))
	for i := range got {
		got[i] = make([]*tls.Certificate, perName)
	}
	var wg sync.WaitGroup
	for i, n := range names {
		for j := range perName {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := m.Certificate(n)
				if err != nil {
					t.Error(err)
					return
				}
				got[i][j] = c
			}()
		}
	}
	wg.Wait()
	for i := range names {
		for j := range perName {
			if got[i][j] != got[i][0] {
				t.Fatalf("name %s: two different leaves minted", names[i])
			}
		}
	}
	if len(m.issued) != len(names) {
		t.Fatalf("%d serials issued for %d names", len(m.issued), len(names))
	}
}

func TestLeafRenewalAndEviction(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	ca, err := NewCA(CAOptions{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMinter(ca, MinterOptions{Validity: 24 * time.Hour, RenewBefore: 8 * time.Hour, MaxNames: 2, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	first, err := m.Certificate("a.snowflakecomputing.com")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance time.Duration
		renewed bool
	}{
		{time.Hour, false},
		{14 * time.Hour, false}, // 15 h old: 9 h left
		{2 * time.Hour, true},   // 17 h old: 7 h left, under RenewBefore
		{time.Minute, false},
	}
	prev := first
	for i, s := range steps {
		now = now.Add(s.advance)
		c, err := m.Certificate("a.snowflakecomputing.com")
		if err != nil {
			t.Fatal(err)
		}
		if renewed := c != prev; renewed != s.renewed {
			t.Fatalf("step %d: renewed=%v, want %v", i, renewed, s.renewed)
		}
		if s.renewed && !c.Leaf.NotAfter.Equal(now.Add(24*time.Hour)) {
			t.Fatalf("step %d: renewed leaf expires %v", i, c.Leaf.NotAfter)
		}
		prev = c
	}
	// The first leaf's serial is still known to OCSP until it expires.
	if _, ok := m.Issued(first.Leaf.SerialNumber); !ok {
		t.Fatal("first serial forgotten before expiry")
	}
	// Eviction: a third name pushes the oldest out of a cache of two.
	for _, n := range []string{"b.snowflakecomputing.com", "c.snowflakecomputing.com"} {
		if _, err := m.Certificate(n); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.cache) != 2 {
		t.Fatalf("cache holds %d names, limit 2", len(m.cache))
	}
	now = now.Add(48 * time.Hour)
	if _, err := m.Certificate("d.snowflakecomputing.com"); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Issued(first.Leaf.SerialNumber); ok {
		t.Fatal("expired serial still known")
	}
	if len(m.issued) != 1 {
		t.Fatalf("%d serials known after all others expired", len(m.issued))
	}
	// A leaf never outlives its CA.
	shortCA, err := NewCA(CAOptions{Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	sm, _ := NewMinter(shortCA, MinterOptions{})
	c, err := sm.Certificate("a.snowflakecomputing.com")
	if err != nil || c.Leaf.NotAfter.After(shortCA.Cert.NotAfter) {
		t.Fatalf("leaf outlives CA: %v", err)
	}
}
