package redirect

// Test helpers for the integration tests of this package: the actions of the fixture's client, a testenv.Session in
// the agents' cgroup and a private network namespace (testenv has the
// cgroups, namespaces and client processes).

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/snowgate/snowgate/internal/testenv"
)

// clientTimeoutSec bounds each blocking step of a client action (connect,
// send, receive) unless the action says otherwise.
const clientTimeoutSec = 10

// connectAction connects a socket of network (tcp4, tcp6, mptcp4, udp4,
// udplite4...) to dst and keeps it as the session's open socket; nothing is
// sent or read.
func connectAction(network, dst string) testenv.ClientAction {
	return testenv.ClientAction{Op: testenv.OpConnect, Network: network, Addr: dst, Hold: true, TimeoutSec: clientTimeoutSec}
}

// connectActionWithin is connectAction with each step bounded by secs.
func connectActionWithin(network, dst string, secs int) testenv.ClientAction {
	a := connectAction(network, dst)
	a.TimeoutSec = secs
	return a
}

// fastOpenAction connects to dst through sendto(MSG_FASTOPEN) and keeps the
// socket open.
func fastOpenAction(network, dst string) testenv.ClientAction {
	return testenv.ClientAction{Op: testenv.OpFastOpen, Network: network, Addr: dst, Send: "hello", Hold: true, TimeoutSec: clientTimeoutSec}
}

// sendtoAction sends one unconnected datagram to dst.
func sendtoAction(network, dst string) testenv.ClientAction {
	return testenv.ClientAction{Op: testenv.OpSendto, Network: network, Addr: dst, Send: "x", TimeoutSec: clientTimeoutSec}
}

// dnsAction sends "query" to the resolver (udp4, or udp6 for a bracketed
// address) and waits for the reply: From and Received.
func dnsAction(resolver string) testenv.ClientAction {
	network := "udp4"
	if strings.HasPrefix(resolver, "[") {
		network = "udp6"
	}
	return testenv.ClientAction{Op: testenv.OpDNSUnconnected, Network: network, Addr: resolver, Send: "query", TimeoutSec: clientTimeoutSec}
}

var (
	// rawSocketAction creates a raw ICMP socket.
	rawSocketAction = testenv.ClientAction{Op: testenv.OpSocket, Family: unix.AF_INET, Type: unix.SOCK_RAW, Proto: unix.IPPROTO_ICMP}
	// peerAction is getpeername of the session's open socket.
	peerAction = testenv.ClientAction{Op: testenv.OpPeer}
	// closeAction closes the session's open socket.
	closeAction = testenv.ClientAction{Op: testenv.OpClose}
)

// redirectedConnect connects f's client to dst through the redirect (the
// client's previous connection is closed) and checks both ends: the
// client's getpeername shows dst, and r's look-up of the peer the gateway
// accepted finds dst with the client's cgroup and pid. It returns the
// client's result, the accepted connection (the caller closes it) and its
// peer.
func redirectedConnect(t *testing.T, f *redirectFixture, r *Redirect, dst string) (testenv.ClientResult, net.Conn, netip.AddrPort) {
	t.Helper()
	rep := f.client.Do(t, connectAction("tcp4", dst))
	if rep.Err != "" {
		t.Fatalf("connect: %s", rep.Err)
	}
	if rep.Peer != dst {
		t.Errorf("getpeername %s, want %s", rep.Peer, dst)
	}
	conn := acceptOn(t, f.gw.tcp)
	peer := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	want := Origin{Dst: netip.MustParseAddrPort(dst), CgroupID: f.cg.ID, PID: uint32(f.client.Pid)}
	if o, err := r.Lookup(peer); err != nil || o != want {
		t.Errorf("lookup %v = %+v, %v; want %+v", peer, o, err, want)
	}
	return rep, conn, peer
}

// clientCookie is the socket cookie of the client's socket whose local
// address is local (as the client reported it).
func clientCookie(t *testing.T, pid int, local string) uint64 {
	t.Helper()
	fd := clientSocket(t, pid, local)
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		t.Fatalf("SO_COOKIE: %v", err)
	}
	return cookie
}
