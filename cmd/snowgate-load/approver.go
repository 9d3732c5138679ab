package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/snowgate/snowgate/internal/approval"
)

// approver plays the human reviewer during the gateway phase: it approves
// every pending request through the approvals API, so DML that policy holds
// for approval completes, its latency including the hold.
type approver struct {
	client   *approval.Client
	every    time.Duration
	mu       sync.Mutex
	approved int
	err      error
}

// newApprover returns a reviewer at the admin base URL with the bearer
// token in tokenFile ("NAME TOKEN" lines as in approvals.reviewers.token_file:
// the first line's token is used).
func newApprover(baseURL, tokenFile string, every time.Duration) (*approver, error) {
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("reviewer token: %w", err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	f := strings.Fields(line)
	if len(f) == 0 {
		return nil, fmt.Errorf("reviewer token file %s is empty", tokenFile)
	}
	return &approver{client: &approval.Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: f[len(f)-1]}, every: every}, nil
}

// run approves pending requests until ctx ends.
func (a *approver) run(ctx context.Context) {
	t := time.NewTicker(a.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pending, err := a.client.List(ctx, approval.Pending)
		if err != nil {
			a.note(ctx, fmt.Errorf("list approvals: %w", err))
			continue
		}
		for _, r := range pending {
			if _, err := a.client.Decide(ctx, r.ID, true, "snowgate-load"); err != nil {
				var ae *approval.APIError
				if errors.As(err, &ae) && ae.Status == 409 {
					continue // decided meanwhile (another retry's request)
				}
				a.note(ctx, fmt.Errorf("approve %s: %w", r.ID, err))
				continue
			}
			a.mu.Lock()
			a.approved++
			a.mu.Unlock()
		}
	}
}

func (a *approver) note(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err == nil {
		a.err = err
	}
}

// result returns how many requests were approved and the first error
// (the approvals API is down while the gateway restarts; held statements
// that were never approved show as DML errors anyway).
func (a *approver) result() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.approved, a.err
}
