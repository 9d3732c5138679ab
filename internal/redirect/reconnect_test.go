package redirect

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestReconnectAfterFailedRedirect checks that a TCP socket whose redirected
// connect failed before its SYN (the gateway address has no route), and that
// then connects straight to the gateway's port, is not taken for a redirected
// connection: connect4 left a record under the socket's cookie, but sockops
// and getpeername use a record only while the socket is connected to the
// gateway address the record names.
func TestReconnectAfterFailedRedirect(t *testing.T) {
	testenv.RequireRoot(t)
	f := newRedirectFixture(t)
	direct := f.gw.proxy() // the gateway stub; its port is not intercepted
	// Intercepted connects go to an address the client's namespace has no
	// route to: they fail in the kernel after connect4, before the SYN.
	f.cfg.Proxy = netip.MustParseAddrPort("10.99.0.1:15443")
	r := f.install(t)
	defer r.Close()
	before := counters(t, r)

	rep := f.client.Do(t, testenv.ClientAction{Op: testenv.OpReconnect, Network: "tcp4", Addr: "203.0.113.10:443", Then: direct.String(), Hold: true, TimeoutSec: clientTimeoutSec})
	if rep.Err != "" {
		t.Fatalf("reconnect: %+v", rep)
	}
	if rep.FirstErrno != "ENETUNREACH" && rep.FirstErrno != "EHOSTUNREACH" {
		t.Errorf("first connect: %q, want it unreachable (redirected to the unroutable gateway)", rep.FirstErrno)
	}
	if rep.Peer != direct.String() {
		t.Errorf("getpeername %s, want the real peer %s (nothing to restore)", rep.Peer, direct)
	}
	conn := acceptOn(t, f.gw.tcp)
	defer conn.Close()
	peer := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	if o, err := r.Lookup(peer); !errors.Is(err, ErrNotRedirected) {
		t.Errorf("lookup %v = %+v, %v: want ErrNotRedirected (a direct connection)", peer, o, err)
	}
	after := counters(t, r)
	if after["redirected4"] != before["redirected4"]+1 {
		t.Errorf("redirected4 %d -> %d, want one redirect (the first connect)", before["redirected4"], after["redirected4"])
	}
	if after["tuple_recorded"] != before["tuple_recorded"] {
		t.Errorf("tuple_recorded %d -> %d, want unchanged", before["tuple_recorded"], after["tuple_recorded"])
	}
	f.client.Do(t, closeAction)
}
