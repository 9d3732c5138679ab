// Package redirect loads snowgate's eBPF programs (bpf/snowgate.c), attaches
// them to the cgroup that holds the agents, and pins links and maps in bpffs so
// the redirect outlives the daemon: a crash or restart fails closed, never
// open. Only Uninstall removes the pins.
//
// The gateway uses Lookup to learn, for an accepted connection, the
// destination the agent asked for and which workload (cgroup, pid, uid)
// opened it. A peer with no entry was not redirected and must be refused.
//
// The programs rewrite TCP to the intercepted ports (443 and 80 by default)
// to the gateway, refuse QUIC, DoT/DoQ, raw sockets and every IP protocol
// other than TCP and UDP, send DNS to the gateway's DNS listener, and keep a
// cgroup_skb egress backstop. See docs/ebpf-redirect.md for the mechanics.
package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// DefaultPinDir is where links and maps are pinned unless Config.PinDir says
// otherwise.
const DefaultPinDir = "/sys/fs/bpf/snowgate"

// DefaultPorts are the TCP ports redirected to the gateway: HTTPS and the
// drivers' plain-HTTP OCSP look-ups.
var DefaultPorts = []uint16{443, 80}

// MaxPorts is how many intercepted ports the programs hold.
const MaxPorts = 8

// ErrNotRedirected is returned by Lookup for a peer that has no record: the
// connection did not come through the redirect and must be refused.
var ErrNotRedirected = errors.New("peer was not redirected")

// ErrNotInstalled means no pinned redirect exists in the pin directory.
var ErrNotInstalled = errors.New("redirect not installed")

// Config says where to attach and where the gateway listens.
type Config struct {
	// Cgroup is the absolute path of the cgroup v2 directory to attach to.
	// Every agent process and container must live at or below it.
	Cgroup string
	// PinDir is the bpffs directory for pinned links and maps; DefaultPinDir
	// when empty.
	PinDir string
	// Proxy is where intercepted TCP (v4 and v4-mapped) goes in the host
	// network namespace, e.g. 127.0.0.1:15443.
	Proxy netip.AddrPort
	// Proxy6 is an optional native IPv6 gateway address in the host network
	// namespace. When invalid, native IPv6 to intercepted ports is refused
	// with EPERM.
	Proxy6 netip.AddrPort
	// HostProxy is the gateway address for clients in other network
	// namespaces (containers), e.g. 169.254.77.1:15443; see
	// EnsureHostAddress. When invalid, those clients are refused unless
	// SetNetnsTarget names a gateway for their namespace.
	HostProxy netip.AddrPort
	// DNS is the gateway's DNS listener (UDP and TCP) in the host network
	// namespace, e.g. 127.0.0.1:15353. When invalid, DNS is not redirected.
	DNS netip.AddrPort
	// HostDNS is the DNS listener for clients in other network namespaces.
	// When invalid it defaults to HostProxy's address with DNS's port.
	HostDNS netip.AddrPort
	// DNS6 is an optional native IPv6 DNS listener. When invalid and DNS is
	// redirected, native IPv6 DNS is refused (resolvers fall back to v4).
	DNS6 netip.AddrPort
	// Ports are the intercepted TCP ports; DefaultPorts when empty. At most
	// MaxPorts.
	Ports []uint16
	// GatewayCgroupID is the cgroup id of the gateway itself (see
	// CgroupID). Every program lets it through: exclusion is by cgroup,
	// never by mark, uid or pid. Zero excludes nothing, which is only safe
	// when the gateway runs outside the attach cgroup.
	GatewayCgroupID uint64
}

// Origin is what the redirect recorded about a connection.
type Origin struct {
	// Dst is the destination the client asked for (IPv4 for v4-mapped).
	Dst netip.AddrPort
	// CgroupID is the cgroup v2 id of the connecting task.
	CgroupID uint64
	// PID is the process (thread-group) id of the connecting task.
	PID uint32
	// UID is the user id of the connecting task.
	UID uint32
}

// Redirect is a handle on an installed redirect: its pinned maps and, after
// Install, its links. Close releases the handle; the redirect stays.
type Redirect struct {
	pinDir string
	// conns is sg_conns; nil while the pinned redirect predates it (a
	// handle opened before an upgrade: conn looks for it again).
	connsMu  sync.Mutex
	conns    *ebpf.Map
	closed   bool
	tuples   *ebpf.Map
	counters *ebpf.Map
	events   *ebpf.Map
	netns    *ebpf.Map
	origins  *ebpf.Map
	links    []link.Link
}

// Flag bits of sg_origin.flags (bpf/snowgate.h).
const (
	flagRedirected = 1 << 0
	flagV4         = 1 << 1
	flagDNS        = 1 << 2
	flagUnrecorded = 1 << 3
)

// hook is one program and where it attaches. The order of hooks is the attach
// order: backstops and bookkeeping first, the rewriting connect hooks last, so
// nothing is ever redirected before its tuple can be recorded. Uninstall
// detaches in reverse.
type hook struct {
	name   string
	prog   func(*snowgatePrograms) *ebpf.Program
	attach ebpf.AttachType
}

var hooks = []hook{
	{"egress", func(p *snowgatePrograms) *ebpf.Program { return p.SgEgress }, ebpf.AttachCGroupInetEgress},
	{"sock_create", func(p *snowgatePrograms) *ebpf.Program { return p.SgSockCreate }, ebpf.AttachCGroupInetSockCreate},
	{"sockops", func(p *snowgatePrograms) *ebpf.Program { return p.SgSockops }, ebpf.AttachCGroupSockOps},
	{"getpeername4", func(p *snowgatePrograms) *ebpf.Program { return p.SgGetpeername4 }, ebpf.AttachCgroupInet4GetPeername},
	{"getpeername6", func(p *snowgatePrograms) *ebpf.Program { return p.SgGetpeername6 }, ebpf.AttachCgroupInet6GetPeername},
	{"recvmsg4", func(p *snowgatePrograms) *ebpf.Program { return p.SgRecvmsg4 }, ebpf.AttachCGroupUDP4Recvmsg},
	{"recvmsg6", func(p *snowgatePrograms) *ebpf.Program { return p.SgRecvmsg6 }, ebpf.AttachCGroupUDP6Recvmsg},
	{"sendmsg4", func(p *snowgatePrograms) *ebpf.Program { return p.SgSendmsg4 }, ebpf.AttachCGroupUDP4Sendmsg},
	{"sendmsg6", func(p *snowgatePrograms) *ebpf.Program { return p.SgSendmsg6 }, ebpf.AttachCGroupUDP6Sendmsg},
	{"connect4", func(p *snowgatePrograms) *ebpf.Program { return p.SgConnect4 }, ebpf.AttachCGroupInet4Connect},
	{"connect6", func(p *snowgatePrograms) *ebpf.Program { return p.SgConnect6 }, ebpf.AttachCGroupInet6Connect},
}

// pinnedMaps are the maps shared across program generations (upgrades) and
// with readers (Open). They are pinned under their own names.
var pinnedMaps = []string{
	snowgateMapSgOrigins,
	snowgateMapSgSocks,
	snowgateMapSgHandoff,
	snowgateMapSgTuples,
	snowgateMapSgConns,
	snowgateMapSgCounters,
	snowgateMapSgEvents,
	snowgateMapSgNetns,
	snowgateMapSgUnrecorded,
	snowgateMapSgSnowflakeAddrs,
}

func linkPin(pinDir, name string) string { return filepath.Join(pinDir, "link_"+name) }

// withDefaults fills in defaults and checks the configuration.
func (c Config) withDefaults() (Config, error) {
	if c.PinDir == "" {
		c.PinDir = DefaultPinDir
	}
	if !filepath.IsAbs(c.PinDir) {
		return c, fmt.Errorf("pin dir %q: must be an absolute path", c.PinDir)
	}
	if c.Cgroup == "" || !filepath.IsAbs(c.Cgroup) {
		return c, fmt.Errorf("cgroup %q: must be an absolute path to a cgroup v2 directory", c.Cgroup)
	}
	if len(c.Ports) == 0 {
		c.Ports = DefaultPorts
	}
	if len(c.Ports) > MaxPorts {
		return c, fmt.Errorf("intercepted ports %v: at most %d", c.Ports, MaxPorts)
	}
	for _, p := range c.Ports {
		if p == 0 || p == 53 || p == 853 {
			return c, fmt.Errorf("intercepted port %d: not allowed (0 is invalid, 53 is DNS, 853 is always refused)", p)
		}
	}
	if !c.Proxy.IsValid() || c.Proxy.Port() == 0 || !c.Proxy.Addr().Unmap().Is4() {
		return c, fmt.Errorf("proxy %v: must be an IPv4 address and port", c.Proxy)
	}
	c.Proxy = unmapAP(c.Proxy)
	v4 := func(name string, ap *netip.AddrPort) error {
		if !ap.IsValid() {
			return nil
		}
		*ap = unmapAP(*ap)
		if !ap.Addr().Is4() || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			return fmt.Errorf("%s %v: must be an IPv4 address and port", name, *ap)
		}
		return nil
	}
	v6 := func(name string, ap netip.AddrPort) error {
		if !ap.IsValid() {
			return nil
		}
		if !ap.Addr().Is6() || ap.Addr().Is4In6() || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			return fmt.Errorf("%s %v: must be a native IPv6 address and port", name, ap)
		}
		return nil
	}
	if err := v4("host proxy", &c.HostProxy); err != nil {
		return c, err
	}
	if err := v4("dns", &c.DNS); err != nil {
		return c, err
	}
	if !c.HostDNS.IsValid() && c.DNS.IsValid() && c.HostProxy.IsValid() {
		c.HostDNS = netip.AddrPortFrom(c.HostProxy.Addr(), c.DNS.Port())
	}
	if err := v4("host dns", &c.HostDNS); err != nil {
		return c, err
	}
	if err := v6("proxy6", c.Proxy6); err != nil {
		return c, err
	}
	if err := v6("dns6", c.DNS6); err != nil {
		return c, err
	}
	return c, nil
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// ip4Word is an IPv4 address as the u32 the kernel keeps it in: network byte
// order in memory.
func ip4Word(ap netip.AddrPort) uint32 {
	if !ap.IsValid() {
		return 0
	}
	b := ap.Addr().Unmap().As4()
	return binary.NativeEndian.Uint32(b[:])
}

// ip6Words is a 16-byte address as four network-order u32s (v4 as ::ffff:x).
func ip6Words(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if !a.IsValid() {
		return w
	}
	b := a.As16()
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[i*4:])
	}
	return w
}

// wordsAddr is the inverse of ip6Words; v4 unmaps the result.
func wordsAddr(w [4]uint32, v4 bool) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.NativeEndian.PutUint32(b[i*4:], w[i])
	}
	a := netip.AddrFrom16(b)
	if v4 {
		a = a.Unmap()
	}
	return a
}

// htons is a port in network byte order, as the programs store it.
func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// ntohs is the inverse of htons.
func ntohs(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

func portOf(ap netip.AddrPort) uint16 {
	if !ap.IsValid() {
		return 0
	}
	return htons(ap.Port())
}

// CurrentNetnsCookie returns the cookie of the network namespace the calling
// thread is in (SO_NETNS_COOKIE, Linux 5.14+): the key of SetNetnsTarget. A
// daemon that opens a per-namespace listener calls it from the thread it
// switched into that namespace.
func CurrentNetnsCookie() (uint64, error) { return hostNetnsCookie() }

// hostNetnsCookie is the cookie of the network namespace the caller runs in,
// which Install treats as the host namespace.
func hostNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: socket: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: getsockopt SO_NETNS_COOKIE (needs Linux 5.14): %w", err)
	}
	return c, nil
}

// newSpec returns the collection spec with the configuration's constants set
// and the shared maps marked for pinning.
func newSpec(cfg Config, netnsCookie uint64) (*ebpf.CollectionSpec, error) {
	spec, err := loadSnowgate()
	if err != nil {
		return nil, err
	}
	if err := setConstants(spec, cfg, netnsCookie); err != nil {
		return nil, err
	}
	for _, name := range pinnedMaps {
		m, ok := spec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("map %s missing from the eBPF object", name)
		}
		m.Pinning = ebpf.PinByName
	}
	return spec, nil
}

// setConstants sets the load-time constants of the programs from cfg.
func setConstants(spec *ebpf.CollectionSpec, cfg Config, netnsCookie uint64) error {
	var ports [MaxPorts]uint16
	copy(ports[:], cfg.Ports)
	consts := []struct {
		name  string
		value any
	}{
		{snowgateVarGatewayCgroupId, cfg.GatewayCgroupID},
		{snowgateVarHostNetnsCookie, netnsCookie},
		{snowgateVarProxy4Ip, ip4Word(cfg.Proxy)},
		{snowgateVarProxy4Port, portOf(cfg.Proxy)},
		{snowgateVarHostProxy4Ip, ip4Word(cfg.HostProxy)},
		{snowgateVarHostProxy4Port, portOf(cfg.HostProxy)},
		{snowgateVarProxy6Ip, ip6Words(cfg.Proxy6.Addr())},
		{snowgateVarProxy6Port, portOf(cfg.Proxy6)},
		{snowgateVarDns4Ip, ip4Word(cfg.DNS)},
		{snowgateVarDns4Port, portOf(cfg.DNS)},
		{snowgateVarHostDns4Ip, ip4Word(cfg.HostDNS)},
		{snowgateVarHostDns4Port, portOf(cfg.HostDNS)},
		{snowgateVarDns6Ip, ip6Words(cfg.DNS6.Addr())},
		{snowgateVarDns6Port, portOf(cfg.DNS6)},
		{snowgateVarInterceptPorts, ports},
	}
	for _, c := range consts {
		v, ok := spec.Variables[c.name]
		if !ok {
			return fmt.Errorf("constant %s missing from the eBPF object", c.name)
		}
		if err := v.Set(c.value); err != nil {
			return fmt.Errorf("set constant %s: %w", c.name, err)
		}
	}
	return nil
}

// Install must run in the host network namespace: the namespace it runs in is
// the one whose clients go to cfg.Proxy; every other namespace is a container.
//
// Install loads the programs with cfg's constants, attaches them to
// cfg.Cgroup and pins links and maps under cfg.PinDir (mounting bpffs if
// needed). If pinned links already exist, their programs are swapped in place
// (BPF_LINK_UPDATE) so an upgrade leaves no window; maps already pinned are
// reused, so connections recorded by the old programs stay visible.
//
// Install refuses to move an existing redirect to another live cgroup:
// Uninstall first. Pinned links whose cgroup was removed (a slice recreated by
// systemd) are replaced by links to cfg.Cgroup. On a fresh install that fails
// half way, the links it attached are removed again.
func Install(cfg Config) (*Redirect, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("install redirect: %w", err)
	}
	cgID, err := CgroupID(cfg.Cgroup)
	if err != nil {
		return nil, fmt.Errorf("install redirect: %w", err)
	}
	if err := ensureBPFFS(cfg.PinDir); err != nil {
		return nil, fmt.Errorf("install redirect: %w", err)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; a no-op after.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("install redirect: %w", err)
	}
	cookie, err := hostNetnsCookie()
	if err != nil {
		return nil, fmt.Errorf("install redirect: %w", err)
	}
	spec, err := newSpec(cfg, cookie)
	if err != nil {
		return nil, fmt.Errorf("install redirect: %w", err)
	}
	var objs snowgateObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: cfg.PinDir},
	})
	if err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("install redirect: pinned maps in %s have another layout (run `snowgate uninstall` first): %w", cfg.PinDir, err)
		}
		return nil, fmt.Errorf("install redirect: load eBPF programs: %w", err)
	}
	// The links hold their programs; our program FDs can go.
	defer objs.snowgatePrograms.Close()

	cg, err := os.Open(cfg.Cgroup)
	if err != nil {
		objs.snowgateMaps.Close()
		return nil, fmt.Errorf("install redirect: open cgroup: %w", err)
	}
	defer cg.Close()

	r := &Redirect{
		pinDir:   cfg.PinDir,
		conns:    objs.SgConns,
		tuples:   objs.SgTuples,
		counters: objs.SgCounters,
		events:   objs.SgEvents,
		netns:    objs.SgNetns,
		origins:  objs.SgOrigins,
	}
	// The maps only the programs use stay pinned; our FDs can go.
	defer func() {
		for _, m := range []*ebpf.Map{objs.SgSocks, objs.SgHandoff, objs.SgUnrecorded, objs.SgSnowflakeAddrs} {
			m.Close()
		}
	}()
	var attached []link.Link // attached (not updated) by this call, for roll-back
	fail := func(err error) (*Redirect, error) {
		for _, l := range slices.Backward(attached) {
			_ = l.Unpin()
			_ = l.Close()
		}
		r.Close()
		return nil, fmt.Errorf("install redirect on %s: %w", cfg.Cgroup, err)
	}
	for _, h := range hooks {
		prog := h.prog(&objs.snowgatePrograms)
		pin := linkPin(cfg.PinDir, h.name)
		if _, err := os.Stat(pin); err == nil {
			l, err := link.LoadPinnedLink(pin, nil)
			if err != nil {
				return fail(fmt.Errorf("load pinned link %s: %w", pin, err))
			}
			r.links = append(r.links, l)
			info, err := l.Info()
			if err != nil {
				return fail(fmt.Errorf("pinned link %s: %w", pin, err))
			}
			ci := info.Cgroup()
			if ci == nil {
				return fail(fmt.Errorf("pinned link %s is not a cgroup link", pin))
			}
			if ci.CgroupId == cgID {
				if err := l.Update(prog); err != nil {
					return fail(fmt.Errorf("update %s in place: %w", h.name, err))
				}
				continue
			}
			if cgroupAlive(ci.CgroupId) {
				return fail(fmt.Errorf("pinned link %s is attached to another cgroup (id %d); run `snowgate uninstall` first", pin, ci.CgroupId))
			}
			// The cgroup it was attached to is gone (e.g. systemd
			// recreated the slice): that link protects nothing. Attach
			// anew below and replace the pin.
			slog.Warn("replacing pinned link of a removed cgroup", "hook", h.name, "old_cgroup_id", ci.CgroupId, "cgroup", cfg.Cgroup)
			r.links = r.links[:len(r.links)-1]
			_ = l.Unpin()
			_ = l.Close()
		}
		// A raw link, never the legacy PROG_ATTACH fallback: that one
		// cannot be pinned, so it would fail open when we exit.
		l, err := link.AttachRawLink(link.RawLinkOptions{
			Target:  int(cg.Fd()),
			Program: prog,
			Attach:  h.attach,
		})
		if err != nil {
			return fail(fmt.Errorf("attach %s: %w", h.name, err))
		}
		attached = append(attached, l)
		r.links = append(r.links, l)
		if err := l.Pin(pin); err != nil {
			return fail(fmt.Errorf("pin %s: %w", h.name, err))
		}
	}
	return r, nil
}

// cgroupAlive reports whether a cgroup with this id still exists. A link whose
// cgroup was removed reports id 0 or the old id.
func cgroupAlive(id uint64) bool {
	if id == 0 {
		return false
	}
	root, err := FindCgroup2()
	if err != nil {
		return true // cannot tell: assume it does, and refuse
	}
	_, err = findCgroupByID(root, id)
	return !errors.Is(err, fs.ErrNotExist)
}

// Open opens the pinned maps of an installed redirect for look-ups, counters,
// events and status, without attaching anything.
func Open(pinDir string) (*Redirect, error) {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	r := &Redirect{pinDir: pinDir}
	for _, m := range []struct {
		name string
		dst  **ebpf.Map
	}{
		{snowgateMapSgTuples, &r.tuples},
		{snowgateMapSgCounters, &r.counters},
		{snowgateMapSgEvents, &r.events},
		{snowgateMapSgNetns, &r.netns},
		{snowgateMapSgOrigins, &r.origins},
	} {
		mp, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, m.name), nil)
		if err != nil {
			r.Close()
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("open redirect in %s: %w", pinDir, ErrNotInstalled)
			}
			return nil, fmt.Errorf("open redirect: map %s: %w", m.name, err)
		}
		*m.dst = mp
	}
	// sg_conns came with a later program generation than the other maps:
	// without it, every record is in sg_tuples (connsMap opens it once an
	// upgrade has created it).
	mp, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, snowgateMapSgConns), nil)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		r.Close()
		return nil, fmt.Errorf("open redirect: map %s: %w", snowgateMapSgConns, err)
	}
	r.conns = mp
	return r, nil
}

// PinDir is the bpffs directory of this redirect.
func (r *Redirect) PinDir() string { return r.pinDir }

// Lookup returns what the redirect recorded for a connection the gateway
// accepted from peer (conn.RemoteAddr()). v4-mapped peers (dual-stack
// listeners) are handled. ErrNotRedirected means the connection did not come
// through the redirect.
func (r *Redirect) Lookup(peer netip.AddrPort) (Origin, error) {
	if !peer.IsValid() {
		return Origin{}, fmt.Errorf("look up %v: invalid address", peer)
	}
	key := snowgateSgTupleKey{
		Addr: ip6Words(peer.Addr().WithZone("")),
		Port: htons(peer.Port()),
	}
	var v snowgateSgOrigin
	if c, ok, err := r.conn(key); err != nil {
		return Origin{}, fmt.Errorf("look up %v: %w", peer, err)
	} else if ok {
		v = c.O
	} else if err := r.tuples.Lookup(&key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Origin{}, fmt.Errorf("look up %v: %w", peer, ErrNotRedirected)
		}
		return Origin{}, fmt.Errorf("look up %v: %w", peer, err)
	}
	if v.Flags&flagRedirected == 0 {
		return Origin{}, fmt.Errorf("look up %v: %w", peer, ErrNotRedirected)
	}
	return Origin{
		Dst:      netip.AddrPortFrom(wordsAddr(v.Addr, v.Flags&flagV4 != 0), ntohs(v.Port)),
		CgroupID: v.CgroupId,
		PID:      v.Pid,
		UID:      v.Uid,
	}, nil
}

// slotBusy is the cookie of an sg_conns slot being written or wiped
// (SG_SLOT_BUSY).
const slotBusy = ^uint64(0)

// connSlot is the sg_conns slot of a tuple: conn_slot in bpf/snowgate.c.
func connSlot(k snowgateSgTupleKey) uint32 {
	f := k.Addr[0] ^ k.Addr[1] ^ k.Addr[2] ^ k.Addr[3]
	return (f ^ f>>16 ^ uint32(ntohs(k.Port))) & (connSlots - 1)
}

// connSlots is SG_CONN_SLOTS (bpf/snowgate.h).
const connSlots = 65536

// liveConn reports whether slot c holds a complete record of a connection.
func liveConn(c *snowgateSgConn) bool {
	return c.O.Cookie != 0 && c.O.Cookie != slotBusy && c.O.Flags&flagRedirected != 0
}

// connsMap is sg_conns, opened from the pin directory if a program upgrade
// created it after this handle was opened; nil while there is none.
func (r *Redirect) connsMap() *ebpf.Map {
	r.connsMu.Lock()
	defer r.connsMu.Unlock()
	if r.conns == nil && r.pinDir != "" && !r.closed {
		if m, err := ebpf.LoadPinnedMap(filepath.Join(r.pinDir, snowgateMapSgConns), nil); err == nil {
			r.conns = m
		}
	}
	return r.conns
}

// conn reads the sg_conns slot of key: ok when it holds key's record.
func (r *Redirect) conn(key snowgateSgTupleKey) (snowgateSgConn, bool, error) {
	var c snowgateSgConn
	m := r.connsMap()
	if m == nil {
		return c, false, nil
	}
	slot := connSlot(key)
	// A slot is copied out without a lock while a program may be claiming
	// it for a new socket (the connection looked up closed meanwhile): a
	// copy taken during that write could mix two records. Two copies that
	// agree were not torn; ones that keep differing count as no record
	// (the look-up then falls back to sg_tuples, and without a record
	// there the connection is refused).
	var again snowgateSgConn
	for range connReads {
		if err := m.Lookup(&slot, &c); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return c, false, nil
			}
			return c, false, fmt.Errorf("read slot: %w", err)
		}
		if err := m.Lookup(&slot, &again); err != nil {
			return c, false, fmt.Errorf("read slot: %w", err)
		}
		if c == again {
			return c, liveConn(&c) && c.Key == key, nil
		}
	}
	return c, false, nil
}

// connReads bounds the attempts at two agreeing copies of a slot.
const connReads = 3

// SetNetnsTarget sends clients in the network namespace with the given cookie
// to proxy (TCP) and dns (DNS; invalid = DNS refused there) instead of
// Config.HostProxy, e.g. a per-namespace listener. Both must be IPv4.
func (r *Redirect) SetNetnsTarget(netnsCookie uint64, proxy, dns netip.AddrPort) error {
	if !proxy.IsValid() || !proxy.Addr().Unmap().Is4() {
		return fmt.Errorf("netns %d target %v: must be an IPv4 address and port", netnsCookie, proxy)
	}
	if dns.IsValid() && !dns.Addr().Unmap().Is4() {
		return fmt.Errorf("netns %d dns %v: must be an IPv4 address and port", netnsCookie, dns)
	}
	v := snowgateSgNetnsTarget{
		ProxyIp4:  ip4Word(proxy),
		ProxyPort: portOf(proxy),
		DnsIp4:    ip4Word(dns),
		DnsPort:   portOf(dns),
	}
	if err := r.netns.Put(netnsCookie, &v); err != nil {
		return fmt.Errorf("set netns %d target: %w", netnsCookie, err)
	}
	return nil
}

// DeleteNetnsTarget removes a per-namespace target set by SetNetnsTarget.
func (r *Redirect) DeleteNetnsTarget(netnsCookie uint64) error {
	if err := r.netns.Delete(netnsCookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete netns %d target: %w", netnsCookie, err)
	}
	return nil
}

// Close releases this handle's file descriptors. The pinned links and maps
// stay, so the redirect keeps working (or keeps failing closed).
func (r *Redirect) Close() error {
	var errs []error
	for _, l := range r.links {
		errs = append(errs, l.Close())
	}
	r.links = nil
	r.connsMu.Lock()
	defer r.connsMu.Unlock()
	r.closed = true
	for _, m := range []**ebpf.Map{&r.conns, &r.tuples, &r.counters, &r.events, &r.netns, &r.origins} {
		if *m != nil {
			errs = append(errs, (*m).Close())
			*m = nil
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close redirect: %w", err)
	}
	return nil
}

// Uninstall detaches every program and removes every pin under pinDir. It is
// the only way the redirect goes away: afterwards agents connect directly.
// Detaching is explicit (BPF_LINK_DETACH), so a daemon still holding link FDs
// does not keep the programs attached.
func Uninstall(pinDir string) error {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	for _, h := range slices.Backward(hooks) {
		pin := linkPin(pinDir, h.name)
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("load %s: %w", pin, err))
			continue
		}
		if err := l.Detach(); err != nil {
			errs = append(errs, fmt.Errorf("detach %s: %w", h.name, err))
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", h.name, err))
		}
		l.Close()
	}
	for _, name := range pinnedMaps {
		p := filepath.Join(pinDir, name)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpin map %s: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uninstall redirect from %s: %w", pinDir, err)
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("uninstall redirect: remove %s: %w", pinDir, err)
	}
	return nil
}

// Installed reports whether pinned links exist under pinDir.
func Installed(pinDir string) bool {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	for _, h := range hooks {
		if _, err := os.Stat(linkPin(pinDir, h.name)); err == nil {
			return true
		}
	}
	return false
}

// Connection is one live record of the tuple map: a redirected connection as
// the gateway sees it (Peer) and what the redirect recorded about it.
type Connection struct {
	Peer netip.AddrPort
	Origin
}

// Connections lists the redirected connections currently recorded (open TCP
// connections through the redirect, including ones the gateway has not
// accepted yet).
func (r *Redirect) Connections() ([]Connection, error) {
	var out []Connection
	add := func(key snowgateSgTupleKey, val *snowgateSgOrigin) {
		out = append(out, Connection{
			Peer: netip.AddrPortFrom(wordsAddr(key.Addr, val.Flags&flagV4 != 0), ntohs(key.Port)),
			Origin: Origin{
				Dst:      netip.AddrPortFrom(wordsAddr(val.Addr, val.Flags&flagV4 != 0), ntohs(val.Port)),
				CgroupID: val.CgroupId,
				PID:      val.Pid,
				UID:      val.Uid,
			},
		})
	}
	if conns := r.connsMap(); conns != nil {
		// The slots in batches: an array is never short of keys, and one
		// system call per slot would take a second.
		var cursor ebpf.MapBatchCursor
		keys := make([]uint32, 4096)
		vals := make([]snowgateSgConn, len(keys))
		for {
			n, err := conns.BatchLookup(&cursor, keys, vals, nil)
			for i := range vals[:n] {
				if liveConn(&vals[i]) {
					add(vals[i].Key, &vals[i].O)
				}
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("list connections: %w", err)
			}
		}
	}
	var (
		key  snowgateSgTupleKey
		val  snowgateSgOrigin
		iter = r.tuples.Iterate()
	)
	for iter.Next(&key, &val) {
		if val.Flags&flagRedirected == 0 {
			continue
		}
		add(key, &val)
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	return out, nil
}
