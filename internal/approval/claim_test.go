package approval

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/audit"
)

func TestParseStatStart(t *testing.T) {
	fields := "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21"
	cases := []struct {
		name, stat string
		want       uint64
		wantErr    bool
	}{
		{"plain", "1234 (snowgate) " + fields, 987654, false},
		{"command with spaces and parentheses", "1234 (a) b (c)) " + fields, 987654, false},
		{"no command", "1234 snowgate " + fields, 0, true},
		{"short", "1234 (snowgate) S 1 2 3", 0, true},
		{"not a number", "1234 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 soon", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatStart(tc.stat)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseStatStart = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// FuzzParseStatStart: the command name in /proc/<pid>/stat is whatever a
// process calls itself (spaces, parentheses, digits). Any name in a
// well-formed line yields the starttime; no input panics.
func FuzzParseStatStart(f *testing.F) {
	f.Add("snowgate", uint64(12345))
	f.Add("a) (b", uint64(0))
	f.Add(") 1 2 3", uint64(1<<63))
	f.Fuzz(func(t *testing.T, comm string, start uint64) {
		_, _ = parseStatStart(comm)
		if strings.ContainsAny(comm, "\x00\n") || len(comm) > 64 {
			return
		}
		line := fmt.Sprintf("4242 (%s) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 %d 20 21 22\n", comm, start)
		got, err := parseStatStart(line)
		if err != nil || got != start {
			t.Fatalf("parseStatStart(%q) = %d, %v; want %d", line, got, err, start)
		}
	})
}

// deadInstance is an instance of this host whose process has exited.
func deadInstance(t *testing.T, id string) Instance {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "exit 0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	start, err := ProcessStart(pid)
	if err != nil {
		t.Fatalf("start time of a running child: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	in := Self()
	in.ID, in.PID, in.Start = id, pid, start
	return in
}

// liveInstance is another gateway instance in this very process: alive.
func liveInstance(id string) Instance {
	in := Self()
	in.ID = id
	return in
}

// remoteInstance is a gateway instance on another host: its liveness is
// unknown here.
func remoteInstance(id string) Instance {
	return Instance{ID: id, Host: "runner-9", BootID: "00000000-0000-0000-0000-000000000009", PID: 4242, Start: 77}
}

func TestInstanceDead(t *testing.T) {
	me := Self()
	if me.PID != os.Getpid() || me.BootID == "" || me.Start == 0 || me.PIDNS == "" {
		t.Fatalf("Self() = %+v: want pid, boot id, pid namespace and start time", me)
	}
	reused := liveInstance("gw_reused")
	reused.Start++
	otherNS := deadInstance(t, "gw_otherns")
	otherNS.PIDNS = "pid:[1]"
	cases := []struct {
		name string
		o    Instance
		want bool
	}{
		{"this process under another id", liveInstance("gw_other"), false},
		{"itself", me, false},
		{"exited process", deadInstance(t, "gw_dead"), true},
		{"pid reused by a later process", reused, true},
		{"another host", remoteInstance("gw_remote"), false},
		{"another pid namespace", otherNS, false},
		{"no process named", Instance{ID: unknownClaimer}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := me.Dead(tc.o); got != tc.want {
				t.Fatalf("Dead(%+v) = %v, want %v", tc.o, got, tc.want)
			}
		})
	}
}

// auditRecorder keeps the audit events a service emits.
type auditRecorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (a *auditRecorder) Emit(e audit.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *auditRecorder) all() []audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

// gatewayService is a Service claiming as instance in; its audit events
// go to the returned recorder.
func gatewayService(t *testing.T, st Store, c *clock, in Instance) (*Service, *auditRecorder) {
	t.Helper()
	rec := &auditRecorder{}
	s, err := NewService(Config{Store: st, Timeout: 10 * time.Minute, Now: c.Now, StorePoll: 20 * time.Millisecond, Instance: &in, Audit: rec})
	if err != nil {
		t.Fatal(err)
	}
	return s, rec
}

// claimAs claims the run of id as instance in.
func claimAs(t *testing.T, st Store, c *clock, in Instance, id string, lease time.Duration) (*ClaimResult, error) {
	t.Helper()
	s, _ := gatewayService(t, st, c, in)
	return s.ClaimRun(context.Background(), id, lease)
}

// TestClaimRun runs the rule of resume against refuse on each store: a
// first claim by one instance, what happens to the run, then a second
// instance's claim.
func TestClaimRun(t *testing.T) {
	const lease = 2 * time.Minute
	cases := []struct {
		name    string
		approve bool
		first   func(t *testing.T) Instance // nil: no first claim
		finish  bool                        // the first run records its outcome
		advance time.Duration               // between the first claim and the second
		second  func(t *testing.T) Instance
		want    ClaimKind
		wantErr error
		why     string
	}{
		{name: "not approved", second: func(*testing.T) Instance { return liveInstance("gw_b") }, wantErr: ErrFinal},
		{name: "first claim", approve: true, second: func(*testing.T) Instance { return liveInstance("gw_b") }, want: ClaimNew},
		{name: "own claim again", approve: true, first: func(*testing.T) Instance { return liveInstance("gw_a") },
			second: func(*testing.T) Instance { return liveInstance("gw_a") }, wantErr: ErrRunning},
		{name: "claimer alive", approve: true, first: func(*testing.T) Instance { return liveInstance("gw_a") },
			second: func(*testing.T) Instance { return liveInstance("gw_b") }, wantErr: ErrRunning},
		{name: "claimer alive past its lease", approve: true, first: func(*testing.T) Instance { return liveInstance("gw_a") }, advance: lease,
			second: func(*testing.T) Instance { return liveInstance("gw_b") }, want: ClaimResumed, why: "lease passed"},
		{name: "claimer dead", approve: true, first: func(t *testing.T) Instance { return deadInstance(t, "gw_a") },
			second: func(*testing.T) Instance { return liveInstance("gw_b") }, want: ClaimResumed, why: "dead"},
		{name: "claimer on another host within its lease", approve: true, first: func(*testing.T) Instance { return remoteInstance("gw_a") }, advance: lease - time.Second,
			second: func(*testing.T) Instance { return liveInstance("gw_b") }, wantErr: ErrRunning},
		{name: "claimer on another host past its lease", approve: true, first: func(*testing.T) Instance { return remoteInstance("gw_a") }, advance: lease,
			second: func(*testing.T) Instance { return liveInstance("gw_b") }, want: ClaimResumed, why: "lease passed"},
		{name: "finished by a live claimer", approve: true, first: func(*testing.T) Instance { return liveInstance("gw_a") }, finish: true,
			second: func(*testing.T) Instance { return liveInstance("gw_b") }, want: ClaimReplay, why: "finished"},
		{name: "finished by a dead claimer", approve: true, first: func(t *testing.T) Instance { return deadInstance(t, "gw_a") }, finish: true,
			second: func(*testing.T) Instance { return liveInstance("gw_b") }, want: ClaimReplay, why: "finished"},
		{name: "finished past the resend window", approve: true, first: func(*testing.T) Instance { return liveInstance("gw_a") }, finish: true, advance: ResendWindow,
			second: func(*testing.T) Instance { return liveInstance("gw_b") }, wantErr: ErrClaimed},
		{name: "dead claimer past the resend window", approve: true, first: func(t *testing.T) Instance { return deadInstance(t, "gw_a") }, advance: ResendWindow,
			second: func(*testing.T) Instance { return liveInstance("gw_b") }, wantErr: ErrClaimed},
	}
	for _, sk := range storeKinds {
		t.Run(sk.name, func(t *testing.T) {
			st, _ := sk.open(t)
			for i, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					ctx := context.Background()
					c := &clock{now: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)}
					base := newService(t, st, c, 1)
					r := submit(t, base, fmt.Sprintf("claim-%d", i))
					if tc.approve {
						if _, err := base.Decide(ctx, r.ID, "alice", true, "ok"); err != nil {
							t.Fatal(err)
						}
					}
					var first Instance
					claimedAt := c.Now()
					if tc.first != nil {
						first = tc.first(t)
						res, err := claimAs(t, st, c, first, r.ID, lease)
						if err != nil || res.Kind != ClaimNew {
							t.Fatalf("first claim: %+v, %v", res, err)
						}
						if res.Request.Claimer == nil || res.Request.Claimer.ID != first.ID || !res.Request.LeaseUntil.Equal(claimedAt.Add(lease)) {
							t.Fatalf("first claim stored claimer %+v lease %v", res.Request.Claimer, res.Request.LeaseUntil)
						}
						if tc.finish {
							got, err := base.Finish(ctx, r.ID, "success")
							if err != nil || got.RanAt == nil || got.RunOutcome != "success" {
								t.Fatalf("finish: %+v, %v", got, err)
							}
						}
					}
					c.Add(tc.advance)
					second := tc.second(t)
					svc, rec := gatewayService(t, st, c, second)
					res, err := svc.ClaimRun(ctx, r.ID, lease)
					if tc.wantErr != nil {
						if !errors.Is(err, tc.wantErr) {
							t.Fatalf("second claim: %+v, %v; want %v", res, err, tc.wantErr)
						}
						if errors.Is(tc.wantErr, ErrClaimed) && !errors.Is(tc.wantErr, ErrRunning) && errors.Is(err, ErrRunning) {
							t.Fatalf("second claim: %v; want refused as already run, not running", err)
						}
						if svc.ResumedRuns() != 0 || len(rec.all()) != 0 {
							t.Errorf("a refused claim was counted as resumed (%d) or audited (%+v)", svc.ResumedRuns(), rec.all())
						}
						if tc.first != nil && (res == nil || res.Previous == nil || res.Previous.ID != first.ID) {
							t.Errorf("refusal names previous claimer %+v, want %s", res, first.ID)
						}
						got, err := base.Get(ctx, r.ID)
						if err != nil {
							t.Fatal(err)
						}
						if tc.first != nil && (got.Claimer == nil || got.Claimer.ID != first.ID) {
							t.Errorf("after a refused claim the claimer is %+v, want %s kept", got.Claimer, first.ID)
						}
						return
					}
					if err != nil || res.Kind != tc.want || res.Why != tc.why {
						t.Fatalf("second claim: %+v, %v; want %v (%q)", res, err, tc.want, tc.why)
					}
					got := res.Request
					if got.Claimer == nil || got.Claimer.ID != second.ID || !got.LeaseUntil.Equal(c.Now().Add(lease)) {
						t.Errorf("claimer %+v lease %v, want %s until %v", got.Claimer, got.LeaseUntil, second.ID, c.Now().Add(lease))
					}
					if got.ExecutedAt == nil || !got.ExecutedAt.Equal(claimedAt) {
						t.Errorf("executed_at %v, want the first claim's %v", got.ExecutedAt, claimedAt)
					}
					if wantCount := uint64(0); tc.want != ClaimNew {
						wantCount = 1
						if res.Previous == nil || res.Previous.ID != first.ID {
							t.Errorf("previous claimer %+v, want %s", res.Previous, first.ID)
						}
						if svc.ResumedRuns() != wantCount {
							t.Errorf("ResumedRuns = %d, want %d", svc.ResumedRuns(), wantCount)
						}
						ev := rec.all()
						if len(ev) != 1 || ev[0].ApprovalID != r.ID || !strings.Contains(ev[0].Outcome, "run "+tc.want.String()) ||
							ev[0].Detail["previous_claimer"].(*Instance).ID != first.ID || ev[0].Detail["why"] != tc.why {
							t.Errorf("audit events %+v, want one naming the %s run and %s", ev, tc.want, first.ID)
						}
					}
					// The winner holds the run now: a third instance waits.
					if _, err := claimAs(t, st, c, liveInstance("gw_c"), r.ID, lease); tc.want != ClaimReplay && !errors.Is(err, ErrRunning) {
						t.Errorf("third claim: %v, want ErrRunning", err)
					}
				})
			}
		})
	}
}

// TestClaimTakeoverRace: many successors, on two handles of one store,
// find the run of a dead claimer at once; exactly one takes it over, the
// others find it running.
func TestClaimTakeoverRace(t *testing.T) {
	const successors = 8
	for _, sk := range storeKinds {
		t.Run(sk.name, func(t *testing.T) {
			sa, reopen := sk.open(t)
			sb := reopen()
			ctx := context.Background()
			c := &clock{now: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)}
			base := newService(t, sa, c, 1)
			for round := range 5 {
				r := submit(t, base, fmt.Sprintf("race-%d", round))
				if _, err := base.Decide(ctx, r.ID, "alice", true, "ok"); err != nil {
					t.Fatal(err)
				}
				dead := deadInstance(t, fmt.Sprintf("gw_dead%d", round))
				if _, err := claimAs(t, sa, c, dead, r.ID, time.Hour); err != nil {
					t.Fatal(err)
				}
				results := make([]*ClaimResult, successors)
				errs := make([]error, successors)
				var wg sync.WaitGroup
				for i := range successors {
					st := sa
					if i%2 == 1 {
						st = sb
					}
					svc, _ := gatewayService(t, st, c, liveInstance(fmt.Sprintf("gw_s%d", i)))
					wg.Add(1)
					go func() {
						defer wg.Done()
						results[i], errs[i] = svc.ClaimRun(ctx, r.ID, time.Hour)
					}()
				}
				wg.Wait()
				winner := -1
				for i, err := range errs {
					switch {
					case err == nil && results[i].Kind == ClaimResumed:
						if winner >= 0 {
							t.Fatalf("round %d: successors %d and %d both resumed", round, winner, i)
						}
						winner = i
					case errors.Is(err, ErrRunning):
					default:
						t.Fatalf("round %d: successor %d: %+v, %v", round, i, results[i], err)
					}
				}
				if winner < 0 {
					t.Fatalf("round %d: no successor resumed the run", round)
				}
				got, err := base.Get(ctx, r.ID)
				if err != nil || got.Claimer == nil || got.Claimer.ID != fmt.Sprintf("gw_s%d", winner) {
					t.Fatalf("round %d: claimer %+v (%v), want the winner gw_s%d", round, got, err, winner)
				}
			}
		})
	}
}

// legacySchema is the table as released before claimers were recorded.
var legacySchema = []string{
	`CREATE TABLE snowgate_approvals (
		id TEXT PRIMARY KEY,
		session_id TEXT NOT NULL,
		request_key TEXT NOT NULL,
		query_id TEXT NOT NULL,
		state TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL,
		decided_at BIGINT,
		executed_at BIGINT,
		decision_reason TEXT NOT NULL DEFAULT '',
		body TEXT NOT NULL,
		UNIQUE (session_id, request_key)
	)`,
	`CREATE TABLE snowgate_approval_votes (
		request_id TEXT NOT NULL,
		reviewer TEXT NOT NULL,
		approve INTEGER NOT NULL,
		reason TEXT NOT NULL,
		at BIGINT NOT NULL,
		PRIMARY KEY (request_id, reviewer)
	)`,
}

// TestStoreMigration opens a database made before claimers were recorded,
// holding a claimed run: the store adds the columns, the old row reads,
// and its claim is an unknown instance's with the default bound as lease.
func TestStoreMigration(t *testing.T) {
	kinds := []struct {
		name string
		// raw opens the database without the store; open opens the store.
		setup func(t *testing.T) (raw *sql.DB, open func() (Store, error))
	}{
		{"sqlite", func(t *testing.T) (*sql.DB, func() (Store, error)) {
			path := filepath.Join(t.TempDir(), "approvals.db")
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			return db, func() (Store, error) { return OpenSQLite(context.Background(), path) }
		}},
		{"postgres", func(t *testing.T) (*sql.DB, func() (Store, error)) {
			dsn := postgresDSN(t)
			db, err := sql.Open("pgx", dsn)
			if err != nil {
				t.Fatal(err)
			}
			return db, func() (Store, error) { return OpenPostgres(context.Background(), dsn) }
		}},
	}
	claimed := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			raw, open := k.setup(t)
			defer raw.Close()
			for _, stmt := range legacySchema {
				if _, err := raw.ExecContext(ctx, stmt); err != nil {
					t.Fatal(err)
				}
			}
			body := `{"id":"apr_legacy","state":"approved","session_id":"sess-1","request_key":"req-old","query_id":"q-old","rule":"r","class":"dml","sql":"UPDATE t SET a = 1","sql_sha256":"x","bindings_sha256":"y","requester":"me","min_approvers":1,"created_at":"2026-11-27T02:00:00Z","expires_at":"2026-11-27T04:00:00Z"}`
			if _, err := raw.ExecContext(ctx, fmt.Sprintf(`INSERT INTO snowgate_approvals (id, session_id, request_key, query_id, state, created_at, expires_at, decided_at, executed_at, body)
				VALUES ('apr_legacy', 'sess-1', 'req-old', 'q-old', 'approved', %d, %d, %d, %d, '%s')`,
				claimed.Add(-time.Hour).UnixNano(), claimed.Add(time.Hour).UnixNano(), claimed.UnixNano(), claimed.UnixNano(), body)); err != nil {
				t.Fatal(err)
			}
			// Two opens: the second finds the columns there.
			for range 2 {
				st, err := open()
				if err != nil {
					t.Fatalf("open a database of the earlier schema: %v", err)
				}
				st.Close()
			}
			st, err := open()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			got, err := st.Get(ctx, "apr_legacy")
			if err != nil || got.State != Approved || got.ExecutedAt == nil || got.Claimer != nil || got.LeaseUntil != nil || got.RanAt != nil {
				t.Fatalf("legacy row: %+v, %v", got, err)
			}
			me := liveInstance("gw_new")
			steps := []struct {
				at      time.Time
				want    ClaimKind
				wantErr error
			}{
				{claimed.Add(DefaultRunBound - time.Second), 0, ErrRunning},
				{claimed.Add(DefaultRunBound), ClaimResumed, nil},
			}
			for _, s := range steps {
				res, err := st.Claim(ctx, "apr_legacy", Claim{By: me, Lease: time.Minute}, s.at)
				if s.wantErr != nil {
					if !errors.Is(err, s.wantErr) || res == nil || res.Previous == nil || res.Previous.ID != unknownClaimer {
						t.Fatalf("claim at %v: %+v, %v; want %v by the unknown claimer", s.at, res, err, s.wantErr)
					}
					continue
				}
				if err != nil || res.Kind != s.want || res.Request.Claimer == nil || res.Request.Claimer.ID != me.ID {
					t.Fatalf("claim at %v: %+v, %v; want %v", s.at, res, err, s.want)
				}
			}
			// New requests work on the migrated table.
			c := &clock{now: claimed}
			svc := newService(t, st, c, 1)
			r := submit(t, svc, "req-new")
			if _, err := svc.Decide(ctx, r.ID, "alice", true, "ok"); err != nil {
				t.Fatal(err)
			}
			if res, err := svc.ClaimRun(ctx, r.ID, time.Minute); err != nil || res.Kind != ClaimNew {
				t.Fatalf("claim on the migrated table: %+v, %v", res, err)
			}
		})
	}
}
