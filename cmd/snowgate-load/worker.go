package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/snowflakedb/gosnowflake"
)

// Operation kinds of the mix, and the session-level events reported with
// them.
const (
	opSmall  = "small"  // SELECT <a number unique in the run> on the session
	opLarge  = "large"  // a multi-chunk SELECT, every row checked
	opDML    = "dml"    // INSERT with binds into the workload's table
	opLogin  = "login"  // opening a session
	opLogout = "logout" // closing it
)

// workerSpec is what the coordinator hands one workload process on stdin
// (never in argv: it holds the credential).
type workerSpec struct {
	Phase    string `json:"phase"`
	Index    int    `json:"index"`
	DSN      string `json:"dsn"`
	Sessions int    `json:"sessions"`
	// Start, StopAt: sessions open between Start and Start+Ramp; no
	// operation starts after StopAt; sessions close at CloseAt.
	Start   time.Time     `json:"start"`
	Ramp    time.Duration `json:"ramp"`
	StopAt  time.Time     `json:"stopAt"`
	CloseAt time.Time     `json:"closeAt"`
	Think   time.Duration `json:"think"`
	// OpTimeout bounds one operation (the drivers' own retries included).
	OpTimeout time.Duration `json:"opTimeout"`
	// EndAt ends the run: an operation still in flight then (it started
	// before StopAt) is cancelled, and counted as cut by the end of the
	// run, not as an error, if it started within EndAt−StopAt (the drain)
	// before StopAt; one running longer is a stuck-at-end error. Zero:
	// operations only end by OpTimeout.
	EndAt     time.Time  `json:"endAt,omitzero"`
	Mix       []weighted `json:"mix"`
	LargeRows int        `json:"largeRows"`
	Table     string     `json:"table"`
	// Relogin ends a session after a failed operation and logs in again.
	Relogin bool `json:"relogin,omitempty"`
	// ReceivedFile, if set, receives the value of every small query the
	// workload received, one per line, so a test can look for each in the
	// gateway's recordings.
	ReceivedFile string `json:"receivedFile,omitempty"`
}

// weighted is one entry of the operation mix.
type weighted struct {
	Op     string `json:"op"`
	Weight int    `json:"weight"`
}

// workerResult is one workload's outcome, printed as JSON on stdout.
type workerResult struct {
	Phase string `json:"phase"`
	Index int    `json:"index"`
	// Ops holds per operation kind the latencies of the successes (µs) and
	// the failures by error kind.
	Ops map[string]*opStats `json:"ops"`
	// Samples keeps one message per error kind.
	Samples map[string]string `json:"samples,omitempty"`
	// Fatal is set when the workload could not run at all.
	Fatal string `json:"fatal,omitempty"`
}

// opStats are the outcomes of one operation kind.
type opStats struct {
	LatencyUS []int64        `json:"latencyUs"`
	Errors    map[string]int `json:"errors,omitempty"`
	// CutUS are the ages of the operations cut by the end of the run
	// (in flight at StopAt, still running at EndAt, then cancelled).
	CutUS []int64 `json:"cutUs,omitempty"`
}

// recorder collects outcomes from the sessions of a workload.
type recorder struct {
	mu       sync.Mutex
	res      workerResult
	received []int64
}

// got notes the value of a small query.
func (r *recorder) got(v int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received = append(r.received, v)
}

func (r *recorder) ok(op string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats(op).LatencyUS = append(r.stats(op).LatencyUS, d.Microseconds())
}

// cut notes an operation cancelled by the end of the run, age after its
// start.
func (r *recorder) cut(op string, age time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats(op).CutUS = append(r.stats(op).CutUS, age.Microseconds())
}

func (r *recorder) fail(op string, err error) {
	kind := errorKind(err)
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats(op)
	if s.Errors == nil {
		s.Errors = map[string]int{}
	}
	s.Errors[kind]++
	if r.res.Samples == nil {
		r.res.Samples = map[string]string{}
	}
	if _, ok := r.res.Samples[kind]; !ok {
		msg := err.Error()
		if len(msg) > 300 {
			msg = msg[:300]
		}
		r.res.Samples[kind] = op + ": " + msg
	}
}

func (r *recorder) stats(op string) *opStats {
	if r.res.Ops == nil {
		r.res.Ops = map[string]*opStats{}
	}
	s := r.res.Ops[op]
	if s == nil {
		s = &opStats{}
		r.res.Ops[op] = s
	}
	return s
}

// errorKind names an error for the report: the Snowflake error number
// when the driver reports one, else the transport condition.
func errorKind(err error) string {
	var se *gosnowflake.SnowflakeError
	switch {
	case errors.As(err, &se):
		kind := "snowflake-" + strconv.Itoa(se.Number)
		// 261000 is every non-200 reply the driver gave up on; the
		// status says which.
		switch {
		case se.Number == 261000:
			if _, after, ok := strings.Cut(se.Error(), "HTTP: "); ok && len(after) >= 3 {
				kind += "-http-" + after[:3]
			}
		case se.Number == 3001 && strings.Contains(se.Error(), "already ran; it runs only once"):
			// The gateway refused an approved statement whose run was
			// claimed before (by a gateway since killed): not a policy
			// denial.
			kind += "-already-ran"
		}
		return kind
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection-refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection-reset"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, errWrongResult):
		return "wrong-result"
	case errors.Is(err, errStuckAtEnd):
		return "stuck-at-end"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "connection refused"):
		return "connection-refused"
	case strings.Contains(msg, "connection reset"):
		return "connection-reset"
	case strings.Contains(msg, "timeout"):
		return "timeout"
	case strings.Contains(msg, "certificate"):
		return "tls"
	}
	return "other"
}

// errWrongResult marks a reply that arrived but was not the right one.
var errWrongResult = errors.New("wrong result")

// errStuckAtEnd marks an operation still running at the end of the run
// (after the drain) that had been running longer than the drain when the
// duration ended: not cut by the end, stuck.
var errStuckAtEnd = errors.New("still running at the end of the run")

// runWorker is the workload process: it reads its spec on stdin, runs the
// sessions and prints the result on stdout.
func runWorker(stdin io.Reader, stdout io.Writer) int {
	var spec workerSpec
	if err := json.NewDecoder(stdin).Decode(&spec); err != nil {
		fmt.Fprintln(os.Stderr, "snowgate-load worker: spec:", err)
		return 2
	}
	rec := &recorder{res: workerResult{Phase: spec.Phase, Index: spec.Index}}
	if err := work(spec, rec); err != nil {
		rec.res.Fatal = err.Error()
	}
	if spec.ReceivedFile != "" {
		var b strings.Builder
		for _, v := range rec.received {
			b.WriteString(strconv.FormatInt(v, 10))
			b.WriteByte('\n')
		}
		if err := os.WriteFile(spec.ReceivedFile, []byte(b.String()), 0o600); err != nil && rec.res.Fatal == "" {
			rec.res.Fatal = "received values: " + err.Error()
		}
	}
	if err := json.NewEncoder(stdout).Encode(&rec.res); err != nil {
		fmt.Fprintln(os.Stderr, "snowgate-load worker: result:", err)
		return 2
	}
	return 0
}

// work runs the sessions of one workload until spec.CloseAt. Each session
// has a pool of its own, so closing it logs out and reports the outcome.
func work(spec workerSpec, rec *recorder) error {
	gosnowflake.GetLogger().SetOutput(io.Discard)
	if _, err := gosnowflake.ParseDSN(spec.DSN); err != nil {
		return fmt.Errorf("dsn: %w", err)
	}
	var wg sync.WaitGroup
	for i := range spec.Sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			delay := time.Duration(0)
			if spec.Sessions > 1 {
				delay = spec.Ramp * time.Duration(i) / time.Duration(spec.Sessions)
			}
			sleepUntil(spec.Start.Add(delay))
			session(spec, i, rec)
		}()
	}
	wg.Wait()
	return nil
}

// session is one agent session: log in, run the mix until StopAt, wait for
// CloseAt, log out. With spec.Relogin a failed operation ends the session
// at once and a new one logs in, as a job retried by its CI would.
func session(spec workerSpec, n int, rec *recorder) {
	rng := rand.New(rand.NewPCG(uint64(spec.Index), uint64(n)))
	seq := 0
	for {
		if !sessionOnce(spec, n, rec, rng, &seq) || !time.Now().Before(spec.StopAt) {
			return
		}
	}
}

// sessionOnce runs one login to logout; it reports whether the session
// ended early for a re-login.
func sessionOnce(spec workerSpec, n int, rec *recorder, rng *rand.Rand, seqp *int) (relogin bool) {
	ctx, cancel := context.WithDeadline(context.Background(), spec.CloseAt.Add(spec.OpTimeout))
	defer cancel()
	db, err := sql.Open("snowflake", spec.DSN)
	if err != nil {
		rec.fail(opLogin, err)
		return false
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	db.SetConnMaxLifetime(0)
	var conn *sql.Conn
	for conn == nil && time.Now().Before(spec.StopAt) {
		t0 := time.Now()
		lctx, lcancel := context.WithTimeout(ctx, spec.OpTimeout)
		c, err := db.Conn(lctx)
		if err == nil {
			err = c.PingContext(lctx)
			if err != nil {
				c.Close()
			}
		}
		lcancel()
		if err != nil {
			rec.fail(opLogin, err)
			// The driver already retried for its login timeout.
			sleepUntil(time.Now().Add(max(spec.Think, time.Second)))
			continue
		}
		rec.ok(opLogin, time.Since(t0))
		conn = c
	}
	if conn == nil {
		return false
	}
	total := 0
	for _, w := range spec.Mix {
		total += w.Weight
	}
	seq := *seqp
	defer func() { *seqp = seq }()
	haveTable := false
	for time.Now().Before(spec.StopAt) && total > 0 {
		pick := rng.IntN(total)
		op := spec.Mix[0].Op
		for _, w := range spec.Mix {
			if pick < w.Weight {
				op = w.Op
				break
			}
			pick -= w.Weight
		}
		seq++
		// The operation's own bound, and the end of the run.
		started := time.Now()
		octx, ocancel := context.WithTimeout(ctx, spec.OpTimeout)
		cutByEnd := !spec.EndAt.IsZero() && spec.EndAt.Before(started.Add(spec.OpTimeout))
		if cutByEnd {
			octx, ocancel = withDeadline(octx, ocancel, spec.EndAt)
		}
		var err error
		if op == opDML && !haveTable {
			// Every session makes sure of the workload's table (IF NOT
			// EXISTS): no session depends on another's timing.
			if _, err = conn.ExecContext(octx, "CREATE TABLE IF NOT EXISTS "+spec.Table+" (s INT, n INT)"); err != nil {
				err = fmt.Errorf("create table: %w", err)
			}
			haveTable = err == nil
		}
		t0 := time.Now()
		if err == nil {
			err = runOp(octx, conn, op, spec, n, seq, rec)
		}
		d := time.Since(t0)
		if op == opLarge {
			// gosnowflake 1.19.1 panics ("send on closed channel",
			// chunk_downloader.go:366) when a query's context is cancelled
			// after its last row was read but before the goroutine that
			// downloaded the last chunk has finished: that goroutine then
			// reports the cancellation on a channel the reader closed at
			// the end of the rows. On a saturated machine the goroutine can
			// lag behind the reader by seconds (the 12-minute run lost a
			// workload to it), so the context of a multi-chunk query
			// outlives the query by a grace period instead.
			time.AfterFunc(chunkDownloaderGrace, ocancel)
		} else {
			ocancel()
		}
		if err != nil && cutByEnd && !time.Now().Before(spec.EndAt) {
			// In flight when the run ended and still at its end. Cut,
			// not failed, if it started within the drain before the end
			// (it had as long after the end as before); one that was
			// running longer than that is stuck, and an error.
			if drain := spec.EndAt.Sub(spec.StopAt); started.Before(spec.StopAt.Add(-drain)) {
				rec.fail(op, fmt.Errorf("%w: in flight %v (%v)", errStuckAtEnd, time.Since(started).Round(time.Second), err))
			} else {
				rec.cut(op, time.Since(started))
			}
			break
		}
		if err != nil {
			rec.fail(op, err)
			if spec.Relogin {
				relogin = true
				break
			}
		} else {
			rec.ok(op, d)
		}
		if spec.Think > 0 {
			// Uniform in [think/2, 3·think/2): sessions drift apart.
			sleepUntil(time.Now().Add(spec.Think/2 + time.Duration(rng.Int64N(int64(spec.Think)))))
		}
	}
	if !relogin {
		sleepUntil(spec.CloseAt)
	}
	t0 := time.Now()
	// The pool's Close closes the driver connection, which logs out.
	_ = conn.Close()
	if err := db.Close(); err != nil {
		rec.fail(opLogout, err)
	} else {
		rec.ok(opLogout, time.Since(t0))
	}
	return relogin
}

// chunkDownloaderGrace is how long a multi-chunk query's context stays
// uncancelled after its rows were read (see the gosnowflake panic above).
const chunkDownloaderGrace = time.Minute

// runOp runs one operation of the mix.
func runOp(ctx context.Context, conn *sql.Conn, op string, spec workerSpec, session, seq int, rec *recorder) error {
	switch op {
	case opSmall:
		// Unique in the run (workload, session, sequence), so the reply
		// can be found in a recording; resending it is harmless.
		want := int64(spec.Index)*10_000_000_000 + int64(session)*10_000_000 + int64(seq)
		var v int64
		if err := conn.QueryRowContext(ctx, "SELECT "+strconv.FormatInt(want, 10)).Scan(&v); err != nil {
			return err
		}
		if v != want {
			return fmt.Errorf("%w: SELECT %d gave %d", errWrongResult, want, v)
		}
		rec.got(v)
	case opLarge:
		rows, err := conn.QueryContext(ctx, fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", spec.LargeRows))
		if err != nil {
			return err
		}
		defer rows.Close()
		i := 0
		for rows.Next() {
			var n int64
			var s string
			if err := rows.Scan(&n, &s); err != nil {
				return err
			}
			if n != int64(i) || s != "row-"+strconv.Itoa(i) {
				return fmt.Errorf("%w: row %d = (%d, %q)", errWrongResult, i, n, s)
			}
			i++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if i != spec.LargeRows {
			return fmt.Errorf("%w: %d rows, want %d", errWrongResult, i, spec.LargeRows)
		}
	case opDML:
		res, err := conn.ExecContext(ctx, "INSERT INTO "+spec.Table+" (s, n) VALUES (?, ?)", session, seq)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("%w: INSERT affected %d rows (%v)", errWrongResult, n, err)
		}
	default:
		return fmt.Errorf("unknown operation %q", op)
	}
	return nil
}

// withDeadline narrows ctx (whose cancel is cancel) to end at t; the
// returned cancel releases both.
func withDeadline(ctx context.Context, cancel context.CancelFunc, t time.Time) (context.Context, context.CancelFunc) {
	c, cc := context.WithDeadline(ctx, t)
	return c, func() { cc(); cancel() }
}

func sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}
