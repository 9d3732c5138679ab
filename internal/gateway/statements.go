package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/snowgate/snowgate/internal/approval"
	"github.com/snowgate/snowgate/internal/policy"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// Verdict is what the statement policy decided about one query request.
type Verdict struct {
	// Class is the statement class (policy.Class) and Action the decision
	// (allow, deny, approve) as recorded, observe-mode rules included.
	Class  string `json:"class"`
	Action string `json:"action"`
	// Enforced is what the gateway did: Action, unless an observe-mode
	// rule decided (then the verdict without observe-mode rules).
	Enforced string `json:"enforced,omitempty"`
	// Rule names the policy rule that decided.
	Rule string `json:"rule,omitempty"`
	// Observe is set when the decision was recorded but not enforced.
	Observe bool `json:"observe,omitempty"`
	// Reason explains a refusal or a hold; on the exchanges of a held
	// query after the decision, who decided, when and why.
	Reason string `json:"reason,omitempty"`
	// ApprovalID links a held statement to its approval request.
	ApprovalID string `json:"approval_id,omitempty"`
	// Approval is the state of the approval request on the exchanges of a
	// held query (pending, approved, denied, expired, cancelled).
	Approval string `json:"approval,omitempty"`
}

// StatementPolicy is the statement screen: a policy per identity rule and
// the approval service for statements held for a reviewer. Set it as
// Config.Statements; nil forwards every statement unscreened.
type StatementPolicy struct {
	// Rules maps identity-rule names (Principal.Rule) to their policy.
	Rules map[string]*policy.Policy
	// Default decides requests without a principal (observe-only
	// credentials) or whose rule has no entry. Nil: policy.DefaultActions
	// (reads and session statements pass, everything else is denied).
	Default *policy.Policy
	// Approvals holds statements a policy sends for approval. Nil: such
	// statements are refused with an error saying so.
	Approvals *approval.Service
	// PollHold is how long one result poll of a held query is held before
	// it is answered "still running" again; default DefaultPollHold.
	PollHold time.Duration

	once       sync.Once
	fallback   *policy.Policy
	holds      *holdTable
	namespaces sync.Map // session key → policy.Namespace
}

// DefaultPollHold keeps a held query's result poll open, as the service
// long-polls running queries (about 45 s), a little shorter than the
// drivers' own read timeouts.
const DefaultPollHold = 30 * time.Second

func (sp *StatementPolicy) init() {
	sp.once.Do(func() {
		sp.holds = newHoldTable()
		p, err := policy.New(policy.Config{Name: "default"})
		if err != nil {
			panic("gateway: the default statement policy is invalid: " + err.Error())
		}
		sp.fallback = p
		if sp.PollHold <= 0 {
			sp.PollHold = DefaultPollHold
		}
	})
}

func (sp *StatementPolicy) policyFor(p *Principal) *policy.Policy {
	if p != nil {
		if pol, ok := sp.Rules[p.Rule]; ok && pol != nil {
			return pol
		}
	}
	if sp.Default != nil {
		return sp.Default
	}
	return sp.fallback
}

// sessionKey names the session a request belongs to: the gateway session,
// or without a principal (observe-only credentials) the workload's cgroup.
func sessionKey(c *Call) string {
	if c.Principal != nil && c.Principal.SessionID != "" {
		return "session:" + c.Principal.SessionID
	}
	return "cgroup:" + strconv.FormatUint(c.Workload.CgroupID, 10)
}

// requesterOf is the identity compared against reviewers (self-approval).
func requesterOf(c *Call) string {
	if p := c.Principal; p != nil && p.Issuer != "" {
		return approval.IdentityOf(p.Issuer, p.Subject)
	}
	return fmt.Sprintf("workload:cgroup=%d,uid=%d", c.Workload.CgroupID, c.Workload.UID)
}

func (sp *StatementPolicy) namespace(key string, p *Principal) policy.Namespace {
	if v, ok := sp.namespaces.Load(key); ok {
		return v.(policy.Namespace)
	}
	if p != nil {
		return policy.Namespace{Database: p.Database, Schema: p.Schema}
	}
	return policy.Namespace{}
}

// screen runs the statement policy on one API request after the
// credential hook. It returns nil to forward the request, or the reply the
// gateway sends instead (a refusal, or a held query's in-progress answer).
// Query requests are classified and decided; result polls, monitoring
// look-ups and aborts of held queries are answered here (hold.go).
func (h *handler) screen(ctx context.Context, call *Call, req *clientRequest, send []byte, x *Exchange) (*reply, error) {
	sp := h.g.cfg.Statements
	if sp == nil {
		return nil, nil
	}
	sp.init()
	if hd := resumeOf(ctx); hd != nil {
		return nil, hd.verify(send)
	}
	switch call.Kind {
	case snowflake.KindQueryRequest:
		return h.screenQuery(ctx, sp, call, req, send, x)
	case snowflake.KindQueryResult, snowflake.KindMonitoring, snowflake.KindAbortByQueryID, snowflake.KindAbortByRequestID:
		return h.screenHeld(ctx, sp, call, req, send, x)
	case snowflake.KindLogout:
		sp.namespaces.Delete(sessionKey(call))
	}
	return nil, nil
}

// screenQuery decides one query request.
func (h *handler) screenQuery(ctx context.Context, sp *StatementPolicy, call *Call, req *clientRequest, send []byte, x *Exchange) (*reply, error) {
	key := sessionKey(call)
	if hd := sp.holds.byRequest(key, call.RequestID); hd != nil {
		// The driver's retry of a held statement: the same answer.
		return h.heldProgress(ctx, sp, hd, x)
	}
	q, st := classifyRequest(send)
	ns := sp.namespace(key, call.Principal)
	d := sp.policyFor(call.Principal).Decide(st, ns)
	x.Verdict = &Verdict{Class: string(d.Class), Action: string(d.Action), Enforced: string(d.Enforced), Rule: d.Rule, Observe: d.Observe, Reason: d.Reason}
	switch d.Enforced {
	case policy.Allow:
		if next := st.NextNamespace(ns); next != ns {
			sp.namespaces.Store(key, next)
		}
		return nil, nil
	case policy.Approve:
		if sp.Approvals == nil {
			d.Enforced, d.Reason = policy.Deny, d.Reason+"; no approval service is configured, so it is refused"
			x.Verdict.Enforced = string(policy.Deny)
			return nil, d.Error("")
		}
		if q == nil || q.SQLText == "" {
			d.Enforced, d.Reason = policy.Deny, d.Reason+"; a request without readable SQL cannot be held for approval"
			x.Verdict.Enforced = string(policy.Deny)
			return nil, d.Error("")
		}
		if call.RequestID == "" {
			d.Enforced, d.Reason = policy.Deny, d.Reason+"; the request carries no requestId to bind an approval to"
			x.Verdict.Enforced = string(policy.Deny)
			return nil, d.Error("")
		}
		return h.hold(ctx, sp, call, req, q, d, x)
	}
	return nil, d.Error("")
}

// classifyRequest reads a query-request body as it goes upstream and
// classifies its SQL. A body that is not one well-formed JSON object with
// at most one sqlText (duplicate or case-folded duplicate members are
// refused by the parser: the service might read the other one) is unknown,
// and q is then nil.
func classifyRequest(send []byte) (*snowflake.QueryRequest, *policy.Statement) {
	q, err := snowflake.ParseQueryRequest(send)
	switch {
	case err != nil:
		return nil, &policy.Statement{Class: policy.ClassUnknown, Reason: "the query request body is unreadable"}
	case q.SQLText == "":
		return q, &policy.Statement{Class: policy.ClassUnknown, Reason: "the query request carries no SQL text"}
	}
	return q, policy.Classify(q.SQLText)
}

// jsonHeader is the header of replies the gateway makes itself.
func jsonHeader() http.Header {
	return http.Header{"Content-Type": []string{"application/json"}}
}
