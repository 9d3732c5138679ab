package recording

import (
	"context"
	"fmt"
	"testing"
)

// TestQueryRowsBounded: under the first-N-rows policy a Writer remembers
// the rows recorded for its maxQueryRows most recent queries only (issue
// #9: a long-lived session must not hold an entry per statement), while the
// row budget still applies across a recent query's reply and chunks.
func TestQueryRowsBounded(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	const budget = 5
	rows := func(n int) [][]*string {
		out := make([][]*string, n)
		for i := range out {
			out[i] = []*string{str(fmt.Sprint(i))}
		}
		return out
	}
	qid := func(i int) string { return fmt.Sprintf("q-%d", i) }
	tests := []struct {
		name    string
		queries int // queries answered, each with 3 rows in its reply
		chunkOf int // the query whose chunk (4 more rows) arrives last
		kept    int // rows of that chunk recorded
		tracked int // queries remembered at the end
	}{
		{"under the bound", 10, 9, budget - 3, 10},
		{"at the bound", maxQueryRows, maxQueryRows - 1, budget - 3, maxQueryRows},
		{"past the bound, recent query", 3*maxQueryRows + 7, 3*maxQueryRows + 6, budget - 3, maxQueryRows},
		{"past the bound, oldest kept query", maxQueryRows + 10, 10, budget - 3, maxQueryRows},
		// Evicted: its late chunk starts a fresh budget (more rows, never fewer).
		{"past the bound, evicted query", maxQueryRows + 10, 0, 4, maxQueryRows},
	}
	for n, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := k.options(false)
			opts.Sync = SyncNever
			opts.Results = ResultPolicy{Mode: ResultsFirstRows, Rows: budget}
			w, err := NewWriter(dir, testMeta(fmt.Sprintf("bound-%d", n)), opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for i := range tc.queries {
				rec := Record{Kind: KindQueryResponse, Status: 200, QueryID: qid(i), Result: &Result{Format: "json", Rows: rows(3)}}
				if err := w.Append(ctx, rec); err != nil {
					t.Fatal(err)
				}
				if len(w.queryRows) > maxQueryRows || len(w.queryOrder) > maxQueryRows {
					t.Fatalf("after %d queries: %d queries remembered (%d in order), bound %d", i+1, len(w.queryRows), len(w.queryOrder), maxQueryRows)
				}
			}
			chunk := Record{Kind: KindChunk, Status: 200, QueryID: qid(tc.chunkOf), Result: &Result{Format: "json", Rows: rows(4)}}
			if err := w.Append(ctx, chunk); err != nil {
				t.Fatal(err)
			}
			if len(w.queryRows) != tc.tracked || len(w.queryOrder) != tc.tracked {
				t.Errorf("%d queries remembered (%d in order), want %d", len(w.queryRows), len(w.queryOrder), tc.tracked)
			}
			if err := w.Seal(SealSessionEnd); err != nil {
				t.Fatal(err)
			}
			_, recs, err := readAll(t, w.Path())
			if err != nil {
				t.Fatal(err)
			}
			last := recs[len(recs)-1]
			if last.Kind != KindChunk || last.QueryID != qid(tc.chunkOf) || last.Result == nil {
				t.Fatalf("last record %+v, want the chunk of %s", last, qid(tc.chunkOf))
			}
			if len(last.Result.Rows) != tc.kept || last.Result.OmittedRows != int64(4-tc.kept) {
				t.Errorf("chunk of %s: kept %d rows, omitted %d; want %d kept", qid(tc.chunkOf), len(last.Result.Rows), last.Result.OmittedRows, tc.kept)
			}
		})
	}
}
