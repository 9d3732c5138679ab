package config

import (
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Identity configures the workload-identity token issuers the gateway
// trusts and the gateway sessions it hands out.
type Identity struct {
	Issuers []Issuer `yaml:"issuers"`
	// Sessions bounds the gateway sessions (gateway tokens).
	Sessions Sessions `yaml:"sessions"`
	// StateFile keeps the admitted tokens (their binding and first
	// admission) across restarts, so continuation (issuer continuation)
	// survives a restart; mode 0600. Empty: kept in memory only, and a
	// restart refuses expired tokens (fail closed).
	StateFile string `yaml:"state_file"`
}

// Sessions bounds the gateway sessions.
type Sessions struct {
	// Max is the most live sessions; default 10000.
	Max int `yaml:"max"`
	// IdleTimeout ends a session unused this long; default 4h.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// StateFile keeps the live sessions across restarts and hand-overs
	// (mode 0600). It holds the real Snowflake tokens of the sessions
	// (never a gateway token or credential): keep it where only the
	// gateway's user can read, like the credentials. Empty: sessions live
	// in memory only, and agents must log in again after a restart.
	StateFile string `yaml:"state_file"`
}

// Issuer is one trusted OIDC issuer of workload tokens.
type Issuer struct {
	// Name is how rules name the issuer; default the issuer URL.
	Name string `yaml:"name"`
	// Issuer is the exact iss claim and discovery base URL. Required; https,
	// or http only on a loopback address.
	Issuer string `yaml:"issuer"`
	// Audiences are the accepted aud values. At least one.
	Audiences []string `yaml:"audiences"`
	// Algorithms is the allow-list of signing algorithms; default [RS256].
	// none and HS* are never accepted.
	Algorithms []string `yaml:"algorithms"`
	// Keys is where the signing keys come from; default OIDC discovery.
	Keys Keys `yaml:"keys"`
	// ClockSkew is the leeway for exp, nbf and iat; default 30s, at most 60s.
	ClockSkew Duration `yaml:"clock_skew"`
	// MaxTokenLifetime caps exp - iat; default 1h.
	MaxTokenLifetime Duration `yaml:"max_token_lifetime"`
	// MaxTokenAge caps now - iat at first use; default none.
	MaxTokenAge Duration `yaml:"max_token_age"`
	// RequiredClaims must be present (as strings or numbers).
	RequiredClaims []string `yaml:"required_claims"`
	// Tenant pins claims to exact values before any rule runs; required for
	// the shared issuers of GitHub, gitlab.com and Buildkite.
	Tenant map[string]any `yaml:"tenant"`
	// Continuation is the window after a token's expiry in which the same
	// workload may log in again with it.
	Continuation Continuation `yaml:"continuation"`
}

// Keys says where an issuer's signing keys come from.
type Keys struct {
	// Source is discovery (default), jwks_url or jwks_file.
	Source string `yaml:"source"`
	// URL is the JWKS URL of source jwks_url.
	URL string `yaml:"url"`
	// File is the JWKS file of source jwks_file (air-gapped runners).
	File string `yaml:"file"`
	// Refresh is the timed refresh (or file re-read); default 1h.
	Refresh Duration `yaml:"refresh"`
	// MinRefetchInterval spaces fetches caused by unknown key ids; default 30s.
	MinRefetchInterval Duration `yaml:"min_refetch_interval"`
	// CacheFile keeps the last good JWKS of discovery and jwks_url across
	// restarts (mode 0600). Optional.
	CacheFile string `yaml:"cache_file"`
}

// Values of Keys.Source.
const (
	KeysDiscovery = "discovery"
	KeysJWKSURL   = "jwks_url"
	KeysJWKSFile  = "jwks_file"
)

// Continuation is an issuer's continuation window.
type Continuation struct {
	// Max is how long after the first fresh admission the same token may
	// still open sessions from the same cgroup; default 60m; 0s is strict
	// (an expired token is always refused).
	Max Duration `yaml:"max"`
	// Set reports whether max was given (0s and absent differ).
	Set bool `yaml:"-"`
}

// Rule maps a verified workload identity to a Snowflake session and a
// statement policy. Rules are tried in order; the first match wins; no
// match refuses the login.
type Rule struct {
	// Name identifies the rule in logs and recordings. Required, unique.
	Name  string `yaml:"name"`
	Match Match  `yaml:"match"`
	// Account names an entry of accounts. Required.
	Account   string  `yaml:"account"`
	Snowflake Session `yaml:"snowflake"`
	// ObserveOnly forwards the client's own login (Snowflake checks its
	// token itself) instead of the gateway's credential and the grant; the
	// identity is still verified, matched and recorded.
	ObserveOnly bool       `yaml:"observe_only"`
	Statements  Statements `yaml:"statements"`
}

// Match selects tokens: the issuer and claim values.
type Match struct {
	// Issuer is the name (or the URL) of one of identity.issuers. Required.
	Issuer string `yaml:"issuer"`
	// Claims must all match. A value is a scalar or a list (any of);
	// scalars compare as strings (numbers in decimal, booleans as
	// true/false); a string starting with "glob:" is a pattern with * and
	// ?. A missing claim never matches. A key starting with "/" is a JSON
	// pointer into nested claims.
	Claims map[string]any `yaml:"claims"`
}

// Session is the Snowflake context a rule grants; the request never chooses
// it.
type Session struct {
	// User is the Snowflake service user; default the account credential's.
	User string `yaml:"user"`
	// Role is required.
	Role      string `yaml:"role"`
	Warehouse string `yaml:"warehouse"`
	Database  string `yaml:"database"`
	Schema    string `yaml:"schema"`
	// QueryTag is set as the session's QUERY_TAG; {{claim}} is replaced by
	// the claim's value.
	QueryTag string `yaml:"query_tag"`
}

// ClaimValues returns the rule's claims as canonical strings: each value,
// or each element of a list.
func (m Match) ClaimValues() map[string][]string {
	out := make(map[string][]string, len(m.Claims))
	for k, v := range m.Claims {
		vals, _ := claimStrings(v)
		out[k] = vals
	}
	return out
}

// TenantValues returns the tenant pin as canonical strings.
func (is Issuer) TenantValues() map[string]string {
	out := make(map[string]string, len(is.Tenant))
	for k, v := range is.Tenant {
		s, _ := scalarString(v)
		out[k] = s
	}
	return out
}

// scalarString renders a YAML scalar the way claims compare: numbers in
// canonical decimal, booleans as true/false.
func scalarString(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case bool:
		return strconv.FormatBool(t), true
	case int:
		return strconv.Itoa(t), true
	case int64:
		return strconv.FormatInt(t, 10), true
	case uint64:
		return strconv.FormatUint(t, 10), true
	case float64:
		if math.IsInf(t, 0) || math.IsNaN(t) {
			return "", false
		}
		return strconv.FormatFloat(t, 'f', -1, 64), true
	}
	return "", false
}

// claimStrings renders a claim value (scalar or list of scalars).
func claimStrings(v any) ([]string, bool) {
	if list, ok := v.([]any); ok {
		out := make([]string, 0, len(list))
		for _, e := range list {
			s, ok := scalarString(e)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, len(out) > 0
	}
	s, ok := scalarString(v)
	if !ok {
		return nil, false
	}
	return []string{s}, true
}

// identity applies the defaults of the identity section, validates it and
// returns the names and URLs rules may use for the issuers.
func (v *validator) identity(id *Identity) map[string]bool {
	issuers := map[string]bool{}
	if len(id.Issuers) == 0 {
		v.bad("identity.issuers", "at least one issuer is required")
	}
	names := map[string]bool{}
	urls := map[string]bool{}
	for i := range id.Issuers {
		is := &id.Issuers[i]
		path := fmt.Sprintf("identity.issuers[%d]", i)
		if is.Issuer == "" {
			v.bad(path+".issuer", "required")
		} else if err := issuerURL(is.Issuer); err != nil {
			v.bad(path+".issuer", "%v", err)
		} else if urls[is.Issuer] {
			v.bad(path+".issuer", "%q is listed twice", is.Issuer)
		}
		urls[is.Issuer] = true
		if is.Name == "" {
			is.Name = is.Issuer
		} else if names[is.Name] {
			v.bad(path+".name", "%q is used by an earlier issuer", is.Name)
		}
		names[is.Name] = true
		issuers[is.Name], issuers[is.Issuer] = true, true
		if len(is.Audiences) == 0 {
			v.bad(path+".audiences", "at least one audience is required")
		}
		for j, a := range is.Audiences {
			if strings.TrimSpace(a) == "" {
				v.bad(fmt.Sprintf("%s.audiences[%d]", path, j), "empty audience")
			}
		}
		for j, a := range is.Algorithms {
			switch {
			case strings.EqualFold(a, "none") || strings.HasPrefix(strings.ToUpper(a), "HS"):
				v.bad(fmt.Sprintf("%s.algorithms[%d]", path, j), "%q is never accepted: workload tokens must be signed with an asymmetric key", a)
			case !slices.Contains(asymmetricAlgs, a):
				v.bad(fmt.Sprintf("%s.algorithms[%d]", path, j), "%q is not one of %s", a, strings.Join(asymmetricAlgs, ", "))
			}
		}
		v.keys(path+".keys", &is.Keys)
		v.duration(path+".clock_skew", &is.ClockSkew, 0, 0, time.Minute)
		v.duration(path+".max_token_lifetime", &is.MaxTokenLifetime, 0, time.Minute, 7*24*time.Hour)
		v.duration(path+".max_token_age", &is.MaxTokenAge, 0, 0, 7*24*time.Hour)
		is.Continuation.Set = v.present(path + ".continuation.max")
		v.duration(path+".continuation.max", &is.Continuation.Max, 0, 0, 7*24*time.Hour)
		for j, c := range is.RequiredClaims {
			if strings.TrimSpace(c) == "" {
				v.bad(fmt.Sprintf("%s.required_claims[%d]", path, j), "empty claim name")
			}
		}
		for _, k := range sortedKeys(is.Tenant) {
			if s, ok := scalarString(is.Tenant[k]); !ok || s == "" || strings.HasPrefix(s, "glob:") {
				v.bad(path+".tenant."+k, "a tenant pin is one exact value (a string or a number)")
			}
		}
	}
	if id.StateFile != "" && !filepath.IsAbs(id.StateFile) {
		v.bad("identity.state_file", "%q is not an absolute path", id.StateFile)
	}
	if id.Sessions.StateFile != "" && !filepath.IsAbs(id.Sessions.StateFile) {
		v.bad("identity.sessions.state_file", "%q is not an absolute path", id.Sessions.StateFile)
	}
	if id.Sessions.StateFile != "" && id.Sessions.StateFile == id.StateFile {
		v.bad("identity.sessions.state_file", "must differ from identity.state_file")
	}
	if id.Sessions.Max < 0 {
		v.bad("identity.sessions.max", "must not be negative")
	}
	v.duration("identity.sessions.idle_timeout", &id.Sessions.IdleTimeout, 4*time.Hour, time.Minute, 7*24*time.Hour)
	return issuers
}

// asymmetricAlgs are the signing algorithms an issuer may allow.
var asymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

func (v *validator) keys(path string, k *Keys) {
	if k.Source == "" {
		k.Source = KeysDiscovery
	}
	v.enum(path+".source", k.Source, KeysDiscovery, KeysJWKSURL, KeysJWKSFile)
	switch k.Source {
	case KeysJWKSURL:
		if k.URL == "" {
			v.bad(path+".url", "required with source jwks_url")
		} else if err := issuerURL(k.URL); err != nil {
			v.bad(path+".url", "%v", err)
		}
	case KeysJWKSFile:
		v.requiredPath(path+".file", k.File)
		if k.CacheFile != "" {
			v.bad(path+".cache_file", "not used with source jwks_file")
		}
	}
	if k.Source != KeysJWKSURL && k.URL != "" {
		v.bad(path+".url", "only used with source jwks_url")
	}
	if k.Source != KeysJWKSFile && k.File != "" {
		v.bad(path+".file", "only used with source jwks_file")
	}
	if k.CacheFile != "" && !filepath.IsAbs(k.CacheFile) {
		v.bad(path+".cache_file", "%q is not an absolute path", k.CacheFile)
	}
	v.duration(path+".refresh", &k.Refresh, 0, time.Minute, 7*24*time.Hour)
	v.duration(path+".min_refetch_interval", &k.MinRefetchInterval, 0, time.Second, time.Hour)
}

// issuerURL accepts https URLs, and http on loopback (a local test issuer).
func issuerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an absolute URL without query or fragment", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip, err := netip.ParseAddr(u.Hostname()); (err == nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
		return fmt.Errorf("%q: http is allowed only on loopback; use https", s)
	}
	return fmt.Errorf("%q: scheme must be https", s)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (v *validator) rules(rules []Rule, accts map[string]Account, issuers map[string]bool) {
	if len(rules) == 0 {
		v.bad("rules", "at least one rule is required: without one no workload can log in")
	}
	names := map[string]bool{}
	for i := range rules {
		r := &rules[i]
		path := fmt.Sprintf("rules[%d]", i)
		switch {
		case r.Name == "":
			v.bad(path+".name", "required")
		case names[r.Name]:
			v.bad(path+".name", "%q is used by an earlier rule", r.Name)
		}
		names[r.Name] = true
		switch {
		case r.Match.Issuer == "":
			v.bad(path+".match.issuer", "required")
		case !issuers[r.Match.Issuer]:
			v.bad(path+".match.issuer", "%q is not in identity.issuers", r.Match.Issuer)
		}
		for _, k := range sortedKeys(r.Match.Claims) {
			if k == "" || k == "/" {
				v.bad(path+".match.claims", "empty claim name")
				continue
			}
			vals, ok := claimStrings(r.Match.Claims[k])
			if !ok {
				v.bad(path+".match.claims."+k, "a claim matches a string, a number, true/false, or a list of them")
				continue
			}
			for _, s := range vals {
				if s == "" || s == "glob:" {
					v.bad(path+".match.claims."+k, "empty value")
				}
			}
		}
		switch {
		case r.Account == "":
			v.bad(path+".account", "required")
		default:
			if _, ok := accts[r.Account]; !ok {
				v.bad(path+".account", "no account named %q", r.Account)
			}
		}
		if r.Snowflake.Role == "" {
			v.bad(path+".snowflake.role", "required: the role the session runs as")
		}
		for _, kv := range [][2]string{{"user", r.Snowflake.User}, {"role", r.Snowflake.Role}, {"warehouse", r.Snowflake.Warehouse}, {"database", r.Snowflake.Database}, {"schema", r.Snowflake.Schema}} {
			if kv[1] != "" && !identifier.MatchString(kv[1]) {
				v.bad(path+".snowflake."+kv[0], "%q is not a Snowflake identifier", kv[1])
			}
		}
		if len(r.Snowflake.QueryTag) > 2000 {
			v.bad(path+".snowflake.query_tag", "longer than 2000 characters")
		}
		v.statements(path+".statements", &r.Statements)
	}
}
