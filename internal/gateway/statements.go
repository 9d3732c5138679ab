package gateway

import (
	"context"
)

// Verdict is what the statement policy decided about one query request.
type Verdict struct {
	// Class is the statement class (policy.Class) and Action the decision
	// (allow, deny, approve).
	Class  string `json:"class"`
	Action string `json:"action"`
	// Rule names the policy rule that decided.
	Rule string `json:"rule,omitempty"`
	// Observe is set when the decision was recorded but not enforced.
	Observe bool `json:"observe,omitempty"`
	// Reason explains a refusal or a hold.
	Reason string `json:"reason,omitempty"`
	// ApprovalID links a held statement to its approval request.
	ApprovalID string `json:"approval_id,omitempty"`
}

// screen runs the statement policy on one API request after the
// credential hook. It returns nil to forward the request, or the reply the
// gateway sends instead (a refusal, or a held query's in-progress answer).
//
// The statement policy and approval stage lands here; until then every
// request is forwarded.
func (h *handler) screen(_ context.Context, _ *Call, _ *clientRequest, _ []byte, _ *Exchange) (*reply, error) {
	return nil, nil
}
