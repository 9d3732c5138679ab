package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// upstream is where one account's API requests go: a base URL and a
// keep-alive pool of its own.
type upstream struct {
	account   string
	host      string   // the name agents use
	base      *url.URL // scheme://host:port the gateway connects to
	transport *http.Transport
}

// newUpstream builds the upstream of an account. override is the account's
// upstream setting: "", "host:port" or an http(s) URL; tlsCfg its own TLS
// configuration or nil.
func (g *Gateway) newUpstream(account, host, override string, tlsCfg *tls.Config) (*upstream, error) {
	base := &url.URL{Scheme: "https", Host: host}
	if override != "" {
		s := override
		if !strings.Contains(s, "://") {
			s = "https://" + s
		}
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return nil, fmt.Errorf("upstream %q: want host:port or an http(s) URL", override)
		}
		base = &url.URL{Scheme: u.Scheme, Host: u.Host}
	}
	return &upstream{account: account, host: host, base: base, transport: g.newTransport(tlsCfg)}, nil
}

// upstreamFor returns the upstream of the account at host, or one for the
// name itself on 443 when no account is configured for it.
func (g *Gateway) upstreamFor(host string) *upstream {
	g.mu.Lock()
	defer g.mu.Unlock()
	if up, ok := g.accounts[host]; ok {
		return up
	}
	up := &upstream{host: host, base: &url.URL{Scheme: "https", Host: host}, transport: g.storage}
	return up
}

// newTransport returns a pooled HTTP/1.1 transport that dials by name with
// the gateway's own resolver and verifies TLS against tlsCfg's roots (nil:
// Config.UpstreamTLS). Compression is left to the caller (Accept-Encoding is
// forwarded as chosen), so bodies are never silently inflated.
func (g *Gateway) newTransport(tlsCfg *tls.Config) *http.Transport {
	if tlsCfg == nil {
		tlsCfg = g.cfg.UpstreamTLS
	}
	tlsCfg = tlsCfg.Clone()
	tlsCfg.NextProtos = []string{"http/1.1"}
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return g.cfg.Dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: g.cfg.UpstreamTimeout,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
}

// UpstreamTLSConfig returns a client TLS configuration that trusts the
// system roots plus the PEM certificates in each of caFiles (a private
// link's or the emulator's CA); empty names are skipped.
func UpstreamTLSConfig(caFiles ...string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var pool *x509.CertPool
	for _, caFile := range caFiles {
		if caFile == "" {
			continue
		}
		if pool == nil {
			var err error
			if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("upstream CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream CA %s: no PEM certificate", caFile)
		}
	}
	cfg.RootCAs = pool
	return cfg, nil
}
