package redirect

import (
	"net/netip"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/snowgate/snowgate/internal/testenv"
)

// newNetnsHandle returns a netlink handle into a fresh network namespace. The
// namespace is created on a thread that is thrown away afterwards, so the test
// process's threads never change namespace.
func newNetnsHandle(t *testing.T) *netlink.Handle {
	t.Helper()
	type res struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine.
		runtime.LockOSThread()
		ns, err := netns.New()
		ch <- res{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	h, err := netlink.NewHandleAt(r.ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func TestEnsureHostAddress(t *testing.T) {
	testenv.RequireRoot(t)
	h := newNetnsHandle(t)
	addr := netip.MustParseAddr("169.254.77.1")
	for i := range 2 { // idempotent
		if err := ensureHostAddress(h, addr); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	lnk, err := h.LinkByName(HostInterface)
	if err != nil {
		// No dummy driver: the address went on lo.
		if lnk, err = h.LinkByName("lo"); err != nil {
			t.Fatal(err)
		}
	}
	if lnk.Attrs().Flags&(1<<0) == 0 { // net.FlagUp
		t.Errorf("%s is not up", lnk.Attrs().Name)
	}
	addrs, err := h.AddrList(lnk, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range addrs {
		if ones, _ := a.Mask.Size(); a.IP.Equal(addr.AsSlice()) && ones == 32 {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%v/32 present %d times on %s, want once: %v", addr, n, lnk.Attrs().Name, addrs)
	}
	if err := ensureHostAddress(h, netip.Addr{}); err == nil {
		t.Error("accepted an invalid address")
	}
	_, dummyErr := h.LinkByName(HostInterface)
	removed, err := removeHostInterface(h)
	if err != nil {
		t.Fatal(err)
	}
	if removed != (dummyErr == nil) {
		t.Errorf("removed = %v, but %s existed: %v", removed, HostInterface, dummyErr == nil)
	}
	if _, err := h.LinkByName(HostInterface); err == nil {
		t.Error(HostInterface + " still there after removal")
	}
	if removed2, err := removeHostInterface(h); err != nil || removed2 {
		t.Errorf("second remove: removed=%v err=%v, want nothing to do", removed2, err)
	}

}
