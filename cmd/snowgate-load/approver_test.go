package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/approval"
)

// TestApprover runs the load generator's reviewer against the real
// approvals API and SQLite store: more requests pending at once than the
// API lists by default, some submitted while it runs, one decided by
// another reviewer first. Every request ends approved, each decided once.
func TestApprover(t *testing.T) {
	ctx := context.Background()
	st, err := approval.OpenSQLite(ctx, filepath.Join(t.TempDir(), "approvals.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := approval.NewService(approval.Config{Store: st, Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	const token = "rev-token-0123456789abcdef"
	auth, err := approval.ParseTokens(strings.NewReader("load " + token + "\nother other-token-0123456789abcdef\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := svc.Handler(auth)
	var decisions sync.Map // id → count of approve calls
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/approve") && strings.Contains(r.Header.Get("Authorization"), token) {
			id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/approvals/"), "/approve")
			n, _ := decisions.LoadOrStore(id, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tokFile := filepath.Join(t.TempDir(), "reviewers")
	if err := os.WriteFile(tokFile, []byte("load "+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	submit := func(i int) *approval.Request {
		r, _, err := svc.Submit(ctx, approval.Submission{SessionID: "s", RequestKey: fmt.Sprint(i), QueryID: fmt.Sprint("q", i),
			SQL: "INSERT INTO t VALUES (1)", Requester: approval.IdentityOf("https://ci", "agent")})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	const before, during = 150, 50
	var ids []string
	for i := range before {
		ids = append(ids, submit(i).ID)
	}
	// Decided by someone else before the load generator's reviewer sees it.
	other := &approval.Client{BaseURL: srv.URL, Token: "other-token-0123456789abcdef"}
	if _, err := other.Decide(ctx, ids[0], true, "first"); err != nil {
		t.Fatal(err)
	}

	a, err := newApprover(srv.URL, tokFile, 20*time.Millisecond, 4)
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { a.run(actx); close(done) }()
	for i := range during {
		ids = append(ids, submit(before+i).ID)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		left, err := svc.List(ctx, approval.Pending, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still pending", len(left))
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	res := a.result()
	if res.Err != nil || res.Failures != 0 {
		t.Errorf("reviewer failures %d: %v", res.Failures, res.Err)
	}
	if res.Approved != before+during-1 {
		t.Errorf("approved %d, want %d", res.Approved, before+during-1)
	}
	for _, id := range ids {
		r, err := svc.Get(ctx, id)
		if err != nil || r.State != approval.Approved {
			t.Fatalf("%s: %+v (%v)", id, r, err)
		}
		n, ok := decisions.Load(id)
		switch {
		case id == ids[0] && ok && n.(*atomic.Int32).Load() > 1, id != ids[0] && (!ok || n.(*atomic.Int32).Load() != 1):
			t.Errorf("%s decided more than once, or never, by the load generator", id)
		}
	}
}
