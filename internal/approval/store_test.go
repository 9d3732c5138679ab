package approval

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newService(t *testing.T, st Store, c *clock, min int) *Service {
	t.Helper()
	s, err := NewService(Config{Store: st, Timeout: 10 * time.Minute, MinApprovers: min, Now: c.Now, StorePoll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var requester = IdentityOf("https://ci.example", "repo:acme/app:ref:refs/heads/main")

func submit(t *testing.T, s *Service, key string) *Request {
	t.Helper()
	r, created, err := s.Submit(context.Background(), Submission{
		SessionID: "sess-1", RequestKey: key, QueryID: "q-" + key, Rule: "app-main", Class: "dml",
		SQL: "UPDATE t SET a = ? WHERE id = 2", Bindings: []byte(`{"1":{"type":"FIXED","value":"7"}}`),
		Requester: requester,
		Resume:    &Resume{Method: "POST", URI: "/queries/v1/query-request?requestId=" + key, Body: []byte(`{"sqlText":"UPDATE t SET a = ? WHERE id = 2"}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatalf("request %s was not new", key)
	}
	return r
}

// TestStoreTransitions runs every transition and refusal on each store.
func TestStoreTransitions(t *testing.T) {
	type step struct {
		reviewer string
		approve  bool
		advance  time.Duration
		wantErr  error
	}
	cases := []struct {
		name  string
		min   int
		steps []step
		want  State
	}{
		{"approve", 1, []step{{reviewer: "alice", approve: true}}, Approved},
		{"deny", 1, []step{{reviewer: "alice"}}, Denied},
		{"approve twice", 1, []step{{reviewer: "alice", approve: true}, {reviewer: "bob", approve: true, wantErr: ErrFinal}}, Approved},
		{"deny after approve", 1, []step{{reviewer: "alice", approve: true}, {reviewer: "bob", wantErr: ErrFinal}}, Approved},
		{"self approval", 1, []step{{reviewer: requester, approve: true, wantErr: ErrSelfApproval}}, Pending},
		{"self denial", 1, []step{{reviewer: requester, wantErr: ErrSelfApproval}}, Pending},
		{"approve after timeout", 1, []step{{reviewer: "alice", approve: true, advance: 11 * time.Minute, wantErr: ErrExpired}}, Expired},
		{"deny after timeout", 1, []step{{reviewer: "alice", advance: 11 * time.Minute, wantErr: ErrExpired}}, Expired},
		{"two approvers", 2, []step{{reviewer: "alice", approve: true}, {reviewer: "bob", approve: true}}, Approved},
		{"two approvers, one short", 2, []step{{reviewer: "alice", approve: true}}, Pending},
		{"same approver twice", 2, []step{{reviewer: "alice", approve: true}, {reviewer: "alice", approve: true, wantErr: ErrAlreadyVoted}}, Pending},
		{"deny after one of two", 2, []step{{reviewer: "alice", approve: true}, {reviewer: "bob"}}, Denied},
	}
	for _, sk := range storeKinds {
		t.Run(sk.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					st, _ := sk.open(t)
					c := &clock{now: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)}
					s := newService(t, st, c, tc.min)
					r := submit(t, s, "req-1")
					for i, sp := range tc.steps {
						c.Add(sp.advance)
						_, err := s.Decide(context.Background(), r.ID, sp.reviewer, sp.approve, fmt.Sprintf("step %d", i))
						if !errors.Is(err, sp.wantErr) || (err != nil) != (sp.wantErr != nil) {
							t.Fatalf("step %d: error %v, want %v", i, err, sp.wantErr)
						}
					}
					got, err := s.Get(context.Background(), r.ID)
					if err != nil {
						t.Fatal(err)
					}
					if got.State != tc.want {
						t.Fatalf("state %s, want %s", got.State, tc.want)
					}
					if got.State.Final() != (got.DecidedAt != nil) {
						t.Errorf("decided_at %v with state %s", got.DecidedAt, got.State)
					}
					// Claim runs once, and only an approved request.
					_, err = s.Claim(context.Background(), r.ID)
					switch {
					case got.State == Approved && err != nil:
						t.Fatalf("claim: %v", err)
					case got.State != Approved && !errors.Is(err, ErrFinal):
						t.Fatalf("claim of %s: %v, want ErrFinal", got.State, err)
					}
					if got.State == Approved {
						if _, err := s.Claim(context.Background(), r.ID); !errors.Is(err, ErrClaimed) {
							t.Fatalf("second claim: %v, want ErrClaimed", err)
						}
					}
				})
			}
		})
	}
}

// TestStoreIdempotentSubmit: a driver's retry (same session and request
// key) finds the same request; another key makes another.
func TestStoreIdempotentSubmit(t *testing.T) {
	for _, sk := range storeKinds {
		t.Run(sk.name, func(t *testing.T) {
			st, _ := sk.open(t)
			s := newService(t, st, &clock{now: time.Now()}, 1)
			a := submit(t, s, "k1")
			again, created, err := s.Submit(context.Background(), Submission{SessionID: "sess-1", RequestKey: "k1", SQL: "SELECT other", Requester: requester})
			if err != nil || created || again.ID != a.ID || again.SQL != a.SQL {
				t.Fatalf("retry: %+v created=%v err=%v, want request %s unchanged", again, created, err, a.ID)
			}
			b := submit(t, s, "k2")
			if b.ID == a.ID {
				t.Fatal("a new request key reused the request")
			}
			if a.SQLHash != Hash([]byte("UPDATE t SET a = ? WHERE id = 2")) || a.BindingsHash != Hash([]byte(`{"1":{"type":"FIXED","value":"7"}}`)) {
				t.Errorf("hashes %s %s do not bind the text and bindings", a.SQLHash, a.BindingsHash)
			}
			list, err := s.List(context.Background(), Pending, 0)
			if err != nil || len(list) != 2 {
				t.Fatalf("pending list %d (%v), want 2", len(list), err)
			}
			found, err := s.FindQuery(context.Background(), "q-k2")
			if err != nil || found.ID != b.ID || found.Resume == nil || found.Resume.URI != "/queries/v1/query-request?requestId=k2" || string(found.Resume.Body) != `{"sqlText":"UPDATE t SET a = ? WHERE id = 2"}` {
				t.Fatalf("find by query id: %+v (%v)", found, err)
			}
			if _, err := s.FindQuery(context.Background(), "q-none"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("unknown query id: %v", err)
			}
		})
	}
}

// TestStoreRaces decides one request from many goroutines over two store
// handles (two gateways) at once: approve against deny, and concurrent
// claims. Each ends in exactly one state with exactly one winner.
func TestStoreRaces(t *testing.T) {
	for _, sk := range storeKinds {
		t.Run(sk.name, func(t *testing.T) {
			st, open := sk.open(t)
			other := open()
			c := &clock{now: time.Now()}
			sa, sb := newService(t, st, c, 1), newService(t, other, c, 1)
			for round := range 5 {
				r := submit(t, sa, fmt.Sprintf("race-%d", round))
				const n = 8
				var wg sync.WaitGroup
				errs := make([]error, n)
				for i := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						s := sa
						if i%2 == 1 {
							s = sb
						}
						_, errs[i] = s.Decide(context.Background(), r.ID, fmt.Sprintf("reviewer-%d", i), i%2 == 0, "race")
					}()
				}
				wg.Wait()
				winners := 0
				winnerApproved := false
				for i, err := range errs {
					switch {
					case err == nil:
						winners++
						winnerApproved = i%2 == 0
					case !errors.Is(err, ErrFinal):
						t.Fatalf("decision %d: %v", i, err)
					}
				}
				got, err := sb.Get(context.Background(), r.ID)
				if err != nil {
					t.Fatal(err)
				}
				if winners != 1 || (got.State == Approved) != winnerApproved || !got.State.Final() || len(got.Votes) != 1 {
					t.Fatalf("round %d: %d winners, state %s, %d votes", round, winners, got.State, len(got.Votes))
				}
				if got.State != Approved {
					continue
				}
				claims := make([]error, n)
				for i := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						s := sa
						if i%2 == 1 {
							s = sb
						}
						_, claims[i] = s.Claim(context.Background(), r.ID)
					}()
				}
				wg.Wait()
				ok := 0
				for _, err := range claims {
					if err == nil {
						ok++
					} else if !errors.Is(err, ErrClaimed) {
						t.Fatalf("claim: %v", err)
					}
				}
				if ok != 1 {
					t.Fatalf("round %d: %d claims succeeded, want 1", round, ok)
				}
			}
		})
	}
}

// TestStoreMinApproversConcurrent: two reviewers approving at once on two
// handles both count; neither vote is lost.
func TestStoreMinApproversConcurrent(t *testing.T) {
	for _, sk := range storeKinds {
		t.Run(sk.name, func(t *testing.T) {
			st, open := sk.open(t)
			c := &clock{now: time.Now()}
			sa, sb := newService(t, st, c, 2), newService(t, open(), c, 2)
			for round := range 5 {
				r := submit(t, sa, fmt.Sprintf("min-%d", round))
				var wg sync.WaitGroup
				var ea, eb error
				wg.Add(2)
				go func() { defer wg.Done(); _, ea = sa.Decide(context.Background(), r.ID, "alice", true, "ok") }()
				go func() { defer wg.Done(); _, eb = sb.Decide(context.Background(), r.ID, "bob", true, "ok") }()
				wg.Wait()
				if ea != nil || eb != nil {
					t.Fatalf("decisions: %v, %v", ea, eb)
				}
				got, err := sa.Get(context.Background(), r.ID)
				if err != nil || got.State != Approved || len(got.DecidedBy()) != 2 {
					t.Fatalf("round %d: %+v (%v), want approved by two", round, got, err)
				}
			}
		})
	}
}

// TestFleetSharedQueue: two gateways on one store see one queue; a
// decision taken on one wakes the other's waiting client.
func TestFleetSharedQueue(t *testing.T) {
	for _, sk := range storeKinds {
		t.Run(sk.name, func(t *testing.T) {
			st, open := sk.open(t)
			a := newService(t, st, &clock{now: time.Now()}, 1)
			b := newService(t, open(), &clock{now: time.Now()}, 1)
			r := submit(t, a, "fleet")
			list, err := b.List(context.Background(), Pending, 0)
			if err != nil || len(list) != 1 || list[0].ID != r.ID {
				t.Fatalf("the other gateway lists %v (%v), want %s", list, err, r.ID)
			}
			done := make(chan *Request, 1)
			go func() {
				got, _ := a.Wait(context.Background(), r.ID, 2*time.Minute)
				done <- got
			}()
			if _, err := b.Decide(context.Background(), r.ID, "alice", true, "fine"); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-done:
				if got == nil || got.State != Approved {
					t.Fatalf("waiter saw %+v, want approved", got)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("the waiting gateway never saw the decision")
			}
		})
	}
}

// TestWaitExpires: a waiter past the deadline sees the request expire.
func TestWaitExpires(t *testing.T) {
	st, _ := storeKinds[0].open(t)
	s, err := NewService(Config{Store: st, Timeout: time.Second, StorePoll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := submit(t, s, "exp")
	got, err := s.Wait(context.Background(), r.ID, 2*time.Minute)
	if err != nil || got.State != Expired {
		t.Fatalf("wait: %+v (%v), want expired", got, err)
	}
}

// TestSQLiteFileMode: the SQLite store is readable by its owner only.
func TestSQLiteFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "approvals.db")
	st, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	submit(t, newService(t, st, &clock{now: time.Now()}, 1), "mode")
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
}

// TestStoreConcurrentWrites: many statements held, decided and claimed at
// once, on two handles of one store (two gateways), as under load: every
// write succeeds (none times out waiting for the database), and each
// request ends approved and claimed exactly once.
func TestStoreConcurrentWrites(t *testing.T) {
	const workers, each = 48, 5
	for _, sk := range storeKinds {
		t.Run(sk.name, func(t *testing.T) {
			st, open := sk.open(t)
			c := &clock{now: time.Now()}
			handles := []*Service{newService(t, st, c, 1), newService(t, open(), c, 1)}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, workers*each)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s := handles[w%2]
					for i := range each {
						key := fmt.Sprintf("w%d-%d", w, i)
						r, created, err := s.Submit(ctx, Submission{SessionID: "sess-" + key, RequestKey: key, QueryID: "q-" + key,
							SQL: "INSERT INTO t VALUES (?)", Bindings: []byte(`{"1":{"type":"FIXED","value":"1"}}`), Requester: requester})
						if err != nil || !created {
							errs <- fmt.Errorf("submit %s: created=%v %v", key, created, err)
							return
						}
						// The other gateway decides; this one runs it.
						if _, err := handles[(w+1)%2].Decide(ctx, r.ID, "alice", true, "ok"); err != nil {
							errs <- fmt.Errorf("decide %s: %v", key, err)
							return
						}
						if _, err := s.Claim(ctx, r.ID); err != nil {
							errs <- fmt.Errorf("claim %s: %v", key, err)
							return
						}
						if _, err := s.Claim(ctx, r.ID); !errors.Is(err, ErrClaimed) {
							errs <- fmt.Errorf("second claim %s: %v, want ErrClaimed", key, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			list, err := handles[0].List(ctx, Approved, workers*each+10)
			if err != nil {
				t.Fatal(err)
			}
			claimed := 0
			for _, r := range list {
				if r.ExecutedAt != nil {
					claimed++
				}
			}
			if len(list) != workers*each || claimed != workers*each {
				t.Fatalf("%d approved, %d claimed; want %d each", len(list), claimed, workers*each)
			}
		})
	}
}

// TestGroupCommitFailureAlone: a write that fails inside a shared batch
// rolls back alone; the writes beside it commit.
func TestGroupCommitFailureAlone(t *testing.T) {
	st, _ := storeKinds[0].open(t)
	ss := st.(*sqlStore)
	ctx := context.Background()
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	boom := errors.New("boom")
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ss.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO snowgate_approval_votes (request_id, reviewer, approve, reason, at) VALUES (?, 'r', 1, '', 0)`, fmt.Sprint(i)); err != nil {
					return err
				}
				if i%3 == 0 {
					return boom
				}
				return nil
			})
		}()
	}
	wg.Wait()
	want := 0
	for i, err := range errs {
		switch {
		case i%3 == 0 && !errors.Is(err, boom):
			t.Errorf("write %d: %v, want boom", i, err)
		case i%3 != 0 && err != nil:
			t.Errorf("write %d: %v", i, err)
		case i%3 != 0:
			want++
		}
	}
	var got int
	if err := ss.db.QueryRowContext(ctx, `SELECT count(*) FROM snowgate_approval_votes`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("%d rows committed, want %d (the failed writes' rows rolled back, the others kept)", got, want)
	}
}

// BenchmarkStoreContention holds, approves and claims statements from
// 1,000 goroutines at once on the SQLite store (the shape of 1,000 agent
// sessions through one gateway) and reports the latency of one
// hold+approve+claim: with one connection per writer, SQLite's busy
// handler served them unfairly (p99 in seconds, past the busy timeout
// under CPU load); queued in Go and group-committed, every write waits its
// turn.
//
//	go test ./internal/approval -run '^$' -bench StoreContention -benchtime 1x
func BenchmarkStoreContention(b *testing.B) {
	const writers, each = 1000, 3
	for b.Loop() {
		st, err := OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "approvals.db"))
		if err != nil {
			b.Fatal(err)
		}
		s, err := NewService(Config{Store: st, Timeout: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		start := time.Now()
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					key := fmt.Sprintf("w%d-%d", w, i)
					t0 := time.Now()
					r, _, err := s.Submit(ctx, Submission{SessionID: "s-" + key, RequestKey: key, QueryID: "q-" + key, SQL: "INSERT INTO t VALUES (1)", Requester: requester})
					if err == nil {
						_, err = s.Decide(ctx, r.ID, "alice", true, "ok")
					}
					if err == nil {
						_, err = s.Claim(ctx, r.ID)
					}
					if err != nil {
						b.Error(err)
						return
					}
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		st.Close()
		slices.Sort(lat)
		if len(lat) == 0 {
			b.Fatal("nothing measured")
		}
		b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "held-approved-claimed/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1e3, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1e3, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1e3, "max-ms")
	}
}
