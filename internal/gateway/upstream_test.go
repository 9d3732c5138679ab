package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/testenv"
)

// apiTestServer is a real TLS HTTP/1.1 server on loopback that counts the
// connections it accepted.
type apiTestServer struct {
	srv           *httptest.Server
	conns, closed atomic.Int64
}

func newAPITestServer(t *testing.T, h http.Handler, idle time.Duration) *apiTestServer {
	t.Helper()
	s := &apiTestServer{}
	s.srv = httptest.NewUnstartedServer(h)
	s.srv.Config.IdleTimeout = idle
	s.srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	s.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
		case http.StateClosed:
			s.closed.Add(1)
		}
	}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

// transport returns an apiTransport trusting the server's certificate, as
// newUpstream builds it.
func (s *apiTestServer) transport(t *testing.T) *apiTransport {
	t.Helper()
	ct := s.srv.Client().Transport.(*http.Transport)
	g := &Gateway{cfg: Config{
		Dialer:      &net.Dialer{Timeout: 10 * time.Second},
		UpstreamTLS: &tls.Config{RootCAs: ct.TLSClientConfig.RootCAs, MinVersion: tls.VersionTLS12},
	}}
	tr := g.newAPITransport(nil)
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// get sends one request and reads the reply; wrote reports whether the
// transport said the request reached the wire.
func get(ctx context.Context, tr *apiTransport, method, url, body string, readAll bool) (status int, reply string, wrote bool, err error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	var sent atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }})
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, "", false, err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, "", sent.Load(), err
	}
	defer resp.Body.Close()
	if !readAll {
		buf := make([]byte, 4)
		n, _ := resp.Body.Read(buf)
		return resp.StatusCode, string(buf[:n]), sent.Load(), nil
	}
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), sent.Load(), err
}

// TestAPITransport drives the upstream transport through the life of its
// connections: reuse, a reply that closes, an upstream that closed an idle
// connection, a body left unread, chunked and empty replies, and a request
// cancelled while the upstream is still answering.
func TestAPITransport(t *testing.T) {
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.Host, b)
	})
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 1<<20))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		// Read the body first: the server notices a closed connection
		// (and ends r's context) only after that.
		_, _ = io.ReadAll(r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "late")
	})
	t.Cleanup(func() { close(release) })

	type step struct {
		method, path, body string
		// readAll reads the whole reply (else 4 bytes, then Close).
		readAll bool
		// waitClosed waits until the server has closed the connection
		// (its idle timeout is 300 ms).
		waitClosed bool
		// timeout of the step's context; 0: a generous one.
		timeout time.Duration
		// want: the status (0: an error), the reply read, whether the
		// request reached the wire, and the server's connection count
		// after the step.
		wantStatus int
		wantReply  string
		wantWrote  bool
		wantConns  int64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"keep-alive reuses one connection", []step{
			{method: "POST", path: "/echo", body: `{"a":1}`, readAll: true, wantStatus: 200, wantReply: `POST %s {"a":1}`, wantWrote: true, wantConns: 1},
			{method: "GET", path: "/echo", readAll: true, wantStatus: 200, wantReply: `GET %s `, wantWrote: true, wantConns: 1},
			{method: "POST", path: "/echo", body: "b", readAll: true, wantStatus: 200, wantReply: `POST %s b`, wantWrote: true, wantConns: 1},
		}},
		{"a reply with Connection: close is not reused", []step{
			{method: "GET", path: "/close", readAll: true, wantStatus: 200, wantReply: "bye", wantWrote: true, wantConns: 1},
			{method: "GET", path: "/echo", readAll: true, wantStatus: 200, wantReply: `GET %s `, wantWrote: true, wantConns: 2},
		}},
		{"a connection the upstream closed while idle is not used", []step{
			{method: "GET", path: "/echo", readAll: true, wantStatus: 200, wantReply: `GET %s `, wantWrote: true, wantConns: 1},
			{method: "POST", path: "/echo", body: "after idle", readAll: true, waitClosed: true, wantStatus: 200, wantReply: `POST %s after idle`, wantWrote: true, wantConns: 2},
		}},
		{"a body closed unread costs its connection", []step{
			{method: "GET", path: "/big", wantStatus: 200, wantReply: "xxxx", wantWrote: true, wantConns: 1},
			{method: "GET", path: "/echo", readAll: true, wantStatus: 200, wantReply: `GET %s `, wantWrote: true, wantConns: 2},
		}},
		{"chunked and empty replies keep the connection", []step{
			{method: "GET", path: "/chunked", readAll: true, wantStatus: 200, wantReply: "part0;part1;part2;", wantWrote: true, wantConns: 1},
			{method: "GET", path: "/empty", readAll: true, wantStatus: 204, wantWrote: true, wantConns: 1},
			{method: "GET", path: "/echo", readAll: true, wantStatus: 200, wantReply: `GET %s `, wantWrote: true, wantConns: 1},
		}},
		{"a cancelled request ends at once and its connection is dropped", []step{
			{method: "GET", path: "/echo", readAll: true, wantStatus: 200, wantReply: `GET %s `, wantWrote: true, wantConns: 1},
			{method: "POST", path: "/slow", body: "x", readAll: true, timeout: time.Second, wantWrote: true, wantConns: 1},
			{method: "GET", path: "/echo", readAll: true, wantStatus: 200, wantReply: `GET %s `, wantWrote: true, wantConns: 2},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newAPITestServer(t, mux, 300*time.Millisecond)
			tr := s.transport(t)
			host := strings.TrimPrefix(s.srv.URL, "https://")
			for i, st := range tc.steps {
				if st.waitClosed {
					testenv.WaitFor(t, time.Minute, func() bool { return s.closed.Load() >= 1 }, "the server to close the idle connection")
					// Let the FIN reach the client's socket.
					time.Sleep(50 * time.Millisecond)
				}
				timeout := st.timeout
				if timeout == 0 {
					timeout = time.Minute
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				status, reply, wrote, err := get(ctx, tr, st.method, s.srv.URL+st.path, st.body, st.readAll)
				cancel()
				if st.wantStatus == 0 {
					if err == nil {
						t.Errorf("step %d: status %d, want an error", i, status)
					} else if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("step %d: error %v, want the context's deadline", i, err)
					}
				} else if err != nil || status != st.wantStatus {
					t.Errorf("step %d: status %d, error %v; want %d", i, status, err, st.wantStatus)
				}
				want := st.wantReply
				if strings.Contains(want, "%s") {
					want = fmt.Sprintf(want, host)
				}
				if reply != want {
					t.Errorf("step %d: reply %q, want %q", i, reply, want)
				}
				if wrote != st.wantWrote {
					t.Errorf("step %d: wrote %v, want %v", i, wrote, st.wantWrote)
				}
				if n := s.conns.Load(); n != st.wantConns {
					t.Errorf("step %d: the server accepted %d connections, want %d", i, n, st.wantConns)
				}
			}
		})
	}
}

// TestAPITransportUnsent checks that a request that never reached the wire
// (the dial failed) is reported as unsent, which is what makes a login safe
// to retry, and that a server that does not verify fails the handshake.
func TestAPITransportUnsent(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()
	untrusted := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(untrusted.Close)
	g := &Gateway{cfg: Config{Dialer: &net.Dialer{Timeout: 10 * time.Second}, UpstreamTLS: &tls.Config{MinVersion: tls.VersionTLS12}}}
	tr := g.newAPITransport(nil)
	t.Cleanup(tr.CloseIdleConnections)
	tests := []struct {
		name, url, wantErr string
	}{
		{"refused dial", "https://" + closedAddr + "/echo", "dial upstream"},
		{"untrusted certificate", untrusted.URL + "/echo", "TLS handshake"},
		{"unsupported scheme", "ftp://" + closedAddr + "/x", "unsupported scheme"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, _, wrote, err := get(ctx, tr, "POST", tc.url, "login", true)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
			if wrote {
				t.Error("reported as sent")
			}
		})
	}
}
