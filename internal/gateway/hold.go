package gateway

// Held queries. A statement that needs approval is answered at once with
// Snowflake's "asynchronous execution in progress" (333334) and a result
// URL of a query id the gateway made up; the drivers poll that URL (Go and
// Node re-GET it at once, relying on the server's long-poll), and each poll
// is held here until the reviewer decides or PollHold passes. Approved, the
// stored request runs upstream exactly once (claimed in the approval store
// first, its SQL and bindings checked against the approved hashes on the
// way out) and its reply answers the poll; later retries of that poll get
// the same reply. Denied, expired or cancelled, the poll gets an error.
//
// A run and a killed gateway. The claim names this gateway instance (the
// approval package's Instance: a random id, the host's boot id, the pid
// and its start time) and a lease, the run's bound (UpstreamTimeout plus
// runLeaseMargin); when the run gets its final reply the outcome is
// recorded in the store (Finish). A gateway killed after its claim leaves a
// claimed run without an outcome, and the driver polls its successor
// (same host: sessions survive in the session state file; the held query
// is recovered from the store). The rule, applied atomically by the store
// (approval/claim.go), from the successor's side:
//
//   - the claimer is dead (same boot and pid namespace, its pid gone or
//     reused) or its lease passed, and the run has no outcome: resume it —
//     send the stored request again with the driver's own requestId. The
//     service de-duplicates by session and requestId (a statement that
//     reached it is not executed again, its query answers; one that did
//     not runs now), so the statement runs once either way. Of several
//     successors one wins (compare-and-set on the claimer).
//   - the run has an outcome: the claimer may have died between the
//     outcome and the reply reaching the driver, and the driver polls
//     because it has no result; a resend with the same requestId returns
//     the same query, so the run is replayed rather than refused. (A
//     gateway that holds the reply in memory answers from it and never
//     asks the store.)
//   - the claimer is alive and within its lease (another gateway of the
//     fleet runs it, or this one under a forgotten held entry): the poll
//     waits up to PollHold for the claim to change and then answers "still
//     running" (333334), as Snowflake answers a running query. An error
//     would tell the agent its statement failed while it runs; running it
//     here would put a second send in flight beside the first.
//   - the first claim is older than approval.ResendWindow: "already ran",
//     003001. De-duplication by requestId is not relied on past that.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snowgate/snowgate/internal/approval"
	"github.com/snowgate/snowgate/internal/policy"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// held is one query waiting for (or past) its approval.
type held struct {
	qid, approvalID, session, requestID string
	sqlHash, bindingsHash               string
	class, rule, reason                 string
	sql                                 string
	expires, created                    time.Time
	// req is the client's request as it came (before the credential hook).
	req *clientRequest

	mu sync.Mutex // serialises the run
	// claimed: the approval store gave this gateway the run; done: the
	// run has its final reply (kept for the client's retries).
	claimed, done bool
	rep           *reply
	err           error
	// upstreamQID is the service's id of the run when it answered "still
	// running": later polls of the held id follow that query.
	upstreamQID string
	// doneAt is when the run got its final reply (Unix nanoseconds, 0
	// while none): the table forgets the query holdDoneRetention later.
	doneAt atomic.Int64
}

// finish records the final outcome of the run; hd.mu is held.
func (hd *held) finish(rep *reply, err error) {
	hd.done, hd.rep, hd.err = true, rep, err
	// The statement never runs again from this gateway: only the reply is
	// kept, for the retries of the poll.
	hd.req = nil
	hd.doneAt.Store(time.Now().UnixNano())
}

// holdTable indexes held queries by query id and by session + requestId.
type holdTable struct {
	mu        sync.Mutex
	byQID     map[string]*held
	byReq     map[string]*held
	lastSweep time.Time
}

func newHoldTable() *holdTable {
	return &holdTable{byQID: map[string]*held{}, byReq: map[string]*held{}}
}

// holdRetention is how long a held query is remembered after its approval
// would have expired: long enough for the last polls and retries.
const holdRetention = time.Hour

// holdDoneRetention is how long a query that ran is remembered with its
// reply, for the driver's retries of the poll that got it. A later poll
// finds the run finished in the store and sends it again for its reply
// (de-duplicated by requestId), or, past approval.ResendWindow, is told
// the statement already ran. Under sustained load (issue #9: thousands of
// held statements an hour) this, not the approval's timeout, bounds the
// table.
const holdDoneRetention = 10 * time.Minute

// holdSweepEvery spaces the table's sweeps, so an add is not a walk of
// every held query.
const holdSweepEvery = 30 * time.Second

// add stores hd unless a held query of the same id is there already, and
// returns the one stored.
func (t *holdTable) add(hd *held) *held {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.byQID[hd.qid]; ok {
		return old
	}
	if now := time.Now(); now.Sub(t.lastSweep) >= holdSweepEvery {
		t.lastSweep = now
		for id, o := range t.byQID {
			done := o.doneAt.Load()
			if now.After(o.expires.Add(holdRetention)) || done != 0 && now.Sub(time.Unix(0, done)) > holdDoneRetention {
				delete(t.byQID, id)
				if t.byReq[o.session+"\x00"+o.requestID] == o {
					delete(t.byReq, o.session+"\x00"+o.requestID)
				}
			}
		}
	}
	t.byQID[hd.qid] = hd
	t.byReq[hd.session+"\x00"+hd.requestID] = hd
	return hd
}

func (t *holdTable) byQueryID(qid string) *held {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byQID[qid]
}

func (t *holdTable) byRequest(session, requestID string) *held {
	if requestID == "" {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byReq[session+"\x00"+requestID]
}

// resumeKey marks the context of a held query's run: the screen then only
// checks that what goes upstream is exactly what was approved.
type resumeKey struct{}

func resumeOf(ctx context.Context) *held {
	hd, _ := ctx.Value(resumeKey{}).(*held)
	return hd
}

// verify checks the outgoing body of a held query's run against the
// approved hashes.
func (hd *held) verify(send []byte) error {
	q, err := snowflake.ParseQueryRequest(send)
	if err == nil && approval.Hash([]byte(q.SQLText)) == hd.sqlHash && approval.Hash(q.Bindings) == hd.bindingsHash {
		return nil
	}
	return &snowflake.Error{
		Code: policy.CodeAccessDenied, SQLState: policy.SQLStateAccessDenied, Type: "COMPILATION", QueryID: hd.qid,
		Message: fmt.Sprintf("SQL access control error:\nsnowgate: the statement about to run is not the one approved in %s; refused", hd.approvalID),
	}
}

// credentialHeaders never go into the approval store with a held request:
// a run uses the credentials of the poll that triggers it.
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie"}

// heldOf is the held query of an approval request; req is set from the
// stored request (the caller may replace it with the one at hand).
func heldOf(r *approval.Request) *held {
	hd := &held{
		qid: r.QueryID, approvalID: r.ID, session: r.SessionID, requestID: r.RequestKey,
		sqlHash: r.SQLHash, bindingsHash: r.BindingsHash, class: r.Class, rule: r.PolicyRule, reason: r.Reason,
		sql: r.SQL, expires: r.ExpiresAt, created: r.CreatedAt,
	}
	if rs := r.Resume; rs != nil {
		hd.req = &clientRequest{Method: rs.Method, URI: rs.URI, Header: http.Header(rs.Header).Clone(), Body: rs.Body, Gzipped: rs.Gzipped}
		if hd.req.Header == nil {
			hd.req.Header = http.Header{}
		}
	}
	return hd
}

// newQueryID makes a query id shaped like Snowflake's (hex, 8-4-4-4-12).
func newQueryID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("gateway: no randomness: " + err.Error())
	}
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// hold creates (or finds again) the approval request for a statement and
// answers the client "still running".
func (h *handler) hold(ctx context.Context, sp *StatementPolicy, call *Call, req *clientRequest, q *snowflake.QueryRequest, d policy.Decision, x *Exchange) (*reply, error) {
	sub := approval.Submission{
		SessionID: sessionKey(call), RequestKey: call.RequestID, QueryID: newQueryID(),
		PolicyRule: d.Rule, Class: string(d.Class), Reason: d.Reason,
		SQL: q.SQLText, Bindings: q.Bindings, Requester: requesterOf(call), Account: call.Account,
	}
	for _, o := range d.Objects {
		sub.Objects = append(sub.Objects, o.String())
	}
	if p := call.Principal; p != nil {
		sub.Rule, sub.User, sub.Role = p.Rule, p.User, p.Role
	}
	hdr := req.Header.Clone()
	for _, k := range credentialHeaders {
		hdr.Del(k)
	}
	sub.Resume = &approval.Resume{Method: req.Method, URI: req.URI, Header: hdr, Body: req.Body, Gzipped: req.Gzipped}
	r, _, err := sp.Approvals.Submit(ctx, sub)
	if err != nil {
		h.log.Error("approval request could not be stored: statement refused", "err", err)
		x.Verdict.Enforced = string(policy.Deny)
		x.Error = "approval store: " + err.Error()
		return nil, &snowflake.Error{Code: policy.CodeAccessDenied, SQLState: policy.SQLStateAccessDenied, Type: "COMPILATION",
			Message: "SQL access control error:\nsnowgate: statement needs human approval, but the approval request could not be stored; try again later"}
	}
	hd := heldOf(r)
	hd.req = &clientRequest{Method: req.Method, URI: req.URI, Header: req.Header.Clone(), Body: append([]byte(nil), req.Body...), Gzipped: req.Gzipped}
	if err := hd.verify(q.Body.Bytes()); err != nil {
		// The same requestId came before with other SQL (a restarted
		// gateway finds the request in the store): never swap it.
		x.Verdict.Enforced = string(policy.Deny)
		return nil, err
	}
	return h.heldProgress(ctx, sp, sp.holds.add(hd), x)
}

// heldProgress answers a held query's query request (or its retry).
func (h *handler) heldProgress(ctx context.Context, sp *StatementPolicy, hd *held, x *Exchange) (*reply, error) {
	r, err := sp.Approvals.Get(ctx, hd.approvalID)
	if err != nil {
		return nil, h.storeRefusal(hd, err)
	}
	h.noteHeld(hd, r, x)
	if r.State == approval.Pending || r.State == approval.Approved {
		return inProgress(hd, r), nil
	}
	return nil, heldError(hd, r)
}

// noteHeld fills in the exchange of a held query.
func (h *handler) noteHeld(hd *held, r *approval.Request, x *Exchange) {
	x.QueryID = hd.qid
	v := &Verdict{Class: hd.class, Action: string(policy.Approve), Enforced: string(policy.Approve), Rule: hd.rule, Reason: hd.reason, ApprovalID: hd.approvalID, Approval: string(r.State)}
	if r.State.Final() {
		v.Reason = decisionText(r)
	}
	x.Verdict = v
}

// decisionText says who decided, when and why.
func decisionText(r *approval.Request) string {
	when := ""
	if r.DecidedAt != nil {
		when = " at " + r.DecidedAt.Format(time.RFC3339)
	}
	switch r.State {
	case approval.Approved, approval.Denied:
		return fmt.Sprintf("%s by %s%s: %s", r.State, strings.Join(r.DecidedBy(), ", "), when, r.DecisionReason)
	}
	return fmt.Sprintf("%s%s: %s", r.State, when, r.DecisionReason)
}

// inProgress is the 333334 answer with the held query's result URL.
func inProgress(hd *held, r *approval.Request) *reply {
	left := int(time.Until(r.ExpiresAt).Seconds())
	return stillRunning(hd, fmt.Sprintf("statement held for approval %s (%s); waiting for a reviewer.", hd.approvalID, hd.reason), max(left, 1))
}

// stillRunning is a 333334 "still running" reply for hd's query, which
// sends the driver back to poll its result; why ends the message.
func stillRunning(hd *held, why string, abortsAfter int) *reply {
	body, _ := json.Marshal(map[string]any{
		"code":    snowflake.CodeAsyncInProgress,
		"success": true,
		"message": "Asynchronous execution in progress. snowgate: " + why,
		"data": map[string]any{
			"getResultUrl":         "/queries/" + hd.qid + "/result",
			"progressDesc":         nil,
			"queryAbortsAfterSecs": abortsAfter,
			"queryId":              hd.qid,
		},
	})
	return &reply{Status: http.StatusOK, Header: jsonHeader(), Body: body}
}

// heldError is the error of a held query that will not run.
func heldError(hd *held, r *approval.Request) *snowflake.Error {
	e := &snowflake.Error{QueryID: hd.qid, Type: "COMPILATION"}
	switch r.State {
	case approval.Denied:
		e.Code, e.SQLState = policy.CodeAccessDenied, policy.SQLStateAccessDenied
		e.Message = fmt.Sprintf("SQL access control error:\nsnowgate: statement held for approval %s was denied by %s: %s", r.ID, strings.Join(r.DecidedBy(), ", "), r.DecisionReason)
	case approval.Expired:
		e.Code, e.SQLState = "000630", "57014"
		e.Message = fmt.Sprintf("snowgate: statement held for approval %s expired: no reviewer decided before %s", r.ID, r.ExpiresAt.Format(time.RFC3339))
	case approval.Cancelled:
		e.Code, e.SQLState = "000604", "57014"
		e.Message = fmt.Sprintf("SQL execution canceled: snowgate: approval %s was cancelled (%s)", r.ID, r.DecisionReason)
	default:
		e.Code, e.SQLState = policy.CodeAccessDenied, policy.SQLStateAccessDenied
		e.Message = fmt.Sprintf("SQL access control error:\nsnowgate: statement held for approval %s cannot run (%s)", r.ID, r.State)
	}
	return e
}

func (h *handler) storeRefusal(hd *held, err error) error {
	h.log.Error("approval store unavailable", "approval", hd.approvalID, "err", err)
	return &snowflake.Error{Code: policy.CodeAccessDenied, SQLState: policy.SQLStateAccessDenied, QueryID: hd.qid, Type: "COMPILATION",
		Message: "SQL access control error:\nsnowgate: the approval store is unavailable; the held statement did not run"}
}

// screenHeld answers result polls, monitoring look-ups and aborts of held
// queries; those of other queries go upstream.
func (h *handler) screenHeld(ctx context.Context, sp *StatementPolicy, call *Call, req *clientRequest, send []byte, x *Exchange) (*reply, error) {
	var hd *held
	key := sessionKey(call)
	if call.Kind == snowflake.KindAbortByRequestID {
		if a, err := snowflake.ParseAbortRequest(send); err == nil {
			hd = sp.holds.byRequest(key, a.RequestID)
		}
	} else if u, err := url.Parse(req.URI); err == nil {
		qid := snowflake.Route(req.Method, u).QueryID
		if hd = sp.holds.byQueryID(qid); hd == nil && qid != "" && sp.Approvals != nil {
			hd = h.recoverHeld(ctx, sp, qid, key)
		}
	}
	if hd == nil || hd.session != key {
		return nil, nil
	}
	switch call.Kind {
	case snowflake.KindQueryResult:
		return h.pollHeld(ctx, sp, call, req, hd, x)
	case snowflake.KindMonitoring:
		return h.monitorHeld(ctx, sp, hd, x)
	default:
		return h.abortHeld(ctx, sp, hd, x)
	}
}

// recoverHeld finds a held query this gateway does not know in the
// approval store: it was held before a restart, or by another gateway of
// the fleet the client now reaches. The stored request makes it runnable
// here; a request already claimed elsewhere is not run again.
func (h *handler) recoverHeld(ctx context.Context, sp *StatementPolicy, qid, session string) *held {
	r, err := sp.Approvals.FindQuery(ctx, qid)
	if err != nil {
		if !errors.Is(err, approval.ErrNotFound) {
			h.log.Warn("approval store look-up failed", "query", qid, "err", err)
		}
		return nil
	}
	if r.SessionID != session || r.Resume == nil {
		return nil
	}
	h.log.Info("held query recovered from the approval store", "approval", r.ID, "query", qid, "state", r.State)
	return sp.holds.add(heldOf(r))
}

// pollHeld holds a result poll until the decision (or PollHold), and runs
// an approved query.
func (h *handler) pollHeld(ctx context.Context, sp *StatementPolicy, call *Call, req *clientRequest, hd *held, x *Exchange) (*reply, error) {
	// A gateway that shuts down answers its held polls at once ("still
	// running"): the driver polls again, on the gateway that takes over.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-h.g.draining:
			cancel()
		case <-wctx.Done():
		}
	}()
	r, err := sp.Approvals.Wait(wctx, hd.approvalID, sp.PollHold)
	if ctx.Err() == nil && wctx.Err() != nil {
		// Woken by the shutdown: read the state without the cancelled
		// context.
		r, err = sp.Approvals.Get(ctx, hd.approvalID)
	}
	if err != nil {
		return nil, h.storeRefusal(hd, err)
	}
	h.noteHeld(hd, r, x)
	switch r.State {
	case approval.Pending:
		return inProgress(hd, r), nil
	case approval.Approved:
		return h.runHeld(ctx, sp, call, req, hd, x)
	}
	return nil, heldError(hd, r)
}

// runHeld runs an approved query once and keeps its reply for retries.
func (h *handler) runHeld(ctx context.Context, sp *StatementPolicy, call *Call, poll *clientRequest, hd *held, x *Exchange) (*reply, error) {
	// A poll that finds the run held by another live instance waits for
	// it at most PollHold in all, the wait for hd.mu included.
	deadline := time.Now().Add(sp.PollHold)
	hd.mu.Lock()
	defer hd.mu.Unlock()
	if hd.done {
		return hd.rep, hd.err
	}
	if hd.upstreamQID != "" {
		// The run is in progress upstream (asynchronous execution, or a
		// long query): this poll asks for its result.
		follow := &clientRequest{Method: http.MethodGet, URI: "/queries/" + url.PathEscape(hd.upstreamQID) + "/result", Header: poll.Header, Gzipped: poll.Gzipped}
		return h.forward(ctx, &Call{Kind: snowflake.KindQueryResult, Account: call.Account, Host: call.Host, Workload: call.Workload, Principal: call.Principal}, follow, x, false)
	}
	if !hd.claimed {
		res, err := h.claimHeld(ctx, sp, hd, deadline)
		switch {
		case errors.Is(err, approval.ErrRunning):
			// Another live instance runs it: the driver polls again.
			return runningElsewhere(hd, res), nil
		case errors.Is(err, approval.ErrClaimed):
			hd.finish(nil, &snowflake.Error{Code: policy.CodeAccessDenied, SQLState: policy.SQLStateAccessDenied, QueryID: hd.qid, Type: "COMPILATION",
				Message: fmt.Sprintf("SQL access control error:\nsnowgate: the statement approved in %s already ran; it runs only once", hd.approvalID)})
			return nil, hd.err
		case err != nil:
			return nil, h.storeRefusal(hd, err)
		}
		switch res.Kind {
		case approval.ClaimResumed:
			msg := "resuming approved statement claimed by dead gateway instance"
			if res.Why != "dead" {
				msg = "resuming approved statement whose claimer's lease passed"
			}
			h.log.Warn(msg, "approval", hd.approvalID, "query", hd.qid, "previous", res.Previous.String(), "why", res.Why, "request_id", hd.requestID)
		case approval.ClaimReplay:
			h.log.Info("sending a finished approved statement again for the reply the driver never got", "approval", hd.approvalID, "query", hd.qid,
				"previous", res.Previous.String(), "outcome", res.Request.RunOutcome, "request_id", hd.requestID)
		}
		hd.claimed = true
	}
	// The stored request, with the poll's credentials: a session renewed
	// while the query waited is used as it is now.
	req := &clientRequest{Method: hd.req.Method, URI: hd.req.URI, Header: hd.req.Header.Clone(), Body: hd.req.Body, Gzipped: hd.req.Gzipped}
	if a := poll.Header.Get("Authorization"); a != "" {
		req.Header.Set("Authorization", a)
	}
	run := &Call{Kind: snowflake.KindQueryRequest, Account: call.Account, Host: call.Host, Workload: call.Workload, RequestID: hd.requestID}
	// The run outlives a poll the client gives up on: its reply is kept
	// for the retry.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.g.cfg.UpstreamTimeout)
	defer cancel()
	h.log.Info("running approved statement", "approval", hd.approvalID, "query", hd.qid)
	rep, err := h.forward(context.WithValue(rctx, resumeKey{}, hd), run, req, x, true)
	// A failure on the way (the upstream unreachable, a 5xx or 429) is the
	// driver's to retry, as it would retry Snowflake: its next poll runs
	// the request again with the same requestId, which the service
	// de-duplicates. Any other reply is final.
	switch {
	case retryable(rep, err):
	case err == nil && rep.Status == http.StatusOK && inProgressID(rep.Body) != "":
		hd.upstreamQID = inProgressID(rep.Body)
	case err == nil && sessionFailure(rep.Body):
		// The session expired while the query waited: the driver renews
		// and polls again, and the run is retried with the new token.
	default:
		hd.finish(rep, err)
		h.recordOutcome(ctx, sp, hd, rep, err)
	}
	return rep, err
}

// runLeaseMargin is added to UpstreamTimeout for the lease of a claim:
// the run's upstream exchange is bounded by UpstreamTimeout, and the
// margin covers the store writes around it.
const runLeaseMargin = time.Minute

// claimRetry spaces the claim attempts of a poll that finds the run held
// by another live instance.
const claimRetry = time.Second

// claimHeld claims the run of hd for this instance. While another live
// instance holds it (ErrRunning), it tries again until deadline, the
// client goes or the gateway drains: a take-over becomes possible when
// that instance dies or its lease passes.
func (h *handler) claimHeld(ctx context.Context, sp *StatementPolicy, hd *held, deadline time.Time) (*approval.ClaimResult, error) {
	lease := h.g.cfg.UpstreamTimeout + runLeaseMargin
	for {
		res, err := sp.Approvals.ClaimRun(ctx, hd.approvalID, lease)
		left := time.Until(deadline)
		if !errors.Is(err, approval.ErrRunning) || left <= 0 {
			return res, err
		}
		t := time.NewTimer(min(claimRetry, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, err
		case <-h.g.draining:
			t.Stop()
			return res, err
		case <-t.C:
		}
	}
}

// runningElsewhere is the 333334 answer to a poll of a held query whose
// run another live gateway instance holds.
func runningElsewhere(hd *held, res *approval.ClaimResult) *reply {
	by := "another gateway instance"
	if res != nil && res.Previous != nil {
		by = "gateway instance " + res.Previous.String()
	}
	return stillRunning(hd, fmt.Sprintf("the statement approved in %s is being run by %s.", hd.approvalID, by), 1)
}

// recordOutcome marks the run of hd finished in the approval store, so a
// successor does not take it for an interrupted run. A failure only logs:
// a successor then resends with the same requestId, which the service
// de-duplicates.
func (h *handler) recordOutcome(ctx context.Context, sp *StatementPolicy, hd *held, rep *reply, err error) {
	outcome := "success"
	var se *snowflake.Error
	switch {
	case errors.As(err, &se):
		outcome = "error " + se.Code
	case err != nil:
		outcome = "error"
	default:
		if env, perr := snowflake.ParseEnvelope(rep.Body); perr != nil || !env.Success {
			code := ""
			if env != nil {
				code = env.Code
			}
			outcome = strings.TrimSpace(fmt.Sprintf("error %d %s", rep.Status, code))
		}
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, ferr := sp.Approvals.Finish(fctx, hd.approvalID, outcome); ferr != nil {
		h.log.Warn("approval store: the run's outcome was not recorded", "approval", hd.approvalID, "outcome", outcome, "err", ferr)
	}
}

// sessionFailure reports whether a reply is a session error (390xxx: the
// token expired or is invalid), which the statement never got past.
func sessionFailure(body []byte) bool {
	env, err := snowflake.ParseEnvelope(body)
	return err == nil && !env.Success && strings.HasPrefix(env.Code, "390")
}

// inProgressID is the query id of a "still running" reply, else "".
func inProgressID(body []byte) string {
	q, err := snowflake.ParseQueryResponse(body)
	if err != nil || !q.InProgress() {
		return ""
	}
	return q.QueryID
}

// retryable reports whether a reply (or refusal) is a transient failure.
func retryable(rep *reply, err error) bool {
	var se *snowflake.Error
	switch {
	case errors.As(err, &se):
		return se.HTTPStatus >= 500 || se.HTTPStatus == http.StatusTooManyRequests
	case err != nil:
		return false
	}
	return rep.Status >= 500 || rep.Status == http.StatusTooManyRequests
}

// monitorHeld answers GET /monitoring/queries/<qid> for a held query:
// RUNNING while pending, SUCCESS once approved (so the driver fetches the
// result, which runs it), FAILED_WITH_ERROR otherwise.
func (h *handler) monitorHeld(ctx context.Context, sp *StatementPolicy, hd *held, x *Exchange) (*reply, error) {
	r, err := sp.Approvals.Get(ctx, hd.approvalID)
	if err != nil {
		return nil, h.storeRefusal(hd, err)
	}
	h.noteHeld(hd, r, x)
	q := map[string]any{
		"id": hd.qid, "status": "RUNNING", "state": "WAITING_FOR_APPROVAL", "errorCode": "", "errorMessage": nil,
		"sqlText": hd.sql, "startTime": hd.created.UnixMilli(), "endTime": 0, "stats": map[string]any{"scanBytes": 0},
	}
	switch r.State {
	case approval.Approved:
		q["status"], q["state"] = "SUCCESS", "APPROVED"
	case approval.Pending:
	default:
		e := heldError(hd, r)
		q["status"], q["state"], q["errorCode"], q["errorMessage"] = "FAILED_WITH_ERROR", strings.ToUpper(string(r.State)), strings.TrimLeft(e.Code, "0"), e.Message
		if r.DecidedAt != nil {
			q["endTime"] = r.DecidedAt.UnixMilli()
		}
	}
	body, _ := json.Marshal(map[string]any{"success": true, "code": nil, "message": nil, "data": map[string]any{"queries": []any{q}}})
	return &reply{Status: http.StatusOK, Header: jsonHeader(), Body: body}, nil
}

// abortHeld cancels a pending held query (the client gave up). A query
// already approved and running is aborted upstream as usual.
func (h *handler) abortHeld(ctx context.Context, sp *StatementPolicy, hd *held, x *Exchange) (*reply, error) {
	r, err := sp.Approvals.Get(ctx, hd.approvalID)
	if err != nil {
		return nil, h.storeRefusal(hd, err)
	}
	if r.State == approval.Approved {
		return nil, nil
	}
	if r.State == approval.Pending {
		if r, err = sp.Approvals.Cancel(ctx, hd.approvalID, "the client aborted the query"); err != nil && !errors.Is(err, approval.ErrFinal) {
			return nil, h.storeRefusal(hd, err)
		}
	}
	if r != nil {
		h.noteHeld(hd, r, x)
	}
	body, _ := json.Marshal(snowflake.OK(nil))
	return &reply{Status: http.StatusOK, Header: jsonHeader(), Body: body}, nil
}
