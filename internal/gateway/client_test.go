package gateway_test

// The agent side of the end-to-end tests: the test binary re-executed in the
// agents' cgroup and a private network namespace (testenv.Command), driven
// by JSON commands on stdin, one JSON reply per line on stdout. It runs the
// real gosnowflake driver, or raw TCP/TLS for the refusal cases.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/testenv"
)

const clientEnv = "SNOWGATE_GATEWAY_TEST_CLIENT"

// clientCmd is one command to the client process.
type clientCmd struct {
	Op string `json:"op"`
	// DSN for "open".
	DSN string `json:"dsn,omitempty"`
	// SQL for "exec", "query", "seq"; Args are bind values.
	SQL  string `json:"sql,omitempty"`
	Args []any  `json:"args,omitempty"`
	// Rows is the expected row count of "seq".
	Rows int `json:"rows,omitempty"`
	// Addr, SNI, Hex, Method, Path, BodySize for "raw" and "https".
	Addr     string `json:"addr,omitempty"`
	SNI      string `json:"sni,omitempty"`
	Hex      string `json:"hex,omitempty"`
	Method   string `json:"method,omitempty"`
	Path     string `json:"path,omitempty"`
	BodySize int    `json:"body_size,omitempty"`
	// Hold keeps "raw" from half-closing: the client sends and then waits,
	// as a slow-loris client does.
	Hold bool `json:"hold,omitempty"`
	// Async runs "query" with gosnowflake.WithAsyncMode (the driver polls
	// the result); Statements > 0 runs it with WithMultiStatement and
	// collects the rows of every result set.
	Async      bool `json:"async,omitempty"`
	Statements int  `json:"statements,omitempty"`
	// Gzip sends the "https" body gzip-compressed (Content-Encoding: gzip);
	// Stream sends BodySize bytes from a generator, never held in memory.
	Gzip   bool `json:"gzip,omitempty"`
	Stream bool `json:"stream,omitempty"`
	// Count is the number of connections of "loris-open".
	Count int `json:"count,omitempty"`
}

// clientReply is the client's answer.
type clientReply struct {
	Err string `json:"err,omitempty"`
	// Code is the Snowflake error number of a driver error.
	Code     int        `json:"code,omitempty"`
	Affected int64      `json:"affected,omitempty"`
	Rows     [][]string `json:"rows,omitempty"`
	Count    int        `json:"count,omitempty"`
	Status   int        `json:"status,omitempty"`
	Body     string     `json:"body,omitempty"`
	Received int        `json:"received,omitempty"`
	// Sent is the number of request body bytes the server consumed.
	Sent int64 `json:"sent,omitempty"`
	// Closed and Timeouts count slow-loris connections the server closed
	// and those still open at the client's own deadline.
	Closed   int `json:"closed,omitempty"`
	Timeouts int `json:"timeouts,omitempty"`
	// Elapsed is the wall time of "seq" in nanoseconds; P50 and P99 the
	// per-query latencies of "latency".
	Elapsed int64 `json:"elapsed_ns,omitempty"`
	P50     int64 `json:"p50_ns,omitempty"`
	P99     int64 `json:"p99_ns,omitempty"`
}

// TestGatewayClientProcess is not a test: it is the client process of the
// end-to-end tests. It skips otherwise.
func TestGatewayClientProcess(t *testing.T) {
	if os.Getenv(clientEnv) != "1" {
		t.Skip("helper process for the gateway end-to-end tests")
	}
	c := &agent{}
	err := testenv.ServePiped(os.Stdin, os.Stdout, func(cmd clientCmd, err error) clientReply {
		if err != nil {
			return clientReply{Err: err.Error()}
		}
		return c.run(cmd)
	})
	if c.conn != nil {
		c.conn.Close()
		c.db.Close()
	}
	if err != nil {
		os.Exit(3)
	}
	os.Exit(0)
}

type agent struct {
	db   *sql.DB
	conn *sql.Conn
	// loris holds the outcome of each slow-loris connection: nil when the
	// server closed it, an error when the client's deadline ended it.
	loris chan error
	// lorisN is the number of slow-loris connections open.
	lorisN int
}

func errReply(err error) clientReply {
	r := clientReply{Err: err.Error()}
	var se *gosnowflake.SnowflakeError
	if errors.As(err, &se) {
		r.Code = se.Number
	}
	return r
}

func (a *agent) run(cmd clientCmd) clientReply {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	switch cmd.Op {
	case "open":
		db, err := sql.Open("snowflake", cmd.DSN)
		if err != nil {
			return errReply(err)
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			db.Close()
			return errReply(err)
		}
		if err := conn.PingContext(ctx); err != nil {
			conn.Close()
			db.Close()
			return errReply(err)
		}
		a.db, a.conn = db, conn
		return clientReply{}
	case "exec":
		res, err := a.conn.ExecContext(ctx, cmd.SQL, cmd.Args...)
		if err != nil {
			return errReply(err)
		}
		// DDL and session statements report no row count.
		n, _ := res.RowsAffected()
		return clientReply{Affected: n}
	case "query":
		if cmd.Async {
			ctx = gosnowflake.WithAsyncMode(ctx)
		}
		if cmd.Statements > 0 {
			var err error
			if ctx, err = gosnowflake.WithMultiStatement(ctx, cmd.Statements); err != nil {
				return errReply(err)
			}
		}
		rows, err := a.conn.QueryContext(ctx, cmd.SQL, cmd.Args...)
		if err != nil {
			return errReply(err)
		}
		defer rows.Close()
		var r clientReply
		for {
			if err := scanAll(rows, &r); err != nil {
				return errReply(err)
			}
			if !rows.NextResultSet() {
				break
			}
		}
		if err := rows.Err(); err != nil {
			return errReply(err)
		}
		return r
	case "latency":
		// Count round trips of SQL on the warm connection, each timed.
		lat := make([]int64, 0, cmd.Count)
		for range cmd.Count {
			start := time.Now()
			var v string
			if err := a.conn.QueryRowContext(ctx, cmd.SQL).Scan(&v); err != nil {
				return errReply(err)
			}
			lat = append(lat, int64(time.Since(start)))
		}
		slices.Sort(lat)
		if len(lat) == 0 {
			return clientReply{}
		}
		return clientReply{Count: len(lat), P50: lat[len(lat)/2], P99: lat[len(lat)*99/100]}
	case "seq":
		// Every row is checked: n is its position, s is 'row-' || n.
		start := time.Now()
		rows, err := a.conn.QueryContext(ctx, cmd.SQL)
		if err != nil {
			return errReply(err)
		}
		defer rows.Close()
		i := 0
		for rows.Next() {
			var n int64
			var s string
			if err := rows.Scan(&n, &s); err != nil {
				return errReply(err)
			}
			if n != int64(i) || s != "row-"+strconv.Itoa(i) {
				return clientReply{Err: fmt.Sprintf("row %d = (%d, %q)", i, n, s)}
			}
			i++
		}
		if err := rows.Err(); err != nil {
			return errReply(err)
		}
		if i != cmd.Rows {
			return clientReply{Err: fmt.Sprintf("%d rows, want %d", i, cmd.Rows), Count: i}
		}
		return clientReply{Count: i, Elapsed: int64(time.Since(start))}
	case "raw":
		return rawExchange(cmd)
	case "https":
		return httpsExchange(ctx, cmd)
	case "tls-hold":
		return tlsHold(cmd)
	case "loris-open":
		return a.lorisOpen(cmd)
	case "loris-wait":
		return a.lorisWait()
	}
	return clientReply{Err: "unknown op " + cmd.Op}
}

// scanAll appends the rows of the current result set to r as strings.
func scanAll(rows *sql.Rows, r *clientReply) error {
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	for rows.Next() {
		cells := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range cells {
			ptrs[i] = &cells[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		row := make([]string, len(cols))
		for i, c := range cells {
			row[i] = c.String
			if !c.Valid {
				row[i] = "NULL"
			}
		}
		r.Rows = append(r.Rows, row)
	}
	return rows.Err()
}

// lorisOpen opens Count slow-loris connections to Addr and returns once
// every one is established: half of them send half a ClientHello and wait,
// the other half complete TLS for SNI and send half a request head. Each
// then waits (up to 2 minutes) for the server to close it.
func (a *agent) lorisOpen(cmd clientCmd) clientReply {
	hello, err := hex.DecodeString(cmd.Hex)
	if err != nil {
		return errReply(err)
	}
	a.loris = make(chan error, cmd.Count)
	ready := make(chan error, cmd.Count)
	for i := range cmd.Count {
		go func() {
			d := &net.Dialer{Timeout: 20 * time.Second}
			var c net.Conn
			var err error
			if i%2 == 0 {
				c, err = d.Dial("tcp4", cmd.Addr)
				if err == nil {
					_, err = c.Write(hello[:len(hello)/2])
				}
			} else {
				var tc *tls.Conn
				tc, err = tls.DialWithDialer(d, "tcp4", cmd.Addr, &tls.Config{ServerName: cmd.SNI})
				if err == nil {
					c = tc
					_, err = io.WriteString(c, "POST /queries/v1/query-request HTTP/1.1\r\nHost: "+cmd.SNI+"\r\n")
				}
			}
			ready <- err
			if err != nil {
				if c != nil {
					c.Close()
				}
				a.loris <- nil
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
			_, err = io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				a.loris <- err
				return
			}
			a.loris <- nil
		}()
	}
	var r clientReply
	for range cmd.Count {
		if err := <-ready; err != nil {
			r.Err = err.Error()
		} else {
			r.Count++
		}
	}
	a.lorisN = cmd.Count
	return r
}

// lorisWait waits for every slow-loris connection to end and counts how
// many the server closed and how many reached the client's own deadline.
func (a *agent) lorisWait() clientReply {
	var r clientReply
	for range a.lorisN {
		if err := <-a.loris; err != nil {
			r.Timeouts++
		} else {
			r.Closed++
		}
	}
	return r
}

// rawExchange writes bytes, half-closes and reads until EOF.
func rawExchange(cmd clientCmd) clientReply {
	b, err := hex.DecodeString(cmd.Hex)
	if err != nil {
		return errReply(err)
	}
	c, err := net.DialTimeout("tcp4", cmd.Addr, 20*time.Second)
	if err != nil {
		return errReply(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(b); err != nil {
		return errReply(err)
	}
	if !cmd.Hold {
		_ = c.(*net.TCPConn).CloseWrite()
	}
	got, err := io.ReadAll(c)
	r := clientReply{Received: len(got)}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// httpsExchange opens TLS to Addr with SNI and sends one request with a body
// of BodySize bytes. The gateway CA comes from the system roots
// (SSL_CERT_FILE).
func httpsExchange(ctx context.Context, cmd clientCmd) clientReply {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp4", cmd.Addr)
		},
		TLSClientConfig:   &tls.Config{ServerName: cmd.SNI},
		ForceAttemptHTTP2: false,
	}
	defer tr.CloseIdleConnections()
	host := cmd.SNI
	if host == "" {
		host = cmd.Addr
	}
	var body io.Reader
	var sent *countingReader
	switch {
	case cmd.BodySize > 0 && cmd.Gzip:
		// A gzip bomb: BodySize bytes of '{' compress to a tiny body.
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		chunk := bytes.Repeat([]byte("{"), 1<<20)
		for left := cmd.BodySize; left > 0; left -= len(chunk) {
			_, _ = zw.Write(chunk[:min(left, len(chunk))])
		}
		_ = zw.Close()
		body = bytes.NewReader(buf.Bytes())
	case cmd.BodySize > 0 && cmd.Stream:
		sent = &countingReader{r: io.LimitReader(zeroes{}, int64(cmd.BodySize))}
		body = sent
	case cmd.BodySize > 0:
		body = strings.NewReader(strings.Repeat("x", cmd.BodySize))
	}
	req, err := http.NewRequestWithContext(ctx, cmd.Method, "https://"+host+cmd.Path, body)
	if err != nil {
		return errReply(err)
	}
	if cmd.Stream {
		// Declared up front, as a driver would: the server must refuse
		// it without reading it all.
		req.ContentLength = int64(cmd.BodySize)
	}
	req.Header.Set("Content-Type", "application/json")
	if cmd.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return errReply(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	r := clientReply{Status: resp.StatusCode, Body: string(b)}
	if sent != nil {
		r.Sent = sent.n.Load()
	}
	return r
}

// zeroes is an endless source of zero bytes.
type zeroes struct{}

func (zeroes) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// countingReader counts the bytes read from r (by the HTTP transport, as
// the server's window lets it send).
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// tlsHold completes a TLS handshake, sends half a request head and waits
// for the server to give up (a slow-loris client).
func tlsHold(cmd clientCmd) clientReply {
	d := &net.Dialer{Timeout: 20 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp4", cmd.Addr, &tls.Config{ServerName: cmd.SNI})
	if err != nil {
		return errReply(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(c, "POST /queries/v1/query-request HTTP/1.1\r\nHost: "+cmd.SNI+"\r\n"); err != nil {
		return errReply(err)
	}
	got, err := io.ReadAll(c)
	r := clientReply{Received: len(got), Body: string(got)}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}
