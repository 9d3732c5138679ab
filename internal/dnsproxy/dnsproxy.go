// Package dnsproxy is the DNS forwarder the agents' redirected queries reach.
// It forwards every query unchanged to the host's resolvers and relays the
// answer unchanged, with one addition: before it releases an answer that
// holds addresses of a Snowflake name, it hands them to a Learn hook
// (`snowgate run` records them in the pinned BPF map of
// redirect.SnowflakeAddrs, which the gateway's domain-fronting check reads).
// When the hook fails, the client gets SERVFAIL: an answer is never released
// unlearned. Configured static answers stand in for names that do not
// resolve (the demo's demo.snowflakecomputing.com).
//
// Resolution of other names must never break: every other query, type and
// option passes through, truncated UDP answers keep their TC bit so clients
// retry over TCP (which is forwarded over TCP), and an upstream that fails
// gives SERVFAIL rather than silence.
package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// DefaultTimeout bounds one upstream exchange.
const DefaultTimeout = 5 * time.Second

// DefaultStaticTTL is the TTL of static answers.
const DefaultStaticTTL = 60 * time.Second

// DefaultResolvConf is where the upstream resolvers are read from when none
// are configured.
const DefaultResolvConf = "/etc/resolv.conf"

// LearnFunc receives the addresses of a Snowflake name before the answer is
// released. name is the Snowflake name (lower case, no trailing dot); ttl is
// the smallest TTL among the address records. An error turns the answer into
// SERVFAIL.
type LearnFunc func(ctx context.Context, name string, addrs []netip.Addr, ttl time.Duration) error

// Config configures a Forwarder.
type Config struct {
	// Upstreams are resolver addresses, "ip:port". Empty: read ResolvConf.
	Upstreams []string
	// ResolvConf is read when Upstreams is empty; default DefaultResolvConf.
	ResolvConf string
	// Timeout bounds one upstream exchange; default DefaultTimeout.
	Timeout time.Duration
	// Domains are the Snowflake domains; answers for names under them (or
	// whose CNAME chain passes through them) go to Learn.
	Domains []string
	// Learn is called for Snowflake addresses before the answer goes out;
	// nil learns nothing.
	Learn LearnFunc
	// Static answers A and AAAA queries for these names when the upstream
	// answers NXDOMAIN or no data, or fails.
	Static map[string][]netip.Addr
	// StaticTTL is the TTL of static answers; default DefaultStaticTTL.
	StaticTTL time.Duration
	// Logger receives failures; default slog.Default().
	Logger *slog.Logger
}

// Forwarder is a DNS handler that forwards and learns. Serve it with
// ListenAndServe, or with any miekg/dns server.
type Forwarder struct {
	upstreams []string
	timeout   time.Duration
	domains   []string
	learn     LearnFunc
	static    map[string][]netip.Addr
	staticTTL uint32
	log       *slog.Logger
}

// New returns a forwarder for cfg.
func New(cfg Config) (*Forwarder, error) {
	f := &Forwarder{
		timeout: cfg.Timeout, learn: cfg.Learn, log: cfg.Logger,
		static: map[string][]netip.Addr{},
	}
	if f.timeout <= 0 {
		f.timeout = DefaultTimeout
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	ttl := cfg.StaticTTL
	if ttl <= 0 {
		ttl = DefaultStaticTTL
	}
	f.staticTTL = uint32(ttl / time.Second)
	for _, u := range cfg.Upstreams {
		ap, err := netip.ParseAddrPort(u)
		if err != nil {
			return nil, fmt.Errorf("dns forwarder: upstream %q: %w", u, err)
		}
		f.upstreams = append(f.upstreams, ap.String())
	}
	if len(f.upstreams) == 0 {
		path := cfg.ResolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		rc, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("dns forwarder: read upstreams: %w", err)
		}
		for _, s := range rc.Servers {
			if ip, err := netip.ParseAddr(s); err == nil {
				f.upstreams = append(f.upstreams, netip.AddrPortFrom(ip.Unmap(), portOf(rc.Port)).String())
			}
		}
		if len(f.upstreams) == 0 {
			return nil, fmt.Errorf("dns forwarder: no nameserver in %s", path)
		}
	}
	for _, d := range cfg.Domains {
		f.domains = append(f.domains, normalize(d))
	}
	for name, addrs := range cfg.Static {
		f.static[normalize(name)] = append([]netip.Addr(nil), addrs...)
	}
	return f, nil
}

func portOf(s string) uint16 {
	if p, err := strconv.ParseUint(s, 10, 16); err == nil && p != 0 {
		return uint16(p)
	}
	return 53
}

// normalize lower-cases a name and drops its trailing dot.
func normalize(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// Upstreams returns the resolvers queries go to.
func (f *Forwarder) Upstreams() []string { return append([]string(nil), f.upstreams...) }

// IsSnowflake reports whether name is one of the domains or under one.
func (f *Forwarder) IsSnowflake(name string) bool {
	n := normalize(name)
	for _, d := range f.domains {
		if n == d || strings.HasSuffix(n, "."+d) {
			return true
		}
	}
	return false
}

// ServeDNS implements dns.Handler.
func (f *Forwarder) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	resp := f.Resolve(context.Background(), network, req)
	if network == "udp" {
		resp.Truncate(udpSize(req))
	}
	if err := w.WriteMsg(resp); err != nil {
		f.log.Debug("dns: write reply", "client", w.RemoteAddr().String(), "err", err)
	}
}

func udpSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil && opt.UDPSize() > dns.MinMsgSize {
		return int(opt.UDPSize())
	}
	return dns.MinMsgSize
}

// Resolve answers req as the forwarder would over network ("udp" or "tcp"):
// the upstream's answer (learned first when it names Snowflake addresses),
// a static answer, or SERVFAIL. It always returns a reply to req.
func (f *Forwarder) Resolve(ctx context.Context, network string, req *dns.Msg) *dns.Msg {
	if len(req.Question) != 1 {
		return reply(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	name := normalize(q.Name)
	resp, err := f.exchange(ctx, network, req)
	if err != nil {
		f.log.Warn("dns: upstream failed", "name", name, "type", dns.TypeToString[q.Qtype], "err", err)
	}
	if static, ok := f.staticAnswer(req, resp, err); ok {
		resp, err = static, nil
	}
	if err != nil {
		return reply(req, dns.RcodeServerFailure)
	}
	if snowName, addrs, ttl := f.snowflakeAddrs(name, resp); len(addrs) > 0 && f.learn != nil {
		lctx, cancel := context.WithTimeout(ctx, f.timeout)
		lerr := f.learn(lctx, snowName, addrs, ttl)
		cancel()
		if lerr != nil {
			f.log.Error("dns: could not record Snowflake addresses; answering SERVFAIL", "name", snowName, "err", lerr)
			return reply(req, dns.RcodeServerFailure)
		}
	}
	return resp
}

// exchange sends req to each upstream in turn until one answers.
func (f *Forwarder) exchange(ctx context.Context, network string, req *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: f.timeout, UDPSize: dns.MaxMsgSize}
	var errs []error
	for _, up := range f.upstreams {
		ectx, cancel := context.WithTimeout(ctx, f.timeout)
		resp, _, err := c.ExchangeContext(ectx, req, up)
		cancel()
		if err == nil && resp != nil {
			if resp.Id != req.Id {
				resp.Id = req.Id
			}
			// SERVFAIL and REFUSED from one resolver: try the next one.
			if (resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused) && up != f.upstreams[len(f.upstreams)-1] {
				errs = append(errs, fmt.Errorf("%s: %s", up, dns.RcodeToString[resp.Rcode]))
				continue
			}
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
	}
	return nil, errors.Join(errs...)
}

// staticAnswer builds the static reply for a configured name whose upstream
// answer is NXDOMAIN, empty or missing.
func (f *Forwarder) staticAnswer(req, resp *dns.Msg, upErr error) (*dns.Msg, bool) {
	q := req.Question[0]
	addrs, ok := f.static[normalize(q.Name)]
	if !ok || q.Qclass != dns.ClassINET {
		return nil, false
	}
	if upErr == nil && resp != nil && !(resp.Rcode == dns.RcodeNameError || resp.Rcode == dns.RcodeServerFailure ||
		(resp.Rcode == dns.RcodeSuccess && len(resp.Answer) == 0)) {
		return nil, false // it resolves: the real answer wins
	}
	m := reply(req, dns.RcodeSuccess)
	m.Authoritative = true
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: f.staticTTL}
		switch {
		case a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return m, true
}

// snowflakeAddrs returns the addresses in resp's answer when the query name,
// or a name in its CNAME chain, is a Snowflake name. CNAME'd addresses are
// attributed to the first Snowflake name of the chain.
func (f *Forwarder) snowflakeAddrs(qname string, resp *dns.Msg) (string, []netip.Addr, time.Duration) {
	snowName := ""
	if f.IsSnowflake(qname) {
		snowName = qname
	}
	var addrs []netip.Addr
	var ttl uint32
	first := true
	add := func(ip net.IP, rrTTL uint32) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		addrs = append(addrs, a.Unmap())
		if first || rrTTL < ttl {
			ttl, first = rrTTL, false
		}
	}
	for _, rr := range resp.Answer {
		switch rr := rr.(type) {
		case *dns.CNAME:
			if snowName == "" && f.IsSnowflake(rr.Target) {
				snowName = normalize(rr.Target)
			}
		case *dns.A:
			add(rr.A, rr.Hdr.Ttl)
		case *dns.AAAA:
			add(rr.AAAA, rr.Hdr.Ttl)
		case *dns.HTTPS:
			addHints(rr.Value, rr.Hdr.Ttl, add)
		case *dns.SVCB:
			addHints(rr.Value, rr.Hdr.Ttl, add)
		}
	}
	if snowName == "" {
		return "", nil, 0
	}
	return snowName, addrs, time.Duration(ttl) * time.Second
}

func addHints(kvs []dns.SVCBKeyValue, ttl uint32, add func(net.IP, uint32)) {
	for _, kv := range kvs {
		switch h := kv.(type) {
		case *dns.SVCBIPv4Hint:
			for _, ip := range h.Hint {
				add(ip, ttl)
			}
		case *dns.SVCBIPv6Hint:
			for _, ip := range h.Hint {
				add(ip, ttl)
			}
		}
	}
}

// reply returns an empty reply to req with rcode, keeping EDNS when the
// query used it.
func reply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(max(opt.UDPSize(), dns.MinMsgSize), opt.Do())
	}
	return m
}

// ListenAndServe answers on addr over UDP and TCP until ctx ends. ready, if
// not nil, is called once both listeners are bound.
func (f *Forwarder) ListenAndServe(ctx context.Context, addr string, ready func(udp, tcp net.Addr)) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("dns forwarder: listen udp %s: %w", addr, err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns forwarder: listen tcp %s: %w", addr, err)
	}
	return f.Serve(ctx, pc, ln, ready)
}

// Serve answers on the given sockets until ctx ends, then shuts both down.
func (f *Forwarder) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener, ready func(udp, tcp net.Addr)) error {
	var started atomic.Int32
	notify := func() {
		if started.Add(1) == 2 && ready != nil {
			ready(pc.LocalAddr(), ln.Addr())
		}
	}
	udp := &dns.Server{PacketConn: pc, Net: "udp", Handler: f, NotifyStartedFunc: notify}
	tcp := &dns.Server{Listener: ln, Net: "tcp", Handler: f, NotifyStartedFunc: notify,
		ReadTimeout: f.timeout, WriteTimeout: f.timeout}
	errc := make(chan error, 2)
	go func() { errc <- udp.ActivateAndServe() }()
	go func() { errc <- tcp.ActivateAndServe() }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("dns forwarder: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	_ = udp.ShutdownContext(sctx)
	_ = tcp.ShutdownContext(sctx)
	return err
}
