package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/snowgate/snowgate/internal/testenv"
)

// The eBPF objects of earlier program generations, kept to test the upgrade
// from them: an installed redirect is upgraded link by link (Install swaps
// the programs in the order of hooks), so for a while the new sockops and
// getpeername programs run with the old connect4.
const (
	// prevStorageObject kept every original destination in socket storage.
	prevStorageObject = "testdata/snowgate_prev.bpf.o"
	// prevSocksObject kept TCP ones in sg_socks under the socket cookie
	// from connect4 until the close (they are now handed to sockops
	// through sg_handoff).
	prevSocksObject = "testdata/snowgate_socks.bpf.o"
	// prevHandoffObject handed them from connect4 to sockops through
	// sg_handoff and kept every tuple record in sg_tuples (they now go to
	// an sg_conns slot).
	prevHandoffObject = "testdata/snowgate_handoff.bpf.o"
)

// installPrevious attaches the programs of the previous generation in object
// to the fixture's cgroup with links and maps pinned as that generation's
// Install did.
func installPrevious(t *testing.T, f *redirectFixture, object string) {
	t.Helper()
	err := f.inHostNetns(func(cfg Config, cookie uint64) error {
		if err := ensureBPFFS(f.pinDir); err != nil {
			return err
		}
		spec, err := ebpf.LoadCollectionSpec(object)
		if err != nil {
			return err
		}
		if err := setConstants(spec, cfg, cookie); err != nil {
			return err
		}
		for name, m := range spec.Maps {
			if slices.Contains(pinnedMaps, name) {
				m.Pinning = ebpf.PinByName
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: f.pinDir}})
		if err != nil {
			return err
		}
		defer coll.Close()
		for _, h := range hooks {
			prog := coll.Programs["sg_"+h.name]
			if prog == nil {
				return fmt.Errorf("previous object has no program sg_%s", h.name)
			}
			l, err := link.AttachRawLink(link.RawLinkOptions{Target: cgroupFD(t, f.cg.Path), Program: prog, Attach: h.attach})
			if err != nil {
				return err
			}
			if err := l.Pin(linkPin(f.pinDir, h.name)); err != nil {
				l.Close()
				return err
			}
			l.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("install the previous generation: %v", err)
	}
}

func cgroupFD(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// upgradeHooks swaps the programs of the named hooks only, to the current
// generation, as Install's in-order update has done at some instant.
func upgradeHooks(t *testing.T, f *redirectFixture, names ...string) {
	t.Helper()
	err := f.inHostNetns(func(cfg Config, cookie uint64) error {
		spec, err := newSpec(cfg, cookie)
		if err != nil {
			return err
		}
		var objs snowgateObjects
		if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: f.pinDir}}); err != nil {
			return err
		}
		defer objs.Close()
		for _, h := range hooks {
			if !slices.Contains(names, h.name) {
				continue
			}
			l, err := link.LoadPinnedLink(linkPin(f.pinDir, h.name), nil)
			if err != nil {
				return err
			}
			err = l.Update(h.prog(&objs.snowgatePrograms))
			l.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("upgrade %v: %v", names, err)
	}
}

// lookupGone waits until peer has no record any more.
func lookupGone(t *testing.T, r *Redirect, peer netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := r.Lookup(peer)
		if errors.Is(err, ErrNotRedirected) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("lookup %v after close: %v, want ErrNotRedirected", peer, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUpgradeFromPreviousGeneration upgrades a redirect installed by an
// earlier program generation while connections are open: a connection
// redirected by the old programs, one redirected by the old connect4 while
// the new sockops and getpeername programs already run (the window of an
// in-order upgrade), and one after the upgrade. Each is recorded for the
// gateway, keeps its original peer for getpeername, and loses its record
// when it closes.
func TestUpgradeFromPreviousGeneration(t *testing.T) {
	testenv.RequireRoot(t)
	tests := []struct {
		name   string
		object string
	}{
		{"socket storage generation", prevStorageObject},
		{"sg_socks generation", prevSocksObject},
		{"sg_tuples generation", prevHandoffObject},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { testUpgradeFrom(t, tc.object) })
	}
}

func testUpgradeFrom(t *testing.T, object string) {
	f := newRedirectFixture(t)
	dst := "203.0.113.10:443"
	want := Origin{Dst: netip.MustParseAddrPort(dst), CgroupID: f.cg.ID, PID: uint32(f.client.Pid)}
	installPrevious(t, f, object)
	r, err := Open(f.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// Each connect closes the client's previous connection and checks both
	// ends (redirectedConnect); a failure names the line, so the stage.
	_, oldConn, oldPeer := redirectedConnect(t, f, r, dst) // old programs
	defer oldConn.Close()

	// The window: new sockops and getpeername, old connect4.
	upgradeHooks(t, f, "sockops", "getpeername4", "getpeername6")
	if rep := f.client.Do(t, peerAction); rep.Peer != dst {
		t.Errorf("getpeername of the old connection under the new getpeername4: %+v, want %s", rep, dst)
	}
	// Connecting again closes the old connection: the new sockops removes
	// the record the old one wrote.
	_, winConn, winPeer := redirectedConnect(t, f, r, dst) // old connect4, new sockops
	defer winConn.Close()
	lookupGone(t, r, oldPeer)

	// The rest of the upgrade, as Install does it.
	r2 := f.install(t)
	defer r2.Close()
	if rep := f.client.Do(t, peerAction); rep.Peer != dst {
		t.Errorf("getpeername after the upgrade: %+v, want %s", rep, dst)
	}
	if o, err := r.Lookup(winPeer); err != nil || o != want {
		t.Errorf("lookup %v after the upgrade = %+v, %v; want %+v", winPeer, o, err, want)
	}
	_, newConn, newPeer := redirectedConnect(t, f, r, dst) // new programs
	defer newConn.Close()
	lookupGone(t, r, winPeer)
	f.client.Do(t, closeAction)
	lookupGone(t, r, newPeer)
}
