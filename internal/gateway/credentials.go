package gateway

import (
	"context"
	"net/http"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// Call is what the hooks at the choke point know about one API request. The
// credential hook fills in Principal; the later stages read it.
type Call struct {
	Kind     snowflake.Kind
	Account  string
	Host     string
	Workload Workload
	// RequestID is the driver's requestId query parameter (its retry key).
	RequestID string
	// Principal is who the request acts for: set by Credentials.Outbound
	// for requests that carry a session token, and by Credentials.Inbound
	// on a successful login. Nil until then (and with ObserveOnly).
	Principal *Principal
}

// Credentials is the hook at the choke point where credentials are swapped
// (protocol notes §10): the login is rewritten for the gateway's own
// credential, Authorization and oldSessionToken carry real tokens upstream,
// and replies carry opaque handles back. Outbound runs on every API request
// before it goes upstream and returns the body to send; Inbound runs on every
// API reply before the client sees it and returns the body to send back.
// An error refuses the request with a Snowflake-shaped error
// (a *snowflake.Error is sent as it is).
type Credentials interface {
	Outbound(ctx context.Context, c *Call, req *http.Request, body []byte) ([]byte, error)
	Inbound(ctx context.Context, c *Call, status int, body []byte) ([]byte, error)
}

// SessionPrincipals is implemented by a Credentials hook that keeps
// sessions (Swap). A chunk fetch carries no session token, only the session
// id its sealed URL names; SessionPrincipal returns that session's
// principal while the session is open, else nil.
type SessionPrincipals interface {
	SessionPrincipal(id string) *Principal
}

// ObserveOnly forwards the client's own credentials unchanged: the login
// goes upstream as the driver sent it and the tokens come back as Snowflake
// issued them. It is the behaviour of the observe-only stage, before the
// swap.
type ObserveOnly struct{}

// Outbound implements Credentials.
func (ObserveOnly) Outbound(_ context.Context, _ *Call, _ *http.Request, body []byte) ([]byte, error) {
	return body, nil
}

// Inbound implements Credentials.
func (ObserveOnly) Inbound(_ context.Context, _ *Call, _ int, body []byte) ([]byte, error) {
	return body, nil
}
