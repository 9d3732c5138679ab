package config

import (
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/policy"
)

// withStatements is the minimal configuration with a statements block on
// its rule and extra top-level sections.
func withStatements(t *testing.T, statements, extra string) string {
	t.Helper()
	return edit(t, "    snowflake: {role: R}\n", "    snowflake: {role: R}\n"+statements) + extra
}

func TestStatementsPolicy(t *testing.T) {
	c, err := Parse("st.yaml", []byte(withStatements(t, `    statements:
      dml: approve
      session: allow
      unknown: approve
      rules:
        - {name: scratch, objects: ["ANALYTICS.SCRATCH.*"], classes: [dml, ddl], action: allow}
        - {name: pii, objects: ['ANALYTICS."pii".*'], action: deny, observe: true}
`, `approvals:
  timeout: 10m
  min_approvers: 2
  notify: https://hooks.example.com/snowgate
  store: {postgres_dsn_file: /etc/credstore/approvals.dsn}
  reviewers:
    token_file: /etc/snowgate/reviewers
    oidc: {issuer: "https://login.example.com", audience: snowgate-reviewers}
`)))
	if err != nil {
		t.Fatal(err)
	}
	st := c.Rules[0].Statements
	if !st.UsesApproval() {
		t.Error("UsesApproval is false with dml: approve")
	}
	p, err := policy.New(st.Policy("r"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sql  string
		want policy.Action
	}{
		{"SELECT * FROM ANALYTICS.PUBLIC.T", policy.Allow},
		{"INSERT INTO ANALYTICS.PUBLIC.T VALUES (1)", policy.Approve},
		{"INSERT INTO ANALYTICS.SCRATCH.T VALUES (1)", policy.Allow},
		{"CREATE TABLE ANALYTICS.SCRATCH.T (a INT)", policy.Allow},
		{"CREATE TABLE ANALYTICS.PUBLIC.T (a INT)", policy.Deny},
		{"GRANT ROLE a TO USER b", policy.Deny},
		{"PUT file:///tmp/x @st", policy.Deny},
		{"SELECT 1; SELECT 2", policy.Deny},
		{"SEL/**/ECT 1", policy.Approve},
		{"USE WAREHOUSE W", policy.Allow},
	}
	for _, tc := range tests {
		if d := p.DecideSQL(tc.sql, policy.Namespace{}); d.Enforced != tc.want {
			t.Errorf("%q: %s (%s), want %s", tc.sql, d.Enforced, d.Reason, tc.want)
		}
	}
	a := c.Approvals
	if a.Timeout.Duration != 10*time.Minute || a.MinApprovers != 2 || a.Store.PostgresDSNFile == "" || a.Reviewers.OIDC.Audience != "snowgate-reviewers" {
		t.Errorf("approvals %+v", a)
	}
}

func TestStatementsDefaults(t *testing.T) {
	c, err := Parse("min.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Rules[0].Statements.UsesApproval() || c.Approvals.MinApprovers != 1 {
		t.Errorf("defaults: %+v, %+v", c.Rules[0].Statements, c.Approvals)
	}
	p, err := policy.New(c.Rules[0].Statements.Policy("r"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sql  string
		want policy.Action
	}{
		{"SELECT 1", policy.Allow},
		{"INSERT INTO t VALUES (1)", policy.Deny},
		{"GRANT ROLE a TO USER b", policy.Deny},
		{"GET @st file:///tmp/", policy.Deny},
		{"SELECT 1; SELECT 2", policy.Deny},
	} {
		if d := p.DecideSQL(tc.sql, policy.Namespace{}); d.Enforced != tc.want {
			t.Errorf("%q: %s, want %s", tc.sql, d.Enforced, tc.want)
		}
	}
	obs, err := Parse("obs.yaml", []byte(withStatements(t, "    statements: {observe: true}\n", "")))
	if err != nil {
		t.Fatal(err)
	}
	p, err = policy.New(obs.Rules[0].Statements.Policy("r"))
	if err != nil {
		t.Fatal(err)
	}
	if d := p.DecideSQL("DROP TABLE t", policy.Namespace{}); d.Enforced != policy.Allow || d.Action != policy.Deny || !d.Observe {
		t.Errorf("observe mode: %+v", d)
	}
}

func TestStatementsRejects(t *testing.T) {
	tests := []struct {
		name, statements, extra, want string
	}{
		{"bad class action", "    statements: {privileged: maybe}\n", "", `rules[0].statements.privileged: "maybe" is not one of allow, deny, approve`},
		{"allow unknown", "    statements: {unknown: allow}\n", "", "rules[0].statements.unknown: unknown statements cannot be allowed"},
		{"rule without action", "    statements:\n      rules: [{objects: [\"A.B.C\"]}]\n", "", "rules[0].statements.rules[0].action: required"},
		{"bad rule class", "    statements:\n      rules: [{classes: [writes], action: deny}]\n", "", `rules[0].statements.rules[0].classes[0]: "writes" is not a statement class`},
		{"bad pattern", "    statements:\n      rules: [{objects: [\"A.B\"], action: deny}]\n", "", "rules[0].statements.rules[0].objects[0]: pattern \"A.B\": want DATABASE.SCHEMA.OBJECT"},
		{"allow unknown by rule", "    statements:\n      rules: [{classes: [unknown], action: allow}]\n", "", "rules[0].statements.rules[0].action: unknown statements cannot be allowed"},
		{"two stores", "", "approvals:\n  store: {sqlite: /var/lib/a.db, postgres_dsn_file: /etc/dsn}\n", "approvals.store: sqlite and postgres_dsn_file exclude each other"},
		{"relative sqlite", "", "approvals:\n  store: {sqlite: a.db}\n", `approvals.store.sqlite: "a.db" is not an absolute path`},
		{"min approvers", "", "approvals: {min_approvers: 11}\n", "approvals.min_approvers: 11 is not between 1 and 10"},
		{"oidc without audience", "", "approvals:\n  reviewers: {oidc: {issuer: \"https://login.example.com\"}}\n", "approvals.reviewers.oidc.audience: required"},
		{"bad webhook", "", "approvals: {notify: \"ftp://x\"}\n", `approvals.notify: "ftp://x" is not an http(s) URL`},
		{"unknown key", "", "approvals: {webhook: \"https://x\"}\n", "unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(withStatements(t, tc.statements, tc.extra)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestApplianceStatements loads the documented default configuration: its
// statement policy builds and its approvals section is the one documented.
func TestApplianceStatements(t *testing.T) {
	c, err := Load("../../appliance/snowgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.New(c.Rules[0].Statements.Policy(c.Rules[0].Name))
	if err != nil {
		t.Fatal(err)
	}
	if d := p.DecideSQL("INSERT INTO ANALYTICS.SCRATCH.T VALUES (1)", policy.Namespace{}); d.Enforced != policy.Allow {
		t.Errorf("scratch insert: %s", d.Enforced)
	}
	if d := p.DecideSQL("UPDATE ANALYTICS.PUBLIC.T SET A = 1", policy.Namespace{}); d.Enforced != policy.Approve {
		t.Errorf("update: %s", d.Enforced)
	}
	a := c.Approvals
	if a.Timeout.Duration != 30*time.Minute || a.MinApprovers != 1 || a.Store.SQLite == "" || a.Reviewers.TokenFile == "" || a.Notify == "" {
		t.Errorf("approvals %+v", a)
	}
}
