package snowflake

import (
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const chunkReply = `{"data":{"rowtype":[{"name":"C"}],"rowset":[],"total":2000,"returned":0,` +
	`"chunks":[{"url":"https://b.s3.amazonaws.com/r/data_0?sig=a","rowCount":1000},{"url":"https://b.s3.amazonaws.com/r/data_1?sig=b","rowCount":1000}],` +
	`"chunkHeaders":{"x-amz-server-side-encryption-customer-key":"k"},"queryId":"01bf"},"success":true,"code":null,"message":null}`

func TestChunkTable(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tab := NewChunkTable(3, time.Hour, func() time.Time { return now })
	q, err := ParseQueryResponse([]byte(chunkReply))
	if err != nil {
		t.Fatal(err)
	}
	n, err := tab.RewriteReply(q, "acme.snowflakecomputing.com", "session-a")
	if err != nil || n != 2 {
		t.Fatalf("rewrote %d: %v", n, err)
	}
	again, _ := ParseQueryResponse(q.Body.Bytes())
	chunks, _ := again.Data.Array("chunks")
	var ids []string
	for i := 0; i < chunks.Len(); i++ {
		c, _ := chunks.Object(i)
		s, _, _ := c.String("url")
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		ep := Route("GET", u)
		if ep.Kind != KindChunk || u.Host != "acme.snowflakecomputing.com" {
			t.Fatalf("chunk url %s routes to %v", s, ep)
		}
		ids = append(ids, ep.ChunkID)
	}
	tests := []struct {
		name, id, owner string
		advance         time.Duration
		ok              bool
		url             string
	}{
		{"first chunk", ids[0], "session-a", 0, true, "https://b.s3.amazonaws.com/r/data_0?sig=a"},
		{"second chunk", ids[1], "session-a", 0, true, "https://b.s3.amazonaws.com/r/data_1?sig=b"},
		{"another session", ids[0], "session-b", 0, false, ""},
		{"unknown id", NewChunkID(), "session-a", 0, false, ""},
		{"expired", ids[0], "session-a", time.Hour, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = now.Add(tt.advance)
			ref, ok := tab.Lookup(tt.id, tt.owner)
			if ok != tt.ok || ref.URL != tt.url {
				t.Fatalf("Lookup = %+v %v", ref, ok)
			}
			if ok && (ref.Headers["x-amz-server-side-encryption-customer-key"] != "k" || ref.QueryID != "01bf") {
				t.Fatalf("ref %+v", ref)
			}
		})
	}
	// Rewriting the rewritten reply changes nothing.
	if n, err := tab.RewriteReply(again, "acme.snowflakecomputing.com", "session-a"); err != nil || n != 2 || !strings.Contains(string(again.Body.Bytes()), ids[0]) {
		t.Fatalf("second rewrite: %d %v", n, err)
	}
	// The table stays within its bound, dropping expired and oldest entries.
	for range 5 {
		q, _ := ParseQueryResponse([]byte(chunkReply))
		if _, err := tab.RewriteReply(q, "h", "o"); err != nil {
			t.Fatal(err)
		}
	}
	if tab.Len() > 3 {
		t.Fatalf("table holds %d, limit 3", tab.Len())
	}
}

func TestChunkTableConcurrent(t *testing.T) {
	tab := NewChunkTable(0, 0, nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				q, err := ParseQueryResponse([]byte(chunkReply))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := tab.RewriteReply(q, "h", "o"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if tab.Len() != 8*50*2 {
		t.Fatalf("table holds %d chunks, want %d", tab.Len(), 8*50*2)
	}
}
