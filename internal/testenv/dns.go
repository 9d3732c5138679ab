package testenv

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNSServer runs a real DNS server with handler h on UDP and TCP at one
// loopback port (127.0.0.1) of ns, or of the test's own namespace when ns is
// nil, and returns that address once both serve. It shuts down when the test
// ends.
func DNSServer(tb testing.TB, ns *Netns, h dns.Handler) netip.AddrPort {
	tb.Helper()
	listenPacket, listen := net.ListenPacket, net.Listen
	if ns != nil {
		listenPacket, listen = ns.ListenPacket, ns.Listen
	}
	pc, err := listenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	// TCP on the same port: resolvers retry a truncated answer over TCP to
	// the same address.
	ln, err := listen("tcp4", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		tb.Fatal(err)
	}
	var ready sync.WaitGroup
	ready.Add(2)
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Net: "udp", Handler: h, NotifyStartedFunc: ready.Done},
		{Listener: ln, Net: "tcp", Handler: h, NotifyStartedFunc: ready.Done},
	} {
		go func() { _ = srv.ActivateAndServe() }()
		tb.Cleanup(func() { _ = srv.Shutdown() })
	}
	ready.Wait()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// DNSAnswers is a DNS handler with fixed answers by query name (fully
// qualified, lower case: "example.com."), whatever the query type; other
// names get NXDOMAIN.
func DNSAnswers(answers map[string][]dns.RR) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		if rrs, ok := answers[strings.ToLower(req.Question[0].Name)]; ok {
			m.Answer = rrs
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
}
