package emulator

import (
	"bytes"
	"compress/gzip"
	"errors"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator/resultset"
	"github.com/snowgate/snowgate/internal/emulator/sqlengine"
)

func gzipped(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return b.Bytes()
}

func TestDecodeRequest(t *testing.T) {
	cases := []struct {
		name    string
		body    []byte
		limit   int64
		wantSQL string
		wantErr bool
	}{
		{"plain", []byte(`{"sqlText":"SELECT 1"}`), 1024, "SELECT 1", false},
		{"gzip by magic", gzipped(`{"sqlText":"SELECT 2"}`), 1024, "SELECT 2", false},
		{"leading space", []byte(" \n{\"sqlText\":\"x\"}"), 1024, "x", false},
		{"empty", nil, 1024, "", true},
		{"array", []byte(`[]`), 1024, "", true},
		{"truncated", []byte(`{"sqlText":`), 1024, "", true},
		{"trailing", []byte(`{"sqlText":"a"}{}`), 1024, "", true},
		{"too large", []byte(`{"sqlText":"` + strings.Repeat("a", 100) + `"}`), 50, "", true},
		{"inflates too large", gzipped(`{"sqlText":"` + strings.Repeat("a", 1000) + `"}`), 200, "", true},
		{"broken gzip", []byte{0x1f, 0x8b, 0, 1, 2}, 1024, "", true},
		{"wrong type", []byte(`{"sqlText":5}`), 1024, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var req queryRequest
			err := DecodeRequest(bytes.NewReader(tc.body), tc.limit, &req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && req.SQLText != tc.wantSQL {
				t.Fatalf("sqlText %q, want %q", req.SQLText, tc.wantSQL)
			}
		})
	}
	var req queryRequest
	if err := DecodeRequest(bytes.NewReader(make([]byte, 100)), 10, &req); !errors.Is(err, errBodyTooLarge) {
		t.Fatalf("oversized body: %v", err)
	}
}

func TestBindingConversion(t *testing.T) {
	cases := []struct {
		name   string
		body   string
		value  string
		null   bool
		values int
		err    bool
	}{
		{"string", `{"sqlText":"x","bindings":{"1":{"type":"TEXT","value":"hi"}}}`, "hi", false, 0, false},
		{"null", `{"sqlText":"x","bindings":{"1":{"type":"TEXT","value":null}}}`, "", true, 0, false},
		{"number", `{"sqlText":"x","bindings":{"1":{"type":"fixed","value":12345678901234567890}}}`, "12345678901234567890", false, 0, false},
		{"array", `{"sqlText":"x","bindings":{"1":{"type":"FIXED","value":["1",null,"3"]}}}`, "", true, 3, false},
		{"object", `{"sqlText":"x","bindings":{"1":{"type":"FIXED","value":{"a":1}}}}`, "", true, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var req queryRequest
			if err := DecodeRequest(strings.NewReader(tc.body), 1<<20, &req); err != nil {
				t.Fatal(err)
			}
			b, err := req.Bindings["1"].toBinding()
			if (err != nil) != tc.err {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				return
			}
			if (b.Value == nil) != tc.null || (b.Value != nil && *b.Value != tc.value) || len(b.Values) != tc.values {
				t.Fatalf("binding %+v", b)
			}
			if b.Type != strings.ToUpper(b.Type) {
				t.Fatalf("type %q not upper-cased", b.Type)
			}
		})
	}
}

// FuzzDecodeRequest feeds hostile bodies to the request decoder and the
// binding conversion: they must fail cleanly, never panic.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"sqlText":"SELECT 1","bindings":{"1":{"type":"TEXT","value":"x"}}}`,
		`{"data":{"LOGIN_NAME":"a","PASSWORD":"b","SESSION_PARAMETERS":{"A":1}}}`,
		`{"sqlText":"x","bindings":{"1":{"type":"FIXED","value":["1",null]}},"parameters":{"MULTI_STATEMENT_COUNT":2}}`,
		`{"oldSessionToken":"t","requestType":"RENEW"}`,
	} {
		f.Add([]byte(s))
		f.Add(gzipped(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var q queryRequest
		if DecodeRequest(bytes.NewReader(body), 1<<16, &q) == nil {
			for _, b := range q.Bindings {
				_, _ = b.toBinding()
			}
			for _, v := range q.Parameters {
				_ = paramString(v)
			}
		}
		var l loginRequest
		if DecodeRequest(bytes.NewReader(body), 1<<16, &l) == nil {
			for _, v := range l.Data.SessionParameters {
				_ = paramString(v)
			}
		}
		var r renewRequest
		_ = DecodeRequest(bytes.NewReader(body), 1<<16, &r)
	})
}

func TestParseFault(t *testing.T) {
	cases := []struct {
		spec string
		want Fault
		err  bool
	}{
		{"query,status=503,count=2", Fault{Endpoint: "query", Status: 503, Count: 2}, false},
		{"login,latency=1.5s", Fault{Endpoint: "login", Latency: 1500 * time.Millisecond}, false},
		{"chunk,reset,after", Fault{Endpoint: "chunk", Reset: true, After: true}, false},
		{"*,status=500", Fault{Endpoint: "*", Status: 500}, false},
		{"query", Fault{}, true},
		{",status=503", Fault{}, true},
		{"query,status=42", Fault{}, true},
		{"query,status=503,count=-1", Fault{}, true},
		{"query,bogus=1", Fault{}, true},
		{"query,latency=soon", Fault{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseFault(tc.spec)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestFaultCounts(t *testing.T) {
	f := &Faults{}
	f.FailWith(EndpointQuery, 503, 2)
	f.SetLatency(EndpointLogin, time.Second)
	for i, want := range []int{1, 1, 0} {
		before, _ := f.take(EndpointQuery)
		if len(before) != want {
			t.Fatalf("request %d: %d faults, want %d", i, len(before), want)
		}
	}
	if before, _ := f.take(EndpointLogin); len(before) != 1 || before[0].Latency != time.Second {
		t.Fatalf("latency fault: %+v", before)
	}
	f.SetLatency(EndpointLogin, 0)
	if before, _ := f.take(EndpointLogin); len(before) != 0 {
		t.Fatalf("latency not removed: %+v", before)
	}
	if f.Hits(EndpointQuery) != 3 || f.Hits(EndpointLogin) != 2 {
		t.Fatalf("hits %d/%d", f.Hits(EndpointQuery), f.Hits(EndpointLogin))
	}
}

// FuzzTransferPlan feeds PUT/GET statements to the transfer planner: it
// must never panic and never point a stage outside the stages directory.
func FuzzTransferPlan(f *testing.F) {
	for _, s := range []string{
		"PUT file:///tmp/a.csv @~/stage1",
		"PUT 'file:///tmp/a b.csv' @%tbl AUTO_COMPRESS=FALSE OVERWRITE=TRUE PARALLEL=2",
		"GET @~/stage1 file:///tmp/out PATTERN='.*csv.*'",
		"GET '@my.stage/../../etc' 'file:///tmp'",
		"/* c */ PUT file://x @~/../..",
	} {
		f.Add(s)
	}
	dir := f.TempDir()
	s := &Server{dir: dir}
	sess := &session{user: "fuzz/../user"}
	stages := filepath.Join(dir, "stages") + string(filepath.Separator)
	f.Fuzz(func(t *testing.T, sql string) {
		for _, kind := range []string{"PUT", "GET"} {
			plan, err := s.transferPlan(sess, kind, stripComments(sql))
			if err != nil {
				continue
			}
			info, _ := plan["stageInfo"].(map[string]any)
			loc, _ := info["location"].(string)
			if !strings.HasPrefix(filepath.Clean(loc)+string(filepath.Separator), stages) {
				t.Fatalf("%s %q: stage location %q escapes %s", kind, sql, loc, stages)
			}
		}
	})
}

func TestSplitBinds(t *testing.T) {
	v := func(s string) sqlengine.Binding { return sqlengine.Binding{Type: "TEXT", Value: &s} }
	binds := map[string]sqlengine.Binding{"1": v("a"), "2": v("b"), "3": v("c"), "name": v("n")}
	stmts := []string{
		"INSERT INTO t VALUES (?, '?')",
		"SELECT 1 /* ? */ -- ?\n",
		"SELECT ?, \"?\", $$?$$, ?",
	}
	got := splitBinds(stmts, binds)
	want := []string{"1=a,name=n", "name=n", "1=b,2=c,name=n"}
	for i, m := range got {
		var parts []string
		for _, k := range []string{"1", "2", "3", "name"} {
			if b, ok := m[k]; ok {
				parts = append(parts, k+"="+*b.Value)
			}
		}
		if strings.Join(parts, ",") != want[i] {
			t.Errorf("statement %d binds %v, want %s", i, parts, want[i])
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
	}{
		{"no account", Config{}},
		{"storage URL with a path", Config{Account: "a", StorageURL: "http://127.0.0.1:1/prefix"}},
		{"storage URL not http", Config{Account: "a", StorageURL: "ftp://127.0.0.1"}},
		{"storage on the account host", Config{Account: "a", StorageURL: "https://a.snowflakecomputing.com"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := New(tc.cfg); err == nil {
				_ = s.Close()
				t.Fatal("New accepted the config")
			}
		})
	}
}

func TestQueryStoreExpire(t *testing.T) {
	now := time.Now()
	mk := func(id string, age time.Duration, bytes int64) *query {
		q := &query{id: id, done: make(chan struct{}), end: now.Add(-age),
			page: &resultset.Page{Chunks: []resultset.Chunk{{CompressedSize: bytes}}}}
		close(q.done)
		return q
	}
	cases := []struct {
		name     string
		ttl      time.Duration
		maxBytes int64
		want     string // evicted ids, sorted
	}{
		{"nothing to evict", time.Hour, 1000, ""},
		{"by age", 90 * time.Second, 1000, "old"},
		{"by disk, oldest first", time.Hour, 250, "old"},
		{"by disk, two", time.Hour, 150, "old,mid"},
		{"age and disk", 90 * time.Second, 150, "mid,old"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := newQueryStore()
			for _, q := range []*query{mk("old", 2*time.Minute, 100), mk("mid", time.Minute, 100), mk("new", 0, 100)} {
				st.add(q)
			}
			running := &query{id: "running", done: make(chan struct{})}
			st.add(running)
			var ids []string
			for _, q := range st.expire(now.Add(-tc.ttl), tc.maxBytes) {
				ids = append(ids, q.id)
			}
			sort.Strings(ids)
			want := strings.Split(tc.want, ",")
			sort.Strings(want)
			if strings.Join(ids, ",") != strings.Trim(strings.Join(want, ","), ",") {
				t.Fatalf("evicted %v, want %s", ids, tc.want)
			}
			if st.get("running") == nil {
				t.Fatal("a running query was evicted")
			}
		})
	}
}
