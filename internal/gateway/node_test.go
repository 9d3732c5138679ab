package gateway_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
)

// TestNodeThroughGateway runs the unchanged Node snowflake-sdk driver in the
// agents' cgroup against acme.snowflakecomputing.com: it trusts the gateway
// CA through NODE_EXTRA_CA_CERTS (as the appliance injects it), checks OCSP
// against the gateway's responder, and reads a multi-chunk JSON result
// through rewritten chunk URLs.
func TestNodeThroughGateway(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := testenv.NewNodeClient(t)
	c.CAFile = f.caFile
	c.Proc = &testenv.Proc{Cgroup: f.cg, Netns: f.ns, Root: true}
	const rows = seqRows
	res, want, _ := runNodeScenario(t, c, rows)
	if len(res) != 6 {
		t.Fatalf("%d results, want 6", len(res))
	}
	for _, r := range res[:4] {
		if err := r.Err(); err != nil {
			t.Fatalf("step %d (%s): %v", r.Step, r.Op, err)
		}
	}
	if r := res[2]; r.NumUpdatedRows == nil || *r.NumUpdatedRows != 2 {
		t.Errorf("insert updated %v rows, want 2", r.NumUpdatedRows)
	}
	d := res[3].Digest
	if d == nil || d.Count != rows || d.SHA256 != want.Sum() {
		t.Errorf("digest %+v, want %d rows with sha256 %s", d, rows, want.Sum())
	}
	if e := res[4].Error; e == nil || e.Code != snowflake.CodeSyntaxError && e.Code != "1003" {
		t.Errorf("broken SQL: error %+v, want code 001003", e)
	}
	if n := f.sink.count(snowflake.KindChunk.String(), 200); n < 2 {
		t.Errorf("%d chunk fetches through the gateway, want several", n)
	}
	if f.gw.Stats.OCSP.Load() == 0 {
		t.Error("no OCSP request reached the gateway")
	}
}

// TestNodeSessionFeaturesThroughGateway drives one Node snowflake-sdk
// connection in the agents' cgroup, step by step, through the gateway:
// asynchronous execution with polling (asyncExec, then
// getResultsFromQueryId, which polls /monitoring/queries and the result
// URL), a multi-statement with binds (MULTI_STATEMENT_COUNT, one child
// result per statement), and renewal after the emulator expired every
// session token (the driver renews with its master token and retries).
func TestNodeSessionFeaturesThroughGateway(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := testenv.NewNodeClient(t)
	c.CAFile = f.caFile
	c.Proc = &testenv.Proc{Cgroup: f.cg, Netns: f.ns, Root: true}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := c.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	do := func(t *testing.T, step testenv.NodeStep) testenv.NodeResult {
		t.Helper()
		r, err := s.Do(step)
		if err != nil {
			t.Fatalf("node client: %v", err)
		}
		return r
	}
	mustOK := func(t *testing.T, step testenv.NodeStep) testenv.NodeResult {
		t.Helper()
		r := do(t, step)
		if err := r.Err(); err != nil {
			t.Fatalf("step %d (%s %q): %v", r.Step, r.Op, step.SQLText, err)
		}
		return r
	}
	mustOK(t, testenv.NodeConnect(testenv.NodeConnection{Account: testAccount, Username: testUser, Password: testPassword}))
	mustOK(t, testenv.NodeExecute("CREATE TABLE t (id INT, name STRING)"))
	if r := mustOK(t, testenv.NodeExecute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")); r.NumUpdatedRows == nil || *r.NumUpdatedRows != 3 {
		t.Fatalf("insert updated %v rows, want 3", r.NumUpdatedRows)
	}

	t.Run("async with polling", func(t *testing.T) {
		monitorBefore := f.sink.count(snowflake.KindMonitoring.String(), 200)
		resultBefore := f.sink.count(snowflake.KindQueryResult.String(), 200)
		exec := testenv.NodeExecute("SELECT SYSTEM$WAIT(2), 42, COUNT(*) FROM t")
		exec.AsyncExec = true
		r := mustOK(t, exec)
		if r.QueryID == "" {
			t.Fatal("asyncExec returned no query id")
		}
		fetch := testenv.NodeFetchResult(r.QueryID)
		fetch.FetchAsString = testenv.NodeFetchAllAsString
		got := mustOK(t, fetch)
		if len(got.Rows) != 1 || len(got.Rows[0]) != 3 || fmt.Sprint(got.Rows[0][1:]) != "[42 3]" {
			t.Fatalf("rows %v, want one row (…, 42, 3)", got.Rows)
		}
		// The driver asked the monitoring endpoint and read the result
		// URL; both went through the gateway.
		if f.sink.count(snowflake.KindMonitoring.String(), 200) <= monitorBefore {
			t.Error("no monitoring poll went through the gateway")
		}
		if f.sink.count(snowflake.KindQueryResult.String(), 200) <= resultBefore {
			t.Error("no result fetch went through the gateway")
		}
	})

	multi := func(sql string, n int, binds ...any) testenv.NodeStep {
		st := testenv.NodeExecute(sql, binds...)
		st.Parameters = map[string]any{"MULTI_STATEMENT_COUNT": n}
		st.FetchAsString = testenv.NodeFetchAllAsString
		return st
	}
	t.Run("multi-statement", func(t *testing.T) {
		r := mustOK(t, multi("SELECT COUNT(*) FROM t; SELECT name FROM t WHERE id = ?; SELECT 'done'", 3, 2))
		if len(r.Results) != 3 {
			t.Fatalf("%d child results, want 3 (%+v)", len(r.Results), r)
		}
		var got []string
		for _, c := range r.Results {
			got = append(got, fmt.Sprint(c.Rows))
		}
		if want := []string{"[[3]]", "[[b]]", "[[done]]"}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("child rows %v, want %v", got, want)
		}
	})
	t.Run("multi-statement count mismatch", func(t *testing.T) {
		r := do(t, multi("SELECT 1; SELECT 2; SELECT 3", 2))
		if r.OK || r.Error == nil || strings.TrimLeft(r.Error.Code, "0") != "8" {
			t.Errorf("result %+v (error %v), want error 000008", r, r.Error)
		}
	})

	t.Run("renewal after expiry", func(t *testing.T) {
		before := f.sink.count(snowflake.KindTokenRequest.String(), 200)
		f.inst.Server.Faults().ExpireSessions()
		sel := testenv.NodeExecute("SELECT COUNT(*) FROM t")
		sel.FetchAsString = testenv.NodeFetchAllAsString
		r := mustOK(t, sel)
		if fmt.Sprint(r.Rows) != "[[3]]" {
			t.Errorf("rows %v, want [[3]]", r.Rows)
		}
		if f.sink.count(snowflake.KindTokenRequest.String(), 200) <= before {
			t.Error("no renewal went through the gateway")
		}
		// The renewed session keeps working.
		if r := mustOK(t, sel); fmt.Sprint(r.Rows) != "[[3]]" {
			t.Errorf("second query after renewal: rows %v, want [[3]]", r.Rows)
		}
	})
	mustOK(t, testenv.NodeDestroy())
	if err := s.Close(); err != nil {
		t.Errorf("node client exit: %v", err)
	}
}

// seqSQLFor is the multi-chunk SELECT of the Node scenario: rows of (n,
// 'row-'||n).
func seqSQLFor(rows int) string {
	return fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", rows)
}

// runNodeScenario runs the Node driver's scenario through the gateway: log
// in, CREATE, INSERT with binds, the rows-row SELECT read as a digest, a
// syntax error, log out. It returns the results, the digest the SELECT must
// have, and its SQL.
func runNodeScenario(t *testing.T, c *testenv.NodeClient, rows int) ([]testenv.NodeResult, *testenv.NodeRowsDigester, string) {
	t.Helper()
	want := testenv.NewNodeRowsDigest()
	for i := range rows {
		n, s := strconv.Itoa(i), "row-"+strconv.Itoa(i)
		want.Add(&n, &s)
	}
	seqSQL := seqSQLFor(rows)
	sel := testenv.NodeExecute(seqSQL)
	sel.FetchAsString = testenv.NodeFetchAllAsString
	sel.Output = "digest"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := c.Run(ctx,
		testenv.NodeConnect(testenv.NodeConnection{Account: testAccount, Username: testUser, Password: testPassword}),
		testenv.NodeExecute("CREATE TABLE n (id INT)"),
		testenv.NodeExecute("INSERT INTO n VALUES (?), (?)", 1, 2),
		sel,
		testenv.NodeExecute("SELEC broken"),
		testenv.NodeDestroy(),
	)
	if err != nil {
		t.Fatalf("node client: %v", err)
	}
	return res, want, seqSQL
}
