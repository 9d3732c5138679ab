package redirect

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/snowgate/snowgate/internal/testenv"
)

// strangerConn is slot i of sg_conns as another live connection (a client
// address the test never uses) or a connect being recorded (busy) holds it.
func strangerConn(i uint32, busy bool) snowgateSgConn {
	if busy {
		return snowgateSgConn{O: snowgateSgOrigin{Cookie: slotBusy}}
	}
	return snowgateSgConn{
		Key: snowgateSgTupleKey{Addr: ip6Words(netip.MustParseAddr("::ffff:198.51.100.9")), Port: htons(uint16(i))},
		O:   strangerRecord(strangerCookie + uint64(i)),
	}
}

// fillConns sets every slot of sg_conns to a stranger (strangerConn).
func fillConns(t *testing.T, m *ebpf.Map, busy bool) {
	t.Helper()
	keys := make([]uint32, connSlots)
	vals := make([]snowgateSgConn, connSlots)
	for i := range keys {
		keys[i] = uint32(i)
		vals[i] = strangerConn(uint32(i), busy)
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		t.Fatalf("fill sg_conns: %v", err)
	}
}

// TestConnSlot records redirected connections in sg_conns and, when their
// slot is taken, in sg_tuples: either way the gateway's look-up, getpeername
// and Connections find the connection's own record (never the stranger in
// its slot), and the close removes it (a slot is wiped back to zero, a
// stranger's slot is left alone).
func TestConnSlot(t *testing.T) {
	testenv.RequireRoot(t)
	dst := "203.0.113.10:443"
	tests := []struct {
		name string
		// fill: every slot taken before the connect (busy: being written).
		fill, busy bool
		wantInSlot bool
	}{
		{name: "free slot", wantInSlot: true},
		{name: "slot held by another connection", fill: true},
		{name: "slot being written", fill: true, busy: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newRedirectFixture(t)
			r := f.install(t)
			defer r.Close()
			conns, err := ebpf.LoadPinnedMap(filepath.Join(f.pinDir, snowgateMapSgConns), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conns.Close()
			if info, err := conns.Info(); err != nil || info.MaxEntries != connSlots {
				t.Fatalf("sg_conns: %+v, %v; want %d slots (connSlots is SG_CONN_SLOTS)", info, err, connSlots)
			}
			if tc.fill {
				fillConns(t, conns, tc.busy)
			}

			rep, conn, peer := redirectedConnect(t, f, r, dst)
			defer conn.Close()
			want := Origin{Dst: netip.MustParseAddrPort(dst), CgroupID: f.cg.ID, PID: uint32(f.client.Pid)}
			all, err := r.Connections()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(all, Connection{Peer: peer, Origin: want}) {
				t.Errorf("Connections() has no %v -> %+v", peer, want)
			}

			cookie := clientCookie(t, f.client.Pid, rep.Local)
			key := snowgateSgTupleKey{Addr: ip6Words(peer.Addr()), Port: htons(peer.Port())}
			slot := connSlot(key)
			var c snowgateSgConn
			if err := conns.Lookup(slot, &c); err != nil {
				t.Fatal(err)
			}
			var tuple snowgateSgOrigin
			tupleErr := r.tuples.Lookup(&key, &tuple)
			if tc.wantInSlot {
				if c.Key != key || c.O.Cookie != cookie || c.O.Flags&flagRedirected == 0 {
					t.Errorf("sg_conns[%d] = %+v, want the record of %v (cookie %d)", slot, c, peer, cookie)
				}
				if !errors.Is(tupleErr, ebpf.ErrKeyNotExist) {
					t.Errorf("sg_tuples[%v] = %+v, %v; want nothing (the record is in its slot)", peer, tuple, tupleErr)
				}
			} else {
				if c != strangerConn(slot, tc.busy) {
					t.Errorf("sg_conns[%d] = %+v, want the stranger left alone", slot, c)
				}
				if tupleErr != nil || tuple.Cookie != cookie {
					t.Errorf("sg_tuples[%v] = %+v, %v; want the record with cookie %d", peer, tuple, tupleErr, cookie)
				}
			}

			f.client.Do(t, closeAction)
			lookupGone(t, r, peer)
			if err := conns.Lookup(slot, &c); err != nil {
				t.Fatal(err)
			}
			if wantSlot := strangerConn(slot, tc.busy); !tc.fill {
				if c != (snowgateSgConn{}) {
					t.Errorf("sg_conns[%d] after the close = %+v, want it wiped", slot, c)
				}
			} else if c != wantSlot {
				t.Errorf("sg_conns[%d] after the close = %+v, want the stranger left alone", slot, c)
			}
			if err := r.tuples.Lookup(&key, &tuple); !errors.Is(err, ebpf.ErrKeyNotExist) {
				t.Errorf("sg_tuples[%v] after the close = %+v, %v; want nothing", peer, tuple, err)
			}
		})
	}
}
