package gateway_test

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
)

// issuedChunkURLs are the gateway chunk URLs of the query replies the sink
// saw (as the agent received them), in order.
func issuedChunkURLs(t testing.TB, s *memorySink) []*url.URL {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*url.URL
	for _, x := range s.xs {
		if (x.Kind != snowflake.KindQueryRequest.String() && x.Kind != snowflake.KindQueryResult.String()) || x.Status != 200 {
			continue
		}
		q, err := snowflake.ParseQueryResponse(x.ResponseBody)
		if err != nil || q.Data == nil {
			continue
		}
		var chunks []struct {
			URL string `json:"url"`
		}
		if ok, err := q.Data.Decode("chunks", &chunks); !ok || err != nil {
			continue
		}
		for _, c := range chunks {
			u, err := url.Parse(c.URL)
			if err != nil {
				t.Fatalf("chunk url in a reply: %v", err)
			}
			out = append(out, u)
		}
	}
	return out
}

// TestChunkURLs reads a multi-chunk result with gosnowflake, then fetches
// the chunk URLs the gateway issued by hand: as issued they are served;
// altered, swapped, stripped of their sealed part or sent on another host
// they are refused as unknown chunks (404), and neither the refusal nor the
// exchange log names the sealed part.
func TestChunkURLs(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	a := f.startAgent(t)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
		t.Fatalf("login through the gateway: %s", r.Err)
	}
	const rows = 120_000
	sql := fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", rows)
	if r := a.do(t, clientCmd{Op: "seq", SQL: sql, Rows: rows}); r.Err != "" {
		t.Fatalf("select: %s", r.Err)
	}
	urls := issuedChunkURLs(t, f.sink)
	if len(urls) < 2 {
		t.Fatalf("%d chunk urls issued, want several", len(urls))
	}
	first, second := urls[0], urls[1]
	sealed := first.Query().Get(snowflake.ChunkTokenParam)
	if first.Host != testHost || sealed == "" {
		t.Fatalf("issued chunk url %s…", first.String()[:60])
	}
	t.Logf("a chunk url is %d bytes", len(first.String()))
	alter := func(s string, i int) string {
		c := byte('A')
		if s[i] == 'A' {
			c = 'B'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	withSealed := func(u *url.URL, s string) string {
		return u.EscapedPath() + "?" + snowflake.ChunkTokenParam + "=" + s
	}
	snow := testenv.SnowflakeAddr.String() + ":443"
	tests := []struct {
		name, sni, path string
		want            int
	}{
		{"as issued", testHost, first.RequestURI(), 200},
		{"the second, as issued", testHost, second.RequestURI(), 200},
		{"sealed part altered at the start", testHost, withSealed(first, alter(sealed, 0)), 404},
		{"sealed part altered in the middle", testHost, withSealed(first, alter(sealed, len(sealed)/2)), 404},
		{"sealed part altered at the end", testHost, withSealed(first, alter(sealed, len(sealed)-2)), 404},
		{"sealed part truncated", testHost, withSealed(first, sealed[:len(sealed)-10]), 404},
		{"sealed part of another chunk", testHost, withSealed(first, second.Query().Get(snowflake.ChunkTokenParam)), 404},
		{"no sealed part", testHost, first.EscapedPath(), 404},
		{"id altered", testHost, snowflake.ChunkPathPrefix + alter(strings.TrimPrefix(first.EscapedPath(), snowflake.ChunkPathPrefix), 10) + "?" + first.RawQuery, 404},
		{"another host of the same workload", "other.snowflakecomputing.com", first.RequestURI(), 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.do(t, clientCmd{Op: "https", Addr: snow, SNI: tt.sni, Method: "GET", Path: tt.path})
			if r.Err != "" || r.Status != tt.want {
				t.Fatalf("status %d, error %q; want %d", r.Status, r.Err, tt.want)
			}
			if tt.want == 404 && !strings.Contains(r.Body, "unknown chunk") {
				t.Errorf("body %q", r.Body)
			}
		})
	}
	refused := 0
	f.sink.mu.Lock()
	for _, x := range f.sink.xs {
		if x.Kind == snowflake.KindChunk.String() && x.Status == 404 {
			refused++
			if x.Error != "chunk id not issued to this workload" {
				t.Errorf("refusal recorded as %q", x.Error)
			}
		}
	}
	f.sink.mu.Unlock()
	if refused != 8 {
		t.Errorf("%d refused chunk fetches recorded, want 8", refused)
	}
	f.sink.file.Flush()
	b, err := os.ReadFile(f.sink.path)
	if err != nil {
		t.Fatal(err)
	}
	// The log names chunks by their path id only: the sealed part is
	// redacted from the chunk URLs of the replies, and a fetch's path has
	// no query.
	for _, secret := range []string{sealed[:32], sealed[len(sealed)-32:]} {
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("the exchange log contains a sealed chunk reference")
		}
	}
	if !bytes.Contains(b, []byte(strings.TrimPrefix(first.EscapedPath(), snowflake.ChunkPathPrefix))) {
		t.Error("the exchange log does not name the chunk by its id")
	}
}
