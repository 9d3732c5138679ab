package emulator_test

import (
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// The conformance tests drive the real gosnowflake driver through
// database/sql against the emulator over real TLS.

func TestConnect(t *testing.T) {
	k, _ := keys(t)
	tlsInst := start(t, nil)
	plainInst := start(t, nil, emulatortest.PlainHTTP())
	cases := []struct {
		name     string
		inst     *emulatortest.Instance
		user, pw string
		params   url.Values
		want     string
	}{
		{"password", tlsInst, testUser, testPassword, nil, strings.ToUpper(testUser)},
		{"password over plain HTTP", plainInst, testUser, testPassword, nil, strings.ToUpper(testUser)},
		{"key pair", tlsInst, keyUser, "", url.Values{"authenticator": {"SNOWFLAKE_JWT"}, "privateKey": {privateKeyParam(t, k)}}, strings.ToUpper(keyUser)},
		{"programmatic access token", tlsInst, patUser, "", url.Values{"authenticator": {"PROGRAMMATIC_ACCESS_TOKEN"}, "token": {testPAT}}, strings.ToUpper(patUser)},
		{"oauth", tlsInst, "", "", url.Values{"authenticator": {"OAUTH"}, "token": {testOAuth}}, strings.ToUpper(oauthUser)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := open(t, tc.inst.DSN(tc.user, tc.pw, tc.params))
			ctx := ctxT(t)
			if err := db.PingContext(ctx); err != nil {
				t.Fatalf("ping: %v", err)
			}
			var user string
			if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user); err != nil {
				t.Fatalf("CURRENT_USER: %v", err)
			}
			if !strings.EqualFold(user, tc.want) {
				t.Fatalf("CURRENT_USER() = %q, want %q", user, tc.want)
			}
		})
	}
}

func TestLoginRefused(t *testing.T) {
	_, other := keys(t)
	inst := start(t, nil)
	cases := []struct {
		name     string
		user, pw string
		params   url.Values
		code     int
	}{
		{"wrong password", testUser, "nope", nil, 390100},
		{"unknown user", "mallory", "pw", nil, 390100},
		{"key pair with an unregistered key", keyUser, "", url.Values{"authenticator": {"SNOWFLAKE_JWT"}, "privateKey": {privateKeyParam(t, other)}}, 390144},
		{"key pair for a user without a key", testUser, "", url.Values{"authenticator": {"SNOWFLAKE_JWT"}, "privateKey": {privateKeyParam(t, other)}}, 390144},
		{"wrong programmatic access token", patUser, "", url.Values{"authenticator": {"PROGRAMMATIC_ACCESS_TOKEN"}, "token": {"bogus"}}, 390100},
		{"wrong oauth token", "", "", url.Values{"authenticator": {"OAUTH"}, "token": {"bogus"}}, 390303},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := open(t, inst.DSN(tc.user, tc.pw, tc.params))
			err := db.PingContext(ctxT(t))
			if err == nil {
				t.Fatal("login succeeded")
			}
			if se := sfError(t, err); se.Number != tc.code {
				t.Fatalf("error number %d, want %d (%v)", se.Number, tc.code, err)
			}
		})
	}
	if n := inst.Server.Sessions(); n != 0 {
		t.Fatalf("%d sessions after refused logins", n)
	}
}

// selectRows is a deterministic 200,000-row result spanning many chunks.
const selectRows = 200000

func selectSQL(n int) string {
	return fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s, randstr(12, seq4()) AS r FROM TABLE(GENERATOR(ROWCOUNT => %d))", n)
}

func TestSelectManyRows(t *testing.T) {
	inst := start(t, nil)
	randstrs := map[string][]string{}
	for _, format := range []string{"arrow", "json"} {
		t.Run(format, func(t *testing.T) {
			db := passwordDB(t, inst, nil)
			ctx := ctxT(t)
			conn, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.ExecContext(ctx, "ALTER SESSION SET GO_QUERY_RESULT_FORMAT = '"+strings.ToUpper(format)+"'"); err != nil {
				t.Fatalf("ALTER SESSION: %v", err)
			}
			hitsBefore := inst.Server.Faults().Hits(emulator.EndpointChunk)
			rows, err := conn.QueryContext(ctx, selectSQL(selectRows))
			if err != nil {
				t.Fatalf("query: %v", err)
			}
			defer rows.Close()
			seen := make([]bool, selectRows)
			rs := make([]string, selectRows)
			count := 0
			for rows.Next() {
				var n int64
				var s, r string
				if err := rows.Scan(&n, &s, &r); err != nil {
					t.Fatalf("scan row %d: %v", count, err)
				}
				if n < 0 || n >= selectRows || seen[n] {
					t.Fatalf("row %d: n = %d out of range or repeated", count, n)
				}
				seen[n] = true
				if want := fmt.Sprintf("row-%d", n); s != want {
					t.Fatalf("row n=%d: s = %q, want %q", n, s, want)
				}
				if len(r) != 12 {
					t.Fatalf("row n=%d: randstr %q is not 12 characters", n, r)
				}
				rs[n] = r
				count++
			}
			if err := rows.Err(); err != nil {
				t.Fatalf("rows: %v", err)
			}
			if count != selectRows {
				t.Fatalf("%d rows, want %d", count, selectRows)
			}
			if inst.Server.Faults().Hits(emulator.EndpointChunk) == hitsBefore {
				t.Fatal("no chunk was fetched from the storage endpoint")
			}
			randstrs[format] = rs
		})
	}
	a, j := randstrs["arrow"], randstrs["json"]
	if a != nil && j != nil {
		for i := range a {
			if a[i] != j[i] {
				t.Fatalf("randstr(12, %d): arrow %q, json %q", i, a[i], j[i])
			}
		}
	}
}

func TestDMLAndBinds(t *testing.T) {
	inst := start(t, nil)
	db := passwordDB(t, inst, nil)
	ctx := ctxT(t)
	mustExec(t, db, "CREATE TABLE people (id NUMBER, name VARCHAR, score FLOAT)")
	res, err := db.ExecContext(ctx, "INSERT INTO people (id, name, score) VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?)",
		1, "ann", 1.5, 2, "bob", 2.5, 3, "cy", nil)
	if err != nil {
		t.Fatalf("insert: %v", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 3 {
		t.Fatalf("insert affected %d rows (%v), want 3", n, err)
	}
	res, err = db.ExecContext(ctx, "UPDATE people SET score = score * 2 WHERE id >= ?", 2)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if n, _ := res.RowsAffected(); n != 2 {
		t.Fatalf("update affected %d rows, want 2", n)
	}
	var name string
	var score sql.NullFloat64
	if err := db.QueryRowContext(ctx, "SELECT name, score FROM people WHERE id = ?", 2).Scan(&name, &score); err != nil {
		t.Fatalf("select: %v", err)
	}
	if name != "bob" || !score.Valid || score.Float64 != 5 {
		t.Fatalf("got %q %v, want bob 5", name, score)
	}
	res, err = db.ExecContext(ctx, "DELETE FROM people WHERE name = ?", "cy")
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("delete affected %d rows, want 1", n)
	}
}

func mustExec(t testing.TB, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestCompilationError(t *testing.T) {
	inst := start(t, nil)
	db := passwordDB(t, inst, nil)
	cases := []struct {
		name, sql string
		number    int
		state     string
	}{
		{"syntax", "SELEC 1", 1003, snowflake.SQLStateSyntax},
		{"missing table", "SELECT * FROM no_such_table", 2003, snowflake.SQLStateObjectMissing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := db.QueryContext(ctxT(t), tc.sql)
			if err == nil {
				t.Fatal("query succeeded")
			}
			se := sfError(t, err)
			if se.Number != tc.number || se.SQLState != tc.state || se.QueryID == "" {
				t.Fatalf("got number %d state %q queryId %q, want %d %q and a query id", se.Number, se.SQLState, se.QueryID, tc.number, tc.state)
			}
		})
	}
}

func TestMultiStatement(t *testing.T) {
	inst := start(t, nil)
	db := passwordDB(t, inst, nil)
	mustExec(t, db, "CREATE TABLE m (x NUMBER)")
	ctx, err := gosnowflake.WithMultiStatement(ctxT(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.QueryContext(ctx, "INSERT INTO m VALUES (1), (2); SELECT COUNT(*) FROM m; SELECT 'done'")
	if err != nil {
		t.Fatalf("multi-statement: %v", err)
	}
	defer rows.Close()
	var got []string
	for {
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatalf("scan: %v", err)
			}
			got = append(got, v)
		}
		if !rows.NextResultSet() {
			break
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("rows: %v", err)
	}
	if want := "2,2,done"; strings.Join(got, ",") != want {
		t.Fatalf("results %q, want %q", strings.Join(got, ","), want)
	}
	// Positional binds are numbered across the statements.
	ctx2, err := gosnowflake.WithMultiStatement(ctxT(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	brows, err := db.QueryContext(ctx2, "INSERT INTO m VALUES (?); SELECT COUNT(*) FROM m WHERE x >= ?", 7, 2)
	if err != nil {
		t.Fatalf("multi-statement with binds: %v", err)
	}
	defer brows.Close()
	var counts []int
	for {
		for brows.Next() {
			var c int
			if err := brows.Scan(&c); err != nil {
				t.Fatalf("scan: %v", err)
			}
			counts = append(counts, c)
		}
		if !brows.NextResultSet() {
			break
		}
	}
	if fmt.Sprint(counts) != "[1 2]" {
		t.Fatalf("multi-statement with binds gave %v, want [1 2]", counts)
	}
	// Without the count the default of 1 refuses multi-statement text.
	_, err = db.ExecContext(ctxT(t), "SELECT 1; SELECT 2")
	if se := sfError(t, err); se.Number != 8 {
		t.Fatalf("error number %d, want 8 (%v)", se.Number, err)
	}
}

func TestAsyncQuery(t *testing.T) {
	inst := start(t, nil)
	db := passwordDB(t, inst, nil)
	ctx := gosnowflake.WithAsyncMode(ctxT(t))
	rows, err := db.QueryContext(ctx, "SELECT SYSTEM$WAIT(1), 42")
	if err != nil {
		t.Fatalf("async query: %v", err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatalf("no row: %v", rows.Err())
	}
	var waited string
	var v int
	if err := rows.Scan(&waited, &v); err != nil || v != 42 {
		t.Fatalf("scan: %v, %d", err, v)
	}
	if inst.Server.Faults().Hits(emulator.EndpointResult) == 0 {
		t.Fatal("the driver never polled the result")
	}
}

func TestSyncLongPoll(t *testing.T) {
	inst := start(t, func(c *emulator.Config) { c.QueryWait = 200 * time.Millisecond; c.ResultWait = 200 * time.Millisecond })
	db := passwordDB(t, inst, nil)
	var waited string
	var v int
	if err := db.QueryRowContext(ctxT(t), "SELECT SYSTEM$WAIT(1), 7").Scan(&waited, &v); err != nil || v != 7 {
		t.Fatalf("query: %v, %d", err, v)
	}
	if inst.Server.Faults().Hits(emulator.EndpointResult) == 0 {
		t.Fatal("no 333333 poll happened")
	}
}

func TestSessionRenewal(t *testing.T) {
	inst := start(t, nil)
	db := passwordDB(t, inst, nil)
	db.SetMaxOpenConns(1)
	ctx := ctxT(t)
	if err := db.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	inst.Server.Faults().ExpireSessions()
	var v int
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&v); err != nil || v != 1 {
		t.Fatalf("query after expiry: %v", err)
	}
	if n := inst.Server.Faults().Hits(emulator.EndpointToken); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
	inst.Server.Faults().ExpireMasters()
	_, err := db.QueryContext(ctx, "SELECT 1")
	if se := sfError(t, err); se.Number != 390114 {
		t.Fatalf("error number %d after master expiry, want 390114 (%v)", se.Number, err)
	}
}

func TestCancel(t *testing.T) {
	inst := start(t, nil)
	db := passwordDB(t, inst, nil)
	if err := db.PingContext(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	errc := make(chan error, 1)
	go func() {
		_, err := db.QueryContext(ctx, "SELECT SYSTEM$WAIT(600)")
		errc <- err
	}()
	waitFor(t, "the statement to start", func() bool { return inst.Server.Running() == 1 })
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("cancelled query succeeded")
	}
	waitFor(t, "the abort request", func() bool { return inst.Server.Faults().Hits(emulator.EndpointAbort) > 0 })
	waitFor(t, "the statement to stop", func() bool { return inst.Server.Running() == 0 })
}

func TestRetryDoesNotExecuteTwice(t *testing.T) {
	cases := []struct {
		name  string
		fault emulator.Fault
	}{
		{"reply lost by connection reset", emulator.Fault{Endpoint: emulator.EndpointQuery, Reset: true, After: true, Count: 1}},
		{"reply replaced by 503", emulator.Fault{Endpoint: emulator.EndpointQuery, Status: 503, After: true, Count: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inst := start(t, nil)
			db := passwordDB(t, inst, nil)
			mustExec(t, db, "CREATE TABLE once (x NUMBER)")
			inst.Server.Faults().Add(tc.fault)
			res, err := db.ExecContext(ctxT(t), "INSERT INTO once VALUES (1)")
			if err != nil {
				t.Fatalf("insert: %v", err)
			}
			if n, _ := res.RowsAffected(); n != 1 {
				t.Fatalf("rows affected %d, want 1", n)
			}
			if hits := inst.Server.Faults().Hits(emulator.EndpointQuery); hits < 3 {
				t.Fatalf("%d query requests: the driver did not retry", hits)
			}
			executed := 0
			for _, e := range inst.Server.QueryLog() {
				if strings.HasPrefix(e.SQL, "INSERT INTO once") {
					executed++
				}
			}
			if executed != 1 {
				t.Fatalf("INSERT executed %d times, want once", executed)
			}
			var n int
			if err := db.QueryRowContext(ctxT(t), "SELECT COUNT(*) FROM once").Scan(&n); err != nil || n != 1 {
				t.Fatalf("count %d (%v), want 1", n, err)
			}
		})
	}
}

func TestTransientFaults(t *testing.T) {
	inst := start(t, nil)
	db := passwordDB(t, inst, nil)
	if err := db.PingContext(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	inst.Server.Faults().FailWith(emulator.EndpointQuery, 503, 1)
	inst.Server.Faults().ResetConnections(emulator.EndpointQuery, 1)
	inst.Server.Faults().SetLatency(emulator.EndpointQuery, 100*time.Millisecond)
	var v int
	if err := db.QueryRowContext(ctxT(t), "SELECT 5").Scan(&v); err != nil || v != 5 {
		t.Fatalf("query through faults: %v", err)
	}
}

// TestPutGet uploads with gosnowflake's PUT into the LOCAL_FS stage and
// reads the GET transfer plan over raw HTTP: gosnowflake 1.19.1 cannot GET
// from LOCAL_FS (it downloads only its "large" file list, which is empty for
// local stages, and reports 264011 not implemented).
func TestPutGet(t *testing.T) {
	inst := start(t, nil)
	db := passwordDB(t, inst, nil)
	src := filepath.Join(t.TempDir(), "upload.csv")
	content := "1,alpha\n2,beta\n"
	if err := os.WriteFile(src, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if _, err := db.ExecContext(ctx, fmt.Sprintf("PUT file://%s @~/stage1", src)); err != nil {
		t.Fatalf("PUT: %v", err)
	}
	var stored string
	_ = filepath.WalkDir(filepath.Join(inst.Server.Dir(), "stages"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "upload.csv.gz" {
			stored = p
		}
		return nil
	})
	if stored == "" {
		t.Fatal("upload.csv.gz not in the stage directory")
	}
	f, err := os.Open(stored)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("stored file is not gzip: %v", err)
	}
	if got, err := io.ReadAll(zr); err != nil || string(got) != content {
		t.Fatalf("stored content %q (%v), want %q", got, err, content)
	}

	token, _ := rawLogin(t, inst)
	out := t.TempDir()
	r := do(t, inst, "POST", "/queries/v1/query-request", token, "application/json",
		[]byte(fmt.Sprintf(`{"sqlText":"GET @~/stage1 'file://%s'"}`, out)), nil)
	var plan struct {
		Command       string   `json:"command"`
		SrcLocations  []string `json:"src_locations"`
		LocalLocation string   `json:"localLocation"`
		StageInfo     struct {
			LocationType string `json:"locationType"`
			Location     string `json:"location"`
		} `json:"stageInfo"`
	}
	if err := json.Unmarshal(r.env.Data, &plan); err != nil || !r.env.Success {
		t.Fatalf("GET plan: %v %s", err, r.body)
	}
	if plan.Command != "DOWNLOAD" || len(plan.SrcLocations) != 1 || plan.SrcLocations[0] != "stage1/upload.csv.gz" ||
		plan.LocalLocation != out || plan.StageInfo.LocationType != "LOCAL_FS" ||
		filepath.Join(plan.StageInfo.Location, plan.SrcLocations[0]) != stored {
		t.Fatalf("GET plan %+v, stored at %s", plan, stored)
	}
}

func TestLogout(t *testing.T) {
	inst := start(t, func(c *emulator.Config) { c.InlineRows = 10; c.ChunkRows = 500 })
	db, err := sql.Open("snowflake", inst.DSN(testUser, testPassword, url.Values{"GO_QUERY_RESULT_FORMAT": {"JSON"}}))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.QueryContext(ctxT(t), selectSQL(5000))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if n := inst.Server.Sessions(); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	if files := chunkFiles(t, inst); files == 0 {
		t.Fatal("no chunk files while the session is open")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if n := inst.Server.Sessions(); n != 0 {
		t.Fatalf("%d sessions after Close, want 0", n)
	}
	if inst.Server.Faults().Hits(emulator.EndpointLogout) == 0 {
		t.Fatal("no logout request")
	}
	if files := chunkFiles(t, inst); files != 0 {
		t.Fatalf("%d chunk files left after logout", files)
	}
}

// chunkFiles counts the result files on the emulator's disk.
func chunkFiles(t *testing.T, inst *emulatortest.Instance) int {
	n := 0
	_ = filepath.WalkDir(filepath.Join(inst.Server.Dir(), "results"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// TestFetchResultByID fetches an earlier statement's result by query id,
// the way gosnowflake does it: monitoring status first, then the result.
// (The id comes from the query log: reading it from async rows races inside
// gosnowflake 1.19.1, which writes it from its polling goroutine.)
func TestFetchResultByID(t *testing.T) {
	inst := start(t, nil)
	db := passwordDB(t, inst, nil)
	ctx := ctxT(t)
	const stmt = "SELECT SYSTEM$WAIT(1), 40 + 2"
	rows, err := db.QueryContext(gosnowflake.WithAsyncMode(ctx), stmt)
	if err != nil {
		t.Fatalf("async query: %v", err)
	}
	var qid string
	waitFor(t, "the statement in the query log", func() bool {
		for _, e := range inst.Server.QueryLog() {
			if e.SQL == stmt {
				qid = e.QueryID
			}
		}
		return qid != ""
	})
	monitorBefore := inst.Server.Faults().Hits(emulator.EndpointMonitoring)
	var waited string
	var v int
	if err := db.QueryRowContext(gosnowflake.WithFetchResultByID(ctx, qid), "").Scan(&waited, &v); err != nil || v != 42 {
		t.Fatalf("fetch by id: %v, %d", err, v)
	}
	if inst.Server.Faults().Hits(emulator.EndpointMonitoring) == monitorBefore {
		t.Fatal("the driver did not check the query status")
	}
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("async rows: %v", err)
	}
	_ = rows.Close()
}

func TestChunkFaults(t *testing.T) {
	inst := start(t, func(c *emulator.Config) { c.InlineRows = 100; c.ChunkRows = 2000 })
	db := passwordDB(t, inst, nil)
	if err := db.PingContext(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	inst.Server.Faults().FailWith(emulator.EndpointChunk, 503, 2)
	inst.Server.Faults().ResetConnections(emulator.EndpointChunk, 1)
	rows, err := db.QueryContext(ctxT(t), selectSQL(20000))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	sum, count := int64(0), 0
	for rows.Next() {
		var n int64
		var s, r string
		if err := rows.Scan(&n, &s, &r); err != nil {
			t.Fatal(err)
		}
		sum += n
		count++
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("rows through chunk faults: %v", err)
	}
	if count != 20000 || sum != 20000*19999/2 {
		t.Fatalf("%d rows summing to %d", count, sum)
	}
	if left := inst.Server.Faults().List(); len(left) != 0 {
		t.Fatalf("faults not used up: %+v", left)
	}
}
