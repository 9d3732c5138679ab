package redirect_test

// The far end of the bypass matrix: a small gateway that does what the real
// one must do at accept time (look the peer up, refuse what was not
// redirected) and answers with what it learned, so the client can report it.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/testenv"
)

// learnedLine is the body the test gateway sends for a redirected
// connection: the original destination, and who connected.
func learnedLine(o redirect.Origin) string {
	return fmt.Sprintf("orig=%s uid=%d pid=%d cgroup=%d\n", o.Dst, o.UID, o.PID, o.CgroupID)
}

// bypassGateway holds the test gateway's listeners: TCP at Proxy (loopback)
// and HostProxy (the host address containers reach), and DNS (UDP and TCP)
// at both.
type bypassGateway struct {
	ns *testenv.Netns
	// redir is what the gateway looks peers up in; nil while "the daemon
	// is down".
	redir atomic.Pointer[redirect.Redirect]

	mu        sync.Mutex
	listeners []io.Closer
	proxies   []io.Closer // the proxy listeners among them
	accepted  int
	rejected  []string // peers refused, with the reason

	proxy, hostProxy, dns, hostDNS netip.AddrPort
}

// hostVIP is the gateway's address for clients in other network namespaces.
var hostVIP = netip.MustParsePrefix("169.254.77.1/32")

func newBypassGateway(t *testing.T, ns *testenv.Netns) *bypassGateway {
	t.Helper()
	g := &bypassGateway{ns: ns}
	if err := ns.AddAddress("lo", hostVIP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.stop)
	g.proxy = g.serveTCP(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0), g.handleProxy)
	g.hostProxy = g.serveTCP(t, netip.AddrPortFrom(hostVIP.Addr(), 0), g.handleProxy)
	g.dns = g.serveDNS(t, netip.MustParseAddr("127.0.0.1"))
	g.hostDNS = g.serveDNS(t, hostVIP.Addr())
	return g
}

// stop closes every listener: the gateway process is gone.
func (g *bypassGateway) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range g.listeners {
		l.Close()
	}
	g.listeners = nil
}

// stopProxy closes the proxy listeners: the daemon was killed (its DNS
// listeners are left alone; they are not what the lifecycle rows test).
func (g *bypassGateway) stopProxy() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range g.proxies {
		l.Close()
	}
	g.proxies = nil
}

// restartProxy listens again at the same proxy addresses, as a restarted
// daemon does.
func (g *bypassGateway) restartProxy(t *testing.T) {
	t.Helper()
	// The port was just released; a lingering TIME_WAIT cannot hold a
	// listening port in Go (SO_REUSEADDR), but retry a few times anyway.
	deadline := time.Now().Add(10 * time.Second)
	for _, ap := range []netip.AddrPort{g.proxy, g.hostProxy} {
		for {
			l, err := g.ns.Listen("tcp4", ap.String())
			if err == nil {
				g.track(l)
				g.mu.Lock()
				g.proxies = append(g.proxies, l)
				g.mu.Unlock()
				go g.acceptLoop(l.(*net.TCPListener), g.handleProxy)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway restart: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (g *bypassGateway) track(c io.Closer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.listeners = append(g.listeners, c)
}

func (g *bypassGateway) serveTCP(t *testing.T, at netip.AddrPort, h func(net.Conn)) netip.AddrPort {
	t.Helper()
	network := "tcp4"
	if at.Addr().Is6() {
		network = "tcp6"
	}
	l, err := g.ns.Listen(network, at.String())
	if err != nil {
		t.Fatal(err)
	}
	g.track(l)
	g.mu.Lock()
	g.proxies = append(g.proxies, l)
	g.mu.Unlock()
	go g.acceptLoop(l.(*net.TCPListener), h)
	return l.Addr().(*net.TCPAddr).AddrPort()
}

func (g *bypassGateway) acceptLoop(l *net.TCPListener, h func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go h(c)
	}
}

// lookup is the gateway's accept-time check: the peer must have a record.
func (g *bypassGateway) lookup(c net.Conn) (redirect.Origin, error) {
	r := g.redir.Load()
	if r == nil {
		return redirect.Origin{}, errors.New("no redirect handle")
	}
	return r.Lookup(c.RemoteAddr().(*net.TCPAddr).AddrPort())
}

func (g *bypassGateway) reject(c net.Conn, err error) {
	g.mu.Lock()
	g.rejected = append(g.rejected, fmt.Sprintf("%v: %v", c.RemoteAddr(), err))
	g.mu.Unlock()
	// A reset, not a goodbye: nothing is served to an unknown peer.
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

func (g *bypassGateway) rejections() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.rejected...)
}

// handleProxy answers a redirected connection with what Lookup learned, as
// a minimal HTTP response so that off-the-shelf clients (curl) accept it,
// then drains what the client sent until it closes.
func (g *bypassGateway) handleProxy(c net.Conn) {
	o, err := g.lookup(c)
	if err != nil {
		g.reject(c, err)
		return
	}
	g.mu.Lock()
	g.accepted++
	g.mu.Unlock()
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	body := learnedLine(o)
	fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
}

// serveDNS listens for DNS on UDP and TCP at the same port of addr. UDP
// queries are answered with "dns:" and the query; TCP ones, which come
// through the redirect like any TCP connection, with what Lookup learned.
func (g *bypassGateway) serveDNS(t *testing.T, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var lastErr error
	for range 20 {
		pc, err := g.ns.ListenPacket("udp4", netip.AddrPortFrom(addr, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		l, err := g.ns.Listen("tcp4", ap.String())
		if err != nil {
			pc.Close()
			lastErr = err
			continue
		}
		g.track(pc)
		g.track(l)
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte("dns:"), buf[:n]...), from)
			}
		}()
		go g.acceptLoop(l.(*net.TCPListener), func(c net.Conn) {
			o, err := g.lookup(c)
			if err != nil {
				g.reject(c, err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			io.WriteString(c, "dns-tcp "+learnedLine(o))
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
		})
		return ap
	}
	t.Fatalf("DNS listener: %v", lastErr)
	return netip.AddrPort{}
}
