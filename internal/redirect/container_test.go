package redirect

import (
	"net"
	"net/netip"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestRedirectContainerViaHostAddress builds a small host: a "host" network
// namespace that runs the gateway on the host address (EnsureHostAddress),
// and a "container" namespace joined to it by a veth pair, whose client is in
// the agent cgroup. The container's connect to 203.0.113.10:443 must land on
// the gateway through the host address, keyed by the container's own IP.
func TestRedirectContainerViaHostAddress(t *testing.T) {
	testenv.RequireRoot(t)
	agents := testenv.NewCgroup(t)
	pinDir := NewTestPinDir(t)
	host := testenv.NewNetns(t)
	container := testenv.NewContainerNetns(t, host, netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("10.77.0.2/24"))
	client := testenv.StartSession(t, testenv.Proc{Cgroup: agents, Netns: container.Netns, Root: true})

	vip := netip.MustParseAddr("169.254.77.1")
	var gw *net.TCPListener
	err := host.Do(func() error {
		if err := EnsureHostAddress(vip); err != nil {
			return err
		}
		var err error
		gw, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: vip.AsSlice()})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()

	var r *Redirect
	err = host.Do(func() error {
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

	rep := client.Do(t, connectAction("tcp4", "203.0.113.10:443"))
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
	want := Origin{Dst: netip.MustParseAddrPort("203.0.113.10:443"), CgroupID: agents.ID, PID: uint32(client.Pid)}
	if o != want {
		t.Errorf("lookup = %+v, want %+v", o, want)
	}
}
