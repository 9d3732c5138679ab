package redirect

import (
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

// AgentEnv gives the external tests (package redirect_test, which may import
// the gateway) an installed redirect with a client process in the agents'
// cgroup and a private network namespace, and a listener of theirs as the
// redirect's proxy address in that namespace.
type AgentEnv struct {
	// Redirect is the installed redirect.
	Redirect *Redirect
	// PinDir is its pin directory.
	PinDir string
	f      *redirectFixture
}

// NewAgentEnv installs the redirect with ln, opened by listen inside the
// client's namespace, as the proxy.
func NewAgentEnv(t *testing.T, listen func() (net.Listener, error)) (*AgentEnv, net.Listener) {
	t.Helper()
	f := newRedirectFixture(t)
	var ln net.Listener
	if err := f.client.Netns.Do(func() error {
		var err error
		ln, err = listen()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f.cfg.Proxy = netip.MustParseAddrPort(ln.Addr().String())
	r := f.install(t)
	t.Cleanup(func() { r.Close() })
	return &AgentEnv{Redirect: r, PinDir: f.pinDir, f: f}, ln
}

// TLS has the client run a TLS handshake with server name sni to addr and
// returns its error text ("" on success).
func (e *AgentEnv) TLS(t *testing.T, addr, sni string) string {
	t.Helper()
	return e.f.client.Do(t, testenv.ClientAction{Op: testenv.OpTLSHandshake, Addr: addr, Name: sni}).Err
}

// NewTestPinDir is a fresh pin directory under bpffs, uninstalled at
// cleanup.
func NewTestPinDir(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(bpffsRoot, "snowgate-test-"+testenv.RandomName(tb))
	tb.Cleanup(func() {
		if err := Uninstall(p); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return p
}

// ConnSlot is the sg_conns slot (the key of that array map) where the
// programs record a connection from peer when the slot is free.
func ConnSlot(peer netip.AddrPort) uint32 {
	return connSlot(snowgateSgTupleKey{Addr: ip6Words(peer.Addr().WithZone("")), Port: htons(peer.Port())})
}
