package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults of leaf minting.
const (
	// DefaultLeafValidity is short: a leaf that leaks is useful for a day at
	// most, and certificates under 7 days pass the drivers' CRL mode
	// without a distribution point (protocol notes §8.1).
	DefaultLeafValidity = 24 * time.Hour
	// DefaultMaxNames bounds the leaf cache (and, four times over, the
	// registry of issued serials the OCSP responder consults).
	DefaultMaxNames = 4096
	// backdate covers clients whose clocks run a little behind.
	backdate = 5 * time.Minute
)

// ErrNameNotAllowed: a leaf was asked for a name outside the minter's
// domains.
var ErrNameNotAllowed = errors.New("name is not under a configured Snowflake domain")

// MinterOptions controls leaf minting. Zero fields take the defaults.
type MinterOptions struct {
	// OCSPURL is the gateway's OCSP responder, put in every leaf's
	// Authority Information Access. Without it fail-closed drivers refuse
	// the leaf and fail-open Go stalls on every new connection (§8.1).
	OCSPURL string
	// IssuerURL, when set, is the AIA CA Issuers URL of the CA certificate.
	IssuerURL string
	// Domains restricts minting to these names and the names under them;
	// empty allows any valid DNS name.
	Domains []string
	// Validity of each leaf; default DefaultLeafValidity.
	Validity time.Duration
	// RenewBefore is how long before expiry a cached leaf is replaced;
	// default a third of Validity.
	RenewBefore time.Duration
	// MaxNames bounds the cache; default DefaultMaxNames.
	MaxNames int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Minter mints and caches per-host leaves signed by the CA. It is safe for
// concurrent use; concurrent requests for one name share one minting.
type Minter struct {
	ca    *CA
	opts  MinterOptions
	group singleflight.Group

	mu     sync.Mutex
	cache  map[string]*tls.Certificate
	order  []string             // cache names, oldest first, for eviction
	issued map[string]time.Time // serial (hex) → NotAfter
	queue  []issuedSerial       // issued serials in minting order
}

type issuedSerial struct {
	serial   string
	notAfter time.Time
}

// NewMinter returns a minter of leaves signed by ca.
func NewMinter(ca *CA, opts MinterOptions) (*Minter, error) {
	if ca == nil || ca.key == nil {
		return nil, errors.New("new minter: no CA")
	}
	if opts.Validity <= 0 {
		opts.Validity = DefaultLeafValidity
	}
	if opts.RenewBefore <= 0 || opts.RenewBefore >= opts.Validity {
		opts.RenewBefore = opts.Validity / 3
	}
	if opts.MaxNames <= 0 {
		opts.MaxNames = DefaultMaxNames
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	domains := make([]string, 0, len(opts.Domains))
	for _, d := range opts.Domains {
		n, err := NormalizeName(strings.TrimPrefix(d, "."))
		if err != nil {
			return nil, fmt.Errorf("new minter: domain: %w", err)
		}
		domains = append(domains, n)
	}
	opts.Domains = domains
	return &Minter{ca: ca, opts: opts, cache: map[string]*tls.Certificate{}, issued: map[string]time.Time{}}, nil
}

// NormalizeName lower-cases a DNS name, drops one trailing dot and checks
// its syntax. IP addresses and wildcards are refused: leaves name exactly one
// host.
func NormalizeName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if n == "" || len(n) > 253 {
		return "", fmt.Errorf("name %q: empty or longer than 253 bytes", name)
	}
	if net.ParseIP(n) != nil {
		return "", fmt.Errorf("name %q is an IP address", name)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("name %q: bad label %q", name, label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("name %q: bad character %q", name, c)
			}
		}
	}
	return n, nil
}

// Allowed reports whether name (normalised) is one of the minter's domains
// or under one.
func (m *Minter) Allowed(name string) bool {
	if len(m.opts.Domains) == 0 {
		return true
	}
	for _, d := range m.opts.Domains {
		if name == d || strings.HasSuffix(name, "."+d) {
			return true
		}
	}
	return false
}

// Certificate returns a leaf for name, from the cache while it has more than
// RenewBefore left, else freshly minted.
func (m *Minter) Certificate(name string) (*tls.Certificate, error) {
	n, err := NormalizeName(name)
	if err != nil {
		return nil, fmt.Errorf("leaf certificate: %w", err)
	}
	if !m.Allowed(n) {
		return nil, fmt.Errorf("leaf certificate for %q: %w", n, ErrNameNotAllowed)
	}
	if c := m.cached(n); c != nil {
		return c, nil
	}
	v, err, _ := m.group.Do(n, func() (any, error) {
		if c := m.cached(n); c != nil {
			return c, nil
		}
		c, err := m.mint(n)
		if err != nil {
			return nil, err
		}
		m.store(n, c)
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("leaf certificate for %q: %w", n, err)
	}
	return v.(*tls.Certificate), nil
}

func (m *Minter) cached(name string) *tls.Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.cache[name]
	if c == nil || m.opts.Now().After(c.Leaf.NotAfter.Add(-m.opts.RenewBefore)) {
		return nil
	}
	return c
}

func (m *Minter) store(name string, c *tls.Certificate) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, had := m.cache[name]; !had {
		m.order = append(m.order, name)
	}
	m.cache[name] = c
	for len(m.cache) > m.opts.MaxNames && len(m.order) > 0 {
		delete(m.cache, m.order[0])
		m.order = m.order[1:]
	}
	// Issued serials stay known to the OCSP responder until they expire,
	// or until four times MaxNames newer ones push them out.
	serial := c.Leaf.SerialNumber.Text(16)
	m.issued[serial] = c.Leaf.NotAfter
	m.queue = append(m.queue, issuedSerial{serial, c.Leaf.NotAfter})
	now := m.opts.Now()
	for len(m.queue) > 0 && (now.After(m.queue[0].notAfter) || len(m.queue) > 4*m.opts.MaxNames) {
		delete(m.issued, m.queue[0].serial)
		m.queue = m.queue[1:]
	}
}

func (m *Minter) mint(name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	now := m.opts.Now()
	notAfter := now.Add(m.opts.Validity)
	if notAfter.After(m.ca.Cert.NotAfter) {
		notAfter = m.ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if m.opts.OCSPURL != "" {
		tmpl.OCSPServer = []string{m.opts.OCSPURL}
	}
	if m.opts.IssuerURL != "" {
		tmpl.IssuingCertificateURL = []string{m.opts.IssuerURL}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.ca.Cert, &key.PublicKey, m.ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse leaf: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// GetCertificate is a tls.Config.GetCertificate that serves the leaf for
// the client's SNI. A hello without SNI gets no certificate: the gateway
// never guesses which Snowflake name a client meant.
func (m *Minter) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		return nil, errors.New("leaf certificate: the client sent no server name")
	}
	return m.Certificate(hello.ServerName)
}

// TLSConfig returns a server configuration serving minted leaves over
// HTTP/1.1 (the drivers speak nothing else and send no ALPN), TLS 1.2 or
// later.
func (m *Minter) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: m.GetCertificate,
		NextProtos:     []string{"http/1.1"},
		MinVersion:     tls.VersionTLS12,
	}
}

// Issued reports whether the minter issued the leaf with this serial and, if
// so, when it expires. The OCSP responder answers "good" only for these.
func (m *Minter) Issued(serial *big.Int) (notAfter time.Time, ok bool) {
	if serial == nil {
		return time.Time{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	notAfter, ok = m.issued[serial.Text(16)]
	return notAfter, ok
}
