package approval

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/snowgate/snowgate/internal/identity/oidctest"
)

// TestOIDCReviewers: reviewers present ID tokens of the configured issuer
// and audience; the reviewer is iss#sub, so the workload that sent a
// statement (the same issuer and subject) cannot approve it.
func TestOIDCReviewers(t *testing.T) {
	is := oidctest.Start(t)
	auth, err := NewOIDCReviewers(oidc.ClientContext(context.Background(), is.Client), is.URL, "snowgate-reviewers")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := storeKinds[0].open(t)
	s := newService(t, st, &clock{now: time.Now()}, 1)
	agent := IdentityOf(is.URL, "repo:acme/app:ref:refs/heads/main")
	r, _, err := s.Submit(context.Background(), Submission{SessionID: "s", RequestKey: "k", SQL: "DELETE FROM t", Requester: agent})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler(auth))
	defer srv.Close()
	token := func(sub string, aud ...string) string {
		return is.Sign(t, oidctest.Token{Subject: sub, Audience: aud})
	}
	cases := []struct {
		name   string
		token  string
		status int
	}{
		{"wrong audience", token("alice", "snowgate"), http.StatusUnauthorized},
		{"no audience", token("alice"), http.StatusUnauthorized},
		{"not a token", "eyJhbGciOiJub25lIn0.e30.", http.StatusUnauthorized},
		{"the requesting workload", token("repo:acme/app:ref:refs/heads/main", "snowgate-reviewers"), http.StatusForbidden},
		{"a reviewer", token("alice", "snowgate-reviewers"), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := (&Client{BaseURL: srv.URL, Token: tc.token}).Decide(context.Background(), r.ID, true, "ok")
			var ae *APIError
			switch {
			case tc.status == 0 && err != nil:
				t.Fatal(err)
			case tc.status == 0 && got.DecidedBy()[0] != IdentityOf(is.URL, "alice"):
				t.Fatalf("decided by %v", got.DecidedBy())
			case tc.status != 0 && (!errors.As(err, &ae) || ae.Status != tc.status):
				t.Fatalf("error %v, want HTTP %d", err, tc.status)
			}
		})
	}
}
