package gateway

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// chunkEnv is a gateway handler serving the chunk URLs it issued for a
// multi-chunk result of a real emulator, whose storage is reached through
// the gateway's own storage transport.
type chunkEnv struct {
	e    *roundTripEnv
	h    *handler
	srv  *httptest.Server
	urls []*url.URL // the gateway chunk URLs of the result, in order
}

func newChunkEnv(t *testing.T, rows int) *chunkEnv {
	t.Helper()
	e := newRoundTripEnv(t)
	h, up := e.handlerTo(t, nil)
	h.g.cfg.Chunks = snowflake.NewChunkTable(0, nil)
	h.g.cfg.BodyTimeout = time.Minute
	h.g.creds = ObserveOnly{}
	h.g.accounts = map[string]*upstream{h.host: up}
	h.g.storage = h.g.newTransport(nil)
	t.Cleanup(h.g.storage.CloseIdleConnections)
	h.tls = true
	c := &chunkEnv{e: e, h: h, srv: httptest.NewServer(h)}
	t.Cleanup(c.srv.Close)

	// The query goes straight to the emulator; its reply is rewritten as
	// forward rewrites it, by the gateway's chunk table for this workload.
	sql := fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", rows)
	body := fmt.Sprintf(`{"sqlText":%q,"sequenceId":2}`, sql)
	req, err := http.NewRequest(http.MethodPost, e.inst.URL+"/queries/v1/query-request?requestId="+newRequestID(t), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", `Snowflake Token="`+e.token+`"`)
	resp, err := e.inst.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	q, err := snowflake.ParseQueryResponse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.g.cfg.Chunks.RewriteReply(q, h.host, h.owner(), ""); err != nil {
		t.Fatal(err)
	}
	if q, err = snowflake.ParseQueryResponse(q.Body.Bytes()); err != nil {
		t.Fatal(err)
	}
	var chunks []struct {
		URL string `json:"url"`
	}
	if ok, err := q.Data.Decode("chunks", &chunks); !ok || err != nil {
		t.Fatalf("the reply lists no chunks (%v)", err)
	}
	for _, ch := range chunks {
		u, err := url.Parse(ch.URL)
		if err != nil {
			t.Fatal(err)
		}
		c.urls = append(c.urls, u)
	}
	return c
}

// fetch GETs a gateway chunk URL as a driver does; it returns the status,
// the body as far as it came, and the error that broke it (if any).
func (c *chunkEnv) fetch(t *testing.T, u *url.URL) (int, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.srv.URL+u.RequestURI(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = c.h.host
	// As the drivers do: the body comes as storage keeps it (gzip).
	req.Header.Set("Accept-Encoding", "gzip")
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET chunk: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// TestChunkFetchRetries fetches a chunk through the gateway while storage
// misbehaves (the emulator's fault knobs), streamed and with a recorder
// holding the whole chunk: what storage says before any byte reached the
// client (5xx "not now", a reset, a body broken while the gateway still
// holds it) is fetched again and the client gets the whole chunk; an
// answer (4xx) and a break after bytes were sent are not retried.
func TestChunkFetchRetries(t *testing.T) {
	c := newChunkEnv(t, 120_000)
	if len(c.urls) < 2 {
		t.Fatalf("%d chunk urls, want several", len(c.urls))
	}
	faults := c.e.inst.Server.Faults()
	// The largest chunk, and what it is when nothing fails.
	var u *url.URL
	var want []byte
	for _, cu := range c.urls {
		status, b, err := c.fetch(t, cu)
		if status != http.StatusOK || err != nil {
			t.Fatalf("fetch without faults: status %d, %v", status, err)
		}
		if len(b) > len(want) {
			u, want = cu, b
		}
	}
	// Past the gateway's held prefix, with room to spare both ways.
	midStream := int64(2 * chunkPrefix)
	if int64(len(want)) < 2*midStream {
		t.Fatalf("largest chunk is %d bytes on the wire, want at least %d", len(want), 2*midStream)
	}
	t.Logf("chunk of %d bytes on the wire", len(want))

	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := NewSessionRecorder(SessionRecorderConfig{
		Dir:    t.TempDir(),
		Writer: recording.Options{SigningKey: key, Sync: recording.SyncNever},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close() })

	tests := []struct {
		name     string
		recorded bool
		faults   []emulator.Fault
		// wantStatus and a whole body (wantBroken: the body breaks), and
		// how many GETs storage saw (at least; at most).
		wantStatus       int
		wantBroken       bool
		minHits, maxHits int64
	}{
		{name: "no fault", wantStatus: 200, minHits: 1, maxHits: 1},
		{name: "503 burst absorbed", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, Status: 503, Count: 2}},
			wantStatus: 200, minHits: 3, maxHits: 3},
		{name: "500 and 504 absorbed", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, Status: 500, Count: 1}, {Endpoint: emulator.EndpointChunk, Status: 504, Count: 2}},
			// The first GET meets the 500 (listed first), the second the 504.
			wantStatus: 200, minHits: 3, maxHits: 3},
		{name: "503 past the attempts reaches the driver", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, Status: 503, Count: chunkAttempts + 2}},
			wantStatus: 503, minHits: chunkAttempts, maxHits: chunkAttempts},
		{name: "403 is an answer", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, Status: 403, Count: 1}},
			wantStatus: 403, minHits: 1, maxHits: 1},
		// Go's transport may itself resend a GET whose reused connection
		// was reset, hence no upper bound.
		{name: "resets before the reply absorbed", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, Reset: true, Count: 2}},
			wantStatus: 200, minHits: 3, maxHits: 1 << 10},
		{name: "reset early in the body absorbed", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, ResetAfterBytes: 1000, Count: 1}},
			wantStatus: 200, minHits: 2, maxHits: 2},
		{name: "reset mid-stream reaches the driver", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, ResetAfterBytes: midStream, Count: 1}},
			wantStatus: 200, wantBroken: true, minHits: 1, maxHits: 1},
		{name: "recorded: 503 burst absorbed", recorded: true, faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, Status: 503, Count: 2}},
			wantStatus: 200, minHits: 3, maxHits: 3},
		{name: "recorded: reset mid-body absorbed", recorded: true, faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, ResetAfterBytes: midStream, Count: 2}},
			wantStatus: 200, minHits: 3, maxHits: 3},
		{name: "recorded: 403 is an answer", recorded: true, faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, Status: 403, Count: 1}},
			wantStatus: 403, minHits: 1, maxHits: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.h.g.cfg.Recorder = nil
			if tc.recorded {
				c.h.g.cfg.Recorder = rec
			}
			t.Cleanup(faults.Clear)
			// Idle storage connections would let Go's transport resend on
			// its own what the gateway is to resend: start without any.
			c.h.g.storage.CloseIdleConnections()
			for _, fl := range tc.faults {
				faults.Add(fl)
			}
			before := faults.Hits(emulator.EndpointChunk)
			status, body, err := c.fetch(t, u)
			hits := faults.Hits(emulator.EndpointChunk) - before
			if status != tc.wantStatus {
				t.Errorf("status %d, want %d", status, tc.wantStatus)
			}
			switch {
			case tc.wantBroken:
				if err == nil && len(body) == len(want) {
					t.Errorf("the whole chunk arrived; want a broken stream")
				}
			case err != nil:
				t.Errorf("body broken after %d bytes: %v", len(body), err)
			case status == 200 && string(body) != string(want):
				t.Errorf("body of %d bytes differs from the chunk's %d", len(body), len(want))
			}
			if hits < tc.minHits || hits > tc.maxHits {
				t.Errorf("storage saw %d GETs, want %d to %d", hits, tc.minHits, tc.maxHits)
			}
		})
	}
}
