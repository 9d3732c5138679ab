package recording

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
)

// benchRows is about 1 MB of JSON-format result rows shaped like a typical
// analytics query: an id, a name, a timestamp, a decimal and a status.
func benchRows() ([][]*string, int64) {
	rng := rand.New(rand.NewPCG(42, 42))
	statuses := []string{"OPEN", "CLOSED", "PENDING", "FAILED"}
	var rows [][]*string
	var size int64
	for size < 1<<20 {
		i := len(rows)
		row := []*string{
			str(fmt.Sprint(100000000 + i)),
			str(fmt.Sprintf("customer-%06d", rng.IntN(1000000))),
			str(fmt.Sprint(1700000000 + rng.IntN(30000000))),
			str(fmt.Sprintf("%d.%02d", rng.IntN(100000), rng.IntN(100))),
			str(statuses[rng.IntN(len(statuses))]),
		}
		rows = append(rows, row)
		size += rowSize(row)
	}
	return rows, size
}

// BenchmarkResultOverhead: recording cost per MB of result. "baseline" is
// encoding the rows as JSON alone (what any recorder pays); the others
// append one ~1 MB query response per iteration. stored/result is bytes on
// disk per byte of result cells.
func BenchmarkResultOverhead(b *testing.B) {
	rows, size := benchRows()
	b.Run("baseline-json", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if _, err := json.Marshal(rows); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, tc := range []struct {
		name    string
		encrypt bool
		sync    SyncPolicy
	}{
		{"zstd", false, SyncNever},
		{"zstd+age", true, SyncNever},
		{"zstd+age+fsync", true, SyncBoundary},
	} {
		b.Run(tc.name, func(b *testing.B) {
			k := newKeys(b)
			opts := k.options(tc.encrypt)
			opts.Sync = tc.sync
			w, err := NewWriter(b.TempDir(), testMeta("bench"), opts)
			if err != nil {
				b.Fatal(err)
			}
			start := fileSize(b, w.Path())
			rec := Record{Kind: KindQueryResponse, QueryID: "q", Result: &Result{Format: "json", Rows: rows}}
			b.SetBytes(size)
			n := 0
			for b.Loop() {
				if err := w.Append(context.Background(), rec); err != nil {
					b.Fatal(err)
				}
				n++
			}
			if err := w.Flush(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(fileSize(b, w.Path())-start)/float64(size*int64(n)), "stored/result")
			w.Seal(SealSessionEnd)
		})
	}
}

// BenchmarkSegmentOverhead: the fixed cost of a segment (frame header,
// hash, zstd frame, and with age one X25519 stanza and the STREAM header)
// for a small record, flushed alone or 16 to a segment.
func BenchmarkSegmentOverhead(b *testing.B) {
	small := Record{Kind: KindQueryResponse, Status: 200, QueryID: "01b0-0000-0000-0001", Duration: 12000000,
		Statement: &Statement{Class: "read", Decision: "allow"}}
	for _, encrypt := range []bool{false, true} {
		for _, group := range []int{1, 16} {
			b.Run(fmt.Sprintf("age=%v/records-per-segment=%d", encrypt, group), func(b *testing.B) {
				k := newKeys(b)
				opts := k.options(encrypt)
				opts.Sync = SyncNever
				w, err := NewWriter(b.TempDir(), testMeta("bench"), opts)
				if err != nil {
					b.Fatal(err)
				}
				start := fileSize(b, w.Path())
				plain, _ := json.Marshal(small)
				n := 0
				for b.Loop() {
					rec := small
					if (n+1)%group != 0 {
						rec.Kind = KindPolicy // not a boundary: buffered
					}
					if err := w.Append(context.Background(), rec); err != nil {
						b.Fatal(err)
					}
					n++
				}
				w.Flush()
				b.ReportMetric(float64(fileSize(b, w.Path())-start)/float64(n), "bytes/record")
				b.ReportMetric(float64(len(plain)+4), "plain-bytes/record")
				w.Seal(SealSessionEnd)
			})
		}
	}
}

func fileSize(tb testing.TB, path string) int64 {
	tb.Helper()
	st, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return st.Size()
}
