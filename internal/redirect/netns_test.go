package redirect

import (
	"net/netip"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestRedirectOtherNetns installs from the test's own network namespace, so
// the client's private namespace is a "container": it is sent to the gateway
// chosen for its namespace cookie, or to HostProxy, and refused when neither
// exists. (The gateway stub listens inside the client's namespace, so the
// addresses are loopback ones; the programs only see addresses.)
func TestRedirectOtherNetns(t *testing.T) {
	testenv.RequireRoot(t)
	f := newRedirectFixture(t)
	snowflake := netip.MustParseAddrPort("203.0.113.10:443")

	// The host proxy is a port nobody listens on in the client's netns.
	cfg := f.cfg
	cfg.Proxy = netip.MustParseAddrPort("127.0.0.1:9")
	cfg.DNS = netip.AddrPort{}
	r, err := Install(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	t.Run("no target refuses", func(t *testing.T) {
		rep := f.client.Do(t, connectAction("tcp4", "203.0.113.10:443"))
		if rep.Errno != "EPERM" {
			t.Fatalf("errno %q (%s), want EPERM", rep.Errno, rep.Err)
		}
		c, err := r.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if c["refused_no_target"] == 0 {
			t.Errorf("refused_no_target not counted: %v", c)
		}
	})

	var cookie uint64
	if err := f.client.Netns.Do(func() error {
		var err error
		cookie, err = hostNetnsCookie()
		return err
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("per-netns target", func(t *testing.T) {
		if err := r.SetNetnsTarget(cookie, f.gw.proxy(), netip.AddrPort{}); err != nil {
			t.Fatal(err)
		}
		f.expectRedirected(t, r, "tcp4", "203.0.113.10:443", snowflake)
		f.expectRedirected(t, r, "tcp6", "[::ffff:203.0.113.10]:443", snowflake)
		if err := r.DeleteNetnsTarget(cookie); err != nil {
			t.Fatal(err)
		}
		if rep := f.client.Do(t, connectAction("tcp4", "203.0.113.10:443")); rep.Errno != "EPERM" {
			t.Errorf("after DeleteNetnsTarget: errno %q (%s), want EPERM", rep.Errno, rep.Err)
		}
	})

	t.Run("host proxy and host dns", func(t *testing.T) {
		// Reinstalling over the pins updates the programs with the new
		// constants.
		cfg.HostProxy = f.gw.proxy()
		cfg.DNS = netip.MustParseAddrPort("127.0.0.1:9")
		cfg.HostDNS = f.gw.dnsAddr()
		r2, err := Install(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer r2.Close()
		f.expectRedirected(t, r2, "tcp4", "203.0.113.10:443", snowflake)
		rep := f.client.Do(t, dnsAction("192.0.2.53:53"))
		if rep.Err != "" || rep.From != "192.0.2.53:53" || rep.Received != "answer:query" {
			t.Errorf("dns via the host DNS address: %+v", rep)
		}
	})
}
