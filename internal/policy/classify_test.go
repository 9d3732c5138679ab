package policy

import (
	"strings"
	"testing"
)

type classCase struct {
	name string
	sql  string
	want Class
}

// ordinaryCases are statements an agent sends in normal work.
var ordinaryCases = []classCase{
	{"select", "SELECT 1", ClassRead},
	{"select lower", "select * from t where x = 1", ClassRead},
	{"select trailing semicolon", "SELECT 1;", ClassRead},
	{"select empty statements around", ";;SELECT 1;; ;", ClassRead},
	{"select qualified", "SELECT a, b FROM analytics.public.orders o JOIN analytics.public.users u ON o.uid = u.id", ClassRead},
	{"select subquery", "SELECT * FROM (SELECT id FROM t) s WHERE id IN (SELECT id FROM u)", ClassRead},
	{"select parenthesised", "(SELECT 1) UNION ALL (SELECT 2)", ClassRead},
	{"select string with keywords", "SELECT 'DROP TABLE x; GRANT ALL' AS s", ClassRead},
	{"select string with doubled quote", "SELECT 'it''s; DROP TABLE t' FROM t", ClassRead},
	{"select backslash escaped quote", `SELECT 'O\'Brien' FROM t`, ClassRead},
	{"select dollar string", "SELECT $$ ; DROP TABLE t; $$", ClassRead},
	{"select quoted keyword column", `SELECT "INSERT", "DROP" FROM "GRANT"`, ClassRead},
	{"select variable", "SELECT $x, $1 FROM t", ClassRead},
	{"select bind", "SELECT * FROM t WHERE a = ? AND b = :1 AND c = :name", ClassRead},
	{"select from stage", "SELECT $1 FROM @my_stage/path/file.csv (FILE_FORMAT => 'f')", ClassRead},
	{"select identifier", "SELECT * FROM IDENTIFIER('db.s.t')", ClassRead},
	{"select extract", "SELECT EXTRACT(YEAR FROM d) FROM t", ClassRead},
	{"select cast", "SELECT x::NUMBER(10,2), y || 'a' FROM t", ClassRead},
	{"select json path", "SELECT v:field.sub::string FROM t", ClassRead},
	{"select lateral flatten", "SELECT f.value FROM t, LATERAL FLATTEN(input => t.v) f", ClassRead},
	{"select time travel", "SELECT * FROM t AT(OFFSET => -60) WHERE 1=1", ClassRead},
	{"select line comment", "SELECT 1 -- ; DROP TABLE t", ClassRead},
	{"select slash comment", "SELECT 1 // ; DROP TABLE t", ClassRead},
	{"select block comment", "SELECT /* ; GRANT ALL */ 1", ClassRead},
	{"select crlf comment", "SELECT 1 -- c\r\nFROM t", ClassRead},
	{"select numbers", "SELECT 1.5e10, .5, 3 FROM t", ClassRead},
	{"select safe system function", "SELECT SYSTEM$TYPEOF(1)", ClassRead},
	{"select system wait", "SELECT SYSTEM$WAIT(2), 42", ClassRead},
	{"select unicode in string", "SELECT 'café ЅELECT \u200b' FROM \"Café\"", ClassRead},
	{"select unicode in comment", "SELECT 1 /* ＧＲＡＮＴ \u00a0 */", ClassRead},
	{"with select", "WITH a AS (SELECT 1 x), b (y) AS (SELECT 2) SELECT * FROM a, b", ClassRead},
	{"with recursive", "WITH RECURSIVE r AS (SELECT 1 n UNION ALL SELECT n+1 FROM r WHERE n < 3) SELECT * FROM r", ClassRead},
	{"show", "SHOW TABLES IN SCHEMA analytics.public", ClassRead},
	{"show grants", "SHOW GRANTS TO ROLE r", ClassRead},
	{"describe", "DESCRIBE TABLE t", ClassRead},
	{"desc", "DESC VIEW v", ClassRead},
	{"explain", "EXPLAIN SELECT * FROM t", ClassRead},
	{"explain dml", "EXPLAIN USING TEXT INSERT INTO t SELECT 1", ClassRead},
	{"list", "LIST @my_stage", ClassRead},
	{"ls", "ls @~", ClassRead},

	{"use warehouse", "USE WAREHOUSE wh", ClassSession},
	{"use database", "USE DATABASE analytics", ClassSession},
	{"use schema", "USE SCHEMA analytics.public", ClassSession},
	{"use bare", "USE analytics", ClassSession},
	{"alter session", "ALTER SESSION SET TIMEZONE = 'UTC'", ClassSession},
	{"set variable", "SET x = 1", ClassSession},
	{"unset variable", "UNSET x", ClassSession},
	{"begin", "BEGIN", ClassSession},
	{"begin transaction", "BEGIN TRANSACTION NAME t1", ClassSession},
	{"start transaction", "START TRANSACTION", ClassSession},
	{"commit", "COMMIT", ClassSession},
	{"rollback work", "ROLLBACK WORK", ClassSession},

	{"insert", "INSERT INTO t (a) VALUES (1)", ClassDML},
	{"insert select", "INSERT INTO a.b.t SELECT * FROM a.b.u", ClassDML},
	{"insert overwrite", "INSERT OVERWRITE INTO t SELECT 1", ClassDML},
	{"insert all", "INSERT ALL INTO t1 VALUES (1) INTO t2 VALUES (2) SELECT 1", ClassDML},
	{"update", "UPDATE t SET a = 1 WHERE b = 2", ClassDML},
	{"update from", "UPDATE t SET a = u.a FROM u WHERE t.id = u.id", ClassDML},
	{"delete", "DELETE FROM t WHERE a = 1", ClassDML},
	{"delete using", "DELETE FROM t USING u WHERE t.id = u.id", ClassDML},
	{"merge", "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET t.a = s.a WHEN NOT MATCHED THEN INSERT (a) VALUES (s.a)", ClassDML},
	{"with insert", "WITH s AS (SELECT 1 a) INSERT INTO t SELECT a FROM s", ClassDML},
	{"copy into table from stage", "COPY INTO t FROM @my_stage/data/ FILE_FORMAT = (TYPE = CSV)", ClassDML},
	{"copy into table transform", "COPY INTO t FROM (SELECT $1, $2 FROM @st)", ClassDML},

	{"create table", "CREATE TABLE t (a INT, b STRING)", ClassDDL},
	{"create or replace transient", "CREATE OR REPLACE TRANSIENT TABLE IF NOT EXISTS a.b.c AS SELECT * FROM d.e.f", ClassDDL},
	{"ctas", "CREATE TABLE t AS SELECT * FROM u", ClassDDL},
	{"create table named user", `CREATE TABLE "USER" (a INT)`, ClassDDL},
	{"create secure view", "CREATE SECURE VIEW v AS SELECT 1", ClassDDL},
	{"create schema", "CREATE SCHEMA analytics.scratch", ClassDDL},
	{"create database", "CREATE DATABASE d", ClassDDL},
	{"create warehouse", "CREATE WAREHOUSE wh WITH WAREHOUSE_SIZE = XSMALL", ClassDDL},
	{"create stage", "CREATE STAGE st", ClassDDL},
	{"create file format", "CREATE FILE FORMAT ff TYPE = CSV", ClassDDL},
	{"create clone", "CREATE TABLE t2 CLONE t1", ClassDDL},
	{"alter table", "ALTER TABLE t ADD COLUMN c INT", ClassDDL},
	{"alter table rename", "ALTER TABLE t RENAME TO u", ClassDDL},
	{"drop table", "DROP TABLE IF EXISTS t", ClassDDL},
	{"drop procedure", "DROP PROCEDURE p(INT)", ClassDDL},
	{"undrop", "UNDROP TABLE t", ClassDDL},
	{"truncate", "TRUNCATE TABLE IF EXISTS t", ClassDDL},
	{"comment", "COMMENT ON TABLE t IS 'x'", ClassDDL},

	{"put", "PUT file:///tmp/data.csv @my_stage", ClassFileTransfer},
	{"put windows-ish", "PUT file://C:/tmp/data.csv @~/staged AUTO_COMPRESS=TRUE", ClassFileTransfer},
	{"get", "GET @my_stage/file.csv file:///tmp/", ClassFileTransfer},
	{"remove", "REMOVE @my_stage/old", ClassFileTransfer},
	{"copy unload stage", "COPY INTO @my_stage/out/ FROM t", ClassFileTransfer},
	{"copy unload url", "COPY INTO 's3://bucket/out/' FROM (SELECT * FROM t) CREDENTIALS = (AWS_KEY_ID = 'x')", ClassFileTransfer},
	{"copy load url", "COPY INTO t FROM 's3://bucket/in/'", ClassFileTransfer},
	{"copy load integration", "COPY INTO t FROM @st STORAGE_INTEGRATION = si", ClassFileTransfer},

	{"grant", "GRANT SELECT ON TABLE t TO ROLE r", ClassPrivileged},
	{"grant role", "GRANT ROLE accountadmin TO USER agent", ClassPrivileged},
	{"revoke", "REVOKE ALL ON DATABASE d FROM ROLE r", ClassPrivileged},
	{"use role", "USE ROLE ACCOUNTADMIN", ClassPrivileged},
	{"use secondary roles", "USE SECONDARY ROLES ALL", ClassPrivileged},
	{"create user", "CREATE USER bob PASSWORD = 'x'", ClassPrivileged},
	{"alter user", "ALTER USER agent SET RSA_PUBLIC_KEY = 'MII'", ClassPrivileged},
	{"drop user", "DROP USER IF EXISTS bob", ClassPrivileged},
	{"create or replace role", "CREATE OR REPLACE ROLE r", ClassPrivileged},
	{"create database role", "CREATE DATABASE ROLE d.r", ClassPrivileged},
	{"alter account", "ALTER ACCOUNT SET NETWORK_POLICY = open", ClassPrivileged},
	{"create account", "CREATE ACCOUNT a ADMIN_NAME = x", ClassPrivileged},
	{"create network policy", "CREATE NETWORK POLICY p ALLOWED_IP_LIST = ('0.0.0.0/0')", ClassPrivileged},
	{"create security integration", "CREATE SECURITY INTEGRATION i TYPE = OAUTH", ClassPrivileged},
	{"create storage integration", "CREATE STORAGE INTEGRATION s TYPE = EXTERNAL_STAGE", ClassPrivileged},
	{"create external access integration", "CREATE EXTERNAL ACCESS INTEGRATION e ALLOWED_NETWORK_RULES = (r)", ClassPrivileged},
	{"create masking policy", "CREATE MASKING POLICY m AS (v STRING) RETURNS STRING -> v", ClassPrivileged},
	{"create share", "CREATE SHARE s", ClassPrivileged},
	{"create secret", "CREATE SECRET s TYPE = PASSWORD", ClassPrivileged},
	{"call", "CALL my_proc(1)", ClassPrivileged},
	{"create procedure", "CREATE PROCEDURE p() RETURNS INT LANGUAGE SQL AS $$ BEGIN DROP TABLE t; END $$", ClassPrivileged},
	{"create function", "CREATE FUNCTION f(x INT) RETURNS INT AS 'x + 1'", ClassPrivileged},
	{"create task", "CREATE TASK tk SCHEDULE = '1 minute' AS DELETE FROM t", ClassPrivileged},
	{"alter task resume", "ALTER TASK tk RESUME", ClassPrivileged},
	{"create pipe", "CREATE PIPE p AS COPY INTO t FROM @st", ClassPrivileged},
	{"execute task", "EXECUTE TASK tk", ClassPrivileged},
	{"alter session query tag", "ALTER SESSION SET QUERY_TAG = 'hidden'", ClassPrivileged},
	{"alter session unset query tag", "ALTER SESSION UNSET QUERY_TAG", ClassPrivileged},
	{"select effectful system function", "SELECT SYSTEM$CANCEL_ALL_QUERIES(123)", ClassPrivileged},
	{"select abort session", "SELECT system$abort_session(1)", ClassPrivileged},

	{"multi", "SELECT 1; SELECT 2", ClassMultiStatement},
	{"multi read then drop", "SELECT 1; DROP TABLE t", ClassMultiStatement},
	{"multi newline", "SELECT 1\n;\nSHOW TABLES", ClassMultiStatement},

	{"empty", "", ClassUnknown},
	{"only comments", "-- nothing\n/* here */", ClassUnknown},
	{"garbage", "HELLO WORLD", ClassUnknown},
	{"number first", "1; SELECT 1", ClassMultiStatement},
	{"unterminated string", "SELECT 'abc", ClassUnknown},
	{"unterminated quoted", `SELECT "abc`, ClassUnknown},
	{"unterminated comment", "SELECT 1 /* ; DROP TABLE t", ClassUnknown},
	{"unterminated dollar", "SELECT $$ abc", ClassUnknown},
	{"lone dollar", "SELECT $ FROM t", ClassUnknown},
	{"select into", "SELECT a INTO :v FROM t", ClassUnknown},
	{"declare block", "DECLARE x INT; BEGIN x := 1; END", ClassMultiStatement},
	{"scripting block", "BEGIN DROP TABLE t; END", ClassMultiStatement},
	{"scripting block alone", "BEGIN CREATE TABLE t (a INT) END", ClassUnknown},
	{"execute immediate", "EXECUTE IMMEDIATE 'DROP TABLE t'", ClassUnknown},
	{"execute immediate dollar", "EXECUTE IMMEDIATE $$ SELECT 1 $$", ClassUnknown},
	{"create unknown kind", "CREATE FROBNICATOR f", ClassUnknown},
	{"paren not query", "(DROP TABLE t)", ClassUnknown},
}

// bypassCases are attempts to make a statement look more permissive than it
// is. Each must land in its real class or a stricter one.
var bypassCases = []classCase{
	{"comment before keyword", "/* SELECT */ DROP TABLE t", ClassDDL},
	{"line comment before keyword", "-- SELECT\nGRANT ROLE sysadmin TO USER agent", ClassPrivileged},
	{"slash comment before keyword", "// SELECT\nGRANT ROLE sysadmin TO USER agent", ClassPrivileged},
	{"comment hides semicolon not statement", "SELECT 1 /* x */ ; /* y */ DELETE FROM t", ClassMultiStatement},
	{"comment inside keyword drop", "DR/**/OP TABLE t", ClassUnknown},
	{"comment inside keyword select", "SEL/**/ECT * FROM t; DROP TABLE t", ClassMultiStatement},
	{"comment inside keyword grant", "GR/* x */ANT ALL ON t TO ROLE r", ClassUnknown},
	{"comment inside kind", "CREATE US/**/ER bob", ClassUnknown},
	{"comment inside identifier", "SELECT * FROM ANA/**/LYTICS.PUBLIC.T", ClassRead},
	{"nested block comment", "/* a /* SELECT */ GRANT ALL ON t TO ROLE r */", ClassUnknown},
	{"comment closes early", "SELECT 1 /* x */ */ GRANT", ClassUnknown},
	{"bare CR ends line comment?", "SELECT 1 -- x\rGRANT ALL ON t TO ROLE r", ClassUnknown},
	{"line separator in comment", "SELECT 1 -- x\u2028; DROP TABLE t", ClassUnknown},
	{"quoted select first", `"SELECT" * FROM t`, ClassUnknown},
	{"quoted grant first", `"GRANT" ALL ON t TO ROLE r`, ClassUnknown},
	{"quoted keyword table", `DROP TABLE "SELECT"`, ClassDDL},
	{"multi after string", "SELECT 'a'; DROP TABLE t", ClassMultiStatement},
	{"multi after doubled quote", "SELECT 'it''s'; DROP TABLE t", ClassMultiStatement},
	{"multi after dollar string", "SELECT $$x$$; DROP TABLE t", ClassMultiStatement},
	{"multi after quoted ident", `SELECT "a;b"; DROP TABLE t`, ClassMultiStatement},
	{"backslash smuggle", `SELECT 'a\'; DROP TABLE t; --'`, ClassMultiStatement},
	{"backslash at end", `SELECT 'a\\'; DROP TABLE t`, ClassMultiStatement},
	{"dollar inside word", "SELECT x$$ $$; GRANT ALL ON t TO ROLE r; SELECT $$ $$", ClassUnknown},
	{"multi after comment", "SELECT 1 -- c\n; GRANT ALL ON t TO ROLE r", ClassMultiStatement},
	{"execute immediate", "EXECUTE IMMEDIATE 'SELECT 1'", ClassUnknown},
	{"execute immediate lower", "execute immediate $$ GRANT ROLE a TO USER b $$", ClassUnknown},
	{"call", "CALL system$wait(1)", ClassPrivileged},
	{"call lower", "call db.s.cleanup()", ClassPrivileged},
	{"cyrillic e in select", "SЕLECT 1", ClassUnknown},
	{"cyrillic in drop", "DRОP TABLE t", ClassUnknown},
	{"cyrillic word whole", "ЅELECT 1", ClassUnknown},
	{"fullwidth grant", "ＧＲＡＮＴ ALL ON t TO ROLE r", ClassUnknown},
	{"fullwidth semicolon", "SELECT 1；DROP TABLE t", ClassUnknown},
	{"zero width in keyword", "GR\u200bANT ALL ON t TO ROLE r", ClassUnknown},
	{"zero width before statement", "SELECT 1;\u200bDROP TABLE t", ClassUnknown},
	{"nbsp", "SELECT\u00a01", ClassUnknown},
	{"nbsp before drop", "SELECT 1;\u00a0DROP TABLE t", ClassUnknown},
	{"bom", "\ufeffSELECT 1", ClassUnknown},
	{"ideographic space", "SELECT\u30001", ClassUnknown},
	{"nul byte", "SELECT 1\x00; DROP TABLE t", ClassUnknown},
	{"write keyword inside select", "SELECT * FROM t WHERE x IN (DELETE FROM t)", ClassUnknown},
	{"cte with delete", "WITH a AS (DELETE FROM t) SELECT 1", ClassUnknown},
	{"cte before grant", "WITH a AS (SELECT 1) GRANT ALL ON t TO ROLE r", ClassUnknown},
	{"select for update", "SELECT * FROM t FOR UPDATE", ClassUnknown},
	{"explain grant", "EXPLAIN GRANT ALL ON t TO ROLE r", ClassUnknown},
	{"put smuggle after uri", "PUT file:///tmp/a;GRANT ROLE r TO USER u @st", ClassMultiStatement},
	{"put uri with quote", "PUT file:///tmp/a'x @st", ClassUnknown},
	{"stage with comment", "LIST @st//x\nGRANT ALL ON t TO ROLE r", ClassUnknown},
	{"create table role kind", "CREATE OR REPLACE ROLE/**/ r", ClassPrivileged},
	{"alter user lower", "alter user agent set password = 'x'", ClassPrivileged},
	{"mixed case keyword", "gRaNt ROLE a TO USER b", ClassPrivileged},
	{"parenthesised grant", "(GRANT ROLE a TO USER b)", ClassUnknown},
	{"semicolon in identifier call", "SELECT IDENTIFIER('t;DROP'); DROP TABLE t", ClassMultiStatement},
	{"begin smuggles", "BEGIN TRANSACTION; GRANT ROLE a TO USER b; COMMIT", ClassMultiStatement},
	{"set from select", "SET v = (SELECT secret FROM vault)", ClassSession},
	{"flow operator", "SELECT 1 ->> DELETE FROM t", ClassMultiStatement},
	{"flow operator show", "SHOW TABLES ->> SELECT * FROM $1", ClassMultiStatement},
	{"lambda is not flow", "SELECT TRANSFORM(a, x -> x + 1) FROM t", ClassRead},
	{"use malformed", "USE DATABASE a.b.c", ClassUnknown},
	{"alter session multi statement count", "ALTER SESSION SET MULTI_STATEMENT_COUNT = 0", ClassPrivileged},
	{"alter session quoted query tag", `ALTER SESSION SET "query_tag" = 'x'`, ClassPrivileged},
	{"alter session timeout", "alter session set statement_timeout_in_seconds = 86400", ClassPrivileged},
	{"use quoted role", `USE "ROLE" accountadmin`, ClassUnknown},
	{"alter quoted user", `ALTER "USER" agent SET PASSWORD = 'x'`, ClassUnknown},
	{"overlapping comment ends", "SELECT 1 /*/ ; DROP TABLE t /*/", ClassUnknown},
}

func TestClassify(t *testing.T) {
	for _, set := range []struct {
		name  string
		cases []classCase
	}{{"ordinary", ordinaryCases}, {"bypass", bypassCases}} {
		t.Run(set.name, func(t *testing.T) {
			for _, tc := range set.cases {
				t.Run(tc.name, func(t *testing.T) {
					st := Classify(tc.sql)
					if st.Class != tc.want {
						t.Errorf("Classify(%q) = %s (keyword %q, reason %q), want %s", tc.sql, st.Class, st.Keyword, st.Reason, tc.want)
					}
					if st.Class == ClassUnknown && st.Reason == "" {
						t.Errorf("Classify(%q): unknown without a reason", tc.sql)
					}
				})
			}
		})
	}
}

func TestClassifyCount(t *testing.T) {
	if n := len(ordinaryCases) + len(bypassCases); n < 150 {
		t.Errorf("only %d classification cases", n)
	}
}

// TestClassifyLong: texts over the cap are unknown without being lexed, and
// a long but allowed text still classifies.
func TestClassifyLong(t *testing.T) {
	long := "SELECT " + strings.Repeat("1 + ", (MaxStatementBytes)/4) + "1"
	st := Classify(long)
	if st.Class != ClassUnknown || !strings.Contains(st.Reason, "exceeds") {
		t.Errorf("over-long statement: %s %q", st.Class, st.Reason)
	}
	ok := "SELECT " + strings.Repeat("1 + ", MaxStatementBytes/8) + "1"
	if st := Classify(ok); st.Class != ClassRead {
		t.Errorf("long statement under the cap: %s %q", st.Class, st.Reason)
	}
	deep := strings.Repeat("(", 100000) + "SELECT 1" + strings.Repeat(")", 100000)
	if st := Classify(deep); st.Class != ClassRead {
		t.Errorf("deeply nested query: %s %q", st.Class, st.Reason)
	}
}

func TestMultiStatementParts(t *testing.T) {
	st := Classify("SELECT 1 FROM a; INSERT INTO b SELECT 2; GRANT ROLE r TO USER u")
	var got []Class
	for _, p := range st.Parts {
		got = append(got, p.Class)
	}
	want := []Class{ClassRead, ClassDML, ClassPrivileged}
	if st.Class != ClassMultiStatement || len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("parts = %v (%s), want %v", got, st.Class, want)
	}
}

func TestStrictnessOrder(t *testing.T) {
	for i := 1; i < len(Classes); i++ {
		if Classes[i].Strictness() <= Classes[i-1].Strictness() {
			t.Errorf("%s is not stricter than %s", Classes[i], Classes[i-1])
		}
	}
	if Class("bogus").Strictness() != ClassUnknown.Strictness() {
		t.Error("an invalid class is not the strictest")
	}
	if Stricter(ClassRead, ClassDDL) != ClassDDL || Stricter(ClassUnknown, ClassRead) != ClassUnknown {
		t.Error("Stricter picks the wrong class")
	}
}

func TestNextNamespace(t *testing.T) {
	start := Namespace{Database: "ANALYTICS", Schema: "PUBLIC"}
	tests := []struct {
		sql  string
		want Namespace
	}{
		{"USE DATABASE raw", Namespace{"RAW", "PUBLIC"}},
		{`USE "raw"`, Namespace{"raw", "PUBLIC"}},
		{"USE SCHEMA staging", Namespace{"ANALYTICS", "STAGING"}},
		{"USE SCHEMA raw.staging", Namespace{"RAW", "STAGING"}},
		{"USE WAREHOUSE wh", start},
		{"USE DATABASE IDENTIFIER($db)", Namespace{}},
		{"SELECT 1", start},
		{"USE DATABASE a; USE SCHEMA s; SELECT 1", Namespace{"A", "S"}},
	}
	for _, tc := range tests {
		if got := Classify(tc.sql).NextNamespace(start); got != tc.want {
			t.Errorf("%q: namespace %+v, want %+v", tc.sql, got, tc.want)
		}
	}
}
