// Package approval holds statements that need a human's approval: a request
// bound to the session, the exact SQL text and bindings (by hash) and the
// identity rule; a small state machine whose decided states are final; a
// store (SQLite on one runner, PostgreSQL for a fleet); a webhook notifier;
// and the reviewers' HTTP API.
//
// The states:
//
//	pending ─ approve (min_approvers reached) → approved ─ claim → (executed)
//	        ─ deny                            → denied
//	        ─ timeout                         → expired
//	        ─ the client aborts               → cancelled
//
// Every transition is one conditional write in the store, so two reviewers
// deciding at once, a decision after the timeout or a second approval each
// end in exactly one state. An approved statement's run is claimed before
// it runs, by one gateway instance at a time, even with several gateways on
// one store; a successor takes over only the run of a claimer that is dead
// or past its lease, and sends it with the driver's requestId, which the
// service de-duplicates (claim.go), so it never runs twice.
package approval

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// State is where a request is in its life.
type State string

// The states. Pending is the only one that changes.
const (
	Pending   State = "pending"
	Approved  State = "approved"
	Denied    State = "denied"
	Expired   State = "expired"
	Cancelled State = "cancelled"
)

// Final reports whether s can no longer change.
func (s State) Final() bool { return s != Pending }

// Errors of decisions. They wrap with the request id.
var (
	// ErrNotFound: no request with that id.
	ErrNotFound = errors.New("no such approval request")
	// ErrFinal: the request was already decided (or expired or cancelled).
	ErrFinal = errors.New("approval request already decided")
	// ErrExpired: the decision came after the timeout; the request is
	// expired now.
	ErrExpired = errors.New("approval request expired")
	// ErrSelfApproval: the reviewer is the identity that sent the statement.
	ErrSelfApproval = errors.New("the requesting identity cannot decide its own request")
	// ErrAlreadyVoted: the reviewer already approved this request.
	ErrAlreadyVoted = errors.New("reviewer already voted on this request")
	// ErrClaimed: the approved statement was already run (its run has a
	// recorded outcome, or was claimed longer than ResendWindow ago).
	ErrClaimed = errors.New("approved statement already run")
	// ErrRunning: the approved statement's run is claimed by a gateway
	// instance that is alive (or not known dead) and within its lease. It
	// wraps ErrClaimed: a caller that only asks "may I run it?" gets no.
	ErrRunning = fmt.Errorf("%w: being run by another gateway instance", ErrClaimed)
)

// Request is one statement waiting for (or past) a decision.
type Request struct {
	// ID names the request to reviewers (apr_ and 20 hex digits).
	ID    string `json:"id"`
	State State  `json:"state"`

	// SessionID and RequestKey bind the request to the gateway session and
	// the driver's requestId: a retry of the same request finds it again.
	SessionID  string `json:"session_id"`
	RequestKey string `json:"request_key"`
	// QueryID is the id the gateway gave the client for the held query.
	QueryID string `json:"query_id"`
	// Gateway names the gateway instance holding the client's query.
	Gateway string `json:"gateway,omitempty"`

	// Rule is the identity rule; PolicyRule the statement rule that asked
	// for approval; Class the statement class; Objects what it touches;
	// Reason the policy's words.
	Rule       string   `json:"rule"`
	PolicyRule string   `json:"policy_rule,omitempty"`
	Class      string   `json:"class"`
	Objects    []string `json:"objects,omitempty"`
	Reason     string   `json:"reason,omitempty"`

	// SQL and Bindings are exactly what will run; the hashes bind the
	// approval to them.
	SQL          string          `json:"sql"`
	SQLHash      string          `json:"sql_sha256"`
	Bindings     json.RawMessage `json:"bindings,omitempty"`
	BindingsHash string          `json:"bindings_sha256"`

	// Requester is the identity that sent the statement (see IdentityOf);
	// Account, User and Role the Snowflake context it runs in.
	Requester string `json:"requester"`
	Account   string `json:"account,omitempty"`
	User      string `json:"user,omitempty"`
	Role      string `json:"role,omitempty"`

	// MinApprovers is how many distinct reviewers must approve.
	MinApprovers int       `json:"min_approvers"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at"`

	// Votes are the reviewers' decisions, oldest first.
	Votes []Vote `json:"votes,omitempty"`
	// DecidedAt and DecisionReason are set once the state is final.
	DecidedAt      *time.Time `json:"decided_at,omitempty"`
	DecisionReason string     `json:"decision_reason,omitempty"`
	// ExecutedAt is when the approved statement was first claimed to run.
	ExecutedAt *time.Time `json:"executed_at,omitempty"`
	// Claimer is the gateway instance holding the run (the last to claim
	// it); nil for a claim stored before claimers were recorded.
	Claimer *Instance `json:"claimer,omitempty"`
	// LeaseUntil is when the claimer's run is over at the latest: after
	// it, another gateway may take the run over. Nil for an old claim
	// (then ExecutedAt + DefaultRunBound).
	LeaseUntil *time.Time `json:"lease_until,omitempty"`
	// RanAt is when the run got its final reply, and RunOutcome what it
	// was ("success" or the error code): nil while the run has none.
	RanAt      *time.Time `json:"ran_at,omitempty"`
	RunOutcome string     `json:"run_outcome,omitempty"`
	// claimedBy is the stored claimer, verbatim: the compare-and-set of a
	// take-over compares it.
	claimedBy string

	// Resume is the client's request as it came, so that any gateway
	// sharing the store (or this one after a restart) can run it once
	// approved. It is kept out of the API and notifications.
	Resume *Resume `json:"resume,omitempty"`
}

// Resume is a held request as the client sent it, without credentials.
type Resume struct {
	Method  string              `json:"method"`
	URI     string              `json:"uri"`
	Header  map[string][]string `json:"header,omitempty"`
	Body    []byte              `json:"body"`
	Gzipped bool                `json:"gzipped,omitempty"`
}

// Public returns a copy of r without Resume, for reviewers.
func (r *Request) Public() *Request {
	c := *r
	c.Resume = nil
	return &c
}

// Vote is one reviewer's decision.
type Vote struct {
	Reviewer string    `json:"reviewer"`
	Approve  bool      `json:"approve"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
}

// DecidedBy lists the reviewers whose votes decided the request.
func (r *Request) DecidedBy() []string {
	var out []string
	for _, v := range r.Votes {
		if r.State == Approved && v.Approve || r.State == Denied && !v.Approve {
			out = append(out, v.Reviewer)
		}
	}
	return out
}

// IdentityOf renders a verified identity as the string compared for
// self-approval: the same issuer and subject are the same party, whether
// they send a statement or try to approve it.
func IdentityOf(issuer, subject string) string {
	return "oidc:" + issuer + "#" + subject
}

// Hash is the hex SHA-256 of b, the form SQL and bindings are bound by.
func Hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// newID returns a fresh request id.
func newID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("approval: no randomness: " + err.Error())
	}
	return "apr_" + hex.EncodeToString(b[:])
}
