package sqlengine

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"SELECT 1", []string{"SELECT 1"}},
		{"SELECT 1; SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"  ;; ;SELECT 1;;", []string{"SELECT 1"}},
		{"SELECT 'a;b'; SELECT 2", []string{"SELECT 'a;b'", "SELECT 2"}},
		{"SELECT 'it''s;'; SELECT 2", []string{"SELECT 'it''s;'", "SELECT 2"}},
		{`SELECT 'back\';slash'; SELECT 2`, []string{`SELECT 'back\';slash'`, "SELECT 2"}},
		{`SELECT "a;b" FROM t; SELECT 2`, []string{`SELECT "a;b" FROM t`, "SELECT 2"}},
		{"SELECT 1 -- comment; not a split\n; SELECT 2", []string{"SELECT 1 -- comment; not a split", "SELECT 2"}},
		{"SELECT /* ; */ 1; SELECT 2", []string{"SELECT /* ; */ 1", "SELECT 2"}},
		{"CREATE FUNCTION f() RETURNS INT AS $$ SELECT 1; $$; SELECT 2", []string{"CREATE FUNCTION f() RETURNS INT AS $$ SELECT 1; $$", "SELECT 2"}},
		{"-- just a comment", nil},
		{"/* c */ ; -- x\n ;", nil},
		{"", nil},
		{"SELECT 'unterminated; SELECT 2", []string{"SELECT 'unterminated; SELECT 2"}},
	}
	for _, tc := range tests {
		got := SplitStatements(tc.in)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitStatements(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestIsFileTransfer(t *testing.T) {
	tests := []struct {
		in   string
		kind string
		ok   bool
	}{
		{"PUT file:///tmp/x @~", "PUT", true},
		{"  put file:///tmp/x @%t", "PUT", true},
		{"-- upload\n/* c */ GET @~/x file:///tmp", "GET", true},
		{"SELECT 'PUT'", "", false},
		{"PUTS", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		kind, ok := IsFileTransfer(tc.in)
		if kind != tc.kind || ok != tc.ok {
			t.Errorf("IsFileTransfer(%q) = %q, %v; want %q, %v", tc.in, kind, ok, tc.kind, tc.ok)
		}
	}
}

func FuzzSplitStatements(f *testing.F) {
	for _, s := range []string{"SELECT 1; SELECT 2", "SELECT 'a;b'", `"x;"`, "$$;$$;", "/* ; */", "-- ;\n;", "'\\'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		parts := SplitStatements(s)
		for _, p := range parts {
			if strings.TrimSpace(p) != p || p == "" {
				t.Fatalf("statement %q not trimmed or empty", p)
			}
			if !strings.Contains(s, p) {
				t.Fatalf("statement %q is not part of the input", p)
			}
		}
		IsFileTransfer(s)
	})
}

// FuzzExecute feeds arbitrary text to the engine: every outcome must be a
// result or an error, never a panic (Execute reports a recovered panic as
// an internal error, which fails this target).
func FuzzExecute(f *testing.F) {
	e, err := Open(Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { e.Close() })
	s := &Session{}
	if _, err := e.Execute(context.Background(), s, "CREATE TABLE f (a INT, b STRING)", nil); err != nil {
		f.Fatal(err)
	}
	seeds := []string{
		"SELECT 1", "SELECT a, b FROM f WHERE a > ?", "INSERT INTO f VALUES (1, 'x')", "SELECT seq4() FROM TABLE(GENERATOR(ROWCOUNT => 3))",
		"SELECT 1::int::varchar", "SELECT CAST(1 AS", "SELECT a / b FROM f", "MERGE INTO f USING f s ON f.a = s.a WHEN MATCHED THEN DELETE",
		"CREATE TABLE x (a NUMBER(10,2) DEFAULT 1)", "ALTER SESSION SET a = 1", "USE x", "SELECT $$", "SELECT :1", "select )",
		"SELECT * FROM TABLE(", "SELECT uniform(1, 10, random())", "SELECT x::", "update f set", "WITH a AS (SELECT 1) SELECT * FROM a",
		"SHOW TABLES", "DESC TABLE f", "select 1 from f, (select 2) x join f y on 1=1",
		"SELECT * FROM f QUALIFY row_number() OVER (PARTITION BY a ORDER BY b) = 1", "SELECT a, count(*) FROM f GROUP BY ALL",
		"SELECT v.value FROM f, LATERAL FLATTEN(input => parse_json(b)) v", "SELECT b:x.y[0]::int FROM f", "SELECT * FROM f WHERE b NOT ILIKE 'x%'",
		"SELECT TOP 3 a FROM f", "DELETE FROM f USING f g WHERE f.a = g.a", "SELECT * FROM information_schema.columns", "SHOW COLUMNS IN TABLE f",
		"SELECT listagg(b, ',') WITHIN GROUP (ORDER BY b) FROM f", "SELECT extract(year FROM current_date)",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if strings.Contains(strings.ToUpper(sql), "WAIT") || strings.Contains(strings.ToUpper(sql), "GENERATOR") && len(sql) > 60 {
			return // keep each input fast
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		binds := map[string]Binding{"1": {Type: "FIXED", Value: sp("1")}}
		res, err := e.Execute(ctx, &Session{}, sql, binds)
		if err != nil {
			if strings.Contains(err.Error(), "internal error executing statement") {
				t.Fatalf("panic on %q: %v", sql, err)
			}
			var se *Error
			_ = errors.As(err, &se)
			return
		}
		n := 0
		for res.Rows.Next() && n < 1000 {
			n++
		}
		res.Rows.Close()
	})
}
