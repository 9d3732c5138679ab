package redirect

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestProgramsLoad runs every program through the kernel verifier with a
// full configuration, without attaching anything.
func TestProgramsLoad(t *testing.T) {
	testenv.RequireRoot(t)
	cfg, err := Config{
		Cgroup:    "/sys/fs/cgroup",
		Proxy:     netip.MustParseAddrPort("127.0.0.1:15443"),
		Proxy6:    netip.MustParseAddrPort("[::1]:15443"),
		HostProxy: netip.MustParseAddrPort("169.254.77.1:15443"),
		DNS:       netip.MustParseAddrPort("127.0.0.1:15353"),
		DNS6:      netip.MustParseAddrPort("[::1]:15353"),
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	spec, err := newSpec(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	var objs snowgateObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("verifier: %+v", ve)
		}
		t.Fatal(err)
	}
	defer objs.Close()
}
