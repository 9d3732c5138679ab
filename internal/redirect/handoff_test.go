package redirect

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/snowgate/snowgate/internal/testenv"
)

// Layout of the handoff from connect4/6 to sockops (bpf/snowgate.c).
const (
	handoffSlots = 8 // SG_HANDOFF_SLOTS
	// strangerCookie tags the records the test leaves in the slots: far
	// above any cookie the kernel hands out during a test run.
	strangerCookie = uint64(1) << 62
)

// strangerRecord is the record of a socket that does not exist, as connect4
// would leave it for a connect that failed before TCP_CONNECT_CB.
func strangerRecord(cookie uint64) snowgateSgOrigin {
	return snowgateSgOrigin{
		Addr:       ip6Words(netip.MustParseAddr("::ffff:198.51.100.7")),
		Target:     ip6Words(netip.MustParseAddr("::ffff:127.0.0.1")),
		CgroupId:   4242,
		Cookie:     cookie,
		Pid:        4242,
		Port:       htons(443),
		TargetPort: htons(1),
		Flags:      flagRedirected | flagV4,
		Proto:      unix.IPPROTO_TCP,
	}
}

// fillHandoff sets every slot of every CPU: to a stranger's unclaimed record
// (cookie strangerCookie + cpu*slots + slot), or to "being written" when busy.
func fillHandoff(t *testing.T, m *ebpf.Map, busy bool) {
	t.Helper()
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	for slot := range uint32(handoffSlots) {
		vals := make([]snowgateSgOrigin, cpus)
		for cpu := range vals {
			if busy {
				vals[cpu] = snowgateSgOrigin{Cookie: slotBusy}
			} else {
				vals[cpu] = strangerRecord(strangerCookie + uint64(cpu)*handoffSlots + uint64(slot))
			}
		}
		if err := m.Put(slot, vals); err != nil {
			t.Fatalf("fill handoff slot %d: %v", slot, err)
		}
	}
}

// TestHandoffSlotTaken connects through the redirect while the handoff slots
// are not free, which the benchmark never exercises: every slot holds another
// socket's unclaimed record (a connect that failed before TCP_CONNECT_CB, a
// deferred TCP_FASTOPEN_CONNECT), or is being written by a connect that was
// preempted. The connection is recorded all the same, and no record is lost:
// connect4 moves the stranger's record to sg_socks before it takes the slot,
// or hands its own record over through sg_socks while the slot is busy, and
// the close removes that again.
func TestHandoffSlotTaken(t *testing.T) {
	testenv.RequireRoot(t)
	dst := "203.0.113.10:443"
	tests := []struct {
		name string
		busy bool
		// wantStrangerMoved: one stranger's record ends up in sg_socks.
		wantStrangerMoved bool
		// wantOwnSpilled: the client's record went through sg_socks.
		wantOwnSpilled bool
	}{
		{name: "slots hold unclaimed records", wantStrangerMoved: true},
		{name: "slots being written", busy: true, wantOwnSpilled: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newRedirectFixture(t)
			r := f.install(t)
			defer r.Close()
			handoff, err := ebpf.LoadPinnedMap(filepath.Join(f.pinDir, snowgateMapSgHandoff), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer handoff.Close()
			socks, err := ebpf.LoadPinnedMap(filepath.Join(f.pinDir, snowgateMapSgSocks), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer socks.Close()
			fillHandoff(t, handoff, tc.busy)

			rep, conn, peer := redirectedConnect(t, f, r, dst)
			defer conn.Close()

			cookie := clientCookie(t, f.client.Pid, rep.Local)
			var (
				moved   int
				own     bool
				k       uint64
				v       snowgateSgOrigin
				entries = socks.Iterate()
			)
			for entries.Next(&k, &v) {
				switch {
				case k == cookie:
					own = true
				case k >= strangerCookie:
					if v != strangerRecord(k) {
						t.Errorf("sg_socks[%d] = %+v, want the stranger's record %+v", k, v, strangerRecord(k))
					}
					moved++
				}
			}
			if err := entries.Err(); err != nil {
				t.Fatal(err)
			}
			if got := moved == 1; got != tc.wantStrangerMoved || moved > 1 {
				t.Errorf("%d strangers' records moved to sg_socks, want %v", moved, tc.wantStrangerMoved)
			}
			if own != tc.wantOwnSpilled {
				t.Errorf("client's record (cookie %d) in sg_socks: %v, want %v", cookie, own, tc.wantOwnSpilled)
			}

			f.client.Do(t, closeAction)
			lookupGone(t, r, peer)
			var gone snowgateSgOrigin
			if err := socks.Lookup(cookie, &gone); !errors.Is(err, ebpf.ErrKeyNotExist) {
				t.Errorf("sg_socks[%d] after the close: %+v, %v; want no record", cookie, gone, err)
			}
		})
	}
}
