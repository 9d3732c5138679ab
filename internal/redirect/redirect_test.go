package redirect

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/snowgate/snowgate/internal/testenv"
)

// gatewayStub is the far end of the redirect inside the client's network
// namespace: TCP listeners at the v4 and v6 proxy addresses, and a DNS
// listener (UDP, which echoes, and TCP on the same port).
type gatewayStub struct {
	tcp    *net.TCPListener
	tcp6   *net.TCPListener
	dns    *net.UDPConn
	dnsTCP *net.TCPListener
}

func newGatewayStub(t *testing.T, ns *testenv.Netns) *gatewayStub {
	t.Helper()
	g := &gatewayStub{}
	err := ns.Do(func() error {
		var err error
		if g.tcp, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return err
		}
		if g.tcp6, err = net.ListenTCP("tcp6", &net.TCPAddr{IP: net.IPv6loopback}); err != nil {
			return err
		}
		// UDP and TCP DNS share a port number; retry on the rare clash.
		for range 20 {
			if g.dns, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
				return err
			}
			g.dnsTCP, err = net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(g.dnsAddr()))
			if err == nil {
				return nil
			}
			g.dns.Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.tcp.Close(); g.tcp6.Close(); g.dns.Close(); g.dnsTCP.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := g.dns.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = g.dns.WriteToUDPAddrPort(append([]byte("answer:"), buf[:n]...), from)
		}
	}()
	return g
}

func (g *gatewayStub) proxy() netip.AddrPort {
	return g.tcp.Addr().(*net.TCPAddr).AddrPort()
}

func (g *gatewayStub) proxy6() netip.AddrPort {
	return g.tcp6.Addr().(*net.TCPAddr).AddrPort()
}

func (g *gatewayStub) dnsAddr() netip.AddrPort {
	return g.dns.LocalAddr().(*net.UDPAddr).AddrPort()
}

// acceptOn waits for the next redirected connection on l.
func acceptOn(t *testing.T, l *net.TCPListener) net.Conn {
	t.Helper()
	if err := l.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("gateway accept: %v", err)
	}
	return c
}

// redirectFixture is one installed redirect with a client and a gateway stub
// in a private network namespace that the programs treat as the host's.
type redirectFixture struct {
	cg     *testenv.Cgroup
	pinDir string
	client *testenv.Session
	gw     *gatewayStub
	cfg    Config
}

func newRedirectFixture(t *testing.T) *redirectFixture {
	t.Helper()
	return newRedirectFixtureAs(t, true)
}

// newRedirectFixtureAs is newRedirectFixture with the client running as root
// (with the test's capabilities) or, if not root, as testenv.Nobody.
func newRedirectFixtureAs(t *testing.T, root bool) *redirectFixture {
	t.Helper()
	f := &redirectFixture{cg: testenv.NewCgroup(t), pinDir: NewTestPinDir(t)}
	f.client = testenv.StartSession(t, testenv.Proc{Cgroup: f.cg, Netns: testenv.NewNetns(t), Root: root})
	f.gw = newGatewayStub(t, f.client.Netns)
	f.cfg = Config{
		Cgroup:          f.cg.Path,
		PinDir:          f.pinDir,
		Proxy:           f.gw.proxy(),
		DNS:             f.gw.dnsAddr(),
		GatewayCgroupID: testenv.SelfCgroup(t).ID,
	}
	return f
}

// install runs Install from inside the client's namespace, so its cookie is
// the "host" cookie and the loopback proxy address applies.
func (f *redirectFixture) install(t *testing.T) *Redirect {
	t.Helper()
	var r *Redirect
	err := f.client.Netns.Do(func() error {
		var err error
		r, err = Install(f.cfg)
		return err
	})
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	return r
}

// inHostNetns runs fn in the client's namespace, as install does (its cookie
// is the "host" cookie), with the fixture's configuration completed by
// withDefaults and that cookie.
func (f *redirectFixture) inHostNetns(fn func(cfg Config, cookie uint64) error) error {
	return f.client.Netns.Do(func() error {
		cfg, err := f.cfg.withDefaults()
		if err != nil {
			return err
		}
		cookie, err := hostNetnsCookie()
		if err != nil {
			return err
		}
		return fn(cfg, cookie)
	})
}

// expectRedirected connects from the client and checks both ends: the
// gateway's look-up and the client's getpeername.
func (f *redirectFixture) expectRedirected(t *testing.T, r *Redirect, network, dst string, want netip.AddrPort) {
	t.Helper()
	f.expectRedirectedTo(t, r, f.gw.tcp, network, dst, want)
}

// expectRedirectedAction is expectRedirected for a client action other than
// connectAction (e.g. fastOpenAction).
func (f *redirectFixture) expectRedirectedAction(t *testing.T, r *Redirect, a testenv.ClientAction, want netip.AddrPort) {
	t.Helper()
	f.expectRedirectedVia(t, r, f.gw.tcp, a, want)
}

// expectRedirectedTo is expectRedirected for a connection that lands on l.
func (f *redirectFixture) expectRedirectedTo(t *testing.T, r *Redirect, l *net.TCPListener, network, dst string, want netip.AddrPort) {
	t.Helper()
	f.expectRedirectedVia(t, r, l, connectAction(network, dst), want)
}

func (f *redirectFixture) expectRedirectedVia(t *testing.T, r *Redirect, l *net.TCPListener, a testenv.ClientAction, want netip.AddrPort) {
	t.Helper()
	rep := f.client.Do(t, a)
	if rep.Err != "" {
		t.Fatalf("connect %s %s: %s", a.Network, a.Addr, rep.Err)
	}
	if rep.Peer != a.Addr {
		t.Errorf("getpeername = %s, want the original %s", rep.Peer, a.Addr)
	}
	conn := acceptOn(t, l)
	defer conn.Close()
	peer := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	local := netip.MustParseAddrPort(rep.Local)
	if peer.Addr().Unmap() != local.Addr().Unmap() || peer.Port() != local.Port() {
		t.Errorf("gateway peer %v, client local %v: not the same connection", peer, local)
	}
	o, err := r.Lookup(peer)
	if err != nil {
		t.Fatalf("lookup %v: %v", peer, err)
	}
	wantOrigin := Origin{Dst: want, CgroupID: f.cg.ID, PID: uint32(f.client.Pid), UID: 0}
	if o != wantOrigin {
		t.Errorf("lookup %v = %+v, want %+v", peer, o, wantOrigin)
	}
	conns, err := r.Connections()
	if err != nil {
		t.Fatal(err)
	}
	wantConn := Connection{Peer: netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port()), Origin: wantOrigin}
	if !slices.Contains(conns, wantConn) {
		t.Errorf("Connections() = %+v, want it to contain %+v", conns, wantConn)
	}
	f.client.Do(t, closeAction)
	conn.Close()
	// The record goes when the client's socket reaches TCP_CLOSE.
	lookupGone(t, r, peer)
}

func TestRedirectEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	f := newRedirectFixture(t)
	r := f.install(t)
	defer r.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := r.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}

	snowflake := netip.MustParseAddrPort("203.0.113.10:443")
	t.Run("tcp4", func(t *testing.T) {
		f.expectRedirected(t, r, "tcp4", "203.0.113.10:443", snowflake)
	})
	t.Run("tcp4 port 80", func(t *testing.T) {
		f.expectRedirected(t, r, "tcp4", "203.0.113.10:80", netip.MustParseAddrPort("203.0.113.10:80"))
	})
	t.Run("v4-mapped", func(t *testing.T) {
		f.expectRedirected(t, r, "tcp6", "[::ffff:203.0.113.10]:443", snowflake)
	})
	t.Run("tcp fast open", func(t *testing.T) {
		f.expectRedirectedAction(t, r, fastOpenAction("tcp4", "203.0.113.10:443"), snowflake)
	})
	t.Run("mptcp", func(t *testing.T) {
		f.expectRedirected(t, r, "mptcp4", "203.0.113.10:443", snowflake)
		f.expectRedirected(t, r, "mptcp6", "[::ffff:203.0.113.10]:443", snowflake)
	})

	refusals := []struct {
		name   string
		action testenv.ClientAction
		errno  string
	}{
		{"native v6 without v6 gateway", connectAction("tcp6", "[2001:db8::1]:443"), "EPERM"},
		{"QUIC sendto", sendtoAction("udp4", "203.0.113.10:443"), "EPERM"},
		{"QUIC connect", connectAction("udp4", "203.0.113.10:443"), "EPERM"},
		{"QUIC v4-mapped", sendtoAction("udp6", "[::ffff:203.0.113.10]:443"), "EPERM"},
		{"DoT", connectAction("tcp4", "203.0.113.10:853"), "EPERM"},
		{"DoQ", sendtoAction("udp4", "203.0.113.10:853"), "EPERM"},
		{"raw socket", rawSocketAction, "EPERM"},
		// Not intercepted: goes direct and meets the unreachable route.
		{"other port goes direct", connectAction("tcp4", "203.0.113.10:8443"), "EHOSTUNREACH"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			rep := f.client.Do(t, tc.action)
			if rep.Errno != tc.errno {
				t.Errorf("%s %s %s: errno %q (%s), want %s", tc.action.Op, tc.action.Network, tc.action.Addr, rep.Errno, rep.Err, tc.errno)
			}
		})
	}

	t.Run("dns", func(t *testing.T) {
		rep := f.client.Do(t, dnsAction("192.0.2.53:53"))
		if rep.Err != "" {
			t.Fatalf("dns: %s", rep.Err)
		}
		if rep.From != "192.0.2.53:53" {
			t.Errorf("reply source %s, want the resolver asked, 192.0.2.53:53", rep.From)
		}
		if rep.Received != "answer:query" {
			t.Errorf("reply %q, want the DNS listener's answer", rep.Received)
		}
	})

	t.Run("counters", func(t *testing.T) {
		c, err := r.Counters()
		if err != nil {
			t.Fatal(err)
		}
		atLeast := map[string]uint64{
			"redirected4": 6, "refused_v6": 1, "refused_quic": 3, "refused_dot": 2,
			"refused_raw": 1, "dns_redirected": 1, "dns_reply_restored": 1,
			"tuple_recorded": 6, "tuple_deleted": 6,
		}
		for name, min := range atLeast {
			if c[name] < min {
				t.Errorf("counter %s = %d, want >= %d (all: %v)", name, c[name], min, c)
			}
		}
		if c["tuple_update_failed"] != 0 || c["refused_no_storage"] != 0 {
			t.Errorf("failure counters non-zero: %v", c)
		}
		if len(c) != len(CounterNames()) {
			t.Errorf("Counters has %d names, CounterNames %d", len(c), len(CounterNames()))
		}
	})

	t.Run("events", func(t *testing.T) {
		want := Event{
			Reason: "refused_quic", Hook: "sendmsg4", Proto: 17, Dst: snowflake,
			CgroupID: f.cg.ID, PID: uint32(f.client.Pid), UID: 0,
		}
		timeout := time.After(30 * time.Second)
		var seen []Event
		for {
			select {
			case ev := <-events:
				if ev == want {
					return
				}
				seen = append(seen, ev)
			case <-timeout:
				t.Fatalf("no event %+v; saw %+v", want, seen)
			}
		}
	})

	t.Run("close keeps the redirect", func(t *testing.T) {
		cancel()
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		for _, h := range hooks {
			if _, err := os.Stat(linkPin(f.pinDir, h.name)); err != nil {
				t.Errorf("pin of %s gone after Close: %v", h.name, err)
			}
		}
		r2, err := Open(f.pinDir)
		if err != nil {
			t.Fatal(err)
		}
		defer r2.Close()
		f.expectRedirected(t, r2, "tcp4", "203.0.113.10:443", snowflake)
	})

	t.Run("gateway down fails closed", func(t *testing.T) {
		f.gw.tcp.Close()
		rep := f.client.Do(t, connectAction("tcp4", "203.0.113.10:443"))
		if rep.Errno != "ECONNREFUSED" {
			t.Errorf("errno %q (%s), want ECONNREFUSED", rep.Errno, rep.Err)
		}
	})
}

// linkState is the link and program id of each pinned hook.
func linkState(t *testing.T, pinDir string) map[string][2]uint64 {
	t.Helper()
	out := map[string][2]uint64{}
	for _, h := range hooks {
		l, err := link.LoadPinnedLink(linkPin(pinDir, h.name), nil)
		if err != nil {
			t.Fatalf("load pinned %s: %v", h.name, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[h.name] = [2]uint64{uint64(info.ID), uint64(info.Program)}
	}
	return out
}

func TestRedirectUpgradeAndUninstall(t *testing.T) {
	testenv.RequireRoot(t)
	f := newRedirectFixture(t)
	r := f.install(t)
	r.Close()
	before := linkState(t, f.pinDir)

	// A second Install over existing pins swaps programs inside the same links.
	r = f.install(t)
	defer r.Close()
	after := linkState(t, f.pinDir)
	for name, b := range before {
		a := after[name]
		if a[0] != b[0] {
			t.Errorf("%s: link id %d -> %d, want the same link updated in place", name, b[0], a[0])
		}
		if a[1] == b[1] {
			t.Errorf("%s: program id unchanged (%d), want the new program", name, a[1])
		}
	}
	f.expectRedirected(t, r, "tcp4", "203.0.113.10:443", netip.MustParseAddrPort("203.0.113.10:443"))

	// Moving the redirect to another cgroup needs an uninstall first.
	other := testenv.NewCgroup(t)
	moved := f.cfg
	moved.Cgroup = other.Path
	if r2, err := Install(moved); err == nil {
		r2.Close()
		t.Fatal("Install onto another cgroup over existing pins succeeded")
	}

	if err := Uninstall(f.pinDir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir still there after Uninstall: %v", err)
	}
	if Installed(f.pinDir) {
		t.Error("Installed reports true after Uninstall")
	}
	// Even though r still holds link FDs, the programs are detached.
	rep := f.client.Do(t, connectAction("tcp4", "203.0.113.10:443"))
	if rep.Errno != "EHOSTUNREACH" {
		t.Errorf("connect after uninstall: %q (%s), want EHOSTUNREACH (direct, unreachable route)", rep.Errno, rep.Err)
	}
	if _, err := Open(f.pinDir); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("Open after uninstall: %v, want ErrNotInstalled", err)
	}
}

func TestInstallRejectsBadConfig(t *testing.T) {
	proxy := netip.MustParseAddrPort("127.0.0.1:15443")
	tests := []struct {
		name string
		cfg  Config
	}{
		{"relative cgroup", Config{Cgroup: "agents.slice", Proxy: proxy}},
		{"no proxy", Config{Cgroup: "/sys/fs/cgroup/x"}},
		{"v6 proxy in Proxy", Config{Cgroup: "/sys/fs/cgroup/x", Proxy: netip.MustParseAddrPort("[::1]:1")}},
		{"port zero", Config{Cgroup: "/sys/fs/cgroup/x", Proxy: proxy, Ports: []uint16{443, 0}}},
		{"port 53", Config{Cgroup: "/sys/fs/cgroup/x", Proxy: proxy, Ports: []uint16{53}}},
		{"too many ports", Config{Cgroup: "/sys/fs/cgroup/x", Proxy: proxy, Ports: []uint16{1, 2, 3, 4, 5, 6, 7, 8, 9}}},
		{"v4 in Proxy6", Config{Cgroup: "/sys/fs/cgroup/x", Proxy: proxy, Proxy6: netip.MustParseAddrPort("127.0.0.1:1")}},
		{"v6 host proxy", Config{Cgroup: "/sys/fs/cgroup/x", Proxy: proxy, HostProxy: netip.MustParseAddrPort("[fd00::1]:1")}},
		{"relative pin dir", Config{Cgroup: "/sys/fs/cgroup/x", Proxy: proxy, PinDir: "snowgate"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Install(tc.cfg); err == nil {
				t.Fatal("Install accepted a bad configuration")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := Config{
		Cgroup:    "/sys/fs/cgroup/agents.slice",
		Proxy:     netip.MustParseAddrPort("[::ffff:127.0.0.1]:15443"),
		HostProxy: netip.MustParseAddrPort("169.254.77.1:15443"),
		DNS:       netip.MustParseAddrPort("127.0.0.1:15353"),
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PinDir != DefaultPinDir {
		t.Errorf("PinDir = %q", cfg.PinDir)
	}
	if len(cfg.Ports) != 2 || cfg.Ports[0] != 443 || cfg.Ports[1] != 80 {
		t.Errorf("Ports = %v", cfg.Ports)
	}
	if cfg.Proxy != netip.MustParseAddrPort("127.0.0.1:15443") {
		t.Errorf("Proxy not unmapped: %v", cfg.Proxy)
	}
	if cfg.HostDNS != netip.MustParseAddrPort("169.254.77.1:15353") {
		t.Errorf("HostDNS = %v, want the host proxy address with the DNS port", cfg.HostDNS)
	}
	if filepath.Dir(cfg.PinDir) != bpffsRoot {
		t.Errorf("default pin dir %s not under %s", cfg.PinDir, bpffsRoot)
	}
}

// TestRedirectUnprivilegedClient runs the client as nobody: it is redirected
// all the same, the gateway learns its uid, and it cannot open raw sockets.
func TestRedirectUnprivilegedClient(t *testing.T) {
	testenv.RequireRoot(t)
	const nobody = testenv.Nobody
	f := newRedirectFixtureAs(t, false)
	r := f.install(t)
	defer r.Close()

	rep := f.client.Do(t, connectAction("tcp4", "203.0.113.10:443"))
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	conn := acceptOn(t, f.gw.tcp)
	defer conn.Close()
	o, err := r.Lookup(conn.RemoteAddr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	if o.UID != nobody || o.PID != uint32(f.client.Pid) || o.CgroupID != f.cg.ID {
		t.Errorf("origin %+v, want uid %d pid %d cgroup %d", o, nobody, f.client.Pid, f.cg.ID)
	}
	if rep := f.client.Do(t, rawSocketAction); rep.Errno != "EPERM" {
		t.Errorf("raw socket as nobody: %q (%s), want EPERM", rep.Errno, rep.Err)
	}
}
