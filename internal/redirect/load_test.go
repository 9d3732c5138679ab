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
	objs, err := loadUnpinned(Config{
		Cgroup:    "/sys/fs/cgroup",
		Proxy:     netip.MustParseAddrPort("127.0.0.1:15443"),
		Proxy6:    netip.MustParseAddrPort("[::1]:15443"),
		HostProxy: netip.MustParseAddrPort("169.254.77.1:15443"),
		DNS:       netip.MustParseAddrPort("127.0.0.1:15353"),
		DNS6:      netip.MustParseAddrPort("[::1]:15353"),
	})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("verifier: %+v", ve)
		}
		t.Fatal(err)
	}
	defer objs.Close()
}

// loadUnpinned loads every program and map of cfg (completed by
// withDefaults) into the kernel, as seen from a namespace with cookie 1, with
// no map pinned and nothing attached.
func loadUnpinned(cfg Config) (*snowgateObjects, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	spec, err := newSpec(cfg, 1)
	if err != nil {
		return nil, err
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	var objs snowgateObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, err
	}
	return &objs, nil
}
