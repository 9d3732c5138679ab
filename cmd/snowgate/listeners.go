package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/snowgate/snowgate/internal/gateway"
)

// The daemon's listening sockets outlive the daemon, so a restart or an
// upgrade refuses no agent connection: the kernel keeps queueing connects on
// a listening socket for as long as any process holds it.
//
// Two ways keep them open:
//
//   - systemd socket activation (systemd/snowgate.socket): systemd binds the
//     sockets and passes them to every start of the service (LISTEN_FDS,
//     LISTEN_PID, LISTEN_FDNAMES; sd_listen_fds(3)). Between the old
//     daemon's exit and the new one's start, connects wait in the backlog.
//   - hand-over on SIGHUP: the running daemon starts the binary at its own
//     path again (a package upgrade replaced it, or not) with the listeners
//     inherited (SNOWGATE_LISTEN_FDS, SNOWGATE_LISTEN_FDNAMES), waits until
//     the new daemon reports ready on a pipe (SNOWGATE_READY_FD), then stops
//     accepting, lets its open connections finish and exits. Both accept from
//     the same sockets meanwhile; if the new daemon fails to start, the old
//     one keeps serving.
//
// An inherited socket is matched to its role by name (FileDescriptorName=
// in the socket unit) or else by its bound address; a socket bound to an
// address the configuration does not name is an error, so a socket unit and
// a configuration that disagree are caught at start.

// Environment of socket activation and hand-over.
const (
	envListenFDs      = "LISTEN_FDS"
	envListenPID      = "LISTEN_PID"
	envListenFDNames  = "LISTEN_FDNAMES"
	envHandoverFDs    = "SNOWGATE_LISTEN_FDS"
	envHandoverNames  = "SNOWGATE_LISTEN_FDNAMES"
	envHandoverReady  = "SNOWGATE_READY_FD"
	envPredecessor    = "SNOWGATE_PREDECESSOR_FD"
	envNotifySocket   = "NOTIFY_SOCKET"
	firstInheritedFD  = 3
	maxInheritedFDs   = 16
	handoverReadyWait = 2 * time.Minute
)

// Socket names (FileDescriptorName= in systemd/snowgate.socket).
const (
	socketGateway = "gateway"
	socketDNS     = "dns"
	socketAdmin   = "admin"
)

// listenAddrs are the configured addresses of the daemon's sockets.
type listenAddrs struct {
	// Gateway is the proxy address and port (TCP).
	Gateway string
	// DNS is the DNS forwarder's address (UDP and TCP on one port).
	DNS string
	// Admin is the admin listener (TCP).
	Admin string
}

// listeners are the daemon's sockets, inherited or bound here.
type listeners struct {
	gateway net.Listener
	dnsUDP  net.PacketConn
	dnsTCP  net.Listener
	admin   net.Listener
	// source says where inherited sockets came from: "systemd",
	// "hand-over" or "" (all bound here).
	source string
	// ready is the hand-over pipe to the daemon that started this one;
	// nil otherwise.
	ready *os.File
	// predecessor reads EOF once the daemon that started this one has
	// exited (its end of the pipe closes with it); nil otherwise.
	predecessor *os.File
}

// inheritedSocket is one socket passed in by systemd or a previous daemon.
type inheritedSocket struct {
	fd   int
	name string
	// tcp or udp, and the bound address.
	network string
	addr    netip.AddrPort
	file    *os.File
}

// openListeners takes the sockets passed in by systemd or by the daemon
// being replaced, and binds the missing ones. It unsets the environment that
// passed them, so a later hand-over starts from a clean slate.
func openListeners(addrs listenAddrs, log *slog.Logger) (*listeners, error) {
	inherited, source, err := inheritSockets()
	if err != nil {
		return nil, err
	}
	l := &listeners{source: source}
	for _, p := range []struct {
		env  string
		file **os.File
	}{{envHandoverReady, &l.ready}, {envPredecessor, &l.predecessor}} {
		fd, ok := os.LookupEnv(p.env)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(fd)
		if err != nil || n < firstInheritedFD {
			return nil, fmt.Errorf("%s=%q: not a file descriptor", p.env, fd)
		}
		syscall.CloseOnExec(n)
		*p.file = os.NewFile(uintptr(n), p.env)
	}
	for _, k := range []string{envListenFDs, envListenPID, envListenFDNames, envHandoverFDs, envHandoverNames, envHandoverReady, envPredecessor} {
		os.Unsetenv(k)
	}
	if err := l.adopt(inherited, addrs); err != nil {
		l.Close()
		return nil, err
	}
	if err := l.bindMissing(addrs); err != nil {
		l.Close()
		return nil, err
	}
	if source != "" {
		log.Info("listening sockets inherited", "from", source, "count", len(inherited))
	}
	return l, nil
}

// inheritSockets reads the sockets passed by systemd (LISTEN_PID must be
// this process) or by a hand-over.
func inheritSockets() ([]inheritedSocket, string, error) {
	source, countVar, namesVar := "", "", ""
	switch {
	case os.Getenv(envListenFDs) != "":
		if pid := os.Getenv(envListenPID); pid != strconv.Itoa(os.Getpid()) {
			// Meant for another process (sd_listen_fds ignores them too).
			return nil, "", nil
		}
		source, countVar, namesVar = "systemd", envListenFDs, envListenFDNames
	case os.Getenv(envHandoverFDs) != "":
		source, countVar, namesVar = "hand-over", envHandoverFDs, envHandoverNames
	default:
		return nil, "", nil
	}
	n, err := strconv.Atoi(os.Getenv(countVar))
	if err != nil || n < 0 || n > maxInheritedFDs {
		return nil, "", fmt.Errorf("%s=%q: want a count of at most %d sockets", countVar, os.Getenv(countVar), maxInheritedFDs)
	}
	var names []string
	if s := os.Getenv(namesVar); s != "" {
		names = strings.Split(s, ":")
	}
	out := make([]inheritedSocket, 0, n)
	for i := range n {
		fd := firstInheritedFD + i
		s, err := describeSocket(fd)
		if err != nil {
			for _, o := range out {
				o.file.Close()
			}
			return nil, "", fmt.Errorf("%s socket %d (fd %d): %w", source, i, fd, err)
		}
		if i < len(names) {
			s.name = names[i]
		}
		out = append(out, s)
	}
	return out, source, nil
}

// describeSocket finds the type and bound address of an inherited socket.
func describeSocket(fd int) (inheritedSocket, error) {
	syscall.CloseOnExec(fd)
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil {
		return inheritedSocket{}, fmt.Errorf("not a socket: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return inheritedSocket{}, fmt.Errorf("getsockname: %w", err)
	}
	var addr netip.AddrPort
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		addr = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *syscall.SockaddrInet6:
		addr = netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	default:
		return inheritedSocket{}, errors.New("not an IP socket")
	}
	s := inheritedSocket{fd: fd, addr: addr, file: os.NewFile(uintptr(fd), "inherited-"+strconv.Itoa(fd))}
	switch typ {
	case syscall.SOCK_STREAM:
		s.network = "tcp"
	case syscall.SOCK_DGRAM:
		s.network = "udp"
	default:
		s.file.Close()
		return inheritedSocket{}, fmt.Errorf("socket type %d: want a stream or datagram socket", typ)
	}
	return s, nil
}

// sameAddr reports whether a bound address is the configured host:port
// (an unspecified host matches either family's wildcard).
func sameAddr(bound netip.AddrPort, configured string) bool {
	host, port, err := net.SplitHostPort(configured)
	if err != nil {
		return false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || uint16(p) != bound.Port() {
		return false
	}
	if host == "" {
		return bound.Addr().IsUnspecified()
	}
	want, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
		if lerr != nil {
			return false
		}
		for _, ip := range ips {
			if ip.Unmap() == bound.Addr() {
				return true
			}
		}
		return false
	}
	want = want.Unmap()
	if want.IsUnspecified() {
		return bound.Addr().IsUnspecified()
	}
	return want == bound.Addr()
}

// role names the part an inherited socket plays: by its name when it has a
// known one, else by its address.
func role(s inheritedSocket, addrs listenAddrs) (string, error) {
	byAddr := ""
	switch {
	case s.network == "tcp" && sameAddr(s.addr, addrs.Gateway):
		byAddr = socketGateway
	case sameAddr(s.addr, addrs.DNS):
		byAddr = socketDNS
	case s.network == "tcp" && sameAddr(s.addr, addrs.Admin):
		byAddr = socketAdmin
	}
	switch s.name {
	case socketGateway, socketDNS, socketAdmin:
		if byAddr != s.name {
			return "", fmt.Errorf("socket %q (fd %d) is bound to %s/%s, which the configuration does not give the %s listener", s.name, s.fd, s.network, s.addr, s.name)
		}
	}
	if byAddr == "" {
		return "", fmt.Errorf("socket fd %d (%s/%s) matches no configured listener (gateway %s, dns %s, admin %s)", s.fd, s.network, s.addr, addrs.Gateway, addrs.DNS, addrs.Admin)
	}
	return byAddr, nil
}

// adopt turns the inherited sockets into the daemon's listeners.
func (l *listeners) adopt(inherited []inheritedSocket, addrs listenAddrs) error {
	var errs []error
	for _, s := range inherited {
		r, err := role(s, addrs)
		if err == nil {
			err = l.take(r, s)
		}
		s.file.Close() // net.File* made their own copy
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *listeners) take(role string, s inheritedSocket) error {
	dup := func() error {
		return fmt.Errorf("two inherited sockets for the %s/%s %s listener", s.network, s.addr, role)
	}
	switch {
	case s.network == "tcp":
		ln, err := net.FileListener(s.file)
		if err != nil {
			return fmt.Errorf("inherited %s listener: %w", role, err)
		}
		slot := map[string]*net.Listener{socketGateway: &l.gateway, socketDNS: &l.dnsTCP, socketAdmin: &l.admin}[role]
		if *slot != nil {
			ln.Close()
			return dup()
		}
		*slot = ln
	default:
		pc, err := net.FilePacketConn(s.file)
		if err != nil {
			return fmt.Errorf("inherited %s socket: %w", role, err)
		}
		if l.dnsUDP != nil {
			pc.Close()
			return dup()
		}
		l.dnsUDP = pc
	}
	return nil
}

// bindMissing binds the sockets nobody passed in.
func (l *listeners) bindMissing(addrs listenAddrs) error {
	var err error
	if l.gateway == nil {
		if l.gateway, err = net.Listen("tcp", addrs.Gateway); err != nil {
			return fmt.Errorf("gateway listener: %w", err)
		}
	}
	if l.dnsUDP == nil {
		if l.dnsUDP, err = net.ListenPacket("udp", addrs.DNS); err != nil {
			return fmt.Errorf("dns listener: %w", err)
		}
	}
	if l.dnsTCP == nil {
		// The TCP port follows the UDP one (dns.listen may say port 0 in
		// tests).
		if l.dnsTCP, err = net.Listen("tcp", l.dnsUDP.LocalAddr().String()); err != nil {
			return fmt.Errorf("dns listener (tcp): %w", err)
		}
	}
	if l.admin == nil {
		if l.admin, err = net.Listen("tcp", addrs.Admin); err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	return nil
}

// Close closes this process's descriptors of the sockets; a socket another
// process holds (the new daemon after a hand-over, systemd) stays open.
func (l *listeners) Close() {
	// A nil field converts to a nil interface here.
	for _, c := range []interface{ Close() error }{l.gateway, l.dnsUDP, l.dnsTCP, l.admin} {
		if c != nil {
			c.Close()
		}
	}
	if l.ready != nil {
		l.ready.Close()
		l.ready = nil
	}
	if l.predecessor != nil {
		l.predecessor.Close()
		l.predecessor = nil
	}
}

// afterPredecessor calls f once the daemon that handed its sockets to this
// one has exited (and so has saved its state); never when there was none.
func (l *listeners) afterPredecessor(f func()) {
	p := l.predecessor
	if p == nil {
		return
	}
	go func() {
		_, _ = io.Copy(io.Discard, p)
		f()
	}()
}

// signalReady tells whoever started this daemon that it serves: the daemon
// it replaces (the hand-over pipe) and systemd (READY=1 and, after a
// hand-over, MAINPID).
func (l *listeners) signalReady(log *slog.Logger) {
	if l.ready != nil {
		if _, err := l.ready.Write([]byte{'1'}); err != nil {
			log.Warn("hand-over: telling the previous daemon failed", "err", err)
		}
		l.ready.Close()
		l.ready = nil
	}
	if err := sdNotify("READY=1\nMAINPID=" + strconv.Itoa(os.Getpid())); err != nil {
		log.Warn("systemd notification failed", "err", err)
	}
}

// files returns duplicates of the sockets in hand-over order, with their
// names.
func (l *listeners) files() ([]*os.File, []string, error) {
	type filer interface{ File() (*os.File, error) }
	socks := []struct {
		name string
		s    any
	}{{socketGateway, l.gateway}, {socketDNS, l.dnsUDP}, {socketDNS, l.dnsTCP}, {socketAdmin, l.admin}}
	var files []*os.File
	var names []string
	for _, s := range socks {
		f, ok := s.s.(filer)
		if !ok {
			closeAll(files)
			return nil, nil, fmt.Errorf("%s socket cannot be handed over (%T)", s.name, s.s)
		}
		file, err := f.File()
		if err != nil {
			closeAll(files)
			return nil, nil, fmt.Errorf("%s socket: %w", s.name, err)
		}
		files = append(files, file)
		names = append(names, s.name)
	}
	return files, names, nil
}

// setNonblock puts every socket back in non-blocking mode.
func (l *listeners) setNonblock() error {
	var errs []error
	for _, s := range []any{l.gateway, l.dnsUDP, l.dnsTCP, l.admin} {
		sc, ok := s.(syscall.Conn)
		if !ok {
			continue
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = syscall.SetNonblock(int(fd), true) }); err != nil {
			errs = append(errs, err)
		}
		if serr != nil {
			errs = append(errs, serr)
		}
	}
	return errors.Join(errs...)
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// handOver starts exe (this daemon's binary path, possibly replaced by an
// upgrade) with args and the listeners inherited, and waits until it is
// ready. On success the caller stops accepting and drains; on failure the
// new process is killed and the caller keeps serving.
func (l *listeners) handOver(ctx context.Context, exe string, args []string, log *slog.Logger) (int, error) {
	files, names, err := l.files()
	if err != nil {
		return 0, fmt.Errorf("hand-over: %w", err)
	}
	defer closeAll(files)
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("hand-over: ready pipe: %w", err)
	}
	defer r.Close()
	// The successor's end of the "predecessor alive" pipe; this process
	// keeps the write end open until it exits.
	alive, aliveW, err := os.Pipe()
	if err != nil {
		w.Close()
		return 0, fmt.Errorf("hand-over: predecessor pipe: %w", err)
	}
	defer alive.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = append(files, w, alive)
	cmd.Env = append(handoverEnv(os.Environ()),
		envHandoverFDs+"="+strconv.Itoa(len(files)),
		envHandoverNames+"="+strings.Join(names, ":"),
		envHandoverReady+"="+strconv.Itoa(firstInheritedFD+len(files)),
		envPredecessor+"="+strconv.Itoa(firstInheritedFD+len(files)+1),
	)
	if err := cmd.Start(); err != nil {
		w.Close()
		aliveW.Close()
		return 0, fmt.Errorf("hand-over: start %s: %w", exe, err)
	}
	w.Close()
	// Starting the child put the sockets in blocking mode (os.File.Fd does,
	// and the mode belongs to the socket, shared with this process's
	// descriptors): back to non-blocking, or this process's accept and
	// read calls would block in the kernel where closing cannot end them.
	if err := l.setNonblock(); err != nil {
		log.Error("hand-over: sockets left in blocking mode", "err", err)
	}
	succeeded := false
	defer func() {
		if !succeeded {
			aliveW.Close()
		}
		// On success aliveW stays open, unreferenced, until this
		// process exits.
	}()
	pid := cmd.Process.Pid
	log.Info("hand-over: new daemon started", "pid", pid, "exe", exe)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ready := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := r.Read(b[:])
		ready <- err
	}()
	timer := time.NewTimer(handoverReadyWait)
	defer timer.Stop()
	fail := func(err error) (int, error) {
		_ = cmd.Process.Kill()
		return 0, fmt.Errorf("hand-over to pid %d: %w", pid, err)
	}
	select {
	case err := <-ready:
		if err != nil {
			// EOF: the new daemon closed the pipe without a word (it
			// failed, or exits).
			select {
			case werr := <-exited:
				return 0, fmt.Errorf("hand-over to pid %d: the new daemon exited before it was ready: %v", pid, werr)
			case <-time.After(5 * time.Second):
			}
			return fail(fmt.Errorf("ready pipe: %w", err))
		}
	case werr := <-exited:
		return 0, fmt.Errorf("hand-over to pid %d: the new daemon exited before it was ready: %v", pid, werr)
	case <-timer.C:
		return fail(fmt.Errorf("not ready within %s", handoverReadyWait))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	// The new daemon is the service's main process from now on.
	if err := sdNotify("MAINPID=" + strconv.Itoa(pid)); err != nil {
		log.Warn("systemd notification failed", "err", err)
	}
	succeeded = true
	keepOpen = append(keepOpen, aliveW)
	return pid, nil
}

// keepOpen holds descriptors that must stay open until the process exits.
var keepOpen []*os.File

// handoverEnv drops the variables of an earlier activation from env.
func handoverEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case envListenFDs, envListenPID, envListenFDNames, envHandoverFDs, envHandoverNames, envHandoverReady, envPredecessor:
			continue
		}
		out = append(out, kv)
	}
	return out
}

// sdNotify sends a state to systemd's notification socket (sd_notify(3));
// without NOTIFY_SOCKET it does nothing.
func sdNotify(state string) error {
	path := os.Getenv(envNotifySocket)
	if path == "" {
		return nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}

// serveUntilStop waits for the end of the daemon: a stop signal (ctx), a
// failed server (errc), or a SIGHUP whose hand-over succeeded. A failed
// hand-over is logged and the daemon keeps serving.
func serveUntilStop(ctx context.Context, socks *listeners, exe string, hup <-chan os.Signal, errc <-chan error, checkpoint func(), log *slog.Logger) error {
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping")
			return nil
		case err := <-errc:
			log.Error("stopping", "err", err)
			return err
		case <-hup:
			log.Info("hand-over: SIGHUP received, starting the new daemon", "exe", exe)
			checkpoint()
			pid, err := socks.handOver(ctx, exe, os.Args[1:], log)
			if err != nil {
				log.Error("hand-over failed; this daemon keeps serving", "err", err)
				continue
			}
			log.Info("hand-over complete: draining and exiting", "new_pid", pid)
			return nil
		}
	}
}

// handoverCheckpoint saves, just before a successor starts, the state the
// successor loads at its start: the gateway sessions
// (identity.sessions.state_file), so agents' sessions continue on the new
// daemon.
func (d *daemon) handoverCheckpoint() {
	f := d.cfg.Identity.Sessions.StateFile
	swap, ok := d.gw.Credentials.(*gateway.Swap)
	if f == "" || !ok {
		return
	}
	if err := swap.SaveSessions(f); err != nil {
		d.log.Error("hand-over: session state not saved", "file", f, "err", err)
	}
}

// adoptPredecessorSessions loads the sessions the predecessor saved at its
// exit: those it opened while this daemon was starting.
func (d *daemon) adoptPredecessorSessions() {
	f := d.cfg.Identity.Sessions.StateFile
	swap, ok := d.gw.Credentials.(*gateway.Swap)
	if f == "" || !ok {
		return
	}
	n, err := swap.LoadSessions(f)
	if err != nil {
		d.log.Error("hand-over: predecessor's session state unreadable", "file", f, "err", err)
		return
	}
	d.log.Info("hand-over: predecessor exited; its sessions adopted", "sessions", n)
}
