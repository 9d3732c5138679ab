package testenv

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// closedPort is a loopback address in ns where nothing listens.
func closedPort(t *testing.T, ns *Netns) netip.AddrPort {
	t.Helper()
	l, err := ns.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	return ap
}

// tlsServer is a TLS server in ns that reports the server name each
// ClientHello asked for.
func tlsServer(t *testing.T, ns *Netns) (netip.AddrPort, <-chan string) {
	t.Helper()
	ln, err := ns.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	snis := make(chan string, 16)
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Listener = ln
	srv.TLS = &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		snis <- hello.ServerName
		return nil, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return ln.Addr().(*net.TCPAddr).AddrPort(), snis
}

// TestSession drives one session client, as nobody and as root, through a
// sequence of actions that depend on each other: the socket a Hold connect
// leaves open is the one OpPeer reports and OpClose closes.
func TestSession(t *testing.T) {
	RequireRoot(t)
	ns := NewNetns(t)
	echo := echoListener(t, ns, "tcp4", "127.0.0.1:0", "hello ")
	closed := closedPort(t, ns)
	resolver := DNSServer(t, ns, DNSAnswers(map[string][]dns.RR{
		"snowgate.test.": {&dns.A{Hdr: dns.RR_Header{Name: "snowgate.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)}},
	}))
	tlsAddr, snis := tlsServer(t, ns)
	peerIs := func(want netip.AddrPort) func(*testing.T, ClientResult) {
		return func(t *testing.T, r ClientResult) {
			if !r.OK() || r.Peer != want.String() {
				t.Errorf("got %v, want peer %v", r, want)
			}
		}
	}
	steps := []struct {
		name   string
		action ClientAction
		check  func(*testing.T, ClientResult)
	}{
		{
			name:   "held connect reads nothing",
			action: ClientAction{Op: OpConnect, Network: "tcp4", Addr: echo.String(), Hold: true},
			check: func(t *testing.T, r ClientResult) {
				if !r.OK() || r.Peer != echo.String() || r.Local == "" || r.Received != "" {
					t.Errorf("got %v, want peer %v, a local address and nothing read", r, echo)
				}
			},
		},
		{name: "peer of the held socket", action: ClientAction{Op: OpPeer}, check: peerIs(echo)},
		{
			name:   "failed held connect",
			action: ClientAction{Op: OpConnect, Network: "tcp4", Addr: closed.String(), Hold: true},
			check:  wantErrno("connect", "ECONNREFUSED"),
		},
		{name: "the failed connect kept the held socket", action: ClientAction{Op: OpPeer}, check: peerIs(echo)},
		{name: "close", action: ClientAction{Op: OpClose}, check: func(t *testing.T, r ClientResult) {
			if !r.OK() {
				t.Errorf("got %v", r)
			}
		}},
		{name: "nothing held after close", action: ClientAction{Op: OpPeer}, check: wantErrno("getpeername", "EBADF")},
		{
			name:   "reconnect after a failed connect",
			action: ClientAction{Op: OpReconnect, Network: "tcp4", Addr: closed.String(), Then: echo.String(), Hold: true},
			check: func(t *testing.T, r ClientResult) {
				if !r.OK() || r.FirstErrno != "ECONNREFUSED" || r.Peer != echo.String() {
					t.Errorf("got %v, want first ECONNREFUSED then peer %v", r, echo)
				}
			},
		},
		{name: "the reconnected socket is held", action: ClientAction{Op: OpPeer}, check: peerIs(echo)},
		{
			name:   "reconnect whose first connect succeeds",
			action: ClientAction{Op: OpReconnect, Network: "tcp4", Addr: echo.String(), Then: echo.String()},
			check: func(t *testing.T, r ClientResult) {
				if r.Err != "the first connect succeeded" {
					t.Errorf("got %v, want the first connect reported as succeeding", r)
				}
			},
		},
		{
			name:   "resolve over udp",
			action: ClientAction{Op: OpResolve, Network: "udp", Addr: resolver.String(), Name: "snowgate.test"},
			check:  wantReceived("NOERROR 192.0.2.1"),
		},
		{
			name:   "resolve over tcp",
			action: ClientAction{Op: OpResolve, Network: "tcp", Addr: resolver.String(), Name: "snowgate.test"},
			check:  wantReceived("NOERROR 192.0.2.1"),
		},
		{
			name:   "resolve an unknown name",
			action: ClientAction{Op: OpResolve, Network: "udp", Addr: resolver.String(), Name: "nowhere.test"},
			check:  wantReceived("NXDOMAIN "),
		},
		{
			name:   "tls handshake",
			action: ClientAction{Op: OpTLSHandshake, Addr: tlsAddr.String(), Name: "xy12345.snowflakecomputing.com"},
			check: func(t *testing.T, r ClientResult) {
				peerIs(tlsAddr)(t, r)
				select {
				case sni := <-snis:
					if sni != "xy12345.snowflakecomputing.com" {
						t.Errorf("the server saw server name %q", sni)
					}
				case <-time.After(30 * time.Second):
					t.Error("the server saw no ClientHello")
				}
			},
		},
		{
			name:   "tls handshake with nothing listening",
			action: ClientAction{Op: OpTLSHandshake, Addr: closed.String(), Name: "x"},
			check:  wantErrno("handshake", "ECONNREFUSED"),
		},
	}
	for _, root := range []bool{false, true} {
		t.Run(map[bool]string{false: "nobody", true: "root"}[root], func(t *testing.T) {
			cg := NewCgroup(t)
			s := StartSession(t, Proc{Cgroup: cg, Netns: ns, Root: root})
			if pids, err := cg.Procs(); err != nil || len(pids) != 1 || pids[0] != s.Pid {
				t.Fatalf("processes in the cgroup: %v, %v; want the session's %d", pids, err, s.Pid)
			}
			for _, st := range steps {
				r := s.Do(t, st.action)
				if wantUID := map[bool]int{false: Nobody, true: 0}[root]; r.UID != wantUID || r.PID != s.Pid {
					t.Fatalf("%s: run by uid %d pid %d, want uid %d pid %d", st.name, r.UID, r.PID, wantUID, s.Pid)
				}
				t.Run(st.name, func(t *testing.T) { st.check(t, r) })
			}
		})
	}
}

func wantReceived(want string) func(*testing.T, ClientResult) {
	return func(t *testing.T, r ClientResult) {
		if !r.OK() || r.Received != want {
			t.Errorf("got %v, want %q received", r, want)
		}
	}
}

// TestHoldInOneShotClient: a one-shot client's Hold stops after the connect,
// reading nothing, although the peer sends.
func TestHoldInOneShotClient(t *testing.T) {
	RequireRoot(t)
	ns := NewNetns(t)
	echo := echoListener(t, ns, "tcp4", "127.0.0.1:0", "hello ")
	r := RunClient(t, Proc{Netns: ns}, ClientAction{Op: OpConnect, Network: "tcp4", Addr: echo.String(), Send: "x", Hold: true})
	if !r.OK() || r.Peer != echo.String() || r.Received != "" {
		t.Errorf("got %v, want connected to %v with nothing read", r, echo)
	}
}

func TestConnect(t *testing.T) {
	RequireRoot(t)
	ns := NewNetns(t)
	echo := echoListener(t, ns, "tcp4", "127.0.0.1:0", "hello ")
	closed := closedPort(t, ns)
	tests := []struct {
		name string
		dst  netip.AddrPort
		want error
	}{
		{"listening", echo, nil},
		{"nothing listening", closed, unix.ECONNREFUSED},
		{"unreachable", netip.AddrPortFrom(SnowflakeAddr, 443), unix.EHOSTUNREACH},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if nerr := ns.Do(func() error {
				fd, serr := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if serr != nil {
					return serr
				}
				defer unix.Close(fd)
				err = Connect(fd, &unix.SockaddrInet4{Addr: tc.dst.Addr().As4(), Port: int(tc.dst.Port())}, 20*time.Second)
				return nil
			}); nerr != nil {
				t.Fatal(nerr)
			}
			if (tc.want == nil && err != nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("Connect to %v: %v, want %v", tc.dst, err, tc.want)
			}
		})
	}
}

func TestSharedTempDir(t *testing.T) {
	for _, perm := range []os.FileMode{0o755, 0o777} {
		dir := SharedTempDir(t, perm)
		st, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !st.IsDir() || st.Mode().Perm() != perm {
			t.Errorf("%s: mode %v, want a directory with %v", dir, st.Mode(), perm)
		}
	}
}
