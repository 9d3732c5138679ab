package approval

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"
)

// Store keeps approval requests. Every method is safe for concurrent use,
// also by several processes sharing one database: each transition is
// decided inside one transaction that holds the request's row.
type Store interface {
	// Create stores r unless a request with the same session and request
	// key exists; it returns the stored request and whether it is new.
	Create(ctx context.Context, r *Request) (*Request, bool, error)
	// Get returns a request by id (ErrNotFound).
	Get(ctx context.Context, id string) (*Request, error)
	// FindQuery returns the request whose held query id is qid
	// (ErrNotFound).
	FindQuery(ctx context.Context, qid string) (*Request, error)
	// List returns requests, newest first; state "" lists all.
	List(ctx context.Context, state State, limit int) ([]*Request, error)
	// Vote records a reviewer's decision at now: a deny decides at once,
	// approvals decide when min distinct reviewers approved. It fails with
	// ErrFinal, ErrExpired (and expires the request), ErrSelfApproval or
	// ErrAlreadyVoted, returning the request as it is then.
	Vote(ctx context.Context, id string, v Vote, now time.Time) (*Request, error)
	// Expire moves a pending request past its deadline to expired.
	Expire(ctx context.Context, id string, now time.Time) (*Request, error)
	// Cancel moves a pending request to cancelled (the client gave up).
	Cancel(ctx context.Context, id, reason string, now time.Time) (*Request, error)
	// Claim gives the run of an approved request to c.By until now +
	// c.Lease, by the rule of decideClaim (claim.go): it fails with
	// ErrFinal unless approved, ErrRunning while another live instance
	// holds the run, ErrClaimed when it may not run again. A take-over is
	// a compare-and-set on the stored claimer: exactly one bidder wins.
	Claim(ctx context.Context, id string, c Claim, now time.Time) (*ClaimResult, error)
	// Finish records that the claimed run got its final reply at now,
	// with outcome ("success" or an error code). The first outcome stays.
	Finish(ctx context.Context, id, outcome string, now time.Time) (*Request, error)
	Close() error
}

// dialect is what differs between the SQL engines.
type dialect struct {
	name string
	// lock is appended to the SELECT that reads a row about to change.
	lock string
	// dollar placeholders ($1) instead of ?.
	dollar bool
}

// sqlStore implements Store on database/sql.
type sqlStore struct {
	// db serves reads; w serves writes. They are one pool on PostgreSQL.
	// On SQLite, w is a single connection and every write goes through
	// gc, so writers queue in Go rather than contend for SQLite's one
	// write lock, and concurrent writes share one commit (see groupCommit).
	db, w *sql.DB
	d     dialect
	gc    *groupCommit
}

var schema = []string{
	`CREATE TABLE IF NOT EXISTS snowgate_approvals (
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
	`CREATE TABLE IF NOT EXISTS snowgate_approval_votes (
		request_id TEXT NOT NULL,
		reviewer TEXT NOT NULL,
		approve INTEGER NOT NULL,
		reason TEXT NOT NULL,
		at BIGINT NOT NULL,
		PRIMARY KEY (request_id, reviewer)
	)`,
	`CREATE INDEX IF NOT EXISTS snowgate_approvals_state ON snowgate_approvals (state, created_at)`,
	`CREATE INDEX IF NOT EXISTS snowgate_approvals_query ON snowgate_approvals (query_id)`,
}

// addedColumns are the columns added to snowgate_approvals after its
// first release, in order; init adds those a database lacks. Rows stored
// before have them NULL (run_outcome empty): a claim without a claimer is
// an unknown instance's, with the lease ExecutedAt + DefaultRunBound. A
// gateway of the earlier version sharing the migrated table still works:
// its claims are such claims.
var addedColumns = []struct{ name, def string }{
	// claimed_by is the claimer, an Instance as JSON.
	{"claimed_by", "TEXT"},
	// lease_until is when the claimer's run is over at the latest.
	{"lease_until", "BIGINT"},
	// ran_at and run_outcome: the run's final reply.
	{"ran_at", "BIGINT"},
	{"run_outcome", "TEXT NOT NULL DEFAULT ''"},
}

// OpenSQLite opens (creating) the SQLite store at path, for one runner.
//
// A decision must survive a crash once it was answered, so the database is
// in WAL mode with synchronous=FULL: every commit is on disk before it
// returns. SQLite has one writer at a time; many connections writing at
// once each spin on SQLITE_BUSY in the busy handler (sleeps of up to
// 100 ms, no queue, no fairness) while the holder waits for its fsync, and
// under load some waited past the busy timeout. So the store writes on one
// connection only, through a group committer: writes queue in Go, and all
// those waiting when a transaction starts share it and its one fsync, each
// in a savepoint of its own (a failed write rolls back alone). Reads use a
// pool of their own (WAL readers never wait for the writer). busy_timeout
// still covers another process holding the database (a second gateway on
// the same file, the CLI).
func OpenSQLite(ctx context.Context, path string) (Store, error) {
	// The requests hold SQL text and bindings: owner-only, as SQLite gives
	// its journal files the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open approval store: %w", err)
	}
	f.Close()
	dsn := func(extra ...string) string {
		q := url.Values{}
		q.Set("_txlock", "immediate") // writers serialise at BEGIN, not at COMMIT
		q.Add("_pragma", "busy_timeout(15000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(FULL)")
		for _, p := range extra {
			q.Add("_pragma", p)
		}
		return "file:" + path + "?" + q.Encode()
	}
	w, err := sql.Open("sqlite", dsn())
	if err != nil {
		return nil, fmt.Errorf("open approval store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	r, err := sql.Open("sqlite", dsn("query_only(1)"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open approval store %s: %w", path, err)
	}
	// Reads are short and CPU-bound: a few connections keep both cores
	// busy; more only add page caches.
	r.SetMaxOpenConns(sqliteReaders)
	r.SetMaxIdleConns(sqliteReaders)
	r.SetConnMaxLifetime(0)
	r.SetConnMaxIdleTime(0)
	s := &sqlStore{db: r, w: w, d: dialect{name: "sqlite"}}
	if err := s.init(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	s.gc = newGroupCommit(w)
	return s, nil
}

// sqliteReaders is the size of the SQLite store's read pool.
const sqliteReaders = 4

// OpenPostgres opens the PostgreSQL store at dsn (a URL or key=value
// string), shared by the gateways of a fleet.
func OpenPostgres(ctx context.Context, dsn string) (Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open approval store (postgres): %w", err)
	}
	s := &sqlStore{db: db, w: db, d: dialect{name: "postgres", lock: " FOR UPDATE", dollar: true}}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// init creates the schema.
func (s *sqlStore) init(ctx context.Context) error {
	for _, stmt := range schema {
		if _, err := s.w.ExecContext(ctx, stmt); err != nil {
			// Two processes creating the schema at once may race on
			// PostgreSQL's catalog; a second try sees it.
			if _, err2 := s.w.ExecContext(ctx, stmt); err2 != nil {
				return fmt.Errorf("approval store (%s) schema: %w", s.d.name, err)
			}
		}
	}
	return s.migrate(ctx)
}

// migrate adds the columns of addedColumns a database made by an earlier
// version lacks. Two processes may migrate at once: PostgreSQL's IF NOT
// EXISTS covers it; on SQLite a failed ADD COLUMN counts if the column is
// there afterwards.
func (s *sqlStore) migrate(ctx context.Context) error {
	for _, c := range addedColumns {
		if s.d.name == "postgres" {
			if _, err := s.w.ExecContext(ctx, `ALTER TABLE snowgate_approvals ADD COLUMN IF NOT EXISTS `+c.name+` `+c.def); err != nil {
				return fmt.Errorf("approval store (%s): add column %s: %w", s.d.name, c.name, err)
			}
			continue
		}
		has, err := s.hasColumn(ctx, c.name)
		if err != nil || has {
			if err != nil {
				return fmt.Errorf("approval store (%s): %w", s.d.name, err)
			}
			continue
		}
		if _, err := s.w.ExecContext(ctx, `ALTER TABLE snowgate_approvals ADD COLUMN `+c.name+` `+c.def); err != nil {
			if has, _ := s.hasColumn(ctx, c.name); !has {
				return fmt.Errorf("approval store (%s): add column %s: %w", s.d.name, c.name, err)
			}
		}
	}
	return nil
}

// hasColumn reports whether SQLite's snowgate_approvals has column name.
func (s *sqlStore) hasColumn(ctx context.Context, name string) (bool, error) {
	var n int
	if err := s.w.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('snowgate_approvals') WHERE name = ?`, name).Scan(&n); err != nil {
		return false, fmt.Errorf("columns of snowgate_approvals: %w", err)
	}
	return n > 0, nil
}

// write runs f in a write transaction and returns once it is committed
// (durably: synchronous=FULL on SQLite). f's error rolls back f's changes
// alone and is returned. On SQLite f shares its transaction with the other
// writes queued at the time, inside a savepoint of its own, and gets a
// context without cancellation: once started, a write runs to its end (an
// interrupted statement would roll back the whole shared transaction).
func (s *sqlStore) write(ctx context.Context, f func(ctx context.Context, tx *sql.Tx) error) error {
	if s.gc != nil {
		return s.gc.do(ctx, f)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if err := f(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// q rewrites ? placeholders for the dialect.
func (s *sqlStore) q(query string) string {
	if !s.d.dollar {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Close stops the group committer (after the writes queued) and closes
// the database.
func (s *sqlStore) Close() error {
	if s.gc != nil {
		s.gc.close()
	}
	if s.w != s.db {
		return errors.Join(s.w.Close(), s.db.Close())
	}
	return s.db.Close()
}

const selectCols = `id, state, created_at, expires_at, decided_at, executed_at, decision_reason, body, claimed_by, lease_until, ran_at, run_outcome`

// querier is a *sql.DB or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

type scanner interface{ Scan(...any) error }

func scanRequest(sc scanner) (*Request, error) {
	var (
		r                        Request
		state, body, why, result string
		created, expires         int64
		decided, executed        sql.NullInt64
		lease, ran               sql.NullInt64
		claimer                  sql.NullString
		id                       string
	)
	if err := sc.Scan(&id, &state, &created, &expires, &decided, &executed, &why, &body, &claimer, &lease, &ran, &result); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, fmt.Errorf("approval %s: stored body: %w", id, err)
	}
	r.ID, r.State, r.DecisionReason = id, State(state), why
	r.CreatedAt, r.ExpiresAt = time.Unix(0, created).UTC(), time.Unix(0, expires).UTC()
	r.DecidedAt, r.ExecutedAt = nanosTime(decided), nanosTime(executed)
	if claimer.Valid && claimer.String != "" {
		r.claimedBy = claimer.String
		var in Instance
		if err := json.Unmarshal([]byte(claimer.String), &in); err != nil {
			return nil, fmt.Errorf("approval %s: stored claimer: %w", id, err)
		}
		r.Claimer = &in
	}
	r.LeaseUntil, r.RanAt = nanosTime(lease), nanosTime(ran)
	r.RunOutcome = result
	return &r, nil
}

func (s *sqlStore) votes(ctx context.Context, q querier, r *Request) error {
	rows, err := q.QueryContext(ctx, s.q(`SELECT reviewer, approve, reason, at FROM snowgate_approval_votes WHERE request_id = ? ORDER BY at, reviewer`), r.ID)
	if err != nil {
		return fmt.Errorf("approval %s: votes: %w", r.ID, err)
	}
	defer rows.Close()
	r.Votes = nil
	for rows.Next() {
		var v Vote
		var approve int
		var at int64
		if err := rows.Scan(&v.Reviewer, &approve, &v.Reason, &at); err != nil {
			return fmt.Errorf("approval %s: votes: %w", r.ID, err)
		}
		v.Approve, v.At = approve == 1, time.Unix(0, at).UTC()
		r.Votes = append(r.Votes, v)
	}
	return rows.Err()
}

func (s *sqlStore) get(ctx context.Context, q querier, id string, lock bool) (*Request, error) {
	query := `SELECT ` + selectCols + ` FROM snowgate_approvals WHERE id = ?`
	if lock {
		query += s.d.lock
	}
	r, err := scanRequest(q.QueryRowContext(ctx, s.q(query), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("approval %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("approval %s: %w", id, err)
	}
	if err := s.votes(ctx, q, r); err != nil {
		return nil, err
	}
	return r, nil
}

func (s *sqlStore) Get(ctx context.Context, id string) (*Request, error) {
	return s.get(ctx, s.db, id, false)
}

func (s *sqlStore) FindQuery(ctx context.Context, qid string) (*Request, error) {
	var id string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT id FROM snowgate_approvals WHERE query_id = ?`), qid).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("approval for query %s: %w", qid, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("approval for query %s: %w", qid, err)
	}
	return s.Get(ctx, id)
}

func (s *sqlStore) Create(ctx context.Context, r *Request) (*Request, bool, error) {
	body := *r
	body.Votes, body.DecidedAt, body.ExecutedAt = nil, nil, nil
	body.Claimer, body.LeaseUntil, body.RanAt, body.RunOutcome = nil, nil, nil, ""
	b, err := json.Marshal(body)
	if err != nil {
		return nil, false, fmt.Errorf("approval %s: %w", r.ID, err)
	}
	var (
		got            *Request
		created, inner bool // inner: the error is f's, already wrapped
	)
	// The request as stored is read in the same transaction: the caller
	// gets what was committed, without another round trip.
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) (ferr error) {
		defer func() { inner = ferr != nil }()
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO snowgate_approvals (id, session_id, request_key, query_id, state, created_at, expires_at, body)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id, request_key) DO NOTHING`),
			r.ID, r.SessionID, r.RequestKey, r.QueryID, string(Pending), r.CreatedAt.UnixNano(), r.ExpiresAt.UnixNano(), string(b))
		if err != nil {
			return fmt.Errorf("store approval %s: %w", r.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			created = true
			got, err = s.get(ctx, tx, r.ID, false)
			return err
		}
		got, err = scanRequest(tx.QueryRowContext(ctx, s.q(`SELECT `+selectCols+` FROM snowgate_approvals WHERE session_id = ? AND request_key = ?`), r.SessionID, r.RequestKey))
		if err != nil {
			return fmt.Errorf("find approval for request %s: %w", r.RequestKey, err)
		}
		return s.votes(ctx, tx, got)
	})
	switch {
	case err != nil && !inner:
		return nil, false, fmt.Errorf("store approval %s: %w", r.ID, err)
	case err != nil:
		return nil, false, err
	}
	return got, created, nil
}

func (s *sqlStore) List(ctx context.Context, state State, limit int) ([]*Request, error) {
	if limit <= 0 {
		limit = 100
	}
	query := `SELECT ` + selectCols + ` FROM snowgate_approvals`
	args := []any{}
	if state != "" {
		query += ` WHERE state = ?`
		args = append(args, string(state))
	}
	query += ` ORDER BY created_at DESC, id LIMIT ` + strconv.Itoa(limit)
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list approvals: %w", err)
	}
	var out []*Request
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("list approvals: %w", err)
		}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list approvals: %w", err)
	}
	for _, r := range out {
		if err := s.votes(ctx, s.db, r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// change runs f on the locked row inside a write transaction; f returns
// the error to report after the commit (its changes are committed either
// way). The request returned is as committed.
func (s *sqlStore) change(ctx context.Context, id string, f func(ctx context.Context, tx *sql.Tx, r *Request) (error, error)) (*Request, error) {
	var (
		got     *Request
		outcome error
		inner   bool // the error is f's, already wrapped
	)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) (ferr error) {
		defer func() { inner = ferr != nil }()
		r, err := s.get(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if outcome, err = f(ctx, tx, r); err != nil {
			return fmt.Errorf("approval %s: %w", id, err)
		}
		got, err = s.get(ctx, tx, id, false)
		return err
	})
	switch {
	case err != nil && !inner:
		return nil, fmt.Errorf("approval %s: %w", id, err)
	case err != nil:
		return nil, err
	}
	if outcome != nil {
		return got, fmt.Errorf("approval %s: %w", id, outcome)
	}
	return got, nil
}

func (s *sqlStore) finish(ctx context.Context, tx *sql.Tx, id string, st State, reason string, now time.Time) error {
	_, err := tx.ExecContext(ctx, s.q(`UPDATE snowgate_approvals SET state = ?, decided_at = ?, decision_reason = ? WHERE id = ? AND state = ?`),
		string(st), now.UnixNano(), reason, id, string(Pending))
	return err
}

func (s *sqlStore) Vote(ctx context.Context, id string, v Vote, now time.Time) (*Request, error) {
	return s.change(ctx, id, func(ctx context.Context, tx *sql.Tx, r *Request) (error, error) {
		switch {
		case r.State.Final():
			return ErrFinal, nil
		case !now.Before(r.ExpiresAt):
			return ErrExpired, s.finish(ctx, tx, id, Expired, "no decision before "+r.ExpiresAt.Format(time.RFC3339), now)
		case v.Reviewer == r.Requester:
			return ErrSelfApproval, nil
		}
		for _, old := range r.Votes {
			if old.Reviewer == v.Reviewer {
				return ErrAlreadyVoted, nil
			}
		}
		approve := 0
		if v.Approve {
			approve = 1
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO snowgate_approval_votes (request_id, reviewer, approve, reason, at) VALUES (?, ?, ?, ?, ?)`),
			id, v.Reviewer, approve, v.Reason, now.UnixNano()); err != nil {
			return nil, fmt.Errorf("record vote: %w", err)
		}
		if !v.Approve {
			return nil, s.finish(ctx, tx, id, Denied, v.Reason, now)
		}
		n := 1
		for _, old := range r.Votes {
			if old.Approve {
				n++
			}
		}
		if n >= max(r.MinApprovers, 1) {
			return nil, s.finish(ctx, tx, id, Approved, v.Reason, now)
		}
		return nil, nil
	})
}

func (s *sqlStore) Expire(ctx context.Context, id string, now time.Time) (*Request, error) {
	return s.change(ctx, id, func(ctx context.Context, tx *sql.Tx, r *Request) (error, error) {
		if r.State != Pending || now.Before(r.ExpiresAt) {
			return nil, nil
		}
		return nil, s.finish(ctx, tx, id, Expired, "no decision before "+r.ExpiresAt.Format(time.RFC3339), now)
	})
}

func (s *sqlStore) Cancel(ctx context.Context, id, reason string, now time.Time) (*Request, error) {
	return s.change(ctx, id, func(ctx context.Context, tx *sql.Tx, r *Request) (error, error) {
		if r.State != Pending {
			return ErrFinal, nil
		}
		return nil, s.finish(ctx, tx, id, Cancelled, reason, now)
	})
}

func (s *sqlStore) Claim(ctx context.Context, id string, c Claim, now time.Time) (*ClaimResult, error) {
	if c.Lease <= 0 {
		c.Lease = DefaultRunBound
	}
	by, err := json.Marshal(c.By)
	if err != nil {
		return nil, fmt.Errorf("approval %s: claimer: %w", id, err)
	}
	var res ClaimResult
	r, err := s.change(ctx, id, func(ctx context.Context, tx *sql.Tx, r *Request) (error, error) {
		var refused error
		if res, refused = decideClaim(r, c, now); refused != nil {
			return refused, nil
		}
		// The row is locked (FOR UPDATE; SQLite's one writer), and the
		// update still compares the claimer it decided on: a take-over
		// happens only over the claim it judged.
		query := `UPDATE snowgate_approvals SET claimed_by = ?, lease_until = ?, executed_at = COALESCE(executed_at, ?)
			WHERE id = ? AND state = ? AND COALESCE(claimed_by, '') = ?`
		if res.Kind == ClaimNew {
			query += ` AND executed_at IS NULL`
		}
		ur, err := tx.ExecContext(ctx, s.q(query), string(by), now.Add(c.Lease).UnixNano(), now.UnixNano(), id, string(Approved), r.claimedBy)
		if err != nil {
			return nil, fmt.Errorf("claim: %w", err)
		}
		if n, err := ur.RowsAffected(); err != nil || n != 1 {
			res.Kind = 0
			return ErrRunning, nil
		}
		return nil, nil
	})
	if r == nil {
		return nil, err
	}
	res.Request = r
	return &res, err
}

func (s *sqlStore) Finish(ctx context.Context, id, outcome string, now time.Time) (*Request, error) {
	return s.change(ctx, id, func(ctx context.Context, tx *sql.Tx, r *Request) (error, error) {
		if r.ExecutedAt == nil {
			return fmt.Errorf("%w: the run was never claimed", ErrFinal), nil
		}
		if r.RanAt != nil {
			return nil, nil
		}
		_, err := tx.ExecContext(ctx, s.q(`UPDATE snowgate_approvals SET ran_at = ?, run_outcome = ? WHERE id = ? AND ran_at IS NULL`), now.UnixNano(), outcome, id)
		return nil, err
	})
}

// nanosTime is a stored Unix-nanosecond time, nil when NULL.
func nanosTime(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := time.Unix(0, n.Int64).UTC()
	return &t
}
