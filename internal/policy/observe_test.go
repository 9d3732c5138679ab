package policy

import "testing"

// TestPolicyObserveMode: a whole policy in observe mode records every
// decision and enforces none.
func TestPolicyObserveMode(t *testing.T) {
	p := mustPolicy(t, Config{Name: "trial", Observe: true, Classes: map[Class]Action{ClassDML: Approve}})
	tests := []struct {
		sql     string
		action  Action
		observe bool
	}{
		{"SELECT 1", Allow, false},
		{"INSERT INTO t VALUES (1)", Approve, true},
		{"DROP TABLE t", Deny, true},
		{"GRANT ROLE a TO USER b", Deny, true},
		{"SEL/**/ECT 1", Deny, true},
	}
	for _, tc := range tests {
		d := p.DecideSQL(tc.sql, Namespace{})
		if d.Action != tc.action || d.Enforced != Allow || d.Observe != tc.observe || d.Error("") != nil {
			t.Errorf("%q: action %s enforced %s observe %v; want %s, allow, %v", tc.sql, d.Action, d.Enforced, d.Observe, tc.action, tc.observe)
		}
	}
}
