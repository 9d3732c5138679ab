package demo

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/snowflakedb/gosnowflake"
)

// Environment of the agent: what a Snowflake client needs to reach the
// demo account through the gateway (AgentEnv), plus the emulator's real
// address, which the scripted agent tries to reach directly to show that it
// cannot.
const (
	envAccount       = "SNOWFLAKE_ACCOUNT"
	envHost          = "SNOWFLAKE_HOST"
	envAuthenticator = "SNOWFLAKE_AUTHENTICATOR"
	envToken         = "SNOWFLAKE_TOKEN"
	envDirect        = "SNOWGATE_DEMO_DIRECT"
)

// AgentEnv is the environment a client in the demo's agents' cgroup gets:
// the account, the host, the workload-identity authenticator and a fresh
// token, and the gateway CA for Go (SSL_CERT_FILE), Node
// (NODE_EXTRA_CA_CERTS) and Python (REQUESTS_CA_BUNDLE).
func AgentEnv(token, caFile string) []string {
	return []string{
		envAccount + "=" + demoAccount,
		envHost + "=" + demoHost,
		envAuthenticator + "=WORKLOAD_IDENTITY",
		envToken + "=" + token,
		"SSL_CERT_FILE=" + caFile,
		"NODE_EXTRA_CA_CERTS=" + caFile,
		"REQUESTS_CA_BUNDLE=" + caFile,
		// No cloud metadata service answers here; the drivers need not ask.
		"SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true",
	}
}

// RunAgent is the scripted agent (`snowgate demo agent`). It runs in the
// agents' cgroup and uses gosnowflake exactly as an unchanged coding agent
// would, printing what it sees on out.
func RunAgent(ctx context.Context, out io.Writer, rows int) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	gosnowflake.GetLogger().SetOutput(io.Discard)
	cfg := &gosnowflake.Config{
		Account:                  os.Getenv(envAccount),
		Host:                     os.Getenv(envHost),
		Port:                     443,
		Protocol:                 "https",
		Authenticator:            gosnowflake.AuthTypeWorkloadIdentityFederation,
		WorkloadIdentityProvider: "OIDC",
		Token:                    os.Getenv(envToken),
		// The agent asks for more than it may have; the gateway's rule
		// decides what the session really gets.
		Role:             "ACCOUNTADMIN",
		Warehouse:        "BIG_WH",
		Database:         "DEMO_DB",
		Schema:           "PUBLIC",
		DisableTelemetry: true,
	}
	if cfg.Account == "" || cfg.Token == "" {
		return errors.New("agent: SNOWFLAKE_ACCOUNT and SNOWFLAKE_TOKEN must be set")
	}
	connector := gosnowflake.NewConnector(gosnowflake.SnowflakeDriver{}, *cfg)
	db := sql.OpenDB(connector)
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("agent: log in to %s: %w", cfg.Host, err)
	}

	say("connected to https://%s with a workload-identity token (asked for role ACCOUNTADMIN)", cfg.Host)
	var user, role, wh string
	if err := conn.QueryRowContext(ctx, "SELECT CURRENT_USER(), CURRENT_ROLE(), CURRENT_WAREHOUSE()").Scan(&user, &role, &wh); err != nil {
		return fmt.Errorf("agent: read session: %w", err)
	}
	say("session: CURRENT_USER()=%s CURRENT_ROLE()=%s CURRENT_WAREHOUSE()=%s", user, role, wh)

	say("read: SELECT ID, CUSTOMER, AMOUNT FROM ORDERS WHERE AMOUNT > 50")
	rs, err := conn.QueryContext(ctx, "SELECT ID, CUSTOMER, AMOUNT FROM ORDERS WHERE AMOUNT > ? ORDER BY ID", "50")
	if err != nil {
		return fmt.Errorf("agent: read orders: %w", err)
	}
	for rs.Next() {
		var id int
		var customer, amount string
		if err := rs.Scan(&id, &customer, &amount); err != nil {
			rs.Close()
			return fmt.Errorf("agent: scan order: %w", err)
		}
		say("  row: id=%d customer=%s amount=%s", id, customer, amount)
	}
	if err := rs.Close(); err != nil {
		return fmt.Errorf("agent: read orders: %w", err)
	}

	say("read: a %d-row SELECT, streamed in result chunks through the gateway", rows)
	start := time.Now()
	var count, sum int64
	rs, err = conn.QueryContext(ctx, fmt.Sprintf("SELECT SEQ4() AS N, RANDSTR(12, SEQ4()) AS S FROM TABLE(GENERATOR(ROWCOUNT => %d))", rows))
	if err != nil {
		return fmt.Errorf("agent: large select: %w", err)
	}
	for rs.Next() {
		var v int64
		var s string
		if err := rs.Scan(&v, &s); err != nil {
			rs.Close()
			return fmt.Errorf("agent: scan: %w", err)
		}
		if v != count {
			rs.Close()
			return fmt.Errorf("agent: row %d carries N=%d", count, v)
		}
		count++
		sum += v
	}
	if err := rs.Close(); err != nil {
		return fmt.Errorf("agent: read large result: %w", err)
	}
	say("  %d rows, sum(N)=%d, in %s", count, sum, time.Since(start).Round(time.Millisecond))

	say("dml: UPDATE ORDERS SET AMOUNT = AMOUNT + 10 WHERE ID = 2 (waits for a reviewer)")
	start = time.Now()
	res, err := conn.ExecContext(ctx, "UPDATE ORDERS SET AMOUNT = AMOUNT + 10 WHERE ID = ?", 2)
	if err != nil {
		return fmt.Errorf("agent: update: %w", err)
	}
	n, _ := res.RowsAffected()
	say("  approved and run: %d row updated after %s", n, time.Since(start).Round(100*time.Millisecond))
	var amount string
	if err := conn.QueryRowContext(ctx, "SELECT AMOUNT FROM ORDERS WHERE ID = 2").Scan(&amount); err != nil {
		return fmt.Errorf("agent: read back: %w", err)
	}
	say("  order 2 now has amount=%s", amount)

	say("ddl: DROP TABLE ORDERS")
	_, err = conn.ExecContext(ctx, "DROP TABLE ORDERS")
	var sfErr *gosnowflake.SnowflakeError
	switch {
	case err == nil:
		return errors.New("agent: DROP TABLE ran; the gateway should have refused it")
	case errors.As(err, &sfErr):
		say("  refused: error %06d (SQLState %s): %s", sfErr.Number, sfErr.SQLState, oneLine(sfErr.Message))
	default:
		say("  refused: %s", oneLine(err.Error()))
	}

	say("bypass attempts (each must fail):")
	for _, b := range bypasses(os.Getenv(envDirect)) {
		err := b.try(ctx)
		if err == nil {
			return fmt.Errorf("agent: bypass %q succeeded", b.name)
		}
		say("  %-48s refused: %s", b.name, oneLine(err.Error()))
	}
	if err := conn.Close(); err != nil {
		return fmt.Errorf("agent: close: %w", err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("agent: log out: %w", err)
	}
	say("logged out")
	return nil
}

// bypass is one way an agent might try to reach Snowflake around the
// gateway.
type bypass struct {
	name string
	try  func(context.Context) error
}

func bypasses(direct string) []bypass {
	dialTLS := func(ctx context.Context, addr, sni string) error {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true}) //nolint:gosec // the attempt must fail before any certificate matters
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		return errors.New("handshake completed")
	}
	var bs []bypass
	if direct != "" {
		bs = append(bs, bypass{"TLS straight to the real upstream " + direct, func(ctx context.Context) error {
			if err := dialTLS(ctx, direct, "localhost"); err != nil && !strings.Contains(err.Error(), "completed") {
				return err
			}
			return nil
		}})
	}
	bs = append(bs,
		bypass{"TLS to " + demoAddr + ":443 with SNI example.com", func(ctx context.Context) error {
			if err := dialTLS(ctx, demoAddr+":443", "example.com"); err != nil && !strings.Contains(err.Error(), "completed") {
				return err
			}
			return nil
		}},
		bypass{"QUIC (UDP 443) to " + demoAddr, func(context.Context) error {
			c, err := net.Dial("udp", demoAddr+":443")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("quic initial"))
			return err
		}},
		bypass{"DNS over TLS (TCP 853)", func(ctx context.Context) error {
			c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", "192.0.2.53:853")
			if err == nil {
				c.Close()
			}
			return err
		}},
		bypass{"raw IP socket (even as root)", func(context.Context) error {
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_TCP)
			if err == nil {
				syscall.Close(fd)
				return nil
			}
			return os.NewSyscallError("socket", err)
		}},
	)
	return bs
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// atoi parses a decimal, or returns 0.
func atoi(s string) int {
	n, _ := strconv.Atoi(strings.TrimSpace(s))
	return n
}
