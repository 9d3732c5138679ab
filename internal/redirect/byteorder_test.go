package redirect

import (
	"net/netip"
	"testing"
	"unsafe"
)

// memBytes is the in-memory representation of v, i.e. what the programs see.
func memBytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

func TestByteOrder(t *testing.T) {
	t.Run("ports are stored big-endian in memory", func(t *testing.T) {
		for _, p := range []uint16{443, 80, 15443, 1, 65535} {
			n := htons(p)
			b := memBytes(&n)
			if b[0] != byte(p>>8) || b[1] != byte(p) {
				t.Errorf("htons(%d) bytes %x", p, b)
			}
			if ntohs(n) != p {
				t.Errorf("ntohs(htons(%d)) = %d", p, ntohs(n))
			}
		}
	})
	t.Run("ipv4 word is the address bytes", func(t *testing.T) {
		w := ip4Word(netip.MustParseAddrPort("203.0.113.10:443"))
		if b := memBytes(&w); string(b) != string([]byte{203, 0, 113, 10}) {
			t.Errorf("bytes %v", b)
		}
		if ip4Word(netip.AddrPort{}) != 0 {
			t.Error("invalid address is not zero")
		}
	})
	tests := []struct {
		in     string
		v4     bool
		wantIn string // wordsAddr(ip6Words(in), v4)
	}{
		{"203.0.113.10", true, "203.0.113.10"},
		{"::ffff:203.0.113.10", true, "203.0.113.10"},
		{"::ffff:203.0.113.10", false, "::ffff:203.0.113.10"},
		{"2001:db8::1", false, "2001:db8::1"},
		{"::1", false, "::1"},
	}
	for _, tc := range tests {
		t.Run("words "+tc.in, func(t *testing.T) {
			a := netip.MustParseAddr(tc.in)
			w := ip6Words(a)
			b := memBytes(&w)
			if want := a.As16(); string(b) != string(want[:]) {
				t.Errorf("ip6Words bytes %x, want %x", b, want)
			}
			if got := wordsAddr(w, tc.v4); got.String() != tc.wantIn {
				t.Errorf("wordsAddr = %v, want %s", got, tc.wantIn)
			}
		})
	}
}
