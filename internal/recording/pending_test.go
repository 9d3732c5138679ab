package recording

import (
	"context"
	"fmt"
	"testing"
)

// TestIdleWritersHoldNoBuffer: once a query's records are on disk, an open
// recording holds no segment buffer, whatever it recorded before, so the
// gateway's memory follows the records being written, not the sessions
// open (issue #9: 1,000 sessions).
func TestIdleWritersHoldNoBuffer(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	tests := []struct {
		name string
		rows int // rows in each query's reply
	}{
		{"small results", 3},
		{"a result past the pooled size", 20000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ws []*Writer
			for i := range 20 {
				w, err := NewWriter(dir, testMeta(fmt.Sprintf("idle-%d-%d", tc.rows, i)), k.options(false))
				if err != nil {
					t.Fatal(err)
				}
				for q := range 3 {
					for _, rec := range queryPair(q, tc.rows) {
						if err := w.Append(context.Background(), rec); err != nil {
							t.Fatal(err)
						}
					}
				}
				ws = append(ws, w)
			}
			for i, w := range ws {
				if w.pending != nil {
					t.Errorf("writer %d holds a %d-byte segment buffer (%d in use) after its query boundary", i, cap(w.pending), len(w.pending))
				}
				if err := w.Seal(SealSessionEnd); err != nil {
					t.Fatal(err)
				}
				if _, recs, err := readAll(t, w.Path()); err != nil || len(recs) < 6 {
					t.Fatalf("writer %d: read back %d records: %v", i, len(recs), err)
				}
			}
		})
	}
}
