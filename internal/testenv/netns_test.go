package testenv

import (
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// echoListener accepts connections in ns, sends prefix plus whatever the
// client wrote before its first pause, and closes.
func echoListener(t *testing.T, ns *Netns, network, addr, prefix string) netip.AddrPort {
	t.Helper()
	l, err := ns.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				buf := make([]byte, 64)
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, _ := c.Read(buf)
				io.WriteString(c, prefix+string(buf[:n]))
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

func TestClientInIsolatedNamespace(t *testing.T) {
	RequireRoot(t)
	ns := NewNetns(t)
	cg := NewCgroup(t)
	root, err := Cgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	cookie, err := ns.Cookie()
	if err != nil {
		t.Fatal(err)
	}
	echo := echoListener(t, ns, "tcp4", "127.0.0.1:0", "hello ")
	udp, err := ns.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			udp.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	udpAddr := udp.LocalAddr().(*net.UDPAddr).AddrPort()
	snowflake := netip.AddrPortFrom(SnowflakeAddr, 443).String()

	tests := []struct {
		name   string
		root   bool
		action ClientAction
		check  func(t *testing.T, r ClientResult)
	}{
		{
			name:   "escape meets the unreachable route",
			action: ClientAction{Op: OpConnect, Network: "tcp4", Addr: snowflake},
			check:  wantErrno("connect", "EHOSTUNREACH"),
		},
		{
			name:   "v6 escape meets the unreachable route",
			action: ClientAction{Op: OpConnect, Network: "tcp6", Addr: netip.AddrPortFrom(SnowflakeAddr6, 443).String()},
			check:  wantErrno("connect", "ENETUNREACH", "EHOSTUNREACH"),
		},
		{
			name:   "loopback echo",
			action: ClientAction{Op: OpConnect, Network: "tcp4", Addr: echo.String(), Send: "x"},
			check: func(t *testing.T, r ClientResult) {
				if !r.OK() || r.Received != "hello x" || r.Peer != echo.String() {
					t.Errorf("got %v, want peer %v and %q", r, echo, "hello x")
				}
			},
		},
		{
			name:   "non-blocking connect",
			action: ClientAction{Op: OpConnect, Network: "tcp4", Addr: echo.String(), NonBlocking: true},
			check: func(t *testing.T, r ClientResult) {
				if !r.OK() || r.Received != "hello " {
					t.Errorf("got %v", r)
				}
			},
		},
		{
			name:   "io_uring connect",
			action: ClientAction{Op: OpIOUringConnect, Network: "tcp4", Addr: echo.String(), Send: "u"},
			check: func(t *testing.T, r ClientResult) {
				if r.Stage == "io_uring_setup" {
					t.Skipf("io_uring unavailable here: %v", r)
				}
				if !r.OK() || r.Received != "hello u" {
					t.Errorf("got %v", r)
				}
			},
		},
		{
			name:   "fast open",
			action: ClientAction{Op: OpFastOpen, Network: "tcp4", Addr: echo.String(), Send: "f"},
			check: func(t *testing.T, r ClientResult) {
				if !r.OK() || r.Received != "hello f" {
					t.Errorf("got %v", r)
				}
			},
		},
		{
			name:   "udp unconnected",
			action: ClientAction{Op: OpDNSUnconnected, Network: "udp4", Addr: udpAddr.String(), Send: "q"},
			check: func(t *testing.T, r ClientResult) {
				if !r.OK() || r.Received != "re:q" || r.From != udpAddr.String() {
					t.Errorf("got %v", r)
				}
			},
		},
		{
			name:   "udp connected",
			action: ClientAction{Op: OpDNSConnected, Network: "udp4", Addr: udpAddr.String(), Send: "c"},
			check: func(t *testing.T, r ClientResult) {
				if !r.OK() || r.Received != "re:c" || r.Peer != udpAddr.String() {
					t.Errorf("got %v", r)
				}
			},
		},
		{
			name:   "nobody cannot open raw sockets",
			action: ClientAction{Op: OpSocket, Family: unix.AF_INET, Type: unix.SOCK_RAW, Proto: unix.IPPROTO_ICMP},
			check:  wantErrno("socket", "EPERM"),
		},
		{
			name:   "root can open raw sockets",
			root:   true,
			action: ClientAction{Op: OpSocket, Family: unix.AF_INET, Type: unix.SOCK_RAW, Proto: unix.IPPROTO_ICMP},
			check: func(t *testing.T, r ClientResult) {
				if !r.OK() || r.UID != 0 {
					t.Errorf("got %v", r)
				}
			},
		},
		{
			name:   "nobody may not set SO_MARK",
			action: ClientAction{Op: OpConnect, Network: "tcp4", Addr: echo.String(), Mark: 0x539},
			check: func(t *testing.T, r ClientResult) {
				if !r.OK() || r.SockoptErrnos["SO_MARK"] != "EPERM" {
					t.Errorf("got %v, want the connect to work and SO_MARK refused", r)
				}
			},
		},
		{
			name:   "nobody cannot move itself to the root cgroup",
			action: ClientAction{Op: OpWriteFile, Path: filepath.Join(root, "cgroup.procs"), Data: "$PID"},
			check:  wantErrno("write", "EACCES"),
		},
		{
			name:   "unshare -Urn leaves an empty namespace",
			action: ClientAction{Op: OpUnshare, Nested: &ClientAction{Op: OpConnect, Network: "tcp4", Addr: echo.String()}},
			check: func(t *testing.T, r ClientResult) {
				if r.Nested == nil || r.Nested.Errno != "ENETUNREACH" || r.Nested.UID != 0 || r.Nested.NetnsCookie == cookie {
					t.Errorf("got %v, want ENETUNREACH as root of a new user namespace in a new netns", r)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := RunClient(t, Proc{Cgroup: cg, Netns: ns, Root: tc.root}, tc.action)
			wantUID := Nobody
			if tc.root {
				wantUID = 0
			}
			if r.UID != wantUID || r.GID != wantUID {
				t.Errorf("client ran as %d:%d, want %d", r.UID, r.GID, wantUID)
			}
			if !tc.root && strings.Trim(r.CapEff, "0") != "" {
				t.Errorf("nobody client has capabilities %s", r.CapEff)
			}
			if filepath.Join(root, r.Cgroup) != cg.Path {
				t.Errorf("client in cgroup %s, want %s", r.Cgroup, cg.Path)
			}
			if r.NetnsCookie != cookie {
				t.Errorf("client in netns %d, want %d", r.NetnsCookie, cookie)
			}
			tc.check(t, r)
		})
	}
}

func wantErrno(stage string, errnos ...string) func(*testing.T, ClientResult) {
	return func(t *testing.T, r ClientResult) {
		t.Helper()
		for _, e := range errnos {
			if r.Errno == e && r.Stage == stage {
				return
			}
		}
		t.Errorf("got %v, want %v at %s", r, errnos, stage)
	}
}

func TestContainerNetns(t *testing.T) {
	RequireRoot(t)
	host := NewNetns(t)
	v := NewContainerNetns(t, host, netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("10.77.0.2/24"))
	// A host address on lo, the way a gateway publishes itself to containers.
	vip := netip.MustParsePrefix("169.254.77.1/32")
	if err := host.AddAddress("lo", vip); err != nil {
		t.Fatal(err)
	}
	echo := echoListener(t, host, "tcp4", vip.Addr().String()+":0", "host ")
	r := RunClient(t, Proc{Netns: v.Netns}, ClientAction{Op: OpConnect, Network: "tcp4", Addr: echo.String()})
	if !r.OK() || r.Received != "host " {
		t.Fatalf("container → host address: %v", r)
	}
	if la := netip.MustParseAddrPort(r.Local); la.Addr() != v.PeerAddr.Addr() {
		t.Errorf("container client local address %v, want %v", la, v.PeerAddr.Addr())
	}
	// Anything beyond the host namespace stays unreachable.
	r = RunClient(t, Proc{Netns: v.Netns}, ClientAction{Op: OpConnect, Network: "tcp4", Addr: netip.AddrPortFrom(SnowflakeAddr, 443).String(), TimeoutSec: 2})
	if r.OK() {
		t.Errorf("container reached %v: %v", SnowflakeAddr, r)
	}
}

func TestCommandAsNobody(t *testing.T) {
	RequireRoot(t)
	ns := NewNetns(t)
	cg := NewCgroup(t)
	cmd := Command(t, Proc{Cgroup: cg, Netns: ns}, "sh", "-c", "id -u; id -G; grep CapEff /proc/self/status; cat /proc/self/cgroup | grep ^0::; readlink /proc/self/ns/net")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	root, _ := Cgroup2Root()
	var st unix.Stat_t
	if err := unix.Stat(ns.Path(), &st); err != nil {
		t.Fatal(err)
	}
	want := []string{strconv.Itoa(Nobody), strconv.Itoa(Nobody), "CapEff:\t0000000000000000",
		"0::" + strings.TrimPrefix(cg.Path, root), "net:[" + strconv.FormatUint(st.Ino, 10) + "]"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", lines, want)
	}
}

func TestCgroupCleanupKillsProcesses(t *testing.T) {
	RequireRoot(t)
	var cg *Cgroup
	var pid int
	t.Run("inner", func(t *testing.T) {
		cg = NewCgroup(t)
		cg.Child(t, "child")
		cmd := Command(t, Proc{Cgroup: cg}, "sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid = cmd.Process.Pid
		go cmd.Wait()
		procs, err := cg.Procs()
		if err != nil || len(procs) != 1 || procs[0] != pid {
			t.Fatalf("procs %v (%v), want [%d]", procs, err, pid)
		}
	})
	if _, err := os.Stat(cg.Path); !os.IsNotExist(err) {
		t.Errorf("cgroup %s still there after cleanup: %v", cg.Path, err)
	}
	// The process was killed; it is gone once reaped by cmd.Wait.
	deadline := time.Now().Add(30 * time.Second)
	for unix.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive after cleanup", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
