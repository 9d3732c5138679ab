package redirect

// Test helpers for the integration tests of this package: the actions of the fixture's client, a testenv.Session in
// the agents' cgroup and a private network namespace (testenv has the
// cgroups, namespaces and client processes).

import (
	"strings"

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
