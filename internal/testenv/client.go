package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// clientEnv carries a ClientAction to the test binary re-executed as a
// client: testenv's init performs the action, prints a ClientResult as JSON
// on stdout and exits.
const clientEnv = "SNOWGATE_TESTENV_CLIENT"

// Client operations (ClientAction.Op).
const (
	// OpConnect: socket, optional socket options, connect (blocking or
	// not), getsockname/getpeername, write Send, read until EOF.
	OpConnect = "connect"
	// OpFastOpen: TCP Fast Open through sendto(MSG_FASTOPEN) carrying Send.
	OpFastOpen = "tfo-sendto"
	// OpFastOpenConnect: TCP_FASTOPEN_CONNECT, then connect and write.
	OpFastOpenConnect = "tfo-connect"
	// OpIOUringConnect: the connect is an io_uring IORING_OP_CONNECT.
	OpIOUringConnect = "io_uring-connect"
	// OpSendto: one unconnected datagram (sendto) to Addr.
	OpSendto = "sendto"
	// OpSendmmsg: unconnected datagrams to Addr through sendmmsg.
	OpSendmmsg = "sendmmsg"
	// OpDNSUnconnected: sendto the resolver, recvfrom the answer.
	OpDNSUnconnected = "dns-sendto"
	// OpDNSConnected: connect a UDP socket to the resolver, send, receive.
	OpDNSConnected = "dns-connected"
	// OpSocket: only create a socket (Family, Type, Proto).
	OpSocket = "socket"
	// OpWriteFile: write Data to Path (e.g. own pid to a cgroup.procs).
	OpWriteFile = "write-file"
	// OpUnshare: run Nested in a new user and network namespace
	// (`unshare -Urn`).
	OpUnshare = "unshare"
	// OpGoDial: Go's net.Dialer (the runtime's own poller and connect
	// path), RemoteAddr as Peer, write Send, read until EOF.
	OpGoDial = "go-dial"
	// OpReceivedFDConnect: listen on the unix socket Path, receive one
	// socket by SCM_RIGHTS, connect it to Addr (a socket created by
	// another process, in another cgroup, handed to the client).
	OpReceivedFDConnect = "received-fd-connect"
	// OpConnectLoop: connect to Addr and read until EOF, again and again,
	// until Count connects are done and MinDurationMS has passed. Done and
	// Failed count them; Err is the first failure. A connect succeeds when
	// what it read contains Expect.
	OpConnectLoop = "connect-loop"
	// OpReconnect: one TCP socket connects to Addr, which must fail, then
	// to Then (Linux lets a socket connect again after a failed connect).
	// FirstErrno is the first connect's error. It never reads; with Hold
	// a Session keeps the socket.
	OpReconnect = "reconnect"
	// OpResolve: a real DNS A query for Name to Addr over Network "udp" or
	// "tcp" (a connected socket, as Go's and glibc's resolvers use).
	// Received is the rcode and the A records: "NOERROR 192.0.2.1,...".
	OpResolve = "resolve"
	// OpTLSHandshake: connect to Addr and run a TLS handshake with server
	// name Name, the server's certificate not verified (what is under test
	// happens before, or regardless of, the server's answer). Peer is the
	// connection's remote address.
	OpTLSHandshake = "tls-handshake"
	// OpPeer: getpeername of the socket a Session holds (see Hold).
	OpPeer = "peer"
	// OpClose: close the socket a Session holds.
	OpClose = "close"
)

// ClientAction is one thing a client process does.
type ClientAction struct {
	Op string `json:"op"`
	// Network for socket-creating ops: tcp4, tcp6, mptcp4, mptcp6, udp4,
	// udp6, udplite4, udplite6, icmp4 (an ICMP datagram socket).
	Network string `json:"network,omitempty"`
	// Addr is the destination, e.g. 203.0.113.10:443 or
	// [::ffff:203.0.113.10]:443.
	Addr string `json:"addr,omitempty"`
	// Send is written after connecting (or carried by the datagram).
	Send string `json:"send,omitempty"`
	// NonBlocking connects a non-blocking socket and waits with poll.
	NonBlocking bool `json:"nonblocking,omitempty"`
	// Mark sets SO_MARK before connecting; Transparent sets IP_TRANSPARENT;
	// BindToDevice sets SO_BINDTODEVICE. Their failures are reported in
	// SockoptErrnos and do not stop the connect.
	Mark         int    `json:"mark,omitempty"`
	Transparent  bool   `json:"transparent,omitempty"`
	BindToDevice string `json:"bind_to_device,omitempty"`
	// Family, Type, Proto for OpSocket.
	Family int `json:"family,omitempty"`
	Type   int `json:"type,omitempty"`
	Proto  int `json:"proto,omitempty"`
	// Path and Data for OpWriteFile; Data "$PID" is the client's pid.
	Path string `json:"path,omitempty"`
	Data string `json:"data,omitempty"`
	// MigrateTo, for OpConnect, is a cgroup directory the client moves
	// itself into (cgroup.procs) after creating its socket and before
	// connecting: a socket brought into the subtree from outside.
	MigrateTo string `json:"migrate_to,omitempty"`
	// Count, MinDurationMS and Expect drive OpConnectLoop.
	Count         int    `json:"count,omitempty"`
	MinDurationMS int    `json:"min_duration_ms,omitempty"`
	Expect        string `json:"expect,omitempty"`
	// Nested is the action OpUnshare runs.
	Nested *ClientAction `json:"nested,omitempty"`
	// Hold, for the ops that connect a socket (OpConnect, OpFastOpen,
	// OpFastOpenConnect, OpIOUringConnect, OpDNSConnected, OpReconnect),
	// stops after connecting (and writing Send): nothing is read, and the
	// connected socket stays open. In a Session it becomes the held socket, which
	// OpPeer and OpClose act on, replacing (and closing) the one held
	// before; a failed connect leaves the held socket alone.
	Hold bool `json:"hold,omitempty"`
	// Then is OpReconnect's second destination.
	Then string `json:"then,omitempty"`
	// Name is OpResolve's query name and OpTLSHandshake's server name.
	Name string `json:"name,omitempty"`
	// TimeoutSec bounds each blocking step (default 20).
	TimeoutSec int `json:"timeout_sec,omitempty"`
}

// ClientResult is what a client process reports.
type ClientResult struct {
	Op string `json:"op"`
	// Errno names the error that ended the action ("EPERM"); empty on
	// success. Stage says which step failed: socket, connect, send, recv,
	// write, io_uring_setup, unshare...
	Errno string `json:"errno,omitempty"`
	Err   string `json:"err,omitempty"`
	Stage string `json:"stage,omitempty"`
	// SockoptErrnos are the errors of optional socket options (SO_MARK ...)
	// by option name; absent when the option was set.
	SockoptErrnos map[string]string `json:"sockopt_errnos,omitempty"`
	// Local and Peer are getsockname and getpeername after connecting.
	Local string `json:"local,omitempty"`
	Peer  string `json:"peer,omitempty"`
	// From is the source address of a received datagram.
	From string `json:"from,omitempty"`
	// Received holds the bytes read back.
	Received string `json:"received,omitempty"`
	// Who ran it: ids, effective capabilities (hex, from /proc), cgroup
	// (as /proc/self/cgroup names it) and network namespace cookie.
	PID         int    `json:"pid"`
	UID         int    `json:"uid"`
	GID         int    `json:"gid"`
	CapEff      string `json:"cap_eff"`
	Cgroup      string `json:"cgroup"`
	NetnsCookie uint64 `json:"netns_cookie"`
	// Nested is the result of OpUnshare's nested action.
	Nested *ClientResult `json:"nested,omitempty"`
	// Done and Failed count OpConnectLoop's connects; Failures counts the
	// failed ones by errno name ("UNEXPECTED" when the connection worked
	// but did not carry Expect).
	Done     int            `json:"done,omitempty"`
	Failed   int            `json:"failed,omitempty"`
	Failures map[string]int `json:"failures,omitempty"`
	// FirstErrno is the error of OpReconnect's first connect.
	FirstErrno string `json:"first_errno,omitempty"`
}

// OK reports whether the action succeeded.
func (r ClientResult) OK() bool { return r.Errno == "" && r.Err == "" }

// String is a one-line summary for test failures.
func (r ClientResult) String() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// RunClient runs one action in a client process placed by p (nobody unless
// p.Root) and returns its result. It fails the test if the client crashes or
// does not answer within two minutes.
func RunClient(tb testing.TB, p Proc, a ClientAction) ClientResult {
	tb.Helper()
	r, err := StartClient(tb, p, a).Wait()
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// ClientProc is a running client process.
type ClientProc struct {
	cmd    *exec.Cmd
	out    bytes.Buffer
	errb   bytes.Buffer
	cancel context.CancelFunc
	action ClientAction
}

// StartClient starts a client process; Wait collects its result.
func StartClient(tb testing.TB, p Proc, a ClientAction) *ClientProc {
	tb.Helper()
	spec, err := json.Marshal(a)
	if err != nil {
		tb.Fatal(err)
	}
	bin := ExecutableCopy(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := Command(tb, p, bin, "-test.run=^$")
	// Command's launcher is not ctx-aware; kill the whole thing on timeout.
	c := &ClientProc{cmd: cmd, cancel: cancel, action: a}
	// Async preemption signals would interrupt the client's blocking calls
	// (a connect with SO_SNDTIMEO is not restarted after a signal).
	cmd.Env = append(os.Environ(), clientEnv+"="+string(spec), "GODEBUG=asyncpreemptoff=1")
	cmd.Stdout = &c.out
	cmd.Stderr = &c.errb
	if err := cmd.Start(); err != nil {
		cancel()
		tb.Fatalf("start client %s: %v", a.Op, err)
	}
	go func() {
		<-ctx.Done()
		if ctx.Err() == context.DeadlineExceeded {
			_ = cmd.Process.Kill()
		}
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = c.Wait2()
	})
	return c
}

// Pid is the client's process id (the launcher's, which becomes the
// client's through execve).
func (c *ClientProc) Pid() int { return c.cmd.Process.Pid }

var errWaited = errors.New("already waited")

// Wait2 waits for the process once; later calls return errWaited.
func (c *ClientProc) Wait2() error {
	if c.cmd.ProcessState != nil {
		return errWaited
	}
	defer c.cancel()
	return c.cmd.Wait()
}

// Wait waits for the client to exit and decodes its result.
func (c *ClientProc) Wait() (ClientResult, error) {
	werr := c.Wait2()
	if werr != nil && !errors.Is(werr, errWaited) {
		return ClientResult{}, fmt.Errorf("client %s: %v; stdout %q; stderr %q", c.action.Op, werr, c.out.String(), c.errb.String())
	}
	// The result is the last JSON line; the test framework may print more.
	lines := strings.Split(strings.TrimSpace(c.out.String()), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "{") {
			var r ClientResult
			if err := json.Unmarshal([]byte(lines[i]), &r); err != nil {
				return r, fmt.Errorf("client %s: result %q: %w", c.action.Op, lines[i], err)
			}
			return r, nil
		}
	}
	return ClientResult{}, fmt.Errorf("client %s: no result; stdout %q; stderr %q", c.action.Op, c.out.String(), c.errb.String())
}

// runClientProcess is the client side: perform the action, print the result,
// exit. Everything runs on the main thread, which is in the right network
// namespace like every other thread (the launcher switched before execve).
func runClientProcess(spec string) {
	runtime.LockOSThread()
	var a ClientAction
	var r ClientResult
	if err := json.Unmarshal([]byte(spec), &a); err != nil {
		r.Err = "bad action: " + err.Error()
	} else {
		r = newClientState().run(a)
	}
	r.Op = a.Op
	r.PID, r.UID, r.GID = os.Getpid(), os.Getuid(), os.Getgid()
	r.CapEff = procStatusField("CapEff")
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "0::"); ok {
				r.Cgroup = rest
			}
		}
	}
	if fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0); err == nil {
		r.NetnsCookie, _ = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		unix.Close(fd)
	}
	b, _ := json.Marshal(r)
	os.Stdout.Write(append(b, '\n'))
	os.Exit(0)
}

func procStatusField(name string) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func fail(stage string, err error) ClientResult {
	r := ClientResult{Stage: stage, Err: err.Error()}
	var errno unix.Errno
	if errors.As(err, &errno) {
		r.Errno = unix.ErrnoName(errno)
	}
	return r
}

func (a ClientAction) timeout() time.Duration {
	if a.TimeoutSec > 0 {
		return time.Duration(a.TimeoutSec) * time.Second
	}
	return 20 * time.Second
}

// endpoint parses Addr and maps Network to socket(2) arguments.
func (a ClientAction) endpoint() (ap netip.AddrPort, family, typ, proto int, err error) {
	if ap, err = netip.ParseAddrPort(a.Addr); err != nil {
		return ap, 0, 0, 0, err
	}
	family, typ, proto, err = socketArgs(a.Network)
	return ap, family, typ, proto, err
}

// socketArgs maps a Network name to socket(2) arguments.
func socketArgs(network string) (family, typ, proto int, err error) {
	family = unix.AF_INET
	if strings.HasSuffix(network, "6") {
		family = unix.AF_INET6
	}
	switch strings.TrimRight(network, "46") {
	case "tcp":
		return family, unix.SOCK_STREAM, 0, nil
	case "mptcp":
		return family, unix.SOCK_STREAM, unix.IPPROTO_MPTCP, nil
	case "udp":
		return family, unix.SOCK_DGRAM, 0, nil
	case "udplite":
		return family, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE, nil
	case "icmp":
		if family == unix.AF_INET6 {
			return family, unix.SOCK_DGRAM, unix.IPPROTO_ICMPV6, nil
		}
		return family, unix.SOCK_DGRAM, unix.IPPROTO_ICMP, nil
	}
	return 0, 0, 0, fmt.Errorf("unknown network %q", network)
}

func sockaddr(ap netip.AddrPort, family int) unix.Sockaddr {
	if family == unix.AF_INET {
		return &unix.SockaddrInet4{Addr: ap.Addr().Unmap().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// SockaddrString formats an inet socket address as netip.AddrPort does
// (v4-mapped addresses keep their ::ffff: form).
func SockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return fmt.Sprintf("%v", sa)
}

// clientState is what a client process keeps between actions: the socket
// it holds (Hold), or -1.
type clientState struct {
	held int
}

func newClientState() *clientState { return &clientState{held: -1} }

// hold makes fd the held socket, closing the one held before.
func (s *clientState) hold(fd int) {
	s.closeHeld()
	s.held = fd
}

func (s *clientState) closeHeld() {
	if s.held >= 0 {
		unix.Close(s.held)
		s.held = -1
	}
}

func (s *clientState) run(a ClientAction) ClientResult {
	switch a.Op {
	case OpPeer:
		pa, err := unix.Getpeername(s.held)
		if err != nil {
			return fail("getpeername", err)
		}
		return ClientResult{Peer: SockaddrString(pa)}
	case OpClose:
		s.closeHeld()
		return ClientResult{}
	case OpReconnect:
		return a.reconnect(s)
	case OpResolve:
		return a.resolve()
	case OpTLSHandshake:
		return a.tlsHandshake()
	case OpSocket:
		fd, err := unix.Socket(a.Family, a.Type|unix.SOCK_CLOEXEC, a.Proto)
		if err != nil {
			return fail("socket", err)
		}
		unix.Close(fd)
		return ClientResult{}
	case OpWriteFile:
		data := strings.ReplaceAll(a.Data, "$PID", strconv.Itoa(os.Getpid()))
		if err := os.WriteFile(a.Path, []byte(data), 0); err != nil {
			return fail("write", err)
		}
		return ClientResult{}
	case OpUnshare:
		return a.unshare()
	case OpGoDial:
		return a.goDial()
	case OpConnectLoop:
		return a.connectLoop()
	case OpReceivedFDConnect:
		return a.receivedFDConnect()
	}
	ap, family, typ, proto, err := a.endpoint()
	if err != nil {
		return ClientResult{Stage: "args", Err: err.Error()}
	}
	if a.NonBlocking {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return fail("socket", err)
	}
	held := false
	defer func() {
		if !held {
			unix.Close(fd)
		}
	}()
	tv := unix.NsecToTimeval(a.timeout().Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	var r ClientResult
	a.sockopts(fd, family, &r)
	if a.MigrateTo != "" {
		if err := os.WriteFile(filepath.Join(a.MigrateTo, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return merge(r, fail("migrate", err))
		}
	}
	sa := sockaddr(ap, family)
	switch a.Op {
	case OpConnect, OpFastOpen, OpFastOpenConnect, OpIOUringConnect, OpDNSConnected:
		if a.Op == OpFastOpenConnect {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT, 1); err != nil {
				return merge(r, fail("setsockopt", err))
			}
		}
		var err error
		switch a.Op {
		case OpIOUringConnect:
			err = ioUringConnect(fd, sa)
			if err != nil && errors.Is(err, errIOUringSetup) {
				return merge(r, fail("io_uring_setup", err))
			}
		case OpFastOpen:
			// The connect happens inside sendto, which carries Send.
			err = unix.Sendto(fd, []byte(a.Send), unix.MSG_FASTOPEN, sa)
		default:
			err = connectWait(fd, sa, a.NonBlocking, a.timeout())
		}
		if err != nil {
			return merge(r, fail("connect", err))
		}
		r.noteAddrs(fd)
		if a.Send != "" && a.Op != OpFastOpen {
			if err := writeAll(fd, []byte(a.Send), a.timeout()); err != nil {
				return merge(r, fail("send", err))
			}
		}
		if a.Hold {
			s.hold(fd)
			held = true
			return r
		}
		if typ&0xf == unix.SOCK_DGRAM {
			if a.Op == OpDNSConnected {
				buf := make([]byte, 1500)
				n, err := readWait(fd, buf, a.timeout())
				if err != nil {
					return merge(r, fail("recv", err))
				}
				r.Received = string(buf[:n])
			}
			return r
		}
		got, err := readToEOF(fd, a.timeout())
		r.Received = string(got)
		if err != nil {
			return merge(r, fail("recv", err))
		}
		return r
	case OpSendto:
		if err := unix.Sendto(fd, []byte(a.Send), 0, sa); err != nil {
			return merge(r, fail("send", err))
		}
		return r
	case OpSendmmsg:
		if err := sendmmsg(fd, []byte(a.Send), sa); err != nil {
			return merge(r, fail("send", err))
		}
		return r
	case OpDNSUnconnected:
		if err := unix.Sendto(fd, []byte(a.Send), 0, sa); err != nil {
			return merge(r, fail("send", err))
		}
		buf := make([]byte, 1500)
		n, from, err := unix.Recvfrom(fd, buf, 0)
		for errors.Is(err, unix.EINTR) {
			n, from, err = unix.Recvfrom(fd, buf, 0)
		}
		if err != nil {
			return merge(r, fail("recv", err))
		}
		r.From = SockaddrString(from)
		r.Received = string(buf[:n])
		return r
	}
	return ClientResult{Stage: "args", Err: "unknown op " + a.Op}
}

func (a ClientAction) goDial() ClientResult {
	d := net.Dialer{Timeout: a.timeout()}
	network := a.Network
	if strings.HasPrefix(a.Network, "mptcp") {
		d.SetMultipathTCP(true)
		network = "tcp" + strings.TrimPrefix(a.Network, "mptcp")
	}
	c, err := d.Dial(network, a.Addr)
	if err != nil {
		return fail("connect", err)
	}
	defer c.Close()
	r := ClientResult{Local: c.LocalAddr().String(), Peer: c.RemoteAddr().String()}
	c.SetDeadline(time.Now().Add(a.timeout()))
	if a.Send != "" {
		if _, err := io.WriteString(c, a.Send); err != nil {
			return merge(r, fail("send", err))
		}
	}
	b, err := io.ReadAll(c)
	r.Received = string(b)
	if err != nil {
		return merge(r, fail("recv", err))
	}
	return r
}

func (a ClientAction) connectLoop() ClientResult {
	ap, family, typ, proto, err := a.endpoint()
	if err != nil {
		return ClientResult{Stage: "args", Err: err.Error()}
	}
	var r ClientResult
	until := time.Now().Add(time.Duration(a.MinDurationMS) * time.Millisecond)
	once := func() error {
		fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval(a.timeout().Nanoseconds())
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		if err := connectWait(fd, sockaddr(ap, family), false, a.timeout()); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		got, err := readToEOF(fd, a.timeout())
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if !strings.Contains(string(got), a.Expect) {
			return fmt.Errorf("read %q, want %q in it", got, a.Expect)
		}
		return nil
	}
	for r.Done < a.Count || time.Now().Before(until) {
		r.Done++
		if err := once(); err != nil {
			r.Failed++
			if r.Failures == nil {
				r.Failures = map[string]int{}
			}
			name := "UNEXPECTED"
			var errno unix.Errno
			if errors.As(err, &errno) {
				name = unix.ErrnoName(errno)
			}
			r.Failures[name]++
			if r.Err == "" {
				r.Err = fmt.Sprintf("connect %d: %v", r.Done, err)
			}
		}
	}
	return r
}

func (a ClientAction) receivedFDConnect() ClientResult {
	ap, err := netip.ParseAddrPort(a.Addr)
	if err != nil {
		return ClientResult{Stage: "args", Err: err.Error()}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: a.Path, Net: "unix"})
	if err != nil {
		return fail("listen", err)
	}
	defer l.Close()
	l.SetDeadline(time.Now().Add(a.timeout()))
	c, err := l.AcceptUnix()
	if err != nil {
		return fail("accept", err)
	}
	defer c.Close()
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := c.ReadMsgUnix(make([]byte, 1), oob)
	if err != nil {
		return fail("recvmsg", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return ClientResult{Stage: "recvmsg", Err: fmt.Sprintf("no socket received: %v", err)}
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return ClientResult{Stage: "recvmsg", Err: fmt.Sprintf("no socket received: %v", err)}
	}
	fd := fds[0]
	defer unix.Close(fd)
	family := unix.AF_INET
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family = unix.AF_INET6
	}
	var r ClientResult
	if err := connectWait(fd, sockaddr(ap, family), false, a.timeout()); err != nil {
		return fail("connect", err)
	}
	if pa, err := unix.Getpeername(fd); err == nil {
		r.Peer = SockaddrString(pa)
	}
	got, err := readToEOF(fd, a.timeout())
	r.Received = string(got)
	if err != nil {
		return merge(r, fail("recv", err))
	}
	return r
}

// SendSocket creates a TCP socket (network "tcp4" or "tcp6") in the calling
// process, and so in its cgroup, and hands it over to a client waiting in
// OpReceivedFDConnect on the unix socket at path.
func SendSocket(network, path string, timeout time.Duration) error {
	family := unix.AF_INET
	if network == "tcp6" {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("send socket: %w", err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			defer c.Close()
			if _, _, err := c.WriteMsgUnix([]byte{0}, unix.UnixRights(fd), nil); err != nil {
				return fmt.Errorf("send socket: %w", err)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("send socket to %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noteAddrs records the socket's local and peer addresses (getsockname,
// getpeername) where it has them.
func (r *ClientResult) noteAddrs(fd int) {
	if la, err := unix.Getsockname(fd); err == nil {
		r.Local = SockaddrString(la)
	}
	if pa, err := unix.Getpeername(fd); err == nil {
		r.Peer = SockaddrString(pa)
	}
}

// merge keeps what r learned (socket options, addresses) in a failure.
func merge(r, f ClientResult) ClientResult {
	f.SockoptErrnos, f.Local, f.Peer, f.Received = r.SockoptErrnos, r.Local, r.Peer, r.Received
	return f
}

func (a ClientAction) sockopts(fd, family int, r *ClientResult) {
	note := func(name string, err error) {
		if err == nil {
			return
		}
		if r.SockoptErrnos == nil {
			r.SockoptErrnos = map[string]string{}
		}
		var errno unix.Errno
		if errors.As(err, &errno) {
			r.SockoptErrnos[name] = unix.ErrnoName(errno)
		} else {
			r.SockoptErrnos[name] = err.Error()
		}
	}
	if a.Mark != 0 {
		note("SO_MARK", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, a.Mark))
	}
	if a.Transparent {
		if family == unix.AF_INET {
			note("IP_TRANSPARENT", unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1))
		} else {
			note("IPV6_TRANSPARENT", unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1))
		}
	}
	if a.BindToDevice != "" {
		note("SO_BINDTODEVICE", unix.BindToDevice(fd, a.BindToDevice))
	}
}

// Connect is a blocking connect(2) of fd to sa that survives signals (a Go
// test process gets many): an interrupted connect goes on in the kernel, so
// it waits, up to timeout, for the outcome instead of connecting again.
func Connect(fd int, sa unix.Sockaddr, timeout time.Duration) error {
	return connectWait(fd, sa, false, timeout)
}

// connectWait connects and, for a non-blocking socket or a connect
// interrupted by a signal, waits for the outcome instead of connecting
// again.
func connectWait(fd int, sa unix.Sockaddr, nonBlocking bool, timeout time.Duration) error {
	err := unix.Connect(fd, sa)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINTR) && !(nonBlocking && errors.Is(err, unix.EINPROGRESS)) {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

func waitFor(fd int, events int16, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) || (err == nil && n == 0) {
			continue
		}
		return err
	}
}

func writeAll(fd int, b []byte, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(b) > 0 {
		if err := waitFor(fd, unix.POLLOUT, deadline); err != nil {
			return err
		}
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func readWait(fd int, buf []byte, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		if err := waitFor(fd, unix.POLLIN, deadline); err != nil {
			return 0, err
		}
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		return n, err
	}
}

// readToEOF reads until the peer closes (or resets) the connection.
func readToEOF(fd int, timeout time.Duration) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(timeout)
	for {
		n, err := readWait(fd, buf, time.Until(deadline))
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

// sendmmsg sends two datagrams carrying b to sa with one sendmmsg(2).
func sendmmsg(fd int, b []byte, sa unix.Sockaddr) error {
	name, nameLen := rawSockaddr(sa)
	iov := unix.Iovec{Base: unsafe.SliceData(append(b, 0))}
	iov.SetLen(len(b))
	var msgs [2]unix.Mmsghdr
	for i := range msgs {
		msgs[i].Hdr.Name = (*byte)(name)
		msgs[i].Hdr.Namelen = nameLen
		msgs[i].Hdr.Iov = &iov
		msgs[i].Hdr.SetIovlen(1)
	}
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
	runtime.KeepAlive(name)
	runtime.KeepAlive(&iov)
	if errno != 0 {
		return errno
	}
	if n == 0 {
		return errors.New("sendmmsg sent nothing")
	}
	return nil
}

// rawSockaddr lays out an inet socket address as the kernel reads it.
func rawSockaddr(sa unix.Sockaddr) (unsafe.Pointer, uint32) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		raw := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr}
		p := (*[2]byte)(unsafe.Pointer(&raw.Port))
		p[0], p[1] = byte(a.Port>>8), byte(a.Port)
		return unsafe.Pointer(raw), unix.SizeofSockaddrInet4
	case *unix.SockaddrInet6:
		raw := &unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.Addr}
		p := (*[2]byte)(unsafe.Pointer(&raw.Port))
		p[0], p[1] = byte(a.Port>>8), byte(a.Port)
		return unsafe.Pointer(raw), unix.SizeofSockaddrInet6
	}
	return nil, 0
}

// unshare runs the nested action in a new user and network namespace, the
// way an agent would with `unshare -Urn`: the real util-linux unshare,
// started by this (unprivileged) process, so the new namespaces belong to
// it. The nested process inherits this process's cgroup.
func (a ClientAction) unshare() ClientResult {
	if a.Nested == nil {
		return ClientResult{Stage: "args", Err: "unshare needs a nested action"}
	}
	tool, err := exec.LookPath("unshare")
	if err != nil {
		return fail("unshare", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fail("unshare", err)
	}
	spec, err := json.Marshal(a.Nested)
	if err != nil {
		return fail("unshare", err)
	}
	cmd := exec.Command(tool, "-Urn", self, "-test.run=^$")
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, clientEnv+"=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, clientEnv+"="+string(spec))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fail("unshare", fmt.Errorf("%v: %s", err, stderr.String()))
	}
	var nested ClientResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &nested); err != nil {
		return fail("unshare", fmt.Errorf("nested result %q: %v", out, err))
	}
	return ClientResult{Nested: &nested}
}
