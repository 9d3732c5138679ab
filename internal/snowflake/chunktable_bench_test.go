package snowflake

import (
	"testing"
)

// BenchmarkChunkRewriteReply seals the two chunk URLs of a reply (parse,
// seal, rewrite): the cost the gateway adds to a query reply with chunks.
func BenchmarkChunkRewriteReply(b *testing.B) {
	tab := NewChunkTable(0, nil)
	b.ReportAllocs()
	for b.Loop() {
		q, err := ParseQueryResponse([]byte(chunkReply))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tab.RewriteReply(q, "acme.snowflakecomputing.com", "acme.snowflakecomputing.com/1234", "s1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChunkRewriteReplyBaseline is the same rewrite with random ids
// and no sealing (the former in-memory table, without its map): the
// baseline of BenchmarkChunkRewriteReply.
func BenchmarkChunkRewriteReplyBaseline(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		q, err := ParseQueryResponse([]byte(chunkReply))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := q.RewriteChunkURLs(func(int, string) (string, error) {
			return ChunkURL("acme.snowflakecomputing.com", NewChunkID()), nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChunkOpen opens one gateway chunk URL: the cost the gateway adds
// to a chunk fetch.
func BenchmarkChunkOpen(b *testing.B) {
	tab := NewChunkTable(0, nil)
	q, err := ParseQueryResponse([]byte(chunkReply))
	if err != nil {
		b.Fatal(err)
	}
	var id, sealed string
	if _, err := tab.RewriteReply(q, "h", "o", ""); err != nil {
		b.Fatal(err)
	}
	again, _ := ParseQueryResponse(q.Body.Bytes())
	_, _ = again.RewriteChunkURLs(func(_ int, u string) (string, error) {
		id, sealed = splitChunkURL(u)
		return u, nil
	})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tab.Open(id, sealed, "o"); err != nil {
			b.Fatal(err)
		}
	}
}
