package redirect

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// HostInterface is the dummy interface that carries the gateway's host
// address for clients in other network namespaces.
const HostInterface = "snowgate0"

// EnsureHostAddress puts addr/32 (or /128) on the dummy interface snowgate0 in
// the caller's network namespace, creating the interface and bringing it up
// as needed. It is idempotent. Containers reach the address through their
// default route and the host delivers it locally. When the kernel has no
// dummy interface support the address goes on lo instead.
func EnsureHostAddress(addr netip.Addr) error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("ensure host address %v: netlink: %w", addr, err)
	}
	defer h.Close()
	return ensureHostAddress(h, addr)
}

func ensureHostAddress(h *netlink.Handle, addr netip.Addr) error {
	if !addr.IsValid() || addr.IsUnspecified() {
		return fmt.Errorf("ensure host address %v: invalid address", addr)
	}
	addr = addr.Unmap()
	lnk, err := h.LinkByName(HostInterface)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: HostInterface}}
		if err := h.LinkAdd(d); err != nil {
			// No dummy driver: fall back to the loopback interface.
			lo, loErr := h.LinkByName("lo")
			if loErr != nil {
				return fmt.Errorf("ensure host address %v: add %s: %w (and no lo: %v)", addr, HostInterface, err, loErr)
			}
			lnk = lo
		} else if lnk, err = h.LinkByName(HostInterface); err != nil {
			return fmt.Errorf("ensure host address %v: %w", addr, err)
		}
	case err != nil:
		return fmt.Errorf("ensure host address %v: %w", addr, err)
	}
	if err := h.LinkSetUp(lnk); err != nil {
		return fmt.Errorf("ensure host address %v: set %s up: %w", addr, lnk.Attrs().Name, err)
	}
	bits := addr.BitLen()
	nl := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(bits, bits)}}
	if err := h.AddrReplace(lnk, nl); err != nil {
		return fmt.Errorf("ensure host address %v on %s: %w", addr, lnk.Attrs().Name, err)
	}
	return nil
}

// RemoveHostInterface deletes the snowgate0 interface (and with it the host
// address) if it exists, and reports whether it did. An address that
// EnsureHostAddress put on lo, for lack of a dummy driver, is left alone.
func RemoveHostInterface() (bool, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return false, fmt.Errorf("remove %s: netlink: %w", HostInterface, err)
	}
	defer h.Close()
	return removeHostInterface(h)
}

func removeHostInterface(h *netlink.Handle) (bool, error) {
	lnk, err := h.LinkByName(HostInterface)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove %s: %w", HostInterface, err)
	}
	if err := h.LinkDel(lnk); err != nil {
		return false, fmt.Errorf("remove %s: %w", HostInterface, err)
	}
	return true, nil
}
