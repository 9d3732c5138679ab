package redirect

import (
	"net/netip"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestRedirectV6AndDNS covers the native IPv6 gateway, every DNS path
// (unconnected and connected UDP, TCP), the protocol refusals and the
// exclusion of the gateway's cgroup.
func TestRedirectV6AndDNS(t *testing.T) {
	testenv.RequireRoot(t)
	f := newRedirectFixture(t)
	f.cfg.Proxy6 = f.gw.proxy6()
	// A cgroup below the attach point whose id is the gateway's: its
	// processes are under the programs but excluded by id.
	gwCgroup := testenv.NewCgroupUnder(t, f.cg.Path)
	gwID, err := CgroupID(gwCgroup.Path)
	if err != nil {
		t.Fatal(err)
	}
	f.cfg.GatewayCgroupID = gwID
	r := f.install(t)
	defer r.Close()

	t.Run("native v6 to the v6 gateway", func(t *testing.T) {
		f.expectRedirectedTo(t, r, f.gw.tcp6, "tcp6", "[2001:db8::1]:443", netip.MustParseAddrPort("[2001:db8::1]:443"))
		c, err := r.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if c["redirected6"] == 0 {
			t.Errorf("redirected6 not counted: %v", c)
		}
	})
	t.Run("native v6 DNS without a v6 listener", func(t *testing.T) {
		if rep := f.client.Do(t, connectAction("udp6", "[2001:db8::53]:53")); rep.Errno != "EPERM" {
			t.Errorf("errno %q (%s), want EPERM", rep.Errno, rep.Err)
		}
	})
	t.Run("tcp dns", func(t *testing.T) {
		f.expectRedirectedTo(t, r, f.gw.dnsTCP, "tcp4", "192.0.2.53:53", netip.MustParseAddrPort("192.0.2.53:53"))
	})
	t.Run("connected udp dns", func(t *testing.T) {
		rep := f.client.Do(t, connectAction("udp4", "192.0.2.53:53"))
		if rep.Err != "" {
			t.Fatal(rep.Err)
		}
		if rep.Peer != "192.0.2.53:53" {
			t.Errorf("getpeername %s, want the resolver 192.0.2.53:53", rep.Peer)
		}
		f.client.Do(t, closeAction)
	})
	t.Run("v4-mapped udp dns", func(t *testing.T) {
		rep := f.client.Do(t, dnsAction("[::ffff:192.0.2.53]:53"))
		if rep.Err != "" || rep.From != "[::ffff:192.0.2.53]:53" || rep.Received != "answer:query" {
			t.Errorf("got %+v, want the answer from [::ffff:192.0.2.53]:53", rep)
		}
	})
	for _, tc := range []struct {
		name   string
		action testenv.ClientAction
	}{
		{"connect udplite4 203.0.113.10:443", connectAction("udplite4", "203.0.113.10:443")},
		{"connect udplite4 203.0.113.10:5000", connectAction("udplite4", "203.0.113.10:5000")},
		{"sendto udplite4 203.0.113.10:5000", sendtoAction("udplite4", "203.0.113.10:5000")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := f.client.Do(t, tc.action)
			if rep.Errno == "EPROTONOSUPPORT" {
				t.Skip("no UDP-Lite in this kernel")
			}
			if rep.Errno != "EPERM" {
				t.Errorf("errno %q (%s), want EPERM", rep.Errno, rep.Err)
			}
		})
	}
	t.Run("gateway cgroup is not redirected", func(t *testing.T) {
		gw := testenv.StartSession(t, testenv.Proc{Cgroup: gwCgroup, Netns: testenv.NewNetns(t), Root: true})
		// Its netns has unreachable routes: direct means EHOSTUNREACH.
		for _, a := range []testenv.ClientAction{connectAction("tcp4", "203.0.113.10:443"), connectAction("tcp6", "[2001:db8::1]:443")} {
			if rep := gw.Do(t, a); rep.Errno != "EHOSTUNREACH" && rep.Errno != "ENETUNREACH" {
				t.Errorf("connect %s %s from the gateway cgroup: errno %q (%s), want unreachable (not redirected)", a.Network, a.Addr, rep.Errno, rep.Err)
			}
		}
		if rep := gw.Do(t, rawSocketAction); rep.Errno != "" {
			t.Errorf("raw socket from the gateway cgroup: %s", rep.Err)
		}
	})
}
