package gateway_test

// The agent side of the end-to-end tests: the test binary re-executed in the
// agents' cgroup and a private network namespace (testenv.Command), driven
// by JSON commands on stdin, one JSON reply per line on stdout. It runs the
// real gosnowflake driver, or raw TCP/TLS for the refusal cases.

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snowflakedb/gosnowflake"
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
}

// TestGatewayClientProcess is not a test: it is the client process of the
// end-to-end tests. It skips otherwise.
func TestGatewayClientProcess(t *testing.T) {
	if os.Getenv(clientEnv) != "1" {
		t.Skip("helper process for the gateway end-to-end tests")
	}
	c := &agent{}
	out := json.NewEncoder(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var cmd clientCmd
		var r clientReply
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			r.Err = err.Error()
		} else {
			r = c.run(cmd)
		}
		if err := out.Encode(r); err != nil {
			os.Exit(3)
		}
	}
	if c.conn != nil {
		c.conn.Close()
		c.db.Close()
	}
	os.Exit(0)
}

type agent struct {
	db   *sql.DB
	conn *sql.Conn
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
		rows, err := a.conn.QueryContext(ctx, cmd.SQL, cmd.Args...)
		if err != nil {
			return errReply(err)
		}
		defer rows.Close()
		cols, err := rows.Columns()
		if err != nil {
			return errReply(err)
		}
		var r clientReply
		for rows.Next() {
			cells := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range cells {
				ptrs[i] = &cells[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return errReply(err)
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
		if err := rows.Err(); err != nil {
			return errReply(err)
		}
		return r
	case "seq":
		// Every row is checked: n is its position, s is 'row-' || n.
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
		return clientReply{Count: i}
	case "raw":
		return rawExchange(cmd)
	case "https":
		return httpsExchange(ctx, cmd)
	case "tls-hold":
		return tlsHold(cmd)
	}
	return clientReply{Err: "unknown op " + cmd.Op}
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
	if cmd.BodySize > 0 {
		body = strings.NewReader(strings.Repeat("x", cmd.BodySize))
	}
	req, err := http.NewRequestWithContext(ctx, cmd.Method, "https://"+host+cmd.Path, body)
	if err != nil {
		return errReply(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return errReply(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return clientReply{Status: resp.StatusCode, Body: string(b)}
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
