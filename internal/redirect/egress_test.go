package redirect

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/snowgate/snowgate/internal/testenv"
)

// packet builds an Ethernet frame carrying an IP packet with the given
// protocol chain. ext are IPv6 extension headers (protocol numbers) placed
// before proto; fragOff is the fragment offset in 8-byte units.
type packet struct {
	dst     netip.Addr
	proto   uint8
	dport   uint16
	ext     []uint8
	fragOff uint16
}

func (p packet) frame() []byte {
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], p.dport)
	eth := make([]byte, 14)
	if p.dst.Is4() {
		binary.BigEndian.PutUint16(eth[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[6:], p.fragOff&0x1fff)
		ip[8] = 64
		ip[9] = p.proto
		copy(ip[12:16], []byte{10, 0, 0, 2})
		d := p.dst.As4()
		copy(ip[16:20], d[:])
		return append(append(eth, ip...), l4...)
	}
	binary.BigEndian.PutUint16(eth[12:], 0x86dd)
	var exts []byte
	chain := append(append([]uint8{}, p.ext...), p.proto)
	for i, h := range p.ext {
		next := chain[i+1]
		if h == 44 { // fragment header: fixed 8 bytes
			exts = append(exts, next, 0, byte(p.fragOff>>5), byte(p.fragOff<<3), 0, 0, 0, 1)
			continue
		}
		exts = append(exts, next, 0, 1, 4, 0, 0, 0, 0) // 8 bytes of PadN
	}
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(exts)+len(l4)))
	ip[6] = chain[0]
	ip[7] = 64
	src := netip.MustParseAddr("fd00::2").As16()
	copy(ip[8:24], src[:])
	d := p.dst.As16()
	copy(ip[24:40], d[:])
	return append(append(append(eth, ip...), exts...), l4...)
}

// loadEgress loads the egress backstop with a test configuration.
func loadEgress(t *testing.T, gatewayCgroupID uint64) *ebpf.Program {
	t.Helper()
	objs, err := loadUnpinned(Config{
		Cgroup:          "/sys/fs/cgroup",
		Proxy:           netip.MustParseAddrPort("127.0.0.1:15443"),
		HostProxy:       netip.MustParseAddrPort("169.254.77.1:443"),
		DNS:             netip.MustParseAddrPort("127.0.0.1:15353"),
		Proxy6:          netip.MustParseAddrPort("[fd00::77]:443"),
		GatewayCgroupID: gatewayCgroupID,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { objs.Close() })
	return objs.SgEgress
}

// TestEgressBackstop runs the cgroup_skb/egress program on crafted packets
// through BPF_PROG_TEST_RUN. The test runner puts its socket in the caller's
// cgroup, so the gateway exclusion is set to a cgroup id that is not ours
// (zero: nothing excluded) except in the exclusion case.
func TestEgressBackstop(t *testing.T) {
	testenv.RequireRoot(t)
	v4 := netip.MustParseAddr("203.0.113.10")
	v6 := netip.MustParseAddr("2001:db8::1")
	const pass, drop = 1, 0
	tests := []struct {
		name string
		pkt  packet
		want uint32
	}{
		{"tcp 443", packet{dst: v4, proto: 6, dport: 443}, drop},
		{"tcp 80", packet{dst: v4, proto: 6, dport: 80}, drop},
		{"tcp 853 (DoT)", packet{dst: v4, proto: 6, dport: 853}, drop},
		{"tcp 53 while DNS is redirected", packet{dst: v4, proto: 6, dport: 53}, drop},
		{"tcp 8443", packet{dst: v4, proto: 6, dport: 8443}, pass},
		{"tcp to the loopback gateway", packet{dst: netip.MustParseAddr("127.0.0.1"), proto: 6, dport: 15443}, pass},
		{"tcp 443 to the host gateway address", packet{dst: netip.MustParseAddr("169.254.77.1"), proto: 6, dport: 443}, pass},
		{"udp 443 (QUIC)", packet{dst: v4, proto: 17, dport: 443}, drop},
		{"udp 853 (DoQ)", packet{dst: v4, proto: 17, dport: 853}, drop},
		{"udp 53 while DNS is redirected", packet{dst: v4, proto: 17, dport: 53}, drop},
		{"udp to the DNS listener", packet{dst: netip.MustParseAddr("127.0.0.1"), proto: 17, dport: 15353}, pass},
		{"udp 5353", packet{dst: v4, proto: 17, dport: 5353}, pass},
		{"udp-lite 443", packet{dst: v4, proto: 136, dport: 443}, drop},
		{"sctp 80", packet{dst: v4, proto: 132, dport: 80}, drop},
		{"icmp", packet{dst: v4, proto: 1}, pass},
		{"non-first fragment", packet{dst: v4, proto: 6, dport: 443, fragOff: 10}, pass},
		{"v6 tcp 443", packet{dst: v6, proto: 6, dport: 443}, drop},
		{"v6 tcp 443 to the v6 gateway", packet{dst: netip.MustParseAddr("fd00::77"), proto: 6, dport: 443}, pass},
		{"v6 hop-by-hop then tcp 443", packet{dst: v6, proto: 6, dport: 443, ext: []uint8{0}}, drop},
		{"v6 hop-by-hop, dstopts, routing then tcp 443", packet{dst: v6, proto: 6, dport: 443, ext: []uint8{0, 60, 43}}, drop},
		{"v6 hop-by-hop then tcp 8443", packet{dst: v6, proto: 6, dport: 8443, ext: []uint8{0}}, pass},
		{"v6 first fragment tcp 443", packet{dst: v6, proto: 6, dport: 443, ext: []uint8{44}}, drop},
		{"v6 later fragment", packet{dst: v6, proto: 6, dport: 443, ext: []uint8{44}, fragOff: 10}, pass},
		{"v6 too many extension headers", packet{dst: v6, proto: 6, dport: 8443, ext: []uint8{60, 60, 60, 60, 60, 60, 60}}, drop},
		{"v6 udp 443", packet{dst: v6, proto: 17, dport: 443}, drop},
	}
	prog := loadEgress(t, 0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ret, err := prog.Run(&ebpf.RunOptions{Data: tc.pkt.frame()})
			if err != nil {
				t.Fatal(err)
			}
			if ret != tc.want {
				t.Errorf("verdict %d, want %d", ret, tc.want)
			}
		})
	}

	t.Run("gateway cgroup excluded", func(t *testing.T) {
		prog := loadEgress(t, testenv.SelfCgroup(t).ID)
		ret, err := prog.Run(&ebpf.RunOptions{Data: packet{dst: v4, proto: 6, dport: 443}.frame()})
		if err != nil {
			t.Fatal(err)
		}
		if ret != pass {
			t.Errorf("verdict %d for the gateway's own cgroup, want pass", ret)
		}
	})
}
