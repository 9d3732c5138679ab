package resultset

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator/sqlengine"
)

const millionSQL = `SELECT seq4(), uniform(1, 1000000, random()), randstr(16, seq4()) FROM TABLE(GENERATOR(ROWCOUNT => 1000000))`

// peakHeap samples the heap in use while fn runs and returns the maximum.
func peakHeap(fn func()) uint64 {
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	fn()
	close(stop)
	wg.Wait()
	return peak.Load()
}

// BenchmarkGenerateMillion encodes a 1,000,000-row generator SELECT into
// chunk files and reports rows/s, the peak heap in use, and the time as a
// multiple of the baseline measured in the same run: the engine producing
// the same rows without encoding them (x-engine-only).
func BenchmarkGenerateMillion(b *testing.B) {
	e, err := sqlengine.Open(sqlengine.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	for _, f := range []Format{JSON, Arrow} {
		b.Run(string(f), func(b *testing.B) {
			dir := b.TempDir()
			var rows int64
			var peak uint64
			start := time.Now()
			for i := 0; i < b.N; i++ {
				p := peakHeap(func() {
					res, err := e.Execute(context.Background(), e.NewSession("u", "", "", "", ""), millionSQL, nil)
					if err != nil {
						b.Fatal(err)
					}
					page, err := Encode(context.Background(), res, Options{Format: f, Dir: dir})
					if err != nil {
						b.Fatal(err)
					}
					rows += page.Total
					if page.Total != 1000000 {
						b.Fatalf("total %d", page.Total)
					}
					if err := page.Remove(); err != nil {
						b.Fatal(err)
					}
				})
				if p > peak {
					peak = p
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			// Baseline, same run: the engine producing the rows with no
			// encoding at all.
			drainStart := time.Now()
			res, err := e.Execute(context.Background(), e.NewSession("u", "", "", "", ""), millionSQL, nil)
			if err != nil {
				b.Fatal(err)
			}
			for res.Rows.Next() {
			}
			if err := res.Rows.Err(); err != nil {
				b.Fatal(err)
			}
			res.Rows.Close()
			drain := time.Since(drainStart)
			b.ReportMetric(float64(rows)/elapsed.Seconds(), "rows/s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
			b.ReportMetric(elapsed.Seconds()/float64(b.N)/drain.Seconds(), "x-engine-only")
		})
	}
}
