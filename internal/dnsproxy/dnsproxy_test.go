package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/snowgate/snowgate/internal/testenv"
)

// upstream is a real authoritative-style DNS server on loopback, UDP and
// TCP, serving a small zone.
type upstream struct {
	addr    string
	mu      sync.Mutex
	lastOpt *dns.OPT // OPT of the last query seen
	block   chan struct{}
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{block: make(chan struct{})}
	u.addr = testenv.DNSServer(t, nil, u).String()
	t.Cleanup(func() { close(u.block) })
	return u
}

func rr(t testing.TB, s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (u *upstream) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	u.mu.Lock()
	u.lastOpt = req.IsEdns0()
	u.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(req)
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
	}
	q := req.Question[0]
	add := func(s string) {
		r, _ := dns.NewRR(s)
		m.Answer = append(m.Answer, r)
	}
	switch strings.ToLower(q.Name) {
	case "acme.snowflakecomputing.com.":
		switch q.Qtype {
		case dns.TypeA:
			add("acme.snowflakecomputing.com. 300 IN A 192.0.2.10")
			add("acme.snowflakecomputing.com. 120 IN A 192.0.2.11")
		case dns.TypeAAAA:
			add("acme.snowflakecomputing.com. 300 IN AAAA 2001:db8::10")
		}
	case "alias.snowflakecomputing.com.":
		add("alias.snowflakecomputing.com. 600 IN CNAME lb.example.net.")
		add("lb.example.net. 30 IN A 192.0.2.20")
	case "fronted.example.":
		add("fronted.example. 600 IN CNAME acme.snowflakecomputing.com.")
		add("acme.snowflakecomputing.com. 300 IN A 192.0.2.10")
	case "hints.snowflakecomputing.com.":
		add("hints.snowflakecomputing.com. 60 IN HTTPS 1 . alpn=h2 ipv4hint=192.0.2.30 ipv6hint=2001:db8::30")
	case "www.example.com.":
		add("www.example.com. 300 IN A 198.51.100.1")
		add("www.example.com. 300 IN MX 10 mail.example.com.")
	case "big.example.com.":
		for i := range 40 {
			add(fmt.Sprintf("big.example.com. 300 IN TXT \"%s-%02d\"", strings.Repeat("x", 40), i))
		}
	case "static-resolves.snowflakecomputing.com.":
		add("static-resolves.snowflakecomputing.com. 300 IN A 192.0.2.40")
	case "slow.example.com.":
		<-u.block
		return
	case "broken.example.com.":
		m.Rcode = dns.RcodeServerFailure
	default:
		m.Rcode = dns.RcodeNameError
	}
	if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// learned records what the hook was given: the gateway's BPF map writer
// stands here.
type learned struct {
	mu   sync.Mutex
	got  map[string][]netip.Addr
	ttls map[string]time.Duration
	fail map[string]bool
}

func (l *learned) learn(_ context.Context, name string, addrs []netip.Addr, ttl time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail[name] {
		return errors.New("bpf map full")
	}
	l.got[name] = append(l.got[name], addrs...)
	l.ttls[name] = ttl
	return nil
}

func (l *learned) addrs(name string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s []string
	for _, a := range l.got[name] {
		s = append(s, a.String())
	}
	sort.Strings(s)
	return s
}

// startForwarder runs a forwarder on loopback and returns its address.
func startForwarder(t testing.TB, cfg Config) string {
	t.Helper()
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- f.ListenAndServe(ctx, "127.0.0.1:0", func(udp, _ net.Addr) { addr <- udp.String() })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case a := <-addr:
		return a
	case err := <-done:
		t.Fatal(err)
	}
	return ""
}

func query(t testing.TB, network, addr, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(4096, true)
	}
	c := &dns.Client{Net: network, Timeout: 30 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s: %v", network, name, err)
	}
	return r
}

func answers(m *dns.Msg) []string {
	var s []string
	for _, r := range m.Answer {
		f := strings.Fields(r.String())
		s = append(s, f[3]+" "+strings.Join(f[4:], " "))
	}
	return s
}

func TestForwarder(t *testing.T) {
	up := startUpstream(t)
	l := &learned{got: map[string][]netip.Addr{}, ttls: map[string]time.Duration{}, fail: map[string]bool{"fail.snowflakecomputing.com": true}}
	addr := startForwarder(t, Config{
		Upstreams: []string{up.addr}, Timeout: 5 * time.Second,
		Domains: []string{"snowflakecomputing.com"}, Learn: l.learn,
		Static: map[string][]netip.Addr{
			"demo.snowflakecomputing.com":            {netip.MustParseAddr("169.254.77.2")},
			"static-resolves.snowflakecomputing.com": {netip.MustParseAddr("169.254.77.3")},
			"fail.snowflakecomputing.com":            {netip.MustParseAddr("169.254.77.4")},
		},
	})
	tests := []struct {
		name    string
		network string
		qname   string
		qtype   uint16
		rcode   int
		answers []string
		learn   string   // name the addresses are learned under
		learned []string // sorted
		ttl     time.Duration
	}{
		{"snowflake A", "udp", "acme.snowflakecomputing.com", dns.TypeA, dns.RcodeSuccess,
			[]string{"A 192.0.2.10", "A 192.0.2.11"}, "acme.snowflakecomputing.com", []string{"192.0.2.10", "192.0.2.11"}, 120 * time.Second},
		{"snowflake AAAA over TCP", "tcp", "ACME.snowflakecomputing.com", dns.TypeAAAA, dns.RcodeSuccess,
			[]string{"AAAA 2001:db8::10"}, "acme.snowflakecomputing.com", []string{"192.0.2.10", "192.0.2.11", "2001:db8::10"}, 300 * time.Second},
		{"cname out of the domain", "udp", "alias.snowflakecomputing.com", dns.TypeA, dns.RcodeSuccess,
			[]string{"CNAME lb.example.net.", "A 192.0.2.20"}, "alias.snowflakecomputing.com", []string{"192.0.2.20"}, 30 * time.Second},
		{"foreign name cnamed into the domain", "udp", "fronted.example", dns.TypeA, dns.RcodeSuccess,
			[]string{"CNAME acme.snowflakecomputing.com.", "A 192.0.2.10"}, "acme.snowflakecomputing.com", nil, 0},
		{"https hints", "udp", "hints.snowflakecomputing.com", dns.TypeHTTPS, dns.RcodeSuccess,
			[]string{"HTTPS 1 . alpn=\"h2\" ipv4hint=\"192.0.2.30\" ipv6hint=\"2001:db8::30\""}, "hints.snowflakecomputing.com", []string{"192.0.2.30", "2001:db8::30"}, time.Minute},
		{"other name passes", "udp", "www.example.com", dns.TypeA, dns.RcodeSuccess,
			[]string{"A 198.51.100.1", "MX 10 mail.example.com."}, "", nil, 0},
		{"other type passes", "udp", "www.example.com", dns.TypeMX, dns.RcodeSuccess,
			[]string{"A 198.51.100.1", "MX 10 mail.example.com."}, "", nil, 0},
		{"nxdomain passes", "udp", "nope.example.com", dns.TypeA, dns.RcodeNameError, nil, "", nil, 0},
		{"static answer", "udp", "demo.snowflakecomputing.com", dns.TypeA, dns.RcodeSuccess,
			[]string{"A 169.254.77.2"}, "demo.snowflakecomputing.com", []string{"169.254.77.2"}, time.Minute},
		{"static, no AAAA", "udp", "demo.snowflakecomputing.com", dns.TypeAAAA, dns.RcodeSuccess, nil, "", nil, 0},
		{"real answer beats static", "udp", "static-resolves.snowflakecomputing.com", dns.TypeA, dns.RcodeSuccess,
			[]string{"A 192.0.2.40"}, "static-resolves.snowflakecomputing.com", []string{"192.0.2.40"}, 300 * time.Second},
		{"hook fails: SERVFAIL, never the answer", "udp", "fail.snowflakecomputing.com", dns.TypeA, dns.RcodeServerFailure, nil, "", nil, 0},
		{"upstream SERVFAIL passes", "udp", "broken.example.com", dns.TypeA, dns.RcodeServerFailure, nil, "", nil, 0},
		{"upstream timeout: SERVFAIL", "udp", "slow.example.com", dns.TypeA, dns.RcodeServerFailure, nil, "", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := query(t, tt.network, addr, tt.qname, tt.qtype, false)
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
			}
			if got := answers(r); !reflect.DeepEqual(got, tt.answers) {
				t.Fatalf("answers %q, want %q", got, tt.answers)
			}
			if tt.learned != nil {
				if got := l.addrs(tt.learn); !reflect.DeepEqual(got, tt.learned) {
					t.Fatalf("learned %q for %s, want %q", got, tt.learn, tt.learned)
				}
				l.mu.Lock()
				ttl := l.ttls[tt.learn]
				l.mu.Unlock()
				if ttl != tt.ttl {
					t.Fatalf("ttl %v, want %v", ttl, tt.ttl)
				}
			}
		})
	}
	if got := l.addrs("www.example.com"); got != nil {
		t.Fatalf("learned a foreign name: %v", got)
	}
}

// TestTruncationAndEDNS: a UDP answer too big for the client comes back
// truncated with TC set, the TCP retry gets it whole, and EDNS options pass
// through to the upstream unchanged.
func TestTruncationAndEDNS(t *testing.T) {
	up := startUpstream(t)
	addr := startForwarder(t, Config{Upstreams: []string{up.addr}})
	r := query(t, "udp", addr, "big.example.com", dns.TypeTXT, false)
	if !r.Truncated || len(r.Answer) >= 40 {
		t.Fatalf("UDP without EDNS: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
	r = query(t, "tcp", addr, "big.example.com", dns.TypeTXT, false)
	if r.Truncated || len(r.Answer) != 40 {
		t.Fatalf("TCP: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
	r = query(t, "udp", addr, "big.example.com", dns.TypeTXT, true)
	if r.Truncated || len(r.Answer) != 40 {
		t.Fatalf("UDP with EDNS 4096: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
	up.mu.Lock()
	opt := up.lastOpt
	up.mu.Unlock()
	if opt == nil || opt.UDPSize() != 4096 || !opt.Do() {
		t.Fatalf("upstream saw OPT %v", opt)
	}
	if r.IsEdns0() == nil {
		t.Fatal("reply lost its OPT record")
	}
}

// TestLearnBeforeRelease: while the hook runs, the client has no answer.
func TestLearnBeforeRelease(t *testing.T) {
	up := startUpstream(t)
	entered, release := make(chan struct{}), make(chan struct{})
	addr := startForwarder(t, Config{
		Upstreams: []string{up.addr}, Domains: []string{"snowflakecomputing.com"},
		Learn: func(context.Context, string, []netip.Addr, time.Duration) error {
			close(entered)
			<-release
			return nil
		},
	})
	got := make(chan *dns.Msg, 1)
	go func() { got <- query(t, "udp", addr, "acme.snowflakecomputing.com", dns.TypeA, false) }()
	<-entered
	select {
	case <-got:
		t.Fatal("answer released before the addresses were learned")
	default:
	}
	close(release)
	if r := <-got; r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("%v", r)
	}
}

func TestUpstreamFailover(t *testing.T) {
	up := startUpstream(t)
	// A UDP port nobody listens on: the kernel refuses at once.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	addr := startForwarder(t, Config{Upstreams: []string{deadAddr, up.addr}, Timeout: 5 * time.Second})
	if r := query(t, "udp", addr, "www.example.com", dns.TypeA, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("failover: %v", r)
	}
	allDead := startForwarder(t, Config{Upstreams: []string{deadAddr}, Timeout: 5 * time.Second,
		Static: map[string][]netip.Addr{"demo.snowflakecomputing.com": {netip.MustParseAddr("169.254.77.2")}}})
	if r := query(t, "udp", allDead, "www.example.com", dns.TypeA, false); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("no upstream: %v", r)
	}
	if r := query(t, "tcp", allDead, "demo.snowflakecomputing.com", dns.TypeA, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("static without upstream: %v", r)
	}
}

func TestNewUpstreams(t *testing.T) {
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(rc, []byte("# test\nnameserver 127.0.0.53\nnameserver ::1\nsearch example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("search example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want []string
		err  bool
	}{
		{"explicit", Config{Upstreams: []string{"10.0.0.2:53", "[2001:db8::1]:5353"}}, []string{"10.0.0.2:53", "[2001:db8::1]:5353"}, false},
		{"resolv.conf", Config{ResolvConf: rc}, []string{"127.0.0.53:53", "[::1]:53"}, false},
		{"resolv.conf without nameservers", Config{ResolvConf: empty}, nil, true},
		{"missing resolv.conf", Config{ResolvConf: filepath.Join(dir, "nope")}, nil, true},
		{"bad upstream", Config{Upstreams: []string{"resolver.example:53"}}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := New(tt.cfg)
			if tt.err {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Upstreams(); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("upstreams %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzResolve(f *testing.F) {
	up := startUpstream(f)
	fw, err := New(Config{Upstreams: []string{up.addr}, Timeout: 5 * time.Second, Domains: []string{"snowflakecomputing.com"},
		Learn:  func(context.Context, string, []netip.Addr, time.Duration) error { return nil },
		Static: map[string][]netip.Addr{"demo.snowflakecomputing.com": {netip.MustParseAddr("169.254.77.2")}}})
	if err != nil {
		f.Fatal(err)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"acme.snowflakecomputing.com.", dns.TypeA}, {"demo.snowflakecomputing.com.", dns.TypeANY}, {"www.example.com.", dns.TypeMX}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, false)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, packet []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(packet); err != nil {
			return
		}
		if len(req.Question) == 1 && strings.HasPrefix(strings.ToLower(req.Question[0].Name), "slow.") {
			return // the test upstream never answers it
		}
		resp := fw.Resolve(context.Background(), "udp", req)
		if resp == nil || !resp.Response || resp.Id != req.Id {
			t.Fatalf("bad reply %v to %v", resp, req)
		}
		resp.Truncate(udpSize(req))
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("reply does not pack: %v", err)
		}
	})
}
