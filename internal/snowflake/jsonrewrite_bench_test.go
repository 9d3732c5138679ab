package snowflake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// bigQueryReply is a query reply with an inline rowset of n rows and three
// chunks, the shape the gateway rewrites on every large result.
func bigQueryReply(n int) []byte {
	var rows strings.Builder
	for i := range n {
		if i > 0 {
			rows.WriteByte(',')
		}
		fmt.Fprintf(&rows, `["%d","row-%d","2024-01-01 00:00:00.000",null]`, i, i)
	}
	return []byte(`{"data":{"rowtype":[{"name":"ID","type":"fixed"},{"name":"S","type":"text"},{"name":"T","type":"timestamp_ntz"},{"name":"N","type":"text"}],` +
		`"rowset":[` + rows.String() + `],"total":` + fmt.Sprint(n+3000) + `,"returned":` + fmt.Sprint(n) + `,"queryResultFormat":"json",` +
		`"chunks":[{"url":"https://b.s3.amazonaws.com/r/0?sig=a","rowCount":1000},{"url":"https://b.s3.amazonaws.com/r/1?sig=b","rowCount":1000},` +
		`{"url":"https://b.s3.amazonaws.com/r/2?sig=c","rowCount":1000}],"qrmk":"a2V5","queryId":"01ba13b4-0104-e9fd-0000-0111029ca00e",` +
		`"statementTypeId":4096},"success":true,"code":null,"message":null}`)
}

// BenchmarkRewriteChunkURLs rewrites the chunk URLs of a reply with 10 000
// inline rows through the lazy Object; BenchmarkRewriteChunkURLsBaseline does
// the same with a full encoding/json decode and encode (UseNumber), the
// straightforward way that also keeps numbers exact. Report the ratio.
func BenchmarkRewriteChunkURLs(b *testing.B) {
	body := bigQueryReply(10000)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		q, err := ParseQueryResponse(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := q.RewriteChunkURLs(func(int, string) (string, error) { return ChunkURL("a.snowflakecomputing.com", "x"), nil }); err != nil {
			b.Fatal(err)
		}
		_ = q.Body.Bytes()
	}
}

func BenchmarkRewriteChunkURLsBaseline(b *testing.B) {
	body := bigQueryReply(10000)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v map[string]any
		if err := dec.Decode(&v); err != nil {
			b.Fatal(err)
		}
		for _, c := range v["data"].(map[string]any)["chunks"].([]any) {
			c.(map[string]any)["url"] = ChunkURL("a.snowflakecomputing.com", "x")
		}
		if _, err := json.Marshal(v); err != nil {
			b.Fatal(err)
		}
	}
}
