package identity

import (
	"errors"
	"fmt"
)

// Reason is the machine-readable cause of a refused token or identity. It
// is stable, lower_snake_case, and meant for audit records and metric
// labels; it never contains token material.
type Reason string

// Refusal reasons.
const (
	ReasonOversized       Reason = "oversized"        // token larger than MaxTokenSize
	ReasonMalformed       Reason = "malformed"        // not a compact JWS, bad base64 or JSON
	ReasonAlgNone         Reason = "alg_none"         // unsigned token
	ReasonAlgSymmetric    Reason = "alg_symmetric"    // HS256/384/512
	ReasonAlgNotAllowed   Reason = "alg_not_allowed"  // outside the issuer's allow-list
	ReasonUnknownIssuer   Reason = "unknown_issuer"   // iss is not a configured issuer
	ReasonUnknownKey      Reason = "unknown_key"      // no key of the issuer has this kid
	ReasonBadSignature    Reason = "bad_signature"    // signature does not verify (tampered)
	ReasonKeysUnavailable Reason = "keys_unavailable" // the issuer's keys were never fetched
	ReasonWrongAudience   Reason = "wrong_audience"   // no configured audience in aud
	ReasonExpired         Reason = "expired"          // exp passed (beyond the skew)
	ReasonNotYetValid     Reason = "not_yet_valid"    // nbf in the future (beyond the skew)
	ReasonIssuedInFuture  Reason = "issued_in_future" // iat in the future (beyond the skew)
	ReasonLifetimeTooLong Reason = "lifetime_too_long"
	ReasonTooOld          Reason = "too_old"         // now - iat over max_token_age
	ReasonMissingClaim    Reason = "missing_claim"   // a required claim is absent or not a scalar
	ReasonTenantMismatch  Reason = "tenant_mismatch" // the issuer's tenant pin does not match
	ReasonNoMatchingRule  Reason = "no_matching_rule"
)

// Error is a refused token or identity. Its message names the reason and
// the issuer, never the token.
type Error struct {
	// Reason is the stable cause.
	Reason Reason
	// Issuer is the configured issuer name, when known.
	Issuer string
	// Detail says what was wrong, for the operator.
	Detail string
	// Err is the underlying error, if any.
	Err error
}

func (e *Error) Error() string {
	msg := "identity: " + string(e.Reason)
	if e.Issuer != "" {
		msg += " (issuer " + e.Issuer + ")"
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of err, or "" when err is not an *Error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func refuse(r Reason, issuer string, format string, args ...any) *Error {
	return &Error{Reason: r, Issuer: issuer, Detail: fmt.Sprintf(format, args...)}
}
