package redirect

import (
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestEgressBackstopLive replaces the connect hooks with allow-all programs
// (as if they had been detached) and checks that the egress backstop still
// keeps a TCP/443 SYN from leaving. The destination is made reachable inside
// the client's namespace, with a listener on it, so only the backstop stands
// between the client and a direct connection.
func TestEgressBackstopLive(t *testing.T) {
	testenv.RequireRoot(t)
	f := newRedirectFixture(t)
	r := f.install(t)
	defer r.Close()

	var direct *net.TCPListener
	err := f.client.Netns.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("203.0.113.10/32")
		if err := netlink.AddrAdd(lo, a); err != nil {
			return err
		}
		direct, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(203, 0, 113, 10), Port: 443})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()

	for _, h := range []struct {
		name   string
		attach ebpf.AttachType
	}{{"connect4", ebpf.AttachCGroupInet4Connect}, {"connect6", ebpf.AttachCGroupInet6Connect}} {
		l, err := link.LoadPinnedLink(linkPin(f.pinDir, h.name), nil)
		if err != nil {
			t.Fatal(err)
		}
		allow, err := probeProgram(h.attach)
		if err != nil {
			t.Fatal(err)
		}
		err = l.Update(allow)
		allow.Close()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
	}

	before, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	rep := f.client.Do(t, connectActionWithin("tcp4", "203.0.113.10:443", 2))
	if rep.Err == "" {
		t.Fatalf("connected directly past the backstop: local %s peer %s", rep.Local, rep.Peer)
	}
	after, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after["egress_dropped"] <= before["egress_dropped"] {
		t.Errorf("egress_dropped %d -> %d, want an increase", before["egress_dropped"], after["egress_dropped"])
	}
	if err := direct.SetDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if c, err := direct.Accept(); err == nil {
		c.Close()
		t.Error("the direct listener accepted a connection")
	}
	// A port that is not intercepted reaches the direct listener's address
	// normally (nothing listens there: refused, not dropped).
	if rep := f.client.Do(t, connectActionWithin("tcp4", "203.0.113.10:8443", 5)); rep.Errno != "ECONNREFUSED" {
		t.Errorf("connect to a non-intercepted port: errno %q (%s), want ECONNREFUSED", rep.Errno, rep.Err)
	}
}
