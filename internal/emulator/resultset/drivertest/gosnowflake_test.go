package drivertest_test

import (
	"context"
	"database/sql"
	"reflect"
	"testing"
	"time"

	_ "github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
)

// typesQuery selects one value of every Snowflake type, then a row of NULLs.
const typesQuery = `SELECT 42 AS fx, 1.239::number(10,2) AS dec, 0.5::float AS r, 'héllo' AS t, TRUE AS b,
 '2024-01-02'::date AS d, '01:02:03.5'::time AS tm, '2024-01-02 03:04:05.123456789'::timestamp_ntz AS ntz,
 '2024-01-02 03:04:05.5 +02:00'::timestamp_tz AS tz, '2024-01-02 03:04:05 +00:00'::timestamp_ltz AS ltz,
 to_binary('CAFE') AS bin, parse_json('{"k":[1,2]}') AS v
UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL`

// TestGosnowflakeDecodesEveryType serves one row of every Snowflake type
// through the emulator and decodes it with the real gosnowflake driver, in
// both the Arrow and the JSON result formats.
func TestGosnowflakeDecodesEveryType(t *testing.T) {
	inst := emulatortest.Start(t, emulator.Config{Account: "demo", Users: map[string]string{"alice": "pw"},
		QueryWait: 20 * time.Second, ResultWait: 10 * time.Second})
	wantDB := []string{"FIXED", "FIXED", "REAL", "TEXT", "BOOLEAN", "DATE", "TIME", "TIMESTAMP_NTZ", "TIMESTAMP_TZ", "TIMESTAMP_LTZ", "BINARY", "VARIANT"}
	for _, format := range []string{"ARROW", "JSON"} {
		t.Run(format, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db, err := sql.Open("snowflake", inst.DSN("alice", "pw", nil))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			conn, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.ExecContext(ctx, "ALTER SESSION SET GO_QUERY_RESULT_FORMAT = '"+format+"'"); err != nil {
				t.Fatal(err)
			}
			rows, err := conn.QueryContext(ctx, typesQuery)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			cts, err := rows.ColumnTypes()
			if err != nil {
				t.Fatal(err)
			}
			for i, ct := range cts {
				if ct.DatabaseTypeName() != wantDB[i] {
					t.Errorf("column %s: %s, want %s", ct.Name(), ct.DatabaseTypeName(), wantDB[i])
				}
			}
			if p, s, _ := cts[1].DecimalSize(); p != 10 || s != 2 {
				t.Errorf("DEC size %d,%d", p, s)
			}
			var (
				fx, dec, txt, v string
				r               float64
				b               bool
				d, tm, ntz, tz  time.Time
				ltz             time.Time
				bin             []byte
			)
			if !rows.Next() {
				t.Fatal("no row")
			}
			if err := rows.Scan(&fx, &dec, &r, &txt, &b, &d, &tm, &ntz, &tz, &ltz, &bin, &v); err != nil {
				t.Fatal(err)
			}
			got := []any{fx, dec, r, txt, b, d.Format(time.DateOnly), tm.Format("15:04:05.000"), ntz.UTC(), tz.UTC(), tz.Format("-07:00"), ltz.UTC(), bin, v}
			want := []any{"42", "1.24", 0.5, "héllo", true, "2024-01-02", "01:02:03.500", time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC),
				time.Date(2024, 1, 2, 1, 4, 5, 500000000, time.UTC), "+02:00", time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), []byte{0xca, 0xfe}, `{"k":[1,2]}`}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("row\n%#v\nwant\n%#v", got, want)
			}
			if !rows.Next() {
				t.Fatal("no NULL row")
			}
			nulls := make([]any, len(cts))
			ptrs := make([]any, len(cts))
			for i := range nulls {
				ptrs[i] = &nulls[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, n := range nulls {
				if n != nil {
					t.Errorf("column %d of the NULL row = %#v", i, n)
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
