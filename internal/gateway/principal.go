package gateway

import "time"

// Principal is the verified party behind a gateway session: the workload
// identity that logged in, the identity rule it matched and the Snowflake
// context that rule granted. The credential hook creates it at login; every
// later request of the session carries the same value, so the recorder, the
// statement policy and the metrics all see one account of who acted.
// A Principal is never modified after login: readers may keep it.
type Principal struct {
	// SessionID is the gateway's id of the Snowflake session: stable from
	// login to logout, across renewals. It names the session's recording.
	SessionID string `json:"session_id"`
	// Issuer and Subject are the verified token's iss and sub; IssuerName
	// is the configured name of the issuer; TokenID its jti (empty when
	// the token has none).
	Issuer     string `json:"issuer"`
	IssuerName string `json:"issuer_name,omitempty"`
	Subject    string `json:"subject"`
	TokenID    string `json:"token_id,omitempty"`
	// Authenticator is how the client logged in: WORKLOAD_IDENTITY (with
	// provider OIDC) or OAUTH.
	Authenticator string `json:"authenticator,omitempty"`
	// Continuation is set when the login used a token that had expired
	// since this gateway first admitted it, from the same workload
	// (workload-identity.md §10).
	Continuation bool `json:"continuation,omitempty"`
	// CgroupID and UID are the workload the session is bound to: its
	// gateway tokens are accepted from there only.
	CgroupID uint64 `json:"cgroup_id"`
	UID      uint32 `json:"uid"`
	// Claims are the verified token's claims, for audit: every top-level
	// claim except nested objects, personal data (email) and nonces.
	// Numbers are json.Number, as verified.
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
	// QueryTag is the rule's query tag, expanded with the claims and set
	// as the session's QUERY_TAG.
	QueryTag string `json:"query_tag,omitempty"`
	// ObserveOnly marks a rule that forwards the client's own credentials;
	// User, Role, Warehouse, Database and Schema are then what the client
	// asked for.
	ObserveOnly bool `json:"observe_only,omitempty"`
	// Client is the driver's self-description from the login
	// (CLIENT_APP_ID and CLIENT_APP_VERSION).
	ClientApp     string `json:"client_app,omitempty"`
	ClientVersion string `json:"client_version,omitempty"`
	// LoggedIn is when the session was established.
	LoggedIn time.Time `json:"logged_in"`
}
