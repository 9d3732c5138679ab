// Package identity verifies the OIDC workload tokens CI jobs present at
// login and maps a verified identity to a Snowflake grant through ordered
// rules.
//
// Verification uses go-oidc v3 with a key set of its own (rate-limited
// refresh, last good keys kept) and adds what go-oidc leaves out: a size
// cap and format checks before any crypto, a per-issuer algorithm
// allow-list that never admits none or HMAC, audience intersection, exp,
// nbf and iat with one clock skew per issuer, caps on lifetime and age,
// required claims and a tenant pin (workload-identity.md §6.3).
package identity

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Limits and defaults.
const (
	// MaxTokenSize is the largest token accepted, in bytes.
	MaxTokenSize = 8 << 10
	// MaxClockSkew is the widest clock_skew accepted.
	MaxClockSkew = 60 * time.Second
	// DefaultClockSkew applies when an issuer sets none.
	DefaultClockSkew = 30 * time.Second
	// DefaultMaxTokenLifetime caps exp - iat when an issuer sets none.
	DefaultMaxTokenLifetime = time.Hour
	// DefaultRefresh is the timed key refresh when an issuer sets none.
	DefaultRefresh = time.Hour
	// DefaultMinRefetchInterval spaces key fetches caused by unknown kids.
	DefaultMinRefetchInterval = 30 * time.Second
	// maxJWKSBody bounds a discovery document or JWKS.
	maxJWKSBody = 1 << 20
)

// Key sources of KeySource.Source.
const (
	SourceDiscovery = "discovery" // OIDC discovery at <issuer>/.well-known/openid-configuration
	SourceJWKSURL   = "jwks_url"  // a JWKS URL
	SourceJWKSFile  = "jwks_file" // a JWKS file (air-gapped runners)
)

// IssuerConfig is one trusted token issuer.
type IssuerConfig struct {
	// Name identifies the issuer in rules, logs and metrics. Required.
	Name string `yaml:"name"`
	// Issuer is the exact iss claim. Required; https (http only on loopback).
	Issuer string `yaml:"issuer"`
	// Audiences: the token's aud must contain at least one. Required.
	Audiences []string `yaml:"audiences"`
	// Algorithms is the allow-list of signing algorithms; default [RS256].
	// none and HS* are refused at load.
	Algorithms []string `yaml:"algorithms"`
	// Keys is where the signing keys come from.
	Keys KeySource `yaml:"keys"`
	// ClockSkew is the leeway for exp, nbf and iat; default 30s, at most 60s.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// MaxTokenLifetime caps exp - iat; default 1h.
	MaxTokenLifetime time.Duration `yaml:"max_token_lifetime"`
	// MaxTokenAge caps now - iat; 0 means no cap.
	MaxTokenAge time.Duration `yaml:"max_token_age"`
	// RequiredClaims must be present as strings or numbers.
	RequiredClaims []string `yaml:"required_claims"`
	// Tenant pins claims to exact values before any rule runs. Required for
	// the shared issuers of GitHub, gitlab.com and Buildkite.
	Tenant map[string]string `yaml:"tenant"`
	// Continuation governs re-logins with a token that has expired since
	// this gateway admitted it (workload-identity.md §10).
	Continuation Continuation `yaml:"continuation"`
}

// Continuation is an issuer's continuation window.
type Continuation struct {
	// Max is how long after the first fresh admission the same token may
	// still open sessions from the same binding. nil means
	// DefaultContinuationMax; 0 means strict (expired tokens are refused).
	Max *time.Duration `yaml:"max"`
}

// DefaultContinuationMax is the continuation window when an issuer sets none.
const DefaultContinuationMax = 60 * time.Minute

func (c IssuerConfig) continuationMax() time.Duration {
	if c.Continuation.Max == nil {
		return DefaultContinuationMax
	}
	return *c.Continuation.Max
}

// KeySource says where an issuer's keys come from.
type KeySource struct {
	// Source is discovery (default), jwks_url or jwks_file.
	Source string `yaml:"source"`
	// URL is the JWKS URL of source jwks_url.
	URL string `yaml:"url"`
	// File is the JWKS file of source jwks_file.
	File string `yaml:"file"`
	// Refresh is the timed refresh (or file re-read) interval; default 1h.
	Refresh time.Duration `yaml:"refresh"`
	// MinRefetchInterval is the least time between two fetches, so tokens
	// with unknown kids cannot make the gateway fetch in a loop; default 30s.
	MinRefetchInterval time.Duration `yaml:"min_refetch_interval"`
	// CacheFile, for discovery and jwks_url, is where the last good JWKS is
	// persisted (mode 0600) and loaded from at start, so a restart while
	// the issuer is unreachable keeps verifying. Optional.
	CacheFile string `yaml:"cache_file"`
}

// sharedIssuers sign for every customer; a tenant pin is mandatory.
var sharedIssuers = map[string]string{
	"https://token.actions.githubusercontent.com": "repository_owner_id",
	"https://gitlab.com":                          "namespace_id",
	"https://agent.buildkite.com":                 "organization_id",
}

// withDefaults validates c and fills in defaults.
func (c IssuerConfig) withDefaults() (IssuerConfig, error) {
	if c.Name == "" {
		return c, fmt.Errorf("issuer %q: name is required", c.Issuer)
	}
	if err := checkURL(c.Issuer); err != nil {
		return c, fmt.Errorf("issuer %s: issuer: %w", c.Name, err)
	}
	if len(c.Audiences) == 0 || slices.Contains(c.Audiences, "") {
		return c, fmt.Errorf("issuer %s: audiences must list at least one non-empty audience", c.Name)
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{"RS256"}
	}
	for _, a := range c.Algorithms {
		if !asymmetricAlgs[a] {
			return c, fmt.Errorf("issuer %s: algorithm %q is not allowed (only RS*, PS*, ES* and EdDSA)", c.Name, a)
		}
	}
	switch {
	case c.ClockSkew == 0:
		c.ClockSkew = DefaultClockSkew
	case c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew:
		return c, fmt.Errorf("issuer %s: clock_skew %s is outside 0..%s", c.Name, c.ClockSkew, MaxClockSkew)
	}
	if c.MaxTokenLifetime == 0 {
		c.MaxTokenLifetime = DefaultMaxTokenLifetime
	}
	if c.MaxTokenLifetime < 0 || c.MaxTokenAge < 0 {
		return c, fmt.Errorf("issuer %s: max_token_lifetime and max_token_age must not be negative", c.Name)
	}
	if pin, shared := sharedIssuers[strings.TrimSuffix(c.Issuer, "/")]; shared && len(c.Tenant) == 0 {
		return c, fmt.Errorf("issuer %s: %s signs for every customer: set tenant (e.g. %s)", c.Name, c.Issuer, pin)
	}
	for k, v := range c.Tenant {
		if k == "" || v == "" {
			return c, fmt.Errorf("issuer %s: tenant claims and values must not be empty", c.Name)
		}
	}
	if m := c.Continuation.Max; m != nil && (*m < 0 || *m > 24*time.Hour) {
		return c, fmt.Errorf("issuer %s: continuation.max %s is outside 0..24h", c.Name, *m)
	}
	k := &c.Keys
	if k.Source == "" {
		k.Source = SourceDiscovery
	}
	switch k.Source {
	case SourceDiscovery:
	case SourceJWKSURL:
		if err := checkURL(k.URL); err != nil {
			return c, fmt.Errorf("issuer %s: keys.url: %w", c.Name, err)
		}
	case SourceJWKSFile:
		if k.File == "" {
			return c, fmt.Errorf("issuer %s: keys.file is required for source jwks_file", c.Name)
		}
	default:
		return c, fmt.Errorf("issuer %s: keys.source %q is not discovery, jwks_url or jwks_file", c.Name, k.Source)
	}
	if k.CacheFile != "" && k.Source == SourceJWKSFile {
		return c, fmt.Errorf("issuer %s: keys.cache_file is for discovery and jwks_url sources", c.Name)
	}
	if k.Refresh == 0 {
		k.Refresh = DefaultRefresh
	}
	if k.MinRefetchInterval == 0 {
		k.MinRefetchInterval = DefaultMinRefetchInterval
	}
	if k.Refresh < 0 || k.MinRefetchInterval < 0 {
		return c, fmt.Errorf("issuer %s: keys.refresh and keys.min_refetch_interval must not be negative", c.Name)
	}
	return c, nil
}

// asymmetricAlgs are the algorithms an issuer may allow.
var asymmetricAlgs = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// checkURL accepts https URLs, and http only on a loopback host.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("parse %q: %w", s, err)
	}
	switch {
	case u.Scheme == "https" && u.Host != "":
		return nil
	case u.Scheme == "http" && (u.Hostname() == "127.0.0.1" || u.Hostname() == "localhost" || u.Hostname() == "::1"):
		return nil
	}
	return fmt.Errorf("%q is not an https URL", s)
}
