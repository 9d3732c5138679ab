package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Stand-in addresses of the documentation ranges the tests use: nothing
// outside a test's own namespaces is ever addressed.
var (
	// SnowflakeAddr stands in for a Snowflake front end (203.0.113.0/24,
	// TEST-NET-3).
	SnowflakeAddr = netip.MustParseAddr("203.0.113.10")
	// SnowflakeAddr6 stands in for a native IPv6 Snowflake front end
	// (2001:db8::/32, documentation).
	SnowflakeAddr6 = netip.MustParseAddr("2001:db8::1")
	// ResolverAddr stands in for the agent's DNS resolver (192.0.2.53,
	// TEST-NET-1).
	ResolverAddr = netip.MustParseAddr("192.0.2.53")
)

// Netns is a private network namespace a test created: loopback up, and an
// `unreachable` default route for IPv4 and IPv6, so anything that escapes a
// redirect fails at once (EHOSTUNREACH/ENETUNREACH) instead of leaving the
// machine. The test process holds it open through a file descriptor; it goes
// away when the test ends (or the process dies), leaving nothing behind.
type Netns struct {
	f *os.File
}

// NewNetns creates a private network namespace. Needs root.
func NewNetns(tb testing.TB) *Netns {
	tb.Helper()
	n, err := newNetns()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.f.Close() })
	if err := n.Do(setupIsolated); err != nil {
		tb.Fatalf("set up network namespace: %v", err)
	}
	return n
}

func newNetns() (*Netns, error) {
	type res struct {
		f   *os.File
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: fmt.Errorf("new netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: fmt.Errorf("new netns: unshare: %w", err)}
			return
		}
		f, ferr := os.Open("/proc/thread-self/ns/net")
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: Go discards it with the goroutine.
			if f != nil {
				f.Close()
			}
			ch <- res{err: fmt.Errorf("new netns: switch back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		if ferr != nil {
			ch <- res{err: fmt.Errorf("new netns: %w", ferr)}
			return
		}
		ch <- res{f: f}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	return &Netns{f: r.f}, nil
}

// setupIsolated runs inside the namespace: loopback up, unreachable default
// routes, and ping sockets allowed for every group (so that an unprivileged
// client can create an ICMP datagram socket, and the redirect, not the
// sysctl, is what refuses it).
func setupIsolated() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	for _, dst := range []string{"0.0.0.0/0", "::/0"} {
		_, n, _ := net.ParseCIDR(dst)
		if err := netlink.RouteAdd(&netlink.Route{Dst: n, Type: unix.RTN_UNREACHABLE}); err != nil {
			return fmt.Errorf("route unreachable %s: %w", dst, err)
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0); err != nil {
		return fmt.Errorf("allow ping sockets: %w", err)
	}
	return nil
}

// Path is a path that opens the namespace (/proc/<pid>/fd/<fd> of the test
// process) for root: setns, `nsenter --net=`, `ip -n`... It is valid while
// the test runs.
func (n *Netns) Path() string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), n.f.Fd())
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn creates
// live in the namespace and keep working from any goroutine afterwards;
// goroutines fn starts do not run in it. If the thread cannot be switched
// back it is discarded rather than reused.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(n.f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: setns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Cookie is the namespace's cookie (SO_NETNS_COOKIE), the key the redirect
// uses to tell namespaces apart.
func (n *Netns) Cookie() (uint64, error) {
	var c uint64
	err := n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		c, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("netns cookie: %w", err)
	}
	return c, nil
}

// Listen is net.Listen inside the namespace.
func (n *Netns) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in netns: %w", network, address, err)
	}
	return l, nil
}

// ListenPacket is net.ListenPacket inside the namespace.
func (n *Netns) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in netns: %w", network, address, err)
	}
	return c, nil
}

// AddAddress puts an address on an interface of the namespace, e.g. a
// gateway host address (169.254.77.1/32) on lo.
func (n *Netns) AddAddress(iface string, prefix netip.Prefix) error {
	return n.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return fmt.Errorf("add address %v: %w", prefix, err)
		}
		if err := netlink.AddrReplace(l, nlAddr(prefix)); err != nil {
			return fmt.Errorf("add address %v to %s: %w", prefix, iface, err)
		}
		return nil
	})
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	a := p.Addr()
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}}
}

// Veth describes a container-like namespace joined to a host namespace by a
// veth pair.
type Veth struct {
	// Netns is the container's namespace. Its default IPv4 route goes
	// through HostAddr; IPv6 stays unreachable.
	Netns *Netns
	// HostAddr is the host end's address (in the host namespace).
	HostAddr netip.Prefix
	// PeerAddr is the container end's address (eth0 in Netns).
	PeerAddr netip.Prefix
	// HostIface is the host end's interface name.
	HostIface string
}

// NewContainerNetns creates a container-like network namespace joined to
// host by a veth pair: hostAddr (e.g. 10.77.0.1/24) on the host end,
// containerAddr (10.77.0.2/24) on eth0 in the container, and the
// container's default IPv4 route through the host end. The host namespace
// does not forward, so the only thing a container can reach is the host
// namespace's own addresses.
func NewContainerNetns(tb testing.TB, host *Netns, hostAddr, containerAddr netip.Prefix) *Veth {
	tb.Helper()
	c := NewNetns(tb)
	v := &Veth{Netns: c, HostAddr: hostAddr, PeerAddr: containerAddr, HostIface: "sgv" + RandomName(tb)[:8]}
	err := host.Do(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = v.HostIface
		veth := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(c.f.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		l, err := netlink.LinkByName(v.HostIface)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, nlAddr(hostAddr)); err != nil {
			return fmt.Errorf("address host end: %w", err)
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		tb.Fatalf("container netns: %v", err)
	}
	err = c.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, nlAddr(containerAddr)); err != nil {
			return fmt.Errorf("address container end: %w", err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		_, def, _ := net.ParseCIDR("0.0.0.0/0")
		gw := net.IP(hostAddr.Addr().AsSlice())
		if err := netlink.RouteReplace(&netlink.Route{Dst: def, Gw: gw, LinkIndex: l.Attrs().Index}); err != nil {
			return fmt.Errorf("default route via %v: %w", gw, err)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("container netns: %v", err)
	}
	return v
}
