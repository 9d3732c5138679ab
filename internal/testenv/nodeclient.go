package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The Node harness: the real snowflake-sdk driver, pinned by
// internal/testenv/node/package-lock.json, driven through client.js. A test
// builds a NodeClient, then either runs a batch of steps (Run) or opens a
// session and sends steps one at a time (Start, NodeSession.Do), which lets
// it act on the server between two statements of one driver connection.

// NodeClientDir is the directory of client.js and its package files,
// relative to the repository root.
const NodeClientDir = "internal/testenv/node"

// nodeCloseGrace is how long Close waits for a client still at work.
const nodeCloseGrace = 15 * time.Second

// DefaultNodeTimeout bounds one client process when NodeClient.Timeout is zero.
const DefaultNodeTimeout = 5 * time.Minute

// NodeFetchAllAsString asks the driver to hand every column type over as the
// server's text, so values can be compared exactly (execute step
// FetchAsString).
var NodeFetchAllAsString = []string{"String", "Boolean", "Number", "Date", "JSON", "Buffer"}

// NodeClient runs internal/testenv/node/client.js with the node found in PATH.
// Set the fields before Run or Start.
type NodeClient struct {
	// CAFile is exported as NODE_EXTRA_CA_CERTS, the only way the driver trusts
	// a private CA (it never uses insecureConnect). Empty leaves it unset. A
	// client running as another user gets a copy in its home directory.
	CAFile string
	// Env holds extra KEY=VALUE entries; they override the defaults (see
	// Environ). The client never inherits the test's environment apart from
	// PATH, so proxy variables and NODE_OPTIONS of the host do not leak in.
	Env []string
	// Proc, when set, runs the client the way Command does: cloned into
	// Proc.Cgroup, inside Proc.Netns, and as nobody without capabilities
	// unless Proc.Root. It excludes SysProcAttr and Prefix.
	Proc *Proc
	// SysProcAttr is used for the node process, e.g. to run it as another
	// user (Credential) or inside a cgroup (UseCgroupFD/CgroupFD).
	SysProcAttr *syscall.SysProcAttr
	// Prefix, when set, is the command node runs under, for example
	// {"ip", "netns", "exec", "agent0"}.
	Prefix []string
	// HomeDir is the client's HOME and working directory (driver caches and
	// files land there). Empty means a fresh directory per client, owned by
	// the user the client runs as (Proc, SysProcAttr.Credential).
	HomeDir string
	// Timeout bounds each client process. Zero means DefaultNodeTimeout.
	Timeout time.Duration
	// Stderr, when set, receives the client's stderr (driver log lines) as
	// they come; it is always kept for error messages as well.
	Stderr io.Writer

	tb     testing.TB
	node   string
	script string
}

// NewNodeClient returns a client for the test tb. It fails the test when node
// or the installed driver is missing: the Node tests must run wherever the
// suite runs, and `make node-deps` installs the driver.
func NewNodeClient(tb testing.TB) *NodeClient {
	tb.Helper()
	node, script, err := findNodeClient()
	if err != nil {
		tb.Fatalf("node client: %v", err)
	}
	return &NodeClient{tb: tb, node: node, script: script}
}

// findNodeClient locates node and client.js and checks that the installed
// snowflake-sdk is the one the lock file pins.
func findNodeClient() (node, script string, err error) {
	node, err = exec.LookPath("node")
	if err != nil {
		return "", "", fmt.Errorf("node not found in PATH (install Node.js 20 or later): %w", err)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		return "", "", fmt.Errorf("run %s --version: %w", node, err)
	}
	if major := nodeMajor(strings.TrimSpace(string(out))); major < 20 {
		return "", "", fmt.Errorf("node %s is too old: snowflake-sdk needs Node.js 20 or later", strings.TrimSpace(string(out)))
	}
	dir, err := nodeClientDir()
	if err != nil {
		return "", "", err
	}
	want, err := lockedSDKVersion(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return "", "", err
	}
	got, err := installedSDKVersion(filepath.Join(dir, "node_modules", "snowflake-sdk", "package.json"))
	if err != nil {
		return "", "", fmt.Errorf("snowflake-sdk is not installed (%w): run `make node-deps`", err)
	}
	if got != want {
		return "", "", fmt.Errorf("installed snowflake-sdk %s differs from the locked %s: run `make node-deps`", got, want)
	}
	return node, filepath.Join(dir, "client.js"), nil
}

func nodeMajor(version string) int {
	v := strings.TrimPrefix(version, "v")
	if i := strings.IndexByte(v, '.'); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0
	}
	return n
}

// nodeClientDir finds the harness directory: from the working directory
// upwards (go test runs in the package directory), then next to this source
// file.
func nodeClientDir() (string, error) {
	var tried []string
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			c := filepath.Join(d, NodeClientDir)
			tried = append(tried, c)
			if _, err := os.Stat(filepath.Join(c, "client.js")); err == nil {
				return c, nil
			}
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil || filepath.Dir(d) == d {
				break
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		c := filepath.Join(filepath.Dir(file), "node")
		tried = append(tried, c)
		if _, err := os.Stat(filepath.Join(c, "client.js")); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("client.js not found (looked in %s)", strings.Join(tried, ", "))
}

func lockedSDKVersion(lockFile string) (string, error) {
	b, err := os.ReadFile(lockFile)
	if err != nil {
		return "", fmt.Errorf("read the Node lock file: %w", err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return "", fmt.Errorf("parse %s: %w", lockFile, err)
	}
	p, ok := lock.Packages["node_modules/snowflake-sdk"]
	if !ok || p.Version == "" {
		return "", fmt.Errorf("%s pins no snowflake-sdk", lockFile)
	}
	return p.Version, nil
}

func installedSDKVersion(pkgFile string) (string, error) {
	b, err := os.ReadFile(pkgFile)
	if err != nil {
		return "", err
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		return "", fmt.Errorf("parse %s: %w", pkgFile, err)
	}
	return pkg.Version, nil
}

// Environ returns the client's environment: PATH, HOME and the cache
// directories under home, NODE_EXTRA_CA_CERTS, and the settings every test
// needs — no cloud metadata probes (SNOWFLAKE_DISABLE_PLATFORM_DETECTION), no
// OCSP cache-server download from the internet
// (SF_OCSP_RESPONSE_CACHE_SERVER_ENABLED=false; a leaf without an AIA OCSP
// URL then passes fail-open without any network call), no connection-shape
// telemetry. SNOWGATE_NODE_LOG of the test process (a driver log level such
// as DEBUG or TRACE) is passed through and also streams the client's stderr
// to the test's. c.Env entries come last and win; an entry set to the empty
// value (e.g. "SF_TELEMETRY_DISABLE_CONNECTION_SHAPE=") re-enables a
// default-off behaviour.
func (c *NodeClient) Environ(home string) []string {
	cache := filepath.Join(home, ".cache", "snowflake")
	env := map[string]string{
		"PATH":                                  os.Getenv("PATH"),
		"HOME":                                  home,
		"XDG_CACHE_HOME":                        filepath.Join(home, ".cache"),
		"SNOWFLAKE_HOME":                        filepath.Join(home, ".snowflake"),
		"SF_OCSP_RESPONSE_CACHE_DIR":            cache,
		"SF_TEMPORARY_CREDENTIAL_CACHE_DIR":     cache,
		"SNOWFLAKE_CRL_ON_DISK_CACHE_DIR":       filepath.Join(cache, "crls"),
		"SNOWFLAKE_DISABLE_PLATFORM_DETECTION":  "true",
		"SF_OCSP_RESPONSE_CACHE_SERVER_ENABLED": "false",
		"SF_TELEMETRY_DISABLE_CONNECTION_SHAPE": "true",
	}
	if c.CAFile != "" {
		env["NODE_EXTRA_CA_CERTS"] = c.CAFile
	}
	if lvl := os.Getenv("SNOWGATE_NODE_LOG"); lvl != "" {
		env["SNOWGATE_NODE_LOG"] = lvl
	}
	for _, kv := range c.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		// An empty value unsets: the driver tests most of these variables
		// for truthiness, where unset and empty mean the same.
		if env[k] != "" {
			out = append(out, k+"="+env[k])
		}
	}
	return out
}

// runsAs reports the user the client runs as when it is not the test's own.
func (c *NodeClient) runsAs() (uid, gid int, other bool) {
	switch {
	case c.Proc != nil && !c.Proc.Root:
		return Nobody, Nobody, true
	case c.SysProcAttr != nil && c.SysProcAttr.Credential != nil:
		return int(c.SysProcAttr.Credential.Uid), int(c.SysProcAttr.Credential.Gid), true
	}
	return 0, 0, false
}

// home returns the client's home directory, creating one when unset. A
// directory for another user is made outside the test's private temp tree
// (which only root may enter) and handed to that user.
func (c *NodeClient) home() (string, error) {
	if c.HomeDir != "" {
		return c.HomeDir, nil
	}
	uid, gid, other := c.runsAs()
	if !other {
		c.HomeDir = c.tb.TempDir()
		return c.HomeDir, nil
	}
	dir, err := os.MkdirTemp("", "snowgate-node-home-")
	if err != nil {
		return "", fmt.Errorf("create node client home: %w", err)
	}
	c.tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		return "", fmt.Errorf("chown %s to %d:%d: %w", dir, uid, gid, err)
	}
	if c.CAFile != "" {
		// The CA usually sits in the test's root-only temp tree: give the
		// other user its own copy.
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return "", fmt.Errorf("read CA file: %w", err)
		}
		ca := filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(ca, pem, 0o644); err != nil {
			return "", fmt.Errorf("copy CA file: %w", err)
		}
		c.CAFile = ca
	}
	c.HomeDir = dir
	return dir, nil
}

// NodeConnection holds snowflake-sdk createConnection options. The common
// ones have fields; Extra carries any other driver option verbatim and wins
// over the fields.
type NodeConnection struct {
	Account   string `json:"account,omitempty"`
	AccessURL string `json:"accessUrl,omitempty"`
	Host      string `json:"host,omitempty"`
	Port      int    `json:"port,omitempty"`
	Protocol  string `json:"protocol,omitempty"`
	// Authenticator: SNOWFLAKE (password, the default), OAUTH,
	// PROGRAMMATIC_ACCESS_TOKEN, WORKLOAD_IDENTITY, SNOWFLAKE_JWT, ...
	Authenticator string `json:"authenticator,omitempty"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Token         string `json:"token,omitempty"`
	// WorkloadIdentityProvider is OIDC for a CI token.
	WorkloadIdentityProvider string `json:"workloadIdentityProvider,omitempty"`
	Role                     string `json:"role,omitempty"`
	Warehouse                string `json:"warehouse,omitempty"`
	Database                 string `json:"database,omitempty"`
	Schema                   string `json:"schema,omitempty"`
	// Extra holds further createConnection options, e.g.
	// {"clientSessionKeepAlive": true}.
	Extra map[string]any `json:"-"`
}

// MarshalJSON merges Extra into the typed fields.
func (n NodeConnection) MarshalJSON() ([]byte, error) {
	type plain NodeConnection
	b, err := json.Marshal(plain(n))
	if err != nil || len(n.Extra) == 0 {
		return b, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	maps.Copy(m, n.Extra)
	return json.Marshal(m)
}

// NodeStep is one step of a client run. Op is configure, connect, execute,
// fetchResult, sleep or destroy; the other fields belong to one op each (see
// client.js).
type NodeStep struct {
	Op string `json:"op"`
	// Options are snowflake.configure() options (configure), merged over the
	// harness defaults: logLevel WARN, ocspFailOpen true.
	Options map[string]any `json:"options,omitempty"`
	// Connection are createConnection options (connect).
	Connection *NodeConnection `json:"connection,omitempty"`

	// SQLText, Binds, ...: the statement (execute).
	SQLText       string         `json:"sqlText,omitempty"`
	Binds         []any          `json:"binds,omitempty"`
	FetchAsString []string       `json:"fetchAsString,omitempty"`
	RequestID     string         `json:"requestId,omitempty"`
	Parameters    map[string]any `json:"parameters,omitempty"`
	AsyncExec     bool           `json:"asyncExec,omitempty"`
	DescribeOnly  bool           `json:"describeOnly,omitempty"`
	// CancelAfterMS calls statement.cancel() that long after the statement
	// started; the outcome is in NodeResult.Cancel.
	CancelAfterMS int64 `json:"cancelAfterMs,omitempty"`
	// QueryID names the statement of a fetchResult step.
	QueryID string `json:"queryId,omitempty"`
	// Buffered takes the driver's complete-callback path (all rows handed
	// over at once) instead of streamResult + streamRows().
	Buffered bool `json:"buffered,omitempty"`
	// Output is "rows" (default) or "digest" (count, SHA-256 of every value,
	// the first and last Keep rows).
	Output string `json:"output,omitempty"`
	Keep   int    `json:"keep,omitempty"`

	// MS is the pause of a sleep step in milliseconds.
	MS int64 `json:"ms,omitempty"`
	// TimeoutMS bounds the step inside the client (default 120 s); a step
	// that times out ends the run with a HARNESS_TIMEOUT error.
	TimeoutMS int64 `json:"timeoutMs,omitempty"`
}

// NodeConnect is a connect step.
func NodeConnect(c NodeConnection) NodeStep { return NodeStep{Op: "connect", Connection: &c} }

// NodeExecute is an execute step that returns every row.
func NodeExecute(sqlText string, binds ...any) NodeStep {
	return NodeStep{Op: "execute", SQLText: sqlText, Binds: binds}
}

// NodeDestroy is a destroy (logout) step.
func NodeDestroy() NodeStep { return NodeStep{Op: "destroy"} }

// NodeSleep is a pause inside the client.
func NodeSleep(d time.Duration) NodeStep { return NodeStep{Op: "sleep", MS: d.Milliseconds()} }

// NodeResult is the client's answer to one step.
type NodeResult struct {
	Step  int        `json:"step"`
	Op    string     `json:"op"`
	OK    bool       `json:"ok"`
	MS    int64      `json:"ms"`
	Error *NodeError `json:"error,omitempty"`

	// ConnectionID is the driver's connection id (connect).
	ConnectionID string `json:"connectionId,omitempty"`
	// Skipped is set by a destroy without a connection.
	Skipped bool `json:"skipped,omitempty"`

	QueryID        string       `json:"queryId,omitempty"`
	RequestID      string       `json:"requestId,omitempty"`
	Columns        []NodeColumn `json:"columns,omitempty"`
	NumRows        *int64       `json:"numRows,omitempty"`
	NumUpdatedRows *int64       `json:"numUpdatedRows,omitempty"`
	// Rows are the cells as the driver returned them: strings, json.Number,
	// bool, nil, or decoded JSON for semi-structured values. BigInt and
	// binary values arrive as strings (decimal, hex).
	Rows   [][]any     `json:"rows,omitempty"`
	Digest *NodeDigest `json:"digest,omitempty"`
	// Results holds every child result of a multi-statement, the first of
	// which is also the step's own fields.
	Results []NodeResult `json:"results,omitempty"`
	// Cancel is the outcome of the step's statement.cancel() call.
	Cancel *NodeCancel `json:"cancel,omitempty"`
}

// NodeCancel is the outcome of statement.cancel().
type NodeCancel struct {
	OK    bool       `json:"ok"`
	Error *NodeError `json:"error,omitempty"`
}

// NodeFetchResult is a fetchResult step: the result of an earlier statement
// by query id.
func NodeFetchResult(queryID string) NodeStep { return NodeStep{Op: "fetchResult", QueryID: queryID} }

// Err returns the step's error, or nil when it succeeded.
func (r NodeResult) Err() error {
	if r.OK {
		return nil
	}
	if r.Error == nil {
		return fmt.Errorf("node step %d (%s) failed without an error", r.Step, r.Op)
	}
	return r.Error
}

// NodeColumn describes one result column as the driver saw it.
type NodeColumn struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Nullable  bool   `json:"nullable"`
	Scale     *int64 `json:"scale"`
	Precision *int64 `json:"precision"`
}

// NodeDigest summarises a result read in digest mode.
type NodeDigest struct {
	Count  int64   `json:"count"`
	SHA256 string  `json:"sha256"`
	First  [][]any `json:"first"`
	Last   [][]any `json:"last"`
}

// NodeError is a driver error as the client reports it.
type NodeError struct {
	Name string `json:"name"`
	// Code is the driver's code as a string: Snowflake codes ("001003",
	// "390100") or the driver's own numbers ("401001" network error, ...);
	// the harness's own failures start with HARNESS_.
	Code     string          `json:"code"`
	SQLState string          `json:"sqlState,omitempty"`
	Message  string          `json:"message"`
	Data     json.RawMessage `json:"data,omitempty"`
	// Status is the HTTP status of a failed response, if any.
	Status  int    `json:"status,omitempty"`
	IsFatal bool   `json:"isFatal,omitempty"`
	Cause   string `json:"cause,omitempty"`
}

func (e *NodeError) Error() string {
	s := fmt.Sprintf("snowflake-sdk %s %s", e.Name, e.Code)
	if e.SQLState != "" {
		s += " (" + e.SQLState + ")"
	}
	return s + ": " + e.Message
}

// NodeRowsDigest computes, over rows of server text (nil for NULL), the
// SHA-256 the client reports in digest mode with NodeFetchAllAsString: per
// cell "-" for NULL or "<byte length>:<text>", cells joined by ",", each row
// ended by ";".
func NodeRowsDigest(rows [][]*string) string {
	d := NewNodeRowsDigest()
	for _, r := range rows {
		d.Add(r...)
	}
	return d.Sum()
}

// NodeRowsDigester computes NodeRowsDigest incrementally, for expected
// results too large to hold.
type NodeRowsDigester struct {
	h   hashWriter
	buf []byte
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

// NewNodeRowsDigest returns an empty digester.
func NewNodeRowsDigest() *NodeRowsDigester { return &NodeRowsDigester{h: sha256.New()} }

// Add hashes one row.
func (d *NodeRowsDigester) Add(cells ...*string) {
	d.buf = d.buf[:0]
	for i, c := range cells {
		if i > 0 {
			d.buf = append(d.buf, ',')
		}
		if c == nil {
			d.buf = append(d.buf, '-')
			continue
		}
		d.buf = strconv.AppendInt(d.buf, int64(len(*c)), 10)
		d.buf = append(d.buf, ':')
		d.buf = append(d.buf, *c...)
	}
	d.buf = append(d.buf, ';')
	d.h.Write(d.buf)
}

// Sum returns the hex digest of the rows added so far.
func (d *NodeRowsDigester) Sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// Run starts a client, sends all steps at once, and returns one result per
// step. The error reports a harness failure (the process died, timed out or
// wrote garbage), never a driver error, which is in the results.
func (c *NodeClient) Run(ctx context.Context, steps ...NodeStep) ([]NodeResult, error) {
	s, err := c.Start(ctx)
	if err != nil {
		return nil, err
	}
	var results []NodeResult
	for _, st := range steps {
		if err := s.send(st); err != nil {
			s.Close()
			return nil, err
		}
	}
	for range steps {
		r, err := s.next()
		if err != nil {
			s.Close()
			return results, err
		}
		results = append(results, r)
	}
	return results, s.Close()
}

// NodeSession is a running client that takes steps one at a time.
type NodeSession struct {
	c      *NodeClient
	cmd    *exec.Cmd
	cancel context.CancelFunc
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr *lockedBuffer
	stray  []string
	closed bool
	err    error
}

// Start runs a client process; the caller sends steps with Do and ends it
// with Close. Close is also registered as a test cleanup.
func (c *NodeClient) Start(ctx context.Context) (*NodeSession, error) {
	home, err := c.home()
	if err != nil {
		return nil, err
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultNodeTimeout
	}
	if c.Proc != nil && (c.SysProcAttr != nil || len(c.Prefix) > 0) {
		return nil, errors.New("node client: Proc excludes SysProcAttr and Prefix")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	argv := append(append([]string{}, c.Prefix...), c.node, c.script)
	var cmd *exec.Cmd
	if c.Proc != nil {
		cmd = Command(c.tb, *c.Proc, c.node, c.script)
	} else {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.SysProcAttr = c.SysProcAttr
	}
	cmd.Dir = home
	cmd.Env = c.Environ(home)
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("node client stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("node client stdout: %w", err)
	}
	s := &NodeSession{c: c, cmd: cmd, cancel: cancel, stdin: stdin, out: bufio.NewReaderSize(stdout, 1<<20), stderr: &lockedBuffer{}}
	cmd.Stderr = s.stderr
	switch {
	case c.Stderr != nil:
		cmd.Stderr = io.MultiWriter(s.stderr, c.Stderr)
	case os.Getenv("SNOWGATE_NODE_LOG") != "":
		// A debugging run: show the driver's log as it happens.
		cmd.Stderr = io.MultiWriter(s.stderr, os.Stderr)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start node client %s: %w", strings.Join(argv, " "), err)
	}
	if c.Proc != nil {
		// Command builds no context-bound command: kill at the deadline here.
		go func() {
			<-ctx.Done()
			cmd.Process.Kill()
		}()
	}
	c.tb.Cleanup(func() { s.Close() })
	return s, nil
}

// Do sends one step and waits for its result. The error reports a harness
// failure; a driver error is in the result (see NodeResult.Err).
func (s *NodeSession) Do(step NodeStep) (NodeResult, error) {
	if err := s.send(step); err != nil {
		return NodeResult{}, err
	}
	return s.next()
}

func (s *NodeSession) send(step NodeStep) error {
	if s.closed {
		return errors.New("node client: session closed")
	}
	b, err := json.Marshal(step)
	if err != nil {
		return fmt.Errorf("encode node step %s: %w", step.Op, err)
	}
	if _, err := s.stdin.Write(append(b, '\n')); err != nil {
		return s.failure(fmt.Errorf("send node step %s: %w", step.Op, err))
	}
	return nil
}

// next reads the next result line. Lines that are not results (a dependency
// printing to stdout despite client.js) are kept for the error message.
func (s *NodeSession) next() (NodeResult, error) {
	for {
		line, err := s.out.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var r NodeResult
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.UseNumber()
			if derr := dec.Decode(&r); derr == nil && r.Op != "" {
				if r.Op == "fatal" {
					return r, s.failure(fmt.Errorf("node client crashed: %v", r.Error))
				}
				return r, nil
			}
			s.stray = append(s.stray, string(bytes.TrimSpace(line)))
		}
		if err != nil {
			return NodeResult{}, s.failure(fmt.Errorf("node client ended before answering: %w", err))
		}
	}
}

// failure waits for the process and wraps err with its exit status, stray
// output and stderr, so a broken run explains itself.
func (s *NodeSession) failure(err error) error {
	werr := s.Close()
	var b strings.Builder
	b.WriteString(err.Error())
	if werr != nil {
		fmt.Fprintf(&b, "; exit: %v", werr)
	}
	if len(s.stray) > 0 {
		fmt.Fprintf(&b, "; stray stdout: %q", s.stray)
	}
	if e := s.Stderr(); e != "" {
		fmt.Fprintf(&b, "; stderr:\n%s", e)
	}
	return errors.New(b.String())
}

// Stderr returns what the client wrote to stderr so far (driver warnings and
// errors; more with the configure option logLevel).
func (s *NodeSession) Stderr() string { return s.stderr.String() }

// Close ends the client: end of input, then wait for it to exit (it is
// killed at the session deadline). It returns the exit error, if any.
func (s *NodeSession) Close() error {
	if s.closed {
		return s.err
	}
	s.closed = true
	s.stdin.Close()
	// The client exits right after its last step; one still busy (a step
	// nobody waits for any more, a hung driver) is killed after a grace time.
	grace := time.AfterFunc(nodeCloseGrace, s.cancel)
	defer grace.Stop()
	// Drain what is left so the process is never blocked on a full pipe.
	io.Copy(io.Discard, s.out)
	err := s.cmd.Wait()
	s.cancel()
	if err != nil {
		s.err = fmt.Errorf("node client: %w", err)
	}
	return s.err
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Keep the tail only: a chatty trace log must not eat the test's memory.
	if l.buf.Len() > 4<<20 {
		tail := l.buf.Bytes()[l.buf.Len()-(1<<20):]
		l.buf = *bytes.NewBuffer(append([]byte("[...]\n"), tail...))
	}
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
