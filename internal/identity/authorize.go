package identity

import (
	"context"
	"time"
)

// Authorizer admits a login's workload token: verification, then the
// rules, then the admission record that binds the token to its caller and
// decides continuation (workload-identity.md §5, §9, §10). On a
// configuration reload, replace Verifier and Rules and keep Admissions.
type Authorizer struct {
	Verifier   *Verifier
	Rules      *Rules
	Admissions *Admissions
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Decision is an admitted login.
type Decision struct {
	// Identity is the verified token.
	Identity *Identity
	// Rule is the matching rule, with the account and grant.
	Rule *RuleConfig
	// Continuation is true when the token had expired (or passed
	// max_token_age) and was admitted as a continuation of an earlier
	// fresh admission from the same binding. Audit it.
	Continuation bool
}

// Authorize verifies raw, matches a rule and records or checks the
// admission from binding b. Every refusal is an *Error with a Reason.
func (a *Authorizer) Authorize(ctx context.Context, raw string, b Binding) (*Decision, error) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	fresh := true
	id, verr := a.Verifier.Verify(ctx, raw)
	if verr != nil {
		if r := ReasonOf(verr); r != ReasonExpired && r != ReasonTooOld {
			return nil, verr
		}
		var err error
		if id, err = a.Verifier.VerifyContinuation(ctx, raw); err != nil {
			return nil, err
		}
		if id.ContinuationMax == 0 {
			return nil, verr
		}
		fresh = false
	}
	rule, err := a.Rules.Match(id)
	if err != nil {
		return nil, err
	}
	cont, err := a.Admissions.Admit(id, b, rule.Name, fresh, now())
	if err != nil {
		if !fresh && ReasonOf(err) == ReasonNotAdmittedFresh {
			return nil, verr // the token is simply expired
		}
		return nil, err
	}
	return &Decision{Identity: id, Rule: rule, Continuation: cont}, nil
}
