package snowflake

import (
	"bytes"
	"strings"
	"testing"
)

// BenchmarkReadBodyGzip reads a small gzip request body, the shape of a
// driver's query request (a few hundred bytes of JSON).
func BenchmarkReadBodyGzip(b *testing.B) {
	plain := []byte(`{"sqlText":"SELECT 1","asyncExec":false,"sequenceId":42,"querySubmissionTime":1764230400000,"isInternal":false,"parameters":{"CLIENT_RESULT_CHUNK_SIZE":160,"TIMEZONE":"UTC"},"describeOnly":false}`)
	wire := gz(b, plain)
	b.ReportAllocs()
	for b.Loop() {
		got, err := ReadBody(bytes.NewReader(wire), "gzip", Limits{})
		if err != nil || len(got.Plain) != len(plain) {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadBodyGzipReply reads a gzip reply of about 2 KiB of JSON, the
// shape of a small query's answer.
func BenchmarkReadBodyGzipReply(b *testing.B) {
	plain := []byte(`{"data":{"parameters":[` + strings.Repeat(`{"name":"TIMESTAMP_OUTPUT_FORMAT","value":"YYYY-MM-DD HH24:MI:SS.FF3 TZHTZM"},`, 20) + `{"name":"X","value":1}],"rowtype":[{"name":"1","type":"fixed"}],"rowset":[["1"]],"total":1,"returned":1,"queryId":"01b2c3d4-0000-0000-0000-000000000001"},"code":null,"message":null,"success":true}`)
	wire := gz(b, plain)
	b.ReportAllocs()
	for b.Loop() {
		got, err := ReadBody(bytes.NewReader(wire), "gzip", Limits{MaxBody: 256 << 20, MaxDecoded: 512 << 20})
		if err != nil || len(got.Plain) != len(plain) {
			b.Fatal(err)
		}
	}
}
