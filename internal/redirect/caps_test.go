package redirect

import (
	"strings"
	"testing"
)

func TestCapsLacking(t *testing.T) {
	for _, tc := range []struct {
		name string
		eff  uint64
		want string
	}{
		{"root", 0x000001ffffffffff, ""},
		{"unit's set", 1<<capNetAdmin | 1<<capBPF | 1<<capPerfmon | 1<<10 | 1<<1, ""},
		{"sys_admin stands in", 1<<capNetAdmin | 1<<capSysAdmin, ""},
		{"nothing", 0, "CAP_NET_ADMIN,CAP_BPF,CAP_PERFMON"},
		{"no perfmon", 1<<capNetAdmin | 1<<capBPF, "CAP_PERFMON"},
		{"no net_admin", 1<<capBPF | 1<<capPerfmon, "CAP_NET_ADMIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(capsLacking(tc.eff), ","); got != tc.want {
				t.Errorf("capsLacking(%#x) = %q, want %q", tc.eff, got, tc.want)
			}
		})
	}
}

func TestEffectiveCaps(t *testing.T) {
	eff, err := effectiveCaps("Name:\tsnowgate\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\n")
	if err != nil || eff != 0xc000001000 {
		t.Fatalf("effectiveCaps = %#x, %v", eff, err)
	}
	for _, bad := range []string{"", "CapEff:\tzz\n", "CapPrm:\t1\n"} {
		if _, err := effectiveCaps(bad); err == nil {
			t.Errorf("effectiveCaps(%q) accepted", bad)
		}
	}
}
