package gateway

import "time"

// Principal is the verified party behind a gateway session: the workload
// identity that logged in, the identity rule it matched and the Snowflake
// context that rule granted. The credential hook creates it at login; every
// later request of the session carries the same value, so the recorder, the
// statement policy and the metrics all see one account of who acted.
type Principal struct {
	// SessionID is the gateway's id of the Snowflake session: stable from
	// login to logout, across renewals. It names the session's recording.
	SessionID string `json:"session_id"`
	// Issuer and Subject are the verified token's iss and sub.
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
	// Claims are the claims the rule matched on (and other non-secret
	// claims worth auditing), as verified.
	Claims map[string]any `json:"claims,omitempty"`
	// Rule is the name of the identity rule that matched.
	Rule string `json:"rule"`
	// Account is the configured account the session is on.
	Account string `json:"account"`
	// User, Role, Warehouse, Database and Schema are the Snowflake context
	// the rule granted (the client's requests for others were replaced).
	User      string `json:"user"`
	Role      string `json:"role,omitempty"`
	Warehouse string `json:"warehouse,omitempty"`
	Database  string `json:"database,omitempty"`
	Schema    string `json:"schema,omitempty"`
	// ObserveOnly marks a rule that forwards the client's own credentials.
	ObserveOnly bool `json:"observe_only,omitempty"`
	// Client is the driver's self-description from the login
	// (CLIENT_APP_ID and CLIENT_APP_VERSION).
	ClientApp     string `json:"client_app,omitempty"`
	ClientVersion string `json:"client_version,omitempty"`
	// LoggedIn is when the session was established.
	LoggedIn time.Time `json:"logged_in"`
}
