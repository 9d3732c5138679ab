package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/policy"
)

// policyConfig is a configuration whose rule sends DML for approval, with
// a SQLite store and a reviewer token file in dir.
func policyConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "reviewers"), []byte("alice reviewer-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`intercept:
  cgroup: /sys/fs/cgroup/agents.slice
ca:
  cert_file: /etc/snowgate/ca.pem
  key_file: /etc/snowgate/ca.key
accounts:
  acme:
    host: acme.snowflakecomputing.com
    credential: {type: pat, user: SVC, token_file: /etc/credstore/acme.pat}
identity:
  issuers:
    - issuer: http://127.0.0.1:8080
      audiences: [snowgate]
rules:
  - name: agents
    match: {issuer: "http://127.0.0.1:8080"}
    account: acme
    snowflake: {role: R}
    statements:
      dml: approve
      rules: [{name: scratch, objects: ["DB.SCRATCH.*"], classes: [dml], action: allow}]
recording:
  dir: %[1]s/recordings
approvals:
  timeout: 5m
  reviewers: {token_file: %[1]s/reviewers}
`, dir)
	cfg, err := config.Parse("policy.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestWirePolicy assembles the statement stage as `snowgate run` does: a
// policy per rule on the gateway, the approval store (SQLite by default in
// the recording directory) and the authenticated API on the admin mux.
func TestWirePolicy(t *testing.T) {
	dir := t.TempDir()
	d := &daemon{cfg: policyConfig(t, dir), log: slog.Default(), admin: http.NewServeMux()}
	if err := d.wirePolicy(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.close()
	sp := d.gw.Statements
	if sp == nil || sp.Approvals == nil || sp.Rules["agents"] == nil {
		t.Fatalf("statement stage not wired: %+v", sp)
	}
	for sql, want := range map[string]policy.Action{
		"UPDATE DB.PUBLIC.T SET A = 1":  policy.Approve,
		"UPDATE DB.SCRATCH.T SET A = 1": policy.Allow,
		"DROP TABLE DB.PUBLIC.T":        policy.Deny,
		"SELECT * FROM DB.PUBLIC.T":     policy.Allow,
		"GRANT ROLE A TO USER B":        policy.Deny,
	} {
		if d := sp.Rules["agents"].DecideSQL(sql, policy.Namespace{}); d.Enforced != want {
			t.Errorf("%q: %s, want %s", sql, d.Enforced, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "recordings", "approvals.db")); err != nil {
		t.Errorf("default SQLite store: %v", err)
	}
	srv := httptest.NewServer(d.admin)
	defer srv.Close()
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"wrong-token-0123456789", http.StatusUnauthorized}, {"reviewer-token-0123456789", http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/approvals?state=pending", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("token %q: HTTP %d, want %d", tc.token, resp.StatusCode, tc.want)
		}
	}
}

// TestWirePolicyBadTokenFile: a reviewer token file that cannot be read
// stops the daemon with a message naming the key.
func TestWirePolicyBadTokenFile(t *testing.T) {
	dir := t.TempDir()
	cfg := policyConfig(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "reviewers"), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cfg: cfg, log: slog.Default(), admin: http.NewServeMux()}
	err := d.wirePolicy(context.Background())
	defer d.close()
	if err == nil || !strings.Contains(err.Error(), "approvals.reviewers.token_file") {
		t.Fatalf("error %v, want one naming approvals.reviewers.token_file", err)
	}
}

// TestWirePolicyWorkloadIssuerAsReviewer: the workloads' own issuer cannot
// authenticate reviewers (a CI job can ask it for any audience).
func TestWirePolicyWorkloadIssuerAsReviewer(t *testing.T) {
	dir := t.TempDir()
	cfg := policyConfig(t, dir)
	cfg.Approvals.Reviewers.OIDC = &config.ReviewerOIDC{Issuer: "http://127.0.0.1:8080/", Audience: "reviewers"}
	d := &daemon{cfg: cfg, log: slog.Default(), admin: http.NewServeMux()}
	err := d.wirePolicy(context.Background())
	defer d.close()
	if err == nil || !strings.Contains(err.Error(), "also a workload issuer") {
		t.Fatalf("error %v, want a refusal of the workload issuer", err)
	}
}
