package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/snowgate/snowgate/internal/approval"
)

// approver plays the human reviewer during the gateway phase: it approves
// every pending request through the approvals API, so DML that policy holds
// for approval completes, its latency including the hold. It is a fast
// human: it lists the pending requests every interval and decides each one
// once, on a bounded pool of workers, so a burst of held statements is
// approved in parallel rather than one HTTP round trip after another.
type approver struct {
	client  *approval.Client
	every   time.Duration
	workers int

	mu sync.Mutex
	// seen: requests queued or decided (true once decided); a request is
	// forgotten when a list no longer shows it (decided requests never
	// come back to pending) or when its decision failed (the next list
	// queues it again).
	seen     map[string]bool
	approved int
	// conflicts are 409s: the request was decided or expired meanwhile
	// (a driver's retry found it decided), benign.
	conflicts int
	// failures are decisions or lists that failed; err is the first.
	failures int
	err      error
}

// approverListLimit is how many pending requests one list asks for: more
// than are ever pending at once, so the oldest are never left behind the
// newest (the API lists newest first).
const approverListLimit = 2000

// newApprover returns a reviewer at the admin base URL with the bearer
// token in tokenFile ("NAME TOKEN" lines as in approvals.reviewers.token_file:
// the first line's token is used), deciding on workers connections at once.
func newApprover(baseURL, tokenFile string, every time.Duration, workers int) (*approver, error) {
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("reviewer token: %w", err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	f := strings.Fields(line)
	if len(f) == 0 {
		return nil, fmt.Errorf("reviewer token file %s is empty", tokenFile)
	}
	workers = max(workers, 1)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: workers + 1, MaxIdleConnsPerHost: workers + 1, IdleConnTimeout: time.Minute,
	}}
	return &approver{
		client: &approval.Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: f[len(f)-1], HTTP: hc},
		every:  every, workers: workers, seen: map[string]bool{},
	}, nil
}

// run approves pending requests until ctx ends.
func (a *approver) run(ctx context.Context) {
	jobs := make(chan string, approverListLimit)
	var wg sync.WaitGroup
	for range a.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range jobs {
				a.decide(ctx, id)
			}
		}()
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()
	t := time.NewTicker(a.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pending, err := a.client.ListUpTo(ctx, approval.Pending, approverListLimit)
		if err != nil {
			a.fail(ctx, fmt.Errorf("list approvals: %w", err))
			continue
		}
		for _, id := range a.fresh(pending) {
			select {
			case jobs <- id:
			case <-ctx.Done():
				return
			}
		}
	}
}

// fresh returns the ids of pending not queued or decided before, marks
// them queued, and forgets decided requests the list no longer shows.
func (a *approver) fresh(pending []*approval.Request) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	listed := make(map[string]bool, len(pending))
	var out []string
	// Oldest first: the list is newest first.
	for i := len(pending) - 1; i >= 0; i-- {
		id := pending[i].ID
		listed[id] = true
		if _, ok := a.seen[id]; !ok {
			a.seen[id] = false
			out = append(out, id)
		}
	}
	for id, decided := range a.seen {
		if decided && !listed[id] {
			delete(a.seen, id)
		}
	}
	return out
}

// decide approves one request.
func (a *approver) decide(ctx context.Context, id string) {
	_, err := a.client.Decide(ctx, id, true, "snowgate-load")
	a.mu.Lock()
	defer a.mu.Unlock()
	var ae *approval.APIError
	switch {
	case err == nil:
		a.approved++
		a.seen[id] = true
	case errors.As(err, &ae) && ae.Status == http.StatusConflict:
		a.conflicts++ // decided meanwhile (another retry's request)
		a.seen[id] = true
	case ctx.Err() != nil:
	default:
		// Not decided: the next list queues it again.
		delete(a.seen, id)
		a.failures++
		if a.err == nil {
			a.err = fmt.Errorf("approve %s: %w", id, err)
		}
	}
}

func (a *approver) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failures++
	if a.err == nil {
		a.err = err
	}
}

// approverResult is what the reviewer did.
type approverResult struct {
	Approved, Conflicts, Failures int
	Err                           error
}

// result returns what the reviewer did and its first error (the approvals
// API is down while the gateway restarts; held statements that were never
// approved show as DML errors anyway).
func (a *approver) result() approverResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	return approverResult{Approved: a.approved, Conflicts: a.conflicts, Failures: a.failures, Err: a.err}
}
