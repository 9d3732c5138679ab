package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestGoResolver resolves through the forwarder with Go's own stub resolver,
// which queries A and AAAA in parallel, uses EDNS and falls back to TCP on a
// truncated answer, as agents' resolvers do.
func TestGoResolver(t *testing.T) {
	up := startUpstream(t)
	l := &learned{got: map[string][]netip.Addr{}, ttls: map[string]time.Duration{}, fail: map[string]bool{}}
	addr := startForwarder(t, Config{
		Upstreams: []string{up.addr}, Timeout: 5 * time.Second,
		Domains: []string{"snowflakecomputing.com"}, Learn: l.learn,
		Static: map[string][]netip.Addr{"demo.snowflakecomputing.com": {netip.MustParseAddr("169.254.77.2")}},
	})
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tests := []struct {
		name string
		host string
		want []string
	}{
		{"snowflake name", "acme.snowflakecomputing.com", []string{"192.0.2.10", "192.0.2.11", "2001:db8::10"}},
		{"static name", "demo.snowflakecomputing.com", []string{"169.254.77.2"}},
		{"other name", "www.example.com", []string{"198.51.100.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.LookupHost(ctx, tt.host)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("LookupHost = %v, want %v", got, tt.want)
			}
		})
	}
	if got := l.addrs("acme.snowflakecomputing.com"); len(got) != 3 {
		t.Fatalf("learned %v", got)
	}
	if _, err := r.LookupHost(ctx, "nope.example.com"); err == nil || !strings.Contains(err.Error(), "no such host") {
		t.Fatalf("NXDOMAIN: %v", err)
	}
	// 40 TXT records do not fit 1232 bytes of EDNS UDP: the answer comes
	// back truncated and the resolver retries over TCP.
	txt, err := r.LookupTXT(ctx, "big.example.com")
	if err != nil || len(txt) != 40 {
		t.Fatalf("LookupTXT: %d records, %v", len(txt), err)
	}
}
