package testenv

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestNetnsHTTPClient serves HTTP on the namespace's loopback only: the
// client reaches it, dialling anew for every request.
func TestNetnsHTTPClient(t *testing.T) {
	RequireRoot(t)
	ns := NewNetns(t)
	l, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "in "+r.URL.Path) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c := ns.HTTPClient(30 * time.Second)
	for i, path := range []string{"/a", "/b"} {
		resp, err := c.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || string(b) != "in "+path {
			t.Fatalf("GET %s: status %d, body %q, %v", path, resp.StatusCode, b, err)
		}
		if n := conns.Load(); n != int32(i+1) {
			t.Fatalf("after GET %s: %d connections, want %d (a new one a request)", path, n, i+1)
		}
	}
}
