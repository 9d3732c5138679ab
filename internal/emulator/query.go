package emulator

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/snowgate/snowgate/internal/emulator/resultset"
	"github.com/snowgate/snowgate/internal/emulator/sqlengine"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// Codes the emulator adds to those in package snowflake.
const (
	codeStatementCount = "000008"
	codeEmptyStatement = "000900"
	codeQueryNotFound  = "000709"
	codeCancelled      = "000604"
	codeInternal       = "000603"
)

// queryRequest is the body of /queries/v1/query-request.
type queryRequest struct {
	SQLText      string                     `json:"sqlText"`
	AsyncExec    bool                       `json:"asyncExec"`
	SequenceID   json.Number                `json:"sequenceId"`
	IsInternal   bool                       `json:"isInternal"`
	DescribeOnly bool                       `json:"describeOnly"`
	Parameters   map[string]any             `json:"parameters"`
	Bindings     map[string]bindingJSON     `json:"bindings"`
	BindStage    string                     `json:"bindStage"`
	QueryContext json.RawMessage            `json:"queryContextDTO"`
	Extra        map[string]json.RawMessage `json:"-"`
}

// bindingJSON is one bind value: a string, null, or an array of them.
type bindingJSON struct {
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

// toBinding converts a wire binding for the engine.
func (b bindingJSON) toBinding() (sqlengine.Binding, error) {
	out := sqlengine.Binding{Type: strings.ToUpper(b.Type)}
	v := strings.TrimSpace(string(b.Value))
	switch {
	case v == "" || v == "null":
	case v[0] == '[':
		var arr []*json.RawMessage
		if err := json.Unmarshal(b.Value, &arr); err != nil {
			return out, fmt.Errorf("array bind: %w", err)
		}
		for _, e := range arr {
			s, err := scalarString(e)
			if err != nil {
				return out, err
			}
			out.Values = append(out.Values, s)
		}
		if out.Values == nil {
			out.Values = []*string{}
		}
	default:
		raw := json.RawMessage(b.Value)
		s, err := scalarString(&raw)
		if err != nil {
			return out, err
		}
		out.Value = s
	}
	return out, nil
}

// scalarString reads a JSON string, number or bool as the text the drivers
// meant; null is nil.
func scalarString(raw *json.RawMessage) (*string, error) {
	if raw == nil || string(*raw) == "null" {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(*raw, &s); err == nil {
		return &s, nil
	}
	t := strings.TrimSpace(string(*raw))
	if t == "true" || t == "false" {
		return &t, nil
	}
	var n json.Number
	if err := json.Unmarshal(*raw, &n); err == nil {
		v := n.String()
		return &v, nil
	}
	return nil, fmt.Errorf("bind value %.40s is not a scalar", t)
}

// query is one statement (or multi-statement parent) and its outcome.
type query struct {
	id        string
	requestID string
	// logRequestID is the requestId the query log shows: the request's
	// own, or for a multi-statement child its parent's.
	logRequestID string
	sessionID    int64
	user         string
	sql          string
	async        bool
	parent       string
	start        time.Time
	ctx          context.Context
	cancelFn     context.CancelFunc
	done         chan struct{}

	// Set before done is closed.
	end       time.Time
	page      *resultset.Page
	stmtType  int64
	childIDs  []string
	childType []string
	err       *snowflake.Error
	errLine   int
	errPos    int
	qrmk      string
	final     sqlengine.Session
	binds     int
	stage     map[string]any // PUT/GET transfer plan
	dir       string

	mu      sync.Mutex
	aborted bool
}

func (q *query) cancel() {
	q.mu.Lock()
	q.aborted = true
	q.mu.Unlock()
	q.cancelFn()
}

func (q *query) wasAborted() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.aborted
}

func (q *query) finished() bool {
	select {
	case <-q.done:
		return true
	default:
		return false
	}
}

// diskBytes is the size of the query's chunk files.
func (q *query) diskBytes() int64 {
	if !q.finished() || q.page == nil {
		return 0
	}
	var n int64
	for _, c := range q.page.Chunks {
		n += c.CompressedSize
	}
	return n
}

func (q *query) removeFiles() {
	if q.finished() && q.page != nil {
		_ = q.page.Remove()
	}
	if q.dir != "" {
		_ = os.RemoveAll(q.dir)
	}
}

// newQueryID returns an id shaped like Snowflake's (8-4-4-4-12 hex).
func newQueryID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// queryStore indexes queries by id and by (session, requestId).
type queryStore struct {
	mu        sync.Mutex
	byID      map[string]*query
	byRequest map[string]*query
	aborts    map[string]time.Time // requestIds aborted before they arrived
}

func newQueryStore() *queryStore {
	return &queryStore{byID: map[string]*query{}, byRequest: map[string]*query{}, aborts: map[string]time.Time{}}
}

func requestKey(sessionID int64, requestID string) string {
	return strconv.FormatInt(sessionID, 10) + "/" + requestID
}

// add registers q. If q has a requestId that is already known, the earlier
// query is returned instead and q is not registered.
func (st *queryStore) add(q *query) (existing *query, preAborted bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if q.requestID != "" {
		k := requestKey(q.sessionID, q.requestID)
		if old := st.byRequest[k]; old != nil {
			return old, false
		}
		st.byRequest[k] = q
		if _, ok := st.aborts[k]; ok {
			delete(st.aborts, k)
			preAborted = true
		}
	}
	st.byID[q.id] = q
	return nil, preAborted
}

func (st *queryStore) get(id string) *query {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.byID[id]
}

func (st *queryStore) byRequestID(sessionID int64, requestID string) *query {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.byRequest[requestKey(sessionID, requestID)]
}

// noteAbort remembers an abort for a requestId not seen yet.
func (st *queryStore) noteAbort(sessionID int64, requestID string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	for k, t := range st.aborts {
		if now.Sub(t) > 10*time.Minute {
			delete(st.aborts, k)
		}
	}
	st.aborts[requestKey(sessionID, requestID)] = now
}

func (st *queryStore) drop(q *query) {
	delete(st.byID, q.id)
	if q.requestID != "" {
		if st.byRequest[requestKey(q.sessionID, q.requestID)] == q {
			delete(st.byRequest, requestKey(q.sessionID, q.requestID))
		}
	}
}

// removeSession unregisters the queries of a session.
func (st *queryStore) removeSession(id int64) []*query {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []*query
	for _, q := range st.byID {
		if q.sessionID == id {
			out = append(out, q)
			st.drop(q)
		}
	}
	return out
}

// removeAll unregisters every query.
func (st *queryStore) removeAll() []*query {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]*query, 0, len(st.byID))
	for _, q := range st.byID {
		out = append(out, q)
		st.drop(q)
	}
	return out
}

// maxRetained bounds how many finished queries (and their inline rows)
// stay in memory for result fetches and requestId de-duplication.
const maxRetained = 20000

// expire unregisters finished queries older than cut, then the oldest
// finished ones until their chunk files fit in maxBytes and at most
// maxRetained remain.
func (st *queryStore) expire(cut time.Time, maxBytes int64) []*query {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out, live []*query
	var total int64
	for _, q := range st.byID {
		if !q.finished() {
			continue
		}
		if q.end.Before(cut) {
			out = append(out, q)
			st.drop(q)
			continue
		}
		live = append(live, q)
		total += q.diskBytes()
	}
	sort.Slice(live, func(i, j int) bool { return live[i].end.Before(live[j].end) })
	for i, q := range live {
		if total <= maxBytes && len(live)-i <= maxRetained {
			break
		}
		total -= q.diskBytes()
		out = append(out, q)
		st.drop(q)
	}
	return out
}

// handleQuery serves POST /queries/v1/query-request.
func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request, sess *session) {
	var req queryRequest
	if e := s.decodeJSON(r, &req); e != nil {
		s.writeError(w, e)
		return
	}
	requestID := r.URL.Query().Get("requestId")
	if requestID != "" {
		if q := s.queries.byRequestID(sess.id, requestID); q != nil {
			// A retry of a request the emulator has seen: never execute again.
			s.log.Info("duplicate requestId", "requestId", requestID, "queryId", q.id)
			s.replyWhenDone(w, r, q, s.cfg.QueryWait)
			return
		}
	}
	if strings.TrimSpace(req.SQLText) == "" {
		s.writeQueryError(w, &query{}, &snowflake.Error{Code: codeEmptyStatement, SQLState: snowflake.SQLStateSyntax, Message: "Empty SQL statement."}, 0, 0)
		return
	}
	binds := map[string]sqlengine.Binding{}
	for k, b := range req.Bindings {
		v, err := b.toBinding()
		if err != nil {
			s.writeError(w, badRequest(http.StatusBadRequest, fmt.Sprintf("binding %q: %v", k, err)))
			return
		}
		binds[k] = v
	}
	if req.DescribeOnly {
		s.handleDescribe(w, r, sess, requestID, req.SQLText, binds)
		return
	}
	if kind, ok := sqlengine.IsFileTransfer(req.SQLText); ok {
		s.handleFileTransfer(w, r, sess, requestID, kind, req.SQLText)
		return
	}
	stmts := sqlengine.SplitStatements(req.SQLText)
	want := 1
	if v, ok := lookupParam(req.Parameters, sess, "MULTI_STATEMENT_COUNT"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.writeError(w, badRequest(http.StatusBadRequest, fmt.Sprintf("MULTI_STATEMENT_COUNT %q is not a count", v)))
			return
		}
		want = n
	}
	q := s.newQuery(s.ctx, sess, requestID, req.SQLText, req.AsyncExec)
	if existing, preAborted := s.queries.add(q); existing != nil {
		s.replyWhenDone(w, r, existing, s.cfg.QueryWait)
		return
	} else if preAborted {
		q.cancel()
	}
	switch {
	case len(stmts) == 0:
		s.finish(q, &snowflake.Error{Code: codeEmptyStatement, SQLState: snowflake.SQLStateSyntax, Message: "Empty SQL statement."})
	case want != 0 && want != len(stmts):
		s.finish(q, &snowflake.Error{Code: codeStatementCount, SQLState: "0A000",
			Message: fmt.Sprintf("Actual statement count %d did not match the desired statement count %d.", len(stmts), want)})
	default:
		multi := len(stmts) > 1
		params := req.Parameters
		s.execWG.Add(1)
		go func() {
			defer s.execWG.Done()
			s.execute(q, sess, stmts, binds, params, multi)
		}()
	}
	if req.AsyncExec {
		s.writeInProgress(w, q)
		return
	}
	s.replyWhenDone(w, r, q, s.cfg.QueryWait)
}

// lookupParam reads a parameter from the request, then the session.
func lookupParam(reqParams map[string]any, sess *session, name string) (string, bool) {
	for k, v := range reqParams {
		if strings.EqualFold(k, name) {
			return paramString(v), true
		}
	}
	if sess != nil && sess.engine != nil {
		if v, ok := sess.engine.Params[name]; ok {
			return v, true
		}
	}
	return "", false
}

func (s *Server) newQuery(parent context.Context, sess *session, requestID, sql string, async bool) *query {
	ctx, cancel := context.WithCancel(parent)
	return &query{
		id: newQueryID(), requestID: requestID, logRequestID: requestID, sessionID: sess.id, user: sess.user, sql: sql,
		async: async, start: time.Now(), ctx: ctx, cancelFn: cancel, done: make(chan struct{}),
	}
}

// finish completes q with an error (nil for success, with q's fields set).
func (s *Server) finish(q *query, e *snowflake.Error) {
	if e != nil {
		e.QueryID = q.id
		q.err = e
	}
	q.end = time.Now()
	q.cancelFn()
	close(q.done)
}

// execute runs the statements of q in its session, one at a time.
func (s *Server) execute(q *query, sess *session, stmts []string, binds map[string]sqlengine.Binding, params map[string]any, multi bool) {
	select {
	case sess.execMu <- struct{}{}:
	case <-q.ctx.Done():
		s.finish(q, cancelledError())
		return
	}
	defer func() { <-sess.execMu }()
	if q.ctx.Err() != nil { // aborted while queued
		s.finish(q, cancelledError())
		return
	}
	if !multi {
		e, line, pos := s.runStatement(q, sess, stmts[0], binds, params)
		q.errLine, q.errPos = line, pos
		q.final = snapshotSession(sess.engine)
		s.finish(q, e)
		return
	}
	childBinds := splitBinds(stmts, binds)
	for i, stmt := range stmts {
		child := s.newQuery(q.ctx, sess, "", stmt, q.async)
		child.parent, child.logRequestID = q.id, q.requestID
		s.queries.add(child)
		e, line, pos := s.runStatement(child, sess, stmt, childBinds[i], params)
		child.errLine, child.errPos = line, pos
		child.final = snapshotSession(sess.engine)
		s.finish(child, e)
		if e != nil {
			q.errLine, q.errPos = line, pos
			q.final = child.final
			s.finish(q, &snowflake.Error{Code: e.Code, SQLState: e.SQLState, Message: e.Message, Type: e.Type})
			return
		}
		q.childIDs = append(q.childIDs, child.id)
		q.childType = append(q.childType, strconv.FormatInt(child.stmtType, 10))
	}
	q.stmtType = snowflake.StatementMultiStatement
	q.final = snapshotSession(sess.engine)
	s.finish(q, nil)
}

func snapshotSession(e *sqlengine.Session) sqlengine.Session {
	if e == nil {
		return sqlengine.Session{}
	}
	return sqlengine.Session{User: e.User, Role: e.Role, Warehouse: e.Warehouse, Database: e.Database, Schema: e.Schema}
}

// runStatement executes one statement and encodes its result into q.
func (s *Server) runStatement(q *query, sess *session, sql string, binds map[string]sqlengine.Binding, params map[string]any) (*snowflake.Error, int, int) {
	s.qlog.add(QueryLogEntry{Time: time.Now().UTC(), SessionID: sess.id, User: sess.user, RequestID: q.logRequestID,
		QueryID: q.id, ParentQueryID: q.parent, SQL: sql})
	q.binds = len(binds)
	res, err := s.engine.Execute(q.ctx, sess.engine, sql, binds)
	if err != nil {
		return s.statementError(q, err)
	}
	format := s.resultFormat(sess, params, res.StatementTypeID)
	q.dir = filepath.Join(s.dir, "results", q.id)
	if err := os.MkdirAll(q.dir, 0o700); err != nil {
		_ = res.Rows.Close()
		return s.statementError(q, err)
	}
	page, err := resultset.Encode(q.ctx, res, resultset.Options{Format: format, InlineRows: s.cfg.InlineRows, ChunkRows: s.cfg.ChunkRows, Dir: q.dir})
	if err != nil {
		return s.statementError(q, err)
	}
	q.page, q.stmtType = page, res.StatementTypeID
	if len(page.Chunks) > 0 {
		var key [32]byte
		_, _ = rand.Read(key[:])
		q.qrmk = base64.StdEncoding.EncodeToString(key[:])
	}
	return nil, 0, 0
}

// statementError maps an engine failure to the error the driver sees.
func (s *Server) statementError(q *query, err error) (*snowflake.Error, int, int) {
	var se *sqlengine.Error
	if errors.As(err, &se) {
		typ := "EXECUTION"
		if strings.HasPrefix(se.SQLState, "42") {
			typ = "COMPILATION"
		}
		return &snowflake.Error{Code: se.Code, SQLState: se.SQLState, Message: se.Message, Type: typ}, se.Line, se.Pos
	}
	if q.ctx.Err() != nil || q.wasAborted() {
		return cancelledError(), 0, 0
	}
	s.log.Error("statement failed", "queryId", q.id, "err", err)
	return &snowflake.Error{Code: codeInternal, SQLState: snowflake.SQLStateGeneral, Message: "Internal error: " + err.Error(), Type: "EXECUTION"}, 0, 0
}

func cancelledError() *snowflake.Error {
	return &snowflake.Error{Code: codeCancelled, SQLState: "57014", Message: "SQL execution canceled", Type: "EXECUTION"}
}

// resultFormat chooses JSON or Arrow for a result. Only SELECT-type results
// go out as Arrow, and only to clients that read it: Go gets Arrow unless
// GO_QUERY_RESULT_FORMAT or QUERY_RESULT_FORMAT says JSON (request
// parameters first, then ALTER SESSION / login values); Node always JSON.
func (s *Server) resultFormat(sess *session, params map[string]any, stmtType int64) resultset.Format {
	if stmtType != snowflake.StatementSelect {
		return resultset.JSON
	}
	names := []string{"QUERY_RESULT_FORMAT"}
	def := resultset.JSON
	switch sess.clientApp {
	case "Go":
		names = []string{"GO_QUERY_RESULT_FORMAT", "QUERY_RESULT_FORMAT"}
		def = resultset.Arrow
	case "JavaScript":
		return resultset.JSON
	}
	for _, n := range names {
		if v, ok := lookupParam(params, sess, n); ok && v != "" {
			if strings.EqualFold(strings.Trim(v, `'"`), "ARROW") {
				return resultset.Arrow
			}
			return resultset.JSON
		}
	}
	return def
}

// replyWhenDone waits up to wait for q, then writes its result or an
// in-progress reply the driver polls on.
func (s *Server) replyWhenDone(w http.ResponseWriter, r *http.Request, q *query, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-q.done:
		s.writeResult(w, r, q)
	case <-t.C:
		s.writeInProgress(w, q)
	case <-r.Context().Done():
	case <-s.ctx.Done():
		s.writeInProgress(w, q)
	}
}

// writeInProgress writes 333333 (sync) or 333334 (async) with getResultUrl.
func (s *Server) writeInProgress(w http.ResponseWriter, q *query) {
	code, msg := snowflake.CodeQueryInProgress, "Query execution in progress. Query will be continued to be executed."
	if q.async {
		code, msg = snowflake.CodeAsyncInProgress, "Asynchronous execution in progress. Use provided query id to perform query monitoring and management."
	}
	_ = snowflake.WriteJSON(w, http.StatusOK, snowflake.Response{
		Code: &code, Message: &msg, Success: true,
		Data: map[string]any{
			"getResultUrl":         "/queries/" + q.id + "/result",
			"queryId":              q.id,
			"progressDesc":         nil,
			"queryAbortsAfterSecs": 300,
		},
	})
}

// writeQueryError writes a failed statement, with line and position.
func (s *Server) writeQueryError(w http.ResponseWriter, q *query, e *snowflake.Error, line, pos int) {
	code, msg := e.Code, e.Message
	_ = snowflake.WriteJSON(w, e.Status(), snowflake.Response{
		Code: &code, Message: &msg, Success: false,
		Data: snowflake.ErrorData{ErrorCode: e.Code, SQLState: e.SQLState, QueryID: firstNonEmpty(e.QueryID, q.id),
			Line: line, Pos: pos, Type: e.Type},
	})
}

// writeResult writes the reply of a finished query.
func (s *Server) writeResult(w http.ResponseWriter, r *http.Request, q *query) {
	if q.err != nil {
		s.writeQueryError(w, q, q.err, q.errLine, q.errPos)
		return
	}
	if q.stage != nil {
		s.writeOK(w, q.stage)
		return
	}
	data := map[string]any{
		"queryId":            q.id,
		"statementTypeId":    q.stmtType,
		"finalDatabaseName":  nullIfEmpty(q.final.Database),
		"finalSchemaName":    nullIfEmpty(q.final.Schema),
		"finalWarehouseName": nullIfEmpty(q.final.Warehouse),
		"finalRoleName":      firstNonEmpty(q.final.Role, "PUBLIC"),
		"numberOfBinds":      q.binds,
		"databaseProvider":   nil,
		"version":            1,
		"sendResultTime":     time.Now().UnixMilli(),
		"parameters":         queryParameters(q.final.Params),
	}
	if q.childIDs != nil || q.stmtType == snowflake.StatementMultiStatement {
		data["rowtype"] = []resultset.RowType{{Name: "multiple statement execution", Type: "text", Nullable: false}}
		msg := "Multiple statements executed successfully."
		data["rowset"] = [][]*string{{&msg}}
		data["total"], data["returned"] = 1, 1
		data["queryResultFormat"] = "json"
		data["resultIds"] = strings.Join(q.childIDs, ",")
		data["resultTypes"] = strings.Join(q.childType, ",")
		s.writeOK(w, data)
		return
	}
	p := q.page
	data["rowtype"] = p.RowType
	data["total"], data["returned"] = p.Total, p.Returned
	data["queryResultFormat"] = p.QueryResultFormat
	if p.QueryResultFormat == string(resultset.Arrow) {
		data["rowsetBase64"] = p.RowsetBase64
	} else {
		rows := p.Rowset
		if rows == nil {
			rows = [][]*string{}
		}
		data["rowset"] = rows
	}
	if len(p.Chunks) > 0 {
		base := s.storageBase(r)
		chunks := make([]map[string]any, len(p.Chunks))
		for i, c := range p.Chunks {
			chunks[i] = map[string]any{
				"url":              s.chunkURL(base, q.id, i),
				"rowCount":         c.RowCount,
				"uncompressedSize": c.UncompressedSize,
				"compressedSize":   c.CompressedSize,
			}
		}
		data["chunks"] = chunks
		data["qrmk"] = q.qrmk
		data["chunkHeaders"] = sseHeaders(q.qrmk)
	}
	s.writeOK(w, data)
}

// queryFromPath returns the query id of /queries/<id>/… and /monitoring/queries/<id>.
func queryIDFromPath(path, prefix, suffix string) string {
	id := strings.TrimSuffix(strings.TrimPrefix(path, prefix), suffix)
	if id == "" || strings.Contains(id, "/") {
		return ""
	}
	return id
}

// lookupQuery finds a query the session's user may read.
func (s *Server) lookupQuery(sess *session, id string) *query {
	q := s.queries.get(id)
	if q == nil || q.user != sess.user {
		return nil
	}
	return q
}

func notFound(id string) *snowflake.Error {
	return &snowflake.Error{Code: codeQueryNotFound, SQLState: "02000", Message: fmt.Sprintf("Statement %s not found", id)}
}

// handleResult serves GET /queries/<id>/result, long-polling a bounded time.
func (s *Server) handleResult(w http.ResponseWriter, r *http.Request, sess *session) {
	id := queryIDFromPath(r.URL.Path, "/queries/", "/result")
	q := s.lookupQuery(sess, id)
	if q == nil {
		s.writeError(w, notFound(id))
		return
	}
	s.replyWhenDone(w, r, q, s.cfg.ResultWait)
}

// handleMonitoring serves GET /monitoring/queries/<id>.
func (s *Server) handleMonitoring(w http.ResponseWriter, r *http.Request, sess *session) {
	id := queryIDFromPath(r.URL.Path, "/monitoring/queries/", "")
	q := s.lookupQuery(sess, id)
	if q == nil {
		s.writeOK(w, map[string]any{"queries": []any{}})
		return
	}
	entry := map[string]any{
		"id": q.id, "sqlText": q.sql, "startTime": q.start.UnixMilli(), "endTime": 0,
		"status": "RUNNING", "state": "EXECUTING", "errorCode": "", "errorMessage": nil,
		"sessionId": q.sessionID, "stats": map[string]any{"scanBytes": 0},
	}
	if q.finished() {
		entry["endTime"] = q.end.UnixMilli()
		entry["totalDuration"] = q.end.Sub(q.start).Milliseconds()
		switch {
		case q.err != nil && q.wasAborted():
			entry["status"], entry["state"] = "ABORTED", "ABORTED"
			entry["errorCode"], entry["errorMessage"] = q.err.Code, q.err.Message
		case q.err != nil:
			entry["status"], entry["state"] = "FAILED_WITH_ERROR", "FAILED"
			entry["errorCode"], entry["errorMessage"] = q.err.Code, q.err.Message
		default:
			entry["status"], entry["state"] = "SUCCESS", "SUCCEEDED"
		}
	}
	s.writeOK(w, map[string]any{"queries": []any{entry}})
}

// abortRequest is the body of /queries/v1/abort-request.
type abortRequest struct {
	RequestID string `json:"requestId"`
}

// handleAbort serves both abort forms and cancels the running statement.
func (s *Server) handleAbort(w http.ResponseWriter, r *http.Request, sess *session) {
	var q *query
	if r.URL.Path == "/queries/v1/abort-request" {
		var req abortRequest
		if e := s.decodeJSON(r, &req); e != nil {
			s.writeError(w, e)
			return
		}
		if req.RequestID == "" {
			s.writeError(w, badRequest(http.StatusBadRequest, "abort-request without requestId"))
			return
		}
		q = s.queries.byRequestID(sess.id, req.RequestID)
		if q == nil {
			// The abort overtook its query: cancel it on arrival.
			s.queries.noteAbort(sess.id, req.RequestID)
			s.log.Info("abort before query", "requestId", req.RequestID)
			s.writeOK(w, nil)
			return
		}
	} else {
		id := queryIDFromPath(r.URL.Path, "/queries/", "/abort-request")
		q = s.lookupQuery(sess, id)
		if q == nil {
			s.writeError(w, notFound(id))
			return
		}
	}
	// Acknowledge first and stop the statement a moment later, as the
	// service does asynchronously: clients (snowflake-sdk's cancel callback)
	// then see the abort acknowledged before the statement's own reply
	// reports the cancellation.
	s.writeOK(w, nil)
	_ = http.NewResponseController(w).Flush()
	if !q.finished() {
		s.log.Info("query aborted", "queryId", q.id)
		time.AfterFunc(abortDelay, func() {
			q.cancel()
			for _, c := range s.childrenOf(q) {
				c.cancel()
			}
		})
	}
}

// abortDelay is how long after acknowledging an abort the statement stops.
const abortDelay = 200 * time.Millisecond

func (s *Server) childrenOf(q *query) []*query {
	s.queries.mu.Lock()
	defer s.queries.mu.Unlock()
	var out []*query
	for _, c := range s.queries.byID {
		if c.parent == q.id {
			out = append(out, c)
		}
	}
	return out
}

// describeTypes are the statement type ids a describeOnly request reports
// for statements it does not run.
var describeTypes = map[string]int64{
	"INSERT": snowflake.StatementInsert, "UPDATE": snowflake.StatementUpdate,
	"DELETE": snowflake.StatementDelete, "MERGE": snowflake.StatementMerge,
	"ALTER": snowflake.StatementSession, "USE": snowflake.StatementSession,
}

// handleDescribe answers a describeOnly request: queries are run for their
// columns (rows discarded), anything else is only classified, never run.
func (s *Server) handleDescribe(w http.ResponseWriter, r *http.Request, sess *session, requestID, sql string, binds map[string]sqlengine.Binding) {
	q := s.newQuery(s.ctx, sess, requestID, sql, false)
	if existing, _ := s.queries.add(q); existing != nil {
		s.replyWhenDone(w, r, existing, s.cfg.QueryWait)
		return
	}
	word := strings.ToUpper(strings.TrimLeft(stripComments(sql), "( \t\r\n"))
	if i := strings.IndexFunc(word, func(c rune) bool { return !(c >= 'A' && c <= 'Z') }); i >= 0 {
		word = word[:i]
	}
	switch word {
	case "SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "VALUES":
		select {
		case sess.execMu <- struct{}{}:
		case <-r.Context().Done():
			s.finish(q, cancelledError())
			return
		}
		s.qlog.add(QueryLogEntry{Time: time.Now().UTC(), SessionID: sess.id, User: sess.user, RequestID: requestID, QueryID: q.id, SQL: sql})
		res, err := s.engine.Execute(q.ctx, sess.engine, sql, binds)
		<-sess.execMu
		if err != nil {
			e, line, pos := s.statementError(q, err)
			q.errLine, q.errPos = line, pos
			s.finish(q, e)
			break
		}
		_ = res.Rows.Close()
		q.page = &resultset.Page{RowType: resultset.RowTypes(res.Columns), QueryResultFormat: string(resultset.JSON)}
		q.stmtType = res.StatementTypeID
		s.finish(q, nil)
	default:
		t, ok := describeTypes[word]
		if !ok {
			t = snowflake.StatementDDL
		}
		q.page = &resultset.Page{RowType: []resultset.RowType{}, QueryResultFormat: string(resultset.JSON)}
		q.stmtType = t
		s.finish(q, nil)
	}
	s.writeResult(w, r, q)
}
