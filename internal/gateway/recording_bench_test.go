package gateway_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"filippo.io/age"

	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/testenv"
)

// BenchmarkRecordingOverhead measures what the session recorder costs on
// the real data path, against the same gateway with recording off, in one
// run: per-query latency of SELECT 1 on a warm connection (p50), and the
// throughput of a large multi-chunk result (every value checked by the
// client), with the default recording configuration (zstd, age encryption
// to one recipient, fsync at every query boundary, full results). It also
// reports the bytes stored per byte of result the client received.
//
// Run it once (-benchtime 1x): it takes its own samples, alternating the
// two gateways so that machine load affects both alike.
func BenchmarkRecordingOverhead(b *testing.B) {
	testenv.RequireRoot(b)
	const (
		rounds    = 5
		perRound  = 200
		bigRows   = 500000
		bigRounds = 5
		selectBig = "SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))"
	)
	emu := startBenchEmulator(b, "")
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	rec, err := gateway.NewSessionRecorder(gateway.SessionRecorderConfig{
		Dir:    dir,
		Writer: recording.Options{SigningKey: key, Recipients: []age.Recipient{id.Recipient()}},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rec.Close() })
	hook := newPrincipalHook()
	off := newFixture(b, fixtureOptions{Upstream: emu, Credentials: hook})
	on := newFixture(b, fixtureOptions{Upstream: emu, Credentials: hook, Recorder: rec, Observers: []gateway.Observer{rec}})
	agents := []*agentProc{off.startAgent(b), on.startAgent(b)}
	for _, a := range agents {
		if r := a.do(b, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
			b.Fatalf("login: %s", r.Err)
		}
		if r := a.do(b, clientCmd{Op: "latency", SQL: "SELECT 1", Count: 50}); r.Err != "" {
			b.Fatalf("warm-up: %s", r.Err)
		}
	}
	for b.Loop() {
		var p50, rate [2][]float64
		for range rounds {
			for i, a := range agents {
				r := a.do(b, clientCmd{Op: "latency", SQL: "SELECT 1", Count: perRound})
				if r.Err != "" {
					b.Fatalf("latency: %s", r.Err)
				}
				p50[i] = append(p50[i], float64(r.P50)/1e3)
			}
		}
		for range bigRounds {
			for i, a := range agents {
				r := a.do(b, clientCmd{Op: "seq", SQL: fmt.Sprintf(selectBig, bigRows), Rows: bigRows})
				if r.Err != "" {
					b.Fatalf("large result: %s", r.Err)
				}
				rate[i] = append(rate[i], float64(bigRows)/(float64(r.Elapsed)/1e9))
			}
		}
		o50, r50 := median(p50[0]), median(p50[1])
		or, rr := median(rate[0]), median(rate[1])
		b.ReportMetric(o50, "off-p50-µs")
		b.ReportMetric(r50, "recording-p50-µs")
		b.ReportMetric(r50-o50, "overhead-p50-µs")
		b.ReportMetric(or, "off-rows/s")
		b.ReportMetric(rr, "recording-rows/s")
		b.ReportMetric(rr/or, "throughput-ratio")
		b.Logf("latency p50: off %.0f µs, recording %.0f µs (overhead %.0f µs)", o50, r50, r50-o50)
		b.Logf("%d rows: off %.0f rows/s, recording %.0f rows/s (ratio %.2f, cost %.0f%%); samples off %v recording %v",
			bigRows, or, rr, rr/or, 100*(1-rr/or), rate[0], rate[1])
	}
	// Bytes stored per byte the client received through the recording
	// gateway.
	var sent int64
	on.sink.mu.Lock()
	for _, x := range on.sink.xs {
		sent += x.ResponseSize
	}
	on.sink.mu.Unlock()
	var stored int64
	paths, _ := filepath.Glob(filepath.Join(dir, "*"+recording.FileExt))
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			stored += fi.Size()
		}
	}
	if sent > 0 {
		b.ReportMetric(float64(stored)/float64(sent), "stored-bytes/result-byte")
		b.Logf("stored %d bytes of recording for %d bytes sent to the client (%.3f)", stored, sent, float64(stored)/float64(sent))
	}
}
