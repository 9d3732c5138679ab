package redirect

// Test helpers for the integration tests of this package: a throw-away
// cgroup, a throw-away pin directory, and a client process that runs inside
// that cgroup and in a private network namespace, driven line by line over
// its stdin/stdout.

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
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
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const helperEnv = "SNOWGATE_REDIRECT_TEST_CLIENT"

func randomSuffix(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// redirTestCgroup is a fresh cgroup v2 directory, removed at cleanup.
type redirTestCgroup struct {
	Path string
	ID   uint64
}

func newRedirTestCgroup(t *testing.T) redirTestCgroup {
	t.Helper()
	root, err := FindCgroup2()
	if err != nil {
		t.Fatal(err)
	}
	p := newRedirTestCgroupUnder(t, root)
	id, err := CgroupID(p)
	if err != nil {
		t.Fatal(err)
	}
	return redirTestCgroup{Path: p, ID: id}
}

// newRedirTestCgroupUnder creates a cgroup below parent, removed at cleanup.
func newRedirTestCgroupUnder(t *testing.T, parent string) string {
	t.Helper()
	p := filepath.Join(parent, "snowgate-test-"+randomSuffix(t))
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Processes may take a moment to leave after exit.
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := os.Remove(p)
			if err == nil || errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("remove cgroup %s: %v", p, err)
				}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	return p
}

// newRedirTestPinDir is a pin directory under bpffs, uninstalled at cleanup.
func newRedirTestPinDir(t *testing.T) string {
	t.Helper()
	p := filepath.Join(bpffsRoot, "snowgate-test-"+randomSuffix(t))
	t.Cleanup(func() {
		if err := Uninstall(p); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p
}

// selfCgroupID is the cgroup v2 id of the test process itself.
func selfCgroupID(t *testing.T) uint64 {
	t.Helper()
	root, err := FindCgroup2()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			id, err := CgroupID(filepath.Join(root, rest))
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
	}
	t.Fatal("no cgroup v2 line in /proc/self/cgroup")
	return 0
}

// inNetns runs fn on an OS thread switched into the network namespace at
// nsPath, then switches the thread back. Sockets created by fn live in that
// namespace; they keep working from any thread afterwards. If the thread
// cannot be switched back it stays locked, so Go discards it with the
// goroutine instead of reusing it.
func inNetns(t *testing.T, nsPath string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", nsPath, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("setns back: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// clientReply is one answer of the client process.
type clientReply struct {
	Errno string `json:"errno,omitempty"` // e.g. "EPERM"; empty on success
	Err   string `json:"err,omitempty"`
	Local string `json:"local,omitempty"` // getsockname
	Peer  string `json:"peer,omitempty"`  // getpeername, or a datagram's source
	Data  string `json:"data,omitempty"`
}

// redirTestClient is a child process in a cgroup and a private network
// namespace (loopback up, unreachable default routes).
type redirTestClient struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	Pid   int
	Netns string // /proc/<pid>/ns/net
}

func startRedirTestClient(t *testing.T, cg redirTestCgroup) *redirTestClient {
	t.Helper()
	return startRedirTestClientAs(t, cg, 0)
}

// startRedirTestClientAs starts the client as uid (and gid) uid. An
// unprivileged client cannot configure its namespace, so the test process
// always does that from outside.
func startRedirTestClientAs(t *testing.T, cg redirTestCgroup, uid uint32) *redirTestClient {
	t.Helper()
	cgFD, err := unix.Open(cg.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cgFD)
	bin := os.Args[0]
	if uid != 0 {
		bin = copyTestBinary(t)
	}
	cmd := exec.Command(bin, "-test.run=^TestRedirectClientProcess$", "-test.count=1")
	// No preemption signals: they would interrupt the client's blocking
	// calls (a connect with SO_SNDTIMEO is not restarted).
	cmd.Env = append(os.Environ(), helperEnv+"=1", "GODEBUG=asyncpreemptoff=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWNET,
		UseCgroupFD: true,
		CgroupFD:    cgFD,
		Pdeathsig:   syscall.SIGKILL,
	}
	if uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: uid}
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start client: %v", err)
	}
	c := &redirTestClient{
		cmd:   cmd,
		in:    in,
		out:   bufio.NewReader(out),
		Pid:   cmd.Process.Pid,
		Netns: fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid),
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	if err := inNetns(t, c.Netns, setupClientNetns); err != nil {
		t.Fatalf("client netns setup: %v", err)
	}
	if r := c.do(t, "hello"); r.Err != "" {
		t.Fatalf("client: %s", r.Err)
	}
	return c
}

// copyTestBinary copies the test binary where an unprivileged user can run
// it (the build directory is private to root).
func copyTestBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "snowgate-redirect-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p := filepath.Join(dir, "redirect.test")
	dst, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// do sends one command and waits for its reply.
func (c *redirTestClient) do(t *testing.T, cmd string) clientReply {
	t.Helper()
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		t.Fatalf("client %q: %v", cmd, err)
	}
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		for {
			line, err := c.out.ReadString('\n')
			// The test framework may print lines of its own; replies
			// are JSON objects.
			if err != nil || strings.HasPrefix(line, "{") {
				ch <- res{line, err}
				return
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("client %q: read reply: %v", cmd, r.err)
		}
		var rep clientReply
		if err := json.Unmarshal([]byte(r.line), &rep); err != nil {
			t.Fatalf("client %q: reply %q: %v", cmd, r.line, err)
		}
		return rep
	case <-time.After(60 * time.Second):
		t.Fatalf("client %q: no reply within 60s", cmd)
		return clientReply{}
	}
}

// TestRedirectClientProcess is not a test: it is the client process started
// by startRedirTestClient (the test binary re-executed). It skips otherwise.
func TestRedirectClientProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for the redirect integration tests")
	}
	runtime.LockOSThread()
	out := json.NewEncoder(os.Stdout)
	reply := func(r clientReply) {
		if err := out.Encode(r); err != nil {
			os.Exit(3)
		}
	}
	cl := &clientState{fd: -1}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		reply(cl.run(strings.Fields(sc.Text())))
	}
	cl.closeCurrent()
	os.Exit(0)
}

// setupClientNetns brings loopback up and makes everything else unreachable,
// so a connect that escapes the redirect fails instead of leaving the host.
// It runs in the test process, on a thread switched into the client's netns.
func setupClientNetns() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	for _, dst := range []string{"0.0.0.0/0", "::/0"} {
		_, n, _ := net.ParseCIDR(dst)
		r := &netlink.Route{Dst: n, Type: unix.RTN_UNREACHABLE}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("route unreachable %s: %w", dst, err)
		}
	}
	return nil
}

type clientState struct {
	fd int // the connected socket of the last "connect", or -1
}

func (c *clientState) closeCurrent() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

func errReply(err error) clientReply {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return clientReply{Errno: unix.ErrnoName(errno), Err: err.Error()}
	}
	return clientReply{Err: err.Error()}
}

func sockaddrOf(ap netip.AddrPort, family int) unix.Sockaddr {
	if family == unix.AF_INET {
		return &unix.SockaddrInet4{Addr: ap.Addr().Unmap().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return fmt.Sprintf("%v", sa)
}

// run executes one command:
//
//	hello
//	connect tcp4|tcp6|udp4|udp6|mptcp4|mptcp6|udplite4 ADDR:PORT [TIMEOUT_SECONDS]
//	                                       (the socket stays open)
//	tfo tcp4|tcp6 ADDR:PORT                (connect through sendto(MSG_FASTOPEN))
//	sendto udp4|udp6|udplite4 ADDR:PORT
//	dns ADDR:PORT                          (UDP query, waits for the reply)
//	raw                                    (socket(AF_INET, SOCK_RAW, ICMP))
//	resolve udp|tcp ADDR:PORT NAME         (a real DNS A query; Data is
//	                                        "RCODE addr,addr,...")
//	tls ADDR:PORT SNI                      (a TLS handshake with that server
//	                                        name, the server not verified)
//	reconnect tcp4 FIRST SECOND            (one socket: connect to FIRST,
//	                                        which must fail, then to SECOND;
//	                                        Data is "first: ERRNO"; the
//	                                        socket stays open)
//	peer                                   (getpeername of the open socket)
//	close
func (c *clientState) run(args []string) clientReply {
	if len(args) == 0 {
		return clientReply{Err: "empty command"}
	}
	switch args[0] {
	case "hello":
		return clientReply{}
	case "close":
		c.closeCurrent()
		return clientReply{}
	case "peer":
		pa, err := unix.Getpeername(c.fd)
		if err != nil {
			return errReply(err)
		}
		return clientReply{Peer: sockaddrString(pa)}
	case "raw":
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err != nil {
			return errReply(err)
		}
		unix.Close(fd)
		return clientReply{}
	case "resolve":
		return resolve(args[1:])
	case "tls":
		return tlsHandshake(args[1:])
	case "reconnect":
		return c.reconnect(args[1:])
	case "connect", "tfo", "sendto", "dns":
	default:
		return clientReply{Err: "unknown command " + args[0]}
	}
	network, target := "udp4", ""
	if args[0] == "dns" && len(args) == 2 {
		target = args[1]
		if strings.HasPrefix(target, "[") {
			network = "udp6"
		}
	} else if len(args) == 3 || len(args) == 4 {
		network, target = args[1], args[2]
	} else {
		return clientReply{Err: "usage: " + args[0] + " NETWORK ADDR:PORT"}
	}
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return clientReply{Err: err.Error()}
	}
	family, typ, proto := unix.AF_INET, unix.SOCK_STREAM, 0
	if strings.HasSuffix(network, "6") {
		family = unix.AF_INET6
	}
	if strings.HasPrefix(network, "udp") {
		typ = unix.SOCK_DGRAM
	}
	if strings.HasPrefix(network, "mptcp") {
		proto = unix.IPPROTO_MPTCP
	}
	if strings.HasPrefix(network, "udplite") {
		typ, proto = unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return errReply(err)
	}
	tv := unix.Timeval{Sec: 10}
	if len(args) == 4 {
		secs, err := strconv.Atoi(args[3])
		if err != nil {
			return clientReply{Err: "timeout: " + err.Error()}
		}
		tv.Sec = int64(secs)
	}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	sa := sockaddrOf(ap, family)
	switch args[0] {
	case "connect", "tfo":
		if args[0] == "tfo" {
			// TCP Fast Open: the connect happens inside sendto.
			err = unix.Sendto(fd, []byte("hello"), unix.MSG_FASTOPEN, sa)
		} else {
			err = connectRetry(fd, sa, time.Duration(tv.Sec)*time.Second)
		}
		if err != nil {
			unix.Close(fd)
			return errReply(err)
		}
		var r clientReply
		if la, err := unix.Getsockname(fd); err == nil {
			r.Local = sockaddrString(la)
		}
		if pa, err := unix.Getpeername(fd); err == nil {
			r.Peer = sockaddrString(pa)
		}
		c.closeCurrent()
		c.fd = fd
		return r
	case "sendto":
		defer unix.Close(fd)
		if err := unix.Sendto(fd, []byte("x"), 0, sa); err != nil {
			return errReply(err)
		}
		return clientReply{}
	default: // dns
		defer unix.Close(fd)
		if err := unix.Sendto(fd, []byte("query"), 0, sa); err != nil {
			return errReply(err)
		}
		buf := make([]byte, 512)
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return errReply(err)
		}
		return clientReply{Peer: sockaddrString(from), Data: string(buf[:n])}
	}
}

// reconnect connects one TCP socket twice: to args[1], which must fail, and
// then to args[2]. Linux lets a socket connect again after a failed connect.
func (c *clientState) reconnect(args []string) clientReply {
	if len(args) != 3 || args[0] != "tcp4" {
		return clientReply{Err: "usage: reconnect tcp4 FIRST SECOND"}
	}
	first, err := netip.ParseAddrPort(args[1])
	if err != nil {
		return clientReply{Err: err.Error()}
	}
	second, err := netip.ParseAddrPort(args[2])
	if err != nil {
		return clientReply{Err: err.Error()}
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errReply(err)
	}
	tv := unix.Timeval{Sec: 10}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	err = connectRetry(fd, sockaddrOf(first, unix.AF_INET), 10*time.Second)
	if err == nil {
		unix.Close(fd)
		return clientReply{Err: "the first connect succeeded"}
	}
	firstErrno := errReply(err).Errno
	if err := connectRetry(fd, sockaddrOf(second, unix.AF_INET), 10*time.Second); err != nil {
		unix.Close(fd)
		r := errReply(err)
		r.Data = "first: " + firstErrno
		return r
	}
	r := clientReply{Data: "first: " + firstErrno}
	if la, err := unix.Getsockname(fd); err == nil {
		r.Local = sockaddrString(la)
	}
	if pa, err := unix.Getpeername(fd); err == nil {
		r.Peer = sockaddrString(pa)
	}
	c.closeCurrent()
	c.fd = fd
	return r
}

// resolve sends one DNS A query for NAME to ADDR:PORT over udp or tcp (a
// connected socket, as Go's and glibc's resolvers use) and reports the rcode
// and the A records of the answer.
func resolve(args []string) clientReply {
	if len(args) != 3 || (args[0] != "udp" && args[0] != "tcp") {
		return clientReply{Err: "usage: resolve udp|tcp ADDR:PORT NAME"}
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(args[2]), dns.TypeA)
	c := &dns.Client{Net: args[0], Timeout: 20 * time.Second}
	resp, _, err := c.Exchange(q, args[1])
	if err != nil {
		return errReply(err)
	}
	var addrs []string
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	return clientReply{Data: dns.RcodeToString[resp.Rcode] + " " + strings.Join(addrs, ",")}
}

// tlsHandshake connects to ADDR:PORT and runs a TLS handshake with server
// name SNI; the server's certificate is not checked (the refusals under test
// happen before the gateway answers the ClientHello).
func tlsHandshake(args []string) clientReply {
	if len(args) != 2 {
		return clientReply{Err: "usage: tls ADDR:PORT SNI"}
	}
	d := &net.Dialer{Timeout: 20 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", args[0], &tls.Config{ServerName: args[1], InsecureSkipVerify: true}) //nolint:gosec // the test only needs the ClientHello sent
	if err != nil {
		return errReply(err)
	}
	defer c.Close()
	return clientReply{Peer: c.RemoteAddr().String()}
}

// connectRetry is a blocking connect that survives EINTR: the connect goes on
// in the kernel, so wait for the socket to become writable and read its
// result instead of connecting again.
func connectRetry(fd int, sa unix.Sockaddr, timeout time.Duration) error {
	err := unix.Connect(fd, sa)
	if !errors.Is(err, unix.EINTR) {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.ETIMEDOUT
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
