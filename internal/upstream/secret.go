// Package upstream holds what the gateway needs to log in to Snowflake on
// its own behalf: the per-account credentials (key pair, programmatic
// access token or password), read from files only the gateway's user can
// read, and the RS256 key-pair JWT minted right before each login.
//
// Secrets are wrapped in Secret, which never prints, formats, logs or
// marshals its value.
package upstream

import (
	"fmt"
	"log/slog"
)

// Redacted is what a Secret prints instead of its value.
const Redacted = "[REDACTED]"

// Secret holds a secret value. Its String, GoString, Format, MarshalJSON,
// MarshalText and LogValue all redact; only Reveal returns the value.
type Secret struct {
	v string
}

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{v: s} }

// Reveal returns the secret value. Call it only where the value goes on
// the wire.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

// String redacts.
func (s Secret) String() string { return Redacted }

// GoString redacts (%#v).
func (s Secret) GoString() string { return Redacted }

// Format redacts for every verb, %x and %q included.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// MarshalJSON redacts.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText redacts (YAML, XML and other text encoders).
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// LogValue redacts in log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }
