package gateway

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// TestRecorderIssuedBounded: the query and chunk ids a session's replies
// issued are remembered for its maxIssued most recent queries only (issue
// #9: a long-lived session must not hold an entry per statement). A recent
// query's chunk is still attributed to its session, with its place in the
// result; an evicted query's chunk falls back to the per-workload
// recording, as after a restart.
func TestRecorderIssuedBounded(t *testing.T) {
	const chunksPerQuery = 2
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	qid := func(i int) string { return fmt.Sprintf("q-%d", i) }
	cid := func(i, c int) string { return fmt.Sprintf("c-%d-%d", i, c) }
	reply := func(i int) string {
		var urls []string
		for c := range chunksPerQuery {
			urls = append(urls, fmt.Sprintf(`{"url":"https://acme.snowflakecomputing.com%s%s?t=x","rowCount":1}`, snowflake.ChunkPathPrefix, cid(i, c)))
		}
		return fmt.Sprintf(`{"success":true,"data":{"queryId":%q,"rowtype":[{"name":"N"}],"rowset":[["1"]],"total":3,"chunks":[%s]}}`, qid(i), strings.Join(urls, ","))
	}
	tests := []struct {
		name      string
		queries   int
		chunkOf   int  // the query whose chunk is fetched at the end
		inSession bool // attributed to the session (else to the workload)
		tracked   int  // queries remembered at the end
	}{
		{"under the bound", 10, 9, true, 10},
		{"at the bound, oldest", maxIssued, 0, true, maxIssued},
		{"past the bound, recent", 2*maxIssued + 5, 2*maxIssued + 4, true, maxIssued},
		{"past the bound, oldest kept", maxIssued + 5, 5, true, maxIssued},
		{"past the bound, evicted", maxIssued + 5, 4, false, maxIssued},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewSessionRecorder(SessionRecorderConfig{
				Dir:    t.TempDir(),
				Writer: recording.Options{SigningKey: key, Sync: recording.SyncNever},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			ctx := context.Background()
			wl := Workload{CgroupID: 9, PID: 99}
			p := &Principal{SessionID: "s1", Subject: "sub", Rule: "r"}
			for i := range tc.queries {
				x := &Exchange{Start: time.Now(), Kind: snowflake.KindQueryRequest.String(), Method: "POST",
					Path: "/queries/v1/query-request", Status: 200, Principal: p, Workload: wl,
					RequestBody: []byte(`{"sqlText":"SELECT 1"}`), ResponseBody: []byte(reply(i))}
				if err := r.Commit(ctx, x); err != nil {
					t.Fatal(err)
				}
				r.Observe(x)
				r.mu.Lock()
				nq, nc := len(r.queries), len(r.chunks)
				r.mu.Unlock()
				if nq > maxIssued || nc > maxIssued*chunksPerQuery {
					t.Fatalf("after %d queries: %d queries and %d chunks remembered, bound %d and %d", i+1, nq, nc, maxIssued, maxIssued*chunksPerQuery)
				}
			}
			r.mu.Lock()
			s := r.sessions["s-s1"]
			nq, nc, ni := len(r.queries), len(r.chunks), len(s.issued)
			r.mu.Unlock()
			if nq != tc.tracked || nc != tc.tracked*chunksPerQuery || ni != tc.tracked {
				t.Fatalf("%d queries, %d chunks, %d issued remembered; want %d, %d, %d", nq, nc, ni, tc.tracked, tc.tracked*chunksPerQuery, tc.tracked)
			}
			// The driver fetches the second chunk: no token, so no Principal.
			x := &Exchange{Start: time.Now(), Kind: snowflake.KindChunk.String(), Method: "GET",
				Path: snowflake.ChunkPathPrefix + cid(tc.chunkOf, 1), Status: 200, Workload: wl,
				ChunkID: cid(tc.chunkOf, 1), QueryID: qid(tc.chunkOf), ResponseBody: []byte(`["2"],["3"]`)}
			got, err := r.session(x)
			if err != nil {
				t.Fatal(err)
			}
			if (got == s) != tc.inSession {
				t.Fatalf("chunk of %s attributed to %s, want the session: %v", qid(tc.chunkOf), got.key, tc.inSession)
			}
			if !tc.inSession && got.key != fmt.Sprintf("w-%d-%d", wl.CgroupID, wl.PID) {
				t.Fatalf("evicted query's chunk went to %s, want the workload's recording", got.key)
			}
			r.mu.Lock()
			place, ok := r.chunks[x.ChunkID]
			r.mu.Unlock()
			if ok != tc.inSession || (ok && (place.s != s || place.index != 1 || place.of != chunksPerQuery)) {
				t.Fatalf("chunk place %+v (known %v), want index 1 of %d in the session: %v", place, ok, chunksPerQuery, tc.inSession)
			}
			if err := r.Commit(ctx, x); err != nil {
				t.Fatal(err)
			}
			r.Observe(x)
			path := got.w.Path()
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			// The chunk is in the recording it was attributed to, with its
			// index when its query was still remembered.
			var chunk *recording.Record
			for _, rec := range readRecords(t, path) {
				if rec.Kind == recording.KindChunk {
					chunk = &rec
				}
			}
			switch {
			case chunk == nil || chunk.QueryID != qid(tc.chunkOf) || chunk.Result == nil || len(chunk.Result.Rows) != 2:
				t.Fatalf("%s: chunk record %+v", path, chunk)
			case tc.inSession && (chunk.ChunkIndex == nil || *chunk.ChunkIndex != 1):
				t.Fatalf("chunk index %v, want 1", chunk.ChunkIndex)
			case !tc.inSession && chunk.ChunkIndex != nil:
				t.Fatalf("chunk index %d for an evicted query", *chunk.ChunkIndex)
			}
			r.mu.Lock()
			left := len(r.queries) + len(r.chunks)
			r.mu.Unlock()
			if left != 0 {
				t.Errorf("%d ids remembered after every session ended", left)
			}
		})
	}
}

// readRecords reads every record of the (unencrypted) recording at path.
func readRecords(t *testing.T, path string) []recording.Record {
	t.Helper()
	rd, err := recording.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out []recording.Record
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, rec)
	}
}
