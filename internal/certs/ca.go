// Package certs is the gateway's certificate authority: the CA itself
// (created once by `snowgate ca init`, loaded at start), the short-lived
// per-host leaves the gateway presents when it terminates TLS for a Snowflake
// name, and the OCSP responder those leaves point at, so that unchanged
// drivers in fail-open and fail-closed OCSP mode accept them without stalling
// (protocol notes §8).
//
// Key material never leaves this package through logs, errors or String
// methods.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// CA is the gateway certificate authority: a self-signed root whose key
// signs the per-host leaves and the OCSP responses.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// CertPEM is Cert in PEM form, as agents' trust stores take it.
	CertPEM []byte
	key     crypto.Signer
}

// String names the CA without its key.
func (ca *CA) String() string {
	return fmt.Sprintf("CA %q (serial %x, expires %s)", ca.Cert.Subject.CommonName, ca.Cert.SerialNumber, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
}

// CAOptions controls CA creation. Zero fields take the defaults.
type CAOptions struct {
	// CommonName of the CA; default "snowgate gateway CA".
	CommonName string
	// Organization of the CA subject; default "snowgate".
	Organization string
	// Validity of the CA certificate; default 5 years.
	Validity time.Duration
	// PermittedDomains, when not empty, become critical name constraints:
	// the CA can then only vouch for names under these domains (e.g.
	// snowflakecomputing.com), and for no IP address at all, so a stolen
	// gateway key cannot impersonate any other site to the agents. Go's
	// crypto/x509, OpenSSL (Node, Python) and Java enforce them.
	PermittedDomains []string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// NewCA creates a CA with a fresh ECDSA P-256 key.
func NewCA(opts CAOptions) (*CA, error) {
	if opts.CommonName == "" {
		opts.CommonName = "snowgate gateway CA"
	}
	if opts.Organization == "" {
		opts.Organization = "snowgate"
	}
	if opts.Validity <= 0 {
		opts.Validity = 5 * 365 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	domains := make([]string, 0, len(opts.PermittedDomains))
	for _, d := range opts.PermittedDomains {
		n, err := NormalizeName(strings.TrimPrefix(d, "."))
		if err != nil {
			return nil, fmt.Errorf("create CA: permitted domain: %w", err)
		}
		domains = append(domains, n)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA: generate key: %w", err)
	}
	ski, err := subjectKeyID(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	now := opts.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: opts.CommonName, Organization: []string{opts.Organization}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // no intermediates below it
		SubjectKeyId:          ski,
	}
	if len(domains) > 0 {
		tmpl.PermittedDNSDomainsCritical = true
		tmpl.PermittedDNSDomains = domains
		_, v4, _ := net.ParseCIDR("0.0.0.0/0")
		_, v6, _ := net.ParseCIDR("::/0")
		tmpl.ExcludedIPRanges = []*net.IPNet{v4, v6}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA: sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA: parse certificate: %w", err)
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}, nil
}

// subjectKeyID is the SHA-1 of the subjectPublicKey bit string (RFC 5280
// §4.2.1.2, method 1).
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	sum := sha1.Sum(info.PublicKey.RightAlign())
	return sum[:], nil
}

// newSerial returns a random positive 127-bit serial number.
func newSerial() *big.Int {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	b[0] &= 0x7f
	b[0] |= 0x40 // never zero, always 16 bytes of DER
	return new(big.Int).SetBytes(b[:])
}

// WriteFiles writes the CA certificate (mode 0644) and key (PKCS#8 PEM, mode
// 0600) to new files; existing files are never overwritten. The key file is
// written and synced before the certificate, so a crash leaves no
// certificate without its key.
func (ca *CA) WriteFiles(certPath, keyPath string) error {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("write CA key: marshal: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write CA key: %w", err)
	}
	if err := writeNew(certPath, ca.CertPEM, 0o644); err != nil {
		return fmt.Errorf("write CA certificate: %w", err)
	}
	return nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	// The umask may have narrowed the mode, never widened it; make it exact.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// InitCA creates a CA and writes it to certPath and keyPath, which must not
// exist. It is what `snowgate ca init` runs.
func InitCA(certPath, keyPath string, opts CAOptions) (*CA, error) {
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("init CA: %s already exists; remove it first to rotate the CA", p)
		}
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return nil, fmt.Errorf("init CA: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(certPath), 0o755); err != nil {
		return nil, fmt.Errorf("init CA: %w", err)
	}
	ca, err := NewCA(opts)
	if err != nil {
		return nil, fmt.Errorf("init CA: %w", err)
	}
	if err := ca.WriteFiles(certPath, keyPath); err != nil {
		return nil, fmt.Errorf("init CA: %w", err)
	}
	return ca, nil
}

// ErrKeyPermissions: the CA key file is readable or writable by others than
// its owner, or owned by another user.
var ErrKeyPermissions = errors.New("CA key file permissions are too open")

// LoadCA reads the CA certificate and key. The key file must be a regular
// file (not a symlink), owned by the effective user and not accessible by
// group or others; the key must match the certificate, and the certificate
// must be a CA that is currently valid.
func LoadCA(certPath, keyPath string) (*CA, error) {
	if err := checkKeyFile(keyPath); err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("load CA certificate %s: no CERTIFICATE PEM block", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate %s: %w", certPath, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load CA certificate %s: not a CA certificate", certPath)
	}
	if now := time.Now(); now.After(cert.NotAfter) || now.Before(cert.NotBefore) {
		return nil, fmt.Errorf("load CA certificate %s: valid from %s to %s, not now", certPath, cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		// Never include the file's content: it is the key.
		return nil, fmt.Errorf("load CA key %s: %w", keyPath, err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("load CA: key %s does not belong to certificate %s", keyPath, certPath)
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), key: key}, nil
}

func checkKeyFile(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("key file %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("key file %s has mode %04o, want 0600 or stricter: %w", path, perm, ErrKeyPermissions)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("key file %s is owned by uid %d, not %d: %w", path, st.Uid, os.Geteuid(), ErrKeyPermissions)
	}
	return nil
}

func parseKey(pemBytes []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block of type %q, want PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, errors.New("malformed private key")
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	switch signer.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey:
		return signer, nil
	}
	return nil, fmt.Errorf("unsupported key type %T: want ECDSA or RSA", key)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
