package gateway_test

import (
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestPassthrough checks other_tls: passthrough: TLS for a foreign name is
// relayed byte for byte to the original destination, dialled by the gateway
// (excluded from the redirect by its cgroup). The destination is a listener
// on the host's loopback whose port the redirect intercepts.
func TestPassthrough(t *testing.T) {
	target, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	dst := target.Addr().(*net.TCPAddr).AddrPort()
	got := make(chan []byte, 1)
	go func() {
		c, err := target.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		b, _ := io.ReadAll(c)
		got <- b
		fmt.Fprintf(c, "passthrough-ok:%d", len(b))
	}()

	f := newFixture(t, fixtureOptions{OtherTLS: "passthrough", ExtraPorts: []uint16{dst.Port()}})
	a := f.startAgent(t)
	hello := clientHelloBytes(t, "example.com")
	want := fmt.Sprintf("passthrough-ok:%d", len(hello))
	r := a.do(t, clientCmd{Op: "raw", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dst.Port()).String(), Hex: hex.EncodeToString(hello)})
	if r.Err != "" {
		t.Fatalf("client: %s", r.Err)
	}
	if r.Received != len(want) {
		t.Errorf("client received %d bytes, want %d", r.Received, len(want))
	}
	select {
	case b := <-got:
		if string(b) != string(hello) {
			t.Errorf("destination got %d bytes, not the client's ClientHello (%d bytes)", len(b), len(hello))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the destination saw no connection")
	}
	if n := f.gw.Stats.PassedThrough.Load(); n != 1 {
		t.Errorf("PassedThrough = %d, want 1", n)
	}
}
