package testenv

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// sessionEnv marks the test binary re-executed as a Session: testenv's init
// reads ClientActions from stdin, one JSON object a line, and answers each
// with a ClientResult line on stdout until stdin closes.
const sessionEnv = "SNOWGATE_TESTENV_SESSION"

// Session is a client process that stays up and performs ClientActions one
// at a time, keeping a connected socket open between them (ClientAction.Hold):
// for tests that look at a connection from both ends while it lives (the
// gateway's look-up, getpeername after a program upgrade, a socket taken
// with pidfd_getfd), or that run many actions from one process. It is placed
// like any client (Proc: cgroup, network namespace, nobody unless Root) and
// ends with the test.
type Session struct {
	// Pid is the client's process id.
	Pid int
	// Netns is the namespace it runs in (Proc.Netns; nil: the test's).
	Netns *Netns
	proc  *Piped
}

// StartSession starts a session client placed by p and waits until it
// answers.
func StartSession(tb testing.TB, p Proc) *Session {
	tb.Helper()
	cmd := Command(tb, p, ExecutableCopy(tb), "-test.run=^$")
	// Async preemption signals would interrupt the client's blocking calls
	// (a connect with SO_SNDTIMEO is not restarted after a signal).
	cmd.Env = append(os.Environ(), sessionEnv+"=1", "GODEBUG=asyncpreemptoff=1")
	cmd.Stderr = os.Stderr
	proc := StartPiped(tb, cmd)
	s := &Session{Pid: cmd.Process.Pid, Netns: p.Netns, proc: proc}
	if r := s.Do(tb, ClientAction{Op: opPing}); !r.OK() {
		tb.Fatalf("session client: %v", r)
	}
	return s
}

// opPing answers at once: StartSession's proof of life.
const opPing = "ping"

// Do has the client perform a and returns its result. It fails the test if
// the client dies or does not answer within 60 seconds.
func (s *Session) Do(tb testing.TB, a ClientAction) ClientResult {
	tb.Helper()
	var r ClientResult
	s.proc.Call(tb, a, &r, 60*time.Second)
	return r
}

// runSessionProcess is the client side of a Session. It never returns.
func runSessionProcess() {
	runtime.LockOSThread()
	st := newClientState()
	err := ServePiped(os.Stdin, os.Stdout, func(a ClientAction, err error) ClientResult {
		var r ClientResult
		if err != nil {
			r.Err = "bad action: " + err.Error()
		} else if a.Op != opPing {
			r = st.run(a)
		}
		r.Op = a.Op
		r.PID, r.UID, r.GID = os.Getpid(), os.Getuid(), os.Getgid()
		return r
	})
	if err != nil {
		os.Exit(3)
	}
	st.closeHeld()
	os.Exit(0)
}

// reconnect connects one TCP socket twice: to Addr, which must fail, and
// then to Then.
func (a ClientAction) reconnect(s *clientState) ClientResult {
	first, family, typ, proto, err := a.endpoint()
	if err != nil {
		return ClientResult{Stage: "args", Err: err.Error()}
	}
	if typ != unix.SOCK_STREAM {
		return ClientResult{Stage: "args", Err: fmt.Sprintf("reconnect needs a TCP network, not %q", a.Network)}
	}
	second, err := netip.ParseAddrPort(a.Then)
	if err != nil {
		return ClientResult{Stage: "args", Err: err.Error()}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return fail("socket", err)
	}
	tv := unix.NsecToTimeval(a.timeout().Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	err = connectWait(fd, sockaddr(first, family), false, a.timeout())
	if err == nil {
		unix.Close(fd)
		return ClientResult{Stage: "connect", Err: "the first connect succeeded"}
	}
	firstErrno := fail("connect", err).Errno
	if err := connectWait(fd, sockaddr(second, family), false, a.timeout()); err != nil {
		unix.Close(fd)
		r := fail("connect", err)
		r.FirstErrno = firstErrno
		return r
	}
	r := ClientResult{FirstErrno: firstErrno}
	r.noteAddrs(fd)
	if a.Hold {
		s.hold(fd)
	} else {
		unix.Close(fd)
	}
	return r
}

// resolve sends one DNS A query and reports the rcode and the A records.
func (a ClientAction) resolve() ClientResult {
	if a.Network != "udp" && a.Network != "tcp" {
		return ClientResult{Stage: "args", Err: fmt.Sprintf("resolve over udp or tcp, not %q", a.Network)}
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(a.Name), dns.TypeA)
	c := &dns.Client{Net: a.Network, Timeout: a.timeout()}
	resp, _, err := c.Exchange(q, a.Addr)
	if err != nil {
		return fail("exchange", err)
	}
	var addrs []string
	for _, rr := range resp.Answer {
		if rec, ok := rr.(*dns.A); ok {
			addrs = append(addrs, rec.A.String())
		}
	}
	return ClientResult{Received: dns.RcodeToString[resp.Rcode] + " " + strings.Join(addrs, ",")}
}

// tlsHandshake runs a TLS handshake with server name Name to Addr.
func (a ClientAction) tlsHandshake() ClientResult {
	d := &net.Dialer{Timeout: a.timeout()}
	c, err := tls.DialWithDialer(d, "tcp", a.Addr, &tls.Config{ServerName: a.Name, InsecureSkipVerify: true}) //nolint:gosec // only the ClientHello matters
	if err != nil {
		return fail("handshake", err)
	}
	defer c.Close()
	return ClientResult{Peer: c.RemoteAddr().String()}
}
