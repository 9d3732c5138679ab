package gateway_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/gateway"
)

// TestJSONLinesSinkRedactsEveryLine writes exchanges whose header values
// repeat (the sink caches their redaction) and many that do not (the cache
// is emptied when full): every line is redacted the same way, whether its
// values were redacted afresh or taken from the cache.
func TestJSONLinesSinkRedactsEveryLine(t *testing.T) {
	tests := []struct {
		name    string
		lines   int
		header  func(i int) http.Header
		secrets []string
		keep    func(i int) []string
	}{
		{
			name:  "the same values every time",
			lines: 5,
			header: func(int) http.Header {
				return http.Header{
					"User-Agent":    {"Go/1.19.1"},
					"Referer":       {"https://bucket.example/c?X-Amz-Signature=SIGSECRET&part=1"},
					"Authorization": {`Snowflake Token="TOKSECRET"`},
				}
			},
			secrets: []string{"SIGSECRET", "TOKSECRET"},
			keep:    func(int) []string { return []string{"Go/1.19.1", "part=1"} },
		},
		{
			name:  "more distinct values than the cache holds",
			lines: 1500,
			header: func(i int) http.Header {
				return http.Header{
					"X-Request": {"n" + strconv.Itoa(i) + " Bearer BEARERSECRET" + strconv.Itoa(i%7)},
					"Accept":    {"application/json"},
				}
			},
			secrets: []string{"BEARERSECRET"},
			keep:    func(i int) []string { return []string{"n" + strconv.Itoa(i) + " ", "application/json"} },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.jsonl")
			s, err := gateway.NewJSONLinesSink(path)
			if err != nil {
				t.Fatal(err)
			}
			for i := range tc.lines {
				s.Observe(&gateway.Exchange{Kind: "query-request", RequestHeader: tc.header(i), ResponseHeader: tc.header(i)})
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sc := bufio.NewScanner(f)
			n := 0
			for ; sc.Scan(); n++ {
				line := sc.Text()
				if !json.Valid([]byte(line)) {
					t.Fatalf("line %d is not JSON: %s", n, line)
				}
				for _, sec := range tc.secrets {
					if strings.Contains(line, sec) {
						t.Fatalf("line %d contains %q: %s", n, sec, line)
					}
				}
				for _, k := range tc.keep(n) {
					if strings.Count(line, k) != 2 {
						t.Fatalf("line %d: %q not in both headers: %s", n, k, line)
					}
				}
			}
			if n != tc.lines {
				t.Errorf("%d lines, want %d", n, tc.lines)
			}
		})
	}
}
