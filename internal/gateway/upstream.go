package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// upstream is where one account's API requests go: a base URL and a
// keep-alive pool of its own.
type upstream struct {
	account string
	host    string   // the name agents use
	base    *url.URL // scheme://host:port the gateway connects to
	// baseURL is base.String(), the prefix of every request URL.
	baseURL   string
	transport roundTripper
}

// roundTripper sends one HTTP request upstream: an account's apiTransport,
// or the storage *http.Transport for names without an account.
type roundTripper interface {
	RoundTrip(*http.Request) (*http.Response, error)
	CloseIdleConnections()
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
	return &upstream{account: account, host: host, base: base, baseURL: base.String(), transport: g.newAPITransport(tlsCfg)}, nil
}

// upstreamFor returns the upstream of the account at host, or one for the
// name itself on 443 when no account is configured for it.
func (g *Gateway) upstreamFor(host string) *upstream {
	g.mu.Lock()
	defer g.mu.Unlock()
	if up, ok := g.accounts[host]; ok {
		return up
	}
	base := &url.URL{Scheme: "https", Host: host}
	return &upstream{host: host, base: base, baseURL: base.String(), transport: g.storage}
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

// Settings of apiTransport's pool (those of the http.Transport it replaced).
const (
	// apiMaxIdlePerHost is the most idle keep-alive connections kept per
	// upstream address.
	apiMaxIdlePerHost = 16
	// apiIdleTimeout closes a connection idle this long.
	apiIdleTimeout = 90 * time.Second
	// apiHandshakeTimeout bounds the TLS handshake with the upstream.
	apiHandshakeTimeout = 30 * time.Second
	// apiWriteBuffer holds a request's headers and a small body, so that
	// most requests leave in one TLS record and one write.
	apiWriteBuffer = 16 << 10
)

// apiTransport sends an account's API requests over HTTP/1.1 on pooled
// keep-alive connections, entirely on the caller's goroutine: the request is
// written and its reply read by the handler itself, where http.Transport
// hands every exchange to two goroutines of its own (a write loop and a read
// loop) and back, which costs wake-ups on a busy machine for every request.
// It speaks HTTP/1.1 only, verifies TLS like the transport it replaced, and
// reports through the request's httptrace.ClientTrace (WroteHeaders) when a
// request may have reached the upstream, which is what the retry decision
// of roundTrip rests on.
type apiTransport struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	tls  *tls.Config

	mu       sync.Mutex
	idle     map[string][]*apiConn // by scheme://host:port, most recent last
	sweeping bool
}

// apiConn is one upstream connection.
type apiConn struct {
	key  string
	conn net.Conn // TLS or plain
	raw  net.Conn // the TCP connection under it
	br   *bufio.Reader
	bw   *bufio.Writer
	// wrote counts bytes handed to the connection by the current request.
	wrote     int64
	idleSince time.Time
}

// Write counts what reaches the connection (bw writes through it).
func (c *apiConn) Write(p []byte) (int, error) {
	n, err := c.conn.Write(p)
	c.wrote += int64(n)
	return n, err
}

// newAPITransport returns the transport of an account's API requests,
// dialling by name with the gateway's resolver and verifying TLS against
// tlsCfg's roots (nil: Config.UpstreamTLS).
func (g *Gateway) newAPITransport(tlsCfg *tls.Config) *apiTransport {
	if tlsCfg == nil {
		tlsCfg = g.cfg.UpstreamTLS
	}
	tlsCfg = tlsCfg.Clone()
	tlsCfg.NextProtos = []string{"http/1.1"}
	return &apiTransport{
		dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return g.cfg.Dialer.DialContext(ctx, network, addr)
		},
		tls:  tlsCfg,
		idle: map[string][]*apiConn{},
	}
}

// RoundTrip sends req and returns its reply with the headers read; the body
// is read from the connection as the caller reads it, and the connection goes
// back to the pool when the body has been read to its end. The request's
// context bounds the whole exchange, the body's read included; it is the
// only timeout, so callers give it a deadline (forward, the swap and held
// queries run under Config.UpstreamTimeout).
func (t *apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if req.URL.Scheme != "https" && req.URL.Scheme != "http" {
		return nil, fmt.Errorf("upstream: unsupported scheme %q", req.URL.Scheme)
	}
	pc, err := t.get(ctx, req.URL)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	// A cancelled or expired context unblocks the connection's I/O; the
	// connection is then closed, never reused.
	stop := context.AfterFunc(ctx, func() { _ = pc.conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		pc.conn.Close()
		if cerr := context.Cause(ctx); cerr != nil {
			return nil, fmt.Errorf("upstream %s: %w", req.URL.Host, cerr)
		}
		return nil, fmt.Errorf("upstream %s: %w", req.URL.Host, err)
	}
	pc.wrote = 0
	werr := req.Write(pc.bw)
	if werr == nil {
		werr = pc.bw.Flush()
	}
	if pc.wrote > 0 {
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.WroteHeaders != nil {
			trace.WroteHeaders()
		}
	}
	if werr != nil {
		return fail(werr)
	}
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			return fail(err)
		}
		// Informational replies (100 Continue, 103 Early Hints) precede
		// the answer.
		if resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			continue
		}
		break
	}
	b := &apiBody{rc: resp.Body, t: t, pc: pc, stop: stop, reuse: !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols}
	if resp.Body == http.NoBody {
		b.release(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// get returns an idle connection to u's address that is still open, or a
// new one.
func (t *apiTransport) get(ctx context.Context, u *url.URL) (*apiConn, error) {
	key := u.Scheme + "://" + u.Host
	now := time.Now()
	for {
		t.mu.Lock()
		list := t.idle[key]
		if len(list) == 0 {
			t.mu.Unlock()
			break
		}
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[key] = list[:len(list)-1]
		t.mu.Unlock()
		if now.Sub(pc.idleSince) < apiIdleTimeout && pc.alive() {
			return pc, nil
		}
		pc.conn.Close()
	}
	return t.dialConn(ctx, key, u)
}

// dialConn opens a connection to u's address (port 443 or 80 by default).
func (t *apiTransport) dialConn(ctx context.Context, key string, u *url.URL) (*apiConn, error) {
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	raw, err := t.dial(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("dial upstream %s: %w", u.Host, err)
	}
	pc := &apiConn{key: key, conn: raw, raw: raw}
	if u.Scheme == "https" {
		cfg := t.tls
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(raw, cfg)
		hctx, cancel := context.WithTimeout(ctx, apiHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("upstream %s: TLS handshake: %w", u.Host, err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
			raw.Close()
			return nil, fmt.Errorf("upstream %s: negotiated %q, want http/1.1", u.Host, p)
		}
		pc.conn = tc
	}
	pc.br = bufio.NewReader(pc.conn)
	pc.bw = bufio.NewWriterSize(pc, apiWriteBuffer)
	return pc, nil
}

// alive reports whether an idle connection is still usable: the upstream
// has neither closed it nor sent anything unasked (a TLS alert, say). It
// peeks at the socket without blocking.
func (c *apiConn) alive() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	sc, ok := c.raw.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK)
		return true
	})
	return err == nil && ok
}

// put returns a connection whose exchange is complete to the pool.
func (t *apiTransport) put(pc *apiConn) {
	pc.idleSince = time.Now()
	t.mu.Lock()
	list := t.idle[pc.key]
	if len(list) >= apiMaxIdlePerHost {
		t.mu.Unlock()
		pc.conn.Close()
		return
	}
	t.idle[pc.key] = append(list, pc)
	if !t.sweeping {
		t.sweeping = true
		time.AfterFunc(apiIdleTimeout, t.sweep)
	}
	t.mu.Unlock()
}

// sweep closes the connections idle for apiIdleTimeout, and comes back
// while any remain.
func (t *apiTransport) sweep() {
	now := time.Now()
	var stale []*apiConn
	t.mu.Lock()
	remain := false
	for key, list := range t.idle {
		kept := list[:0]
		for _, pc := range list {
			if now.Sub(pc.idleSince) >= apiIdleTimeout {
				stale = append(stale, pc)
			} else {
				kept = append(kept, pc)
			}
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(t.idle, key)
		} else {
			t.idle[key] = kept
			remain = true
		}
	}
	t.sweeping = remain
	if remain {
		time.AfterFunc(apiIdleTimeout/2, t.sweep)
	}
	t.mu.Unlock()
	for _, pc := range stale {
		pc.conn.Close()
	}
}

// CloseIdleConnections closes every idle connection (exchanges in progress
// keep theirs until they end).
func (t *apiTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*apiConn{}
	t.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.conn.Close()
		}
	}
}

// apiBody is a reply body read off its connection; reading it to the end
// returns the connection to the pool, closing it early discards the
// connection.
type apiBody struct {
	rc    io.ReadCloser
	t     *apiTransport
	pc    *apiConn
	stop  func() bool
	reuse bool
	done  bool
}

func (b *apiBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.release(err == io.EOF)
	}
	return n, err
}

// Close ends the exchange; a body not read to its end costs the connection.
func (b *apiBody) Close() error {
	b.release(false)
	return nil
}

// release ends the exchange once: the connection goes back to the pool when
// the reply was read whole and nothing (a cancelled context, Connection:
// close) spoils it, else it is closed.
func (b *apiBody) release(complete bool) {
	if b.done {
		return
	}
	b.done = true
	if b.stop() && complete && b.reuse {
		b.t.put(b.pc)
		return
	}
	b.pc.conn.Close()
}
