package policy

import (
	"fmt"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// Snowflake's own code and state for "SQL access control error: Insufficient
// privileges", which the drivers surface as an ordinary SQL error. They are
// not in internal/snowflake yet; the gateway's denials are the only users.
const (
	CodeAccessDenied     = "003001"
	SQLStateAccessDenied = "42501"
)

// Error renders a decision that is not enforced as allow as the
// Snowflake-shaped error the agent's driver receives: it names the class, the
// rule and the reason so that an agent (or the human reading its log) can
// tell what to change. It returns nil when the decision lets the statement
// run. queryID may be empty.
func (d Decision) Error(queryID string) *snowflake.Error {
	var what string
	switch d.Enforced {
	case Allow:
		return nil
	case Approve:
		what = "needs human approval"
	default:
		what = "was denied"
	}
	hint := ""
	switch d.Class {
	case ClassMultiStatement:
		hint = " Send one statement per request."
	case ClassUnknown:
		hint = " Send a single plain statement the gateway can classify."
	}
	return &snowflake.Error{
		Code:     CodeAccessDenied,
		SQLState: SQLStateAccessDenied,
		Message: fmt.Sprintf("SQL access control error:\nsnowgate: statement of class %s %s by rule %q: %s.%s",
			d.Class, what, d.Rule, d.Reason, hint),
		QueryID: queryID,
		Type:    "COMPILATION",
	}
}
