package emulator_test

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/testenv"
)

// The real Node snowflake-sdk driver against the emulator, over real TLS:
// the driver trusts the emulator's CA only through NODE_EXTRA_CA_CERTS and
// runs with its default fail-open OCSP (testenv.NodeClient).

// nodeConn is the connection of the password user to inst.
func nodeConn(inst *emulatortest.Instance) testenv.NodeConnection {
	return testenv.NodeConnection{Account: inst.Account, AccessURL: inst.URL, Username: testUser, Password: testPassword}
}

// nodeClient is a Node client that trusts inst's CA.
func nodeClient(t *testing.T, inst *emulatortest.Instance) *testenv.NodeClient {
	t.Helper()
	c := testenv.NewNodeClient(t)
	c.CAFile = inst.CAFile
	return c
}

// nodeRun runs steps in one client and fails the test on a harness failure.
func nodeRun(t *testing.T, inst *emulatortest.Instance, steps ...testenv.NodeStep) []testenv.NodeResult {
	t.Helper()
	res, err := nodeClient(t, inst).Run(ctxT(t), steps...)
	if err != nil {
		t.Fatalf("node client: %v", err)
	}
	if len(res) != len(steps) {
		t.Fatalf("node client answered %d of %d steps", len(res), len(steps))
	}
	return res
}

// nodeOK fails the test unless every result succeeded.
func nodeOK(t *testing.T, res ...testenv.NodeResult) {
	t.Helper()
	for _, r := range res {
		if err := r.Err(); err != nil {
			t.Fatalf("step %d (%s): %v", r.Step, r.Op, err)
		}
	}
}

// nodeCells renders rows as text for comparison: strings as they are,
// numbers in their JSON form, NULL as "NULL".
func nodeCells(rows [][]any) [][]string {
	out := make([][]string, len(rows))
	for i, r := range rows {
		for _, v := range r {
			switch x := v.(type) {
			case nil:
				out[i] = append(out[i], "NULL")
			case string:
				out[i] = append(out[i], x)
			case json.Number:
				out[i] = append(out[i], x.String())
			default:
				out[i] = append(out[i], fmt.Sprint(x))
			}
		}
	}
	return out
}

// pkcs8PEM is the PEM form of a private key that snowflake-sdk's privateKey
// option takes.
func pkcs8PEM(t *testing.T, k *rsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func sameNodeCells(a, b [][]string) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// TestNodeLogins logs in with each authenticator the emulator supports and
// runs one statement in the new session.
func TestNodeLogins(t *testing.T) {
	inst := start(t, nil)
	key, otherKey := keys(t)
	for _, tc := range []struct {
		name     string
		conn     testenv.NodeConnection
		wantCode string // "" means the login succeeds
	}{
		{name: "password", conn: testenv.NodeConnection{Username: testUser, Password: testPassword}},
		{name: "password, user name in another case", conn: testenv.NodeConnection{Username: strings.ToUpper(testUser), Password: testPassword}},
		{name: "wrong password", conn: testenv.NodeConnection{Username: testUser, Password: "nope"}, wantCode: "390100"},
		{name: "unknown user", conn: testenv.NodeConnection{Username: "mallory", Password: testPassword}, wantCode: "390100"},
		{name: "oauth", conn: testenv.NodeConnection{Authenticator: "OAUTH", Username: oauthUser, Token: testOAuth}},
		{name: "oauth without user", conn: testenv.NodeConnection{Authenticator: "OAUTH", Token: testOAuth}},
		{name: "oauth, bad token", conn: testenv.NodeConnection{Authenticator: "OAUTH", Username: oauthUser, Token: "forged"}, wantCode: "390303"},
		{name: "programmatic access token", conn: testenv.NodeConnection{Authenticator: "PROGRAMMATIC_ACCESS_TOKEN", Username: patUser, Token: testPAT}},
		{name: "programmatic access token, wrong token", conn: testenv.NodeConnection{Authenticator: "PROGRAMMATIC_ACCESS_TOKEN", Username: patUser, Token: "pat-wrong"}, wantCode: "390100"},
		// Node mints the key-pair JWT with iat/exp in milliseconds.
		{name: "key pair", conn: testenv.NodeConnection{Authenticator: "SNOWFLAKE_JWT", Username: keyUser,
			Extra: map[string]any{"privateKey": pkcs8PEM(t, key)}}},
		{name: "key pair, unregistered key", conn: testenv.NodeConnection{Authenticator: "SNOWFLAKE_JWT", Username: keyUser,
			Extra: map[string]any{"privateKey": pkcs8PEM(t, otherKey)}}, wantCode: "390144"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := tc.conn
			conn.Account, conn.AccessURL = inst.Account, inst.URL
			before := len(inst.Server.QueryLog())
			res := nodeRun(t, inst,
				testenv.NodeConnect(conn),
				testenv.NodeExecute("SELECT 1 AS one"),
				testenv.NodeDestroy(),
			)
			if tc.wantCode != "" {
				if res[0].OK || res[0].Error == nil || res[0].Error.Code != tc.wantCode {
					t.Fatalf("login: %+v, want error %s", res[0], tc.wantCode)
				}
				if n := len(inst.Server.QueryLog()); n != before {
					t.Errorf("a refused login executed %d statements", n-before)
				}
				return
			}
			nodeOK(t, res...)
			if got := nodeCells(res[1].Rows); !sameNodeCells(got, [][]string{{"1"}}) {
				t.Errorf("SELECT 1 rows = %v", got)
			}
			if len(res[1].Columns) != 1 || res[1].Columns[0].Name != "ONE" || res[1].Columns[0].Type != "fixed" {
				t.Errorf("columns = %+v, want one fixed column ONE", res[1].Columns)
			}
			log := inst.Server.QueryLog()[before:]
			if len(log) != 1 || log[0].SQL != "SELECT 1 AS one" || log[0].QueryID != res[1].QueryID {
				t.Errorf("emulator query log %+v does not match the statement (queryId %s)", log, res[1].QueryID)
			}
		})
	}
}

// splitmix64 and emulatorRandstr restate the emulator's documented RANDSTR
// definition (splitmix64 over the generator value), so every value of a
// large result can be checked independently of the emulator's code.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func emulatorRandstr(n int, gen int64) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	state := uint64(gen)
	for i := range b {
		state = splitmix64(state)
		b[i] = alphabet[state%uint64(len(alphabet))]
	}
	return string(b)
}

// TestNodeLargeResult reads a result that spans many chunks, through the
// driver's streaming and buffered paths, and checks every value against the
// emulator's definition of SEQ4 and RANDSTR.
func TestNodeLargeResult(t *testing.T) {
	const rows = 200000
	inst := start(t, nil)
	sqlText := fmt.Sprintf("SELECT seq4() AS n, randstr(8, seq4()) AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", rows)

	want := testenv.NewNodeRowsDigest()
	var first, last [][]string
	for n := int64(0); n < rows; n++ {
		num, str := strconv.FormatInt(n, 10), emulatorRandstr(8, n)
		want.Add(&num, &str)
		if n < 3 {
			first = append(first, []string{num, str})
		}
		if n >= rows-3 {
			last = append(last, []string{num, str})
		}
	}
	wantSum := want.Sum()

	for _, tc := range []struct {
		name     string
		buffered bool
	}{
		{name: "streamRows", buffered: false},
		{name: "complete callback", buffered: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chunksBefore := inst.Server.Faults().Hits(emulator.EndpointChunk)
			exec := testenv.NodeStep{Op: "execute", SQLText: sqlText, FetchAsString: testenv.NodeFetchAllAsString,
				Output: "digest", Keep: 3, Buffered: tc.buffered}
			res := nodeRun(t, inst, testenv.NodeConnect(nodeConn(inst)), exec, testenv.NodeDestroy())
			nodeOK(t, res...)
			d := res[1].Digest
			if d == nil {
				t.Fatalf("no digest in %+v", res[1])
			}
			if d.Count != rows {
				t.Errorf("driver read %d rows, want %d", d.Count, rows)
			}
			if got := nodeCells(d.First); !sameNodeCells(got, first) {
				t.Errorf("first rows %v, want %v", got, first)
			}
			if got := nodeCells(d.Last); !sameNodeCells(got, last) {
				t.Errorf("last rows %v, want %v", got, last)
			}
			if d.SHA256 != wantSum {
				t.Errorf("digest of all %d rows %s, want %s: some value differs", d.Count, d.SHA256, wantSum)
			}
			if res[1].NumRows == nil || *res[1].NumRows != rows {
				t.Errorf("statement numRows %v, want %d", res[1].NumRows, rows)
			}
			chunks := inst.Server.Faults().Hits(emulator.EndpointChunk) - chunksBefore
			if chunks < 2 {
				t.Errorf("the driver fetched %d chunks from the storage host, want several", chunks)
			}
			t.Logf("%d rows in %d chunk fetches, %d ms", d.Count, chunks, res[1].MS)
		})
	}
}

// TestNodeStatements covers binds, DML row counts and SQL errors.
func TestNodeStatements(t *testing.T) {
	inst := start(t, nil)
	res := nodeRun(t, inst,
		testenv.NodeConnect(nodeConn(inst)),
		testenv.NodeExecute("CREATE TABLE node_items (id NUMBER, name STRING)"),
	)
	nodeOK(t, res...)

	for _, tc := range []struct {
		name         string
		step         testenv.NodeStep
		wantRows     [][]string
		wantUpdated  int64 // checked when > 0
		wantCode     string
		wantSQLState string
	}{
		{
			name:        "insert with binds",
			step:        testenv.NodeExecute("INSERT INTO node_items (id, name) VALUES (?, ?), (?, ?)", 1, "one", 2, "two"),
			wantUpdated: 2,
		},
		{
			name:     "select with a bind",
			step:     testenv.NodeExecute("SELECT id, name FROM node_items WHERE id >= ? ORDER BY id", 1),
			wantRows: [][]string{{"1", "one"}, {"2", "two"}},
		},
		{
			name:     "binds of several types",
			step:     testenv.NodeExecute("SELECT ? AS a, ? AS b, ? AS c", 42, "it's", nil),
			wantRows: [][]string{{"42", "it's", "NULL"}},
		},
		{
			name:        "update",
			step:        testenv.NodeExecute("UPDATE node_items SET name = ? WHERE id = ?", "uno", 1),
			wantUpdated: 1,
		},
		{
			name:     "updated row",
			step:     testenv.NodeExecute("SELECT name FROM node_items WHERE id = 1"),
			wantRows: [][]string{{"uno"}},
		},
		{
			name:         "syntax error",
			step:         testenv.NodeExecute("SELEC 1"),
			wantCode:     "001003",
			wantSQLState: "42000",
		},
		{
			name:         "missing table",
			step:         testenv.NodeExecute("SELECT * FROM node_no_such_table"),
			wantCode:     "002003",
			wantSQLState: "42S02",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := nodeRun(t, inst, testenv.NodeConnect(nodeConn(inst)), tc.step, testenv.NodeDestroy())
			nodeOK(t, res[0])
			r := res[1]
			if tc.wantCode != "" {
				if r.OK || r.Error == nil {
					t.Fatalf("statement succeeded, want error %s: %+v", tc.wantCode, r)
				}
				if r.Error.Code != tc.wantCode || r.Error.SQLState != tc.wantSQLState {
					t.Errorf("error %v, want code %s sqlState %s", r.Error, tc.wantCode, tc.wantSQLState)
				}
				var data struct {
					QueryID string `json:"queryId"`
				}
				if err := json.Unmarshal(r.Error.Data, &data); err != nil || data.QueryID == "" {
					t.Errorf("error data %s carries no queryId", r.Error.Data)
				}
				return
			}
			nodeOK(t, r)
			if tc.wantRows != nil {
				if got := nodeCells(r.Rows); !sameNodeCells(got, tc.wantRows) {
					t.Errorf("rows %v, want %v", got, tc.wantRows)
				}
			}
			if tc.wantUpdated > 0 && (r.NumUpdatedRows == nil || *r.NumUpdatedRows != tc.wantUpdated) {
				t.Errorf("numUpdatedRows %v, want %d", r.NumUpdatedRows, tc.wantUpdated)
			}
		})
	}
}

// TestNodeSessionRenewal expires the session between two statements of one
// driver connection: the driver must renew with its master token and resend.
func TestNodeSessionRenewal(t *testing.T) {
	for _, tc := range []struct {
		name      string
		expire    func(*emulator.Faults)
		wantOK    bool
		wantCode  string
		wantRenew bool
	}{
		{name: "session token expired", expire: (*emulator.Faults).ExpireSessions, wantOK: true, wantRenew: true},
		// With the master token gone too, renewal fails and the driver
		// reports the dead session instead of hanging.
		{name: "master token expired", expire: (*emulator.Faults).ExpireMasters, wantOK: false, wantRenew: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := start(t, nil)
			s, err := nodeClient(t, inst).Start(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			do := func(step testenv.NodeStep) testenv.NodeResult {
				t.Helper()
				r, err := s.Do(step)
				if err != nil {
					t.Fatalf("node client: %v", err)
				}
				return r
			}
			nodeOK(t, do(testenv.NodeConnect(nodeConn(inst))), do(testenv.NodeExecute("SELECT 1")))
			renewsBefore := inst.Server.Faults().Hits(emulator.EndpointToken)

			tc.expire(inst.Server.Faults())
			r := do(testenv.NodeExecute("SELECT 2 AS two"))

			renews := inst.Server.Faults().Hits(emulator.EndpointToken) - renewsBefore
			t.Logf("statement after the expiry: %d ms, %d token-requests", r.MS, renews)
			if tc.wantRenew && renews < 1 {
				t.Errorf("the driver sent no token-request after the expiry")
			}
			if tc.wantOK {
				nodeOK(t, r)
				if got := nodeCells(r.Rows); !sameNodeCells(got, [][]string{{"2"}}) {
					t.Errorf("rows after renewal %v, want [[2]]", got)
				}
				// The renewed session keeps working.
				nodeOK(t, do(testenv.NodeExecute("SELECT 3")))
			} else if r.OK {
				t.Errorf("statement succeeded although the master token expired: %+v", r)
			} else {
				t.Logf("after master expiry: %v", r.Error)
			}
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
	}
}

// TestNodeExecutionModes covers multi-statement, asynchronous execution
// with a later fetch by query id, and cancellation of a running statement.
func TestNodeExecutionModes(t *testing.T) {
	inst := start(t, nil)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, do func(testenv.NodeStep) testenv.NodeResult)
	}{
		{
			name: "multi-statement",
			run: func(t *testing.T, do func(testenv.NodeStep) testenv.NodeResult) {
				step := testenv.NodeExecute("SELECT 1 AS a; SELECT 'two' AS b")
				step.Parameters = map[string]any{"MULTI_STATEMENT_COUNT": 2}
				r := do(step)
				nodeOK(t, r)
				if len(r.Results) != 2 {
					t.Fatalf("got %d child results, want 2: %+v", len(r.Results), r)
				}
				for i, want := range [][][]string{{{"1"}}, {{"two"}}} {
					if got := nodeCells(r.Results[i].Rows); !sameNodeCells(got, want) {
						t.Errorf("child %d rows %v, want %v", i, got, want)
					}
				}
				if r.Results[0].QueryID == r.Results[1].QueryID {
					t.Errorf("both children have query id %s", r.Results[0].QueryID)
				}
			},
		},
		{
			name: "async, then fetch by query id",
			run: func(t *testing.T, do func(testenv.NodeStep) testenv.NodeResult) {
				step := testenv.NodeExecute("SELECT 40 + 2 AS answer")
				step.AsyncExec = true
				r := do(step)
				nodeOK(t, r)
				if r.QueryID == "" {
					t.Fatalf("async execution returned no query id: %+v", r)
				}
				f := do(testenv.NodeFetchResult(r.QueryID))
				nodeOK(t, f)
				if got := nodeCells(f.Rows); !sameNodeCells(got, [][]string{{"42"}}) {
					t.Errorf("fetched rows %v, want [[42]]", got)
				}
			},
		},
		{
			name: "cancel a running statement",
			run: func(t *testing.T, do func(testenv.NodeStep) testenv.NodeResult) {
				step := testenv.NodeExecute("SELECT SYSTEM$WAIT(120)")
				step.CancelAfterMS = 1500
				r := do(step)
				if r.OK {
					t.Fatalf("cancelled statement succeeded: %+v", r)
				}
				if r.Error.Code != "000604" || r.Error.SQLState != "57014" {
					t.Errorf("cancelled statement error %v, want 000604 (57014)", r.Error)
				}
				if r.Cancel == nil || !r.Cancel.OK {
					t.Errorf("statement.cancel() outcome %+v, want ok", r.Cancel)
				}
				waitFor(t, "the emulator to stop the statement", func() bool { return inst.Server.Running() == 0 })
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := nodeClient(t, inst).Start(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			do := func(step testenv.NodeStep) testenv.NodeResult {
				t.Helper()
				r, err := s.Do(step)
				if err != nil {
					t.Fatalf("node client: %v", err)
				}
				return r
			}
			nodeOK(t, do(testenv.NodeConnect(nodeConn(inst))))
			tc.run(t, do)
			nodeOK(t, do(testenv.NodeDestroy()))
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
	}
}

// TestNodeTransports runs the same session over TLS and over plain HTTP
// (accessUrl http://…), the two ways tests and the demo reach the emulator.
func TestNodeTransports(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []emulatortest.Option
	}{
		{name: "tls"},
		{name: "plain http", opts: []emulatortest.Option{emulatortest.PlainHTTP()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := start(t, nil, tc.opts...)
			if strings.HasPrefix(inst.URL, "https://") != (tc.opts == nil) {
				t.Fatalf("instance URL %s", inst.URL)
			}
			exec := testenv.NodeExecute("SELECT seq4() AS n FROM TABLE(GENERATOR(ROWCOUNT => 50000))")
			exec.Output, exec.FetchAsString = "digest", testenv.NodeFetchAllAsString
			res := nodeRun(t, inst, testenv.NodeConnect(nodeConn(inst)), exec, testenv.NodeDestroy())
			nodeOK(t, res...)
			want := testenv.NewNodeRowsDigest()
			for n := 0; n < 50000; n++ {
				v := strconv.Itoa(n)
				want.Add(&v)
			}
			if d := res[1].Digest; d.Count != 50000 || d.SHA256 != want.Sum() {
				t.Errorf("digest %+v, want 50000 rows with sha256 %s", d, want.Sum())
			}
			if n := inst.Server.Sessions(); n != 0 {
				t.Errorf("%d sessions left after destroy", n)
			}
		})
	}
}

// TestNodeFaults injects transient failures the driver must ride out: 503s
// and a lost reply on query-request (retried with the same requestId, so the
// statement runs once) and a failed chunk download.
func TestNodeFaults(t *testing.T) {
	const rows = 60000
	for _, tc := range []struct {
		name  string
		fault emulator.Fault
		sql   string
	}{
		{name: "query-request 503", fault: emulator.Fault{Endpoint: emulator.EndpointQuery, Status: 503, Count: 2},
			sql: "SELECT 'after 503' AS s"},
		{name: "query-request reply lost", fault: emulator.Fault{Endpoint: emulator.EndpointQuery, Reset: true, After: true, Count: 1},
			sql: "SELECT 'after reset' AS s"},
		{name: "chunk 503", fault: emulator.Fault{Endpoint: emulator.EndpointChunk, Status: 503, Count: 1},
			sql: fmt.Sprintf("SELECT seq4() AS n, randstr(8, seq4()) AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", rows)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := start(t, nil)
			s, err := nodeClient(t, inst).Start(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			r, err := s.Do(testenv.NodeConnect(nodeConn(inst)))
			if err != nil {
				t.Fatalf("node client: %v", err)
			}
			nodeOK(t, r)
			hitsBefore := inst.Server.Faults().Hits(tc.fault.Endpoint)
			inst.Server.Faults().Add(tc.fault)

			exec := testenv.NodeExecute(tc.sql)
			exec.Output, exec.Keep, exec.FetchAsString = "digest", 1, testenv.NodeFetchAllAsString
			r, err = s.Do(exec)
			if err != nil {
				t.Fatalf("node client: %v", err)
			}
			nodeOK(t, r)
			if hits := inst.Server.Faults().Hits(tc.fault.Endpoint) - hitsBefore; hits < int64(tc.fault.Count)+1 {
				t.Errorf("%d requests to %s, want the failed ones and a retry", hits, tc.fault.Endpoint)
			}
			if tc.fault.Endpoint == emulator.EndpointChunk {
				want := testenv.NewNodeRowsDigest()
				for n := int64(0); n < rows; n++ {
					num, str := strconv.FormatInt(n, 10), emulatorRandstr(8, n)
					want.Add(&num, &str)
				}
				if r.Digest.Count != rows || r.Digest.SHA256 != want.Sum() {
					t.Errorf("digest after a chunk retry %+v, want %d rows with sha256 %s", r.Digest, rows, want.Sum())
				}
			} else if got := nodeCells(r.Digest.First); len(got) != 1 || !strings.HasPrefix(got[0][0], "after") {
				t.Errorf("rows %v", got)
			}
			var runs int
			for _, e := range inst.Server.QueryLog() {
				if e.SQL == tc.sql {
					runs++
				}
			}
			if runs != 1 {
				t.Errorf("the emulator executed the statement %d times, want once (retries keep the requestId)", runs)
			}
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
	}
}
