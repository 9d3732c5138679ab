package redirect

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/cilium/ebpf/ringbuf"
)

// Event is one refusal reported by the programs. Redirects that succeed
// produce no events; they are only counted.
type Event struct {
	// Reason is the counter name of the refusal, e.g. "refused_quic".
	Reason string
	// Hook is the program that refused: connect4, connect6, sendmsg4,
	// sendmsg6, sock_create, egress or sockops.
	Hook string
	// Proto is the IP protocol number (6 TCP, 17 UDP, 136 UDP-Lite, ...).
	Proto uint8
	// Dst is the destination refused; zero for sock_create.
	Dst netip.AddrPort
	// CgroupID, PID and UID say who tried. The egress backstop knows the
	// socket's cgroup and uid but not the pid (0).
	CgroupID uint64
	PID      uint32
	UID      uint32
}

var hookNames = map[snowgateSgHook]string{
	snowgateSgHookSG_HOOK_CONNECT4:    "connect4",
	snowgateSgHookSG_HOOK_CONNECT6:    "connect6",
	snowgateSgHookSG_HOOK_SENDMSG4:    "sendmsg4",
	snowgateSgHookSG_HOOK_SENDMSG6:    "sendmsg6",
	snowgateSgHookSG_HOOK_SOCK_CREATE: "sock_create",
	snowgateSgHookSG_HOOK_EGRESS:      "egress",
	snowgateSgHookSG_HOOK_SOCKOPS:     "sockops",
}

// decodeEvent turns one ring-buffer record into an Event.
func decodeEvent(raw []byte) (Event, error) {
	var e snowgateSgEvent
	if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &e); err != nil {
		return Event{}, fmt.Errorf("decode event (%d bytes): %w", len(raw), err)
	}
	hook, ok := hookNames[snowgateSgHook(e.Hook)]
	if !ok {
		hook = fmt.Sprintf("hook_%d", e.Hook)
	}
	ev := Event{
		Reason:   reasonName(snowgateSgReason(e.Reason)),
		Hook:     hook,
		Proto:    e.Proto,
		CgroupID: e.CgroupId,
		PID:      e.Pid,
		UID:      e.Uid,
	}
	if e.Addr != [4]uint32{} || e.Port != 0 {
		a := wordsAddr(e.Addr, false)
		ev.Dst = netip.AddrPortFrom(a.Unmap(), ntohs(e.Port))
	}
	return ev, nil
}

// Events streams refusal events until ctx ends, then closes the channel. The
// ring buffer has one consumer: run a single Events reader per redirect
// (normally the daemon). Events that arrive while nobody reads, or faster
// than they are read, are dropped by the kernel once the buffer is full;
// the counters still count them. Cancel ctx before closing r: the reader
// holds its own reference to the ring buffer.
func (r *Redirect) Events(ctx context.Context) (<-chan Event, error) {
	rd, err := ringbuf.NewReader(r.events)
	if err != nil {
		return nil, fmt.Errorf("open event reader: %w", err)
	}
	out := make(chan Event, 64)
	go func() {
		<-ctx.Done()
		rd.Close()
	}()
	go func() {
		defer close(out)
		defer rd.Close()
		var rec ringbuf.Record
		for {
			if err := rd.ReadInto(&rec); err != nil {
				if !errors.Is(err, ringbuf.ErrClosed) {
					slog.Warn("redirect event reader stopped", "err", err)
				}
				return
			}
			ev, err := decodeEvent(rec.RawSample)
			if err != nil {
				slog.Warn("redirect event dropped", "err", err)
				continue
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
