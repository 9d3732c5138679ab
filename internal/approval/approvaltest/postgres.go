// Package approvaltest starts throwaway PostgreSQL clusters for the tests
// of the approval store and of gateways sharing one (a fleet), from the
// server binaries of the postgresql package (found by binDir).
package approvaltest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// BinEnv names a directory holding initdb and pg_ctl, overriding the
// search.
const BinEnv = "SNOWGATE_PG_BIN"

// ErrNoPostgres: the server binaries are not installed.
var ErrNoPostgres = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package, or set " + BinEnv)

// binDir finds the server binaries: $SNOWGATE_PG_BIN, initdb on PATH,
// pg_config --bindir, then Debian's versioned layout (newest first).
func binDir() (string, error) {
	ok := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if d := os.Getenv(BinEnv); d != "" {
		if ok(d) {
			return d, nil
		}
		return "", fmt.Errorf("%s=%s: %w", BinEnv, d, ErrNoPostgres)
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && ok(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); ok(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(string(filepath.Separator), "usr", "lib", "postgresql", "*", "bin"))
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if ok(d) {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

// Cluster is a running throwaway cluster: trust authentication, loopback
// only, fsync off, in a temporary directory removed by Stop.
type Cluster struct {
	bin       string
	dir, data string
	port      int
	cred      *syscall.Credential
	n         atomic.Int64
}

// Start initialises and starts a cluster on a free loopback port, as
// nobody when running as root (the server refuses root).
func Start() (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "snowgate-pg-")
	if err != nil {
		return nil, fmt.Errorf("postgres dir: %w", err)
	}
	c := &Cluster{bin: bin, dir: dir, data: filepath.Join(dir, "data")}
	if os.Geteuid() == 0 {
		c.cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("postgres dir: %w", err)
		}
	}
	if err := c.run("initdb", "-D", c.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c fsync=off -c max_connections=200", c.port, dir)
	if err := c.run("pg_ctl", "-D", c.data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "120", "start"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + c.dir}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, out.String())
	}
	return nil
}

func (c *Cluster) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// NewDatabase creates an empty database and returns its DSN.
func (c *Cluster) NewDatabase(ctx context.Context) (string, error) {
	db, err := sql.Open("pgx", c.dsn("postgres"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	name := fmt.Sprintf("t%d", c.n.Add(1))
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	return c.dsn(name), nil
}

// Stop stops the cluster and removes its directory.
func (c *Cluster) Stop() {
	_ = c.run("pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop")
	os.RemoveAll(c.dir)
}

// Postgres starts a cluster for one test (stopped at its cleanup) and
// returns the DSN of an empty database. It skips the test only when the
// server binaries are absent.
func Postgres(tb testing.TB) string {
	tb.Helper()
	c, err := Start()
	if errors.Is(err, ErrNoPostgres) {
		tb.Skip(err.Error())
	}
	if err != nil {
		tb.Fatalf("start PostgreSQL: %v", err)
	}
	tb.Cleanup(c.Stop)
	dsn, err := c.NewDatabase(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return dsn
}
