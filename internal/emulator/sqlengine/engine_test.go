package sqlengine

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
)

func openEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := Open(Options{})
	if err != nil {
		t.Fatalf("open engine: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close engine: %v", err)
		}
	})
	return e
}

// run executes one statement and drains its rows.
func run(t testing.TB, e *Engine, s *Session, sql string, binds map[string]Binding) (*Result, [][]any, error) {
	t.Helper()
	res, err := e.Execute(context.Background(), s, sql, binds)
	if err != nil {
		return nil, nil, err
	}
	defer res.Rows.Close()
	var rows [][]any
	for res.Rows.Next() {
		v := res.Rows.Values()
		rows = append(rows, append([]any(nil), v...))
	}
	return res, rows, res.Rows.Err()
}

func mustRun(t testing.TB, e *Engine, s *Session, sql string) (*Result, [][]any) {
	t.Helper()
	res, rows, err := run(t, e, s, sql, nil)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return res, rows
}

func sp(s string) *string { return &s }

func TestExpressions(t *testing.T) {
	e := openEngine(t)
	s := e.NewSession("alice", "sysadmin", "wh", "", "")
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		sql   string
		names []string
		types []string
		want  []any
	}{
		{"SELECT 1", []string{"1"}, []string{"fixed"}, []any{int64(1)}},
		{"select 1.50, -7", []string{"1.50", "-7"}, []string{"fixed", "fixed"}, []any{"1.50", int64(-7)}},
		{"SELECT 'abc' AS s, TRUE t, NULL", []string{"S", "T", "NULL"}, []string{"text", "boolean", "text"}, []any{"abc", true, nil}},
		{`SELECT 'it''s', 'a\tb', $$x'y$$`, nil, []string{"text", "text", "text"}, []any{"it's", "a\tb", "x'y"}},
		{`select 1 as "lower", 2 as Upper`, []string{"lower", "UPPER"}, nil, []any{int64(1), int64(2)}},
		{"SELECT current_user(), CURRENT_ROLE(), current_warehouse(), current_database(), current_schema()",
			[]string{"CURRENT_USER()", "CURRENT_ROLE()", "CURRENT_WAREHOUSE()", "CURRENT_DATABASE()", "CURRENT_SCHEMA()"},
			[]string{"text", "text", "text", "text", "text"}, []any{"ALICE", "SYSADMIN", "WH", nil, nil}},
		{"SELECT '2024-01-02'::date, CAST('12' AS INT), 1.239::number(10,2), CAST('true' AS BOOLEAN), TO_VARCHAR(12)",
			nil, []string{"date", "fixed", "fixed", "boolean", "text"}, []any{day(2024, 1, 2), int64(12), "1.24", true, "12"}},
		{"SELECT '10:11:12'::time, '2024-01-02 03:04:05.5'::timestamp_ntz", nil, []string{"time", "timestamp_ntz"},
			[]any{10*time.Hour + 11*time.Minute + 12*time.Second, time.Date(2024, 1, 2, 3, 4, 5, 500000000, time.UTC)}},
		{"SELECT 1/2, 7/7, 2*3+1", nil, []string{"real", "real", "fixed"}, []any{0.5, 1.0, int64(7)}},
		{"SELECT iff(1 > 2, 'y', 'n'), nvl(NULL, 5), coalesce(NULL, NULL, 'z'), length('abcd'), upper('q')",
			nil, []string{"text", "fixed", "text", "fixed", "text"}, []any{"n", int64(5), "z", int64(4), "Q"}},
		{"SELECT dateadd(day, 1, '2024-01-31'::date), datediff(day, '2024-01-01'::date, '2024-03-01'::date)",
			nil, []string{"date", "fixed"}, []any{day(2024, 2, 1), int64(60)}},
		{"SELECT 'a' || 'b', 1 = 1, 2<1", []string{"'A' || 'B'", "1 = 1", "2<1"}, []string{"text", "boolean", "boolean"}, []any{"ab", true, false}},
		{"SELECT uniform(5, 5, 1), randstr(0, 1)", nil, []string{"fixed", "text"}, []any{int64(5), ""}},
		{"SELECT hex_encode('A')::varchar", nil, nil, nil},
		{"SELECT parse_json('{\"a\": 1}')", nil, []string{"variant"}, []any{`{"a": 1}`}},
		{"SELECT CASE WHEN 1 = 1 THEN 'x' ELSE 'y' END", nil, []string{"text"}, []any{"x"}},
		{"WITH c AS (SELECT 3 AS v) SELECT v * 2 AS d FROM c", []string{"D"}, []string{"fixed"}, []any{int64(6)}},
		{"SELECT TOP 1 seq4() FROM TABLE(GENERATOR(ROWCOUNT => 5))", nil, []string{"fixed"}, []any{int64(0)}},
		{`SELECT v:a.b[1]::int, v:a.b, v:"a"."b"[0] FROM (SELECT parse_json('{"a": {"b": [10, 20]}}') AS v)`, nil, []string{"fixed", "variant", "variant"}, []any{int64(20), "[10,20]", "10"}},
		{"SELECT date_trunc('month', '2024-05-17'::date), year('2024-05-17'::date), extract(day FROM '2024-05-17 10:00:00'::timestamp_ntz), date_part(quarter, '2024-05-17'::date)",
			nil, []string{"date", "fixed", "fixed", "fixed"}, []any{day(2024, 5, 1), int64(2024), int64(17), int64(2)}},
		{"SELECT contains('abc', 'b'), startswith('abc', 'a'), endswith('abc', 'x'), split_part('a,b,c', ',', 2), lpad('7', 3, '0'), left('abcdef', 2), right('abcdef', 2)",
			nil, []string{"boolean", "boolean", "boolean", "text", "text", "text", "text"}, []any{true, true, false, "b", "007", "ab", "ef"}},
		{"SELECT try_cast('x' AS INT), try_to_number('5'), greatest(1, 3, 2), least(1, 3, 2), zeroifnull(NULL), decode(2, 1, 'one', 2, 'two', 'other')",
			nil, []string{"fixed", "fixed", "fixed", "fixed", "fixed", "text"}, []any{nil, int64(5), int64(3), int64(1), int64(0), "two"}},
		{"SELECT regexp_like('abc', 'a.c'), regexp_replace('a1b22', '[0-9]+', '#'), regexp_substr('x42y', '[0-9]+'), trunc(2.789, 1)",
			nil, []string{"boolean", "text", "text", "real"}, []any{true, "a#b#", "42", 2.7}},
		{"SELECT listagg(v, '|') WITHIN GROUP (ORDER BY v DESC), median(v), stddev(v) FROM (SELECT 1 AS v UNION ALL SELECT 2 UNION ALL SELECT 3)",
			nil, []string{"text", "real", "real"}, []any{"3|2|1", 2.0, 1.0}},
		{"SELECT f.index, f.value FROM (SELECT parse_json('[5, 6]') AS v) t, LATERAL FLATTEN(input => t.v) f WHERE f.index = 1",
			[]string{"INDEX", "VALUE"}, nil, []any{int64(1), int64(6)}},
		{"SELECT count(*) FROM TABLE(FLATTEN(input => parse_json('{\"a\": 1, \"b\": 2}')))", nil, []string{"fixed"}, []any{int64(2)}},
		{"SELECT g, sum(v) AS s FROM (SELECT 'a' AS g, 1 AS v UNION ALL SELECT 'a', 2 UNION ALL SELECT 'b', 5) GROUP BY ALL ORDER BY g LIMIT 1",
			[]string{"G", "S"}, nil, []any{"a", int64(3)}},
		{"SELECT seq4() AS n, seq4() % 3 AS k FROM TABLE(GENERATOR(ROWCOUNT => 9)) QUALIFY row_number() OVER (PARTITION BY k ORDER BY n DESC) = 1 ORDER BY n LIMIT 1",
			[]string{"N", "K"}, []string{"fixed", "fixed"}, []any{int64(6), int64(0)}},
		{"SELECT * FROM (SELECT 1 AS id, 10 AS ts UNION ALL SELECT 1, 20 UNION ALL SELECT 2, 5) t QUALIFY row_number() OVER (PARTITION BY t.id ORDER BY t.ts DESC) = 1 ORDER BY id LIMIT 1",
			[]string{"ID", "TS"}, nil, []any{int64(1), int64(20)}},
		{"SELECT 'Abc' LIKE 'a%', 'Abc' ILIKE 'a%', 'Abc' NOT ILIKE 'A%', 'abc' LIKE 'a_c'", nil, []string{"boolean", "boolean", "boolean", "boolean"}, []any{false, true, false, true}},
		{"SELECT square(3), equal_null(NULL, NULL), nvl2(NULL, 'a', 'b'), div0(1, 0)", nil, []string{"fixed", "boolean", "text", "fixed"}, []any{int64(9), true, "b", int64(0)}},
		{"SELECT * FROM (SELECT 1 AS a, 'x' AS b) sub", []string{"A", "B"}, []string{"fixed", "text"}, []any{int64(1), "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.sql, func(t *testing.T) {
			res, rows, err := run(t, e, s, tc.sql, nil)
			if tc.want == nil {
				// Only require a Snowflake-shaped outcome.
				var se *Error
				if err != nil && !errors.As(err, &se) {
					t.Fatalf("non-Snowflake error: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.StatementTypeID != snowflake.StatementSelect {
				t.Errorf("statementTypeId %#x", res.StatementTypeID)
			}
			if len(rows) != 1 {
				t.Fatalf("rows %v", rows)
			}
			for i, c := range res.Columns {
				if tc.names != nil && c.Name != tc.names[i] {
					t.Errorf("column %d name %q, want %q", i, c.Name, tc.names[i])
				}
				if tc.types != nil && c.Type != tc.types[i] {
					t.Errorf("column %d type %q, want %q", i, c.Type, tc.types[i])
				}
			}
			if !reflect.DeepEqual(rows[0], tc.want) {
				t.Errorf("row %#v, want %#v", rows[0], tc.want)
			}
		})
	}
}

func TestCurrentTimestamp(t *testing.T) {
	e := openEngine(t)
	res, rows := mustRun(t, e, &Session{}, "SELECT CURRENT_TIMESTAMP(), current_date, sysdate()")
	if got := []string{res.Columns[0].Type, res.Columns[1].Type, res.Columns[2].Type}; !reflect.DeepEqual(got, []string{"timestamp_ltz", "date", "timestamp_ntz"}) {
		t.Fatalf("types %v", got)
	}
	ts := rows[0][0].(time.Time)
	if d := time.Since(ts); d < -time.Minute || d > time.Minute {
		t.Errorf("CURRENT_TIMESTAMP %v is not now", ts)
	}
	if d := rows[0][1].(time.Time); d.Format("2006-01-02") != time.Now().UTC().Format("2006-01-02") {
		t.Errorf("CURRENT_DATE %v", d)
	}
}

func TestGenerator(t *testing.T) {
	e := openEngine(t)
	s := &Session{}
	res, rows := mustRun(t, e, s, "SELECT seq4() AS n, seq8(), uniform(1, 10, 42) u, uniform(1, 10, random()) r, randstr(10, seq4()) s, randstr(8, random()) FROM TABLE(GENERATOR(ROWCOUNT => 50))")
	if len(rows) != 50 {
		t.Fatalf("%d rows", len(rows))
	}
	if res.Columns[0].Name != "N" || res.Columns[0].Type != "fixed" || res.Columns[4].Type != "text" {
		t.Fatalf("columns %+v", res.Columns)
	}
	distinctRandom := map[string]bool{}
	for i, r := range rows {
		if r[0] != int64(i) || r[1] != int64(i) {
			t.Fatalf("row %d seq %v %v", i, r[0], r[1])
		}
		if r[2] != rows[0][2] {
			t.Errorf("uniform with a constant seed varies: %v vs %v", r[2], rows[0][2])
		}
		if u := r[3].(int64); u < 1 || u > 10 {
			t.Errorf("uniform out of range: %d", u)
		}
		if len(r[4].(string)) != 10 {
			t.Errorf("randstr length %q", r[4])
		}
		distinctRandom[r[5].(string)] = true
	}
	if len(distinctRandom) < 45 {
		t.Errorf("randstr(8, random()) gave only %d distinct values in 50 rows", len(distinctRandom))
	}
	// Same generator value, same string, across statements.
	_, again := mustRun(t, e, s, "SELECT randstr(10, seq4()) FROM TABLE(GENERATOR(ROWCOUNT => 50))")
	for i := range again {
		if again[i][0] != rows[i][4] {
			t.Fatalf("randstr(10, seq4()) not deterministic at %d: %v vs %v", i, again[i][0], rows[i][4])
		}
	}
	_, empty := mustRun(t, e, s, "SELECT seq4() FROM TABLE(GENERATOR(ROWCOUNT => 0))")
	if len(empty) != 0 {
		t.Errorf("ROWCOUNT => 0 gave %d rows", len(empty))
	}
	_, agg := mustRun(t, e, s, "SELECT count(*), sum(seq4()) FROM TABLE(GENERATOR(ROWCOUNT => 1000)) g")
	if agg[0][0] != int64(1000) || agg[0][1] != int64(499500) {
		t.Errorf("aggregate %v", agg[0])
	}
}

// TestGeneratorStreams reads a million generated rows and checks the heap
// does not grow with the row count.
func TestGeneratorStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	e := openEngine(t)
	res, err := e.Execute(context.Background(), &Session{}, "SELECT seq4(), randstr(8, seq4()) FROM TABLE(GENERATOR(ROWCOUNT => 1000000))", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Rows.Close()
	var n int64
	var peak uint64
	for res.Rows.Next() {
		n++
		if n%100000 == 0 {
			var ms runtimeMem
			ms.read()
			if ms.heap > peak {
				peak = ms.heap
			}
		}
	}
	if err := res.Rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 1000000 {
		t.Fatalf("%d rows", n)
	}
	if peak > 200<<20 {
		t.Errorf("heap reached %d MB while streaming", peak>>20)
	}
}

func TestDDLAndDML(t *testing.T) {
	e := openEngine(t)
	s := e.NewSession("u", "r", "w", "", "")
	steps := []struct {
		sql    string
		typeID int64
		cols   []string
		want   []any
	}{
		{"CREATE TABLE t1 (id INT NOT NULL, name VARCHAR(20), amount NUMBER(10,2), ts TIMESTAMP_NTZ, d DATE, ok BOOLEAN, f FLOAT, b BINARY, v VARIANT, tm TIME)",
			snowflake.StatementDDL, []string{"status"}, []any{"Table T1 successfully created."}},
		{"CREATE TABLE IF NOT EXISTS t1 (id INT)", snowflake.StatementDDL, nil, []any{"T1 already exists, statement succeeded."}},
		{"INSERT INTO t1 (id, name, amount, ts, d, ok, f, b, v, tm) VALUES (1, 'a', 1.5, '2024-01-02 03:04:05', '2024-01-02', true, 0.25, to_binary('CAFE'), parse_json('[1,2]'), '01:02:03'), (2, 'b', NULL, NULL, NULL, false, NULL, NULL, NULL, NULL)",
			snowflake.StatementInsert, []string{"number of rows inserted"}, []any{int64(2)}},
		{"INSERT INTO t1 (id, name) SELECT id + 10, name || 'x' FROM t1", snowflake.StatementInsert, nil, []any{int64(2)}},
		{"UPDATE t1 SET name = 'z' WHERE id > 10", snowflake.StatementUpdate, []string{"number of rows updated", "number of multi-joined rows updated"}, []any{int64(2), int64(0)}},
		{"DELETE FROM t1 WHERE id = 12", snowflake.StatementDelete, []string{"number of rows deleted"}, []any{int64(1)}},
		{"SELECT count(*) FROM t1", snowflake.StatementSelect, []string{"COUNT(*)"}, []any{int64(3)}},
		{"CREATE OR REPLACE TABLE src (id INT, name STRING)", snowflake.StatementDDL, nil, []any{"Table SRC successfully created."}},
		{"INSERT INTO src VALUES (1, 'merged'), (99, 'new')", snowflake.StatementInsert, nil, []any{int64(2)}},
		{"MERGE INTO t1 USING src s ON t1.id = s.id WHEN MATCHED THEN UPDATE SET name = s.name WHEN NOT MATCHED THEN INSERT (id, name) VALUES (s.id, s.name)",
			snowflake.StatementMerge, []string{"number of rows inserted", "number of rows updated"}, []any{int64(1), int64(1)}},
		{"SELECT name FROM t1 WHERE id IN (1, 99) ORDER BY id", snowflake.StatementSelect, []string{"NAME"}, []any{"merged"}},
		{"DELETE FROM t1 USING src WHERE t1.id = src.id AND src.name = 'new'", snowflake.StatementDelete, nil, []any{int64(1)}},
		{"SELECT count(*) FROM t1", snowflake.StatementSelect, nil, []any{int64(3)}},
		{"INSERT INTO t1 (id, name) VALUES (99, 'new')", snowflake.StatementInsert, nil, []any{int64(1)}},
		{"TRUNCATE TABLE src", snowflake.StatementDDL, nil, []any{"Statement executed successfully."}},
		{"DROP TABLE src", snowflake.StatementDDL, nil, []any{"SRC successfully dropped."}},
		{"DROP TABLE IF EXISTS src", snowflake.StatementDDL, nil, []any{"Drop statement executed successfully (SRC already dropped)."}},
		{"CREATE TABLE t2 AS SELECT id, name FROM t1 WHERE id < 3", snowflake.StatementDDL, nil, []any{"Table T2 successfully created."}},
		{"SELECT count(*) FROM t2", snowflake.StatementSelect, nil, []any{int64(2)}},
		{"CREATE VIEW v1 AS SELECT id FROM t1", snowflake.StatementDDL, nil, []any{"View V1 successfully created."}},
		{"SELECT max(id) FROM v1", snowflake.StatementSelect, nil, []any{int64(99)}},
		{"ALTER TABLE t2 ADD COLUMN extra NUMBER(5,1)", snowflake.StatementDDL, nil, []any{"Statement executed successfully."}},
		{"CREATE TABLE ids (id INT AUTOINCREMENT START 10 INCREMENT 5, v STRING)", snowflake.StatementDDL, nil, []any{"Table IDS successfully created."}},
		{"INSERT INTO ids (v) VALUES ('a'), ('b')", snowflake.StatementInsert, nil, []any{int64(2)}},
		{"SELECT listagg(id, ',') FROM (SELECT id FROM ids ORDER BY id)", snowflake.StatementSelect, nil, []any{"10,15"}},
		{"BEGIN", StatementTransaction, nil, []any{"Statement executed successfully."}},
		{"COMMIT", StatementTransaction, nil, []any{"Statement executed successfully."}},
	}
	for _, st := range steps {
		res, rows, err := run(t, e, s, st.sql, nil)
		if err != nil {
			t.Fatalf("%s: %v", st.sql, err)
		}
		if res.StatementTypeID != st.typeID {
			t.Errorf("%s: statementTypeId %#x, want %#x", st.sql, res.StatementTypeID, st.typeID)
		}
		for i, c := range st.cols {
			if res.Columns[i].Name != c {
				t.Errorf("%s: column %d %q, want %q", st.sql, i, res.Columns[i].Name, c)
			}
		}
		if len(rows) == 0 || !reflect.DeepEqual(rows[0], st.want) {
			t.Errorf("%s: rows %#v, want first %#v", st.sql, rows, st.want)
		}
		if st.typeID >= 0x3000 && st.typeID < 0x4000 {
			var sum int64
			for _, v := range st.want {
				sum += v.(int64)
			}
			if res.RowsAffected != sum {
				t.Errorf("%s: RowsAffected %d, want %d", st.sql, res.RowsAffected, sum)
			}
		}
	}
	// Declared types come back as Snowflake types.
	res, rows := mustRun(t, e, s, "SELECT * FROM t1 WHERE id = 1")
	wantCols := []Column{
		{Name: "ID", Type: "fixed", Precision: 38, Nullable: true},
		{Name: "NAME", Type: "text", Length: 20, ByteLength: 80, Nullable: true},
		{Name: "AMOUNT", Type: "fixed", Precision: 10, Scale: 2, Nullable: true},
		{Name: "TS", Type: "timestamp_ntz", Scale: 9, Nullable: true},
		{Name: "D", Type: "date", Nullable: true},
		{Name: "OK", Type: "boolean", Nullable: true},
		{Name: "F", Type: "real", Nullable: true},
		{Name: "B", Type: "binary", Length: 8388608, ByteLength: 8388608, Nullable: true},
		{Name: "V", Type: "variant", Nullable: true},
		{Name: "TM", Type: "time", Scale: 9, Nullable: true},
	}
	if !reflect.DeepEqual(res.Columns, wantCols) {
		t.Errorf("columns\n%+v\nwant\n%+v", res.Columns, wantCols)
	}
	wantRow := []any{int64(1), "merged", "1.50", time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
		true, 0.25, []byte{0xca, 0xfe}, "[1,2]", time.Hour + 2*time.Minute + 3*time.Second}
	if !reflect.DeepEqual(rows[0], wantRow) {
		t.Errorf("row\n%#v\nwant\n%#v", rows[0], wantRow)
	}
}

func TestDatabasesAndSchemas(t *testing.T) {
	e := openEngine(t)
	s := e.NewSession("u", "r", "w", "", "")
	mustRun(t, e, s, "CREATE DATABASE analytics")
	if s.Database != "ANALYTICS" || s.Schema != "PUBLIC" {
		t.Fatalf("after CREATE DATABASE: %s.%s", s.Database, s.Schema)
	}
	mustRun(t, e, s, "CREATE SCHEMA raw")
	if s.Schema != "RAW" {
		t.Fatalf("after CREATE SCHEMA: %s", s.Schema)
	}
	mustRun(t, e, s, `CREATE TABLE events (id INT)`)
	mustRun(t, e, s, `CREATE TABLE "MixedCase" ("lower" INT)`)
	mustRun(t, e, s, "INSERT INTO events VALUES (1), (2)")
	mustRun(t, e, s, `INSERT INTO "MixedCase" VALUES (7)`)

	// Another session, elsewhere, sees the tables by qualified name.
	other := e.NewSession("v", "r", "w", "", "")
	_, rows := mustRun(t, e, other, "SELECT count(*) FROM analytics.raw.events")
	if rows[0][0] != int64(2) {
		t.Fatalf("qualified count %v", rows[0][0])
	}
	res, rows := mustRun(t, e, other, `SELECT * FROM analytics.raw."MixedCase"`)
	if res.Columns[0].Name != "lower" || rows[0][0] != int64(7) {
		t.Fatalf("quoted identifiers: %+v %v", res.Columns, rows)
	}
	if _, _, err := run(t, e, other, "SELECT * FROM events", nil); err == nil {
		t.Fatal("unqualified name resolved outside the current schema")
	}
	for _, use := range []string{"USE DATABASE analytics", "USE SCHEMA raw"} {
		res, _ := mustRun(t, e, other, use)
		if res.StatementTypeID != snowflake.StatementSession {
			t.Errorf("%s: type %#x", use, res.StatementTypeID)
		}
	}
	_, rows = mustRun(t, e, other, "SELECT count(*) FROM events")
	if rows[0][0] != int64(2) {
		t.Fatalf("after USE: %v", rows)
	}
	mustRun(t, e, other, "USE analytics.public")
	if other.Schema != "PUBLIC" {
		t.Fatalf("USE db.schema: %s", other.Schema)
	}
	mustRun(t, e, other, "USE ROLE analyst")
	mustRun(t, e, other, "USE WAREHOUSE big_wh")
	if other.Role != "ANALYST" || other.Warehouse != "BIG_WH" {
		t.Fatalf("role/warehouse %s %s", other.Role, other.Warehouse)
	}
	_, rows = mustRun(t, e, other, "SELECT current_database(), current_schema(), current_role(), current_warehouse()")
	if !reflect.DeepEqual(rows[0], []any{"ANALYTICS", "PUBLIC", "ANALYST", "BIG_WH"}) {
		t.Fatalf("current_*: %v", rows[0])
	}
	if _, _, err := run(t, e, other, "USE DATABASE nosuch", nil); err == nil {
		t.Fatal("USE of a missing database succeeded")
	}
	// A database named at login exists from then on.
	e.NewSession("w", "", "", "logindb", "work")
	mustRun(t, e, other, "USE SCHEMA logindb.work")
	_, rows = mustRun(t, e, s, "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'RAW' ORDER BY table_name")
	if !reflect.DeepEqual(rows, [][]any{{"EVENTS", "BASE TABLE"}, {"MixedCase", "BASE TABLE"}}) {
		t.Fatalf("information_schema.tables: %v", rows)
	}
	_, rows = mustRun(t, e, s, "SELECT column_name, data_type, ordinal_position FROM analytics.information_schema.columns WHERE table_name = 'EVENTS'")
	if !reflect.DeepEqual(rows, [][]any{{"ID", "NUMBER", int64(1)}}) {
		t.Fatalf("information_schema.columns: %v", rows)
	}
	_, rows = mustRun(t, e, s, "SHOW TABLES")
	if len(rows) != 2 {
		t.Fatalf("SHOW TABLES: %v", rows)
	}
	res, rows = mustRun(t, e, s, "SHOW COLUMNS IN TABLE events")
	if len(rows) != 1 || rows[0][2] != "ID" || rows[0][3] != "NUMBER(38,0)" || res.Columns[2].Name != "column_name" {
		t.Fatalf("SHOW COLUMNS: %v", rows)
	}
	_, rows = mustRun(t, e, s, "DESCRIBE TABLE events")
	if !reflect.DeepEqual(rows, [][]any{{"ID", "NUMBER(38,0)", "COLUMN", "Y", nil, "N"}}) {
		t.Fatalf("DESCRIBE: %v", rows)
	}
	_, rows = mustRun(t, e, s, "SHOW WAREHOUSES")
	if len(rows) != 1 || rows[0][0] != "W" {
		t.Fatalf("SHOW WAREHOUSES: %v", rows)
	}
	mustRun(t, e, s, "DROP SCHEMA raw")
	if _, _, err := run(t, e, other, "SELECT * FROM analytics.raw.events", nil); err == nil {
		t.Fatal("table survived DROP SCHEMA")
	}
}

func TestAlterSession(t *testing.T) {
	e := openEngine(t)
	s := e.NewSession("u", "", "", "", "")
	res, _ := mustRun(t, e, s, "ALTER SESSION SET QUERY_TAG = 'nightly', timezone = 'UTC', ROWS_PER_RESULTSET = 10")
	if res.StatementTypeID != snowflake.StatementSession {
		t.Errorf("type %#x", res.StatementTypeID)
	}
	want := map[string]string{"QUERY_TAG": "nightly", "TIMEZONE": "UTC", "ROWS_PER_RESULTSET": "10"}
	if !reflect.DeepEqual(s.Params, want) {
		t.Fatalf("params %v", s.Params)
	}
	mustRun(t, e, s, "ALTER SESSION UNSET query_tag")
	if _, ok := s.Params["QUERY_TAG"]; ok {
		t.Fatal("UNSET kept QUERY_TAG")
	}
}

func TestBindings(t *testing.T) {
	e := openEngine(t)
	s := &Session{}
	mustRun(t, e, s, "CREATE TABLE b (i INT, s STRING, r FLOAT, ok BOOLEAN, d DATE, ts TIMESTAMP_NTZ, tm TIME, bin BINARY)")
	tsNanos := fmt.Sprint(time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC).UnixNano())
	dateMillis := fmt.Sprint(time.Date(2024, 5, 6, 0, 0, 0, 0, time.UTC).UnixMilli())
	binds := map[string]Binding{
		"1": {Type: "FIXED", Value: sp("42")}, "2": {Type: "TEXT", Value: sp("hello")}, "3": {Type: "REAL", Value: sp("2.5")},
		"4": {Type: "BOOLEAN", Value: sp("true")}, "5": {Type: "DATE", Value: sp(dateMillis)}, "6": {Type: "TIMESTAMP_NTZ", Value: sp(tsNanos)},
		"7": {Type: "TIME", Value: sp(fmt.Sprint(int64(3*time.Hour + 2*time.Second)))}, "8": {Type: "BINARY", Value: sp("0A0B")},
	}
	res, rows, err := run(t, e, s, "INSERT INTO b VALUES (?, ?, ?, ?, ?, ?, ?, ?)", binds)
	if err != nil || rows[0][0] != int64(1) || res.StatementTypeID != snowflake.StatementInsert {
		t.Fatalf("insert: %v %v", rows, err)
	}
	_, rows, err = run(t, e, s, "INSERT INTO b (i, s) VALUES (:1, :2)", map[string]Binding{"1": {Type: "FIXED", Value: nil}, "2": {Type: "TEXT", Value: sp("null-int")}})
	if err != nil || rows[0][0] != int64(1) {
		t.Fatalf("insert :1: %v %v", rows, err)
	}
	_, rows = mustRun(t, e, s, "SELECT * FROM b ORDER BY s")
	want := [][]any{
		{int64(42), "hello", 2.5, true, time.Date(2024, 5, 6, 0, 0, 0, 0, time.UTC), time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC), 3*time.Hour + 2*time.Second, []byte{10, 11}},
		{nil, "null-int", nil, nil, nil, nil, nil, nil},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Fatalf("rows\n%#v\nwant\n%#v", rows, want)
	}
	// Array binds: one execution per element.
	arr := map[string]Binding{
		"1": {Type: "FIXED", Values: []*string{sp("1"), sp("2"), nil}},
		"2": {Type: "TEXT", Values: []*string{sp("x"), sp("y"), sp("z")}},
	}
	res, rows, err = run(t, e, s, "INSERT INTO b (i, s) VALUES (?, ?)", arr)
	if err != nil || rows[0][0] != int64(3) || res.RowsAffected != 3 {
		t.Fatalf("array insert: %v %v", rows, err)
	}
	// A bind in a select list takes the bind's type.
	res, rows, err = run(t, e, s, "SELECT ?, ? WHERE 1 = 1", map[string]Binding{"1": {Type: "FIXED", Value: sp("5")}, "2": {Type: "TEXT", Value: sp("t")}})
	if err != nil || !reflect.DeepEqual(rows[0], []any{int64(5), "t"}) || res.Columns[0].Type != "fixed" || res.Columns[1].Type != "text" {
		t.Fatalf("select binds: %v %+v %v", rows, res, err)
	}
	// A missing bind is a Snowflake error.
	_, _, err = run(t, e, s, "SELECT ?", nil)
	var se *Error
	if !errors.As(err, &se) || se.Code != codeBindCount {
		t.Fatalf("missing bind: %v", err)
	}
}

func TestErrors(t *testing.T) {
	e := openEngine(t)
	s := &Session{}
	mustRun(t, e, s, "CREATE TABLE known (a INT)")
	tests := []struct {
		sql, code, state, msg string
	}{
		{"SELECT * FROM missing_table", "002003", "42S02", "SQL compilation error:\nObject 'MISSING_TABLE' does not exist or not authorized."},
		{"SELECT * FROM db1.s1.missing", "002003", "42S02", "SQL compilation error:\nObject 'DB1.S1.MISSING' does not exist or not authorized."},
		{"SELEC 1", "001003", "42000", "SQL compilation error:\nsyntax error line 1 at position 0 unexpected 'SELEC'."},
		{"SELECT 1 FROM known WHERE", "001003", "42000", ""},
		{"SELECT nope FROM known", "000904", "42000", ""},
		{"SELECT 1/0", "100051", "22012", "Division by zero"},
		{"SELECT a / 0 FROM (SELECT 5 a)", "100051", "22012", "Division by zero"},
		{"SELECT 'abc'::int", "100038", "22018", "Numeric value 'abc' is not recognized"},
		{"   ", "000900", "42000", "Empty SQL statement."},
		{"-- only a comment", "000900", "42000", "Empty SQL statement."},
		{"SELECT 'unterminated", "001003", "42000", ""},
		{"CREATE TABLE known (a INT)", "002002", "42000", "SQL compilation error:\nObject 'KNOWN' already exists."},
		{"DROP TABLE missing_table", "002003", "42S02", ""},
		{"INSERT INTO missing_table VALUES (1)", "002003", "42S02", ""},
		{"SELECT no_such_fn(1)", "002140", "42000", ""},
		{"INSERT INTO known VALUES ('not a number')", "100038", "22018", ""},
	}
	for _, tc := range tests {
		t.Run(tc.sql, func(t *testing.T) {
			_, _, err := run(t, e, s, tc.sql, nil)
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("got %v (%T), want *Error", err, err)
			}
			if se.Code != tc.code || se.SQLState != tc.state {
				t.Errorf("code %s/%s, want %s/%s (%s)", se.Code, se.SQLState, tc.code, tc.state, se.Message)
			}
			if tc.msg != "" && se.Message != tc.msg {
				t.Errorf("message %q, want %q", se.Message, tc.msg)
			}
			if tc.code == "000904" && se.Message != "SQL compilation error: error line 1 at position 7\ninvalid identifier 'NOPE'" {
				t.Errorf("message %q", se.Message)
			}
		})
	}
}

func TestSystemWait(t *testing.T) {
	e := openEngine(t)
	res, rows := mustRun(t, e, &Session{}, "SELECT SYSTEM$WAIT(10, 'MILLISECONDS')")
	if res.Columns[0].Type != "text" || rows[0][0] != "waited 10 milliseconds" {
		t.Fatalf("%+v %v", res.Columns, rows)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.Execute(ctx, &Session{}, "SELECT system$wait(60)", nil)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		var se *Error
		if !errors.As(err, &se) || se.Code != codeCancelled {
			t.Fatalf("cancelled wait: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("SYSTEM$WAIT ignored cancellation")
	}
}

func TestConcurrentSessions(t *testing.T) {
	e := openEngine(t)
	mustRun(t, e, &Session{}, "CREATE TABLE shared (worker INT, n INT)")
	const workers, inserts = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*inserts*2)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			s := e.NewSession(fmt.Sprintf("user%d", w), "", "", "", "")
			for i := 0; i < inserts; i++ {
				if _, _, err := run(t, e, s, fmt.Sprintf("INSERT INTO shared VALUES (%d, %d)", w, i), nil); err != nil {
					errs <- err
				}
				if _, _, err := run(t, e, s, "SELECT count(*), max(n) FROM shared", nil); err != nil {
					errs <- err
				}
				if i%10 == 0 {
					if _, _, err := run(t, e, s, fmt.Sprintf("CREATE OR REPLACE TABLE scratch_%d AS SELECT seq4() s FROM TABLE(GENERATOR(ROWCOUNT => 100))", w), nil); err != nil {
						errs <- err
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent statement: %v", err)
	}
	_, rows := mustRun(t, e, &Session{}, "SELECT count(*) FROM shared")
	if rows[0][0] != int64(workers*inserts) {
		t.Fatalf("count %v", rows[0][0])
	}
}

// TestFileBacked checks a file-backed database keeps tables across reopen.
func TestFileBacked(t *testing.T) {
	path := t.TempDir() + "/emu.db"
	e, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, e, &Session{}, "CREATE TABLE keep (a INT)")
	mustRun(t, e, &Session{}, "INSERT INTO keep VALUES (1)")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	_, rows := mustRun(t, e2, &Session{}, "SELECT a FROM keep")
	if len(rows) != 1 || rows[0][0] != int64(1) {
		t.Fatalf("rows %v", rows)
	}
}

// TestWritesWhileStreaming keeps a large result open (a read transaction)
// while other sessions write to the table it reads.
func TestWritesWhileStreaming(t *testing.T) {
	e := openEngine(t)
	mustRun(t, e, &Session{}, "CREATE TABLE big AS SELECT seq4() AS n FROM TABLE(GENERATOR(ROWCOUNT => 20000))")
	res, err := e.Execute(context.Background(), &Session{}, "SELECT n FROM big", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Rows.Close()
	read := 0
	for i := 0; i < 100 && res.Rows.Next(); i++ {
		read++
	}
	for i := 0; i < 20; i++ {
		if _, _, err := run(t, e, &Session{}, fmt.Sprintf("INSERT INTO big VALUES (%d)", 100000+i), nil); err != nil {
			t.Fatalf("write while a reader streams: %v", err)
		}
	}
	mustRun(t, e, &Session{}, "CREATE OR REPLACE TABLE other (a INT)")
	for res.Rows.Next() {
		read++
	}
	if err := res.Rows.Err(); err != nil {
		t.Fatal(err)
	}
	if read != 20000 {
		t.Fatalf("the open result saw %d rows, want its snapshot of 20000", read)
	}
	_, rows := mustRun(t, e, &Session{}, "SELECT count(*) FROM big")
	if rows[0][0] != int64(20020) {
		t.Fatalf("count %v", rows[0][0])
	}
}
