package gateway_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/approval"
	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/testenv"
)

// storedClaim is the run's claim as a killed (or live) gateway left it in
// the approval store, written in the same statement as the approval so the
// gateway's polling driver never sees the request approved and unclaimed.
type storedClaim struct {
	// claimer is nil for a claim stored before claimers were recorded.
	claimer *approval.Instance
	// claimedAgo is how long before now the run was first claimed; lease
	// is when the claim ends, from now.
	claimedAgo, lease time.Duration
	// finished: the run recorded its outcome.
	finished bool
}

// writeClaim approves request id and claims its run as c, in one UPDATE
// of the SQLite store at path, as another process sharing the file does.
func writeClaim(t *testing.T, path, id string, c storedClaim) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(15000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	var claimer, ran any
	if c.claimer != nil {
		b, err := json.Marshal(c.claimer)
		if err != nil {
			t.Fatal(err)
		}
		claimer = string(b)
	}
	if c.finished {
		ran = now.Add(-c.claimedAgo / 2).UnixNano()
	}
	var lease any
	if c.claimer != nil {
		lease = now.Add(c.lease).UnixNano()
	}
	res, err := db.ExecContext(context.Background(), `UPDATE snowgate_approvals SET state = 'approved', decided_at = ?, decision_reason = 'ok',
		executed_at = ?, claimed_by = ?, lease_until = ?, ran_at = ?, run_outcome = CASE WHEN ? IS NULL THEN '' ELSE 'success' END
		WHERE id = ? AND state = 'pending'`,
		now.Add(-c.claimedAgo).UnixNano(), now.Add(-c.claimedAgo).UnixNano(), claimer, lease, ran, ran, id)
	if err != nil {
		t.Fatalf("write the claim: %v", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("write the claim: %d rows, want 1", n)
	}
}

// endLease moves the stored claim's lease of request id into the past.
func endLease(t *testing.T, path, id string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(15000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), `UPDATE snowgate_approvals SET lease_until = ? WHERE id = ?`, time.Now().Add(-time.Second).UnixNano(), id); err != nil {
		t.Fatal(err)
	}
}

// takeClaim rewrites the claimer of request id's run as in, as if in had
// claimed it.
func takeClaim(t *testing.T, path, id string, in *approval.Instance) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(15000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.ExecContext(context.Background(), `UPDATE snowgate_approvals SET claimed_by = ? WHERE id = ? AND executed_at IS NOT NULL AND ran_at IS NULL`, string(b), id)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("rewrite the claimer: %d rows, want 1 (a claimed run without outcome)", n)
	}
}

// exitedInstance is a gateway instance of this host whose process is gone
// (SIGKILLed, say): a child that exited.
func exitedInstance(t *testing.T) *approval.Instance {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "exit 0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in := approval.Self()
	in.ID, in.PID = "gw_killed", cmd.Process.Pid
	start, err := approval.ProcessStart(in.PID)
	if err != nil {
		t.Fatal(err)
	}
	in.Start = start
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	return &in
}

// TestHeldRunResumed drives gosnowflake's held DML through the gateway
// while the approval store holds the approved run claimed by another
// gateway instance. A claim by a dead instance (killed after its claim,
// before its reply), or one past its lease, is resumed on the driver's
// poll: the statement executes exactly once and the driver gets its
// result. A claim by a live instance is left alone (the poll answers
// "still running") until its lease passes. A run first claimed beyond the
// resend window is refused as already run.
func TestHeldRunResumed(t *testing.T) {
	testenv.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "approvals.db")
	store, err := approval.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f, svc, _ := newPolicyFixtureOn(t, store)
	a := f.startAgent(t)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
		t.Fatalf("open: %s", r.Err)
	}
	if r := a.do(t, clientCmd{Op: "exec", SQL: "CREATE TABLE resumed (id INT)"}); r.Err != "" {
		t.Fatal(r.Err)
	}
	alive := approval.Self()
	alive.ID = "gw_alive" // another gateway instance in this live process

	cases := []struct {
		name  string
		sql   string
		claim func(t *testing.T) storedClaim
		// liveFirst: the claimer is alive; the gateway must not run the
		// statement until the test ends the claimer's lease.
		liveFirst bool
		// refused: the driver gets "already ran" and nothing executes.
		refused bool
	}{
		{name: "claimer killed", sql: "INSERT INTO resumed VALUES (1)",
			claim: func(t *testing.T) storedClaim {
				return storedClaim{claimer: exitedInstance(t), claimedAgo: time.Second, lease: time.Hour}
			}},
		{name: "claim of an earlier version past its bound", sql: "INSERT INTO resumed VALUES (2)",
			claim: func(*testing.T) storedClaim {
				return storedClaim{claimedAgo: approval.DefaultRunBound + time.Minute}
			}},
		{name: "claimer alive, then its lease passes", sql: "INSERT INTO resumed VALUES (3)", liveFirst: true,
			claim: func(*testing.T) storedClaim {
				return storedClaim{claimer: &alive, claimedAgo: time.Second, lease: time.Hour}
			}},
		{name: "finished beyond the resend window", sql: "INSERT INTO resumed VALUES (4)", refused: true,
			claim: func(t *testing.T) storedClaim {
				return storedClaim{claimer: exitedInstance(t), claimedAgo: approval.ResendWindow + time.Minute, lease: time.Hour, finished: true}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resumedBefore := svc.ResumedRuns()
			reply := send(a, clientCmd{Op: "exec", SQL: tc.sql})
			req := pendingFor(t, svc, tc.sql)
			writeClaim(t, path, req.ID, tc.claim(t))
			if tc.liveFirst {
				// The driver keeps polling; every poll finds the run
				// claimed by a live instance and answers "still running".
				polls := f.sink.heldPolls(req.QueryID)
				deadline := time.Now().Add(2 * time.Minute)
				for f.sink.heldPolls(req.QueryID) < polls+3 && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				if n := f.sink.heldPolls(req.QueryID); n < polls+3 {
					t.Fatalf("%d polls after the live claim, want the driver to keep polling", n-polls)
				}
				select {
				case r := <-reply:
					t.Fatalf("the driver got a reply while a live instance held the run: %+v", r)
				default:
				}
				if n := executions(f, tc.sql); n != 0 {
					t.Fatalf("executed %d times while a live instance held the run", n)
				}
				if got, err := svc.Get(context.Background(), req.ID); err != nil || got.Claimer == nil || got.Claimer.ID != alive.ID {
					t.Fatalf("claimer %+v (%v), want the live instance kept", got, err)
				}
				endLease(t, path, req.ID)
			}
			r := waitReply(t, reply)
			if tc.refused {
				if r.Code != 3001 || !strings.Contains(r.Err, "already ran") {
					t.Fatalf("run first claimed beyond the resend window: %+v, want 003001 already ran", r)
				}
				if n := executions(f, tc.sql); n != 0 {
					t.Errorf("executed %d times, want never", n)
				}
				if svc.ResumedRuns() != resumedBefore {
					t.Error("a refused run was counted as resumed")
				}
				return
			}
			if r.Err != "" || r.Affected != 1 {
				t.Fatalf("resumed insert: %+v, want 1 row affected", r)
			}
			if n := executions(f, tc.sql); n != 1 {
				t.Errorf("executed %d times, want exactly once", n)
			}
			if svc.ResumedRuns() != resumedBefore+1 {
				t.Errorf("ResumedRuns %d, want %d", svc.ResumedRuns(), resumedBefore+1)
			}
			got, err := svc.Get(context.Background(), req.ID)
			if err != nil || got.Claimer == nil || got.Claimer.ID != svc.Instance().ID || got.RanAt == nil || got.RunOutcome != "success" {
				t.Errorf("after the resumed run: claimer %+v ran %v outcome %q (%v), want this gateway's instance and a success", got.Claimer, got.RanAt, got.RunOutcome, err)
			}
		})
	}

	t.Run("claimer killed after the statement reached the service", func(t *testing.T) {
		// The run is claimed and sent by this gateway, the service executes
		// it but every reply is lost (503 after execution); then the
		// gateway "dies": it forgets its held queries and the store shows
		// the claim as a killed instance's. The driver's next poll resumes
		// the run with the same requestId, and the service answers from
		// its one execution.
		const stmt = "INSERT INTO resumed VALUES (5)"
		v, _ := statementPolicies.Load(f)
		sp := v.(*gateway.StatementPolicy)
		resumedBefore := svc.ResumedRuns()
		f.inst.Server.Faults().Add(emulator.Fault{Endpoint: emulator.EndpointQuery, Status: 503, After: true})
		t.Cleanup(f.inst.Server.Faults().Clear)
		reply := send(a, clientCmd{Op: "exec", SQL: stmt})
		req := pendingFor(t, svc, stmt)
		if _, err := svc.Decide(context.Background(), req.ID, "alice@example.com", true, "ok"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for executions(f, stmt) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := executions(f, stmt); n != 1 {
			t.Fatalf("executed %d times before the kill, want once", n)
		}
		sp.ForgetHeld()
		takeClaim(t, path, req.ID, exitedInstance(t))
		// The replies flow again once the driver's poll reached the
		// successor (the held query recovered from the store).
		for sp.HeldCount() == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if sp.HeldCount() == 0 {
			t.Fatal("the driver's polls did not reach the held query again")
		}
		f.inst.Server.Faults().Clear()
		r := waitReply(t, reply)
		if r.Err != "" || r.Affected != 1 {
			t.Fatalf("insert resumed after the kill: %+v, want 1 row affected", r)
		}
		if n := executions(f, stmt); n != 1 {
			t.Errorf("executed %d times, want exactly once", n)
		}
		if svc.ResumedRuns() != resumedBefore+1 {
			t.Errorf("ResumedRuns %d, want %d", svc.ResumedRuns(), resumedBefore+1)
		}
	})
}
