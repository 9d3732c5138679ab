package approval

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// groupCommit serialises the writes of a SQLite store on its one write
// connection and commits those queued together in one transaction: with
// synchronous=FULL a commit costs an fsync, and one fsync then covers every
// write of the batch. Each write runs in a savepoint of its own, so a write
// that fails rolls back alone; none is answered before the commit that
// holds it returned, so an answered write is on disk.
type groupCommit struct {
	db    *sql.DB
	queue chan *writeOp
	quit  chan struct{} // closed by close: drain the queue and stop
	done  chan struct{} // closed when the writer stopped
	once  sync.Once
}

// writeOp is one queued write.
type writeOp struct {
	ctx context.Context
	f   func(ctx context.Context, tx *sql.Tx) error
	// state: opQueued until the writer takes it (opTaken) or the caller
	// gives up waiting (opAbandoned); whichever moves it first wins.
	state atomic.Int32
	err   error
	fin   chan struct{}
}

const (
	opQueued int32 = iota
	opTaken
	opAbandoned
)

// maxBatch bounds the writes of one transaction (and so the time a write
// waits behind others of its batch).
const maxBatch = 128

// errStoreClosed: a write arrived after Close.
var errStoreClosed = errors.New("approval store closed")

func newGroupCommit(db *sql.DB) *groupCommit {
	g := &groupCommit{db: db, queue: make(chan *writeOp, 4*maxBatch), quit: make(chan struct{}), done: make(chan struct{})}
	go g.run()
	return g
}

// do queues f and returns its outcome once its transaction committed (or
// f failed). A caller whose ctx ends while f is still queued gets ctx's
// error and f never runs; once f runs, do waits for the commit, so the
// caller never misses a write that happened.
func (g *groupCommit) do(ctx context.Context, f func(ctx context.Context, tx *sql.Tx) error) error {
	op := &writeOp{ctx: ctx, f: f, fin: make(chan struct{})}
	select {
	case g.queue <- op:
	case <-g.quit:
		return errStoreClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-op.fin:
		return op.err
	case <-ctx.Done():
	case <-g.done:
	}
	if op.state.CompareAndSwap(opQueued, opAbandoned) {
		select {
		case <-g.done:
			return errStoreClosed
		default:
			return ctx.Err()
		}
	}
	<-op.fin
	return op.err
}

// close stops the writer once the writes queued so far are done.
func (g *groupCommit) close() {
	g.once.Do(func() { close(g.quit) })
	<-g.done
}

func (g *groupCommit) run() {
	defer close(g.done)
	batch := make([]*writeOp, 0, maxBatch)
	for {
		select {
		case op := <-g.queue:
			batch = append(batch, op)
		case <-g.quit:
			// Finish what is queued, then stop.
			for {
				select {
				case op := <-g.queue:
					batch = append(batch, op)
					if len(batch) == maxBatch {
						g.commit(batch)
						batch = batch[:0]
					}
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				g.commit(batch)
			}
			return
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case op := <-g.queue:
				batch = append(batch, op)
			default:
				break fill
			}
		}
		g.commit(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// commit runs a batch in one transaction and answers each write.
func (g *groupCommit) commit(batch []*writeOp) {
	var ran []*writeOp
	for _, op := range batch {
		if !op.state.CompareAndSwap(opQueued, opTaken) {
			continue // the caller gave up before it ran
		}
		if err := op.ctx.Err(); err != nil {
			g.answer(op, err)
			continue
		}
		ran = append(ran, op)
	}
	if len(ran) == 0 {
		return
	}
	// Not the callers' contexts: a cancelled context would roll back the
	// shared transaction under the others.
	ctx := context.Background()
	tx, err := g.db.BeginTx(ctx, nil)
	if err != nil {
		for _, op := range ran {
			g.answer(op, fmt.Errorf("begin: %w", err))
		}
		return
	}
	var ok []*writeOp
	for _, op := range ran {
		if err := runSavepoint(ctx, tx, op); err != nil {
			var fe *fnError
			if errors.As(err, &fe) {
				g.answer(op, fe.err) // rolled back alone
				continue
			}
			// The transaction itself is in doubt: fail every write in it
			// that has no answer yet.
			_ = tx.Rollback()
			for _, o := range ran {
				if !o.answered() {
					g.answer(o, fmt.Errorf("write batch: %w", err))
				}
			}
			return
		}
		ok = append(ok, op)
	}
	if err := tx.Commit(); err != nil {
		for _, op := range ok {
			g.answer(op, fmt.Errorf("commit: %w", err))
		}
		return
	}
	for _, op := range ok {
		g.answer(op, nil)
	}
}

// fnError is a write's own failure, rolled back to its savepoint.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

// runSavepoint runs op in a savepoint: its failure comes back as *fnError
// with its changes undone; any other error is the transaction's.
func runSavepoint(ctx context.Context, tx *sql.Tx, op *writeOp) error {
	if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
		return err
	}
	if ferr := op.f(context.WithoutCancel(op.ctx), tx); ferr != nil {
		if _, err := tx.ExecContext(ctx, "ROLLBACK TO w"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "RELEASE w"); err != nil {
			return err
		}
		return &fnError{err: ferr}
	}
	_, err := tx.ExecContext(ctx, "RELEASE w")
	return err
}

func (g *groupCommit) answer(op *writeOp, err error) {
	op.err = err
	close(op.fin)
}

func (op *writeOp) answered() bool {
	select {
	case <-op.fin:
		return true
	default:
		return false
	}
}
