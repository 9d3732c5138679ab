package redirect

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/snowgate/snowgate/internal/dnsproxy"
	"github.com/snowgate/snowgate/internal/testenv"
)

// learnStep is one Learn call.
type learnStep struct {
	addrs []string
	ttl   time.Duration
}

func parseAddrs(t *testing.T, ss []string) []netip.Addr {
	t.Helper()
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// TestSnowflakeAddrs checks the learned-address map: what counts as learned,
// expiry with the TTL (plus grace), and that a shorter TTL never shortens an
// entry.
func TestSnowflakeAddrs(t *testing.T) {
	testenv.RequireRoot(t)
	tests := []struct {
		name  string
		grace time.Duration
		steps []learnStep
		// wait is how long to wait after learning before checking.
		wait time.Duration
		want map[string]bool
	}{
		{
			name:  "IPv4, also as v4-mapped",
			grace: DefaultLearnGrace,
			steps: []learnStep{{[]string{"203.0.113.7", "203.0.113.17"}, time.Minute}},
			want:  map[string]bool{"203.0.113.7": true, "::ffff:203.0.113.7": true, "203.0.113.17": true, "203.0.113.8": false},
		},
		{
			name:  "IPv6",
			grace: DefaultLearnGrace,
			steps: []learnStep{{[]string{"2001:db8::7"}, time.Minute}},
			want:  map[string]bool{"2001:db8::7": true, "2001:db8::8": false, "203.0.113.7": false},
		},
		{
			name:  "unspecified addresses are never learned",
			grace: DefaultLearnGrace,
			steps: []learnStep{{[]string{"0.0.0.0", "::"}, time.Minute}},
			want:  map[string]bool{"0.0.0.0": false, "::": false},
		},
		{
			name:  "TTL 0 lasts the grace period",
			grace: time.Hour,
			steps: []learnStep{{[]string{"203.0.113.9"}, 0}},
			wait:  1500 * time.Millisecond,
			want:  map[string]bool{"203.0.113.9": true},
		},
		{
			name:  "expires with the TTL",
			steps: []learnStep{{[]string{"203.0.113.10"}, time.Second}},
			wait:  1500 * time.Millisecond,
			want:  map[string]bool{"203.0.113.10": false},
		},
		{
			name:  "a shorter TTL does not shorten an entry",
			steps: []learnStep{{[]string{"203.0.113.11"}, time.Hour}, {[]string{"203.0.113.11"}, time.Second}},
			wait:  1500 * time.Millisecond,
			want:  map[string]bool{"203.0.113.11": true},
		},
		{
			name:  "a longer TTL extends an entry",
			steps: []learnStep{{[]string{"203.0.113.12"}, time.Second}, {[]string{"203.0.113.12"}, time.Hour}},
			wait:  1500 * time.Millisecond,
			want:  map[string]bool{"203.0.113.12": true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenSnowflakeAddrs(NewTestPinDir(t))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.SetGrace(tc.grace)
			for _, st := range tc.steps {
				if err := s.Learn(parseAddrs(t, st.addrs), st.ttl); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(tc.wait)
			for a, want := range tc.want {
				if got := s.Contains(netip.MustParseAddr(a)); got != want {
					t.Errorf("Contains(%s) = %v, want %v", a, got, want)
				}
			}
			list, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range list {
				if !tc.want[l.Addr.String()] {
					t.Errorf("List has %v (TTL %v, expires in %v), not expected to be valid", l.Addr, l.TTL, l.ExpiresIn)
				}
			}
		})
	}
}

// TestSnowflakeAddrsPinned checks that learned addresses survive a daemon
// restart (the map is pinned and reopened), that Install shares the map,
// and that the map stays bounded.
func TestSnowflakeAddrsPinned(t *testing.T) {
	testenv.RequireRoot(t)
	f := newRedirectFixture(t)
	first, err := OpenSnowflakeAddrs(f.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("203.0.113.20")
	if err := first.Learn([]netip.Addr{a}, time.Hour); err != nil {
		t.Fatal(err)
	}
	first.Close()

	// The daemon restarts: the redirect is installed again and the map
	// opened anew.
	r := f.install(t)
	defer r.Close()
	second, err := OpenSnowflakeAddrs(f.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Contains(a) {
		t.Fatalf("%v learned before the restart is gone", a)
	}
	list, err := second.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Addr != a || list[0].TTL != time.Hour || list[0].ExpiresIn <= time.Hour {
		t.Errorf("List() = %+v, want %v with TTL 1h expiring after more than 1h (TTL + grace)", list, a)
	}

	// Bounded: more distinct answers than the map holds evict the oldest.
	var many []netip.Addr
	for i := range MaxLearnedAddrs + 256 {
		many = append(many, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if err := second.Learn(many, time.Hour); err != nil {
		t.Fatal(err)
	}
	list, err = second.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) > MaxLearnedAddrs {
		t.Errorf("%d entries, want at most %d", len(list), MaxLearnedAddrs)
	}
	if last := many[len(many)-1]; !second.Contains(last) {
		t.Errorf("the last learned address %v was evicted", last)
	}

	// A query or connection in flight at shutdown meets a closed handle:
	// Learn fails (the listener answers SERVFAIL) and Contains says yes
	// (the fronting check refuses), never a panic.
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if err := second.Learn([]netip.Addr{a}, time.Hour); err == nil {
		t.Error("Learn on a closed handle succeeded")
	}
	if !second.Contains(netip.MustParseAddr("192.0.2.99")) {
		t.Error("Contains on a closed handle reported false: the fronting check would pass through")
	}
}

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDNSLearnThroughRedirect sends the client's queries through the real
// DNS redirect to the real DNS listener (dnsproxy) and checks that the
// addresses of Snowflake names are in the pinned map before the client gets
// the answer (the listener's learn step is held while the test looks: the
// entry is there and the client has no answer yet), and that other names
// resolve and are not learned.
func TestDNSLearnThroughRedirect(t *testing.T) {
	testenv.RequireRoot(t)
	f := newRedirectFixture(t)
	// The host's resolver as the DNS listener sees it: fixed answers on the
	// loopback of the test's own namespace, where the listener's upstream
	// queries go (the listener runs in the test process).
	up := testenv.DNSServer(t, nil, testenv.DNSAnswers(map[string][]dns.RR{
		"xy12345.snowflakecomputing.com.": {rr(t, "xy12345.snowflakecomputing.com. 120 IN A 203.0.113.77")},
		"alias.example.net.": {
			rr(t, "alias.example.net. 300 IN CNAME ab98765.snowflakecomputing.com."),
			rr(t, "ab98765.snowflakecomputing.com. 60 IN A 203.0.113.78"),
		},
		"example.com.": {rr(t, "example.com. 300 IN A 198.51.100.7")},
	}))
	learned, err := OpenSnowflakeAddrs(f.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer learned.Close()

	// The learn step: the real map first, then hold the answer until the
	// test has looked.
	type held struct {
		addrs   []netip.Addr
		release chan struct{}
	}
	learning := make(chan held)
	fwd, err := dnsproxy.New(dnsproxy.Config{
		Upstreams: []string{up.String()},
		Domains:   []string{"snowflakecomputing.com"},
		Timeout:   30 * time.Second,
		Learn: func(ctx context.Context, _ string, addrs []netip.Addr, ttl time.Duration) error {
			if err := learned.Learn(addrs, ttl); err != nil {
				return err
			}
			h := held{addrs: addrs, release: make(chan struct{})}
			select {
			case learning <- h:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case <-h.release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		pc net.PacketConn
		ln net.Listener
	)
	if err := f.client.Netns.Do(func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", pc.LocalAddr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- fwd.Serve(ctx, pc, ln, nil) }()
	defer func() {
		cancel()
		<-served
	}()
	f.cfg.DNS = netip.MustParseAddrPort(pc.LocalAddr().String())
	r := f.install(t)
	defer r.Close()

	tests := []struct {
		name, network, qname string
		wantAnswer           string
		// learn: the addresses of a Snowflake name; empty for others.
		learn []string
	}{
		{name: "snowflake name, udp", network: "udp", qname: "xy12345.snowflakecomputing.com", wantAnswer: "NOERROR 203.0.113.77", learn: []string{"203.0.113.77"}},
		{name: "snowflake name behind a CNAME, tcp", network: "tcp", qname: "alias.example.net", wantAnswer: "NOERROR 203.0.113.78", learn: []string{"203.0.113.78"}},
		{name: "other name, udp", network: "udp", qname: "example.com", wantAnswer: "NOERROR 198.51.100.7"},
		{name: "other name, tcp", network: "tcp", qname: "example.com", wantAnswer: "NOERROR 198.51.100.7"},
		{name: "unknown name", network: "udp", qname: "nowhere.example.org", wantAnswer: "NXDOMAIN "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, err := r.Counters()
			if err != nil {
				t.Fatal(err)
			}
			replies := make(chan testenv.ClientResult, 1)
			go func() {
				replies <- f.client.Do(t, testenv.ClientAction{Op: testenv.OpResolve, Network: tc.network, Addr: "192.0.2.53:53", Name: tc.qname})
			}()
			if len(tc.learn) > 0 {
				var h held
				select {
				case h = <-learning:
				case rep := <-replies:
					t.Fatalf("the client got %+v before anything was learned", rep)
				case <-time.After(60 * time.Second):
					t.Fatal("the DNS listener learned nothing within 60s")
				}
				for _, a := range parseAddrs(t, tc.learn) {
					if !learned.Contains(a) {
						t.Errorf("%v is not in the map while the answer is held", a)
					}
				}
				select {
				case rep := <-replies:
					t.Errorf("the client got %+v while the answer was held", rep)
				default:
				}
				if fmt.Sprint(h.addrs) != fmt.Sprint(parseAddrs(t, tc.learn)) {
					t.Errorf("learned %v, want %v", h.addrs, tc.learn)
				}
				close(h.release)
			}
			var rep testenv.ClientResult
			select {
			case rep = <-replies:
			case h := <-learning:
				close(h.release)
				t.Fatalf("learned %v for a name that is not a Snowflake name", h.addrs)
			}
			if rep.Err != "" || rep.Received != tc.wantAnswer {
				t.Errorf("client got %+v, want answer %q", rep, tc.wantAnswer)
			}
			if rest, ok := strings.CutPrefix(tc.wantAnswer, "NOERROR "); ok && len(tc.learn) == 0 {
				for _, f := range strings.Split(rest, ",") {
					if a := netip.MustParseAddr(f); learned.Contains(a) {
						t.Errorf("%v of a non-Snowflake name was learned", a)
					}
				}
			}
			after, err := r.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if after["dns_redirected"] <= before["dns_redirected"] {
				t.Errorf("dns_redirected %d -> %d: the query did not go through the redirect", before["dns_redirected"], after["dns_redirected"])
			}
		})
	}
}
