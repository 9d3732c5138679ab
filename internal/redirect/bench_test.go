package redirect_test

// The cost of one connect through the redirect, against the same connect with
// no program attached and against an nftables REDIRECT rule, side by side in
// one run (scripts/bench-redirect.sh; figures in BENCHMARKS.md).
//
// One iteration, all on one OS thread in a private network namespace: socket,
// connect (blocking), getpeername (Go's net.Dial does it too), accept on the
// gateway's listener, the gateway learning the original destination (Lookup
// for eBPF, SO_ORIGINAL_DST for nftables, nothing for the baseline), close
// both ends (the client with SO_LINGER 0, so no TIME_WAIT piles up). The
// benchmark process moves itself into the cgroup under test for the loop: a
// socket's cgroup is the one its creator was in.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/testenv"
)

// How the gateway learns where a connection was going.
type origMode int

const (
	origNone    origMode = iota // baseline: a direct connect has nothing to learn
	origLookup                  // eBPF tuple map (Redirect.Lookup)
	origConntrk                 // nftables: conntrack's SO_ORIGINAL_DST
)

// benchNet is a private network namespace with the gateway's listener.
type benchNet struct {
	ns       *testenv.Netns
	listenFD int // blocking
	proxy    netip.AddrPort
}

type connectBench struct {
	home   string // the cgroup the benchmark process came from
	redir  *redirect.Redirect
	agents *testenv.Cgroup
	pinDir string
}

// newBenchNet creates the namespace and the listener, while the process is
// still in its own cgroup: accepted sockets inherit the listener's cgroup, so
// the programs never run for the gateway's side.
func newBenchNet(b *testing.B) *benchNet {
	b.Helper()
	n := &benchNet{ns: testenv.NewNetns(b)}
	if err := n.ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Listen(fd, 128); err != nil {
			unix.Close(fd)
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			unix.Close(fd)
			return err
		}
		n.listenFD = fd
		n.proxy = netip.MustParseAddrPort(testenv.SockaddrString(sa))
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(n.listenFD) })
	return n
}

func BenchmarkConnect(b *testing.B) {
	testenv.RequireRoot(b)
	home, err := testenv.CgroupOfPID(0)
	if err != nil {
		b.Fatal(err)
	}
	cb := &connectBench{home: home}
	plain := testenv.NewCgroup(b)
	cb.agents = testenv.NewCgroup(b)
	// The eBPF runs and the baseline share a namespace; nftables gets its
	// own, because a NAT table switches conntrack on for every connection
	// in its namespace and would tax the others too.
	main := newBenchNet(b)
	cb.pinDir = redirect.NewTestPinDir(b)
	if err := main.ns.Do(func() error {
		var err error
		cb.redir, err = redirect.Install(redirect.Config{Cgroup: cb.agents.Path, PinDir: cb.pinDir, Proxy: main.proxy})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cb.redir.Close() })
	var nft *benchNet
	if nftPath, err := exec.LookPath("nft"); err != nil {
		b.Logf("nftables comparison left out: %v", err)
	} else {
		nft = newBenchNet(b)
		setupNftables(b, nft, nftPath)
	}

	snowflake := netip.AddrPortFrom(testenv.SnowflakeAddr, 443)
	perOp := map[string]float64{}
	run := func(name string, n *benchNet, cg *testenv.Cgroup, dst netip.AddrPort, mode origMode, stats bool) {
		b.Run(name, func(b *testing.B) {
			cb.loop(b, n, cg, dst, mode, stats)
			perOp[name] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		})
	}
	run("none", main, plain, main.proxy, origNone, false)
	run("ebpf", main, cb.agents, snowflake, origLookup, false)
	// The redirect's kernel side alone: rewrite, the handoff to sockops, the
	// tuple map, but no Lookup by the gateway.
	run("ebpf-no-lookup", main, cb.agents, snowflake, origNone, false)
	// The programs run but have nothing to rewrite (a port not
	// intercepted): the price every other connect of an agent pays.
	run("ebpf-no-rewrite", main, cb.agents, main.proxy, origNone, false)
	if nft != nil {
		run("nftables", nft, plain, snowflake, origConntrk, false)
	}
	// The same eBPF loop again with the kernel's BPF statistics on, for the
	// per-program run time (stats cost a little themselves, so the timing
	// comparison above runs without them).
	run("ebpf-progstats", main, cb.agents, snowflake, origLookup, true)
	if nft != nil {
		b.Run("paired", func(b *testing.B) { benchPaired(b, main, nft) })
	}

	if base := perOp["none"]; base > 0 {
		var sb strings.Builder
		for _, name := range []string{"ebpf", "ebpf-no-lookup", "ebpf-no-rewrite", "nftables"} {
			if v, ok := perOp[name]; ok {
				fmt.Fprintf(&sb, " %s/none=%.3f (%+.2fµs)", name, v/base, (v-base)/1000)
			}
		}
		if e, n := perOp["ebpf"], perOp["nftables"]; e > 0 && n > 0 {
			fmt.Fprintf(&sb, " ebpf/nftables=%.3f", e/n)
		}
		b.Logf("ratios:%s", sb.String())
	}
}

// setupNftables installs, in the namespace, a route for the stand-in
// Snowflake range through lo and an nftables REDIRECT of its port 443 to the
// gateway: the conntrack NAT alternative to the eBPF redirect.
func setupNftables(b *testing.B, n *benchNet, nft string) {
	b.Helper()
	rules := fmt.Sprintf(`table ip snowgate_bench {
	chain out {
		type nat hook output priority -100; policy accept;
		ip daddr 203.0.113.0/24 tcp dport 443 redirect to :%d
	}
}
`, n.proxy.Port())
	steps := []struct {
		args  []string
		stdin string
	}{
		{[]string{"ip", "route", "add", "203.0.113.0/24", "dev", "lo"}, ""},
		{[]string{nft, "-f", "-"}, rules},
	}
	for _, st := range steps {
		// nsenter takes the namespace by our file descriptor path.
		cmd := exec.Command("nsenter", append([]string{"--net=" + n.ns.Path()}, st.args...)...)
		cmd.Stdin = strings.NewReader(st.stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v: %s", st.args, err, out)
		}
	}
}

// loop runs b.N connects from cgroup cg to dst.
func (cb *connectBench) loop(b *testing.B, n *benchNet, cg *testenv.Cgroup, dst netip.AddrPort, mode origMode, stats bool) {
	if err := cg.Add(os.Getpid()); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := os.WriteFile(filepath.Join(cb.home, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			// Cleanup would kill the cgroup, and us with it.
			panic(fmt.Sprintf("move the benchmark back to %s: %v", cb.home, err))
		}
	}()
	err := n.ns.Do(func() error {
		// Warm up: caches, conntrack, the first LRU entries.
		for range 200 {
			if err := cb.once(n, dst, mode); err != nil {
				return err
			}
		}
		var before map[string]*ebpf.ProgramStats
		var progs map[string]*ebpf.Program
		if stats {
			closer, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
			if err != nil {
				return fmt.Errorf("enable BPF stats: %w", err)
			}
			defer closer.Close()
			if progs, err = ourPrograms(cb.agents.Path, cb.pinDir); err != nil {
				return err
			}
			defer func() {
				for _, p := range progs {
					p.Close()
				}
			}()
			if before, err = programStats(progs); err != nil {
				return err
			}
		}
		b.ResetTimer()
		for range b.N {
			if err := cb.once(n, dst, mode); err != nil {
				return err
			}
		}
		b.StopTimer()
		if stats {
			after, err := programStats(progs)
			if err != nil {
				return err
			}
			names := make([]string, 0, len(after))
			for name := range after {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				runs := after[name].RunCount - before[name].RunCount
				if runs == 0 {
					continue
				}
				ns := float64(after[name].Runtime-before[name].Runtime) / float64(runs)
				b.ReportMetric(ns, name+"-ns/run")
				b.ReportMetric(float64(runs)/float64(b.N), name+"-runs/op")
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// once is one connect as the gateway sees it.
func (cb *connectBench) once(n *benchNet, dst netip.AddrPort, mode origMode) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer func() {
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
	}()
	sa := &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}
	if err := testenv.Connect(fd, sa, 10*time.Second); err != nil {
		return fmt.Errorf("connect %v: %w", dst, err)
	}
	if _, err := unix.Getpeername(fd); err != nil {
		return fmt.Errorf("getpeername: %w", err)
	}
	nfd, peer, err := acceptEINTR(n.listenFD)
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer unix.Close(nfd)
	var orig netip.AddrPort
	switch mode {
	case origLookup:
		o, err := cb.redir.Lookup(netip.MustParseAddrPort(testenv.SockaddrString(peer)))
		if err != nil {
			return err
		}
		orig = o.Dst
	case origConntrk:
		if orig, err = originalDst(nfd); err != nil {
			return err
		}
	default:
		return nil
	}
	if orig != dst {
		return fmt.Errorf("gateway learned %v, want %v", orig, dst)
	}
	return nil
}

func acceptEINTR(fd int) (int, unix.Sockaddr, error) {
	for {
		nfd, sa, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			return nfd, sa, err
		}
	}
}

// originalDst is conntrack's SO_ORIGINAL_DST of an accepted IPv4 socket.
func originalDst(fd int) (netip.AddrPort, error) {
	const soOriginalDst = 80
	var sa unix.RawSockaddrInet4
	l := uint32(unix.SizeofSockaddrInet4)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_IP, soOriginalDst,
		uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", errno)
	}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1])), nil
}

// ourPrograms opens snowgate's programs effective on cgroup, by hook name.
func ourPrograms(cgroup, pinDir string) (map[string]*ebpf.Program, error) {
	st, err := redirect.QueryCgroup(cgroup, pinDir)
	if err != nil {
		return nil, err
	}
	out := map[string]*ebpf.Program{}
	for _, ap := range st.Programs {
		if !ap.Ours {
			continue
		}
		p, err := ebpf.NewProgramFromID(ap.ID)
		if err != nil {
			return nil, fmt.Errorf("open program %s: %w", ap.Hook, err)
		}
		out[ap.Hook] = p
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no snowgate program effective on %s", cgroup)
	}
	return out, nil
}

func programStats(progs map[string]*ebpf.Program) (map[string]*ebpf.ProgramStats, error) {
	out := map[string]*ebpf.ProgramStats{}
	for name, p := range progs {
		s, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", name, err)
		}
		out[name] = s
	}
	return out, nil
}

// benchPaired measures the variants interleaved, one connect of each per
// iteration, so that they see the same machine load: on a shared, busy
// machine the separate runs above drift by more than the differences they
// measure. Each variant runs on its own OS thread, placed with cgroup v2
// threaded mode (threads of one process in different cgroups: a socket
// belongs to its creating thread's cgroup). It reports the median of each
// variant and the ratios of the medians.
func benchPaired(b *testing.B, main, nft *benchNet) {
	home, err := testenv.CgroupOfPID(0)
	if err != nil {
		b.Fatal(err)
	}
	root := testenv.NewCgroup(b)
	plain, agents := root.Child(b, "plain"), root.Child(b, "agents")
	for _, cg := range []*testenv.Cgroup{plain, agents} {
		if err := os.WriteFile(filepath.Join(cg.Path, "cgroup.type"), []byte("threaded"), 0); err != nil {
			b.Fatalf("threaded cgroup: %v", err)
		}
	}
	pinDir := redirect.NewTestPinDir(b)
	var r *redirect.Redirect
	if err := main.ns.Do(func() error {
		var err error
		r, err = redirect.Install(redirect.Config{Cgroup: agents.Path, PinDir: pinDir, Proxy: main.proxy})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if err := root.Add(os.Getpid()); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := os.WriteFile(filepath.Join(home, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			panic(fmt.Sprintf("move the benchmark back to %s: %v", home, err))
		}
	}()

	snowflake := netip.AddrPortFrom(testenv.SnowflakeAddr, 443)
	cb := &connectBench{redir: r}
	variants := []struct {
		name string
		n    *benchNet
		cg   *testenv.Cgroup
		dst  netip.AddrPort
		mode origMode
	}{
		{"none", main, plain, main.proxy, origNone},
		{"ebpf", main, agents, snowflake, origLookup},
		{"ebpf-no-lookup", main, agents, snowflake, origNone},
		{"ebpf-no-rewrite", main, agents, main.proxy, origNone},
		{"nftables", nft, plain, snowflake, origConntrk},
	}
	type request struct{ reply chan<- result }
	workers := make([]chan request, len(variants))
	for i, v := range variants {
		workers[i] = make(chan request)
		ready := make(chan error)
		go func() {
			// The thread is changed for good (namespace, cgroup): it stays
			// locked and dies with the goroutine.
			runtime.LockOSThread()
			ns, err := os.Open(v.n.ns.Path())
			if err == nil {
				err = unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
				ns.Close()
			}
			if err == nil {
				err = os.WriteFile(filepath.Join(v.cg.Path, "cgroup.threads"), []byte(strconv.Itoa(unix.Gettid())), 0)
			}
			ready <- err
			if err != nil {
				return
			}
			for req := range workers[i] {
				t0 := time.Now()
				err := cb.once(v.n, v.dst, v.mode)
				req.reply <- result{time.Since(t0), err}
			}
		}()
		if err := <-ready; err != nil {
			b.Fatalf("place the %s thread: %v", v.name, err)
		}
	}
	defer func() {
		for _, w := range workers {
			close(w)
		}
	}()
	samples := make([][]time.Duration, len(variants))
	reply := make(chan result)
	measure := func(rounds int, keep bool) {
		for range rounds {
			for i := range variants {
				workers[i] <- request{reply}
				res := <-reply
				if res.err != nil {
					b.Fatalf("%s: %v", variants[i].name, res.err)
				}
				if keep {
					samples[i] = append(samples[i], res.d)
				}
			}
		}
	}
	measure(200, false)
	b.ResetTimer()
	measure(b.N, true)
	b.StopTimer()
	medians := map[string]float64{}
	for i, v := range variants {
		slices.Sort(samples[i])
		m := float64(samples[i][len(samples[i])/2].Nanoseconds())
		medians[v.name] = m
		b.ReportMetric(m, v.name+"-ns/connect")
	}
	for _, name := range []string{"ebpf", "ebpf-no-lookup", "ebpf-no-rewrite", "nftables"} {
		b.ReportMetric(medians[name]/medians["none"], name+"/none")
	}
	b.ReportMetric(medians["ebpf"]/medians["nftables"], "ebpf/nftables")
}

type result struct {
	d   time.Duration
	err error
}

// BenchmarkLookup is the gateway's per-connection cost of learning the
// original destination (Redirect.Lookup, a hit), next to a bare lookup of the
// same pinned map with raw bytes (the bpf(2) call alone) as the baseline: the
// connection's sg_conns slot, where the programs record it.
func BenchmarkLookup(b *testing.B) {
	testenv.RequireRoot(b)
	home, err := testenv.CgroupOfPID(0)
	if err != nil {
		b.Fatal(err)
	}
	agents := testenv.NewCgroup(b)
	n := newBenchNet(b)
	pinDir := redirect.NewTestPinDir(b)
	var r *redirect.Redirect
	if err := n.ns.Do(func() error {
		var err error
		r, err = redirect.Install(redirect.Config{Cgroup: agents.Path, PinDir: pinDir, Proxy: n.proxy})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer r.Close()

	// One redirected connection, kept open while the lookups run.
	var clientFD, serverFD int
	var peer netip.AddrPort
	if err := agents.Add(os.Getpid()); err != nil {
		b.Fatal(err)
	}
	err = n.ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		clientFD = fd
		if err := testenv.Connect(fd, &unix.SockaddrInet4{Addr: testenv.SnowflakeAddr.As4(), Port: 443}, 10*time.Second); err != nil {
			return err
		}
		nfd, sa, err := acceptEINTR(n.listenFD)
		serverFD, peer = nfd, netip.MustParseAddrPort(testenv.SockaddrString(sa))
		return err
	})
	if werr := os.WriteFile(filepath.Join(home, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); werr != nil {
		panic(fmt.Sprintf("move the benchmark back to %s: %v", home, werr))
	}
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(clientFD)
	defer unix.Close(serverFD)

	b.Run("Redirect.Lookup", func(b *testing.B) {
		for range b.N {
			o, err := r.Lookup(peer)
			if err != nil || o.Dst.Port() != 443 {
				b.Fatalf("lookup %v: %+v, %v", peer, o, err)
			}
		}
	})
	b.Run("raw-bytes", func(b *testing.B) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "sg_conns"), nil)
		if err != nil {
			b.Skipf("pinned slot map not found under its current name: %v", err)
		}
		defer m.Close()
		key := make([]byte, m.KeySize())
		binary.NativeEndian.PutUint32(key, redirect.ConnSlot(peer))
		val := make([]byte, m.ValueSize())
		for range b.N {
			if err := m.Lookup(key, val); err != nil {
				b.Fatal(err)
			}
		}
	})
}
