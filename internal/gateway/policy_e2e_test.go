package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/approval"
	"github.com/snowgate/snowgate/internal/approval/approvaltest"
	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/policy"
	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
)

// statementsPrincipal is a test double of the identity stage: it forwards the
// client's own credentials (as ObserveOnly does) and names the principal
// every request acts for, as the identity stage does after a login.
type statementsPrincipal struct {
	gateway.ObserveOnly
	p *gateway.Principal
}

func (h statementsPrincipal) Outbound(_ context.Context, c *gateway.Call, _ *http.Request, body []byte) ([]byte, error) {
	c.Principal = h.p
	return body, nil
}

// testPrincipal is the agent's verified identity in these tests.
var testPrincipal = &gateway.Principal{
	SessionID: "sess-policy-e2e", Issuer: "https://ci.example", Subject: "repo:acme/app:ref:refs/heads/main",
	Rule: "agents", Account: testAccount, User: testUser, Role: "AGENT_RW", Database: "TESTDB", Schema: "PUBLIC",
}

// testClock is real time plus an offset the test moves forward: the
// approval service's clock (past the approval timeout), the identity
// stage's (past a continuation window).
type testClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// agentsPolicy is the statement policy of rule "agents": reads pass, DML
// waits for a reviewer, DDL runs except on PROD_* objects, and reads of
// ORDERS are watched by an observe-mode rule.
func agentsPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.New(policy.Config{
		Name:    "agents",
		Classes: map[policy.Class]policy.Action{policy.ClassRead: policy.Allow, policy.ClassDML: policy.Approve, policy.ClassDDL: policy.Allow},
		Rules: []policy.RuleConfig{
			{Name: "no-prod-ddl", Objects: []string{"*.*.PROD_*"}, Classes: []policy.Class{policy.ClassDDL}, Action: policy.Deny},
			{Name: "watch-orders", Objects: []string{"*.*.ORDERS"}, Classes: []policy.Class{policy.ClassRead}, Action: policy.Deny, Observe: true},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newPolicyFixture is the data path with the statement stage: the agents
// policy and an approval service on a SQLite store.
func newPolicyFixture(t *testing.T) (*fixture, *approval.Service, *testClock) {
	t.Helper()
	testenv.RequireRoot(t)
	store, err := approval.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "approvals.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return newPolicyFixtureOn(t, store)
}

// newPolicyFixtureOn is newPolicyFixture with the approval store given.
func newPolicyFixtureOn(t *testing.T, store approval.Store) (*fixture, *approval.Service, *testClock) {
	t.Helper()
	clk := &testClock{}
	svc, err := approval.NewService(approval.Config{Store: store, Timeout: 10 * time.Minute, Now: clk.Now, StorePoll: 100 * time.Millisecond, Gateway: "test"})
	if err != nil {
		t.Fatal(err)
	}
	sp := &gateway.StatementPolicy{
		Rules:     map[string]*policy.Policy{"agents": agentsPolicy(t)},
		Approvals: svc,
		PollHold:  time.Second,
	}
	f := newFixture(t, fixtureOptions{Credentials: statementsPrincipal{p: testPrincipal}, Statements: sp})
	statementPolicies.Store(f, sp)
	return f, svc, clk
}

// statementPolicies remembers each policy fixture's statement stage.
var statementPolicies sync.Map

func waitReply(t testing.TB, ch <-chan clientReply) clientReply {
	t.Helper()
	select {
	case r := <-ch:
		if r.Code == -1 {
			t.Fatal(r.Err)
		}
		return r
	case <-time.After(4 * time.Minute):
		t.Fatal("no reply from the agent within 4 minutes")
	}
	return clientReply{}
}

// pendingFor waits for the pending approval request whose SQL is sql.
func pendingFor(t testing.TB, svc *approval.Service, sql string) *approval.Request {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := svc.List(context.Background(), approval.Pending, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list {
			if r.SQL == sql {
				return r
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no pending approval request for %q", sql)
	return nil
}

// executions counts the emulator's executions of statements containing s.
func executions(f *fixture, s string) int {
	n := 0
	for _, e := range f.inst.Server.QueryLog() {
		if strings.Contains(strings.ToUpper(e.SQL), strings.ToUpper(s)) {
			n++
		}
	}
	return n
}

// heldPolls counts the result polls of the held query qid the gateway
// answered itself.
func (s *memorySink) heldPolls(qid string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, x := range s.xs {
		if x.Kind == snowflake.KindQueryResult.String() && x.QueryID == qid {
			n++
		}
	}
	return n
}

// verdicts returns the verdicts of exchanges of kind.
func (s *memorySink) verdicts(kind string) []gateway.Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []gateway.Verdict
	for _, x := range s.xs {
		if x.Kind == kind && x.Verdict != nil {
			out = append(out, *x.Verdict)
		}
	}
	return out
}

// TestStatementPolicyGo drives the unchanged gosnowflake driver through the
// statement stage: DDL on PROD_* objects and privileged statements are
// refused with a Snowflake-shaped error naming the rule and never reach the
// emulator; an observe-mode rule is recorded, not enforced; a DML waits for
// a reviewer while the driver polls, runs exactly once when approved
// (with its bindings) and returns its real result; denial and timeout end
// it with clear errors; the requester cannot approve itself.
func TestStatementPolicyGo(t *testing.T) {
	f, svc, clk := newPolicyFixture(t)
	a := f.startAgent(t)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
		t.Fatalf("open: %s", r.Err)
	}
	if r := a.do(t, clientCmd{Op: "exec", SQL: "CREATE TABLE orders (id INT, amount INT)"}); r.Err != "" {
		t.Fatalf("allowed DDL: %s", r.Err)
	}

	t.Run("deny", func(t *testing.T) {
		for _, tc := range []struct {
			sql, rule, class string
		}{
			{"CREATE TABLE prod_users (id INT)", "agents: no-prod-ddl", "ddl"},
			{"GRANT ROLE sysadmin TO USER alice", "agents: statements.privileged", "privileged"},
			{"SELECT 1; DROP TABLE orders", "agents: statements.multi_statement", "multi_statement"},
			{"SEL/**/ECT 1", "agents: statements.unknown", "unknown"},
		} {
			r := a.do(t, clientCmd{Op: "exec", SQL: tc.sql})
			if r.Code != 3001 || !strings.Contains(r.Err, tc.rule) || !strings.Contains(r.Err, "class "+tc.class) {
				t.Errorf("%q: error %d %q, want 3001 naming rule %q and class %s", tc.sql, r.Code, r.Err, tc.rule, tc.class)
			}
		}
		if n := executions(f, "PROD_USERS") + executions(f, "GRANT") + executions(f, "DROP"); n != 0 {
			t.Errorf("%d denied statements reached the emulator", n)
		}
		found := false
		for _, v := range f.sink.verdicts(snowflake.KindQueryRequest.String()) {
			if v.Class == "ddl" && v.Enforced == "deny" && v.Rule == "agents: no-prod-ddl" {
				found = true
			}
		}
		if !found {
			t.Error("no deny verdict recorded for the DDL")
		}
	})

	t.Run("observe", func(t *testing.T) {
		r := a.do(t, clientCmd{Op: "query", SQL: "SELECT COUNT(*) FROM orders"})
		if r.Err != "" || fmt.Sprint(r.Rows) != "[[0]]" {
			t.Fatalf("read watched in observe mode: %+v", r)
		}
		found := false
		for _, v := range f.sink.verdicts(snowflake.KindQueryRequest.String()) {
			if v.Observe && v.Action == "deny" && v.Enforced == "allow" && v.Rule == "agents: watch-orders" {
				found = true
			}
		}
		if !found {
			t.Error("the observe-mode decision was not recorded")
		}
	})

	t.Run("approve", func(t *testing.T) {
		const sql = "INSERT INTO orders VALUES (?, ?), (2, 20)"
		reply := send(a, clientCmd{Op: "exec", SQL: sql, Args: []any{1, 10}})
		req := pendingFor(t, svc, sql)
		if req.Requester != approval.IdentityOf(testPrincipal.Issuer, testPrincipal.Subject) || req.Rule != "agents" || req.Class != "dml" || !strings.Contains(string(req.Bindings), `"10"`) {
			t.Errorf("approval request %+v", req)
		}
		// The driver keeps polling while the request waits; nothing runs.
		deadline := time.Now().Add(time.Minute)
		for f.sink.heldPolls(req.QueryID) < 2 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if n := f.sink.heldPolls(req.QueryID); n < 2 {
			t.Errorf("%d polls while held, want the driver to keep polling", n)
		}
		if _, err := svc.Decide(context.Background(), req.ID, req.Requester, true, "I approve myself"); !errors.Is(err, approval.ErrSelfApproval) {
			t.Errorf("self-approval: %v, want ErrSelfApproval", err)
		}
		if n := executions(f, "INSERT INTO orders"); n != 0 {
			t.Fatalf("held statement executed %d times before approval", n)
		}
		if _, err := svc.Decide(context.Background(), req.ID, "alice@example.com", true, "one-off backfill"); err != nil {
			t.Fatal(err)
		}
		r := waitReply(t, reply)
		if r.Err != "" || r.Affected != 2 {
			t.Fatalf("approved insert: %+v, want 2 rows affected", r)
		}
		if n := executions(f, "INSERT INTO orders"); n != 1 {
			t.Errorf("approved statement executed %d times, want exactly once", n)
		}
		got, err := svc.Get(context.Background(), req.ID)
		if err != nil || got.ExecutedAt == nil {
			t.Errorf("approval after the run: %+v (%v), want executed", got, err)
		}
		found := false
		for _, v := range f.sink.verdicts(snowflake.KindQueryResult.String()) {
			if v.ApprovalID == req.ID && v.Approval == "approved" && strings.Contains(v.Reason, "alice@example.com") && strings.Contains(v.Reason, "one-off backfill") {
				found = true
			}
		}
		if !found {
			t.Error("the decision (who, why) is not on the held query's exchange")
		}
		if r := a.do(t, clientCmd{Op: "query", SQL: "SELECT id, amount FROM orders ORDER BY id"}); fmt.Sprint(r.Rows) != "[[1 10] [2 20]]" {
			t.Errorf("rows after the approved insert: %+v", r)
		}
	})

	t.Run("lost reply of the approved run", func(t *testing.T) {
		// The emulator runs the approved statement but its replies are
		// lost (503 after execution) three times: the gateway's own retries
		// give up, the driver retries its poll, the gateway resends the
		// same requestId, and the service answers from its one execution.
		const sql = "INSERT INTO orders VALUES (3, 30)"
		reply := send(a, clientCmd{Op: "exec", SQL: sql})
		req := pendingFor(t, svc, sql)
		f.inst.Server.Faults().Add(emulator.Fault{Endpoint: emulator.EndpointQuery, Status: http.StatusServiceUnavailable, After: true, Count: 3})
		t.Cleanup(f.inst.Server.Faults().Clear)
		if _, err := svc.Decide(context.Background(), req.ID, "alice@example.com", true, "ok"); err != nil {
			t.Fatal(err)
		}
		r := waitReply(t, reply)
		if r.Err != "" || r.Affected != 1 {
			t.Fatalf("approved insert after a lost reply: %+v", r)
		}
		if n := f.inst.Server.Faults().Injected(emulator.EndpointQuery); n != 3 {
			t.Errorf("%d replies lost, want 3", n)
		}
		if n := f.sink.count(snowflake.KindQueryResult.String(), http.StatusServiceUnavailable); n < 1 {
			t.Errorf("%d polls answered 503 (the lost reply), want the driver to have retried one", n)
		}
		if n := executions(f, sql); n != 1 {
			t.Errorf("approved statement executed %d times, want exactly once", n)
		}
	})

	t.Run("held across a restart", func(t *testing.T) {
		// The gateway forgets its held queries (a restart); the driver's
		// next poll finds the request in the approval store, and once
		// approved it runs there, once.
		const sql = "INSERT INTO orders VALUES (4, 40)"
		reply := send(a, clientCmd{Op: "exec", SQL: sql})
		req := pendingFor(t, svc, sql)
		v, _ := statementPolicies.Load(f)
		sp := v.(*gateway.StatementPolicy)
		sp.ForgetHeld()
		deadline := time.Now().Add(time.Minute)
		for sp.HeldCount() == 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if sp.HeldCount() != 1 {
			t.Fatal("the driver's polls did not recover the held query from the store")
		}
		if _, err := svc.Decide(context.Background(), req.ID, "alice@example.com", true, "ok"); err != nil {
			t.Fatal(err)
		}
		if r := waitReply(t, reply); r.Err != "" || r.Affected != 1 {
			t.Fatalf("insert held across a restart: %+v", r)
		}
		if n := executions(f, sql); n != 1 {
			t.Errorf("executed %d times, want once", n)
		}
	})

	t.Run("session expired while held", func(t *testing.T) {
		// The session token expires while the statement waits: the run
		// gets 390112, the driver renews and polls again, and the run is
		// retried with the new token; it executes once.
		const sql = "INSERT INTO orders VALUES (5, 50)"
		reply := send(a, clientCmd{Op: "exec", SQL: sql})
		req := pendingFor(t, svc, sql)
		renewals := f.sink.count(snowflake.KindTokenRequest.String(), http.StatusOK)
		f.inst.Server.Faults().ExpireSessions()
		if _, err := svc.Decide(context.Background(), req.ID, "alice@example.com", true, "ok"); err != nil {
			t.Fatal(err)
		}
		if r := waitReply(t, reply); r.Err != "" || r.Affected != 1 {
			t.Fatalf("insert after the session expired: %+v", r)
		}
		if f.sink.count(snowflake.KindTokenRequest.String(), http.StatusOK) <= renewals {
			t.Error("the driver did not renew its session")
		}
		if n := executions(f, sql); n != 1 {
			t.Errorf("executed %d times, want once", n)
		}
	})

	t.Run("async mode", func(t *testing.T) {
		const sql = "UPDATE orders SET amount = amount + 1 WHERE id = 3"
		reply := send(a, clientCmd{Op: "query", SQL: sql, Async: true})
		req := pendingFor(t, svc, sql)
		if _, err := svc.Decide(context.Background(), req.ID, "alice@example.com", true, "ok"); err != nil {
			t.Fatal(err)
		}
		if r := waitReply(t, reply); r.Err != "" || fmt.Sprint(r.Rows) != "[[1 0]]" {
			t.Fatalf("async update: %+v, want one row updated", r)
		}
		if n := executions(f, sql); n != 1 {
			t.Errorf("approved statement executed %d times, want exactly once", n)
		}
	})

	t.Run("deny by reviewer", func(t *testing.T) {
		const sql = "DELETE FROM orders WHERE id = 1"
		reply := send(a, clientCmd{Op: "exec", SQL: sql})
		req := pendingFor(t, svc, sql)
		if _, err := svc.Decide(context.Background(), req.ID, "bob@example.com", false, "not during the freeze"); err != nil {
			t.Fatal(err)
		}
		r := waitReply(t, reply)
		if r.Code != 3001 || !strings.Contains(r.Err, "denied by bob@example.com") || !strings.Contains(r.Err, "not during the freeze") {
			t.Errorf("denied statement: %d %q", r.Code, r.Err)
		}
		if _, err := svc.Decide(context.Background(), req.ID, "alice@example.com", true, "late"); !errors.Is(err, approval.ErrFinal) {
			t.Errorf("approve after deny: %v, want ErrFinal", err)
		}
		if n := executions(f, "DELETE FROM orders"); n != 0 {
			t.Errorf("denied statement executed %d times", n)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		const sql = "UPDATE orders SET amount = 0"
		reply := send(a, clientCmd{Op: "exec", SQL: sql})
		req := pendingFor(t, svc, sql)
		clk.Add(11 * time.Minute)
		r := waitReply(t, reply)
		if r.Code != 630 || !strings.Contains(r.Err, "expired") || !strings.Contains(r.Err, req.ID) {
			t.Errorf("expired statement: %d %q", r.Code, r.Err)
		}
		if _, err := svc.Decide(context.Background(), req.ID, "alice@example.com", true, "too late"); !errors.Is(err, approval.ErrFinal) && !errors.Is(err, approval.ErrExpired) {
			t.Errorf("approve after timeout: %v", err)
		}
		if n := executions(f, sql); n != 0 {
			t.Errorf("expired statement executed %d times", n)
		}
	})
}

// TestStatementPolicyNode runs the same hold with the unchanged Node
// snowflake-sdk: approved, the insert runs once and reports its row count;
// denied, the driver reports 003001.
func TestStatementPolicyNode(t *testing.T) {
	f, svc, _ := newPolicyFixture(t)
	c := testenv.NewNodeClient(t)
	c.CAFile = f.caFile
	c.Proc = &testenv.Proc{Cgroup: f.cg, Netns: f.ns, Root: true}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := c.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustOK := func(step testenv.NodeStep) testenv.NodeResult {
		t.Helper()
		r, err := s.Do(step)
		if err != nil {
			t.Fatalf("node client: %v", err)
		}
		if err := r.Err(); err != nil {
			t.Fatalf("step %d (%s %q): %v", r.Step, r.Op, step.SQLText, err)
		}
		return r
	}
	// background runs one step while the test plays the reviewer.
	background := func(step testenv.NodeStep) <-chan testenv.NodeResult {
		ch := make(chan testenv.NodeResult, 1)
		go func() {
			r, err := s.Do(step)
			if err != nil {
				r = testenv.NodeResult{Error: &testenv.NodeError{Code: "HARNESS", Message: err.Error()}}
			}
			ch <- r
		}()
		return ch
	}
	wait := func(ch <-chan testenv.NodeResult) testenv.NodeResult {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(4 * time.Minute):
			t.Fatal("node step did not finish")
		}
		return testenv.NodeResult{}
	}
	mustOK(testenv.NodeConnect(testenv.NodeConnection{Account: testAccount, Username: testUser, Password: testPassword}))
	mustOK(testenv.NodeExecute("CREATE TABLE n (id INT)"))

	// The reviewer decides through the approvals HTTP API (what
	// `snowgate approvals approve` calls), with a static token.
	tokens, err := approval.ParseTokens(strings.NewReader("alice@example.com reviewer-token-0123456789\n"))
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(svc.Handler(tokens))
	defer api.Close()
	reviewer := &approval.Client{BaseURL: api.URL, Token: "reviewer-token-0123456789"}

	const insert = "INSERT INTO n VALUES (?), (?)"
	ch := background(testenv.NodeExecute(insert, 1, 2))
	req := pendingFor(t, svc, insert)
	if got, err := reviewer.Decide(context.Background(), req.ID, true, "fine"); err != nil || got.State != approval.Approved {
		t.Fatalf("approve through the API: %+v (%v)", got, err)
	}
	r := wait(ch)
	if err := r.Err(); err != nil || r.NumUpdatedRows == nil || *r.NumUpdatedRows != 2 {
		t.Fatalf("approved insert: %+v (%v), want 2 rows", r, err)
	}
	if n := executions(f, "INSERT INTO n"); n != 1 {
		t.Errorf("approved statement executed %d times, want once", n)
	}

	// asyncExec, then getResultsFromQueryId: the driver polls the
	// monitoring endpoint (RUNNING while held) and fetches the result once
	// approved.
	const upd = "UPDATE n SET id = id + 10 WHERE id = 2"
	async := testenv.NodeExecute(upd)
	async.AsyncExec = true
	r = mustOK(async)
	if r.QueryID == "" {
		t.Fatal("asyncExec returned no query id")
	}
	fetch := testenv.NodeFetchResult(r.QueryID)
	fetch.FetchAsString = testenv.NodeFetchAllAsString
	ch = background(fetch)
	req = pendingFor(t, svc, upd)
	if req.QueryID != r.QueryID {
		t.Errorf("held query id %s, driver has %s", req.QueryID, r.QueryID)
	}
	time.Sleep(time.Second) // let the driver poll the monitoring endpoint while held
	if _, err := svc.Decide(context.Background(), req.ID, "alice@example.com", true, "fine"); err != nil {
		t.Fatal(err)
	}
	if r := wait(ch); r.Err() != nil || fmt.Sprint(r.Rows) != "[[1 0]]" {
		t.Errorf("async update fetched by id: %+v (%v)", r.Rows, r.Err())
	}
	if n := executions(f, upd); n != 1 {
		t.Errorf("approved statement executed %d times, want once", n)
	}
	if f.sink.count(snowflake.KindMonitoring.String(), 200) == 0 {
		t.Error("the driver never asked the monitoring endpoint")
	}

	// statement.cancel() while held: the request is cancelled and never runs.
	const trunc = "DELETE FROM n WHERE id = 1"
	cancelStep := testenv.NodeExecute(trunc)
	cancelStep.CancelAfterMS = 3000
	ch = background(cancelStep)
	req = pendingFor(t, svc, trunc)
	r = wait(ch)
	// The harness reports cancel()'s own outcome when it returns before
	// the statement ends; either way the statement must not succeed.
	if r.OK || (r.Cancel != nil && !r.Cancel.OK) {
		t.Errorf("cancelled statement: ok=%v cancel=%+v error=%+v", r.OK, r.Cancel, r.Error)
	}
	if got, err := svc.Get(context.Background(), req.ID); err != nil || got.State != approval.Cancelled {
		t.Errorf("approval after cancel: %+v (%v), want cancelled", got, err)
	}
	if n := executions(f, trunc); n != 0 {
		t.Errorf("cancelled statement executed %d times", n)
	}

	const del = "DELETE FROM n"
	ch = background(testenv.NodeExecute(del))
	req = pendingFor(t, svc, del)
	if _, err := svc.Decide(context.Background(), req.ID, "bob@example.com", false, "no"); err != nil {
		t.Fatal(err)
	}
	r = wait(ch)
	if r.Error == nil || r.Error.Code != policy.CodeAccessDenied || !strings.Contains(r.Error.Message, "denied by bob@example.com") {
		t.Errorf("denied delete: %+v", r.Error)
	}
	if n := executions(f, "DELETE FROM n"); n != 0 {
		t.Errorf("denied statement executed %d times", n)
	}
	sel := testenv.NodeExecute("SELECT COUNT(*) FROM n")
	sel.FetchAsString = testenv.NodeFetchAllAsString
	if r := mustOK(sel); fmt.Sprint(r.Rows) != "[[2]]" {
		t.Errorf("rows %v, want [[2]]", r.Rows)
	}
	mustOK(testenv.NodeDestroy())
	if err := s.Close(); err != nil {
		t.Errorf("node client exit: %v", err)
	}
}

// TestStatementPolicyFleet: the gateway's approval store is PostgreSQL,
// shared with a second gateway of the fleet; a reviewer on the second one
// sees the held statement in its queue and approves it there, and the
// first gateway's waiting driver gets its result.
func TestStatementPolicyFleet(t *testing.T) {
	testenv.RequireRoot(t)
	pg := approvaltest.Postgres(t)
	open := func() approval.Store {
		st, err := approval.OpenPostgres(context.Background(), pg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	f, _, _ := newPolicyFixtureOn(t, open())
	other, err := approval.NewService(approval.Config{Store: open(), Gateway: "runner-2"})
	if err != nil {
		t.Fatal(err)
	}
	a := f.startAgent(t)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
		t.Fatalf("open: %s", r.Err)
	}
	if r := a.do(t, clientCmd{Op: "exec", SQL: "CREATE TABLE fleet (id INT)"}); r.Err != "" {
		t.Fatal(r.Err)
	}
	const sql = "INSERT INTO fleet VALUES (1)"
	reply := send(a, clientCmd{Op: "exec", SQL: sql})
	req := pendingFor(t, other, sql)
	if req.Gateway != "test" {
		t.Errorf("request held by %q, want the first gateway", req.Gateway)
	}
	if _, err := other.Decide(context.Background(), req.ID, "alice@example.com", true, "from runner-2"); err != nil {
		t.Fatal(err)
	}
	if r := waitReply(t, reply); r.Err != "" || r.Affected != 1 {
		t.Fatalf("insert approved on the other gateway: %+v", r)
	}
	if n := executions(f, sql); n != 1 {
		t.Errorf("executed %d times, want once", n)
	}
}
