package redirect

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestRedirectContainerViaHostAddress builds a small host: a "host" network
// namespace that runs the gateway on the host address (EnsureHostAddress),
// and a "container" namespace joined to it by a veth pair, whose client is in
// the agent cgroup. The container's connect to 203.0.113.10:443 must land on
// the gateway through the host address, keyed by the container's own IP.
func TestRedirectContainerViaHostAddress(t *testing.T) {
	testenv.RequireRoot(t)
	agents := newRedirTestCgroup(t)
	pinDir := newRedirTestPinDir(t)
	// The "host" namespace is held by a process outside the agent cgroup.
	host := startRedirTestClient(t, newRedirTestCgroup(t))
	container := startRedirTestClient(t, agents)

	vip := netip.MustParseAddr("169.254.77.1")
	hostIP, containerIP := "10.77.0.1/24", "10.77.0.2/24"
	vethHost := "sg-h-" + randomSuffix(t)[:6]
	vethCont := "sg-c-" + randomSuffix(t)[:6]

	containerNS, err := os.Open(container.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer containerNS.Close()

	var gw *net.TCPListener
	err = inNetns(t, host.Netns, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: vethHost}, PeerName: vethCont}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		peer, err := netlink.LinkByName(vethCont)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(containerNS.Fd())); err != nil {
			return fmt.Errorf("move veth: %w", err)
		}
		l, err := netlink.LinkByName(vethHost)
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(hostIP)
		if err := netlink.AddrAdd(l, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		if err := EnsureHostAddress(vip); err != nil {
			return err
		}
		gw, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: vip.AsSlice()})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()

	err = inNetns(t, container.Netns, func() error {
		l, err := netlink.LinkByName(vethCont)
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(containerIP)
		if err := netlink.AddrAdd(l, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		_, all, _ := net.ParseCIDR("0.0.0.0/0")
		return netlink.RouteReplace(&netlink.Route{
			Dst: all, Gw: net.IPv4(10, 77, 0, 1), LinkIndex: l.Attrs().Index, Type: unix.RTN_UNICAST,
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	var r *Redirect
	err = inNetns(t, host.Netns, func() error {
		var err error
		r, err = Install(Config{
			Cgroup:    agents.Path,
			PinDir:    pinDir,
			Proxy:     netip.MustParseAddrPort("127.0.0.1:9"), // the host's own clients: none here
			HostProxy: gw.Addr().(*net.TCPAddr).AddrPort(),
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	rep := container.do(t, "connect tcp4 203.0.113.10:443")
	if rep.Err != "" {
		t.Fatalf("connect from the container: %s", rep.Err)
	}
	if rep.Peer != "203.0.113.10:443" {
		t.Errorf("getpeername in the container = %s, want 203.0.113.10:443", rep.Peer)
	}
	conn := acceptOn(t, gw)
	defer conn.Close()
	peer := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	if got := peer.Addr().Unmap().String(); got != "10.77.0.2" {
		t.Errorf("gateway sees peer %v, want the container's address 10.77.0.2", peer)
	}
	o, err := r.Lookup(peer)
	if err != nil {
		t.Fatal(err)
	}
	want := Origin{Dst: netip.MustParseAddrPort("203.0.113.10:443"), CgroupID: agents.ID, PID: uint32(container.Pid)}
	if o != want {
		t.Errorf("lookup = %+v, want %+v", o, want)
	}
}
