// Package emulatortest starts the Snowflake-protocol emulator for tests:
// over real TLS with a CA and leaf of its own (or plain HTTP), on loopback,
// with the connection strings the real drivers need to reach it.
//
// The account API is served as "localhost" and result chunks from the
// storage host name "127.0.0.1" on the same port, so chunk traffic is
// visibly a different host, as with Snowflake and its cloud storage.
package emulatortest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
)

// Host names the emulator answers on.
const (
	// AccountHost is the host name clients use for the account API.
	AccountHost = "localhost"
	// StorageHost is the host name of the presigned chunk URLs.
	StorageHost = "127.0.0.1"
)

// Instance is a running emulator.
type Instance struct {
	// Server is the emulator itself (faults, query log).
	Server *emulator.Server
	// URL is the base URL of the account API, e.g. https://localhost:PORT.
	URL string
	// Host is the account host name in URL ("localhost").
	Host string
	// Port is the TCP port of both the API and the storage endpoint.
	Port int
	// Account is the account name.
	Account string
	// TLS is false for a plain-HTTP instance.
	TLS bool
	// CACertPEM is the PEM of the CA that signed the server certificate.
	CACertPEM []byte
	// CAPool holds that CA.
	CAPool *x509.CertPool
	// CAFile is CACertPEM written to a temporary file (NODE_EXTRA_CA_CERTS).
	CAFile string
	// ClientTLS trusts the CA; use it for raw HTTP clients.
	ClientTLS *tls.Config
	// TLSConfigName is the gosnowflake.RegisterTLSConfig key DSN uses.
	TLSConfigName string

	srv *http.Server
}

type options struct {
	plain bool
	hosts []string
}

// Option changes how Start serves the emulator.
type Option func(*options)

// PlainHTTP serves over plain HTTP instead of TLS.
func PlainHTTP() Option { return func(o *options) { o.plain = true } }

// ExtraHosts adds host names (or IPs) to the server certificate.
func ExtraHosts(hosts ...string) Option {
	return func(o *options) { o.hosts = append(o.hosts, hosts...) }
}

var envOnce sync.Once

// Start runs an emulator configured by cfg on 127.0.0.1 for the duration of
// the test. cfg.StorageURL is set to the storage host on the same port
// unless the caller set one.
//
// It sets SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true for the process (once),
// so gosnowflake never probes cloud metadata addresses from tests.
func Start(tb testing.TB, cfg emulator.Config, opts ...Option) *Instance {
	tb.Helper()
	envOnce.Do(func() {
		if os.Getenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION") == "" {
			_ = os.Setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
		}
	})
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("emulatortest: listen: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	scheme := "https"
	if o.plain {
		scheme = "http"
	}
	if cfg.StorageURL == "" {
		cfg.StorageURL = scheme + "://" + net.JoinHostPort(StorageHost, strconv.Itoa(port))
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	srv, err := emulator.New(cfg)
	if err != nil {
		_ = ln.Close()
		tb.Fatalf("emulatortest: %v", err)
	}
	inst := &Instance{
		Server:  srv,
		URL:     scheme + "://" + net.JoinHostPort(AccountHost, strconv.Itoa(port)),
		Host:    AccountHost,
		Port:    port,
		Account: cfg.Account,
		TLS:     !o.plain,
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second, ErrorLog: nil}
	if !o.plain {
		storage, _ := url.Parse(cfg.StorageURL)
		hosts := append([]string{cfg.Account + ".snowflakecomputing.com", AccountHost, StorageHost, storage.Hostname()}, o.hosts...)
		ca, err := NewCA(hosts)
		if err != nil {
			_ = ln.Close()
			_ = srv.Close()
			tb.Fatalf("emulatortest: %v", err)
		}
		inst.CACertPEM, inst.CAPool = ca.CertPEM, ca.Pool
		inst.CAFile = filepath.Join(tb.TempDir(), "emulator-ca.pem")
		if err := os.WriteFile(inst.CAFile, ca.CertPEM, 0o644); err != nil {
			tb.Fatalf("emulatortest: write CA: %v", err)
		}
		inst.ClientTLS = &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{ca.Leaf}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
		inst.TLSConfigName = fmt.Sprintf("snowgate-emulatortest-%d", port)
		if err := gosnowflake.RegisterTLSConfig(inst.TLSConfigName, inst.ClientTLS); err != nil {
			tb.Fatalf("emulatortest: register TLS config: %v", err)
		}
		go func() { _ = hs.ServeTLS(ln, "", "") }()
	} else {
		go func() { _ = hs.Serve(ln) }()
	}
	inst.srv = hs
	tb.Cleanup(func() {
		_ = hs.Close()
		if err := srv.Close(); err != nil {
			tb.Errorf("emulatortest: close: %v", err)
		}
		if inst.TLSConfigName != "" {
			_ = gosnowflake.DeregisterTLSConfig(inst.TLSConfigName)
		}
	})
	return inst
}

// DSN returns a gosnowflake DSN for user/password (password may be empty
// for other authenticators, given through params such as authenticator,
// token or privateKey). Over TLS the driver trusts the instance's CA through
// a registered TLS config; revocation checking is the CRL mode in advisory
// form, which skips the short-lived leaf and sends no network traffic.
func (i *Instance) DSN(user, password string, params url.Values) string {
	v := url.Values{}
	v.Set("account", i.Account)
	v.Set("disableTelemetry", "true")
	v.Set("loginTimeout", "60")
	if i.TLS {
		v.Set("protocol", "https")
		v.Set("tlsConfigName", i.TLSConfigName)
		v.Set("disableOCSPChecks", "true")
		v.Set("certRevocationCheckMode", "ADVISORY")
		v.Set("crlAllowCertificatesWithoutCrlURL", "true")
		v.Set("crlOnDiskCacheDisabled", "true")
	} else {
		v.Set("protocol", "http")
	}
	for k, vals := range params {
		v.Del(k)
		for _, x := range vals {
			v.Add(k, x)
		}
	}
	// gosnowflake's DSN has no scheme and takes user and password verbatim:
	// user[:password]@host:port?params.
	cred := user
	if password != "" {
		cred += ":" + password
	}
	return cred + "@" + net.JoinHostPort(i.Host, strconv.Itoa(i.Port)) + "?" + v.Encode()
}

// HTTPClient returns a client for raw requests to the instance.
func (i *Instance) HTTPClient() *http.Client {
	tr := &http.Transport{TLSClientConfig: i.ClientTLS, Proxy: nil}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// CA is a test certificate authority and a leaf it issued.
type CA struct {
	CertPEM []byte
	Pool    *x509.CertPool
	Leaf    tls.Certificate
}

// NewCA creates a CA and a leaf for hosts (DNS names or IPs). The leaf is
// valid for two days, short-lived enough that gosnowflake's CRL mode skips it.
func NewCA(hosts []string) (*CA, error) {
	if len(hosts) == 0 {
		return nil, errors.New("new CA: no host names")
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA: key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "snowgate emulator test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("new CA: certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("new CA: parse: %w", err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA: leaf key: %w", err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano() + 1),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(47 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
		} else {
			leafTmpl.DNSNames = append(leafTmpl.DNSNames, h)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("new CA: leaf certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &CA{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		Pool:    pool,
		Leaf:    tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey},
	}, nil
}
