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

// TestRecorderChunkAttribution: a chunk fetch carries no session token; the
// gateway reads the session from the sealed URL and resolves its principal,
// so the recorder needs no memory of the queries and chunks it issued
// (issue #9: a long-lived session must not hold an entry per statement,
// and a successor gateway must file chunks in the session's recording).
// The chunk lands in its session's recording — the open one, or after a
// restart a continuation that names the session — with its place in the
// result; a chunk whose session is gone (or observe-only) goes to the
// workload's recording, still with its place.
func TestRecorderChunkAttribution(t *testing.T) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	wl := Workload{CgroupID: 9, PID: 99}
	p := &Principal{SessionID: "s1", Subject: "sub", Rule: "r"}
	tests := []struct {
		name      string
		restart   bool // a new recorder (a successor gateway) records the chunk
		principal *Principal
		place     *ChunkPlace
		inSession bool
		note      string
	}{
		{"open session", false, p, &ChunkPlace{Index: 1, Count: 3}, true, "chunk 2 of 3"},
		{"after a restart", true, p, &ChunkPlace{Index: 2, Count: 3}, true, "chunk 3 of 3"},
		{"session gone", false, nil, &ChunkPlace{Index: 0, Count: 3}, false, "chunk 1 of 3"},
		{"url without count", false, p, &ChunkPlace{Index: 1}, true, "chunk c1x"},
		{"url without place", false, nil, nil, false, "chunk c1x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := SessionRecorderConfig{
				Dir:    dir,
				Writer: recording.Options{SigningKey: key, Sync: recording.SyncNever},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			}
			r, err := NewSessionRecorder(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			q := &Exchange{Start: time.Now(), Kind: snowflake.KindQueryRequest.String(), Method: "POST",
				Path: "/queries/v1/query-request", Status: 200, Principal: p, Workload: wl,
				RequestBody: []byte(`{"sqlText":"SELECT 1"}`), ResponseBody: []byte(`{"success":true,"data":{"queryId":"q1","rowtype":[{"name":"N"}],"rowset":[["1"]],"total":7}}`)}
			if err := r.Commit(ctx, q); err != nil {
				t.Fatal(err)
			}
			r.Observe(q)
			if tc.restart {
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				if r, err = NewSessionRecorder(cfg); err != nil {
					t.Fatal(err)
				}
			}
			defer r.Close()
			x := &Exchange{Start: time.Now(), Kind: snowflake.KindChunk.String(), Method: "GET",
				Path: snowflake.ChunkPathPrefix + "c1x", Status: 200, Workload: wl, Principal: tc.principal,
				ChunkID: "c1x", Chunk: tc.place, QueryID: "q1", ResponseBody: []byte(`["2"],["3"]`)}
			got, err := r.session(x)
			if err != nil {
				t.Fatal(err)
			}
			want := "s-s1"
			if !tc.inSession {
				want = fmt.Sprintf("w-%d-%d", wl.CgroupID, wl.PID)
			}
			if got.key != want {
				t.Fatalf("chunk filed under %s, want %s", got.key, want)
			}
			if err := r.Commit(ctx, x); err != nil {
				t.Fatal(err)
			}
			r.Observe(x)
			path := got.w.Path()
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			rd, err := recording.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			meta := rd.Meta()
			rd.Close()
			// A continuation is named <session>.<n>; its meta carries the
			// principal the chunk's session resolved to.
			if tc.inSession && (meta.SessionID != "s1" && !strings.HasPrefix(meta.SessionID, "s1.") || meta.Identity.Subject != "sub" || meta.Rule != "r") {
				t.Fatalf("%s: recording of session %q (subject %q, rule %q), want s1's", path, meta.SessionID, meta.Identity.Subject, meta.Rule)
			}
			var chunk *recording.Record
			for _, rec := range readRecords(t, path) {
				if rec.Kind == recording.KindChunk {
					chunk = &rec
				}
			}
			switch {
			case chunk == nil || chunk.QueryID != "q1" || chunk.Result == nil || len(chunk.Result.Rows) != 2:
				t.Fatalf("%s: chunk record %+v", path, chunk)
			case chunk.Note != tc.note:
				t.Fatalf("chunk note %q, want %q", chunk.Note, tc.note)
			case tc.place == nil && chunk.ChunkIndex != nil:
				t.Fatalf("chunk index %d without a place", *chunk.ChunkIndex)
			case tc.place != nil && (chunk.ChunkIndex == nil || *chunk.ChunkIndex != tc.place.Index):
				t.Fatalf("chunk index %v, want %d", chunk.ChunkIndex, tc.place.Index)
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

// principalsByID is a SessionPrincipals over a fixed set of sessions.
type principalsByID struct {
	ObserveOnly
	byID map[string]*Principal
}

func (p principalsByID) SessionPrincipal(id string) *Principal { return p.byID[id] }

// TestSessionPrincipalOfChunk: a chunk fetch gets the principal of the
// session its URL names only when the credential hook keeps sessions, the
// session is open and it is bound to the fetching workload's cgroup.
func TestSessionPrincipalOfChunk(t *testing.T) {
	p := &Principal{SessionID: "s1", CgroupID: 7}
	keeps := principalsByID{byID: map[string]*Principal{"s1": p}}
	tests := []struct {
		name   string
		creds  Credentials
		id     string
		cgroup uint64
		want   *Principal
	}{
		{"open session of the workload", keeps, "s1", 7, p},
		{"another workload's session", keeps, "s1", 8, nil},
		{"session gone", keeps, "s2", 7, nil},
		{"no session named", keeps, "", 7, nil},
		{"hook without sessions", ObserveOnly{}, "s1", 7, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := &Gateway{creds: tc.creds}
			if got := g.sessionPrincipal(tc.id, tc.cgroup); got != tc.want {
				t.Fatalf("principal %+v, want %+v", got, tc.want)
			}
		})
	}
}
