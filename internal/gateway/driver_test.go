package gateway_test

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
)

// seqRows is the size of the multi-chunk results the Node test reads;
// driverRows that of the gosnowflake test, which checks every value.
const (
	seqRows    = 120000
	driverRows = 500000
)

// TestGosnowflakeThroughGateway runs the unchanged gosnowflake driver in the
// agents' cgroup against <account>.snowflakecomputing.com:443: the redirect
// sends it to the gateway, which terminates TLS with a minted leaf, forwards
// to the emulator and routes the result chunks through itself.
func TestGosnowflakeThroughGateway(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	a := f.startAgent(t)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
		t.Fatalf("login through the gateway: %s", r.Err)
	}
	if f.sink.count(snowflake.KindLogin.String(), 200) == 0 {
		t.Fatal("the sink saw no login exchange")
	}
	// The driver's OCSP look-ups (cache server, then the leaf's AIA
	// responder) went to port 80 and were answered by the gateway.
	if f.gw.Stats.OCSP.Load() == 0 {
		t.Error("no OCSP request reached the gateway")
	}

	chunkHitsBefore := f.inst.Server.Faults().Hits(emulator.EndpointChunk)
	for _, format := range []string{"ARROW", "JSON"} {
		t.Run("select "+format, func(t *testing.T) {
			if r := a.do(t, clientCmd{Op: "exec", SQL: "ALTER SESSION SET GO_QUERY_RESULT_FORMAT = '" + format + "'"}); r.Err != "" {
				t.Fatalf("alter session: %s", r.Err)
			}
			before := f.sink.count(snowflake.KindChunk.String(), 200)
			sql := fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", driverRows)
			r := a.do(t, clientCmd{Op: "seq", SQL: sql, Rows: driverRows})
			if r.Err != "" {
				t.Fatalf("select: %s", r.Err)
			}
			if got := f.sink.count(snowflake.KindChunk.String(), 200) - before; got < 2 {
				t.Fatalf("%d chunk fetches through the gateway, want several", got)
			}
		})
	}
	// Every chunk the emulator's storage served went to the gateway: the
	// agent cannot reach storage at all from its namespace.
	storageHits := f.inst.Server.Faults().Hits(emulator.EndpointChunk) - chunkHitsBefore
	if gw := f.sink.relayedChunks(); storageHits != gw {
		t.Errorf("storage served %d chunk fetches, the gateway relayed %d", storageHits, gw)
	}

	steps := []struct {
		name string
		cmd  clientCmd
		want clientReply
	}{
		{"create", clientCmd{Op: "exec", SQL: "CREATE TABLE t (id INT, name STRING)"}, clientReply{}},
		{"insert", clientCmd{Op: "exec", SQL: "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')"}, clientReply{Affected: 3}},
		{"insert with binds", clientCmd{Op: "exec", SQL: "INSERT INTO t VALUES (?, ?)", Args: []any{4, "d"}}, clientReply{Affected: 1}},
		{"update", clientCmd{Op: "exec", SQL: "UPDATE t SET name = 'z' WHERE id > 2"}, clientReply{Affected: 2}},
		{"select with binds", clientCmd{Op: "query", SQL: "SELECT id, name FROM t WHERE id >= ? ORDER BY id", Args: []any{3}},
			clientReply{Rows: [][]string{{"3", "z"}, {"4", "z"}}}},
		{"syntax error", clientCmd{Op: "query", SQL: "SELEC nonsense"}, clientReply{Code: 1003}},
		{"multi-statement", clientCmd{Op: "query", Statements: 3, SQL: "SELECT COUNT(*) FROM t; SELECT name FROM t WHERE id = ?; SELECT 'done'", Args: []any{1}},
			clientReply{Rows: [][]string{{"4"}, {"a"}, {"done"}}}},
		{"multi-statement count mismatch", clientCmd{Op: "query", Statements: 2, SQL: "SELECT 1; SELECT 2; SELECT 3"}, clientReply{Code: 8}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := a.do(t, s.cmd)
			if s.want.Code != 0 {
				if r.Code != s.want.Code {
					t.Fatalf("error code %d (%s), want %d", r.Code, r.Err, s.want.Code)
				}
				return
			}
			if r.Err != "" {
				t.Fatal(r.Err)
			}
			if r.Affected != s.want.Affected {
				t.Errorf("rows affected %d, want %d", r.Affected, s.want.Affected)
			}
			if s.want.Rows != nil && fmt.Sprint(r.Rows) != fmt.Sprint(s.want.Rows) {
				t.Errorf("rows %v, want %v", r.Rows, s.want.Rows)
			}
		})
	}

	t.Run("async with polling", func(t *testing.T) {
		before := f.sink.count(snowflake.KindQueryResult.String(), 200)
		r := a.do(t, clientCmd{Op: "query", Async: true, SQL: "SELECT SYSTEM$WAIT(2), 42, COUNT(*) FROM t"})
		if r.Err != "" {
			t.Fatalf("async query: %s", r.Err)
		}
		if len(r.Rows) != 1 || r.Rows[0][1] != "42" || r.Rows[0][2] != "4" {
			t.Fatalf("rows %v, want one row (…, 42, 4)", r.Rows)
		}
		// The driver got "still running" (333334) and polled the result
		// URL; the polls went through the gateway.
		if f.sink.count(snowflake.KindQueryResult.String(), 200) <= before {
			t.Error("no result poll went through the gateway")
		}
	})

	t.Run("renewal after expiry", func(t *testing.T) {
		before := f.sink.count(snowflake.KindTokenRequest.String(), 200)
		f.inst.Server.Faults().ExpireSessions()
		r := a.do(t, clientCmd{Op: "query", SQL: "SELECT COUNT(*) FROM t"})
		if r.Err != "" {
			t.Fatalf("query after expiry: %s", r.Err)
		}
		if fmt.Sprint(r.Rows) != "[[4]]" {
			t.Errorf("rows %v, want [[4]]", r.Rows)
		}
		if f.sink.count(snowflake.KindTokenRequest.String(), 200) <= before {
			t.Error("no renewal went through the gateway")
		}
	})

	t.Run("chunk ids are bound to the host they were issued on", func(t *testing.T) {
		// A chunk URL as the gateway issued it: the id in the path, the
		// sealed reference in the query (snowflake/chunktoken.go).
		urls := issuedChunkURLs(t, f.sink)
		if len(urls) == 0 {
			t.Fatal("no chunk url issued")
		}
		snow := testenv.SnowflakeAddr.String() + ":443"
		path := urls[len(urls)-1].RequestURI()
		// Another Snowflake name, same workload: refused.
		r := a.do(t, clientCmd{Op: "https", Addr: snow, SNI: "other.snowflakecomputing.com", Method: "GET", Path: path})
		if r.Err != "" || r.Status != 404 {
			t.Errorf("fetch on another host: status %d, error %q; want 404", r.Status, r.Err)
		}
		// The issuing host: served, with the reply's SSE-C headers added
		// by the gateway (this client sends none).
		r = a.do(t, clientCmd{Op: "https", Addr: snow, SNI: testHost, Method: "GET", Path: path})
		if r.Err != "" || r.Status != 200 || r.Body == "" {
			t.Errorf("fetch on the issuing host: status %d, %d bytes, error %q; want 200", r.Status, len(r.Body), r.Err)
		}
	})

	t.Run("log keeps no secrets", func(t *testing.T) {
		f.sink.file.Flush()
		b, err := os.ReadFile(f.sink.path)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"kind":"` + snowflake.KindQueryRequest.String() + `"`, `"kind":"` + snowflake.KindLogin.String() + `"`, `"[REDACTED]"`} {
			if !bytes.Contains(b, []byte(want)) {
				t.Errorf("the exchange log holds no %s", want)
			}
		}
		for _, secret := range []string{testPassword, "Snowflake Token=", "X-Amz-Signature", "x-amz-server-side-encryption-customer-key\":[\""} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("the exchange log contains %q", secret)
			}
		}
		f.sink.mu.Lock()
		defer f.sink.mu.Unlock()
		for _, x := range f.sink.xs {
			if x.Kind != snowflake.KindLogin.String() || x.Status != 200 {
				continue
			}
			for _, tok := range tokensOf(t, x.ResponseBody) {
				if bytes.Contains(b, []byte(tok)) {
					t.Errorf("the exchange log contains a session token")
				}
			}
		}
	})
}

// tokensOf returns the session and master tokens of a login reply.
func tokensOf(t *testing.T, body []byte) []string {
	lr, err := snowflake.ParseLoginResponse(body)
	if err != nil {
		t.Fatalf("login reply: %v", err)
	}
	var out []string
	for _, s := range []string{lr.Token, lr.MasterToken} {
		if len(s) >= 8 {
			out = append(out, s)
		}
	}
	return out
}
