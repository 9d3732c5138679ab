package approval

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/audit"
)

const (
	aliceToken = "alice-token-0123456789abcdef"
	bobToken   = "bob-token-0123456789abcdef00"
)

func apiServer(t *testing.T, s *Service) *httptest.Server {
	t.Helper()
	tokens, err := ParseTokens(strings.NewReader("# reviewers\nalice@example.com " + aliceToken + "\n\n" + requester + " " + bobToken + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h := s.Handler(tokens)
	mux.Handle("/approvals", h)
	mux.Handle("/approvals/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestAPI drives the reviewers' HTTP API through the client the CLI uses:
// authentication, listing, showing, deciding and each refusal's status.
func TestAPI(t *testing.T) {
	st, _ := storeKinds[0].open(t)
	s := newService(t, st, &clock{now: time.Now()}, 1)
	srv := apiServer(t, s)
	alice := &Client{BaseURL: srv.URL, Token: aliceToken}
	self := &Client{BaseURL: srv.URL, Token: bobToken} // named as the requester
	ctx := context.Background()
	a, b := submit(t, s, "a"), submit(t, s, "b")

	cases := []struct {
		name       string
		call       func() error
		wantStatus int
	}{
		{"no token", func() error { _, err := (&Client{BaseURL: srv.URL}).List(ctx, ""); return err }, http.StatusUnauthorized},
		{"wrong token", func() error {
			_, err := (&Client{BaseURL: srv.URL, Token: "not-a-valid-token-at-all"}).List(ctx, "")
			return err
		}, http.StatusUnauthorized},
		{"list", func() error {
			l, err := alice.List(ctx, Pending)
			if err == nil && len(l) != 2 {
				return errors.New("want 2 pending")
			}
			return err
		}, 0},
		{"show", func() error {
			r, err := alice.Get(ctx, a.ID)
			if err == nil && (r.SQL != a.SQL || r.Resume != nil) {
				return errors.New("wrong request, or the stored client request shown")
			}
			return err
		}, 0},
		{"show unknown", func() error { _, err := alice.Get(ctx, "apr_nope"); return err }, http.StatusNotFound},
		{"self approval", func() error { _, err := self.Decide(ctx, a.ID, true, "mine"); return err }, http.StatusForbidden},
		{"no reason", func() error { _, err := alice.Decide(ctx, a.ID, true, " "); return err }, http.StatusBadRequest},
		{"approve", func() error {
			r, err := alice.Decide(ctx, a.ID, true, "ok")
			if err == nil && (r.State != Approved || r.DecidedBy()[0] != "alice@example.com") {
				return errors.New("not approved by alice")
			}
			return err
		}, 0},
		{"approve twice", func() error { _, err := alice.Decide(ctx, a.ID, true, "again"); return err }, http.StatusConflict},
		{"deny other", func() error { _, err := alice.Decide(ctx, b.ID, false, "no"); return err }, 0},
		{"list all", func() error {
			l, err := alice.List(ctx, "")
			if err == nil && len(l) != 2 {
				return errors.New("want 2")
			}
			return err
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var ae *APIError
			switch {
			case tc.wantStatus == 0 && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantStatus != 0 && (!errors.As(err, &ae) || ae.Status != tc.wantStatus):
				t.Fatalf("error %v, want HTTP %d", err, tc.wantStatus)
			}
		})
	}
}

// TestWebhook: each new request is posted once, Slack-compatible (a
// "text"), with the request attached; a failing hook is retried.
func TestWebhook(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]any
	fail := 1
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if fail > 0 {
			fail--
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want JSON", http.StatusUnsupportedMediaType)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		bodies = append(bodies, m)
	}))
	defer hook.Close()
	st, _ := storeKinds[0].open(t)
	s, err := NewService(Config{Store: st, Notifier: &Webhook{URL: hook.URL, ReviewHint: "snowgate approvals approve <id> --reason …"}})
	if err != nil {
		t.Fatal(err)
	}
	r := submit(t, s, "hook")
	// A retry of the same statement is not a new request: no second post.
	if _, created, err := s.Submit(context.Background(), Submission{SessionID: "sess-1", RequestKey: "hook", Requester: requester}); err != nil || created {
		t.Fatalf("retry: created=%v err=%v", created, err)
	}
	s.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 {
		t.Fatalf("%d posts, want 1", len(bodies))
	}
	text, _ := bodies[0]["text"].(string)
	ap, _ := bodies[0]["approval"].(map[string]any)
	if !strings.Contains(text, r.ID) || !strings.Contains(text, r.SQL) || !strings.Contains(text, "approvals approve") || ap["id"] != r.ID || ap["state"] != "pending" || ap["resume"] != nil || ap["bindings"] != nil {
		t.Errorf("webhook body %v", bodies[0])
	}
}

// TestParseTokens covers the token file's accepted and refused shapes.
func TestParseTokens(t *testing.T) {
	cases := []struct {
		name, in string
		ok       bool
	}{
		{"named", "alice " + aliceToken, true},
		{"bare", aliceToken + "\n", true},
		{"comments", "# c\n\n" + aliceToken, true},
		{"short", "alice short", false},
		{"three fields", "a b " + aliceToken, false},
		{"empty", "# nothing\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTokens(strings.NewReader(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("error %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestAuditDecisions: every decision, refusal and expiry is an
// approval.decision audit event naming the reviewer and the request.
func TestAuditDecisions(t *testing.T) {
	var buf syncBuffer
	al, err := audit.New(audit.Options{Writers: []io.Writer{&buf}})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := storeKinds[0].open(t)
	c := &clock{now: time.Now()}
	s, err := NewService(Config{Store: st, Audit: al, Now: c.Now, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	a, b := submit(t, s, "a"), submit(t, s, "b")
	if _, err := s.Decide(context.Background(), a.ID, requester, true, "mine"); !errors.Is(err, ErrSelfApproval) {
		t.Fatal(err)
	}
	if _, err := s.Decide(context.Background(), a.ID, "alice", true, "ok"); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Minute)
	if _, err := s.Get(context.Background(), b.ID); err != nil {
		t.Fatal(err)
	}
	var events []audit.Event
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e audit.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	want := []struct{ id, reviewer, outcome, decision string }{
		{a.ID, requester, "refused: approval " + a.ID + ": " + ErrSelfApproval.Error(), "pending"},
		{a.ID, "alice", "approved", "approved"},
		{b.ID, "", "expired", "expired"},
	}
	if len(events) != len(want) {
		t.Fatalf("%d events, want %d: %s", len(events), len(want), buf.String())
	}
	for i, w := range want {
		e := events[i]
		if e.Type != audit.ApprovalDecision || e.ApprovalID != w.id || e.Reviewer != w.reviewer || e.Outcome != w.outcome || e.Decision != w.decision || e.SessionID != "sess-1" {
			t.Errorf("event %d: %+v, want %+v", i, e, w)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
