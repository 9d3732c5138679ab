package policy

import (
	"strings"
	"testing"
)

func TestObjects(t *testing.T) {
	ns := Namespace{Database: "ANALYTICS", Schema: "PUBLIC"}
	tests := []struct {
		sql  string
		want []string // "NAME access"
	}{
		{"SELECT a FROM analytics.public.orders o JOIN users u ON o.id = u.id, x.y AS z WHERE 1 = 1",
			[]string{"ANALYTICS.PUBLIC.ORDERS read", "ANALYTICS.PUBLIC.USERS read", "ANALYTICS.X.Y read"}},
		{`WITH a AS (SELECT * FROM src) INSERT INTO "Db".s."t" SELECT * FROM a`,
			[]string{"Db.S.t dml", "ANALYTICS.PUBLIC.SRC read"}},
		{"DELETE FROM t USING u WHERE t.id = u.id", []string{"ANALYTICS.PUBLIC.T dml", "ANALYTICS.PUBLIC.U read"}},
		{"CREATE OR REPLACE TABLE a..c CLONE d.e.f", []string{"A.PUBLIC.C ddl", "D.E.F read"}},
		{"SELECT EXTRACT(YEAR FROM d) FROM t, LATERAL FLATTEN(input => t.v) f", []string{"ANALYTICS.PUBLIC.T read"}},
		{"COPY INTO t FROM @st", []string{"ANALYTICS.PUBLIC.T dml"}},
		{"DROP SCHEMA a.b", []string{"A.B ddl"}},
		{"CREATE DATABASE scratch", []string{"SCRATCH ddl"}},
		{"SELECT * FROM IDENTIFIER($t)", []string{"<dynamic> read"}},
		{"SELECT * FROM t WHERE a = :1", []string{"ANALYTICS.PUBLIC.T read"}},
		{"MERGE INTO t USING (SELECT * FROM s) x ON 1 = 1 WHEN MATCHED THEN DELETE", []string{"ANALYTICS.PUBLIC.T dml", "ANALYTICS.PUBLIC.S read"}},
		{"ALTER TABLE a RENAME TO prod.p.a", []string{"ANALYTICS.PUBLIC.A ddl", "PROD.P.A ddl"}},
		{"UPDATE t SET a = 1", []string{"ANALYTICS.PUBLIC.T dml"}},
		{"SELECT * FROM t AT(OFFSET => -60) x WHERE 1 = 1", []string{"ANALYTICS.PUBLIC.T read"}},
		{`SELECT * FROM "analytics"."Public".t`, []string{"analytics.Public.T read"}},
		{"SELECT * FROM a.b.c.d", []string{"<dynamic> read"}},
		{"WITH r AS (SELECT 1) SELECT * FROM r", nil},
		{"SELECT 1", nil},
		{"GRANT SELECT ON TABLE t TO ROLE r", nil},
		{"DESCRIBE TABLE secret.s.t", []string{"SECRET.S.T read"}},
		{"INSERT INTO IDENTIFIER(:1) VALUES (1)", []string{"<dynamic> dml"}},
		{"UPDATE", []string{"<dynamic> dml"}},
		{"DROP TABLE scratch.a, prod.b", []string{"ANALYTICS.SCRATCH.A ddl", "<dynamic> ddl"}},
		{"SELECT * FROM (analytics.pii.x)", []string{"ANALYTICS.PII.X read"}},
		{"SELECT * FROM ((a JOIN b ON a.id = b.id))", []string{"ANALYTICS.PUBLIC.A read", "ANALYTICS.PUBLIC.B read"}},
		{"SELECT * FROM TABLE($t)", []string{"<dynamic> read"}},
		{"SELECT * FROM TABLE('pii.t')", []string{"<dynamic> read"}},
		{"SELECT * FROM TABLE(RESULT_SCAN(LAST_QUERY_ID()))", nil},
		{"SELECT EXISTS(SELECT 1 FROM pii.t), TRIM(BOTH 'x' FROM c), COALESCE(SELECT 1 FROM q.r) FROM t", []string{"ANALYTICS.PII.T read", "ANALYTICS.Q.R read", "ANALYTICS.PUBLIC.T read"}},
	}
	for _, tc := range tests {
		st := Classify(tc.sql)
		var got []string
		for _, r := range st.Objects {
			o := Resolve(r, ns)
			got = append(got, o.String()+" "+string(o.Access))
		}
		if strings.Join(got, ", ") != strings.Join(tc.want, ", ") {
			t.Errorf("objects of %q = %q, want %q", tc.sql, got, tc.want)
		}
	}
}

func TestParsePattern(t *testing.T) {
	tests := []struct {
		pat     string
		want    string
		wantErr bool
	}{
		{"analytics.public.*", "ANALYTICS PUBLIC *", false},
		{`ANALYTICS."pii".T?`, "ANALYTICS pii T?", false},
		{`"a""b".s.t`, `a"b S T`, false},
		{"a.b", "", true},
		{"a.b.c.d", "", true},
		{"a..c", "", true},
		{`a."".c`, "", true},
		{"a.b.c-d", "", true},
	}
	for _, tc := range tests {
		parts, err := ParsePattern(tc.pat)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParsePattern(%q) error = %v, want error %v", tc.pat, err, tc.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		var got []string
		for _, p := range parts {
			got = append(got, p.Name)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("ParsePattern(%q) = %q, want %q", tc.pat, got, tc.want)
		}
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pat, name string
		want      bool
	}{
		{"*", "ANYTHING", true}, {"*", "", true}, {"T?", "T1", true}, {"T?", "T", false},
		{"STG_*", "STG_ORDERS", true}, {"STG_*", "PROD_ORDERS", false}, {"*_TMP", "A_TMP", true},
		{"A*B*C", "AXXBYYC", true}, {"A*B*C", "AXXBYY", false}, {"ABC", "abc", false},
	}
	for _, tc := range tests {
		if got := glob(tc.pat, tc.name); got != tc.want {
			t.Errorf("glob(%q, %q) = %v, want %v", tc.pat, tc.name, got, tc.want)
		}
	}
}
