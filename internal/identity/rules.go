package identity

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// GlobPrefix opts a rule value in to * and ? wildcards.
const GlobPrefix = "glob:"

// RuleConfig maps verified identities to a Snowflake account and grant.
type RuleConfig struct {
	// Name identifies the rule in audit records. Required, unique.
	Name string `yaml:"name"`
	// Issuer names an IssuerConfig. Required.
	Issuer string `yaml:"issuer"`
	// Claims must all match. A key is a top-level claim name taken
	// literally, or an RFC 6901 JSON pointer when it starts with "/". A list
	// means any-of; a value starting with "glob:" is a pattern with * and ?.
	// At least one claim besides the issuer's tenant pin is required.
	Claims map[string][]string `yaml:"claims"`
	// Account names the Snowflake account. Required.
	Account string `yaml:"account"`
	// Grant is the Snowflake session the rule grants.
	Grant Grant `yaml:"snowflake"`
	// ObserveOnly keeps the client's own login: the token is verified and
	// the rule matched (so the session is attributed and recorded), but
	// the login goes to Snowflake as the driver sent it, without the
	// gateway's credential or the grant. Snowflake then authenticates the
	// client's token itself (its own workload identity federation).
	ObserveOnly bool `yaml:"observe_only"`
}

// Grant is what a matched rule grants: the session is opened as User with
// these values, whatever the login asked for.
type Grant struct {
	// User is the Snowflake service user. Required.
	User string `yaml:"user"`
	// Role is required.
	Role      string `yaml:"role"`
	Warehouse string `yaml:"warehouse"`
	Database  string `yaml:"database"`
	Schema    string `yaml:"schema"`
	// QueryTag is a template: {{claim}} is replaced by the claim's value.
	QueryTag string `yaml:"query_tag"`
}

// Rules is a compiled, ordered rule list: first match wins, no match denies.
type Rules struct {
	rules []compiledRule
}

type compiledRule struct {
	cfg      RuleConfig
	matchers []claimMatcher // sorted by key, for stable behaviour
}

type claimMatcher struct {
	key    string
	values []string // exact values
	globs  []string // patterns without the prefix
}

// CompileRules validates rules against the issuers (configurations as
// given to NewVerifier) and returns them compiled, with warnings about
// rules an earlier rule shadows.
func CompileRules(rules []RuleConfig, issuers []IssuerConfig) (*Rules, []string, error) {
	tenants := map[string]map[string]string{}
	for _, is := range issuers {
		tenants[is.Name] = is.Tenant
	}
	out := &Rules{}
	seen := map[string]bool{}
	var warnings []string
	for i, r := range rules {
		where := fmt.Sprintf("rule %d (%s)", i+1, r.Name)
		if r.Name == "" {
			return nil, nil, fmt.Errorf("rule %d: name is required", i+1)
		}
		if seen[r.Name] {
			return nil, nil, fmt.Errorf("%s: name is used twice", where)
		}
		seen[r.Name] = true
		tenant, ok := tenants[r.Issuer]
		if !ok {
			return nil, nil, fmt.Errorf("%s: issuer %q is not configured", where, r.Issuer)
		}
		if r.Account == "" || r.Grant.User == "" || r.Grant.Role == "" {
			return nil, nil, fmt.Errorf("%s: account, snowflake.user and snowflake.role are required", where)
		}
		cr := compiledRule{cfg: r}
		beyondTenant := false
		for _, key := range slices.Sorted(maps.Keys(r.Claims)) {
			vals := r.Claims[key]
			if key == "" || key == "/" {
				return nil, nil, fmt.Errorf("%s: empty claim key", where)
			}
			if len(vals) == 0 {
				return nil, nil, fmt.Errorf("%s: claim %q lists no values", where, key)
			}
			m := claimMatcher{key: key}
			for _, v := range vals {
				if g, ok := strings.CutPrefix(v, GlobPrefix); ok {
					if isIDClaim(key) {
						return nil, nil, fmt.Errorf("%s: claim %q is an ID: globs are not allowed on *_id claims", where, key)
					}
					if g == "" || strings.Trim(g, "*") == "" {
						return nil, nil, fmt.Errorf("%s: claim %q: glob %q matches anything", where, key, v)
					}
					m.globs = append(m.globs, g)
					continue
				}
				if v == "" {
					return nil, nil, fmt.Errorf("%s: claim %q: empty value", where, key)
				}
				m.values = append(m.values, v)
			}
			if _, pinned := tenant[key]; !pinned {
				beyondTenant = true
			}
			cr.matchers = append(cr.matchers, m)
		}
		if !beyondTenant {
			return nil, nil, fmt.Errorf("%s: match at least one claim besides the issuer's tenant pin", where)
		}
		for _, earlier := range out.rules {
			if shadows(earlier, cr) {
				warnings = append(warnings, fmt.Sprintf("%s is shadowed by rule %s: it can never match", where, earlier.cfg.Name))
				break
			}
		}
		out.rules = append(out.rules, cr)
	}
	return out, warnings, nil
}

// shadows reports whether every identity b matches is matched by a first:
// same issuer, and each of a's conditions appears unchanged in b.
func shadows(a, b compiledRule) bool {
	if a.cfg.Issuer != b.cfg.Issuer {
		return false
	}
	for _, am := range a.matchers {
		i := slices.IndexFunc(b.matchers, func(bm claimMatcher) bool { return bm.key == am.key })
		if i < 0 {
			return false
		}
		bm := b.matchers[i]
		if len(bm.globs) > 0 || !subset(bm.values, am.values) || len(am.globs) > 0 && !subset(bm.globs, am.globs) {
			return false
		}
	}
	return true
}

func subset(small, big []string) bool {
	for _, s := range small {
		if !slices.Contains(big, s) {
			return false
		}
	}
	return true
}

func isIDClaim(key string) bool {
	last := key
	if strings.HasPrefix(key, "/") {
		last = key[strings.LastIndex(key, "/")+1:]
	}
	return strings.HasSuffix(strings.ToLower(last), "_id") || strings.HasSuffix(strings.ToLower(last), "-id")
}

// Match returns the first rule the identity matches, or an *Error with
// ReasonNoMatchingRule.
func (r *Rules) Match(id *Identity) (*RuleConfig, error) {
	for i := range r.rules {
		cr := &r.rules[i]
		if cr.cfg.Issuer == id.IssuerName && cr.matches(id.Claims) {
			c := cr.cfg
			return &c, nil
		}
	}
	return nil, refuse(ReasonNoMatchingRule, id.IssuerName, "no rule matches sub %q", truncate(id.Subject, 200))
}

func (cr *compiledRule) matches(claims map[string]any) bool {
	for _, m := range cr.matchers {
		if !m.matches(claimValues(claims, m.key)) {
			return false
		}
	}
	return true
}

func (m claimMatcher) matches(have []string) bool {
	for _, h := range have {
		if slices.Contains(m.values, h) {
			return true
		}
		for _, g := range m.globs {
			if Glob(g, h) {
				return true
			}
		}
	}
	return false
}

// MatchClaim reports whether claim key of claims matches one of values
// (exact, or "glob:" patterns) under the rule semantics: scalars compare
// as canonical strings, arrays match by any element, objects and missing
// claims never match.
func MatchClaim(claims map[string]any, key string, values []string) bool {
	m := claimMatcher{key: key}
	for _, v := range values {
		if g, ok := strings.CutPrefix(v, GlobPrefix); ok {
			m.globs = append(m.globs, g)
		} else {
			m.values = append(m.values, v)
		}
	}
	return m.matches(claimValues(claims, key))
}

// claimValues resolves key (a literal claim name, or a JSON pointer when it
// starts with "/") and returns its canonical string forms: one for a
// scalar, one per scalar element of an array, none for objects, null or
// a missing claim.
func claimValues(claims map[string]any, key string) []string {
	v, ok := resolve(claims, key)
	if !ok {
		return nil
	}
	if arr, ok := v.([]any); ok {
		var out []string
		for _, e := range arr {
			if s, ok := canonical(e); ok {
				out = append(out, s)
			}
		}
		return out
	}
	if s, ok := canonical(v); ok {
		return []string{s}
	}
	return nil
}

func resolve(claims map[string]any, key string) (any, bool) {
	if !strings.HasPrefix(key, "/") {
		v, ok := claims[key]
		return v, ok
	}
	var cur any = claims
	for _, tok := range strings.Split(key[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false // pointers into arrays are not supported
		}
		if cur, ok = obj[tok]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// canonical is the string form of a scalar claim: strings as they are,
// numbers in plain decimal, booleans as "true"/"false".
func canonical(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case json.Number:
		return canonicalNumber(string(x))
	case float64:
		return canonicalNumber(strconv.FormatFloat(x, 'g', -1, 64))
	}
	return "", false
}

// maxNumberExp bounds the binary exponent of a numeric claim value that has
// a canonical form: 2^±4096 (about 10^±1233) covers every float64 and any
// integer a claim plausibly holds, and formats in microseconds.
const maxNumberExp = 4096

func canonicalNumber(s string) (string, bool) {
	if _, err := strconv.ParseInt(s, 10, 64); err == nil {
		return s, true
	}
	f, ok := new(big.Float).SetPrec(256).SetString(s)
	if !ok {
		return "", false
	}
	// Spelled out in full, 1e600000000 is 600 million digits and 1e-100000
	// takes seconds to format (beyond big.Float's range, they overflow to
	// infinity or underflow to zero): a number that far from 1 is no claim value a
	// rule can mean, and has no canonical form (it never matches).
	if e := f.MantExp(nil); f.IsInf() || (f.Sign() != 0 && (e > maxNumberExp || e < -maxNumberExp)) {
		return "", false
	}
	if mant, _, _ := strings.Cut(strings.ToLower(s), "e"); f.Sign() == 0 && strings.ContainsAny(mant, "123456789") {
		return "", false // underflowed to zero
	}
	if f.IsInt() {
		i, _ := f.Int(nil)
		return i.String(), true
	}
	return f.Text('f', -1), true
}

// Glob matches s against pattern, where * matches any run of characters
// (slashes included) and ? any one character. There are no classes or
// escapes. It runs in O(len(pattern)·len(s)).
func Glob(pattern, s string) bool {
	p, t := []rune(pattern), []rune(s)
	pi, ti := 0, 0
	star, mark := -1, 0
	for ti < len(t) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ti
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == t[ti]):
			pi++
			ti++
		case star >= 0:
			pi = star + 1
			mark++
			ti = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// ExpandQueryTag expands the grant's query tag template with the identity's
// claims: {{name}} (or {{/json/pointer}}) becomes the claim's first
// canonical value, or "" when missing. Values are limited to printable
// ASCII without quotes or backslashes, so a claim cannot break out of the
// tag when it is placed in a statement.
func (g Grant) ExpandQueryTag(claims map[string]any) string {
	var b strings.Builder
	rest := g.QueryTag
	for {
		open := strings.Index(rest, "{{")
		if open < 0 {
			b.WriteString(rest)
			break
		}
		end := strings.Index(rest[open:], "}}")
		if end < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:open])
		key := strings.TrimSpace(rest[open+2 : open+end])
		if vals := claimValues(claims, key); len(vals) > 0 {
			b.WriteString(sanitizeTag(vals[0]))
		}
		rest = rest[open+end+2:]
	}
	return b.String()
}

func sanitizeTag(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '\'' || r == '"' || r == '\\' {
			return '_'
		}
		return r
	}, s)
}
