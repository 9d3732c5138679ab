// Package gateway is snowgate's data path: the listener the redirect sends
// agents' connections to, the original-destination check, SNI routing
// (terminate, pass through or refuse), the OCSP answers on port 80, and the
// HTTP/1.1 server per terminated connection whose handler is the one choke
// point every Snowflake request and response passes (see Exchange).
//
// One TCP listener serves every intercepted port: the original destination
// port the redirect recorded tells HTTPS (443) from plain HTTP (80).
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snowgate/snowgate/internal/certs"
	"github.com/snowgate/snowgate/internal/clienthello"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// Values of Config.OtherTLS.
const (
	OtherTLSDeny        = "deny"
	OtherTLSPassthrough = "passthrough"
)

// Defaults of Config.
const (
	// DefaultIdleTimeout keeps idle client connections for drivers that
	// pool them (gosnowflake keeps 3 idle for 30 min; 120 s is plenty for
	// reuse between statements).
	DefaultIdleTimeout = 120 * time.Second
	// DefaultReadHeaderTimeout bounds a request's headers: a slow-loris
	// client cannot hold a connection open without sending.
	DefaultReadHeaderTimeout = 30 * time.Second
	// DefaultBodyTimeout bounds the read of one request body.
	DefaultBodyTimeout = 60 * time.Second
	// DefaultUpstreamTimeout bounds one upstream exchange; long polls of
	// query results are held about 45 s by the service, and drivers wait
	// up to 900 s, so it is generous.
	DefaultUpstreamTimeout = 10 * time.Minute
	// DefaultMaxReplyBody caps an upstream API reply on the wire; inline
	// rowsets make replies larger than requests.
	DefaultMaxReplyBody = 256 << 20
)

// Origins tells the gateway where an accepted connection was headed and who
// opened it. *redirect.Redirect implements it.
type Origins interface {
	Lookup(peer netip.AddrPort) (redirect.Origin, error)
}

// Account is one Snowflake account the gateway fronts.
type Account struct {
	// Name is the account's key in the configuration.
	Name string
	// Host is the name agents connect to, e.g. acme.snowflakecomputing.com.
	Host string
	// Upstream, when set, is where the gateway connects instead of Host
	// on 443: "https://host:port" or "host:port" (https).
	Upstream string
	// UpstreamTLS, when set, replaces Config.UpstreamTLS for this account's
	// API requests (a private link's own CA). Its ServerName is set per
	// dial.
	UpstreamTLS *tls.Config
}

// Config configures a Gateway.
type Config struct {
	// Origins looks up redirected peers. Required.
	Origins Origins
	// Minter mints the leaves presented for Snowflake names. Required.
	Minter *certs.Minter
	// Responder answers OCSP and the drivers' cache-server look-ups on
	// port 80. Nil: port 80 is refused.
	Responder http.Handler
	// OCSPHost is the host of the leaves' OCSP URL (the proxy address, by
	// default): plain-HTTP OCSP requests to it are answered besides those
	// to Snowflake names.
	OCSPHost string
	// Domains are the Snowflake domains whose names are terminated.
	Domains []string
	// Accounts are the fronted accounts; Snowflake names not listed are
	// forwarded to the name itself on 443.
	Accounts []Account
	// OtherTLS is what happens to TLS for other names: OtherTLSDeny
	// (default) or OtherTLSPassthrough.
	OtherTLS string
	// SnowflakeAddrs, when set, reports whether an original destination is
	// a known Snowflake address; a foreign SNI to one is refused even with
	// passthrough (domain fronting).
	SnowflakeAddrs func(netip.Addr) bool
	// UpstreamTLS is the client TLS configuration for Snowflake and
	// storage (RootCAs nil: system roots). Its ServerName is set per dial.
	UpstreamTLS *tls.Config
	// Dialer dials upstream and passthrough destinations (by name, with
	// the gateway's own resolver). Nil: a net.Dialer with a 30 s timeout.
	Dialer *net.Dialer
	// Recorder keeps the durable per-session record; a reply is released
	// only after Recorder.Commit succeeded. Nil records nothing.
	Recorder Recorder
	// Observers see every exchange after its reply (metrics, exchange
	// log, audit).
	Observers []Observer
	// Credentials is the hook where login requests are rewritten and
	// tokens mapped. Nil: ObserveOnly.
	Credentials Credentials
	// Statements is the statement policy and approval stage (statements.go,
	// hold.go): query requests are classified and allowed, refused or held
	// for a reviewer. Nil forwards every statement unscreened.
	Statements *StatementPolicy
	// Chunks seals rewritten chunk URLs; nil: a table with a key of this
	// process only.
	Chunks *snowflake.ChunkTable
	// Timeouts; zero values take the defaults above.
	IdleTimeout, ReadHeaderTimeout, BodyTimeout, UpstreamTimeout time.Duration
	// RequestLimits caps client request bodies; zero: the snowflake defaults.
	RequestLimits snowflake.Limits
	// ReplyLimits caps upstream API replies; zero: DefaultMaxReplyBody.
	ReplyLimits snowflake.Limits
	// Limits cap the work in progress, gateway-wide and per workload
	// (limits.go); zero values: no limit.
	Limits Limits
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Stats are the gateway's counters (the metrics stage exports them).
type Stats struct {
	// Accepted counts redirected connections; NotRedirected the ones
	// refused because the redirect has no record of the peer.
	Accepted, NotRedirected atomic.Int64
	// Terminated, PassedThrough and Refused count TLS connections by
	// outcome of the SNI decision; BadHello those without a valid
	// ClientHello (garbage, truncated, too slow).
	Terminated, PassedThrough, Refused, BadHello atomic.Int64
	// OCSP counts requests answered by the OCSP responder on port 80.
	OCSP atomic.Int64
}

// Gateway is the transparent proxy. Serve it on one or more listeners.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	accounts map[string]*upstream
	creds    Credentials
	storage  *http.Transport
	// Stats are live counters; read them with Load.
	Stats Stats

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	listeners map[net.Listener]struct{}
	closed    bool
	// stopping is set, and draining closed, when Shutdown begins:
	// listeners close, connections between requests close, a request in
	// progress finishes first.
	stopping bool
	draining chan struct{}
	// serving counts Serve loops; wg the connections they started.
	serving sync.WaitGroup
	wg      sync.WaitGroup
	// limits keeps the work in progress under Config.Limits.
	limits limiter
}

// New returns a gateway for cfg.
func New(cfg Config) (*Gateway, error) {
	if cfg.Origins == nil {
		return nil, errors.New("gateway: no origin look-up (redirect)")
	}
	if cfg.Minter == nil {
		return nil, errors.New("gateway: no certificate minter")
	}
	switch cfg.OtherTLS {
	case "":
		cfg.OtherTLS = OtherTLSDeny
	case OtherTLSDeny, OtherTLSPassthrough:
	default:
		return nil, fmt.Errorf("gateway: other_tls %q: want deny or passthrough", cfg.OtherTLS)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	}
	if cfg.UpstreamTLS == nil {
		cfg.UpstreamTLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.Chunks == nil {
		cfg.Chunks = snowflake.NewChunkTable(0, nil)
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if cfg.ReplyLimits.MaxBody <= 0 {
		cfg.ReplyLimits.MaxBody = DefaultMaxReplyBody
	}
	if cfg.ReplyLimits.MaxDecoded <= 0 {
		cfg.ReplyLimits.MaxDecoded = 2 * DefaultMaxReplyBody
	}
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger,
		accounts: map[string]*upstream{},
		creds:    cfg.Credentials,
		conns:    map[net.Conn]struct{}{},

		listeners: map[net.Listener]struct{}{},
		draining:  make(chan struct{}),
	}
	if g.creds == nil {
		g.creds = ObserveOnly{}
	}
	for _, a := range cfg.Accounts {
		host, err := certs.NormalizeName(a.Host)
		if err != nil {
			return nil, fmt.Errorf("gateway: account %s host: %w", a.Name, err)
		}
		if !g.isSnowflake(host) {
			return nil, fmt.Errorf("gateway: account %s host %s is not under a Snowflake domain", a.Name, host)
		}
		up, err := g.newUpstream(a.Name, host, a.Upstream, a.UpstreamTLS)
		if err != nil {
			return nil, fmt.Errorf("gateway: account %s: %w", a.Name, err)
		}
		g.accounts[host] = up
	}
	g.storage = g.newTransport(nil)
	return g, nil
}

// sessionPrincipal is the principal of the open session id names, when
// the credential hook keeps sessions and the session is bound to the
// workload's cgroup (a chunk URL only opens for the workload it was issued
// to, so this holds unless the session store and the URL disagree); nil
// otherwise.
func (g *Gateway) sessionPrincipal(id string, cgroup uint64) *Principal {
	sp, ok := g.creds.(SessionPrincipals)
	if !ok || id == "" {
		return nil
	}
	if p := sp.SessionPrincipal(id); p != nil && p.CgroupID == cgroup {
		return p
	}
	return nil
}

// isSnowflake reports whether name is one of the Snowflake domains or under
// one.
func (g *Gateway) isSnowflake(name string) bool {
	for _, d := range g.cfg.Domains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if name == d || strings.HasSuffix(name, "."+d) {
			return true
		}
	}
	return false
}

// Serve accepts connections on ln until ctx ends or Shutdown is called. It
// closes ln when it returns. (Closing this process's descriptor leaves a
// socket shared with another process open: after a hand-over the new daemon
// keeps accepting on it.)
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	if !g.trackListener(ln) {
		ln.Close()
		return nil
	}
	defer g.untrackListener(ln)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || g.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// EMFILE and friends: back off, keep serving.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("gateway accept: %w", err)
		}
		delay = 0
		if !g.track(c) {
			c.Close()
			return nil
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer g.untrack(c)
			g.handleConn(ctx, c)
		}()
	}
}

func (g *Gateway) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

func (g *Gateway) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.conns[c] = struct{}{}
	return true
}

func (g *Gateway) untrack(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.conns, c)
}

func (g *Gateway) trackListener(ln net.Listener) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping {
		return false
	}
	g.listeners[ln] = struct{}{}
	g.serving.Add(1)
	return true
}

func (g *Gateway) untrackListener(ln net.Listener) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.listeners, ln)
	g.serving.Done()
}

// Shutdown stops serving gracefully: the listeners close at once (no new
// connections are taken by this gateway), connections idle between
// requests close, a request in progress finishes and its connection closes
// after the reply; whatever is still open when ctx ends is closed (at once
// with an ended ctx).
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	if !g.stopping {
		g.stopping = true
		close(g.draining)
	}
	for ln := range g.listeners {
		ln.Close()
	}
	g.mu.Unlock()
	// A connection accepted just before its listener closed is still
	// served (one request): wait for the accept loops to end first.
	g.serving.Wait()
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		g.mu.Lock()
		for c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
		<-done
	}
	g.storage.CloseIdleConnections()
	for _, up := range g.accounts {
		up.transport.CloseIdleConnections()
	}
	return nil
}

// handleConn decides the fate of one accepted connection.
func (g *Gateway) handleConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	peer := addrPort(c.RemoteAddr())
	origin, err := g.cfg.Origins.Lookup(peer)
	if err != nil {
		g.Stats.NotRedirected.Add(1)
		g.log.Warn("refused connection that did not come through the redirect", "peer", peer, "err", err)
		return
	}
	g.Stats.Accepted.Add(1)
	wl := newWorkload(origin, peer)
	log := g.log.With("peer", peer, "dst", origin.Dst, "cgroup", wl.CgroupID, "pid", wl.PID, "comm", wl.Comm)
	if origin.Dst.Port() == 80 {
		g.serveHTTP(ctx, c, wl, log)
		return
	}
	hello, pc, err := clienthello.Peek(c, clienthello.Options{})
	if err != nil {
		g.Stats.BadHello.Add(1)
		log.Warn("refused connection: no valid TLS ClientHello", "err", err)
		return
	}
	name := hello.ServerName
	switch {
	case name != "" && g.isSnowflake(name) && !hello.ECH:
		g.Stats.Terminated.Add(1)
		g.serveTLS(ctx, pc, name, wl, log)
	case name == "":
		g.Stats.Refused.Add(1)
		log.Warn("refused TLS without a server name")
	case g.cfg.SnowflakeAddrs != nil && g.cfg.SnowflakeAddrs(origin.Dst.Addr()):
		g.Stats.Refused.Add(1)
		log.Warn("refused foreign server name to a Snowflake address", "sni", name)
	case g.cfg.OtherTLS == OtherTLSPassthrough:
		g.Stats.PassedThrough.Add(1)
		g.passthrough(ctx, pc, origin.Dst, log)
	default:
		g.Stats.Refused.Add(1)
		log.Warn("refused TLS to a name outside the Snowflake domains", "sni", name)
	}
}

// passthrough relays the connection, ClientHello included, byte for byte to
// the original destination, dialled from the gateway (its own cgroup, so the
// redirect lets it through).
func (g *Gateway) passthrough(ctx context.Context, c *clienthello.Conn, dst netip.AddrPort, log *slog.Logger) {
	up, err := g.cfg.Dialer.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		log.Warn("passthrough dial failed", "err", err)
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); closeWrite(up); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); _ = c.CloseWrite(); done <- struct{}{} }()
	select {
	case <-done:
		<-done
	case <-ctx.Done():
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// serveTLS terminates TLS for a Snowflake name with a leaf for exactly that
// name and serves HTTP/1.1 on the connection.
func (g *Gateway) serveTLS(ctx context.Context, c *clienthello.Conn, name string, wl Workload, log *slog.Logger) {
	cert, err := g.cfg.Minter.Certificate(name)
	if err != nil {
		log.Warn("refused TLS: no leaf for the name", "sni", name, "err", err)
		return
	}
	tc := tls.Server(c, &tls.Config{
		Certificates: []tls.Certificate{*cert},
		NextProtos:   []string{"http/1.1"},
		MinVersion:   tls.VersionTLS12,
	})
	hsCtx, cancel := context.WithTimeout(ctx, g.cfg.ReadHeaderTimeout)
	err = tc.HandshakeContext(hsCtx)
	cancel()
	if err != nil {
		log.Info("TLS handshake with the client failed", "sni", name, "err", err)
		return
	}
	h := &handler{g: g, host: name, workload: wl, log: log.With("sni", name), tls: true}
	g.serveOne(ctx, tc, h)
}

// serveHTTP serves plain HTTP (redirected port 80): only the OCSP responder
// and the drivers' cache-server look-ups, for Snowflake names.
func (g *Gateway) serveHTTP(ctx context.Context, c net.Conn, wl Workload, log *slog.Logger) {
	h := &handler{g: g, workload: wl, log: log, tls: false}
	g.serveOne(ctx, c, h)
}

// serveOne runs an HTTP/1.1 server on exactly one connection.
func (g *Gateway) serveOne(ctx context.Context, c net.Conn, h http.Handler) {
	l := newOneConnListener(c)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		IdleTimeout:       g.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				l.done()
			}
		},
	}
	// Serve returns when the listener closes; the listener closes once its
	// only connection has ended or the gateway stops. A draining gateway
	// lets the request in progress finish (http.Server.Shutdown closes an
	// idle connection at once, a busy one after its reply).
	go func() {
		select {
		case <-ctx.Done():
			_ = srv.Close()
		case <-g.draining:
			// Once the server has the connection: before that,
			// Shutdown would stop it unserved.
			select {
			case <-l.accepted:
			case <-l.finished:
			}
			_ = srv.Shutdown(ctx)
		case <-l.finished:
		}
	}()
	_ = srv.Serve(l)
	if !l.taken.Load() {
		// Stopped before the connection was handed to the server.
		l.done()
	}
	<-l.finished
}

// oneConnListener hands out one connection, then blocks until it is done or
// the listener is closed. finished closes only when the connection has
// ended, never at Close: http.Server.Shutdown closes its listeners before the
// request in progress is over.
type oneConnListener struct {
	c        net.Conn
	once     sync.Once
	taken    atomic.Bool
	finished chan struct{}
	// accepted closes when the server took the connection.
	accepted chan struct{}

	closeOnce sync.Once
	closed    chan struct{}
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{c: c, finished: make(chan struct{}), accepted: make(chan struct{}), closed: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if l.taken.CompareAndSwap(false, true) {
		close(l.accepted)
		return l.c, nil
	}
	select {
	case <-l.finished:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) done() { l.once.Do(func() { close(l.finished) }) }

func (l *oneConnListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
