package emulator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// millionRows is the result size `make bench` reports on.
const millionRows = 1000000

// BenchmarkSelectMillionRows runs a 1,000,000-row SELECT through the real
// gosnowflake driver against the emulator over TLS, in each result format,
// reading every row, and reports rows per second end to end.
func BenchmarkSelectMillionRows(b *testing.B) {
	inst := start(b, nil)
	for _, format := range []string{"json", "arrow"} {
		b.Run(format, func(b *testing.B) {
			db := passwordDB(b, inst, nil)
			ctx := context.Background()
			conn, err := db.Conn(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.ExecContext(ctx, "ALTER SESSION SET GO_QUERY_RESULT_FORMAT = '"+strings.ToUpper(format)+"'"); err != nil {
				b.Fatal(err)
			}
			q := fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", millionRows)
			var total int64
			start := time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rows, err := conn.QueryContext(ctx, q)
				if err != nil {
					b.Fatal(err)
				}
				var n int64
				var s string
				for rows.Next() {
					if err := rows.Scan(&n, &s); err != nil {
						b.Fatal(err)
					}
					total++
				}
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
				rows.Close()
			}
			b.StopTimer()
			if total != int64(b.N)*millionRows {
				b.Fatalf("read %d rows, want %d", total, int64(b.N)*millionRows)
			}
			b.ReportMetric(float64(total)/time.Since(start).Seconds(), "rows/s")
		})
	}
}
