package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sf "github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/testenv"
)

// The chunk restart test reads a multi-chunk result with gosnowflake through
// `snowgate run`, and replaces the daemon between the first row and the
// rest: the chunk URLs the first daemon rewrote are fetched from its
// successor.

const (
	chunkAgentEnv = "SNOWGATE_CHUNK_TEST_AGENT"
	// chunkRows makes the first page (1,000 rows inline) and four chunks
	// of the emulator's 50,000 rows.
	chunkRows = 200_001
)

// chunkReport is what the chunk agent read.
type chunkReport struct {
	Rows int    `json:"rows"`
	Err  string `json:"err,omitempty"`
}

// TestChunkAgentProcess is not a test: it is the agent of the chunk restart
// test. It runs the multi-chunk SELECT fetching one chunk at a time, reads
// the first row, prints "first", waits for a line on stdin, reads the rest
// (checking every row) and prints its chunkReport as JSON. It skips
// otherwise.
func TestChunkAgentProcess(t *testing.T) {
	dsn := os.Getenv(chunkAgentEnv)
	if dsn == "" {
		t.Skip("helper process for the chunk restart test")
	}
	// One download at a time, one chunk ahead: the chunks after the
	// first are fetched once the agent reads on.
	sf.MaxChunkDownloadWorkers = 1
	// The refused fetches of the last round are expected: keep the
	// driver's retry log (each naming the chunk URL) out of the output.
	_ = sf.GetLogger().SetLogLevel("fatal")
	db, err := sql.Open("snowflake", dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", chunkRows))
	if err != nil {
		fmt.Fprintln(os.Stderr, "query:", err)
		os.Exit(1)
	}
	defer rows.Close()
	var rep chunkReport
	read := func() bool {
		if !rows.Next() {
			return false
		}
		var n int
		var s string
		if err := rows.Scan(&n, &s); err != nil {
			rep.Err = err.Error()
			return false
		}
		if n != rep.Rows || s != "row-"+strconv.Itoa(n) {
			rep.Err = fmt.Sprintf("row %d is (%d, %q)", rep.Rows, n, s)
			return false
		}
		rep.Rows++
		return true
	}
	if !read() {
		fmt.Fprintln(os.Stderr, "first row:", rows.Err(), rep.Err)
		os.Exit(1)
	}
	fmt.Println("first")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		os.Exit(2)
	}
	for read() {
	}
	if err := rows.Err(); err != nil && rep.Err == "" {
		rep.Err = err.Error()
	}
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
	os.Exit(0)
}

// chunkAgent starts the chunk agent and waits until it has its first row.
func (e *restartEnv) chunkAgent(t *testing.T) *testenv.Piped {
	t.Helper()
	p := testenv.StartPiped(t, e.agentCommand(t, "TestChunkAgentProcess", chunkAgentEnv+"="+e.dsn))
	if line := p.Line(t, 3*time.Minute, func(s string) bool { s = strings.TrimSpace(s); return s == "first" || strings.HasPrefix(s, "{") }); line != "first" {
		t.Fatalf("chunk agent: %q", line)
	}
	return p
}

// chunkFinish lets the agent read on and returns its report.
func chunkFinish(t *testing.T, p *testenv.Piped) chunkReport {
	t.Helper()
	if _, err := p.Stdin().Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	line := p.Line(t, 4*time.Minute, func(s string) bool { return strings.HasPrefix(strings.TrimSpace(s), "{") })
	var r chunkReport
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("chunk agent report %q: %v", line, err)
	}
	return r
}

var chunkKeyLine = regexp.MustCompile(`chunk key loaded.*key_id=([0-9a-f]{8})`)

// chunkKeyIDs are the chunk key ids the daemons logged, in order.
func chunkKeyIDs(logs string) []string {
	var ids []string
	for _, m := range chunkKeyLine.FindAllStringSubmatch(logs, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// TestChunksSurviveRestart: a result whose first page came through one
// daemon is read to its end through its successor — after a hand-over
// (SIGHUP) and after a SIGKILL and a fresh start — because both have the
// chunk key in the state directory. A successor with another key (the key
// file removed) refuses the first one's chunk URLs, and the driver reports
// the failed fetch.
func TestChunksSurviveRestart(t *testing.T) {
	e := newRestartEnv(t)
	keyFile := filepath.Join(e.dir, "state", chunkKeyName)
	d := e.startDaemon(t, "daemon", nil, nil)
	e.waitHealthy(t, d)
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("chunk key file: %v %v", fi, err)
	}

	// A hand-over between the first row and the rest.
	a := e.chunkAgent(t)
	pid := handOver(t, d.cmd.Process.Pid, d.log)
	killLater(t, pid)
	waitExit(t, d, "the old daemon after the hand-over")
	e.waitHealthy(t, nil)
	if r := chunkFinish(t, a); r.Err != "" || r.Rows != chunkRows {
		t.Fatalf("after the hand-over the agent read %d of %d rows: %s\n%s", r.Rows, chunkRows, r.Err, d.logs())
	}

	// SIGKILL, then a new daemon.
	a = e.chunkAgent(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, d.log)
	d2 := e.startDaemon(t, "daemon2", nil, nil)
	e.waitHealthy(t, d2)
	if r := chunkFinish(t, a); r.Err != "" || r.Rows != chunkRows {
		t.Fatalf("after SIGKILL and a new daemon the agent read %d of %d rows: %s\n%s", r.Rows, chunkRows, r.Err, d2.logs())
	}
	ids := chunkKeyIDs(d.logs() + d2.logs())
	if len(ids) != 3 || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("the daemons used chunk keys %v, want one key three times", ids)
	}
	if strings.Contains(d.logs()+d2.logs(), "refused chunk fetch") {
		t.Errorf("a chunk fetch was refused:\n%s", d.logs()+d2.logs())
	}

	// A successor with another key: the URLs in flight are refused like
	// unknown ones, and the driver gives up on the chunk.
	a = e.chunkAgent(t)
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := d2.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d2.logs())
	}
	d3 := e.startDaemon(t, "daemon3", nil, nil)
	e.waitHealthy(t, d3)
	r := chunkFinish(t, a)
	if r.Err == "" || r.Rows >= chunkRows {
		t.Fatalf("with another key the agent read %d of %d rows, error %q", r.Rows, chunkRows, r.Err)
	}
	t.Logf("with another key: %d rows, then %s", r.Rows, r.Err)
	if ids3 := chunkKeyIDs(d3.logs()); len(ids3) != 1 || ids3[0] == ids[0] {
		t.Errorf("the last daemon used chunk keys %v, want a new one (not %s)", ids3, ids[0])
	}
	testenv.WaitFor(t, time.Minute, func() bool { return strings.Contains(d3.logs(), "refused chunk fetch") }, "the refused chunk fetch to be logged")
	if !strings.Contains(d3.logs(), "sealed with a key this gateway does not hold") {
		t.Errorf("the refusal does not say the key differs:\n%s", d3.logs())
	}
	// The refusal names no URL, token or key.
	for _, line := range strings.Split(d3.logs(), "\n") {
		if strings.Contains(line, "refused chunk fetch") && (strings.Contains(line, "http") || strings.Contains(line, "token=") || strings.Contains(line, "_snowgate/chunk")) {
			t.Errorf("refusal log line names the chunk: %s", line)
		}
	}
	if err := d3.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d3.logs())
	}

	// Every chunk read is in its session's recording, with its place in
	// the result, whichever daemon served it: the sealed URL names the
	// session, so none falls back to a per-workload recording.
	chunks := 0
	paths, err := filepath.Glob(filepath.Join(e.dir, "recordings", "*"+recording.FileExt))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range paths {
		rd, err := recording.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		session := rd.Meta().Identity.Subject != ""
		for {
			rec, err := rd.Next()
			if err != nil {
				break
			}
			if rec.Kind != recording.KindChunk || rec.Status != 200 {
				continue
			}
			chunks++
			if !session || rec.ChunkIndex == nil || rec.Note != fmt.Sprintf("chunk %d of 4", *rec.ChunkIndex+1) {
				t.Errorf("%s: chunk record outside a session or without its place (%q)", filepath.Base(path), rec.Note)
			}
		}
		rd.Close()
	}
	if chunks < 8 {
		t.Errorf("%d chunk records in %d recordings, want at least the 8 of the two results read", chunks, len(paths))
	}
}
