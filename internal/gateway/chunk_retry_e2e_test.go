package gateway_test

import (
	"fmt"
	"testing"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// chunkExchanges are the chunk fetches the sink saw after the first skip.
func (s *memorySink) chunkExchanges(skip int) []gateway.Exchange {
	var out []gateway.Exchange
	for _, x := range s.snapshot()[skip:] {
		if x.Kind == snowflake.KindChunk.String() {
			out = append(out, x)
		}
	}
	return out
}

// TestDriverChunkFetchRetries reads a multi-chunk result with gosnowflake
// while storage fails some chunk GETs. What fails before the gateway sent a
// byte (a burst of 503s, resets before the reply or early in the body) the
// gateway fetches again: the driver reads every row, every chunk fetch it
// made got 200, and storage saw more GETs than the driver made. A reset
// after bytes went to the driver is not retried by the gateway: the driver
// sees the broken stream and fetches the chunk again itself.
func TestDriverChunkFetchRetries(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	a := f.startAgent(t)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
		t.Fatalf("login through the gateway: %s", r.Err)
	}
	const rows = 120_000
	sql := fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", rows)
	faults := f.inst.Server.Faults()
	tests := []struct {
		name   string
		faults []emulator.Fault
		// absorbed: the gateway retried and the driver saw no failure;
		// else one stream broke and the gateway did not retry it.
		absorbed bool
	}{
		{name: "503 burst", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, Status: 503, Count: 2}}, absorbed: true},
		{name: "resets before the reply", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, Reset: true, Count: 2}}, absorbed: true},
		{name: "reset early in the body", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, ResetAfterBytes: 1000, Count: 2}}, absorbed: true},
		// Every chunk of this result is over 140 kB on the wire.
		{name: "reset mid-stream", faults: []emulator.Fault{{Endpoint: emulator.EndpointChunk, ResetAfterBytes: 70_000, Count: 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(faults.Clear)
			skip := len(f.sink.snapshot())
			issued := len(issuedChunkURLs(t, f.sink))
			hits := faults.Hits(emulator.EndpointChunk)
			for _, fl := range tc.faults {
				faults.Add(fl)
			}
			if r := a.do(t, clientCmd{Op: "seq", SQL: sql, Rows: rows}); r.Err != "" {
				t.Fatalf("select: %s", r.Err)
			}
			chunks := len(issuedChunkURLs(t, f.sink)) - issued
			if chunks < 2 {
				t.Fatalf("%d chunks issued, want several", chunks)
			}
			want := chunks
			if !tc.absorbed {
				want++ // the driver's own second fetch
			}
			// Observers see an exchange just after its reply.
			waitFor(t, fmt.Sprintf("%d chunk fetches observed", want), func() bool {
				return len(f.sink.chunkExchanges(skip)) >= want
			})
			xs := f.sink.chunkExchanges(skip)
			gets := faults.Hits(emulator.EndpointChunk) - hits
			broken := 0
			for _, x := range xs {
				t.Logf("chunk %s: status %d, %d bytes, %q", x.ChunkID, x.Status, x.ResponseSize, x.Error)
				switch {
				case x.Status == 200 && x.Error == "":
				case x.Status == 200 && x.Error == "chunk stream broken":
					broken++
				default:
					t.Errorf("chunk %s: status %d, error %q", x.ChunkID, x.Status, x.Error)
				}
			}
			t.Logf("%d chunks, %d fetches by the driver, %d GETs at storage, %d broken", chunks, len(xs), gets, broken)
			if tc.absorbed {
				if len(xs) != chunks || broken != 0 {
					t.Errorf("the driver made %d fetches (%d broken) for %d chunks; want one each", len(xs), broken, chunks)
				}
				if gets <= int64(len(xs)) {
					t.Errorf("storage saw %d GETs for the driver's %d fetches: the gateway retried nothing", gets, len(xs))
				}
				return
			}
			if broken != 1 || len(xs) != chunks+1 {
				t.Errorf("%d fetches (%d broken) for %d chunks; want one broken and fetched again by the driver", len(xs), broken, chunks)
			}
			if gets != int64(len(xs)) {
				t.Errorf("storage saw %d GETs for the driver's %d fetches; want one each", gets, len(xs))
			}
		})
	}
}
