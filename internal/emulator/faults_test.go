package emulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator"
)

func TestParseFaultShaping(t *testing.T) {
	tests := []struct {
		spec    string
		want    emulator.Fault
		wantErr string
	}{
		{spec: "chunk,resetafter=65536,count=3", want: emulator.Fault{Endpoint: "chunk", ResetAfterBytes: 65536, Count: 3}},
		{spec: "chunk,rate=20000", want: emulator.Fault{Endpoint: "chunk", BytesPerSecond: 20000}},
		{spec: "query,resetafter=10,after,count=1", want: emulator.Fault{Endpoint: "query", ResetAfterBytes: 10, After: true, Count: 1}},
		{spec: "*,latency=5ms,rate=1000", want: emulator.Fault{Endpoint: "*", Latency: 5 * time.Millisecond, BytesPerSecond: 1000}},
		{spec: "chunk,resetafter=0", wantErr: "not positive"},
		{spec: "chunk,rate=-5", wantErr: "not positive"},
		{spec: "chunk,rate=fast", wantErr: "rate"},
		{spec: "chunk", wantErr: "needs latency, status, reset, resetafter or rate"},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := emulator.ParseFault(tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseFault(%q) = %+v, %v; want an error with %q", tc.spec, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("ParseFault(%q) = %+v, want %+v", tc.spec, got, tc.want)
			}
			// The admin API's JSON form carries the same fault.
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			var back emulator.Fault
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("unmarshal %s: %v", b, err)
			}
			if !reflect.DeepEqual(back, got) {
				t.Fatalf("JSON round trip %s = %+v, want %+v", b, back, got)
			}
		})
	}
	for _, bad := range []string{`{"endpoint":"chunk","resetAfterBytes":-1}`, `{"endpoint":"chunk","bytesPerSecond":-1}`} {
		var f emulator.Fault
		if err := json.Unmarshal([]byte(bad), &f); err == nil {
			t.Errorf("Unmarshal(%s) accepted a negative limit", bad)
		}
	}
}

// TestShapingFaultsOnTheWire checks what a client receives under each
// shaping fault, on the raw connection: a reply cut after the given bytes
// and then reset, and a reply trickled at a rate (it cannot arrive faster).
func TestShapingFaultsOnTheWire(t *testing.T) {
	inst := start(t, nil)
	login := func() (status int, body []byte, readErr error, elapsed time.Duration) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, inst.URL+"/session/v1/login-request", strings.NewReader(loginBody))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		// Identity, so the bytes counted are the JSON itself.
		req.Header.Set("Accept-Encoding", "identity")
		start := time.Now()
		resp, err := inst.HTTPClient().Do(req)
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		defer resp.Body.Close()
		body, readErr = io.ReadAll(resp.Body)
		return resp.StatusCode, body, readErr, time.Since(start)
	}
	status, full, err, _ := login()
	if status != http.StatusOK || err != nil || !bytes.Contains(full, []byte(`"token"`)) {
		t.Fatalf("baseline login: %d %v %s", status, err, full)
	}

	tests := []struct {
		name  string
		fault emulator.Fault
		check func(t *testing.T, status int, body []byte, err error, elapsed time.Duration)
	}{
		{
			name:  "reset after 40 bytes",
			fault: emulator.Fault{Endpoint: emulator.EndpointLogin, ResetAfterBytes: 40, Count: 1},
			check: func(t *testing.T, status int, body []byte, err error, _ time.Duration) {
				if status != http.StatusOK {
					t.Errorf("status %d: the headers go out before the reset", status)
				}
				if err == nil {
					t.Errorf("read the whole body (%d bytes) without an error", len(body))
				}
				if len(body) > 40 {
					t.Errorf("received %d body bytes, want at most 40", len(body))
				}
			},
		},
		{
			name:  "reset after the reply was produced",
			fault: emulator.Fault{Endpoint: emulator.EndpointLogin, ResetAfterBytes: 10, After: true, Count: 1},
			check: func(t *testing.T, _ int, body []byte, err error, _ time.Duration) {
				if err == nil || len(body) > 10 {
					t.Errorf("got %d bytes, err %v; want at most 10 and an error", len(body), err)
				}
			},
		},
		{
			name:  "trickled at 2000 bytes per second",
			fault: emulator.Fault{Endpoint: emulator.EndpointLogin, BytesPerSecond: 2000, Count: 1},
			check: func(t *testing.T, status int, body []byte, err error, elapsed time.Duration) {
				if status != http.StatusOK || err != nil || !bytes.Contains(body, []byte(`"token"`)) {
					t.Fatalf("throttled login: %d %v %s", status, err, body)
				}
				// A lower bound only: the last tenth-second slice is
				// not waited for before the reply ends.
				if floor := time.Duration(len(body)-200) * time.Second / 2000; elapsed < floor {
					t.Errorf("%d bytes arrived in %v, faster than the rate allows (%v)", len(body), elapsed, floor)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inst.Server.Faults().Add(tc.fault)
			before := inst.Server.Faults().Injected(emulator.EndpointLogin)
			status, body, err, elapsed := login()
			tc.check(t, status, body, err, elapsed)
			if n := inst.Server.Faults().Injected(emulator.EndpointLogin) - before; n != 1 {
				t.Errorf("Injected counted %d requests, want 1", n)
			}
			if left := inst.Server.Faults().List(); len(left) != 0 {
				t.Fatalf("fault not used up: %+v", left)
			}
		})
	}
}

// TestDriverThroughChunkShaping runs a multi-chunk SELECT with the unchanged
// driver while chunk downloads break mid-body and trickle: the driver
// fetches the broken chunks again and every row arrives exactly once.
func TestDriverThroughChunkShaping(t *testing.T) {
	inst := start(t, func(c *emulator.Config) { c.InlineRows = 100; c.ChunkRows = 2000 })
	db := passwordDB(t, inst, nil)
	if err := db.PingContext(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	count := func() (int, int64) {
		t.Helper()
		before := inst.Server.Faults().Hits(emulator.EndpointChunk)
		rows, err := db.QueryContext(ctxT(t), selectSQL(20000))
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		sum, n := int64(0), 0
		for rows.Next() {
			var v int64
			var s, r string
			if err := rows.Scan(&v, &s, &r); err != nil {
				t.Fatal(err)
			}
			sum += v
			n++
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("rows: %v", err)
		}
		if n != 20000 || sum != 20000*19999/2 {
			t.Fatalf("%d rows summing to %d", n, sum)
		}
		return n, inst.Server.Faults().Hits(emulator.EndpointChunk) - before
	}
	_, clean := count()
	inst.Server.Faults().ResetMidBody(emulator.EndpointChunk, 4096, 2)
	inst.Server.Faults().Throttle(emulator.EndpointChunk, 256<<10, 1)
	_, faulty := count()
	if faulty < clean+2 {
		t.Fatalf("%d chunk fetches under faults, %d without: the broken downloads were not fetched again", faulty, clean)
	}
	if left := inst.Server.Faults().List(); len(left) != 0 {
		t.Fatalf("faults not used up: %+v", left)
	}
}
