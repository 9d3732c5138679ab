package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/approval"
)

// TestApprovalsCommand runs `snowgate approvals list|show|approve|deny`
// (the built binary) against the approvals API of a real service on a
// SQLite store: the reviewer's token comes from the token file, decisions
// land in the store, and refusals exit non-zero with the API's reason.
func TestApprovalsCommand(t *testing.T) {
	bin := buildSnowgate(t)
	dir := t.TempDir()
	store, err := approval.OpenSQLite(context.Background(), filepath.Join(dir, "approvals.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	svc, err := approval.NewService(approval.Config{Store: store, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	requester := approval.IdentityOf("https://ci.example", "repo:acme/app")
	tokens := "alice@example.com alice-token-0123456789\n" + requester + " agent-token-0123456789\n"
	tokenFile := filepath.Join(dir, "reviewers")
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := approval.LoadTokenFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/approvals", svc.Handler(auth))
	mux.Handle("/approvals/", svc.Handler(auth))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	submit := func(key, sql string) *approval.Request {
		r, _, err := svc.Submit(context.Background(), approval.Submission{SessionID: "s", RequestKey: key, SQL: sql, Class: "dml", Rule: "agents", Requester: requester})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a := submit("1", "UPDATE t SET a = 1")
	b := submit("2", "DELETE FROM t")
	flags := []string{"--admin", srv.URL, "--token-file", tokenFile}

	out, err := runSnowgate(t, bin, append([]string{"approvals", "list", "--json"}, flags...)...)
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	var list []approval.Request
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 2 {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	cases := []struct {
		name    string
		args    []string
		wantErr bool
		want    string
	}{
		{"show", []string{"approvals", "show", a.ID}, false, "UPDATE t SET a = 1"},
		{"table", []string{"approvals", "list"}, false, b.ID},
		{"approve without reason", []string{"approvals", "approve", a.ID}, true, "reason"},
		{"self approval", []string{"approvals", "approve", a.ID, "--reason", "mine", "--reviewer", requester}, true, "cannot decide its own request"},
		{"approve", []string{"approvals", "approve", a.ID, "--reason", "backfill"}, false, a.ID + ": approved"},
		{"approve again", []string{"approvals", "approve", a.ID, "--reason", "again"}, true, "already decided"},
		{"deny", []string{"approvals", "deny", b.ID, "--reason", "no"}, false, b.ID + ": denied"},
		{"unknown", []string{"approvals", "show", "apr_00"}, true, "no such approval request"},
		{"nothing pending", []string{"approvals", "list"}, false, "ID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runSnowgate(t, bin, append(tc.args, flags...)...)
			if (err != nil) != tc.wantErr || !strings.Contains(out, tc.want) {
				t.Fatalf("error %v (want error %v), output lacks %q:\n%s", err, tc.wantErr, tc.want, out)
			}
		})
	}
	got, err := svc.Get(context.Background(), a.ID)
	if err != nil || got.State != approval.Approved || got.Votes[0].Reviewer != "alice@example.com" || got.Votes[0].Reason != "backfill" {
		t.Errorf("stored decision %+v (%v)", got, err)
	}
}
