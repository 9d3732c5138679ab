package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
)

// peakRSS reads the peak resident set size (VmHWM) of a process in bytes.
func peakRSS(pid int) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read status of %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM for %d", pid)
}

// BenchmarkEmulatorMemoryMillionRows runs the built emulator as its own
// process, reads a 1,000,000-row SELECT in both formats through gosnowflake
// and reports the emulator's peak resident memory (the target is under
// 300 MB: results stream to chunk files, never whole into memory).
func BenchmarkEmulatorMemoryMillionRows(b *testing.B) {
	if os.Getenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION") == "" {
		b.Setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
	}
	bin := buildEmulator(b)
	cmd, base := startEmulator(b, bin, "--listen", "127.0.0.1:0", "--account", "demo", "--user", "alice=pw1", "--log-level", "error")
	u, err := url.Parse(base)
	if err != nil {
		b.Fatal(err)
	}
	db, err := sql.Open("snowflake", fmt.Sprintf("alice:pw1@%s?account=demo&protocol=http&disableTelemetry=true", u.Host))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, format := range []string{"JSON", "ARROW"} {
			if _, err := conn.ExecContext(ctx, "ALTER SESSION SET GO_QUERY_RESULT_FORMAT = '"+format+"'"); err != nil {
				b.Fatal(err)
			}
			rows, err := conn.QueryContext(ctx, "SELECT seq4() AS n, randstr(20, seq4()) AS s FROM TABLE(GENERATOR(ROWCOUNT => 1000000))")
			if err != nil {
				b.Fatal(err)
			}
			count := 0
			for rows.Next() {
				count++
			}
			if err := rows.Err(); err != nil || count != 1000000 {
				b.Fatalf("%s: %d rows, %v", format, count, err)
			}
			rows.Close()
		}
	}
	b.StopTimer()
	rss, err := peakRSS(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MB")
}
