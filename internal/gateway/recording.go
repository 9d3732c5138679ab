package gateway

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snowgate/snowgate/internal/audit"
	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// SessionRecorderConfig configures a SessionRecorder.
type SessionRecorderConfig struct {
	// Dir holds the recordings (<session>.sgrec). Required; created 0700.
	Dir string
	// Writer are the options of every recording: age recipients, the
	// signing key (required), the sync and result policies, the per-session
	// byte cap.
	Writer recording.Options
	// IdleSeal seals a session's recording once it has had no exchange for
	// this long (0: never, only at logout and Close). A later exchange of
	// the session opens a continuation recording.
	IdleSeal time.Duration
	// ContinueOnFailure releases replies the recorder could not store
	// (audited as recording.failed). The default refuses them.
	ContinueOnFailure bool
	// MaxChunkBytes caps a result chunk held in memory until it is
	// recorded; a larger chunk is refused. Default 256 MiB.
	MaxChunkBytes int64
	// Gateway describes this gateway in each recording (version, host).
	Gateway string
	// Audit receives session.start, session.end and recording.failed.
	Audit *audit.Logger
	// Sealed, when set, is called (on its own goroutine) with the path of
	// every recording once sealed: the uploader's cue.
	Sealed func(path string)
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// SessionRecorder is the gateway's Recorder: one recording per gateway
// session (Principal.SessionID), opened by the session's first exchange
// (its login), sealed at logout, after IdleSeal without exchanges, and by
// Close. Every exchange of the session is recorded before its reply is
// released: the request (SQL text, bindings, the policy verdict), the
// response (status, result metadata, inline rows), every result chunk
// fetched through the gateway (chunks carry no token: the sealed chunk URL
// names the session its reply was issued to, so a chunk is recorded in that
// session's recording even when fetched from a successor gateway), errors,
// renewals and logout. The recorder keeps nothing per query or chunk.
//
// Exchanges without a Principal (observe-only, or a login that failed
// before a session existed) go to a recording per workload process,
// named obs-<cgroup id>-<pid>-<time>, sealed like the others.
//
// SessionRecorder is also an Observer: refusals that never reached Commit
// (a denied statement, an upstream failure, a reply withheld because
// recording failed) are appended after the fact, so the recording says
// what the agent was told. Add it to Config.Observers as well as
// Config.Recorder.
type SessionRecorder struct {
	cfg SessionRecorderConfig
	log *slog.Logger

	mu       sync.Mutex
	sessions map[string]*liveSession
	// committed marks exchanges Commit stored, so Observe skips them;
	// failed those it could not store (their records stay pending in the
	// writer and reach the file with the next successful write).
	committed map[*Exchange]bool
	failed    map[*Exchange]*liveSession
	closed    bool
	stop      chan struct{}
	done      chan struct{}
}

// liveSession is one open recording.
type liveSession struct {
	key    string
	w      *recording.Writer
	marker string
	// lock holds an exclusive flock on the marker while the recording is
	// open: a daemon taking over (or a second one) never recovers it.
	lock *os.File
	// mu keeps the records of one exchange together.
	mu sync.Mutex
}

// openSuffix marks a recording the gateway has open: a crash leaves the
// marker, and the next start recovers (seals) exactly those recordings.
const openSuffix = ".open"

// NewSessionRecorder opens (creating) cfg.Dir, seals the recordings a
// crashed gateway left open there, and starts the idle sealer.
func NewSessionRecorder(cfg SessionRecorderConfig) (*SessionRecorder, error) {
	if cfg.Dir == "" {
		return nil, errors.New("session recorder: no directory")
	}
	if len(cfg.Writer.SigningKey) == 0 {
		return nil, errors.New("session recorder: no signing key")
	}
	if cfg.MaxChunkBytes <= 0 {
		cfg.MaxChunkBytes = 256 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("session recorder: %w", err)
	}
	r := &SessionRecorder{
		cfg: cfg, log: cfg.Logger,
		sessions:  map[string]*liveSession{},
		committed: map[*Exchange]bool{},
		failed:    map[*Exchange]*liveSession{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if err := r.recoverOpen(); err != nil {
		return nil, err
	}
	go r.idleLoop()
	return r, nil
}

// recoverOpen seals the recordings whose open markers a crash left.
func (r *SessionRecorder) recoverOpen() error {
	markers, err := filepath.Glob(filepath.Join(r.cfg.Dir, "*"+recording.FileExt+openSuffix))
	if err != nil {
		return fmt.Errorf("session recorder: %w", err)
	}
	for _, m := range markers {
		path := strings.TrimSuffix(m, openSuffix)
		lock, err := lockMarker(m, false)
		if err != nil {
			// Open in a live gateway (the one this one takes over from).
			continue
		}
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			_ = os.Remove(m)
			lock.Close()
			continue
		}
		rep, err := recording.Recover(path, r.cfg.Writer.SigningKey)
		if err != nil && incomplete(path, r.cfg.Writer.SigningKey) {
			// Killed inside NewWriter, before the session start was
			// durable: no reply was ever released from this file.
			aside := path + ".incomplete"
			if rerr := os.Rename(path, aside); rerr == nil {
				_ = os.Remove(m)
				lock.Close()
				r.log.Warn("set aside a recording cut before its session start was durable", "path", aside)
				continue
			}
		}
		if err != nil {
			lock.Close()
			// Evidence to inspect, not to seal: leave it and say so.
			r.log.Error("recording left open by a crash could not be recovered", "path", path, "err", err)
			r.cfg.Audit.Emit(audit.Event{Type: audit.RecordingFailed, Outcome: "error", Recording: filepath.Base(path), Reason: "recovery after crash refused: " + err.Error()})
			continue
		}
		_ = os.Remove(m)
		lock.Close()
		r.log.Warn("sealed a recording left open by a crash", "path", path, "frames", rep.Frames)
		r.cfg.Audit.Emit(audit.Event{Type: audit.SessionEnd, Outcome: "recovered", Reason: recording.SealRecovered, SessionID: rep.SessionID, Recording: filepath.Base(path)})
		r.sealed(path)
	}
	return nil
}

// incomplete reports whether the recording at path lacks a complete
// session-start segment (frames 0 and 1).
func incomplete(path string, key ed25519.PrivateKey) bool {
	rep, err := recording.Verify(path, key.Public().(ed25519.PublicKey))
	return err == nil && rep.Frames < 2
}

// lockMarker opens (with create: creates, exclusively) a recording's open
// marker and takes an exclusive, non-blocking flock on it.
func lockMarker(path string, create bool) (*os.File, error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// MaxChunkBytes is the largest chunk the gateway holds to record.
func (r *SessionRecorder) MaxChunkBytes() int64 { return r.cfg.MaxChunkBytes }

// Commit implements Recorder: it appends the exchange's records to its
// session's recording and returns once they are durable.
func (r *SessionRecorder) Commit(ctx context.Context, x *Exchange) error {
	err := r.commit(ctx, x)
	if err != nil {
		r.cfg.Audit.Emit(exchangeAudit(x, audit.RecordingFailed, "error", err.Error()))
		if r.cfg.ContinueOnFailure {
			r.log.Error("recording failed; reply released unrecorded (on_failure: continue)", "kind", x.Kind, "err", err)
			return nil
		}
		// HTTP 200 with a Snowflake error: drivers report it as it is
		// instead of retrying (a retry would run the statement again).
		return &snowflake.Error{
			Code: snowflake.CodeBadRequest, SQLState: snowflake.SQLStateGeneral,
			Message: "snowgate: the gateway cannot record this session (recording storage unavailable), so the reply was withheld; retry when the operator has restored it",
		}
	}
	return nil
}

func (r *SessionRecorder) commit(ctx context.Context, x *Exchange) error {
	recs := exchangeRecords(x)
	// A logout ends the session: its records and the seal are stored
	// together, durable with one fsync, before the reply is released.
	logout := x.Kind == snowflake.KindLogout.String() && x.Status < 300
	var s *liveSession
	for attempt := 0; ; attempt++ {
		var err error
		if s, err = r.session(x); err != nil {
			return err
		}
		if logout {
			err = r.appendSeal(ctx, s, recs)
		} else {
			err = r.appendAll(ctx, s, recs)
		}
		if err == nil {
			break
		}
		// Sealed (for idleness, or by the session's logout) between the
		// look-up and the append: the next look-up opens a continuation.
		if !errors.Is(err, recording.ErrSealed) || attempt > 0 {
			r.mu.Lock()
			r.failed[x] = s
			r.mu.Unlock()
			return err
		}
		r.mu.Lock()
		if r.sessions[s.key] == s {
			delete(r.sessions, s.key)
		}
		r.mu.Unlock()
	}
	r.mu.Lock()
	r.committed[x] = true
	r.mu.Unlock()
	if logout {
		r.end(s, recording.SealSessionEnd)
	}
	return nil
}

// appendSeal appends recs to s and seals it (recording.SealSessionEnd).
func (r *SessionRecorder) appendSeal(ctx context.Context, s *liveSession, recs []recording.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.w.AppendSeal(ctx, recs, recording.SealSessionEnd); err != nil {
		return fmt.Errorf("session %s: record and seal: %w", s.key, err)
	}
	return nil
}

// appendAll appends recs to s, together.
func (r *SessionRecorder) appendAll(ctx context.Context, s *liveSession, recs []recording.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rec := range recs {
		if err := s.w.Append(ctx, rec); err != nil {
			return fmt.Errorf("session %s: record %s: %w", s.key, rec.Kind, err)
		}
	}
	return nil
}

// Observe implements Observer: exchanges that were refused before (or at)
// Commit are recorded after the fact as errors.
func (r *SessionRecorder) Observe(x *Exchange) {
	r.mu.Lock()
	done := r.committed[x]
	failedIn := r.failed[x]
	delete(r.committed, x)
	delete(r.failed, x)
	closed := r.closed
	r.mu.Unlock()
	if failedIn != nil && !closed {
		// The exchange's records are pending in the writer: say that the
		// agent never got the reply they describe.
		rec := recording.Record{
			Kind: recording.KindError, Method: x.Method, Path: x.Path, Status: x.Status,
			RequestID: x.RequestID, QueryID: x.QueryID, Error: &recording.Error{Message: x.Error},
			Note: "reply withheld: the exchange above could not be recorded in time; the agent received this error instead",
		}
		if err := r.appendAll(context.Background(), failedIn, []recording.Record{rec}); err != nil {
			r.log.Warn("refusal not recorded yet (pending)", "kind", x.Kind, "err", err)
		}
		return
	}
	if done || closed || x.Kind == snowflake.KindOCSP.String() || x.Kind == snowflake.KindUnknown.String() {
		return
	}
	if x.Status < 400 && x.Error == "" {
		return
	}
	s, err := r.session(x)
	if err != nil {
		r.log.Warn("refusal not recorded", "kind", x.Kind, "err", err)
		return
	}
	if err := r.appendAll(context.Background(), s, refusalRecords(x)); err != nil {
		r.log.Warn("refusal not recorded", "kind", x.Kind, "err", err)
	}
}

// session returns the open recording x belongs to, opening one if needed.
func (r *SessionRecorder) session(x *Exchange) (*liveSession, error) {
	key := ""
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("session recorder closed")
	}
	switch {
	case x.Principal != nil && x.Principal.SessionID != "":
		key = "s-" + x.Principal.SessionID
	default:
		key = fmt.Sprintf("w-%d-%d", x.Workload.CgroupID, x.Workload.PID)
	}
	if s := r.sessions[key]; s != nil {
		r.mu.Unlock()
		return s, nil
	}
	r.mu.Unlock()
	// Open outside the lock: it fsyncs. A racing opener of the same key
	// loses and seals its own (empty) recording.
	s, err := r.open(key, x)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if cur := r.sessions[key]; cur != nil || r.closed {
		r.mu.Unlock()
		_ = s.w.Seal(recording.SealClosed)
		_ = os.Remove(s.marker)
		s.lock.Close()
		if cur == nil {
			return nil, errors.New("session recorder closed")
		}
		return cur, nil
	}
	r.sessions[key] = s
	r.mu.Unlock()
	ev := exchangeAudit(x, audit.SessionStart, "ok", "")
	ev.Recording = filepath.Base(s.w.Path())
	r.cfg.Audit.Emit(ev)
	return s, nil
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// open creates the recording of a session.
func (r *SessionRecorder) open(key string, x *Exchange) (*liveSession, error) {
	meta := sessionMeta(x, r.cfg.Gateway)
	base := ""
	if p := x.Principal; p != nil && p.SessionID != "" {
		base = unsafeName.ReplaceAllString(p.SessionID, "_")
	} else {
		base = fmt.Sprintf("obs-%d-%d-%s", x.Workload.CgroupID, x.Workload.PID, time.Now().UTC().Format("20060102T150405.000000000"))
	}
	if len(base) > 150 {
		base = base[:150]
	}
	for i := 1; i < 200; i++ {
		id := base
		switch {
		case i > 100:
			// Very many continuations: stop probing numbers.
			id = base + "." + strconv.FormatInt(time.Now().UnixNano(), 36)
		case i > 1:
			// A continuation after an idle seal, or after a restart.
			id = base + "." + strconv.Itoa(i)
		}
		path := filepath.Join(r.cfg.Dir, id+recording.FileExt)
		if _, err := os.Lstat(path); err == nil {
			continue
		}
		marker := path + openSuffix
		lock, err := lockMarker(marker, true)
		if err != nil {
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return nil, fmt.Errorf("open recording %s: %w", id, err)
		}
		meta.SessionID = id
		w, err := recording.NewWriter(r.cfg.Dir, meta, r.cfg.Writer)
		if err != nil {
			_ = os.Remove(marker)
			lock.Close()
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return nil, fmt.Errorf("open recording for %s: %w", key, err)
		}
		return &liveSession{key: key, w: w, marker: marker, lock: lock}, nil
	}
	return nil, fmt.Errorf("open recording for %s: too many continuations", key)
}

// end seals s and forgets it.
func (r *SessionRecorder) end(s *liveSession, reason string) {
	r.mu.Lock()
	if r.sessions[s.key] == s {
		delete(r.sessions, s.key)
	}
	r.mu.Unlock()
	if err := s.w.Seal(reason); err != nil {
		r.log.Error("recording not sealed", "path", s.w.Path(), "err", err)
		r.cfg.Audit.Emit(audit.Event{Type: audit.RecordingFailed, Outcome: "error", Recording: filepath.Base(s.w.Path()), Reason: "seal: " + err.Error()})
		return
	}
	_ = os.Remove(s.marker)
	s.lock.Close()
	r.cfg.Audit.Emit(audit.Event{Type: audit.SessionEnd, Outcome: "ok", Reason: reason, SessionID: strings.TrimPrefix(s.key, "s-"), Recording: filepath.Base(s.w.Path())})
	r.sealed(s.w.Path())
}

func (r *SessionRecorder) sealed(path string) {
	if r.cfg.Sealed != nil {
		go r.cfg.Sealed(path)
	}
}

// idleLoop seals recordings that have been idle for IdleSeal.
func (r *SessionRecorder) idleLoop() {
	defer close(r.done)
	if r.cfg.IdleSeal <= 0 {
		<-r.stop
		return
	}
	tick := time.NewTicker(min(max(r.cfg.IdleSeal/4, 10*time.Millisecond), 30*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		r.mu.Lock()
		var idle []*liveSession
		for _, s := range r.sessions {
			if s.w.Idle() >= r.cfg.IdleSeal {
				idle = append(idle, s)
			}
		}
		r.mu.Unlock()
		for _, s := range idle {
			s.mu.Lock()
			if s.w.Idle() >= r.cfg.IdleSeal {
				r.end(s, recording.SealIdle)
			}
			s.mu.Unlock()
		}
	}
}

// Open lists the paths of the recordings open now, in name order.
func (r *SessionRecorder) Open() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.sessions))
	for _, s := range r.sessions {
		out = append(out, s.w.Path())
	}
	sort.Strings(out)
	return out
}

// Close seals every open recording (reason gateway-shutdown). Exchanges
// committed after Close are refused.
func (r *SessionRecorder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	open := make([]*liveSession, 0, len(r.sessions))
	for _, s := range r.sessions {
		open = append(open, s)
	}
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	var errs []error
	for _, s := range open {
		s.mu.Lock()
		r.end(s, recording.SealShutdown)
		if !s.w.Sealed() {
			errs = append(errs, fmt.Errorf("recording %s not sealed", s.w.Path()))
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// sessionMeta is the session-start context of x's session.
func sessionMeta(x *Exchange, gw string) recording.Meta {
	m := recording.Meta{
		Started: x.Start,
		Workload: recording.Workload{
			CgroupID: x.Workload.CgroupID, Cgroup: x.Workload.Cgroup, PID: int(x.Workload.PID), UID: int(x.Workload.UID), Process: x.Workload.Comm,
		},
		Snowflake: recording.Snowflake{Account: x.Account},
		Gateway:   gw,
		Source:    x.Workload.Peer,
	}
	if p := x.Principal; p != nil {
		m.Identity = recording.Identity{Issuer: p.Issuer, Subject: p.Subject, Claims: claimStrings(p.Claims)}
		m.Rule = p.Rule
		m.Snowflake = recording.Snowflake{Account: p.Account, User: p.User, Role: p.Role, Warehouse: p.Warehouse, Database: p.Database}
		m.Client = recording.Client{Driver: p.ClientApp, Version: p.ClientVersion}
		if !p.LoggedIn.IsZero() {
			m.Started = p.LoggedIn
		}
	}
	if x.Kind == snowflake.KindLogin.String() {
		if lr, err := snowflake.ParseLoginRequest(x.RequestBody); err == nil {
			if m.Client.Driver == "" {
				m.Client.Driver = lr.ClientAppID
				m.Client.Version = strings.Trim(string(lr.ClientAppVersion), `"`)
			}
			if m.Snowflake.User == "" {
				m.Snowflake.User = lr.LoginName
			}
		}
	}
	if x.RequestHeader != nil {
		m.Client.Application = x.RequestHeader.Get("User-Agent")
	}
	return m
}

// claimStrings renders claims as strings for the recording's metadata.
func claimStrings(c map[string]any) map[string]string {
	if len(c) == 0 {
		return nil
	}
	out := make(map[string]string, len(c))
	for k, v := range c {
		switch t := v.(type) {
		case string:
			out[k] = t
		default:
			b, _ := json.Marshal(t)
			out[k] = string(b)
		}
	}
	return out
}

// recordedHeaders are the request headers worth keeping (the rest are
// transport noise); secret ones never are.
var recordedHeaders = []string{"User-Agent", "Content-Type", "Accept", "X-Snowflake-Service", "Client_app_id", "Client_app_version"}

func headerMap(x *Exchange) map[string]string {
	if x.RequestHeader == nil {
		return nil
	}
	var m map[string]string
	for _, k := range recordedHeaders {
		if v := x.RequestHeader.Get(k); v != "" {
			if m == nil {
				m = map[string]string{}
			}
			m[k] = v
		}
	}
	return m
}

// exchangeRecords turns one exchange into its records: the request (with
// the verdict), then the response.
func exchangeRecords(x *Exchange) []recording.Record {
	end := x.Start.Add(x.Duration)
	if x.Duration == 0 {
		end = time.Now()
	}
	switch x.Kind {
	case snowflake.KindChunk.String():
		rec := recording.Record{
			Kind: recording.KindChunk, Wall: end, Method: x.Method, Path: x.Path, Status: x.Status,
			QueryID: x.QueryID, Duration: x.UpstreamDuration, Result: chunkResult(x.ResponseBody),
			Note: "chunk " + x.ChunkID,
		}
		if c := x.Chunk; c != nil {
			idx := c.Index
			rec.ChunkIndex = &idx
			if c.Count > 0 {
				rec.Note = fmt.Sprintf("chunk %d of %d", c.Index+1, c.Count)
			}
		}
		return []recording.Record{rec}
	}
	req := recording.Record{
		Kind: recording.KindRequest, Wall: x.Start, Method: x.Method, Path: x.Path,
		RequestID: x.RequestID, Headers: headerMap(x),
	}
	resp := recording.Record{
		Kind: recording.KindResponse, Method: x.Method, Path: x.Path, Status: x.Status,
		RequestID: x.RequestID, Duration: x.UpstreamDuration, QueryID: x.QueryID,
	}
	switch x.Kind {
	case snowflake.KindLogin.String():
		req.Kind, resp.Kind = recording.KindLoginRequest, recording.KindLoginResponse
		req.Body = x.RequestBody
		resp.Body = x.ResponseBody
	case snowflake.KindQueryRequest.String():
		req.Kind, resp.Kind = recording.KindQueryRequest, recording.KindQueryResponse
		if q, err := snowflake.ParseQueryRequest(x.RequestBody); err == nil {
			req.SQL = q.SQLText
			req.Bindings = q.Bindings
			q.Body.Delete("sqlText")
			q.Body.Delete("bindings")
			req.Body = q.Body.Bytes()
		} else {
			req.Body = x.RequestBody
		}
		queryReply(&resp, x.ResponseBody)
	case snowflake.KindQueryResult.String(), snowflake.KindMonitoring.String():
		resp.Kind = recording.KindQueryResponse
		queryReply(&resp, x.ResponseBody)
	case snowflake.KindTokenRequest.String():
		req.Body = x.RequestBody
		resp.Kind = recording.KindRenew
		resp.Body = x.ResponseBody
	default:
		req.Body = x.RequestBody
		resp.Body = x.ResponseBody
	}
	if v := x.Verdict; v != nil {
		d := v.Action
		if v.Observe {
			d += " (observed, not enforced)"
		}
		req.Statement = &recording.Statement{Class: v.Class, Decision: d, Rule: v.Rule, Reason: v.Reason, ApprovalID: v.ApprovalID}
	}
	resp.Wall = end
	if resp.Error == nil {
		resp.Error = envelopeError(x.ResponseBody)
	}
	return []recording.Record{req, resp}
}

// refusalRecords describe an exchange the gateway refused before it could
// commit it (or because it could not).
func refusalRecords(x *Exchange) []recording.Record {
	recs := exchangeRecords(&Exchange{
		Start: x.Start, Duration: x.Duration, Kind: x.Kind, Method: x.Method, Path: x.Path,
		RequestHeader: x.RequestHeader, RequestBody: x.RequestBody, RequestID: x.RequestID,
		QueryID: x.QueryID, ChunkID: x.ChunkID, Verdict: x.Verdict, Workload: x.Workload,
	})
	last := &recs[len(recs)-1]
	*last = recording.Record{
		Kind: recording.KindError, Wall: x.Start.Add(x.Duration), Method: x.Method, Path: x.Path,
		Status: x.Status, RequestID: x.RequestID, QueryID: x.QueryID,
		Error: &recording.Error{Message: x.Error},
		Note:  "refused by the gateway; this is what the agent was told",
	}
	if x.Kind == snowflake.KindChunk.String() {
		// The chunk record itself was never stored: only the refusal.
		recs = recs[len(recs)-1:]
	}
	return recs
}

// queryReply fills a query-response record from a reply body: the result
// (columns, inline rows or Arrow data) goes to Result, the rest to Body.
func queryReply(rec *recording.Record, body []byte) {
	q, err := snowflake.ParseQueryResponse(body)
	if err != nil || q.Data == nil {
		rec.Body = body
		return
	}
	rec.QueryID = q.QueryID
	res := &recording.Result{Format: q.QueryResultFormat}
	var cols []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if ok, _ := q.Data.Decode("rowtype", &cols); ok {
		for _, c := range cols {
			res.Columns = append(res.Columns, recording.Column{Name: c.Name, Type: c.Type})
		}
	}
	if n, ok, _ := q.Data.Number("total"); ok {
		res.TotalRows, _ = n.Int64()
	}
	if a, err := q.Data.Array("chunks"); err == nil && a != nil {
		res.Chunks = a.Len()
	}
	var rows [][]*string
	if ok, err := q.Data.Decode("rowset", &rows); ok && err == nil {
		res.Rows = rows
		q.Data.Delete("rowset")
	}
	if s, ok, _ := q.Data.String("rowsetBase64"); ok {
		if raw, err := base64.StdEncoding.DecodeString(s); err == nil {
			res.Data = raw
			if res.Format == "" {
				res.Format = "arrow"
			}
			q.Data.Delete("rowsetBase64")
		}
	}
	if len(res.Columns) > 0 || len(res.Rows) > 0 || len(res.Data) > 0 || res.Chunks > 0 {
		rec.Result = res
	}
	rec.Body = q.Body.Bytes()
}

// chunkResult decodes a chunk body: JSON rows ("[…],[…]") or an Arrow IPC
// stream, kept raw for display.
func chunkResult(body []byte) *recording.Result {
	if len(body) == 0 {
		return nil
	}
	if snowflake.IsGzip(body) {
		if plain, err := snowflake.Gunzip(body, 1<<31); err == nil {
			body = plain
		}
	}
	trimmed := strings.TrimSpace(string(body[:min(len(body), 16)]))
	if strings.HasPrefix(trimmed, "[") {
		var rows [][]*string
		doc := make([]byte, 0, len(body)+2)
		doc = append(append(append(doc, '['), body...), ']')
		if err := json.Unmarshal(doc, &rows); err == nil {
			return &recording.Result{Format: "json", Rows: rows}
		}
	}
	return &recording.Result{Format: "arrow", Data: body}
}

// envelopeError is the error a reply carries (success false), if any.
func envelopeError(body []byte) *recording.Error {
	if len(body) == 0 {
		return nil
	}
	env, err := snowflake.ParseEnvelope(body)
	if err != nil || env.Success {
		return nil
	}
	e := &recording.Error{Code: env.Code, Message: env.Message}
	if d, _ := env.Data(); d != nil {
		if s, ok, _ := d.String("sqlState"); ok {
			e.SQLState = s
		}
	}
	return e
}
