package gateway_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/snowgate/snowgate/internal/audit"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
)

// principalHook stands in for the identity stage (the credential swap):
// observe-only forwarding, plus the Principal the swap would attach: one
// gateway session per successful login, found again by the session (or
// master) token on every later request. It is a test double of the identity
// stage only; the recorder under test is the real one.
type principalHook struct {
	mu       sync.Mutex
	n        int
	byToken  map[string]*gateway.Principal
	tokens   []string // every token seen, for the secrets scan
	sessions []string
}

func newPrincipalHook() *principalHook {
	return &principalHook{byToken: map[string]*gateway.Principal{}}
}

func (p *principalHook) Outbound(_ context.Context, c *gateway.Call, req *http.Request, body []byte) ([]byte, error) {
	tok := strings.TrimSuffix(strings.TrimPrefix(req.Header.Get("Authorization"), `Snowflake Token="`), `"`)
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr := p.byToken[tok]; pr != nil {
		c.Principal = pr
	}
	return body, nil
}

func (p *principalHook) Inbound(_ context.Context, c *gateway.Call, status int, body []byte) ([]byte, error) {
	if status != http.StatusOK || (c.Kind != snowflake.KindLogin && c.Kind != snowflake.KindTokenRequest) {
		return body, nil
	}
	lr, err := snowflake.ParseLoginResponse(body)
	if err != nil || !lr.Success || lr.Token == "" {
		return body, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.Kind == snowflake.KindLogin {
		p.n++
		c.Principal = &gateway.Principal{
			SessionID: fmt.Sprintf("sess-%d-%d", p.n, time.Now().UnixNano()),
			Issuer:    "https://issuer.test", Subject: "repo:acme/pipelines:ref:refs/heads/main",
			Claims: map[string]any{"repository": "acme/pipelines"}, Rule: "pipelines-main",
			Account: testAccount, User: testUser, Role: "AGENT_RO", Warehouse: "AGENT_WH",
			ClientApp: "Go", LoggedIn: time.Now(), CgroupID: c.Workload.CgroupID,
		}
		p.sessions = append(p.sessions, c.Principal.SessionID)
	}
	if c.Principal == nil {
		return body, nil
	}
	p.byToken[lr.Token] = c.Principal
	p.tokens = append(p.tokens, lr.Token)
	if lr.MasterToken != "" {
		p.byToken[lr.MasterToken] = c.Principal
		p.tokens = append(p.tokens, lr.MasterToken)
	}
	return body, nil
}

// SessionPrincipal implements gateway.SessionPrincipals, as the swap
// does: a chunk fetch names its session, and the principal is found again.
func (p *principalHook) SessionPrincipal(id string) *gateway.Principal {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.byToken {
		if pr.SessionID == id {
			return pr
		}
	}
	return nil
}

func (p *principalHook) secrets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string{testPassword}, p.tokens...)
}

// recorderEnv is a recorder with its keys, writing to dir.
type recorderEnv struct {
	dir      string
	rec      *gateway.SessionRecorder
	pub      ed25519.PublicKey
	key      ed25519.PrivateKey
	id       *age.X25519Identity
	audit    *bytes.Buffer
	auditLog *audit.Logger
	hook     *principalHook
}

func newRecorderEnv(t *testing.T, dir string, mutate func(*gateway.SessionRecorderConfig)) *recorderEnv {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	e := &recorderEnv{dir: dir, pub: pub, key: key, id: id, audit: &bytes.Buffer{}, hook: newPrincipalHook()}
	e.auditLog, err = audit.New(audit.Options{Writers: []io.Writer{syncWriter{w: e.audit}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.SessionRecorderConfig{
		Dir:    dir,
		Writer: recording.Options{SigningKey: key, Recipients: []age.Recipient{id.Recipient()}},
		Audit:  e.auditLog,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	e.rec, err = gateway.NewSessionRecorder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.rec.Close() })
	return e
}

var auditMu sync.Mutex

type syncWriter struct{ w io.Writer }

func (s syncWriter) Write(b []byte) (int, error) {
	auditMu.Lock()
	defer auditMu.Unlock()
	return s.w.Write(b)
}

func (e *recorderEnv) auditText() string {
	auditMu.Lock()
	defer auditMu.Unlock()
	return e.audit.String()
}

// fixture starts the data path with this recorder.
func (e *recorderEnv) fixture(t *testing.T) *fixture {
	return newFixture(t, fixtureOptions{
		Credentials: e.hook,
		Recorder:    e.rec,
		Observers:   []gateway.Observer{e.rec, gateway.AuditObserver{Log: e.auditLog, Logins: true}},
	})
}

// waitSealed waits (generously) until no recording is open.
func (e *recorderEnv) waitSealed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for len(e.rec.Open()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("recordings still open: %v", e.rec.Open())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopAgent closes the agent's stdin: the driver closes its connection
// (logging out) and the process exits.
func stopAgent(t *testing.T, a *agentProc) {
	t.Helper()
	a.p.Stdin().Close()
	_ = a.p.Wait(t, 2*time.Minute)
}

// readAll opens a recording and returns its records.
func readAll(t *testing.T, path string, ids ...age.Identity) []recording.Record {
	t.Helper()
	r, err := recording.Open(path, ids...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []recording.Record
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, rec)
	}
}

// sessionRecordings lists the recordings in dir.
func sessionRecordings(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+recording.FileExt))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// TestRecordingGosnowflake runs the real gosnowflake driver through the
// gateway with the session recorder and checks the recording against what
// the client ran and received: every statement, every row (inline and in
// chunks, JSON and Arrow), and nothing else; then verifies it.
func TestRecordingGosnowflake(t *testing.T) {
	e := newRecorderEnv(t, t.TempDir(), nil)
	f := e.fixture(t)
	a := f.startAgent(t)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
		t.Fatalf("login: %s", r.Err)
	}
	const rows = 120000
	seqSQL := fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", rows)
	type step struct {
		cmd  clientCmd
		code int // expected Snowflake error number
	}
	steps := []step{
		{cmd: clientCmd{Op: "exec", SQL: "CREATE TABLE t (id INT, name STRING)"}},
		{cmd: clientCmd{Op: "exec", SQL: "INSERT INTO t VALUES (1, 'a'), (2, 'b')"}},
		{cmd: clientCmd{Op: "exec", SQL: "INSERT INTO t VALUES (?, ?)", Args: []any{3, "bound-value-c"}}},
		{cmd: clientCmd{Op: "query", SQL: "SELECT id, name FROM t WHERE id >= ? ORDER BY id", Args: []any{2}}},
		{cmd: clientCmd{Op: "query", SQL: "SELEC nonsense"}, code: 1003},
		{cmd: clientCmd{Op: "exec", SQL: "ALTER SESSION SET GO_QUERY_RESULT_FORMAT = 'JSON'"}},
		{cmd: clientCmd{Op: "seq", SQL: seqSQL, Rows: rows}},
		{cmd: clientCmd{Op: "exec", SQL: "ALTER SESSION SET GO_QUERY_RESULT_FORMAT = 'ARROW'"}},
		{cmd: clientCmd{Op: "seq", SQL: seqSQL, Rows: rows}},
	}
	// The driver's ping at "open" runs SELECT 1.
	ran := []string{"SELECT 1"}
	var selectRows [][]string
	for _, s := range steps {
		r := a.do(t, s.cmd)
		if s.code != 0 {
			if r.Code != s.code {
				t.Fatalf("%s: code %d (%s), want %d", s.cmd.SQL, r.Code, r.Err, s.code)
			}
		} else if r.Err != "" {
			t.Fatalf("%s: %s", s.cmd.SQL, r.Err)
		}
		if s.cmd.Op == "query" && s.code == 0 {
			selectRows = r.Rows
		}
		ran = append(ran, s.cmd.SQL)
	}
	stopAgent(t, a)
	e.waitSealed(t)

	paths := sessionRecordings(t, e.dir)
	if len(paths) != 1 {
		t.Fatalf("recordings %v, want one (the session)", paths)
	}
	path := paths[0]
	rep, err := recording.Verify(path, e.pub, e.id)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || !rep.RecordsChecked || rep.Seal.Reason != recording.SealSessionEnd {
		t.Fatalf("verify: ok %v, records checked %v, seal %+v, problems %v", rep.OK(), rep.RecordsChecked, rep.Seal, rep.Problems)
	}
	// Without the identity, the frame chain and the seal still verify.
	if rep, _ := recording.Verify(path, e.pub); !rep.OK() || rep.RecordsChecked {
		t.Fatalf("verify without identity: %+v", rep)
	}
	if _, err := recording.Open(path); err == nil {
		t.Fatal("an encrypted recording opened without an identity")
	}

	recs := readAll(t, path, e.id)
	meta := recs[0].Meta
	if meta == nil || meta.Identity.Subject != "repo:acme/pipelines:ref:refs/heads/main" || meta.Rule != "pipelines-main" ||
		meta.Snowflake.Role != "AGENT_RO" || meta.Workload.CgroupID == 0 || meta.Workload.PID == 0 {
		t.Fatalf("session meta %+v", meta)
	}

	// Statements: exactly the ones the client ran, in order.
	var sqls []string
	var bound []string
	for _, r := range recs {
		if r.Kind == recording.KindQueryRequest {
			sqls = append(sqls, r.SQL)
			if len(r.Bindings) > 0 {
				bound = append(bound, string(r.Bindings))
			}
		}
	}
	if strings.Join(sqls, "\n") != strings.Join(ran, "\n") {
		t.Fatalf("recorded statements:\n%s\nwant:\n%s", strings.Join(sqls, "\n"), strings.Join(ran, "\n"))
	}
	if len(bound) != 2 || !strings.Contains(bound[0], "bound-value-c") {
		t.Errorf("bindings %v, want the two bound statements' values", bound)
	}

	// Per query: the rows of its reply and chunks.
	byQuery := map[string][][]*string{}
	var queryOrder []string
	sqlOf := map[string]string{}
	lastSQL := ""
	chunkIdx := map[string]map[int]bool{}
	for _, r := range recs {
		switch r.Kind {
		case recording.KindQueryRequest:
			lastSQL = r.SQL
		case recording.KindQueryResponse:
			if r.QueryID != "" {
				queryOrder = append(queryOrder, r.QueryID)
				sqlOf[r.QueryID] = lastSQL
			}
		case recording.KindChunk:
			if r.Status != 200 || r.ChunkIndex == nil {
				t.Fatalf("chunk record %+v", r)
			}
			if chunkIdx[r.QueryID] == nil {
				chunkIdx[r.QueryID] = map[int]bool{}
			}
			if chunkIdx[r.QueryID][*r.ChunkIndex] {
				t.Errorf("chunk %d of %s recorded twice", *r.ChunkIndex, r.QueryID)
			}
			chunkIdx[r.QueryID][*r.ChunkIndex] = true
		}
		if r.Result != nil && (r.Kind == recording.KindQueryResponse || r.Kind == recording.KindChunk) {
			got, err := recording.ResultRows(r.Result)
			if err != nil {
				t.Fatalf("record %d: %v", r.Seq, err)
			}
			byQuery[r.QueryID] = append(byQuery[r.QueryID], got...)
		}
	}
	seqQueries := 0
	for _, q := range queryOrder {
		switch sqlOf[q] {
		case seqSQL:
			seqQueries++
			got := byQuery[q]
			if len(got) != rows {
				t.Fatalf("query %s: %d rows recorded, want %d", q, len(got), rows)
			}
			if len(chunkIdx[q]) < 2 {
				t.Fatalf("query %s: %d chunks recorded, want several", q, len(chunkIdx[q]))
			}
			seen := make([]bool, rows)
			for _, row := range got {
				n, err := strconv.Atoi(deref(row[0]))
				if err != nil || n < 0 || n >= rows || seen[n] || deref(row[1]) != "row-"+strconv.Itoa(n) {
					t.Fatalf("query %s: recorded row %v", q, strs(row))
				}
				seen[n] = true
			}
		case "SELECT id, name FROM t WHERE id >= ? ORDER BY id":
			var got [][]string
			for _, row := range byQuery[q] {
				got = append(got, strs(row))
			}
			if fmt.Sprint(got) != fmt.Sprint(selectRows) {
				t.Errorf("recorded rows %v, client got %v", got, selectRows)
			}
		}
	}
	if seqQueries != 2 {
		t.Fatalf("%d recorded large queries, want 2 (JSON and Arrow)", seqQueries)
	}

	// The syntax error is recorded as the error the client got.
	foundErr := false
	for _, r := range recs {
		if r.Kind == recording.KindQueryResponse && r.Error != nil && r.Error.Code == "001003" {
			foundErr = true
		}
	}
	if !foundErr {
		t.Error("the syntax error reply is not in the recording")
	}
	if last := recs[len(recs)-1]; last.Kind != recording.KindResponse || !strings.Contains(last.Path, "/session") {
		t.Errorf("last record %s %s, want the logout response", last.Kind, last.Path)
	}

	// Audit: the session started and ended.
	at := e.auditText()
	for _, want := range []string{`"type":"session.start"`, `"type":"session.end"`, `"reason":"session-end"`, `"type":"login.success"`} {
		if !strings.Contains(at, want) {
			t.Errorf("audit lacks %s:\n%s", want, at)
		}
	}

	// Secrets: none of the password or tokens in the recording (decrypted),
	// its export, the exchange log or the audit trail.
	var export bytes.Buffer
	r, err := recording.Open(path, e.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recording.WriteJSONLines(&export, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	f.sink.file.Flush()
	exLog, _ := os.ReadFile(f.sink.path)
	for _, s := range e.hook.secrets() {
		for name, hay := range map[string][]byte{"export": export.Bytes(), "exchange log": exLog, "audit": []byte(at)} {
			if bytes.Contains(hay, []byte(s)) {
				t.Errorf("secret %.6s… found in the %s", s, name)
			}
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

func strs(row []*string) []string {
	out := make([]string, len(row))
	for i, c := range row {
		out[i] = deref(c)
	}
	return out
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return dir
}

// fill writes a file until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	// Fill the last partial block too.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
}

// TestRecordingDiskFull fills the recording file system mid-session: the
// query is refused with a clear error (nothing runs unrecorded), the
// gateway recovers once space returns, and the recording verifies, saying
// which reply was withheld.
func TestRecordingDiskFull(t *testing.T) {
	dir := mountTmpfs(t, 4<<20)
	e := newRecorderEnv(t, dir, nil)
	f := e.fixture(t)
	a := f.startAgent(t)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
		t.Fatalf("login: %s", r.Err)
	}
	if r := a.do(t, clientCmd{Op: "query", SQL: "SELECT 'before'"}); r.Err != "" {
		t.Fatal(r.Err)
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	// The recording's last page may still hold a small reply or two: run
	// queries until the file system refuses one.
	want := []string{"request SELECT 1", "response", "request SELECT 'before'", "response"}
	var r clientReply
	for i := 0; ; i++ {
		sql := fmt.Sprintf("SELECT 'while full %d'", i)
		r = a.do(t, clientCmd{Op: "query", SQL: sql})
		want = append(want, "request "+sql, "response")
		if r.Err != "" {
			want = append(want, "withheld")
			break
		}
		if i == 50 {
			t.Fatal("50 queries on a full file system, none refused")
		}
	}
	if !strings.Contains(r.Err, "cannot record") {
		t.Fatalf("query on a full disk: err %q, want a refusal naming the recording", r.Err)
	}
	if !strings.Contains(e.auditText(), `"type":"recording.failed"`) {
		t.Error("no recording.failed audit event")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	r = a.do(t, clientCmd{Op: "query", SQL: "SELECT 'after'"})
	if r.Err != "" || fmt.Sprint(r.Rows) != "[[after]]" {
		t.Fatalf("query after space returned: rows %v err %q", r.Rows, r.Err)
	}
	stopAgent(t, a)
	e.waitSealed(t)
	paths := sessionRecordings(t, dir)
	if len(paths) != 1 {
		t.Fatalf("recordings %v", paths)
	}
	rep, err := recording.Verify(paths[0], e.pub, e.id)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep.Problems)
	}
	var kinds []string
	for _, rec := range readAll(t, paths[0], e.id) {
		switch rec.Kind {
		case recording.KindQueryRequest:
			kinds = append(kinds, "request "+rec.SQL)
		case recording.KindQueryResponse:
			kinds = append(kinds, "response")
		case recording.KindError:
			kinds = append(kinds, "withheld")
		}
	}
	want = append(want, "request SELECT 'after'", "response")
	if strings.Join(kinds, "|") != strings.Join(want, "|") {
		t.Fatalf("recorded %q\nwant      %q", kinds, want)
	}
}

// TestRecordingObserveOnly: without an identity stage (no Principal) the
// exchanges of a workload process go to a recording of their own, sealed at
// logout.
func TestRecordingObserveOnly(t *testing.T) {
	e := newRecorderEnv(t, t.TempDir(), nil)
	f := newFixture(t, fixtureOptions{Recorder: e.rec, Observers: []gateway.Observer{e.rec}})
	a := f.startAgent(t)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
		t.Fatalf("login: %s", r.Err)
	}
	if r := a.do(t, clientCmd{Op: "query", SQL: "SELECT 'observed'"}); r.Err != "" {
		t.Fatal(r.Err)
	}
	stopAgent(t, a)
	e.waitSealed(t)
	paths := sessionRecordings(t, e.dir)
	if len(paths) != 1 || !strings.HasPrefix(filepath.Base(paths[0]), "obs-") {
		t.Fatalf("recordings %v, want one obs-<cgroup>-<pid>-<time> recording", paths)
	}
	rep, err := recording.Verify(paths[0], e.pub, e.id)
	if err != nil || !rep.OK() || rep.Seal.Reason != recording.SealSessionEnd {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	recs := readAll(t, paths[0], e.id)
	if m := recs[0].Meta; m.Identity.Subject != "" || m.Workload.PID == 0 || m.Snowflake.User != testUser {
		t.Errorf("meta %+v: want no identity, the workload, and the login's user", m)
	}
	var sqls []string
	for _, r := range recs {
		if r.Kind == recording.KindQueryRequest {
			sqls = append(sqls, r.SQL)
		}
		if r.Kind == recording.KindLoginRequest && bytes.Contains(r.Body, []byte(testPassword)) {
			t.Error("the login request kept the password")
		}
	}
	if strings.Join(sqls, "|") != "SELECT 1|SELECT 'observed'" {
		t.Errorf("statements %q", sqls)
	}
}

// exchange is a synthetic exchange of session sid, for recorder tests that
// need no data path.
func exchange(sid, kind, path, req, resp string) *gateway.Exchange {
	var p *gateway.Principal
	if sid != "" {
		p = &gateway.Principal{SessionID: sid, Subject: "sub", Rule: "r"}
	}
	return &gateway.Exchange{Start: time.Now(), Kind: kind, Method: "POST", Path: path, Status: 200,
		RequestBody: []byte(req), ResponseBody: []byte(resp), Principal: p,
		Workload: gateway.Workload{CgroupID: 9, PID: 99}}
}

func commit(t *testing.T, r *gateway.SessionRecorder, x *gateway.Exchange) {
	t.Helper()
	if err := r.Commit(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	r.Observe(x)
}

// TestRecorderIdleSealAndContinuation: an idle session is sealed (reason
// idle); its next exchange opens a continuation recording.
func TestRecorderIdleSealAndContinuation(t *testing.T) {
	e := newRecorderEnv(t, t.TempDir(), func(c *gateway.SessionRecorderConfig) { c.IdleSeal = 100 * time.Millisecond })
	q := `{"sqlText":"SELECT 1"}`
	reply := `{"success":true,"data":{"queryId":"q1","rowtype":[{"name":"1"}],"rowset":[["1"]],"total":1}}`
	commit(t, e.rec, exchange("s1", "query-request", "/queries/v1/query-request", q, reply))
	e.waitSealed(t)
	commit(t, e.rec, exchange("s1", "query-request", "/queries/v1/query-request", q, reply))
	if err := e.rec.Close(); err != nil {
		t.Fatal(err)
	}
	paths := sessionRecordings(t, e.dir)
	if len(paths) != 2 || filepath.Base(paths[0]) != "s1.2.sgrec" || filepath.Base(paths[1]) != "s1.sgrec" {
		t.Fatalf("recordings %v, want s1 and its continuation s1.2", paths)
	}
	for path, reason := range map[string]string{paths[1]: recording.SealIdle, paths[0]: recording.SealShutdown} {
		rep, err := recording.Verify(path, e.pub, e.id)
		if err != nil || !rep.OK() || rep.Seal.Reason != reason {
			t.Errorf("%s: %v %+v, want sealed %s", filepath.Base(path), err, rep, reason)
		}
	}
	at := e.auditText()
	if strings.Count(at, `"type":"session.start"`) != 2 || !strings.Contains(at, `"reason":"idle"`) || !strings.Contains(at, `"reason":"gateway-shutdown"`) {
		t.Errorf("audit:\n%s", at)
	}
	// Closed: further exchanges are refused, not silently dropped.
	if err := e.rec.Commit(context.Background(), exchange("s1", "query-request", "/q", q, reply)); err == nil {
		t.Error("a closed recorder accepted an exchange")
	}
}

// TestRecorderResultPolicy: first_rows and the session byte cap leave rows
// out and say so, in the record and the seal.
func TestRecorderResultPolicy(t *testing.T) {
	rows := make([]string, 50)
	for i := range rows {
		rows[i] = fmt.Sprintf(`["%d","%s"]`, i, strings.Repeat("x", 100))
	}
	reply := `{"success":true,"data":{"queryId":"q1","rowtype":[{"name":"N"},{"name":"S"}],"rowset":[` + strings.Join(rows, ",") + `],"total":50}}`
	tests := []struct {
		name      string
		opts      func(*recording.Options)
		kept      int
		reasonSub string
	}{
		{"full", func(*recording.Options) {}, 50, ""},
		{"first rows", func(o *recording.Options) {
			o.Results = recording.ResultPolicy{Mode: recording.ResultsFirstRows, Rows: 10}
		}, 10, "first 10 rows"},
		{"none", func(o *recording.Options) { o.Results = recording.ResultPolicy{Mode: recording.ResultsNone} }, 0, "none"},
		{"byte cap", func(o *recording.Options) { o.MaxBytes = 20 * 110 }, 20, "byte cap"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newRecorderEnv(t, t.TempDir(), func(c *gateway.SessionRecorderConfig) { tc.opts(&c.Writer) })
			commit(t, e.rec, exchange("s1", "query-request", "/queries/v1/query-request", `{"sqlText":"SELECT n, s FROM t"}`, reply))
			if err := e.rec.Close(); err != nil {
				t.Fatal(err)
			}
			path := sessionRecordings(t, e.dir)[0]
			var res *recording.Result
			for _, r := range readAll(t, path, e.id) {
				if r.Kind == recording.KindQueryResponse {
					res = r.Result
				}
			}
			if res == nil || len(res.Columns) != 2 || res.TotalRows != 50 {
				t.Fatalf("result %+v", res)
			}
			if len(res.Rows) != tc.kept || res.OmittedRows != int64(50-tc.kept) || !strings.Contains(res.OmittedReason, tc.reasonSub) {
				t.Fatalf("kept %d rows, omitted %d (%q); want %d kept", len(res.Rows), res.OmittedRows, res.OmittedReason, tc.kept)
			}
			rep, err := recording.Verify(path, e.pub, e.id)
			if err != nil || !rep.OK() || rep.Seal.OmittedRows != int64(50-tc.kept) {
				t.Fatalf("seal %+v %v", rep.Seal, err)
			}
		})
	}
}

// TestRecordingNode runs the unchanged Node snowflake-sdk through the
// recording gateway: its statements are the recording's, and the rows of
// the multi-chunk result, inline rows then chunks in result order, are
// exactly the rows the driver received (same digest).
func TestRecordingNode(t *testing.T) {
	e := newRecorderEnv(t, t.TempDir(), nil)
	f := e.fixture(t)
	c := testenv.NewNodeClient(t)
	c.CAFile = f.caFile
	c.Proc = &testenv.Proc{Cgroup: f.cg, Netns: f.ns, Root: true}
	const rows = seqRows
	res, want, seqSQL := runNodeScenario(t, c, rows)
	if d := res[3].Digest; d == nil || d.Count != rows || d.SHA256 != want.Sum() {
		t.Fatalf("the driver's digest %+v, want %d rows", d, rows)
	}
	e.waitSealed(t)
	paths := sessionRecordings(t, e.dir)
	if len(paths) != 1 {
		t.Fatalf("recordings %v", paths)
	}
	if rep, err := recording.Verify(paths[0], e.pub, e.id); err != nil || !rep.OK() || rep.Seal.Reason != recording.SealSessionEnd {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	recs := readAll(t, paths[0], e.id)
	var sqls []string
	var inline [][]*string
	chunks := map[int][][]*string{}
	seqQuery := ""
	for _, r := range recs {
		switch {
		case r.Kind == recording.KindQueryRequest:
			sqls = append(sqls, r.SQL)
		case r.Kind == recording.KindQueryResponse && r.Result != nil && len(sqls) > 0 && sqls[len(sqls)-1] == seqSQL && r.QueryID != "":
			seqQuery = r.QueryID
			got, err := recording.ResultRows(r.Result)
			if err != nil {
				t.Fatal(err)
			}
			inline = got
		case r.Kind == recording.KindChunk && r.QueryID == seqQuery && r.ChunkIndex != nil:
			got, err := recording.ResultRows(r.Result)
			if err != nil {
				t.Fatal(err)
			}
			chunks[*r.ChunkIndex] = got
		}
	}
	wantSQL := []string{"CREATE TABLE n (id INT)", "INSERT INTO n VALUES (?), (?)", seqSQL, "SELEC broken"}
	if strings.Join(sqls, "\n") != strings.Join(wantSQL, "\n") {
		t.Fatalf("recorded statements %q, want %q", sqls, wantSQL)
	}
	got := testenv.NewNodeRowsDigest()
	count := 0
	add := func(rs [][]*string) {
		for _, row := range rs {
			got.Add(row[0], row[1])
			count++
		}
	}
	add(inline)
	for i := range len(chunks) {
		rs, ok := chunks[i]
		if !ok {
			t.Fatalf("chunk %d of %d missing from the recording", i, len(chunks))
		}
		add(rs)
	}
	if count != rows || got.Sum() != want.Sum() {
		t.Fatalf("recorded %d rows (digest %s), the driver received %d (%s)", count, got.Sum(), rows, want.Sum())
	}
}

// TestRecorderFailurePolicy: on a full disk, Commit refuses (a Snowflake
// error the driver shows) by default, and lets the reply go with
// on_failure: continue; both audit recording.failed.
func TestRecorderFailurePolicy(t *testing.T) {
	testenv.RequireRoot(t)
	for _, cont := range []bool{false, true} {
		t.Run(fmt.Sprintf("continue=%v", cont), func(t *testing.T) {
			dir := mountTmpfs(t, 1<<20)
			e := newRecorderEnv(t, dir, func(c *gateway.SessionRecorderConfig) { c.ContinueOnFailure = cont })
			q := `{"sqlText":"SELECT 1"}`
			reply := `{"success":true,"data":{"queryId":"q1","rowset":[["1"]],"total":1}}`
			commit(t, e.rec, exchange("s1", "query-request", "/queries/v1/query-request", q, reply))
			fill(t, filepath.Join(dir, "filler"))
			// The recording's last page may still have room: commit until
			// the file system refuses (the recorder audits it).
			var err error
			for i := 0; i < 200 && !strings.Contains(e.auditText(), `"type":"recording.failed"`); i++ {
				err = e.rec.Commit(context.Background(), exchange("s1", "query-request", "/queries/v1/query-request", q, reply))
			}
			var se *snowflake.Error
			switch {
			case cont && err != nil:
				t.Fatalf("on_failure continue: %v", err)
			case !cont && (!errors.As(err, &se) || se.Status() != 200 || !strings.Contains(se.Message, "cannot record")):
				t.Fatalf("err %v, want a Snowflake error (HTTP 200) saying the session cannot be recorded", err)
			}
			if !strings.Contains(e.auditText(), `"type":"recording.failed"`) {
				t.Error("no recording.failed audit event")
			}
		})
	}
}

// TestRecorderStartRecovery: a starting recorder seals what a dead one
// left open, sets aside a file cut before its session start, and leaves
// alone a recording another live recorder is writing.
func TestRecorderStartRecovery(t *testing.T) {
	dir := t.TempDir()
	e := newRecorderEnv(t, dir, nil)
	q := `{"sqlText":"SELECT 1"}`
	reply := `{"success":true,"data":{"queryId":"q1","rowset":[["1"]],"total":1}}`
	commit(t, e.rec, exchange("live", "query-request", "/queries/v1/query-request", q, reply))

	// A recording a killed gateway left: written, never sealed, marker
	// present and unlocked.
	w, err := recording.NewWriter(dir, recording.Meta{SessionID: "dead"}, recording.Options{SigningKey: e.key})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(context.Background(), recording.Record{Kind: recording.KindResponse, Status: 200}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.Path()+".open", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// One killed inside NewWriter: the magic and nothing else.
	cut := filepath.Join(dir, "cut"+recording.FileExt)
	if err := os.WriteFile(cut, []byte(recording.Magic), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cut+".open", nil, 0o600); err != nil {
		t.Fatal(err)
	}

	second, err := gateway.NewSessionRecorder(gateway.SessionRecorderConfig{Dir: dir, Writer: recording.Options{SigningKey: e.key}})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	rep, err := recording.Verify(w.Path(), e.pub)
	if err != nil || !rep.OK() || rep.Seal.Reason != recording.SealRecovered {
		t.Fatalf("dead recording: %v %+v", err, rep)
	}
	if _, err := os.Stat(cut + ".incomplete"); err != nil {
		t.Errorf("the cut recording was not set aside: %v", err)
	}
	live := filepath.Join(dir, "live"+recording.FileExt)
	if rep, _ := recording.Verify(live, e.pub); rep.Sealed {
		t.Fatal("the second recorder sealed a recording the first is still writing")
	}
	commit(t, e.rec, exchange("live", "query-request", "/queries/v1/query-request", q, reply))
	if err := e.rec.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := recording.Verify(live, e.pub, e.id); err != nil || !rep.OK() || rep.Seal.Reason != recording.SealShutdown {
		t.Fatalf("live recording after its recorder closed: %v %+v", err, rep)
	}
}

// TestRecorderSetsAsideCutStarts: a gateway killed inside NewWriter leaves
// a prefix of a recording's first two frames (header, session start) with
// its open marker. The next recorder sets every such prefix aside
// (.incomplete) instead of sealing a recording of no session, whatever the
// cut: empty, inside the magic, the header, or the session-start frame.
func TestRecorderSetsAsideCutStarts(t *testing.T) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := recording.NewWriter(t.TempDir(), recording.Meta{SessionID: "whole"}, recording.Options{SigningKey: key})
	if err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	cuts := []int{0, 3, len(recording.Magic), len(recording.Magic) + 5}
	for n := 40; n < len(whole); n += 97 {
		cuts = append(cuts, n)
	}
	cuts = append(cuts, len(whole)-1)
	dir := t.TempDir()
	for _, n := range cuts {
		path := filepath.Join(dir, fmt.Sprintf("cut-%d%s", n, recording.FileExt))
		if err := os.WriteFile(path, whole[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+".open", nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := gateway.NewSessionRecorder(gateway.SessionRecorderConfig{Dir: dir, Writer: recording.Options{SigningKey: key},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	for _, n := range cuts {
		path := filepath.Join(dir, fmt.Sprintf("cut-%d%s", n, recording.FileExt))
		if _, err := os.Stat(path + ".incomplete"); err != nil {
			t.Errorf("cut at byte %d of %d: not set aside (%v)", n, len(whole), err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cut at byte %d of %d: still a recording (%v)", n, len(whole), err)
		}
	}
}
