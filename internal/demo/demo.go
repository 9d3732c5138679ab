// Package demo runs snowgate's demonstration on one machine with embedded
// defaults, printing each step as it happens.
//
// Today the demo starts the Snowflake-protocol emulator on loopback and drives
// it with the real gosnowflake driver, exactly as an agent would drive
// Snowflake: log in, look at the session, create and fill a table with bound
// values, read it back, stream a multi-chunk result, hit a compilation error
// and run an asynchronous query. As the gateway lands, the same agent moves
// into its own cgroup and reaches the emulator only through the gateway.
package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
)

// Options configures a demo run.
type Options struct {
	// Out receives the demo's narration; nil means os.Stdout.
	Out io.Writer
	// Rows is the size of the multi-chunk SELECT (default 100,000).
	Rows int
}

const (
	demoAccount  = "demo"
	demoUser     = "AGENT"
	demoPassword = "demo-password" // the emulator's own, never a real credential
)

// Run executes the demo and returns the first failure.
func Run(ctx context.Context, opts Options) error {
	out := opts.Out
	if out == nil {
		out = os.Stdout
	}
	if opts.Rows <= 0 {
		opts.Rows = 100_000
	}
	step := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }
	info := func(format string, args ...any) { fmt.Fprintf(out, "    "+format+"\n", args...) }

	// The drivers probe cloud metadata endpoints at connect; there are none here.
	os.Setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
	gosnowflake.GetLogger().SetOutput(io.Discard)

	step("starting the Snowflake emulator (account %q) on loopback", demoAccount)
	emu, err := emulator.New(emulator.Config{
		Account: demoAccount,
		Users:   map[string]string{demoUser: demoPassword},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return fmt.Errorf("start emulator: %w", err)
	}
	defer emu.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the emulator: %w", err)
	}
	srv := &http.Server{Handler: emu.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	info("listening on http://%s", ln.Addr())

	cfg := &gosnowflake.Config{
		Account:          demoAccount,
		User:             demoUser,
		Password:         demoPassword,
		Host:             "127.0.0.1",
		Port:             port,
		Protocol:         "http",
		Database:         "DEMO_DB",
		Schema:           "PUBLIC",
		Warehouse:        "DEMO_WH",
		Role:             "ANALYST",
		DisableTelemetry: true,
	}
	dsn, err := gosnowflake.DSN(cfg)
	if err != nil {
		return fmt.Errorf("build DSN: %w", err)
	}
	db, err := sql.Open("snowflake", dsn)
	if err != nil {
		return fmt.Errorf("open driver: %w", err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	defer conn.Close()

	step("logged in with gosnowflake as %s", demoUser)
	var user, role, wh string
	if err := conn.QueryRowContext(ctx, "SELECT CURRENT_USER(), CURRENT_ROLE(), CURRENT_WAREHOUSE()").Scan(&user, &role, &wh); err != nil {
		return fmt.Errorf("read session: %w", err)
	}
	info("CURRENT_USER()=%s CURRENT_ROLE()=%s CURRENT_WAREHOUSE()=%s", user, role, wh)

	step("DDL and DML with bound values")
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS DEMO_DB",
		"USE DATABASE DEMO_DB",
		"CREATE OR REPLACE TABLE ORDERS (ID NUMBER, CUSTOMER VARCHAR, AMOUNT NUMBER(10,2))",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
		info("ok: %s", q)
	}
	res, err := conn.ExecContext(ctx, "INSERT INTO ORDERS (ID, CUSTOMER, AMOUNT) VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?)",
		1, "acme", "120.50", 2, "globex", "99.99", 3, "initech", "15.00")
	if err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	n, _ := res.RowsAffected()
	info("INSERT: %d rows inserted", n)
	rows, err := conn.QueryContext(ctx, "SELECT ID, CUSTOMER, AMOUNT FROM ORDERS WHERE AMOUNT > ? ORDER BY ID", "50")
	if err != nil {
		return fmt.Errorf("select orders: %w", err)
	}
	for rows.Next() {
		var id int
		var customer, amount string
		if err := rows.Scan(&id, &customer, &amount); err != nil {
			rows.Close()
			return fmt.Errorf("scan order: %w", err)
		}
		info("row: id=%d customer=%s amount=%s", id, customer, amount)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("read orders: %w", err)
	}

	step("a %d-row SELECT, streamed in result chunks", opts.Rows)
	start := time.Now()
	var count, sum int64
	rows, err = conn.QueryContext(ctx, fmt.Sprintf("SELECT SEQ4() AS N, RANDSTR(12, SEQ4()) AS S FROM TABLE(GENERATOR(ROWCOUNT => %d))", opts.Rows))
	if err != nil {
		return fmt.Errorf("large select: %w", err)
	}
	for rows.Next() {
		var v int64
		var s string
		if err := rows.Scan(&v, &s); err != nil {
			rows.Close()
			return fmt.Errorf("scan: %w", err)
		}
		if v != count {
			rows.Close()
			return fmt.Errorf("row %d carries N=%d", count, v)
		}
		count++
		sum += v
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("read large result: %w", err)
	}
	elapsed := time.Since(start)
	info("%d rows, sum(N)=%d, %.0f rows/s, %d chunk downloads", count, sum, float64(count)/elapsed.Seconds(), emu.Faults().Hits("chunk"))

	step("a statement Snowflake refuses")
	_, err = conn.ExecContext(ctx, "SELECT * FROM NO_SUCH_TABLE")
	var sfErr *gosnowflake.SnowflakeError
	if !errors.As(err, &sfErr) {
		return fmt.Errorf("expected a Snowflake error, got %v", err)
	}
	info("error %06d (SQLState %s): %s", sfErr.Number, sfErr.SQLState, oneLine(sfErr.Message))

	step("an asynchronous query, polled until done")
	actx := gosnowflake.WithAsyncMode(ctx)
	start = time.Now()
	var waited string
	if err := conn.QueryRowContext(actx, "SELECT SYSTEM$WAIT(1)").Scan(&waited); err != nil {
		return fmt.Errorf("async query: %w", err)
	}
	info("SYSTEM$WAIT(1) returned %q after %s", waited, time.Since(start).Round(10*time.Millisecond))

	step("the emulator's query log (what reached \"Snowflake\")")
	for _, e := range emu.QueryLog() {
		info("%s  %s  %s", e.Time.Format("15:04:05.000"), e.QueryID, firstLine(e.SQL))
	}
	step("done")
	return nil
}

// firstLine shortens multi-line SQL for the query log listing.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// oneLine joins a multi-line driver message so it reads on one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
