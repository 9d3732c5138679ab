package gateway

import (
	"github.com/snowgate/snowgate/internal/audit"
	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// AuditObserver turns exchanges into audit events: the statement policy's
// decisions and (with Logins) login success and failure. Session start and
// end come from the SessionRecorder, approval decisions from the approval
// stage, and the credential swap audits its own logins.
type AuditObserver struct {
	// Log receives the events; nil discards them.
	Log *audit.Logger
	// Logins audits login exchanges: set it when no identity stage
	// (which audits logins itself) is configured.
	Logins bool
}

// Observe implements Observer.
func (a AuditObserver) Observe(x *Exchange) {
	switch x.Kind {
	case snowflake.KindLogin.String():
		if !a.Logins {
			return
		}
		if x.Status == 200 && x.Error == "" && envelopeError(x.ResponseBody) == nil && len(x.ResponseBody) > 0 {
			a.Log.Emit(exchangeAudit(x, audit.LoginSuccess, "ok", ""))
			return
		}
		reason := x.Error
		if e := envelopeError(x.ResponseBody); e != nil && reason == "" {
			reason = e.Message
			if e.Code != "" {
				reason = e.Code + ": " + reason
			}
		}
		ev := exchangeAudit(x, audit.LoginFailure, "failed", recording.RedactText(reason))
		if ev.User == "" {
			if lr, err := snowflake.ParseLoginRequest(x.RequestBody); err == nil {
				ev.User = lr.LoginName
			}
		}
		a.Log.Emit(ev)
	case snowflake.KindQueryRequest.String():
		v := x.Verdict
		if v == nil {
			return
		}
		ev := exchangeAudit(x, audit.QueryDecision, verdictOutcome(v), v.Reason)
		ev.Class, ev.Decision, ev.ApprovalID = v.Class, v.Action, v.ApprovalID
		if v.Rule != "" {
			ev.Detail = map[string]any{"policy_rule": v.Rule}
		}
		if v.Observe {
			if ev.Detail == nil {
				ev.Detail = map[string]any{}
			}
			ev.Detail["observe"] = true
		}
		if q, err := snowflake.ParseQueryRequest(x.RequestBody); err == nil {
			ev.SQL = recording.RedactSQL(q.SQLText)
		}
		a.Log.Emit(ev)
	}
}

func verdictOutcome(v *Verdict) string {
	switch {
	case v.Observe:
		return "observed"
	case v.Action == "allow":
		return "allowed"
	case v.Action == "deny":
		return "denied"
	case v.Action == "approve":
		return "held"
	}
	return v.Action
}

// exchangeAudit is an audit event about x: who (the principal, or the
// workload alone), where and what.
func exchangeAudit(x *Exchange, t audit.Type, outcome, reason string) audit.Event {
	ev := audit.Event{
		Type: t, Outcome: outcome, Reason: reason,
		Account: x.Account, Host: x.Host, RequestID: x.RequestID, QueryID: x.QueryID,
		Workload: &audit.Workload{CgroupID: x.Workload.CgroupID, PID: x.Workload.PID, UID: x.Workload.UID, Comm: x.Workload.Comm},
	}
	if p := x.Principal; p != nil {
		ev.SessionID, ev.Issuer, ev.Subject, ev.Claims, ev.Rule = p.SessionID, p.Issuer, p.Subject, p.Claims, p.Rule
		ev.User, ev.Role = p.User, p.Role
		if p.Account != "" {
			ev.Account = p.Account
		}
	}
	return ev
}
