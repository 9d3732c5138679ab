package redirect_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/certs"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/testenv"
)

// TestFrontingRefusalUsesLearnedAddrs runs the real gateway behind the real
// redirect with its domain-fronting check reading the pinned learned-address
// map, as `snowgate run` wires it: TLS with a foreign server name to an
// address the DNS listener learned for a Snowflake name is refused, even
// though foreign names are otherwise passed through; once the entry has
// expired, or for an address never learned, the same handshake is passed
// through.
func TestFrontingRefusalUsesLearnedAddrs(t *testing.T) {
	testenv.RequireRoot(t)
	env, ln := redirect.NewAgentEnv(t, func() (net.Listener, error) { return net.Listen("tcp4", "127.0.0.1:0") })
	learned, err := redirect.OpenSnowflakeAddrs(env.PinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer learned.Close()
	ca, err := certs.NewCA(certs.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	minter, err := certs.NewMinter(ca, certs.MinterOptions{Domains: []string{"snowflakecomputing.com"}})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{
		Origins:        env.Redirect,
		Minter:         minter,
		Domains:        []string{"snowflakecomputing.com"},
		OtherTLS:       gateway.OtherTLSPassthrough,
		SnowflakeAddrs: learned.Contains,
		// Passthrough would dial the stand-in address from the test's own
		// namespace: refuse every such dial, the decision is what counts.
		Dialer: &net.Dialer{Timeout: 5 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
			return fmt.Errorf("test: no dial to %s outside the test's namespace", address)
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ctx, ln) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = gw.Shutdown(sctx)
		cancel()
		<-served
	}()

	tests := []struct {
		name string
		addr string
		// learn, when set, is learned (with ttl and no grace) before the
		// handshake, wait later.
		learn       string
		ttl, wait   time.Duration
		wantRefused bool
	}{
		{name: "foreign name to a learned Snowflake address", addr: "203.0.113.77:443", learn: "203.0.113.77", ttl: time.Hour, wantRefused: true},
		{name: "foreign name to an address never learned", addr: "203.0.113.88:443"},
		{name: "foreign name to a Snowflake address whose entry expired", addr: "203.0.113.79:443", learn: "203.0.113.79", ttl: time.Second, wait: 1500 * time.Millisecond},
	}
	learned.SetGrace(0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.learn != "" {
				if err := learned.Learn([]netip.Addr{netip.MustParseAddr(tc.learn)}, tc.ttl); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(tc.wait)
			refused, passed := gw.Stats.Refused.Load(), gw.Stats.PassedThrough.Load()
			if errText := env.TLS(t, tc.addr, "example.com"); errText == "" {
				t.Fatalf("TLS to %s with a foreign name completed a handshake", tc.addr)
			}
			// The gateway counts before it closes; the client's EOF may
			// still overtake the counter's visibility here.
			deadline := time.Now().Add(30 * time.Second)
			for gw.Stats.Refused.Load() == refused && gw.Stats.PassedThrough.Load() == passed {
				if time.Now().After(deadline) {
					t.Fatal("the gateway made no decision within 30s")
				}
				time.Sleep(10 * time.Millisecond)
			}
			gotRefused := gw.Stats.Refused.Load() - refused
			gotPassed := gw.Stats.PassedThrough.Load() - passed
			if tc.wantRefused && (gotRefused != 1 || gotPassed != 0) {
				t.Errorf("refused %d, passed through %d: want the connection refused (fronting)", gotRefused, gotPassed)
			}
			if !tc.wantRefused && (gotRefused != 0 || gotPassed != 1) {
				t.Errorf("refused %d, passed through %d: want it passed through", gotRefused, gotPassed)
			}
		})
	}
}
