package redirect

// The fail-closed path of a redirected connection whose tuple could not be
// recorded: sockops marks the socket SG_F_UNRECORDED and bumps sg_unrecorded,
// and the egress backstop then drops every packet of that socket, so the
// gateway never sees a connection it cannot attribute.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/snowgate/snowgate/internal/testenv"
)

// unrecordedPayload is what the client writes on a connection after it was
// marked unrecorded.
const unrecordedPayload = "select secret from vault"

// TestUnrecordedSocketFailsClosed checks that a redirected socket marked
// SG_F_UNRECORDED carries nothing to the gateway.
//
// The production tuple map is an LRU hash: an update evicts the least
// recently used record instead of failing, so its failure path cannot be
// reached by filling it. Two ways in are therefore tested:
//
//   - injected: the real Install; the client connects through the redirect,
//     then the test gives the socket storage with SG_F_UNRECORDED from
//     userspace, as sockops does on failure (the socket taken from the client
//     with pidfd_getfd), and the socket writes and shuts down. The egress
//     backstop only looks at socket storage once sg_unrecorded is non-zero,
//     so with it at 0 the data still
//     arrives (the gate works as documented) and with it at 1 nothing does.
//   - full tuple map: the same programs loaded with sg_tuples replaced by a
//     one-entry plain hash that is already full, so the sockops update
//     really fails (E2BIG) and sockops itself marks the socket and opens the
//     gate before the SYN: the connect never completes.
func TestUnrecordedSocketFailsClosed(t *testing.T) {
	testenv.RequireRoot(t)
	snowflake := netip.MustParseAddrPort("203.0.113.10:443")
	tests := []struct {
		name    string
		network string
		dst     string
		// fullTupleMap loads the programs with a full one-entry tuple
		// map instead of injecting the flag.
		fullTupleMap bool
		// gate is the value of sg_unrecorded[0] when the flag is
		// injected (injected cases only).
		gate uint64
		// wantDelivered: the payload and the FIN reach the gateway.
		wantDelivered bool
	}{
		{name: "injected flag, gate closed: egress does not look", network: "tcp4", dst: "203.0.113.10:443", gate: 0, wantDelivered: true},
		{name: "injected flag, gate open: every packet dropped", network: "tcp4", dst: "203.0.113.10:443", gate: 1},
		{name: "injected flag, gate open, v4-mapped", network: "tcp6", dst: "[::ffff:203.0.113.10]:443", gate: 1},
		{name: "full tuple map: the SYN never leaves", network: "tcp4", dst: "203.0.113.10:443", fullTupleMap: true},
		{name: "full tuple map, v4-mapped", network: "tcp6", dst: "[::ffff:203.0.113.10]:443", fullTupleMap: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newRedirectFixture(t)
			if tc.fullTupleMap {
				testUnrecordedByFullMap(t, f, tc.network, tc.dst, snowflake)
				return
			}
			testUnrecordedInjected(t, f, tc.network, tc.dst, tc.gate, tc.wantDelivered)
		})
	}
}

// testUnrecordedInjected connects through the installed redirect, marks the
// established socket unrecorded and has it send data and a FIN.
func testUnrecordedInjected(t *testing.T, f *redirectFixture, network, dst string, gate uint64, wantDelivered bool) {
	t.Helper()
	r := f.install(t)
	defer r.Close()
	setUnrecordedGate(t, filepath.Join(f.pinDir, snowgateMapSgUnrecorded), gate)

	rep := f.client.Do(t, connectAction(network, dst))
	if rep.Err != "" {
		t.Fatalf("connect %s %s: %s", network, dst, rep.Err)
	}
	conn := acceptOn(t, f.gw.tcp)
	defer conn.Close()
	if _, err := r.Lookup(conn.RemoteAddr().(*net.TCPAddr).AddrPort()); err != nil {
		t.Fatalf("the connection was not recorded before the flag was injected: %v", err)
	}

	fd := clientSocket(t, f.client.Pid, rep.Local)
	defer func() {
		// Abortive close: a socket whose packets are dropped would
		// otherwise retransmit its FIN for minutes.
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
		f.client.Do(t, closeAction)
	}()
	markUnrecorded(t, r, fd)

	before := counters(t, r)
	// The write only queues the data: a dropped transmission is retried by
	// TCP, not reported to the writer.
	if n, err := unix.Write(fd, []byte(unrecordedPayload)); err != nil || n != len(unrecordedPayload) {
		t.Fatalf("client write: %d bytes, %v", n, err)
	}
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		t.Fatalf("client shutdown: %v", err)
	}

	if wantDelivered {
		if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("gateway read: %v (got %q)", err, got)
		}
		if string(got) != unrecordedPayload {
			t.Errorf("gateway received %q, want %q", got, unrecordedPayload)
		}
		after := counters(t, r)
		if after["egress_dropped"] != before["egress_dropped"] {
			t.Errorf("egress_dropped %d -> %d with sg_unrecorded at 0, want unchanged", before["egress_dropped"], after["egress_dropped"])
		}
		return
	}

	// Wait until the backstop has dropped something, then make sure the
	// gateway got neither data nor the FIN: every later retransmission
	// meets the same verdict.
	after := waitForCounter(t, r, "egress_dropped", before["egress_dropped"]+1)
	if after["tuple_update_failed"] != before["tuple_update_failed"] {
		t.Errorf("tuple_update_failed %d -> %d, want unchanged (the flag was injected)", before["tuple_update_failed"], after["tuple_update_failed"])
	}
	if err := conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("gateway read %q, %v: want no bytes and no EOF (deadline exceeded)", buf[:n], err)
	}
}

// testUnrecordedByFullMap attaches the programs with a full tuple map, so
// sockops itself fails to record the connect, and checks that the connect
// never completes.
func testUnrecordedByFullMap(t *testing.T, f *redirectFixture, network, dst string, want netip.AddrPort) {
	t.Helper()
	r, gate := installWithFullTupleMap(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); r.Close() }()
	events, err := r.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := counters(t, r)

	// A short send timeout: the SYN is dropped, so the connect can only
	// time out.
	rep := f.client.Do(t, connectActionWithin(network, dst, 2))
	if rep.Err == "" {
		t.Fatalf("connect %s %s succeeded (local %s) although its tuple could not be recorded", network, dst, rep.Local)
	}

	after := counters(t, r)
	if got := after["tuple_update_failed"] - before["tuple_update_failed"]; got != 1 {
		t.Errorf("tuple_update_failed rose by %d, want 1 (all: %v)", got, after)
	}
	if after["tuple_recorded"] != before["tuple_recorded"] {
		t.Errorf("tuple_recorded %d -> %d, want unchanged", before["tuple_recorded"], after["tuple_recorded"])
	}
	if after["egress_dropped"] <= before["egress_dropped"] {
		t.Errorf("egress_dropped %d -> %d, want an increase (the SYN)", before["egress_dropped"], after["egress_dropped"])
	}
	var n uint64
	if err := gate.Lookup(uint32(0), &n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("sg_unrecorded = %d, want 1", n)
	}
	if conns, err := r.Connections(); err != nil || len(conns) != 0 {
		t.Errorf("Connections() = %+v, %v: want none recorded", conns, err)
	}

	// Nothing reached the gateway stub: no connection to accept, so no byte.
	if err := f.gw.tcp.SetDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if c, err := f.gw.tcp.Accept(); err == nil {
		c.Close()
		t.Error("the gateway accepted a connection whose tuple was not recorded")
	}

	wantEvent := Event{
		Reason:   "tuple_update_failed",
		Hook:     "sockops",
		Proto:    unix.IPPROTO_TCP,
		Dst:      want,
		CgroupID: f.cg.ID,
		PID:      uint32(f.client.Pid),
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream ended before the tuple_update_failed event")
			}
			if ev.Hook != "sockops" {
				continue // the egress drops of the SYN
			}
			if ev != wantEvent {
				t.Errorf("event %+v, want %+v", ev, wantEvent)
			}
			return
		case <-deadline:
			t.Fatal("no tuple_update_failed event within 30s")
		}
	}
}

// installWithFullTupleMap loads the programs with the fixture's configuration,
// except that sg_tuples is a plain hash of one entry, already filled, and
// sg_conns a single slot held by a stranger (so every tuple goes to
// sg_tuples), and
// attaches them to the fixture's cgroup without pinning (closing the returned
// Redirect detaches them). It returns the redirect and its sg_unrecorded map,
// which is closed at cleanup.
//
// The swap is test-only: in production sg_tuples is an LRU hash, whose
// updates evict instead of failing.
func installWithFullTupleMap(t *testing.T, f *redirectFixture) (*Redirect, *ebpf.Map) {
	t.Helper()
	var (
		r    *Redirect
		gate *ebpf.Map
	)
	err := f.inHostNetns(func(cfg Config, cookie uint64) error {
		spec, err := newSpec(cfg, cookie)
		if err != nil {
			return err
		}
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinNone
		}
		tuples := spec.Maps[snowgateMapSgTuples]
		tuples.Type = ebpf.Hash
		tuples.MaxEntries = 1
		spec.Maps[snowgateMapSgConns].MaxEntries = 1
		var objs snowgateObjects
		if err := spec.LoadAndAssign(&objs, nil); err != nil {
			return fmt.Errorf("load with a one-entry tuple map: %w", err)
		}
		defer objs.snowgatePrograms.Close()
		gate = objs.SgUnrecorded
		r = &Redirect{
			conns:    objs.SgConns,
			tuples:   objs.SgTuples,
			counters: objs.SgCounters,
			events:   objs.SgEvents,
			netns:    objs.SgNetns,
			origins:  objs.SgOrigins,
		}
		filler := snowgateSgTupleKey{Addr: ip6Words(netip.MustParseAddr("::ffff:192.0.2.1")), Port: htons(1)}
		if err := r.tuples.Put(&filler, &snowgateSgOrigin{}); err != nil {
			return fmt.Errorf("fill the tuple map: %w", err)
		}
		if err := r.conns.Put(uint32(0), &snowgateSgConn{O: snowgateSgOrigin{Cookie: strangerCookie}}); err != nil {
			return fmt.Errorf("take the slot: %w", err)
		}
		cg, err := os.Open(f.cg.Path)
		if err != nil {
			return err
		}
		defer cg.Close()
		for _, h := range hooks {
			l, err := link.AttachRawLink(link.RawLinkOptions{
				Target:  int(cg.Fd()),
				Program: h.prog(&objs.snowgatePrograms),
				Attach:  h.attach,
			})
			if err != nil {
				return fmt.Errorf("attach %s: %w", h.name, err)
			}
			r.links = append(r.links, l)
		}
		return nil
	})
	if gate != nil {
		t.Cleanup(func() { gate.Close() })
	}
	if err != nil {
		if r != nil {
			r.Close()
		}
		t.Fatal(err)
	}
	return r, gate
}

// setUnrecordedGate sets sg_unrecorded[0] in the pinned map at pin.
func setUnrecordedGate(t *testing.T, pin string, v uint64) {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), v); err != nil {
		t.Fatalf("set sg_unrecorded: %v", err)
	}
}

// clientSocket returns a duplicate, in this process, of the client's socket
// whose local address is local (as the client reported it). Closed by the
// caller.
func clientSocket(t *testing.T, pid int, local string) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(pidfd)
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.HasPrefix(target, "socket:") {
			continue
		}
		var n int
		if _, err := fmt.Sscan(e.Name(), &n); err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if err != nil {
			t.Fatalf("pidfd_getfd %d of %d: %v", n, pid, err)
		}
		if sa, err := unix.Getsockname(fd); err == nil {
			s := testenv.SockaddrString(sa)
			if s == local {
				return fd
			}
			seen = append(seen, s)
		}
		unix.Close(fd)
	}
	t.Fatalf("client %d has no socket bound to %s (sockets: %v)", pid, local, seen)
	return -1
}

// markUnrecorded does what sockops does when the tuple update fails: it
// gives the socket fd socket storage holding its record (from its sg_conns
// slot or the tuple map, under the socket's local address and port, with its
// cookie) with
// SG_F_UNRECORDED set.
func markUnrecorded(t *testing.T, r *Redirect, fd int) {
	t.Helper()
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		t.Fatalf("SO_COOKIE: %v", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	local := netip.MustParseAddrPort(testenv.SockaddrString(sa))
	key := snowgateSgTupleKey{Addr: ip6Words(local.Addr().WithZone("")), Port: htons(local.Port())}
	var o snowgateSgOrigin
	if c, ok, err := r.conn(key); err != nil {
		t.Fatalf("slot of the client's socket %v: %v", local, err)
	} else if ok {
		o = c.O
	} else if err := r.tuples.Lookup(&key, &o); err != nil {
		t.Fatalf("tuple record of the client's socket %v (cookie %d): %v", local, cookie, err)
	}
	if o.Flags&flagRedirected == 0 || o.Flags&flagUnrecorded != 0 || o.Cookie != cookie {
		t.Fatalf("record flags %#x, cookie %d: want redirected, not unrecorded, cookie %d", o.Flags, o.Cookie, cookie)
	}
	var none snowgateSgOrigin
	if err := r.origins.Lookup(int32(fd), &none); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("socket storage of a recorded TCP socket: %+v, %v; want none (it is only created when the tuple update fails)", none, err)
	}
	o.Flags |= flagUnrecorded
	if err := r.origins.Update(int32(fd), &o, ebpf.UpdateNoExist); err != nil {
		t.Fatalf("mark the client's socket unrecorded: %v", err)
	}
	var check snowgateSgOrigin
	if err := r.origins.Lookup(int32(fd), &check); err != nil {
		t.Fatal(err)
	}
	if check.Flags&flagUnrecorded == 0 {
		t.Fatalf("socket storage flags %#x after the update: SG_F_UNRECORDED not set", check.Flags)
	}
}

func counters(t *testing.T, r *Redirect) map[string]uint64 {
	t.Helper()
	c, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitForCounter polls until the named counter reaches at least atLeast and
// returns the counters then.
func waitForCounter(t *testing.T, r *Redirect, name string, atLeast uint64) map[string]uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := counters(t, r)
		if c[name] >= atLeast {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter %s = %d after 30s, want >= %d (all: %v)", name, c[name], atLeast, c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
