package policy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/snowflake"
)

func mustPolicy(t *testing.T, cfg Config) *Policy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	p := mustPolicy(t, Config{Name: "r"})
	tests := []struct {
		sql  string
		want Action
	}{
		{"SELECT * FROM t", Allow},
		{"USE WAREHOUSE w", Allow},
		{"INSERT INTO t VALUES (1)", Deny},
		{"CREATE TABLE t (a INT)", Deny},
		{"GRANT ROLE a TO USER b", Deny},
		{"PUT file:///a @st", Deny},
		{"SELECT 1; SELECT 2", Deny},
		{"EXECUTE IMMEDIATE 'SELECT 1'", Deny},
		{"SЕLECT 1", Deny},
	}
	for _, tc := range tests {
		d := p.DecideSQL(tc.sql, Namespace{})
		if d.Action != tc.want || d.Enforced != tc.want || d.Observe {
			t.Errorf("%q: action %s enforced %s observe %v, want %s (rule %s: %s)", tc.sql, d.Action, d.Enforced, d.Observe, tc.want, d.Rule, d.Reason)
		}
	}
}

func TestDecide(t *testing.T) {
	p := mustPolicy(t, Config{
		Name:    "app-prod",
		Classes: map[Class]Action{ClassDML: Approve, ClassDDL: Deny, ClassMultiStatement: Allow},
		Rules: []RuleConfig{
			{Name: "pii", Objects: []string{`ANALYTICS."pii".*`, "*.SECRETS.*"}, Action: Deny},
			{Name: "scratch", Objects: []string{"ANALYTICS.SCRATCH.*"}, Classes: []Class{ClassDML, ClassDDL}, Action: Allow},
			{Name: "staging-reads", Objects: []string{"ANALYTICS.STG.T?"}, Classes: []Class{ClassRead}, Action: Approve},
		},
	})
	ns := Namespace{Database: "ANALYTICS", Schema: "PUBLIC"}
	tests := []struct {
		name     string
		sql      string
		ns       Namespace
		want     Action
		wantRule string
	}{
		{"read allowed by class", "SELECT * FROM orders", ns, Allow, "statements.read"},
		{"read of pii quoted", `SELECT * FROM analytics."pii".people`, ns, Deny, "pii"},
		{"unquoted pii is another schema", `SELECT * FROM analytics.pii.people`, ns, Allow, "statements.read"},
		{"read of secrets any db", "SELECT * FROM other.secrets.k", ns, Deny, "pii"},
		{"dml on scratch allowed", "INSERT INTO scratch.t SELECT * FROM orders", ns, Allow, "scratch"},
		{"dml on scratch reading pii", `INSERT INTO scratch.t SELECT * FROM "pii".people`, ns, Deny, "pii"},
		{"dml elsewhere approve", "UPDATE orders SET a = 1", ns, Approve, "statements.dml"},
		{"ddl on scratch allowed", "CREATE TABLE analytics.scratch.x (a INT)", ns, Allow, "scratch"},
		{"ddl rename out of scratch", "ALTER TABLE analytics.scratch.x RENAME TO analytics.public.x", ns, Deny, "statements.ddl"},
		{"ddl elsewhere", "DROP TABLE orders", ns, Deny, "statements.ddl"},
		{"ddl list smuggles a target", "DROP TABLE analytics.scratch.a, analytics.public.orders", ns, Deny, "pii"},
		{"drop scratch schema is not a scratch object", "DROP SCHEMA analytics.scratch", ns, Deny, "statements.ddl"},
		{"drop secrets schema", "DROP SCHEMA x.secrets", ns, Deny, "pii"},
		{"glob ?", "SELECT * FROM stg.t1", ns, Approve, "staging-reads"},
		{"glob ? no match", "SELECT * FROM stg.t12", ns, Allow, "statements.read"},
		{"dynamic read could be pii", "SELECT * FROM IDENTIFIER($t)", ns, Deny, "pii"},
		{"unresolved schema could be secrets", "SELECT * FROM k", Namespace{Database: "ANALYTICS"}, Deny, "pii"},
		{"unresolved schema could be secrets (dml)", "INSERT INTO t VALUES (1)", Namespace{Database: "ANALYTICS"}, Deny, "pii"},
		{"unresolved database could be scratch", "INSERT INTO scratch.t VALUES (1)", Namespace{}, Approve, "statements.dml"},
		{"join list hides pii", `SELECT * FROM orders o JOIN users u ON o.id = u.id, analytics."pii".people`, ns, Deny, "pii"},
		{"multi allowed, parts decide", "SELECT 1; SELECT * FROM orders", ns, Allow, "statements.multi_statement"},
		{"multi with denied part", "SELECT 1; DROP TABLE orders", ns, Deny, "statements.ddl"},
		{"multi with approve part", "SELECT 1; DELETE FROM orders", ns, Approve, "statements.dml"},
		{"privileged default deny", "GRANT ROLE a TO USER b", ns, Deny, "statements.privileged"},
		{"system function escalates", "SELECT SYSTEM$CANCEL_ALL_QUERIES(1) FROM orders", ns, Deny, "statements.privileged"},
		{"unknown", "FROB", ns, Deny, "statements.unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := p.DecideSQL(tc.sql, tc.ns)
			if d.Action != tc.want || d.Enforced != tc.want {
				t.Errorf("%q: %s/%s by %s (%s), want %s", tc.sql, d.Action, d.Enforced, d.Rule, d.Reason, tc.want)
			}
			if want := "app-prod: " + tc.wantRule; d.Rule != want {
				t.Errorf("%q: rule %q, want %q (%s)", tc.sql, d.Rule, want, d.Reason)
			}
		})
	}
}

func TestObserve(t *testing.T) {
	p := mustPolicy(t, Config{
		Name:    "r",
		Classes: map[Class]Action{ClassDML: Allow},
		Rules: []RuleConfig{
			{Name: "new-pii-rule", Objects: []string{"*.PII.*"}, Action: Deny, Observe: true},
			{Name: "dml-approval-trial", Classes: []Class{ClassDML}, Action: Approve, Observe: true},
		},
	})
	tests := []struct {
		sql              string
		action, enforced Action
		observe          bool
		rule             string
	}{
		{"SELECT * FROM d.pii.people", Deny, Allow, true, "r: new-pii-rule"},
		{"SELECT * FROM d.public.t", Allow, Allow, false, "r: statements.read"},
		{"INSERT INTO d.public.t VALUES (1)", Approve, Allow, true, "r: dml-approval-trial"},
		{"INSERT INTO d.pii.t VALUES (1)", Deny, Allow, true, "r: new-pii-rule"},
	}
	for _, tc := range tests {
		d := p.DecideSQL(tc.sql, Namespace{})
		if d.Action != tc.action || d.Enforced != tc.enforced || d.Observe != tc.observe || d.Rule != tc.rule {
			t.Errorf("%q: action %s enforced %s observe %v rule %q; want %s %s %v %q", tc.sql, d.Action, d.Enforced, d.Observe, d.Rule, tc.action, tc.enforced, tc.observe, tc.rule)
		}
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad class", Config{Classes: map[Class]Action{"reads": Allow}}, "statements.reads: not a statement class"},
		{"bad action", Config{Classes: map[Class]Action{ClassDML: "maybe"}}, `"maybe" is not one of allow, deny, approve`},
		{"allow unknown", Config{Classes: map[Class]Action{ClassUnknown: Allow}}, "unknown statements cannot be allowed"},
		{"rule allows unknown", Config{Rules: []RuleConfig{{Classes: []Class{ClassUnknown}, Action: Allow}}}, "rules[0]: unknown statements cannot be allowed"},
		{"bad pattern", Config{Rules: []RuleConfig{{Objects: []string{"a.b"}, Action: Deny}}}, "rules[0].objects[0]"},
		{"missing action", Config{Rules: []RuleConfig{{Objects: []string{"a.b.c"}}}}, "rules[0].action"},
		{"bad rule class", Config{Rules: []RuleConfig{{Classes: []Class{"writes"}, Action: Deny}}}, `"writes" is not a statement class`},
	}
	for _, tc := range tests {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
	if _, err := New(Config{Classes: map[Class]Action{ClassUnknown: Approve, ClassPrivileged: Allow}}); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

// TestRuleDefaultClasses: a rule without classes never loosens the
// default-deny classes.
func TestRuleDefaultClasses(t *testing.T) {
	p := mustPolicy(t, Config{Rules: []RuleConfig{{Name: "all", Action: Allow}}})
	for sql, want := range map[string]Action{
		"DROP TABLE t":           Allow,
		"GRANT ROLE a TO USER b": Deny,
		"PUT file:///a @st":      Deny,
		"SELECT 1; SELECT 2":     Deny,
		"EXECUTE IMMEDIATE 'x'":  Deny,
	} {
		if d := p.DecideSQL(sql, Namespace{}); d.Enforced != want {
			t.Errorf("%q: %s, want %s", sql, d.Enforced, want)
		}
	}
}

func TestDecisionError(t *testing.T) {
	p := mustPolicy(t, Config{Name: "app-main-readonly", Classes: map[Class]Action{ClassDML: Approve}})
	if e := p.DecideSQL("SELECT 1", Namespace{}).Error("q1"); e != nil {
		t.Fatalf("allowed statement got an error: %v", e)
	}
	d := p.DecideSQL("DROP TABLE analytics.public.t", Namespace{})
	e := d.Error("01b2-q")
	if e == nil {
		t.Fatal("denied statement without an error")
	}
	body, err := json.Marshal(e.Response())
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Success bool   `json:"success"`
		Data    struct {
			ErrorCode string `json:"errorCode"`
			SQLState  string `json:"sqlState"`
			QueryID   string `json:"queryId"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	if env.Success || env.Code != CodeAccessDenied || env.Data.ErrorCode != CodeAccessDenied || env.Data.SQLState != SQLStateAccessDenied || env.Data.QueryID != "01b2-q" {
		t.Errorf("envelope %s", body)
	}
	for _, want := range []string{"ddl", "denied", "app-main-readonly: statements.ddl", "ANALYTICS.PUBLIC.T"} {
		if !strings.Contains(env.Message, want) {
			t.Errorf("message %q lacks %q", env.Message, want)
		}
	}
	if e.Status() != 200 {
		t.Errorf("status %d, want 200 so that drivers read the code", e.Status())
	}
	m := p.DecideSQL("SELECT 1; SELECT 2", Namespace{}).Error("")
	if m == nil || !strings.Contains(m.Message, "one statement per request") || !strings.Contains(m.Message, "multi_statement") {
		t.Errorf("multi-statement error: %v", m)
	}
	a := p.DecideSQL("DELETE FROM t", Namespace{}).Error("")
	if a == nil || !strings.Contains(a.Message, "needs human approval") {
		t.Errorf("approve decision error: %v", a)
	}
	var _ *snowflake.Error = a
}
